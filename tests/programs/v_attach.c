/* Hostile cases for `record --pid --route inject` (the tracer's core put into a running
 * process). One program, several modes; each maps DEVICE, writes DIR/ready once set up,
 * checks everything it can see of the tracer's presence and absence itself, prints one
 * result line and exits 1 if anything was wrong, else 0.
 *
 *   segv DEVICE DIR: the program's own SIGSEGV handler (SA_SIGINFO | SA_ONSTACK, on a
 *     64 KiB sigaltstack of main's) and a worker thread with no alternate stack. Each
 *     main iteration i: W32 0x10 = i, R32 0x10 (must be i), then a write to address 8
 *     which the handler sees (SEGV_MAPERR at 8) and leaves with siglongjmp; the worker
 *     (with a handler of the same kind run on its own stack) does W32 0x100 = i, R32,
 *     and a write to address 16 recovered the same way. Until DIR/stop; then each
 *     thread's sigaltstack must be exactly what it was (main: the 64 KiB stack; the
 *     worker: none), the device mapping `rw-s`. Prints
 *       iterations N recovered R wrecovered W errors E
 *   slowsegv DEVICE DIR: as segv, with a handler that sleeps 1 ms (SIGSEGV blocked, as
 *     the kernel runs it) before leaving: each thread spends half its time in it.
 *   sse DEVICE DIR: each iteration i: 16 bytes of pattern(i) stored with movdqu at 0x40,
 *     loaded back with movdqu and compared with pcmpeqb/pmovmskb (must be 0xffff), then
 *     W32 0x10 = i (a marker for the log). Until DIR/stop. Prints
 *       iterations N errors E
 *   blocked DEVICE DIR: threads blocked in poll (no timeout), select (no timeout),
 *     ppoll, clock_nanosleep (absolute, 100 ms deadlines), poll with a 40 ms timeout
 *     (returns 0 no earlier than 40 ms) and select with a 40 ms timeout (returns 0, no
 *     earlier), main accessing the device (W32 0x10 = i, R32) with 1 ms sleeps. DIR/ready
 *     once every thread is in its call; DIR/release wakes the waiters (a byte on each
 *     pipe) and ends. No call may return EINTR or early. Prints
 *       poll P select S ppoll Q sleeps N tpoll T tselect U errors E
 *   newdev DEVICE DEVICE2 DIR: after DIR/go maps DEVICE2 (4 KiB, shared, rw), waits
 *     until its line in /proc/self/maps reads `---s` (the core traced it), W32 0x40 =
 *     0xfeed, R32 0x40; munmap; maps 4 KiB of anonymous memory at the same address at
 *     once, writes and reads it back, and keeps checking for 300 ms that it stays
 *     `rw-p` and its own; then W32 0x10 = 0x5a5a on DEVICE, DIR/done, waits for
 *     DIR/stop. Prints  errors E
 *   exec DEVICE DIR: loop as `segv` without the faults (W32 0x10 = i, R32, 1 ms) until
 *     DIR/exec exists, then execs itself as `after DEVICE DIR`, which makes W32 0x10 =
 *     0xa5a5, R32 natively (no core: the mapping is `rw-s`, no mapping of the tracer's),
 *     writes DIR/after, waits for DIR/stop and exits 3.
 *   retsegv DEVICE DIR: the program's SIGSEGV handler opens a guard page
 *     (mprotect) and RETURNS; each main iteration: W32 0x10 = i, R32, then closes the
 *     page and writes i into it (one fault each), until DIR/stop. Prints
 *       iterations N handled H errors E   (H must be N)
 *   newhandler DEVICE DIR: a plain SIGSEGV handler that must never run (exit 96); main
 *     loops as in `exec` until DIR/go, then installs segv's handler (while attached),
 *     waits until a query shows another handler (the tracer's, put back), writes
 *     W32 0x14 = 0x5eed, DIR/switched, and loops W32 0x10 = i, R32
 *     and a recovered write to address 8 until DIR/stop; the handler must then still
 *     be the new one. Prints  provoked P recovered R errors E  (R must be P)
 *   trapblock DEVICE DIR: SIGTRAP blocked in every thread (the single-step path's
 *     signal); main loops as in `exec`, a worker as in `segv` without the faults, until
 *     DIR/stop; SIGTRAP must still be blocked and without a handler at the end. Prints
 *       iterations N errors E
 *   blocksegv DEVICE DIR: a worker with SIGSEGV blocked (pthread_sigmask), main looping
 *     as in `exec` until DIR/stop. Prints  iterations N errors E
 *
 * usage: v_attach MODE DEVICE [DEVICE2] DIR */
