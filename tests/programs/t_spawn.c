/* t_spawn DEV NAME [execvp]: maps DEV and writes a register, spawns NAME DEV with
 * posix_spawnp (found through PATH), waits for it, then writes and reads the register
 * again (the parent goes on being traced after its child was handed over). Prints what
 * it read and exits with the child's status. With execvp: execs NAME DEV instead (found
 * through PATH) after the first write. */
#include "mmio.h"
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc < 3) return 100;
    uint8_t *d = map_device(argv[1], 8192);
    wr32(d + 0x300, 1);
    pid_t p;
    char *a[] = {argv[2], argv[1], NULL};
    if (argc > 3 && !strcmp(argv[3], "execvp")) {
        execvp(argv[2], a);
        return 104;
    }
    int r = posix_spawnp(&p, argv[2], NULL, NULL, a, environ);
    if (r != 0) return 101;
    int st = 0;
    if (waitpid(p, &st, 0) != p) return 102;
    wr32(d + 0x300, 2);
    printf("parent read %x\n", rd32(d + 0x300));
    return WIFEXITED(st) ? WEXITSTATUS(st) : 103;
}
