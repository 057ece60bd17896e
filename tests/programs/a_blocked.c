/* A multi-threaded program for `record --pid` with one thread blocked in each of
 * nanosleep, epoll_wait, read (a pipe) and a futex wait while the recorder attaches and
 * detaches, and the main thread making device accesses (W32 0x10 = i, R32 0x10) with
 * 1 ms sleeps meanwhile. Each blocked thread checks, once woken, that its call returned
 * exactly what it should: nanosleep 0 after the full time (it sleeps 50 ms at a time,
 * so every attach lands in one), epoll_wait 1 event with the registered data, read the 7
 * bytes main wrote, the futex wait 0 (or EAGAIN if main changed the word first); never
 * EINTR. DIR/ready is written once every thread is in its call (its
 * /proc/self/task/TID/syscall says so); DIR/release makes main wake them and end. Prints
 *   nanosleeps N epoll E read R futex F errors X
 * and exits 1 if anything was wrong, else 0.
 *
 * usage: a_blocked DEVICE DIR */
#define _GNU_SOURCE
#include "mmio.h"
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>

static const char *dir;
static atomic_int errors, stop, nanosleeps, got_epoll, got_read, got_futex;
static int ep, ep_pipe[2], rd_pipe[2];
static uint32_t futex_word;
static atomic_int tids[4];

static void fail(const char *what, long a, long b) {
    fprintf(stderr, "a_blocked: %s: %ld vs %ld (errno %d %s)\n", what, a, b, errno, strerror(errno));
    atomic_fetch_add(&errors, 1);
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void *t_nanosleep(void *arg) {
    (void)arg;
    atomic_store(&tids[0], (int)gettid());
    while (!atomic_load(&stop)) {
        uint64_t t0 = now_ns();
        struct timespec t = {0, 50 * 1000 * 1000}, rem = {0, 0};
        int r = nanosleep(&t, &rem);
        uint64_t dt = now_ns() - t0;
        if (r != 0)
            fail("nanosleep returned", r, 0);
        else if (dt < 50u * 1000 * 1000)
            fail("nanosleep slept short (ns)", (long)dt, 50 * 1000 * 1000);
        atomic_fetch_add(&nanosleeps, 1);
    }
    return NULL;
}

static void *t_epoll(void *arg) {
    (void)arg;
    atomic_store(&tids[1], (int)gettid());
    struct epoll_event ev[4];
    memset(ev, 0, sizeof ev);
    int r = epoll_wait(ep, ev, 4, -1);
    if (r != 1)
        fail("epoll_wait returned", r, 1);
    else if (ev[0].data.u32 != 42 || !(ev[0].events & EPOLLIN))
        fail("epoll_wait event", ev[0].data.u32, 42);
    else
        atomic_store(&got_epoll, 1);
    return NULL;
}

static void *t_read(void *arg) {
    (void)arg;
    atomic_store(&tids[2], (int)gettid());
    char buf[64];
    ssize_t n = read(rd_pipe[0], buf, sizeof buf);
    if (n != 7)
        fail("read returned", (long)n, 7);
    else if (memcmp(buf, "release", 7) != 0)
        fail("read bytes differ", 0, 0);
    else
        atomic_store(&got_read, 1);
    return NULL;
}

static void *t_futex(void *arg) {
    (void)arg;
    atomic_store(&tids[3], (int)gettid());
    while (__atomic_load_n(&futex_word, __ATOMIC_ACQUIRE) == 0) {
        long r = syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
        if (r != 0 && errno != EAGAIN) {
            fail("futex wait returned", r, 0);
            return NULL;
        }
    }
    atomic_store(&got_futex, 1);
    return NULL;
}

/* The system call number thread `tid` is blocked in (-1 if running or unknown). */
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

static int exists(const char *name) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: a_blocked DEVICE DIR\n");
        return 100;
    }
    dir = argv[2];
    uint8_t *dev = map_device(argv[1], 4096);
    if (pipe(ep_pipe) || pipe(rd_pipe))
        return 100;
    ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = 42};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ep_pipe[0], &e))
        return 100;
    void *(*fns[4])(void *) = {t_nanosleep, t_epoll, t_read, t_futex};
    long want[4] = {SYS_nanosleep, SYS_epoll_wait, SYS_read, SYS_futex};
    pthread_t th[4];
    for (int k = 0; k < 4; k++)
        pthread_create(&th[k], NULL, fns[k], NULL);
    /* glibc may use clock_nanosleep or epoll_pwait for these: accept either. */
    long alt[4] = {SYS_clock_nanosleep, SYS_epoll_pwait, SYS_read, SYS_futex};
    for (int k = 0; k < 4; k++) {
        for (;;) {
            int tid = atomic_load(&tids[k]);
            long nr = tid ? blocked_in(tid) : -1;
            if (nr == want[k] || nr == alt[k])
                break;
            usleep(1000);
        }
    }
    {
        char p[4096], tmp[4096];
        snprintf(p, sizeof p, "%s/ready", dir);
        snprintf(tmp, sizeof tmp, "%s/ready.tmp", dir);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%d\n", getpid()) < 0 || fclose(f) || rename(tmp, p))
            return 100;
    }
    long i = 0;
    for (; !exists("release"); i++) {
        wr32(dev + 0x10, (uint32_t)i);
        uint32_t v = rd32(dev + 0x10);
        if (v != (uint32_t)i)
            fail("read back 0x10", v, i);
        struct timespec t = {0, 1000 * 1000};
        if (clock_nanosleep(CLOCK_MONOTONIC, 0, &t, NULL) != 0)
            fail("main clock_nanosleep", -1, 0);
    }
    /* Every blocked thread must still be in its call: none returned early. */
    if (atomic_load(&got_epoll) || atomic_load(&got_read) || atomic_load(&got_futex))
        fail("a blocked call returned before its wake-up", 0, 0);
    __atomic_store_n(&futex_word, 1, __ATOMIC_RELEASE);
    syscall(SYS_futex, &futex_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    if (write(ep_pipe[1], "x", 1) != 1 || write(rd_pipe[1], "release", 7) != 7)
        fail("write", 0, 0);
    atomic_store(&stop, 1);
    for (int k = 0; k < 4; k++)
        pthread_join(th[k], NULL);
    printf("nanosleeps %d epoll %d read %d futex %d errors %d iterations %ld\n",
           atomic_load(&nanosleeps), atomic_load(&got_epoll), atomic_load(&got_read),
           atomic_load(&got_futex), atomic_load(&errors), i);
    fflush(stdout);
    int ok = !atomic_load(&errors) && got_epoll && got_read && got_futex;
    return ok ? 0 : 1;
}
