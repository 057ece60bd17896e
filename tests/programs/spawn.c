/* posix_spawn (vfork-style under glibc) is followed: the parent writes 1, the spawned
 * child (this program with "child") writes 2, then the parent writes 3. */
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
    wr32(bar + 0x8, 3);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 4;
}
