/* Threads whose FS base is not a libc TCB: each of T threads points its FS base at memory
 * of its own whose first word is 0 (thread 0: FS base 0 itself) with a raw
 * arch_prctl(ARCH_SET_FS), then writes (i+1)<<24 | j at 0x40*i and reads it back, K
 * times, without calling libc (its TLS is unreachable meanwhile), and restores its FS
 * base before returning to libc. All threads switch at once (a barrier), so they trap
 * concurrently. Prints each thread's tid, then "bad N" (reads that did not return the
 * value just written). Usage: blk_fsbase DEV T K (a 1-page device, T <= 32). */
#include "mmio.h"
#include <asm/prctl.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>

static uint8_t *bar;
static long K;
static pthread_barrier_t go;

struct targ {
    int i;
    pid_t tid;
    long bad;
    uint64_t *fs;
};

static long raw2(long n, long a, long b) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b) : "rcx", "r11", "memory");
    return r;
}

static void *run(void *p) {
    struct targ *a = p;
    a->tid = (pid_t)syscall(SYS_gettid);
    unsigned long saved = 0;
    if (syscall(SYS_arch_prctl, ARCH_GET_FS, &saved) != 0) { a->bad = -1; return NULL; }
    pthread_barrier_wait(&go);
    /* No libc from here until the FS base is restored. */
    raw2(SYS_arch_prctl, ARCH_SET_FS, (long)a->fs);
    volatile uint8_t *reg = bar + 0x40 * a->i;
    long bad = 0;
    for (long j = 0; j < K; j++) {
        uint32_t v = (uint32_t)((a->i + 1) << 24 | j);
        wr32(reg, v);
        if (rd32(reg) != v) bad++;
    }
    raw2(SYS_arch_prctl, ARCH_SET_FS, (long)saved);
    a->bad = bad;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    bar = map_device(argv[1], 4096);
    int T = atoi(argv[2]);
    K = atol(argv[3]);
    if (T < 1 || T > 32) return 2;
    pthread_t th[32];
    struct targ a[32];
    pthread_barrier_init(&go, NULL, (unsigned)T);
    for (int i = 0; i < T; i++) {
        a[i].i = i;
        a[i].bad = 0;
        /* Thread 0: FS base 0; the others: a page whose first word is 0. */
        a[i].fs = i == 0 ? NULL : calloc(1, 4096);
        if (pthread_create(&th[i], NULL, run, &a[i]) != 0) return 3;
    }
    long bad = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        bad += a[i].bad;
        printf("%d%s", a[i].tid, i + 1 < T ? " " : "\n");
    }
    printf("bad %ld\n", bad);
    return 0;
}