#define _GNU_SOURCE
#include "mmio.h"
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <time.h>
#include <emmintrin.h>

static const char *dir;
static uint8_t *dev;
static atomic_int errors, stop;

static void fail(const char *what, long a, long b) {
    fprintf(stderr, "v_attach: %s: %ld (%#lx) vs %ld (%#lx)\n", what, a, a, b, b);
    atomic_fetch_add(&errors, 1);
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
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
        _exit(100);
    }
}

static void nap_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

/* The protection letters of the mapping that holds `at` in /proc/self/maps ("" if
 * none). */
static void perms_at(void *at, char out[8]) {
    out[0] = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096];
    while (f && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && lo <= (unsigned long)at &&
            (unsigned long)at < hi) {
            strcpy(out, perms);
            break;
        }
    }
    if (f)
        fclose(f);
}

static void check_rw_s(void) {
    char p[8];
    perms_at(dev, p);
    if (strcmp(p, "rw-s") != 0) {
        fprintf(stderr, "v_attach: device mapping is '%s', not rw-s\n", p);
        atomic_fetch_add(&errors, 1);
    }
}

/* One device iteration of the main thread: W32 0x10 = i, R32 0x10. */
static void dev_iter(long i) {
    wr32(dev + 0x10, (uint32_t)i);
    uint32_t v = rd32(dev + 0x10);
    if (v != (uint32_t)i)
        fail("read back 0x10", v, i);
}

/* ---- segv ---- */

static __thread sigjmp_buf *volatile jump;
static __thread volatile uintptr_t want_addr;
static __thread volatile int bad_handler;
/* slowsegv: the handler sleeps 1 ms (SIGSEGV blocked meanwhile) before leaving. */
static int slow_handler;

static void on_segv(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    (void)ctx;
    if (!jump) {
        static const char m[] = "v_attach: unexpected SIGSEGV\n";
        if (write(2, m, sizeof m - 1) < 0)
            _exit(98);
        _exit(99);
    }
    if ((uintptr_t)si->si_addr != want_addr || si->si_code != SEGV_MAPERR)
        bad_handler = 1;
    if (slow_handler) {
        struct timespec t = {0, 1000 * 1000};
        nanosleep(&t, NULL);
    }
    siglongjmp(*jump, 1);
}

/* A write to `addr` (unmapped) the handler recovers from; 1 if it was recovered. */
static int provoke(uintptr_t addr) {
    sigjmp_buf jb;
    want_addr = addr;
    bad_handler = 0;
    if (sigsetjmp(jb, 1) == 0) {
        jump = &jb;
        *(volatile int *)addr = 1;
        jump = NULL;
        fail("the write to a null page did not fault", (long)addr, 0);
        return 0;
    }
    jump = NULL;
    if (bad_handler)
        fail("handler saw another fault", (long)addr, 0);
    return !bad_handler;
}

static stack_t main_ss;
static atomic_long wrecovered;

static void *segv_worker(void *arg) {
    (void)arg;
    volatile uint8_t *reg = dev + 0x100;
    for (long i = 0; !atomic_load(&stop); i++) {
        wr32(reg, (uint32_t)i);
        uint32_t v = rd32(reg);
        if (v != (uint32_t)i)
            fail("worker read back", v, i);
        atomic_fetch_add(&wrecovered, provoke(16));
        nap_ms(1);
    }
    stack_t ss;
    if (sigaltstack(NULL, &ss) != 0 || !(ss.ss_flags & SS_DISABLE))
        fail("worker has an alternate signal stack after the detach", (long)ss.ss_sp,
             ss.ss_flags);
    return NULL;
}

static void check_main_stack(void) {
    stack_t ss;
    if (sigaltstack(NULL, &ss) != 0)
        fail("sigaltstack", errno, 0);
    else if (ss.ss_sp != main_ss.ss_sp || ss.ss_size != main_ss.ss_size || ss.ss_flags != 0)
        fail("main's alternate stack changed", (long)ss.ss_sp, (long)ss.ss_size);
}

