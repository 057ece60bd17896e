/* Leaves a child running when it exits (status 0): the child, reparented to the
 * recorder, creates argv[2], waits for SIGTERM, then writes 15 to the device (offset
 * 0x20) and "15" to the file argv[3]. It gives up after a minute (SIGALRM). */
#include "mmio.h"
#include <signal.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { term = sig; }

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    uint8_t *bar = map_device(argv[1], 4096);
    pid_t parent = getpid();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &old);
    pid_t pid = fork();
    if (pid < 0) return 3;
    if (pid > 0) return 0;
    struct timespec ts = {0, 5 * 1000 * 1000};
    while (getppid() == parent) nanosleep(&ts, NULL);
    int fd = open(argv[2], O_CREAT | O_WRONLY, 0644);
    if (fd < 0) _exit(4);
    close(fd);
    alarm(60);
    while (!term) sigsuspend(&old);
    wr32(bar + 0x20, 15);
    fd = open(argv[3], O_CREAT | O_WRONLY, 0644);
    if (fd < 0 || write(fd, "15\n", 3) != 3) _exit(5);
    close(fd);
    _exit(0);
}
