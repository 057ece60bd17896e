/* Hot sites for hot-site patching on the inject route (built static and dynamic).
 * Six access sites, each one instruction with a global label, run by hot() on a
 * 0x40-byte register block: per call with counter i and tag t (the thread's number)
 *     W4 +0x10 = t << 16 | i, R4 +0x10 (= the same), W1 +0x20 = 0x5a, R2 +0x22,
 *     W8 +0x28 = t << 32 | i, RMW4 +0x30 += 3 (a read then a write)
 * The program prints each site's address ("site NAME 0xADDR", runtime addresses) on stdout,
 * so that a test can name the site of every logged PC whatever the build or layout.
 *
 * Each thread first calls hot() WARM times (the sites get hot), then every thread waits
 * until the main thread has seen the sites rewritten (at most K_WAIT_MS milliseconds from
 * the environment, default 0: no wait; the number it saw goes to stderr as
 * "rewritten K of 6"), then each calls hot() N more times. Every thread owns
 * the block at 0x100 * t of the device (the main thread t = 0). Prints the number of wrong
 * values read (0) and exits 0.
 *
 * usage: k_hot DEVICE N MODE [T]
 *   loop     the main thread only
 *   threads  T pthreads besides the main thread (t = 1..T)
 *   clone    three raw clones besides the main thread, hot at the same time as it:
 *            t = 1 with an FS base inside its own stack mapping (as a libc thread's TCB),
 *            t = 2 with an FS base in the program's data (Go-like),
 *            t = 3 without CLONE_SETTLS (it shares the main thread's FS base)
 *   fork     after the main thread's hot part, fork: the child calls hot() N times as
 *            t = 1 (through the sites patched before the fork, never having trapped),
 *            then execs this program in loop mode (a fresh image, patched anew); the
 *            parent waits for it, then calls hot() N more times as t = 0
 *   rawfork  the same with a raw syscall(SYS_fork), which no libc hook sees
 *   attach DIR  (to be attached to by `record --pid`) the main thread calls hot() in
 *            rounds of N until DIR/stop exists, creating DIR/ready after the first
 *            round; then it says on stderr how many sites it saw rewritten ("rewritten
 *            K of 6", checked once more after the last round) and how many rounds it ran */
#define _GNU_SOURCE
#include "mmio.h"
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#define WARM 40
#define NSITES 6

extern char k_w32[], k_r32[], k_w8[], k_r16[], k_w64[], k_add[], k_end[];
static char *const sites[NSITES + 1] = {k_w32, k_r32, k_w8, k_r16, k_w64, k_add, k_end};
static const char *const names[NSITES] = {"w32", "r32", "w8", "r16", "w64", "add"};

/* One call: the six accesses. Returns the value read at +0x10. */
__attribute__((noinline, noclone)) static uint32_t hot(volatile uint8_t *p, uint32_t w, uint64_t w8) {
    uint32_t r;
    uint32_t h;
    /* A 5-byte nop after each site: a punned jump (a site shorter than 5 bytes) reads
     * bytes that no other site's patch changes, so no site's patch waits on another's. */
    __asm__ volatile("k_w32: movl %k2, 0x10(%3)\n\t"
                     "nopl 0(%%rax,%%rax,1)\n"
                     "k_r32: movl 0x10(%3), %k0\n\t"
                     "nopl 0(%%rax,%%rax,1)\n"
                     "k_w8: movb $0x5a, 0x20(%3)\n\t"
                     "nopl 0(%%rax,%%rax,1)\n"
                     "k_r16: movzwl 0x22(%3), %k1\n\t"
                     "nopl 0(%%rax,%%rax,1)\n"
                     "k_w64: movq %4, 0x28(%3)\n\t"
                     "nopl 0(%%rax,%%rax,1)\n"
                     "k_add: addl $3, 0x30(%3)\n\t"
                     "nopl 0(%%rax,%%rax,1)\n"
                     "k_end:"
                     : "=&r"(r), "=&r"(h)
                     : "r"(w), "r"(p), "r"(w8)
                     : "memory", "cc");
    return r;
}

static uint8_t *dev;
static int n;
static uint8_t orig[64];
static volatile int go, warmed;
static volatile long bad;

static int rewritten(void) {
    int k = 0;
    for (int s = 0; s < NSITES; s++) k += memcmp(sites[s], orig + (sites[s] - k_w32), (size_t)(sites[s + 1] - sites[s])) != 0;
    return k;
}

static void run(long t, int from, int to) {
    volatile uint8_t *mine = dev + 0x100 * t;
    for (int i = from; i < to; i++) {
        uint32_t w = (uint32_t)t << 16 | (uint32_t)i;
        if (hot(mine, w, (uint64_t)t << 32 | (uint32_t)i) != w) __atomic_add_fetch(&bad, 1, __ATOMIC_SEQ_CST);
    }
}

/* A thread's life: warm up, wait for the go, the hot part. */
static void body(long t) {
    run(t, 0, WARM);
    __atomic_add_fetch(&warmed, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&go, __ATOMIC_SEQ_CST)) sched_yield();
    run(t, WARM, WARM + n);
}

static void *worker(void *arg) {
    body((long)arg);
    return NULL;
}

/* The main thread: warm up, wait for the others to have warmed up (nthreads of them) and
 * for the sites to be rewritten, then let everyone go. */