static int mode_segv(void) {
    main_ss.ss_sp = malloc(64 << 10);
    main_ss.ss_size = 64 << 10;
    main_ss.ss_flags = 0;
    if (sigaltstack(&main_ss, NULL) != 0)
        return 100;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, NULL);
    pthread_t w;
    pthread_create(&w, NULL, segv_worker, NULL);
    touch("ready");
    long i = 0, recovered = 0;
    for (; !exists("stop"); i++) {
        dev_iter(i);
        recovered += provoke(8);
        nap_ms(1);
    }
    atomic_store(&stop, 1);
    pthread_join(w, NULL);
    check_main_stack();
    check_rw_s();
    printf("iterations %ld recovered %ld wrecovered %ld errors %d\n", i, recovered,
           atomic_load(&wrecovered), atomic_load(&errors));
    return atomic_load(&errors) || recovered != i ? 1 : 0;
}

/* ---- sse ---- */

static int mode_sse(void) {
    touch("ready");
    long i = 0;
    for (; !exists("stop"); i++) {
        uint8_t pat[16];
        for (int k = 0; k < 16; k++)
            pat[k] = (uint8_t)(i * 16 + k);
        __asm__ volatile("movdqu (%0), %%xmm1\n\tmovdqu %%xmm1, (%1)" ::"r"(pat), "r"(dev + 0x40)
                         : "xmm1", "memory");
        int mask;
        __asm__ volatile("movdqu (%1), %%xmm0\n\tmovdqu (%2), %%xmm1\n\tpcmpeqb %%xmm1, %%xmm0\n\t"
                         "pmovmskb %%xmm0, %0"
                         : "=r"(mask)
                         : "r"(dev + 0x40), "r"(pat)
                         : "xmm0", "xmm1", "memory");
        if (mask != 0xffff)
            fail("movdqu read back (pmovmskb)", mask, i);
        wr32(dev + 0x10, (uint32_t)i);
        nap_ms(1);
    }
    check_rw_s();
    printf("iterations %ld errors %d\n", i, atomic_load(&errors));
    return atomic_load(&errors) ? 1 : 0;
}

/* ---- blocked ---- */

static int pipes[6][2];
static atomic_int tids[6];
static atomic_int n_poll, n_select, n_ppoll, n_sleeps, n_tpoll, n_tselect;

static void *b_poll(void *a) {
    (void)a;
    atomic_store(&tids[0], (int)gettid());
    struct pollfd p = {pipes[0][0], POLLIN, 0};
    int r = poll(&p, 1, -1);
    if (r != 1 || !(p.revents & POLLIN))
        fail("poll returned", r, errno);
    else
        atomic_store(&n_poll, 1);
    return NULL;
}

static void *b_select(void *a) {
    (void)a;
    atomic_store(&tids[1], (int)gettid());
    fd_set s;
    FD_ZERO(&s);
    FD_SET(pipes[1][0], &s);
    int r = select(pipes[1][0] + 1, &s, NULL, NULL, NULL);
    if (r != 1 || !FD_ISSET(pipes[1][0], &s))
        fail("select returned", r, errno);
    else
        atomic_store(&n_select, 1);
    return NULL;
}

static void *b_ppoll(void *a) {
    (void)a;
    atomic_store(&tids[2], (int)gettid());
    struct pollfd p = {pipes[2][0], POLLIN, 0};
    int r = ppoll(&p, 1, NULL, NULL);
    if (r != 1 || !(p.revents & POLLIN))
        fail("ppoll returned", r, errno);
    else
        atomic_store(&n_ppoll, 1);
    return NULL;
}

static void *b_sleep(void *a) {
    (void)a;
    atomic_store(&tids[3], (int)gettid());
    while (!atomic_load(&stop)) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        t.tv_nsec += 100 * 1000 * 1000;
        if (t.tv_nsec >= 1000000000) {
            t.tv_sec++;
            t.tv_nsec -= 1000000000;
        }
        uint64_t deadline = (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
        int r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
        if (r != 0)
            fail("clock_nanosleep returned", r, 0);
        else if (now_ns() < deadline)
            fail("clock_nanosleep woke before its deadline", (long)(deadline - now_ns()), 0);
        atomic_fetch_add(&n_sleeps, 1);
    }
    return NULL;
}

