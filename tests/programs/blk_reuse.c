/* Raw clone(CLONE_SETTLS) threads that give their FS base to each other: the program
 * makes a TCB-like area of its own (first word: its own address, as a libc TCB) and runs
 * threads with it as their thread pointer; each writes tag | j at tag >> 20 (A 0x100,
 * B 0x200) and reads it back, K times, with no libc, then ends with a raw SYS_exit (no
 * libc thread exit, no hooks of the tracer).
 *   seq:   thread A runs and exits, then thread B gets the same FS base (a reused TCB).
 *   share: A and B run at once with the same FS base.
 *   nosettls: A and B are raw clones without CLONE_SETTLS (they share main's FS base)
 *          while main writes too.
 * Tags: A 0x10000000, B 0x20000000, main 0x30000000 (at 0x300). The bytes around the
 * area must be left alone (the tracer must not write a TLS slot into a TCB it did not
 * see libc make). Prints "A B" (tids), then "bad N" (wrong reads + damaged bytes).
 * Usage: blk_reuse DEV seq|share|nosettls K (a 1-page device). */
#include "mmio.h"
#include <linux/futex.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>

static uint8_t *bar;
static long K;
/* The fake TCB lies at tls + AREA/2, with AREA/2 bytes of canary on each side. */
#define AREA 65536
static uint8_t tls[AREA] __attribute__((aligned(64)));

struct child {
    uint32_t tag;
    uint32_t off;
    long bad;
    volatile pid_t ctid;
    char *stack;
};

static void raw_exit(void) {
    __asm__ volatile("syscall" :: "a"(SYS_exit), "D"(0) : "rcx", "r11", "memory");
    __builtin_unreachable();
}

static int body(void *p) {
    struct child *c = p;
    long bad = 0;
    for (long j = 0; j < K; j++) {
        uint32_t v = c->tag | (uint32_t)j;
        wr32(bar + c->off, v);
        if (rd32(bar + c->off) != v) bad++;
    }
    c->bad = bad;
    raw_exit();
    return 0;
}

static pid_t start(struct child *c, uint32_t tag, int settls) {
    c->tag = tag;
    c->off = tag >> 20; /* A 0x100, B 0x200 */
    c->bad = 0;
    c->stack = malloc(1 << 20);
    int flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
                CLONE_SYSVSEM | CLONE_CHILD_CLEARTID | CLONE_PARENT_SETTID;
    if (settls) flags |= CLONE_SETTLS;
    /* CLONE_PARENT_SETTID: ctid holds the tid before clone returns (CLONE_CHILD_SETTID
     * would set it only once the child runs, and a wait before that would end at once). */
    pid_t tid = clone(body, c->stack + (1 << 20), flags, c, &c->ctid, tls + AREA / 2, &c->ctid);
    if (tid < 0) { perror("clone"); exit(3); }
    return tid;
}

static void wait_gone(struct child *c) {
    /* CLONE_CHILD_CLEARTID: the kernel zeroes ctid and wakes the futex at the exit. */
    for (;;) {
        pid_t t = c->ctid;
        if (t == 0) break;
        syscall(SYS_futex, &c->ctid, FUTEX_WAIT, t, NULL, NULL, 0);
    }
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    bar = map_device(argv[1], 4096);
    K = atol(argv[3]);
    memset(tls, 0x5a, sizeof tls);
    uint8_t *tcb = tls + AREA / 2;
    *(uint64_t *)tcb = (uint64_t)tcb;
    struct child a = {0}, b = {0};
    pid_t ta, tb;
    if (!strcmp(argv[2], "seq")) {
        ta = start(&a, 0x10000000, 1);
        wait_gone(&a);
        tb = start(&b, 0x20000000, 1);
        wait_gone(&b);
    } else if (!strcmp(argv[2], "share") || !strcmp(argv[2], "nosettls")) {
        int settls = !strcmp(argv[2], "share");
        ta = start(&a, 0x10000000, settls);
        tb = start(&b, 0x20000000, settls);
        if (!settls)
            for (long j = 0; j < K; j++) wr32(bar + 0x300, 0x30000000u | (uint32_t)j);
        wait_gone(&a);
        wait_gone(&b);
    } else {
        return 2;
    }
    long bad = a.bad + b.bad;
    for (size_t i = 0; i < sizeof tls; i++)
        if (i - AREA / 2 >= 8 && tls[i] != 0x5a) bad++;
    printf("%d %d\nbad %ld\n", ta, tb, bad);
    return 0;
}
