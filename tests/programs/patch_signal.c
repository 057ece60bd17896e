/* A signal handler that touches the device through the same sites as the loop it
 * interrupts (so it runs inside a trampoline's window once they are patched).
 * Main loop, iteration i:  W4 REG0 = i (site st),  R4 REG0 (site ld, must be i).
 * SIGALRM every 100 us (setitimer): the handler reads REG0 (site ld) and writes
 * 0x80000000 | that value to REG1 (site st).
 * Each iteration also does about 200 ns of ordinary work, so that a patched loop does not
 * log millions of events while it waits for the handler runs. The loop runs at least MIN
 * iterations and until HANDLERS handler runs (at most 20 s).
 * REG0 is at 0x0, REG1 at 0x40. Prints the wrong values the loop read (0); the number of
 * iterations and handler runs go to stderr (they depend on timing).
 * With THREADS > 0, each thread t (1..THREADS) runs the loop on its own REG0 at 0x80 * t
 * (REG1 0x40 further) and gets its own SIGALRM every 100 us (timer_create, to that
 * thread), the handler working on the interrupted thread's registers. With "prof", the
 * signal is SIGPROF from ITIMER_PROF instead (every 100 us of the process's CPU time, in
 * practice at scheduler ticks, to whichever thread runs), and each iteration does about
 * 2 us of ordinary work (fewer events while the handler runs accumulate).
 *
 * usage: patch_signal DEVICE MIN HANDLERS [THREADS [prof]] */
#define _GNU_SOURCE
#include "mmio.h"
#include <signal.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <pthread.h>
#include <sys/syscall.h>

/* Each site in its own 64-byte block (no punned jump covers the other site). */
__attribute__((noinline, noclone, aligned(64))) static void st(volatile void *p, uint32_t v) {
    __asm__ volatile(".byte 0x89, 0x07" : : "a"(v), "D"(p) : "memory"); /* mov %eax,(%rdi) */
}
__attribute__((noinline, noclone, aligned(64))) static uint32_t ld(volatile void *p) {
    uint32_t v;
    __asm__ volatile(".byte 0x8b, 0x07" : "=a"(v) : "D"(p) : "memory"); /* mov (%rdi),%eax */
    return v;
}

static uint8_t *dev;
static long min_iters, want;
static int work = 300;
static volatile long handled; /* all threads */
/* The running loop's REG0 (REG1 is 0x40 further), and its handler runs. */
static __thread volatile uint8_t *mine;
static __thread long mine_handled;

static void on_signal(int sig) {
    (void)sig;
    if (!mine) return;
    uint32_t h = ld(mine);
    st(mine + 0x40, 0x80000000u | h);
    mine_handled++;
    __atomic_add_fetch(&handled, 1, __ATOMIC_RELAXED);
}

/* The loop at REG0 = reg; returns the wrong values it read. */
static long loop(volatile uint8_t *reg, int t) {
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long bad = 0, i;
    mine = reg;
    for (i = 0;; i++) {
        st(reg, (uint32_t)i);
        if (ld(reg) != (uint32_t)i) bad++;
        for (volatile int w = 0; w < work; w++) {
        }
        if (i + 1 >= min_iters && handled >= want) break;
        if (i % 1024 == 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec - t0.tv_sec >= 20 && i + 1 >= min_iters) break;
        }
    }
    /* Sure to be counted: no handler of this thread runs after its loop's last access. */
    mine = NULL;
    fprintf(stderr, "patch_signal: thread %d: %ld iterations, %ld handler runs\n", t, i + 1,
            mine_handled);
    return bad;
}

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

static long bads[16];
static int prof;
static void *worker(void *arg) {
    long t = (long)arg;
    if (prof) {
        bads[t] = loop(dev + 0x80 * t, (int)t);
        return NULL;
    }
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = SIGALRM;
    sev.sigev_notify_thread_id = (pid_t)syscall(SYS_gettid);
    timer_t tm;
    struct itimerspec its = {{0, 100000}, {0, 100000}};
    if (timer_create(CLOCK_MONOTONIC, &sev, &tm) || timer_settime(tm, 0, &its, NULL)) {
        perror("timer");
        exit(3);
    }
    bads[t] = loop(dev + 0x80 * t, (int)t);
    timer_delete(tm);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    min_iters = atol(argv[2]);
    want = atol(argv[3]);
    int nt = argc > 4 ? atoi(argv[4]) : 0;
    if (nt < 0 || nt > 15) return 2;
    prof = nt > 0 && argc > 5 && !strcmp(argv[5], "prof");
    if (prof) work = 3000;
    dev = map_device(argv[1], 4096);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigaction(prof ? SIGPROF : SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 100}, {0, 100}}, off = {{0, 0}, {0, 0}};
    long bad = 0;
    if (nt == 0) {
        setitimer(ITIMER_REAL, &it, NULL);
        bad = loop(dev, 0);
        setitimer(ITIMER_REAL, &off, NULL);
    } else {
        if (prof) setitimer(ITIMER_PROF, &it, NULL);
        pthread_t th[16];
        for (long t = 1; t <= nt; t++) pthread_create(&th[t - 1], NULL, worker, (void *)t);
        for (int t = 1; t <= nt; t++) pthread_join(th[t - 1], NULL);
        for (int t = 1; t <= nt; t++) bad += bads[t];
        if (prof) setitimer(ITIMER_PROF, &off, NULL);
    }
    printf("the loops read %ld wrong values\n", bad);
    return 0;
}