static void *b_tpoll(void *a) {
    (void)a;
    atomic_store(&tids[4], (int)gettid());
    while (!atomic_load(&stop)) {
        struct pollfd p = {pipes[4][0], POLLIN, 0};
        uint64_t t0 = now_ns();
        int r = poll(&p, 1, 40);
        uint64_t dt = now_ns() - t0;
        if (r == 1 && atomic_load(&stop))
            break;
        if (r != 0)
            fail("poll with a timeout returned", r, errno);
        else if (dt < 40u * 1000 * 1000)
            fail("poll with a timeout returned early (ns)", (long)dt, 40 * 1000 * 1000);
        atomic_fetch_add(&n_tpoll, 1);
    }
    return NULL;
}

static void *b_tselect(void *a) {
    (void)a;
    atomic_store(&tids[5], (int)gettid());
    while (!atomic_load(&stop)) {
        fd_set s;
        FD_ZERO(&s);
        FD_SET(pipes[5][0], &s);
        struct timeval tv = {0, 40 * 1000};
        uint64_t t0 = now_ns();
        int r = select(pipes[5][0] + 1, &s, NULL, NULL, &tv);
        uint64_t dt = now_ns() - t0;
        if (r == 1 && atomic_load(&stop))
            break;
        if (r != 0)
            fail("select with a timeout returned", r, errno);
        else if (dt < 40u * 1000 * 1000)
            fail("select with a timeout returned early (ns)", (long)dt, 40 * 1000 * 1000);
        atomic_fetch_add(&n_tselect, 1);
    }
    return NULL;
}

/* The system call thread `tid` is blocked in (-1: running or unknown). */
static long blocked_in(int tid) {
    char p[64], buf[256];
    snprintf(p, sizeof p, "/proc/self/task/%d/syscall", tid);
    FILE *f = fopen(p, "r");
    if (!f)
        return -1;
    long nr = -1;
    if (!fgets(buf, sizeof buf, f) || sscanf(buf, "%ld", &nr) != 1)
        nr = -1;
    fclose(f);
    return nr;
}

static int mode_blocked(void) {
    for (int k = 0; k < 6; k++)
        if (pipe(pipes[k]))
            return 100;
    void *(*fns[6])(void *) = {b_poll, b_select, b_ppoll, b_sleep, b_tpoll, b_tselect};
    pthread_t th[6];
    for (int k = 0; k < 6; k++)
        pthread_create(&th[k], NULL, fns[k], NULL);
    for (int k = 0; k < 6; k++) {
        for (;;) {
            int tid = atomic_load(&tids[k]);
            long nr = tid ? blocked_in(tid) : -1;
            if (nr == SYS_poll || nr == SYS_ppoll || nr == SYS_select || nr == SYS_pselect6 ||
                nr == SYS_clock_nanosleep)
                break;
            usleep(1000);
        }
    }
    touch("ready");
    long i = 0;
    for (; !exists("release"); i++) {
        dev_iter(i);
        struct timespec t = {0, 1000 * 1000};
        if (clock_nanosleep(CLOCK_MONOTONIC, 0, &t, NULL) != 0)
            fail("main clock_nanosleep", -1, 0);
    }
    if (atomic_load(&n_poll) || atomic_load(&n_select) || atomic_load(&n_ppoll))
        fail("a blocked call returned before its wake-up", 0, 0);
    atomic_store(&stop, 1);
    for (int k = 0; k < 6; k++)
        if (write(pipes[k][1], "x", 1) != 1)
            fail("write", k, 0);
    for (int k = 0; k < 6; k++)
        pthread_join(th[k], NULL);
    check_rw_s();
    printf("poll %d select %d ppoll %d sleeps %d tpoll %d tselect %d errors %d\n",
           atomic_load(&n_poll), atomic_load(&n_select), atomic_load(&n_ppoll),
           atomic_load(&n_sleeps) > 0, atomic_load(&n_tpoll) > 0, atomic_load(&n_tselect) > 0,
           atomic_load(&errors));
    return atomic_load(&errors) ? 1 : 0;
}

/* ---- newdev ---- */

