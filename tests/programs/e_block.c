/* A thread blocked in one system call, chosen by argv[1], for the ptrace engine's
 * injection tests. Prints "ready" once its helper state exists, then blocks; afterwards
 * prints what the call returned, errno, and the time it took, exactly as seen by the
 * program:
 *   nanosleep / clock_nanosleep: sleeps 300 ms          -> "ret=0 errno=0 ms=N"
 *   read:  reads stdin (a pipe)                          -> "ret=N errno=0 data=TEXT"
 *   poll / epoll: waits for stdin to become readable     -> "ret=1 errno=0 data=TEXT"
 *   futex: waits on a futex that a second thread wakes once stdin has a byte
 *                                                         -> "ret=0 errno=0 word=1"
 *   ppoll: like poll, with SIGUSR1 blocked during the call -> also prints the mask after
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static uint32_t word;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void *waker(void *arg) {
    (void)arg;
    char c;
    if (read(0, &c, 1) != 1)
        return NULL;
    __atomic_store_n(&word, 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, &word, FUTEX_WAKE, 1, NULL, NULL, 0);
    return NULL;
}

static void data(void) {
    char buf[64] = {0};
    ssize_t n = read(0, buf, sizeof buf - 1);
    printf(" data=%s", n > 0 ? buf : "");
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "nanosleep";
    setvbuf(stdout, NULL, _IONBF, 0);
    long ret;
    int err;
    double t0;
    if (!strcmp(mode, "futex")) {
        pthread_t th;
        pthread_create(&th, NULL, waker, NULL);
        printf("ready\n");
        t0 = now_ms();
        errno = 0;
        ret = syscall(SYS_futex, &word, FUTEX_WAIT, 0, NULL, NULL, 0);
        err = errno;
        pthread_join(th, NULL);
        printf("ret=%ld errno=%d word=%u\n", ret, err, word);
        return 0;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = 0};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
    printf("ready\n");
    t0 = now_ms();
    errno = 0;
    if (!strcmp(mode, "nanosleep")) {
        struct timespec ts = {0, 300 * 1000 * 1000}, rem = {0, 0};
        ret = nanosleep(&ts, &rem);
    } else if (!strcmp(mode, "clock_nanosleep")) {
        struct timespec ts = {0, 300 * 1000 * 1000};
        ret = clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
        if (ret) {
            errno = ret;
            ret = -1;
        }
    } else if (!strcmp(mode, "read")) {
        char buf[64] = {0};
        ret = read(0, buf, sizeof buf - 1);
        err = errno;
        printf("ret=%ld errno=%d data=%s\n", ret, err, buf);
        return 0;
    } else if (!strcmp(mode, "poll")) {
        struct pollfd p = {.fd = 0, .events = POLLIN};
        ret = poll(&p, 1, -1);
    } else if (!strcmp(mode, "ppoll")) {
        struct pollfd p = {.fd = 0, .events = POLLIN};
        sigset_t m;
        sigemptyset(&m);
        sigaddset(&m, SIGUSR1);
        ret = ppoll(&p, 1, NULL, &m);
    } else if (!strcmp(mode, "epoll")) {
        struct epoll_event out;
        ret = epoll_wait(ep, &out, 1, -1);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    err = errno;
    double ms = now_ms() - t0;
    if (!strcmp(mode, "nanosleep") || !strcmp(mode, "clock_nanosleep")) {
        printf("ret=%ld errno=%d ms=%d\n", ret, err, (int)ms);
    } else {
        printf("ret=%ld errno=%d", ret, err);
        data();
        if (!strcmp(mode, "ppoll")) {
            sigset_t cur;
            sigprocmask(SIG_BLOCK, NULL, &cur);
            printf(" usr1_blocked=%d", sigismember(&cur, SIGUSR1));
        }
        printf("\n");
    }
    return 0;
}
