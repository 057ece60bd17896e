/* Signals passed on by the recorder: handles every signal the recorder forwards; each
 * one is written to the device (offset 0x10, the signal number) and appended to the
 * file argv[3] as "N\n". Creates argv[2] when ready; exits 0 after SIGTERM. With
 * argv[4] == "die", installs no handler for SIGUSR1 (the default action kills it).
 * Leaves (status 9) if the recorder goes away. */
#include "mmio.h"
#include <signal.h>
#include <string.h>
#include <sys/select.h>

static volatile sig_atomic_t got[65];
static volatile sig_atomic_t order[256];
static volatile sig_atomic_t norder;

static void on(int sig) {
    got[sig]++;
    if (norder < 256) order[norder++] = sig;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    uint8_t *bar = map_device(argv[1], 4096);
    int die = argc > 4 && strcmp(argv[4], "die") == 0;
    int sigs[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM, SIGWINCH,
                  SIGCONT, SIGURG, SIGVTALRM, SIGPROF, SIGXCPU, SIGPWR, SIGPIPE};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on;
    sigemptyset(&sa.sa_mask);
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        if (die && sigs[i] == SIGUSR1) continue;
        sigaction(sigs[i], &sa, NULL);
    }
    for (int s = SIGRTMIN; s <= SIGRTMAX; s++) sigaction(s, &sa, NULL);
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    int fd = open(argv[2], O_CREAT | O_WRONLY, 0644);
    if (fd < 0) return 4;
    close(fd);
    pid_t parent = getppid();
    int seen = 0;
    for (;;) {
        while (seen < norder) {
            int s = order[seen++];
            wr32(bar + 0x10, (uint32_t)s);
            char line[16];
            int n = snprintf(line, sizeof line, "%d\n", s);
            int f = open(argv[3], O_CREAT | O_WRONLY | O_APPEND, 0644);
            if (f < 0 || write(f, line, n) != n) return 5;
            close(f);
            if (s == SIGTERM) return 0;
        }
        /* sigsuspend, waking each second to leave if the recorder is gone. */
        struct timespec second = {1, 0};
        pselect(0, NULL, NULL, NULL, &second, &old);
        if (getppid() != parent) return 9;
    }
}
