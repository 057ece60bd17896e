/* Many exec'd processes alive at once must not use up the recorder's rings: `sys_live DEV N`
 * starts N copies of itself through fork + execv (each waits on a pipe once it has told
 * the parent it runs), then writes 0x5a to the device, then lets them end. */
#include "mmio.h"
#include <string.h>
#include <sys/wait.h>

int main(int argc, char **argv) {
    if (argc > 4 && !strcmp(argv[2], "wait")) {
        char c = 1;
        if (write(atoi(argv[4]), &c, 1) != 1) return 3;
        while (read(atoi(argv[3]), &c, 1) > 0) {}
        return 0;
    }
    int n = atoi(argv[2]);
    int hold[2], ready[2];
    if (pipe(hold) || pipe(ready)) return 100;
    fcntl(hold[1], F_SETFD, FD_CLOEXEC);
    fcntl(ready[0], F_SETFD, FD_CLOEXEC);
    char a3[16], a4[16];
    snprintf(a3, sizeof a3, "%d", hold[0]);
    snprintf(a4, sizeof a4, "%d", ready[1]);
    for (int i = 0; i < n; i++) {
        if (fork() == 0) {
            char *a[] = { argv[0], argv[1], "wait", a3, a4, NULL };
            execv(argv[0], a);
            _exit(9);
        }
    }
    close(ready[1]);
    int got = 0;
    char buf[256];
    long r;
    while (got < n && (r = read(ready[0], buf, sizeof buf)) > 0) got += r;
    uint8_t *bar = map_device(argv[1], 4096);
    wr32(bar, 0x5a);
    close(hold[1]);
    int ok = 0, st;
    while (wait(&st) > 0) ok += WIFEXITED(st) && WEXITSTATUS(st) == 0;
    printf("%d ready %d ended well\n", got, ok);
    return 0;
}
