/* fork and exec are followed: the parent writes 1, the forked child writes 2 and then
 * execs this program again ("exec" mode), which maps the device and writes 3; the parent
 * waits and writes 4. All to register 0x10. */
#include "mmio.h"
#include <string.h>
#include <sys/wait.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    uint8_t *bar = map_device(argv[1], 4096);
    if (argc > 2 && strcmp(argv[2], "exec") == 0) {
        wr32(bar + 0x10, 3);
        return 0;
    }
    wr32(bar + 0x10, 1);
    pid_t pid = fork();
    if (pid == 0) {
        wr32(bar + 0x10, 2);
        /* An explicit environment without LD_PRELOAD: the tracer must follow anyway. */
        char *envp[] = { "PATH=/usr/bin:/bin", NULL };
        char *args[] = { argv[0], argv[1], "exec", NULL };
        execve(argv[0], args, envp);
        _exit(99);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    wr32(bar + 0x10, 4);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 98;
}