static int mode_newdev(const char *dev2_path) {
    touch("ready");
    while (!exists("go"))
        nap_ms(1);
    uint8_t *dev2 = map_device(dev2_path, 4096);
    char p[8];
    uint64_t t0 = now_ns();
    for (;;) {
        perms_at(dev2, p);
        if (strcmp(p, "---s") == 0)
            break;
        if (now_ns() - t0 > 60ull * 1000000000u) {
            fail("the new mapping was never traced", 0, 0);
            break;
        }
        nap_ms(1);
    }
    wr32(dev2 + 0x40, 0xfeed);
    uint32_t v = rd32(dev2 + 0x40);
    if (v != 0xfeed)
        fail("read back dev2 0x40", v, 0xfeed);
    if (munmap(dev2, 4096) != 0)
        fail("munmap", errno, 0);
    /* At once, before the core's next look: anonymous memory at the same address. */
    uint8_t *anon = mmap(dev2, 4096, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (anon != dev2) {
        fail("anonymous memory not at the old address", (long)anon, (long)dev2);
    } else {
        t0 = now_ns();
        uint32_t k = 0;
        while (now_ns() - t0 < 300ull * 1000000) {
            ((volatile uint32_t *)anon)[k % 1024] = k;
            if (((volatile uint32_t *)anon)[k % 1024] != k)
                fail("anonymous memory read back", k, 0);
            perms_at(anon, p);
            if (strcmp(p, "rw-p") != 0)
                fail("anonymous memory is not rw-p", p[0], p[1]);
            k++;
            nap_ms(1);
        }
    }
    wr32(dev + 0x10, 0x5a5a);
    touch("done");
    while (!exists("stop"))
        nap_ms(1);
    printf("errors %d\n", atomic_load(&errors));
    return atomic_load(&errors) ? 1 : 0;
}

/* ---- exec / after ---- */

static int mode_exec(const char *self, const char *devpath) {
    touch("ready");
    long i = 0;
    for (; !exists("exec"); i++) {
        dev_iter(i);
        nap_ms(1);
    }
    char n[32];
    snprintf(n, sizeof n, "%ld", i);
    execl(self, self, "after", devpath, dir, n, (char *)NULL);
    perror("execl");
    return 100;
}

static int mode_after(void) {
    check_rw_s();
    wr32(dev + 0x10, 0xa5a5);
    if (rd32(dev + 0x10) != 0xa5a5)
        fail("read back after the exec", rd32(dev + 0x10), 0xa5a5);
    char p[8];
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096];
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "/memfd:mmio-trace") || strncmp(line, "2aa000000000-", 13) == 0)
            fail("a mapping of the tracer's in the new image", 0, 0);
    if (f)
        fclose(f);
    (void)p;
    touch("after");
    while (!exists("stop"))
        nap_ms(1);
    printf("after errors %d\n", atomic_load(&errors));
    return atomic_load(&errors) ? 1 : 3;
}

/* ---- retsegv ---- */

static uint8_t *guard_page;
static atomic_long handled;

/* The classic handler that opens the page and returns (as garbage collectors and
 * user-space pagers do): its return runs the restorer the program registered. */
static void on_segv_return(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    (void)ctx;
    if ((uint8_t *)si->si_addr < guard_page || (uint8_t *)si->si_addr >= guard_page + 4096) {
        static const char m[] = "v_attach: SIGSEGV outside the guard page\n";
        if (write(2, m, sizeof m - 1) < 0)
            _exit(98);
        _exit(97);
    }
    mprotect(guard_page, 4096, PROT_READ | PROT_WRITE);
    atomic_fetch_add(&handled, 1);
}

static int mode_retsegv(void) {
    guard_page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (guard_page == MAP_FAILED)
        return 100;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv_return;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    touch("ready");
    long i = 0;
    for (; !exists("stop"); i++) {
        dev_iter(i);
        mprotect(guard_page, 4096, PROT_NONE);
        *(volatile uint32_t *)guard_page = (uint32_t)i;
        if (*(volatile uint32_t *)guard_page != (uint32_t)i)
            fail("guard page read back", *(volatile uint32_t *)guard_page, i);
        nap_ms(1);
    }
    check_rw_s();
    printf("iterations %ld handled %ld errors %d\n", i, atomic_load(&handled),
           atomic_load(&errors));
    return atomic_load(&errors) || atomic_load(&handled) != i ? 1 : 0;
}

/* ---- newhandler ---- */

static void on_segv_old(int sig) {
    (void)sig;
    static const char m[] = "v_attach: the old SIGSEGV handler ran\n";
    if (write(2, m, sizeof m - 1) < 0)
        _exit(98);
    _exit(96);
}