static void main_part(int nthreads) {
    const char *w = getenv("K_WAIT_MS");
    double wait_ms = w ? atof(w) : 0;
    run(0, 0, WARM);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int k;
    for (;;) {
        k = rewritten();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double el = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        int all = __atomic_load_n(&warmed, __ATOMIC_SEQ_CST) >= nthreads;
        if (all && (k == NSITES || el * 1000 >= wait_ms)) break;
        usleep(1000);
    }
    fprintf(stderr, "rewritten %d of %d\n", k, NSITES);
    __atomic_store_n(&go, 1, __ATOMIC_SEQ_CST);
    run(0, WARM, WARM + n);
}

/* ---- raw clones: no libc in the child ---- */

struct rc {
    long t;
    volatile int tid; /* cleared by the kernel at the child's exit (CLONE_CHILD_CLEARTID) */
};

__attribute__((noreturn, used)) static void rc_main(struct rc *a) {
    body(a->t);
    for (;;) __asm__ volatile("syscall" ::"a"(SYS_exit), "D"(0) : "rcx", "r11", "memory");
}

/* clone(flags, stack, ctid, ctid, tls): the child pops its argument and calls rc_main. */
static long do_clone(unsigned long flags, void *stack_top, volatile int *ctid, void *tls, struct rc *arg) {
    long ret;
    uint64_t *sp = (uint64_t *)stack_top - 2;
    sp[0] = (uint64_t)arg;
    register long r10 __asm__("r10") = (long)ctid;
    register long r8 __asm__("r8") = (long)tls;
    __asm__ volatile("syscall\n\t"
                     "testq %%rax, %%rax\n\t"
                     "jnz 1f\n\t"
                     "popq %%rdi\n\t"
                     "andq $-16, %%rsp\n\t"
                     "call rc_main\n"
                     "1:"
                     : "=a"(ret)
                     : "0"(SYS_clone), "D"(flags), "S"(sp), "d"(ctid), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
    return ret;
}

static uint8_t go_tls[4096] __attribute__((aligned(64)));

static void clone_mode(void) {
    enum { STACK = 256 << 10 };
    static struct rc rcs[3];
    /* As libc's threads: a clear_child_tid word that holds the thread's tid while it runs
     * (the kernel stores it at the clone, zeroes it at the exit). */
    const unsigned long base = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM |
                               CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;
    for (int c = 0; c < 3; c++) {
        uint8_t *m = mmap(NULL, STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) { perror("mmap"); exit(101); }
        rcs[c].t = c + 1;
        void *tls = NULL;
        unsigned long flags = base;
        void *top = m + STACK;
        if (c == 0) {
            /* A TCB-like FS base at the top of its own mapping, the stack below it. */
            tls = m + STACK - 4096;
            top = m + STACK - 4096;
            flags |= CLONE_SETTLS;
        } else if (c == 1) {
            tls = go_tls + 2048;
            flags |= CLONE_SETTLS;
        }
        rcs[c].tid = 1;
        long r = do_clone(flags, top, &rcs[c].tid, tls, &rcs[c]);
        if (r < 0) { fprintf(stderr, "clone failed\n"); exit(102); }
    }
    main_part(3);
    for (int c = 0; c < 3; c++)
        while (rcs[c].tid) syscall(SYS_futex, &rcs[c].tid, FUTEX_WAIT, rcs[c].tid, NULL, NULL, 0);
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: k_hot DEVICE N loop|threads|clone [T]\n"); return 2; }
    n = atoi(argv[2]);
    memcpy(orig, k_w32, (size_t)(k_end - k_w32) < sizeof orig ? (size_t)(k_end - k_w32) : sizeof orig);
    for (int s = 0; s < NSITES; s++) printf("site %s %p\n", names[s], (void *)sites[s]);
    fflush(stdout);
    dev = map_device(argv[1], 4096);
    if (!strcmp(argv[3], "loop")) {
        main_part(0);
    } else if (!strcmp(argv[3], "threads")) {
        int T = argc > 4 ? atoi(argv[4]) : 4;
        pthread_t th[64];
        if (T > 15) T = 15;
        for (long t = 1; t <= T; t++) pthread_create(&th[t], NULL, worker, (void *)t);
        main_part(T);
        for (long t = 1; t <= T; t++) pthread_join(th[t], NULL);
    } else if (!strcmp(argv[3], "clone")) {
        clone_mode();
    } else if (!strcmp(argv[3], "attach") && argc > 4) {
        char ready[4096], stop[4096];
        snprintf(ready, sizeof ready, "%s/ready", argv[4]);
        snprintf(stop, sizeof stop, "%s/stop", argv[4]);
        long rounds = 0;
        for (;; rounds++) {
            run(0, 0, n);
            if (rounds == 0) {
                FILE *f = fopen(ready, "w");
                if (f) fclose(f);
            }
            if (access(stop, F_OK) == 0) break;
        }
        fprintf(stderr, "rewritten %d of %d\n", rewritten(), NSITES);
        printf("rounds %ld\n", rounds + 1);
    } else if (!strcmp(argv[3], "fork") || !strcmp(argv[3], "rawfork")) {
        main_part(0);
        fflush(stdout);
        pid_t c = argv[3][0] == 'r' ? (pid_t)syscall(SYS_fork) : fork();
        if (c < 0) { perror("fork"); return 103; }
        if (c == 0) {
            run(1, 0, n);
            if (bad) { fprintf(stderr, "child: bad %ld\n", bad); _exit(104); }
            execl(argv[0], argv[0], argv[1], argv[2], "loop", (char *)NULL);
            perror("exec");
            _exit(105);
        }
        int st;
        if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "child status %#x\n", st);
            return 106;
        }
        run(0, WARM + n, WARM + 2 * n);
    } else {
        return 2;
    }
    printf("bad %ld\n", bad);
    munmap(dev, 4096);
    return 0;
}
