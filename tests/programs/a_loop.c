/* A running program for `record --pid`: maps the device, says it is ready, then runs
 * iterations of known register accesses with a short sleep between them until DIR/stop
 * exists, checking everything it can see of the tracer's presence and absence:
 *   iteration i (main thread):  W32 0x10 = i;  R32 0x10 (must be i);
 *                               W64 0x20 = i << 32 | 0xabc;  R64 0x20 (must be that);
 *   then clock_nanosleep(SLEEP_US): must return 0 (no EINTR unless a SIGUSR1 handler
 *   ran meanwhile) and must have slept the full time.
 * THREADS extra threads (optional) each run the same loop on their own registers
 * (0x100 + 0x20*t: W32 = i, R32) with the same checks, so that attach has many threads
 * to seize. SIGUSR1 is counted (a handler), to check that a signal sent while attached
 * is delivered once.
 * At the end it checks that the device mapping is back to `rw-s` in /proc/self/maps and
 * that no signal is left pending (not with TRACED_AT_EXIT `1`: a recorder still attached
 * keeps the pages closed), prints
 *   iterations N last L errors E usr1 U
 * (N: main-thread iterations, L: the last i) and exits with 1 if anything was wrong,
 * else STATUS (default 0).
 *
 * usage: a_loop DEVICE DIR [SLEEP_US [THREADS [STATUS [TRACED_AT_EXIT]]]] */
#define _GNU_SOURCE
#include "mmio.h"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <ucontext.h>

static uint8_t *dev;
static const char *dir;
static long sleep_us = 1000;
static atomic_int errors, stop, usr1;

static void on_usr1(int sig) { (void)sig; atomic_fetch_add(&usr1, 1); }

/* A fault left to the program (the recorder gone with its pages closed, a SIGSEGV left
 * pending at detach) is reported, not a silent crash. */
static void on_segv(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    ucontext_t *uc = ctx;
    char b[160];
    int n = snprintf(b, sizeof b, "a_loop: SIGSEGV code %d at %p (device %p) rip %#llx tid %d\n",
                     si->si_code, si->si_addr, (void *)dev,
                     (unsigned long long)uc->uc_mcontext.gregs[REG_RIP], (int)gettid());
    if (write(2, b, n) < 0)
        _exit(98);
    _exit(99);
}

static void fail(const char *what, long i, long a, long b) {
    fprintf(stderr, "a_loop: %s at iteration %ld: %ld (%#lx) vs %ld (%#lx)\n", what, i, a, a, b, b);
    atomic_fetch_add(&errors, 1);
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Sleeps sleep_us; an early return is an error unless a SIGUSR1 came meanwhile. */
static void nap(long i) {
    int before = atomic_load(&usr1);
    uint64_t t0 = now_ns();
    struct timespec t = {sleep_us / 1000000, (sleep_us % 1000000) * 1000};
    int r = clock_nanosleep(CLOCK_MONOTONIC, 0, &t, NULL);
    if (r != 0) {
        if (r == EINTR && atomic_load(&usr1) != before)
            return;
        fail("clock_nanosleep returned", i, r, 0);
        return;
    }
    uint64_t dt = now_ns() - t0;
    if (dt < (uint64_t)sleep_us * 1000)
        fail("slept short (ns)", i, (long)dt, sleep_us * 1000);
}

static void *worker(void *arg) {
    long t = (long)arg;
    volatile uint8_t *reg = dev + 0x100 + 0x20 * t;
    for (long i = 0; !atomic_load(&stop); i++) {
        wr32(reg, (uint32_t)i);
        uint32_t v = rd32(reg);
        if (v != (uint32_t)i)
            fail("worker read back", i, v, i);
        nap(i);
    }
    return NULL;
}

static int exists(const char *name) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static void touch(const char *name) {
    char p[4096], tmp[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", getpid()) < 0 || fclose(f) != 0 || rename(tmp, p) != 0) {
        perror(p);
        exit(100);
    }
}

/* The device mapping's line in /proc/self/maps has the program's own protection. */
static void check_protection(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096];
    int found = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && lo == (unsigned long)dev) {
            found = 1;
            if (strcmp(perms, "rw-s") != 0) {
                fprintf(stderr, "a_loop: device mapping is %s, not rw-s\n", perms);
                atomic_fetch_add(&errors, 1);
            }
        }
    }
    if (f)
        fclose(f);
    if (!found) {
        fprintf(stderr, "a_loop: device mapping not in /proc/self/maps\n");
        atomic_fetch_add(&errors, 1);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: a_loop DEVICE DIR [SLEEP_US [THREADS [STATUS]]]\n");
        return 100;
    }
    dir = argv[2];
    if (argc > 3)
        sleep_us = atol(argv[3]);
    int threads = argc > 4 ? atoi(argv[4]) : 0;
    int status = argc > 5 ? atoi(argv[5]) : 0;
    int traced_at_exit = argc > 6 && atoi(argv[6]) == 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    struct sigaction sv;
    memset(&sv, 0, sizeof sv);
    sv.sa_sigaction = on_segv;
    sv.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sv, NULL);
    dev = map_device(argv[1], 4096);
    pthread_t tids[64];
    if (threads > 64)
        threads = 64;
    for (long t = 0; t < threads; t++)
        pthread_create(&tids[t], NULL, worker, (void *)t);
    touch("ready");
    long i = 0;
    for (; !exists("stop"); i++) {
        wr32(dev + 0x10, (uint32_t)i);
        uint32_t v = rd32(dev + 0x10);
        if (v != (uint32_t)i)
            fail("read back 0x10", i, v, i);
        uint64_t w = (uint64_t)i << 32 | 0xabc;
        wr64(dev + 0x20, w);
        uint64_t r = rd64(dev + 0x20);
        if (r != w)
            fail("read back 0x20", i, (long)r, (long)w);
        nap(i);
    }
    atomic_store(&stop, 1);
    for (int t = 0; t < threads; t++)
        pthread_join(tids[t], NULL);
    if (!traced_at_exit)
        check_protection();
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    for (int s = 1; s < NSIG; s++)
        if (sigismember(&pending, s) == 1) {
            fprintf(stderr, "a_loop: signal %d left pending\n", s);
            atomic_fetch_add(&errors, 1);
        }
    printf("iterations %ld last %ld errors %d usr1 %d\n", i, i - 1, atomic_load(&errors),
           atomic_load(&usr1));
    fflush(stdout);
    return atomic_load(&errors) ? 1 : status;
}
