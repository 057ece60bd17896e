/* A signal the program ignores must not break off a blocking call (natively it does not
 * even wake the thread): the main thread waits in epoll_wait (500 ms, nothing to wait
 * for) while another thread sends it SIGUSR1, set to SIG_IGN, five times. Prints the
 * call's result and errno (0 0: it timed out as natively). Writes the device before and
 * after. */
#include "mmio.h"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/syscall.h>

static pid_t main_tid;

static void *sender(void *arg) {
    (void)arg;
    for (int i = 0; i < 5; i++) {
        usleep(20000);
        syscall(SYS_tgkill, getpid(), main_tid, SIGUSR1);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    uint8_t *bar = map_device(argv[1], 4096);
    signal(SIGUSR1, SIG_IGN);
    main_tid = (pid_t)syscall(SYS_gettid);
    wr32(bar, 1);
    int ep = epoll_create1(0);
    pthread_t t;
    pthread_create(&t, NULL, sender, NULL);
    struct epoll_event ev;
    errno = 0;
    int r = epoll_wait(ep, &ev, 1, 500);
    int e = errno;
    pthread_join(t, NULL);
    wr32(bar, 2);
    printf("%d %d\n", r, e);
    return 0;
}
