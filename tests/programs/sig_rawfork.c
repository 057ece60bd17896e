/* Forks that run no atfork handler and bypass the interposed fork: _Fork (argv[2] =
 * "_Fork") or a raw syscall(SYS_fork) (argv[2] = "raw"). The child's writes must be logged
 * under its own pid (not into the parent's ring); the parent writes again after it ended. */
#include "mmio.h"
#include <sys/syscall.h>
#include <sys/wait.h>
#include <string.h>
int main(int argc, char **argv) {
    (void)argc;
    uint8_t *bar = map_device(argv[1], 4096);
    wr32(bar, 1);
    pid_t c = !strcmp(argv[2], "raw") ? (pid_t)syscall(SYS_fork) : _Fork();
    if (c < 0) return 2;
    if (c == 0) { wr32(bar, 2); wr32(bar, 3); _exit(0); }
    int st; waitpid(c, &st, 0);
    wr32(bar, 4);
    printf("parent %d child %d\n", getpid(), c);
    return st;
}
