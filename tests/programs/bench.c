/* Benchmarks for `mmio-trace record` (driven by bench.sh). Each mode prints one line
 * "MODE ns_per_op=X".
 *   native N          N 4-byte loads from an ordinary shared file mapping (no trap)
 *   floor  N [T]      the minimal trap-and-emulate floor: PROT_NONE page, a raw SIGSEGV
 *                     handler loads through an alias mapping into RAX and skips the 2-byte
 *                     `movl (%rdi),%eax`; no decode, no logging (run WITHOUT record)
 *   traced N [T]      the same loads on a mapping of DEVICE, to be run under record
 *   compute N         untraced work (arithmetic, malloc/free, a small file mmap) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

static uint8_t *trap_base, *alias_base;
static long n_ops;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline uint32_t load(const void *p) {
    uint32_t v;
    __asm__ volatile("movl (%1), %0" : "=a"(v) : "D"(p) : "memory");
    return v;
}

static void floor_handler(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    ucontext_t *uc = ctx;
    uint8_t *rip = (uint8_t *)uc->uc_mcontext.gregs[REG_RIP];
    if (rip[0] != 0x8b || rip[1] != 0x07) abort();
    uintptr_t off = (uintptr_t)si->si_addr - (uintptr_t)trap_base;
    uc->uc_mcontext.gregs[REG_RAX] = *(volatile uint32_t *)(alias_base + off);
    uc->uc_mcontext.gregs[REG_RIP] += 2;
}

static void *worker(void *arg) {
    uint8_t *page = (uint8_t *)arg;
    uint64_t sum = 0;
    for (long i = 0; i < n_ops; i++) sum += load(page + 4 * (i % 1024));
    return (void *)(uintptr_t)sum;
}

/* Runs T threads, each on its own page of `base`; returns wall ns per access per thread. */
static double run_threads(uint8_t *base, int t) {
    pthread_t th[16];
    double t0 = now();
    for (int k = 0; k < t; k++) pthread_create(&th[k], NULL, worker, base + 4096 * k);
    for (int k = 0; k < t; k++) pthread_join(th[k], NULL);
    return (now() - t0) * 1e9 / n_ops;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: bench MODE DEVICE N [THREADS]\n"); return 2; }
    const char *mode = argv[1];
    n_ops = atol(argv[3]);
    int threads = argc > 4 ? atoi(argv[4]) : 1;
    int fd = open(argv[2], O_RDWR);
    if (fd < 0) { perror(argv[2]); return 1; }
    size_t len = 4096 * 16;
    if (!strcmp(mode, "compute")) {
        double t0 = now();
        uint64_t x = 88172645463325252ull, acc = 0;
        for (long i = 0; i < n_ops; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            acc += x % 1000;
            if (i % 1000 == 0) {
                void *p = malloc(64 + (x % 4096));
                memset(p, (int)x, 64);
                free(p);
            }
            if (i % 100000 == 0) {
                void *m = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
                acc += ((volatile uint8_t *)m)[0];
                munmap(m, 4096);
            }
        }
        printf("compute ns_per_op=%.3f (acc %llu)\n", (now() - t0) * 1e9 / n_ops, (unsigned long long)acc);
        return 0;
    }
    uint8_t *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) { perror("mmap"); return 1; }
    long warm = n_ops;
    if (!strcmp(mode, "floor")) {
        alias_base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        trap_base = map;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = floor_handler;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSEGV, &sa, NULL);
        mprotect(map, len, PROT_NONE);
    }
    /* warm-up */
    n_ops = 2000;
    run_threads(map, threads);
    n_ops = warm;
    printf("%s threads=%d ns_per_op=%.1f\n", mode, threads, run_threads(map, threads));
    return 0;
}
