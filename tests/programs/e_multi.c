/* One thread blocked in each of: clock_nanosleep (1.5 s), poll, epoll_wait, FUTEX_WAIT,
 * select, and the main thread in read(stdin). Prints "ready" and then "tids" with the
 * threads' ids in that order; on a byte of stdin the main thread makes each wait end
 * (writes to the poll/epoll/select pipes, sets and wakes the futex), joins them and prints
 * one line per thread: "NAME ret=R errno=E" (sleep adds "ms=N"). */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int p_poll[2], p_epoll[2], p_select[2];
static uint32_t word;
static char result[5][96];
static volatile pid_t tids[5];

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void *sleeper(void *a) {
    (void)a;
    tids[0] = gettid();
    struct timespec ts = {1, 500 * 1000 * 1000};
    double t0 = now_ms();
    int r = clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
    snprintf(result[0], 96, "sleep ret=%d errno=0 ms>=1500=%d", r, now_ms() - t0 >= 1500);
    return NULL;
}

static void *poller(void *a) {
    (void)a;
    tids[1] = gettid();
    struct pollfd p = {.fd = p_poll[0], .events = POLLIN};
    errno = 0;
    int r = poll(&p, 1, -1);
    snprintf(result[1], 96, "poll ret=%d errno=%d", r, errno);
    return NULL;
}

static void *epoller(void *a) {
    (void)a;
    tids[2] = gettid();
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = p_epoll[0]}, out;
    epoll_ctl(ep, EPOLL_CTL_ADD, p_epoll[0], &ev);
    errno = 0;
    int r = epoll_wait(ep, &out, 1, -1);
    snprintf(result[2], 96, "epoll ret=%d errno=%d", r, errno);
    return NULL;
}

static void *futexer(void *a) {
    (void)a;
    tids[3] = gettid();
    errno = 0;
    long r = syscall(SYS_futex, &word, FUTEX_WAIT, 0, NULL, NULL, 0);
    snprintf(result[3], 96, "futex ret=%ld errno=%d", r, errno);
    return NULL;
}

static void *selecter(void *a) {
    (void)a;
    tids[4] = gettid();
    fd_set s;
    FD_ZERO(&s);
    FD_SET(p_select[0], &s);
    errno = 0;
    int r = select(p_select[0] + 1, &s, NULL, NULL, NULL);
    snprintf(result[4], 96, "select ret=%d errno=%d", r, errno);
    return NULL;
}

int main(void) {
    if (pipe(p_poll) || pipe(p_epoll) || pipe(p_select))
        return 2;
    void *(*fn[5])(void *) = {sleeper, poller, epoller, futexer, selecter};
    pthread_t th[5];
    for (int i = 0; i < 5; i++)
        pthread_create(&th[i], NULL, fn[i], NULL);
    for (int i = 0; i < 5; i++)
        while (!tids[i])
            usleep(1000);
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("ready\n%d %d %d %d %d\n", tids[0], tids[1], tids[2], tids[3], tids[4]);
    char c;
    errno = 0;
    ssize_t n = read(0, &c, 1);
    int err = errno;
    if (write(p_poll[1], "p", 1) != 1 || write(p_epoll[1], "e", 1) != 1 || write(p_select[1], "s", 1) != 1)
        return 3;
    __atomic_store_n(&word, 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, &word, FUTEX_WAKE, 1, NULL, NULL, 0);
    for (int i = 0; i < 5; i++)
        pthread_join(th[i], NULL);
    printf("main ret=%zd errno=%d\n", n, err);
    for (int i = 0; i < 5; i++)
        printf("%s\n", result[i]);
    return 0;
}
