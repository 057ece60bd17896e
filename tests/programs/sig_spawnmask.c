/* posix_spawn a child with every signal blocked (POSIX_SPAWN_SETSIGMASK); the child (argv[2]
 * = "child") reads a device register. */
#include "mmio.h"
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
extern char **environ;
int main(int argc, char **argv) {
    if (argc > 2) { uint8_t *bar = map_device(argv[1], 4096); printf("child read %#x\n", rd32(bar)); return 0; }
    posix_spawnattr_t at; posix_spawnattr_init(&at);
    sigset_t all; sigfillset(&all); posix_spawnattr_setsigmask(&at, &all);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
    char *a[] = { argv[0], argv[1], "child", NULL }; pid_t p; int st;
    posix_spawn(&p, argv[0], NULL, &at, a, environ); waitpid(p, &st, 0);
    printf("child status %#x\n", st); return 0;
}
