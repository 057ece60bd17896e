/* posix_spawn (vfork-style under glibc) and vfork + execve are followed: the parent
 * writes 1, the spawned child (this program with "child") writes 2, the parent writes 3,
 * a vfork child execs this program with an empty environment and writes 2, the parent
 * writes 4. */
#include "mmio.h"
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    uint8_t *bar = map_device(argv[1], 4096);
    if (argc > 2 && strcmp(argv[2], "child") == 0) {
        wr32(bar + 0x8, 2);
        return 0;
    }
    wr32(bar + 0x8, 1);
    pid_t pid;
    char *args[] = { argv[0], argv[1], "child", NULL };
    if (posix_spawn(&pid, argv[0], NULL, NULL, args, environ) != 0) return 3;
    int st = 0;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return 4;
    wr32(bar + 0x8, 3);
    pid = vfork();
    if (pid == 0) {
        char *empty[] = { NULL };
        execve(argv[0], args, empty);
        _exit(99);
    }
    waitpid(pid, &st, 0);
    wr32(bar + 0x8, 4);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 5;
}