static int mode_newhandler(void) {
    signal(SIGSEGV, on_segv_old);
    touch("ready");
    long i = 0, recovered = 0, provoked = 0;
    for (; !exists("go"); i++) {
        dev_iter(i);
        nap_ms(1);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    /* The core's helper puts the tracer's handler back (the query then shows it): no
     * device access before that, it would reach this handler. */
    uint64_t t0 = now_ns();
    for (;;) {
        struct sigaction q;
        sigaction(SIGSEGV, NULL, &q);
        if (q.sa_sigaction != on_segv)
            break;
        if (now_ns() - t0 > 60ull * 1000000000u) {
            fail("the tracer's handler never came back", 0, 0);
            break;
        }
        nap_ms(1);
    }
    wr32(dev + 0x14, 0x5eed);
    touch("switched");
    for (; !exists("stop"); i++) {
        dev_iter(i);
        recovered += provoke(8);
        provoked++;
        nap_ms(1);
    }
    struct sigaction now;
    sigaction(SIGSEGV, NULL, &now);
    if (now.sa_sigaction != on_segv)
        fail("SIGSEGV's handler is not the program's newest", (long)now.sa_sigaction,
             (long)on_segv);
    check_rw_s();
    printf("provoked %ld recovered %ld errors %d\n", provoked, recovered, atomic_load(&errors));
    return atomic_load(&errors) || recovered != provoked ? 1 : 0;
}

/* ---- trapblock ---- */

static void *trap_worker(void *a) {
    (void)a;
    volatile uint8_t *reg = dev + 0x100;
    for (long i = 0; !atomic_load(&stop); i++) {
        wr32(reg, (uint32_t)i);
        uint32_t v = rd32(reg);
        if (v != (uint32_t)i)
            fail("worker read back", v, i);
        nap_ms(1);
    }
    return NULL;
}

static int mode_trapblock(void) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGTRAP);
    sigprocmask(SIG_BLOCK, &s, NULL);
    pthread_t w;
    pthread_create(&w, NULL, trap_worker, NULL);
    touch("ready");
    long i = 0;
    for (; !exists("stop"); i++) {
        dev_iter(i);
        nap_ms(1);
    }
    atomic_store(&stop, 1);
    pthread_join(w, NULL);
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    if (!sigismember(&now, SIGTRAP))
        fail("SIGTRAP no longer blocked", 0, 0);
    struct sigaction sa;
    sigaction(SIGTRAP, NULL, &sa);
    if (sa.sa_handler != SIG_DFL)
        fail("SIGTRAP has a handler", (long)sa.sa_handler, 0);
    check_rw_s();
    printf("iterations %ld errors %d\n", i, atomic_load(&errors));
    return atomic_load(&errors) ? 1 : 0;
}

/* ---- blocksegv ---- */

static void *blocking_worker(void *a) {
    (void)a;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGSEGV);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    while (!atomic_load(&stop))
        nap_ms(5);
    return NULL;
}

static int mode_blocksegv(void) {
    pthread_t w;
    pthread_create(&w, NULL, blocking_worker, NULL);
    nap_ms(20);
    touch("ready");
    long i = 0;
    for (; !exists("stop"); i++) {
        dev_iter(i);
        nap_ms(1);
    }
    atomic_store(&stop, 1);
    pthread_join(w, NULL);
    check_rw_s();
    printf("iterations %ld errors %d\n", i, atomic_load(&errors));
    return atomic_load(&errors) ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: v_attach MODE DEVICE [DEVICE2] DIR\n");
        return 100;
    }
    const char *mode = argv[1];
    int two = strcmp(mode, "newdev") == 0;
    if (argc < 4 + two)
        return 100;
    dir = argv[3 + two];
    dev = map_device(argv[2], 4096);
    if (!strcmp(mode, "segv"))
        return mode_segv();
    if (!strcmp(mode, "slowsegv")) {
        slow_handler = 1;
        return mode_segv();
    }
    if (!strcmp(mode, "sse"))
        return mode_sse();
    if (!strcmp(mode, "blocked"))
        return mode_blocked();
    if (!strcmp(mode, "newdev"))
        return mode_newdev(argv[3]);
    if (!strcmp(mode, "exec"))
        return mode_exec(argv[0], argv[2]);
    if (!strcmp(mode, "after"))
        return mode_after();
    if (!strcmp(mode, "blocksegv"))
        return mode_blocksegv();
    if (!strcmp(mode, "trapblock"))
        return mode_trapblock();
    if (!strcmp(mode, "retsegv"))
        return mode_retsegv();
    if (!strcmp(mode, "newhandler"))
        return mode_newhandler();
    fprintf(stderr, "v_attach: unknown mode %s\n", mode);
    return 100;
}
