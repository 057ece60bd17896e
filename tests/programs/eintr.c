/* Which blocking calls return early (EINTR) in one thread while another thread's device
 * accesses are single-stepped (`record --no-alias` steps every access; each step pauses the
 * process's other threads with a signal). Every call runs in a thread of its own and is
 * woken by main at the end of the stepping window if it has not returned by then; a call
 * that returned before that reports "early". Prints one line per call: NAME ok|early.
 *
 * usage: eintr DEVICE */
#define _GNU_SOURCE
#include "mmio.h"
#include <errno.h>
#include <linux/aio_abi.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/select.h>
#include <sys/sem.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/futex.h>
#include <mqueue.h>
#include <sys/file.h>
#include <time.h>

/* Long enough that every call is still blocked when the window ends. */
#define WAIT_S 30

static int pipe_fd[2], sock_to[2], sock_plain[2], epfd, msqid, semid, ino_fd;
static sem_t psem, psem_t;
static pthread_t sig_thread, pause_thread, suspend_thread;
static volatile int woken;
static uint32_t futex_word;
static char ino_dir[64];
static int msq_full, sock_full[2], sock_acc, lock_fd[2], flock_fd[2];
static mqd_t mq;
static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER, cv_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static struct timespec in_s(int s) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += s;
    return t;
}

static void on_usr1(int sig) { (void)sig; }

/* Each returns 1 if the call came back before main woke it, 0 otherwise. */
#define EARLY(expr) do { (void)(expr); return !woken; } while (0)

static int c_nanosleep(void) { struct timespec t = {WAIT_S, 0}; EARLY(nanosleep(&t, NULL)); }
static int c_clock_nanosleep(void) {
    struct timespec t = {WAIT_S, 0};
    EARLY(clock_nanosleep(CLOCK_MONOTONIC, 0, &t, NULL));
}
static int c_sleep(void) { EARLY(sleep(WAIT_S)); }
static int c_usleep(void) { EARLY(usleep(WAIT_S * 1000000u)); }
static int c_poll(void) { struct pollfd p = {pipe_fd[0], POLLIN, 0}; EARLY(poll(&p, 1, WAIT_S * 1000)); }
static int c_ppoll(void) {
    struct pollfd p = {pipe_fd[0], POLLIN, 0};
    struct timespec t = {WAIT_S, 0};
    EARLY(ppoll(&p, 1, &t, NULL));
}
static int c_select(void) {
    fd_set s; FD_ZERO(&s); FD_SET(pipe_fd[0], &s);
    struct timeval t = {WAIT_S, 0};
    EARLY(select(pipe_fd[0] + 1, &s, NULL, NULL, &t));
}
static int c_pselect(void) {
    fd_set s; FD_ZERO(&s); FD_SET(pipe_fd[0], &s);
    struct timespec t = {WAIT_S, 0};
    EARLY(pselect(pipe_fd[0] + 1, &s, NULL, NULL, &t, NULL));
}
static int c_epoll_wait(void) { struct epoll_event e; EARLY(epoll_wait(epfd, &e, 1, WAIT_S * 1000)); }
static int c_epoll_pwait(void) { struct epoll_event e; EARLY(epoll_pwait(epfd, &e, 1, WAIT_S * 1000, NULL)); }
static int c_read_pipe(void) { char c; EARLY((int)read(pipe_fd[0], &c, 1)); }
static int c_recv(void) { char c; EARLY((int)recv(sock_plain[0], &c, 1, 0)); }
static int c_recv_timeout(void) { char c; EARLY((int)recv(sock_to[0], &c, 1, 0)); }
static int c_msgrcv(void) {
    struct { long type; char c; } m;
    EARLY((int)msgrcv(msqid, &m, 1, 0, 0));
}
static int c_semop(void) { struct sembuf b = {0, -1, 0}; EARLY(semop(semid, &b, 1)); }
static int c_semtimedop(void) {
    struct sembuf b = {1, -1, 0};
    struct timespec t = {WAIT_S, 0};
    EARLY(semtimedop(semid, &b, 1, &t));
}
static int c_sem_wait(void) { EARLY(sem_wait(&psem)); }
static int c_sem_timedwait(void) { struct timespec t = in_s(WAIT_S); EARLY(sem_timedwait(&psem_t, &t)); }
static int c_futex_wait(void) {
    EARLY((int)syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0));
}
static int c_futex_timed(void) {
    struct timespec t = {WAIT_S, 0};
    EARLY((int)syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, &t, NULL, 0));
}
static int c_sigtimedwait(void) {
    sigset_t s; sigemptyset(&s); sigaddset(&s, SIGUSR2);
    struct timespec t = {WAIT_S, 0};
    EARLY(sigtimedwait(&s, NULL, &t));
}
static int c_sigwaitinfo(void) {
    sig_thread = pthread_self();
    sigset_t s; sigemptyset(&s); sigaddset(&s, SIGUSR2);
    EARLY(sigwaitinfo(&s, NULL));
}
static int c_pause(void) { pause_thread = pthread_self(); pause(); return !woken; }
static int c_sigsuspend(void) {
    suspend_thread = pthread_self();
    sigset_t s; sigemptyset(&s);
    sigsuspend(&s);
    return !woken;
}
static int c_inotify_read(void) { char buf[256]; EARLY((int)read(ino_fd, buf, sizeof buf)); }
static int c_waitpid(void) {
    pid_t c = fork();
    if (c == 0) { char ch; read(pipe_fd[0], &ch, 1); _exit(0); }
    int st;
    EARLY(waitpid(c, &st, 0));
}
static int c_io_getevents(void) {
    aio_context_t ctx = 0;
    if (syscall(SYS_io_setup, 1, &ctx) < 0) return 1;
    struct io_event e;
    struct timespec t = {WAIT_S, 0};
    EARLY((int)syscall(SYS_io_getevents, ctx, 1, 1, &e, &t));
}

