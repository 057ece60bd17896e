/* Blocking calls of other threads while one thread runs glibc `strlen` on device memory
 * many times. The out-of-line fault path pauses no thread, so none of them returns early;
 * the step path (MMIO_TRACE_PATH=step) pauses them all with a signal at every step, and
 * each returns early (EINTR). Each call runs in a thread of its own, is woken by SIGUSR1
 * (handler without SA_RESTART) after main's accesses, and prints NAME ok|early: early when
 * it returned before the wake-up. Then main prints the strlen results that were wrong.
 *
 * usage: ool_eintr DEVICE   (a NUL-terminated string at device offset 0x100) */
#define _GNU_SOURCE
#include "mmio.h"
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/select.h>
#include <sys/sem.h>
#include <sys/socket.h>
#include <time.h>

#define WAIT_S 30

static volatile int woken;
static int pipe_fd[2], sock[2], epfd, msqid, semid;

static void on_usr1(int sig) { (void)sig; }

static int c_nanosleep(void) { struct timespec t = {WAIT_S, 0}; nanosleep(&t, NULL); return !woken; }
static int c_clock_nanosleep(void) {
    struct timespec t = {WAIT_S, 0};
    clock_nanosleep(CLOCK_MONOTONIC, 0, &t, NULL);
    return !woken;
}
static int c_poll(void) { struct pollfd p = {pipe_fd[0], POLLIN, 0}; poll(&p, 1, WAIT_S * 1000); return !woken; }
static int c_epoll_wait(void) { struct epoll_event e; epoll_wait(epfd, &e, 1, WAIT_S * 1000); return !woken; }
static int c_select(void) {
    fd_set r; FD_ZERO(&r); FD_SET(pipe_fd[0], &r);
    struct timeval t = {WAIT_S, 0};
    select(pipe_fd[0] + 1, &r, NULL, NULL, &t);
    return !woken;
}
static int c_msgrcv(void) { struct { long t; char c[8]; } m; msgrcv(msqid, &m, sizeof m.c, 0, 0); return !woken; }
static int c_semop(void) { struct sembuf d = {0, -1, 0}; semop(semid, &d, 1); return !woken; }
static int c_sigtimedwait(void) {
    sigset_t s; sigemptyset(&s); sigaddset(&s, SIGUSR2);
    struct timespec t = {WAIT_S, 0};
    sigtimedwait(&s, NULL, &t);
    return !woken;
}
static int c_recv(void) { char b; recv(sock[0], &b, 1, 0); return !woken; }

static struct { const char *name; int (*fn)(void); pthread_t t; int early; } calls[] = {
    {"nanosleep", c_nanosleep}, {"poll", c_poll}, {"epoll_wait", c_epoll_wait},
    {"select", c_select}, {"msgrcv", c_msgrcv}, {"semop", c_semop},
    {"sigtimedwait", c_sigtimedwait}, {"clock_nanosleep", c_clock_nanosleep},
    {"recv(SO_RCVTIMEO)", c_recv},
};
#define NCALLS (sizeof calls / sizeof calls[0])

static void *runner(void *arg) {
    size_t i = (size_t)arg;
    calls[i].early = calls[i].fn();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: ool_eintr DEVICE\n"); return 2; }
    const char *dev = (const char *)map_device(argv[1], 4096) + 0x100;
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1; /* no SA_RESTART: the wake-up interrupts every call */
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t s; sigemptyset(&s); sigaddset(&s, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    if (pipe(pipe_fd) || socketpair(AF_UNIX, SOCK_STREAM, 0, sock)) { perror("setup"); return 100; }
    struct timeval tv = {WAIT_S, 0};
    setsockopt(sock[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = pipe_fd[0]};
    epoll_ctl(epfd, EPOLL_CTL_ADD, pipe_fd[0], &ev);
    msqid = msgget(IPC_PRIVATE, 0600);
    semid = semget(IPC_PRIVATE, 1, 0600);
    if (epfd < 0 || msqid < 0 || semid < 0) { perror("setup"); return 100; }
    size_t want = strlen(dev);
    for (size_t i = 0; i < NCALLS; i++) pthread_create(&calls[i].t, NULL, runner, (void *)i);
    struct timespec settle = {0, 300 * 1000 * 1000};
    nanosleep(&settle, NULL);
    int wrong = 0;
    for (int k = 0; k < 300; k++) {
        if (strlen(dev) != want) wrong++;
        struct timespec gap = {0, 2 * 1000 * 1000};
        nanosleep(&gap, NULL);
    }
    woken = 1;
    __sync_synchronize();
    for (size_t i = 0; i < NCALLS; i++) pthread_kill(calls[i].t, SIGUSR1);
    for (size_t i = 0; i < NCALLS; i++) {
        pthread_join(calls[i].t, NULL);
        printf("%s %s\n", calls[i].name, calls[i].early ? "early" : "ok");
    }
    printf("strlen %zu wrong %d\n", want, wrong);
    msgctl(msqid, IPC_RMID, NULL);
    semctl(semid, 0, IPC_RMID);
    return 0;
}
