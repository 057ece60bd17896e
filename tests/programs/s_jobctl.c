/* Signals and job control pass through the ptrace route: a SIGUSR1 sent with sigqueue
 * reaches the program's handler with its value; a forked child stops itself (SIGSTOP),
 * its parent sees it stopped (waitpid WUNTRACED), continues it (SIGCONT) and sees it
 * continue, and the child then writes the device and exits 3 (once the parent has seen it
 * continue: a child that exited first would be reported exited, not continued). Prints
 * what it saw. */
#include "mmio.h"
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

static volatile int got;

static void on_usr1(int sig, siginfo_t *si, void *uc) { (void)sig; (void)uc; got = si->si_value.sival_int; }

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    uint8_t *bar = map_device(argv[1], 4096);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, NULL);
    union sigval v = { .sival_int = 42 };
    sigqueue(getpid(), SIGUSR1, v);
    wr32(bar, 1);
    int gate[2];
    if (pipe(gate)) return 5;
    pid_t c = fork();
    if (c == 0) {
        close(gate[1]);
        raise(SIGSTOP);
        wr32(bar + 4, 2);
        char b;
        while (read(gate[0], &b, 1) < 0) {}
        _exit(3);
    }
    close(gate[0]);
    int st = 0, stopped = 0, cont = 0;
    if (waitpid(c, &st, WUNTRACED) == c && WIFSTOPPED(st) && WSTOPSIG(st) == SIGSTOP) stopped = 1;
    kill(c, SIGCONT);
    if (waitpid(c, &st, WCONTINUED) == c && WIFCONTINUED(st)) cont = 1;
    close(gate[1]);
    waitpid(c, &st, 0);
    wr32(bar + 8, 4);
    printf("usr1=%d stopped=%d continued=%d child=%d\n", got, stopped, cont, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
}