static int c_cond_timedwait(void) {
    struct timespec t = in_s(WAIT_S);
    pthread_mutex_lock(&cv_lock);
    int early = 0;
    while (!woken && !early) early = pthread_cond_timedwait(&cv, &cv_lock, &t) != 0;
    pthread_mutex_unlock(&cv_lock);
    return early;
}
static int c_mutex_timedlock(void) {
    struct timespec t = in_s(WAIT_S);
    int r = pthread_mutex_timedlock(&held, &t);
    if (r == 0) pthread_mutex_unlock(&held);
    return !woken;
}
static int c_mq_timedreceive(void) {
    char buf[64];
    struct timespec t = in_s(WAIT_S);
    EARLY((int)mq_timedreceive(mq, buf, sizeof buf, NULL, &t));
}
static int c_msgsnd_full(void) {
    struct { long type; char c[64]; } m = {1, {0}};
    EARLY(msgsnd(msq_full, &m, sizeof m.c, 0));
}
static int c_send_timeout(void) { char b[4096] = {0}; EARLY((int)send(sock_full[0], b, sizeof b, 0)); }
static int c_accept_timeout(void) { EARLY(accept(sock_acc, NULL, NULL)); }
static int c_ofd_lock(void) {
    struct flock l = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    EARLY(fcntl(lock_fd[1], F_OFD_SETLKW, &l));
}
static int c_flock(void) { EARLY(flock(flock_fd[1], LOCK_EX)); }
static int c_epoll_pwait2(void) {
    struct epoll_event e;
    struct timespec t = {WAIT_S, 0};
    EARLY(epoll_pwait2(epfd, &e, 1, &t, NULL));
}
static int c_clock_nanosleep_abs(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += WAIT_S;
    EARLY(clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL));
}

