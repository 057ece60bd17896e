/* Waiting with a mask that blocks every signal but SIGUSR1 (sigsuspend, ppoll, pselect,
 * epoll_pwait, epoll_pwait2): the SIGUSR1 handler runs during the wait and writes to the
 * device, which must work (the tracer's signals stay deliverable in the wait's mask). */
#include "mmio.h"
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
static uint8_t *dev;
static volatile uint32_t val;
static void on_usr1(int s) { (void)s; wr32(dev + 8, val); }
int main(int argc, char **argv) {
    (void)argc;
    dev = map_device(argv[1], 4096);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, 0);
    sigset_t block, wait;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, 0);
    sigfillset(&wait);
    sigdelset(&wait, SIGUSR1);
    int epfd = epoll_create1(0);
    struct epoll_event ev;
    struct timespec ts = {5, 0};
    const char *names[] = {"sigsuspend", "ppoll", "pselect", "epoll_pwait", "epoll_pwait2"};
    for (int i = 0; i < 5; i++) {
        val = 0x51 + i;
        kill(getpid(), SIGUSR1);
        int r;
        switch (i) {
        case 0: r = sigsuspend(&wait); break;
        case 1: r = ppoll(NULL, 0, &ts, &wait); break;
        case 2: r = pselect(0, NULL, NULL, NULL, &ts, &wait); break;
        case 3: r = epoll_pwait(epfd, &ev, 1, 5000, &wait); break;
        default: r = epoll_pwait2(epfd, &ev, 1, &ts, &wait); break;
        }
        printf("%s %d %s %#x\n", names[i], r, strerror(errno), rd32(dev + 8));
    }
    return 0;
}