struct call { const char *name; int (*fn)(void); int early; pthread_t t; };
static struct call calls[] = {
    {"nanosleep", c_nanosleep}, {"clock_nanosleep", c_clock_nanosleep}, {"sleep", c_sleep},
    {"usleep", c_usleep}, {"poll", c_poll}, {"ppoll", c_ppoll}, {"select", c_select},
    {"pselect", c_pselect}, {"epoll_wait", c_epoll_wait}, {"epoll_pwait", c_epoll_pwait},
    {"read(pipe)", c_read_pipe}, {"recv", c_recv}, {"recv(SO_RCVTIMEO)", c_recv_timeout},
    {"msgrcv", c_msgrcv}, {"semop", c_semop}, {"semtimedop", c_semtimedop},
    {"sem_wait", c_sem_wait}, {"sem_timedwait", c_sem_timedwait},
    {"futex(FUTEX_WAIT)", c_futex_wait}, {"futex(FUTEX_WAIT, timeout)", c_futex_timed},
    {"sigtimedwait", c_sigtimedwait}, {"sigwaitinfo", c_sigwaitinfo}, {"pause", c_pause},
    {"sigsuspend", c_sigsuspend}, {"read(inotify)", c_inotify_read}, {"waitpid", c_waitpid},
    {"io_getevents", c_io_getevents}, {"pthread_cond_timedwait", c_cond_timedwait},
    {"pthread_mutex_timedlock", c_mutex_timedlock}, {"mq_timedreceive", c_mq_timedreceive},
    {"msgsnd", c_msgsnd_full}, {"send(SO_SNDTIMEO)", c_send_timeout},
    {"accept(SO_RCVTIMEO)", c_accept_timeout}, {"fcntl(F_OFD_SETLKW)", c_ofd_lock},
    {"flock", c_flock}, {"epoll_pwait2", c_epoll_pwait2},
    {"clock_nanosleep(TIMER_ABSTIME)", c_clock_nanosleep_abs},
};
#define NCALLS (sizeof calls / sizeof calls[0])

static void *runner(void *p) {
    struct call *c = p;
    c->early = c->fn();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: eintr DEVICE\n"); return 2; }
    volatile uint8_t *dev = map_device(argv[1], 4096);
    signal(SIGUSR1, on_usr1);
    /* SIGUSR2 is only ever waited for. */
    sigset_t s; sigemptyset(&s); sigaddset(&s, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    if (pipe(pipe_fd) || socketpair(AF_UNIX, SOCK_STREAM, 0, sock_to) ||
        socketpair(AF_UNIX, SOCK_STREAM, 0, sock_plain)) { perror("setup"); return 100; }
    struct timeval tv = {WAIT_S, 0};
    setsockopt(sock_to[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = pipe_fd[0]};
    epoll_ctl(epfd, EPOLL_CTL_ADD, pipe_fd[0], &ev);
    msqid = msgget(IPC_PRIVATE, 0600);
    semid = semget(IPC_PRIVATE, 2, 0600);
    sem_init(&psem, 0, 0);
    sem_init(&psem_t, 0, 0);
    snprintf(ino_dir, sizeof ino_dir, "/tmp/mmio-trace-eintr-%d", (int)getpid());
    mkdir(ino_dir, 0700);
    ino_fd = inotify_init();
    inotify_add_watch(ino_fd, ino_dir, IN_CREATE);
    pthread_mutex_lock(&held);
    struct mq_attr qa = {.mq_maxmsg = 4, .mq_msgsize = 64};
    char qname[64];
    snprintf(qname, sizeof qname, "/mmio-trace-eintr-%d", (int)getpid());
    mq = mq_open(qname, O_RDWR | O_CREAT | O_EXCL, 0600, &qa);
    mq_unlink(qname);
    msq_full = msgget(IPC_PRIVATE, 0600);
    struct { long type; char c[64]; } fill = {1, {0}};
    while (msgsnd(msq_full, &fill, sizeof fill.c, IPC_NOWAIT) == 0) {}
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sock_full)) { perror("socketpair"); return 100; }
    setsockopt(sock_full[0], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    { char b[4096] = {0}; while (send(sock_full[0], b, sizeof b, MSG_DONTWAIT) > 0) {} }
    sock_acc = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t salen = sizeof sa;
    bind(sock_acc, (struct sockaddr *)&sa, sizeof sa);
    listen(sock_acc, 1);
    getsockname(sock_acc, (struct sockaddr *)&sa, &salen);
    setsockopt(sock_acc, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char lpath[96];
    snprintf(lpath, sizeof lpath, "%s.lock", ino_dir);
    for (int k = 0; k < 2; k++) {
        lock_fd[k] = open(lpath, O_RDWR | O_CREAT, 0600);
        flock_fd[k] = open(lpath, O_RDWR);
    }
    unlink(lpath);
    struct flock lk = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    fcntl(lock_fd[0], F_OFD_SETLK, &lk);
    flock(flock_fd[0], LOCK_EX);
    if (mq == (mqd_t)-1 || msq_full < 0 || sock_acc < 0 || lock_fd[1] < 0 || flock_fd[1] < 0) {
        perror("setup");
        return 100;
    }
    if (epfd < 0 || msqid < 0 || semid < 0 || ino_fd < 0) { perror("setup"); return 100; }

    for (size_t i = 0; i < NCALLS; i++) pthread_create(&calls[i].t, NULL, runner, &calls[i]);
    /* Let every thread block, then access the device for a while (each access is a
     * step under `record --no-alias`). */
    struct timespec settle = {0, 300 * 1000 * 1000};
    nanosleep(&settle, NULL);
    for (int k = 0; k < 400; k++) {
        wr32(dev + 4 * (k % 16), (uint32_t)k);
        struct timespec gap = {0, 2 * 1000 * 1000};
        nanosleep(&gap, NULL);
    }

    /* Wake whatever still blocks. */
    woken = 1;
    __sync_synchronize();
    for (int k = 0; k < 4; k++) write(pipe_fd[1], "x", 1);
    send(sock_plain[1], "x", 1, 0);
    send(sock_to[1], "x", 1, 0);
    struct { long type; char c; } m = {1, 'x'};
    msgsnd(msqid, &m, 1, 0);
    struct sembuf up[2] = {{0, 1, 0}, {1, 1, 0}};
    semop(semid, up, 2);
    sem_post(&psem);
    sem_post(&psem_t);
    pthread_mutex_lock(&cv_lock);
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&cv_lock);
    pthread_mutex_unlock(&held);
    mq_send(mq, "x", 1, 0);
    { struct { long type; char c[64]; } m2; msgrcv(msq_full, &m2, sizeof m2.c, 0, IPC_NOWAIT); }
    { char b[65536]; while (recv(sock_full[1], b, sizeof b, MSG_DONTWAIT) > 0) {} }
    { int c = socket(AF_INET, SOCK_STREAM, 0); connect(c, (struct sockaddr *)&sa, sizeof sa); }
    close(lock_fd[0]);
    close(flock_fd[0]);
    futex_word = 1;
    syscall(SYS_futex, &futex_word, FUTEX_WAKE_PRIVATE, 100, NULL, NULL, 0);
    if (sig_thread) pthread_kill(sig_thread, SIGUSR2);
    if (pause_thread) pthread_kill(pause_thread, SIGUSR1);
    if (suspend_thread) pthread_kill(suspend_thread, SIGUSR1);
    char f[96];
    snprintf(f, sizeof f, "%s/wake", ino_dir);
    close(open(f, O_CREAT | O_WRONLY, 0600));
    /* Calls with a timeout of their own and nothing to wake them (sleeps, sigtimedwait,
     * io_getevents) are interrupted by a signal of the program's instead. */
    for (size_t i = 0; i < NCALLS; i++) pthread_kill(calls[i].t, SIGUSR1);
    for (size_t i = 0; i < NCALLS; i++) {
        pthread_join(calls[i].t, NULL);
        printf("%s %s\n", calls[i].name, calls[i].early ? "early" : "ok");
    }
    unlink(f);
    rmdir(ino_dir);
    msgctl(msqid, IPC_RMID, NULL);
    msgctl(msq_full, IPC_RMID, NULL);
    semctl(semid, 0, IPC_RMID);
    return 0;
}
