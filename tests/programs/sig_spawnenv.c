/* Children started with an explicit, minimal environment through posix_spawn, execle,
 * execvpe, execve, posix_spawnp, fexecve and execveat (glibc's exec family and posix_spawn
 * call its internal execve, not the interposed one); each child (argv[2] = "child") writes
 * its number to the device. */
#include "mmio.h"
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
    if (argc > 3) { uint8_t *bar = map_device(argv[1], 4096); wr32(bar, (uint32_t)atoi(argv[3])); return 0; }
    char *envp[] = { "PATH=/usr/bin:/bin", NULL };
    char *a1[] = { argv[0], argv[1], "child", "1", NULL };
    pid_t p; int st;
    posix_spawn(&p, argv[0], NULL, NULL, a1, envp); waitpid(p, &st, 0);
    if (fork() == 0) { execle(argv[0], argv[0], argv[1], "child", "2", (char *)NULL, envp); _exit(9); } wait(&st);
    char *a3[] = { argv[0], argv[1], "child", "3", NULL };
    if (fork() == 0) { execvpe(argv[0], a3, envp); _exit(9); } wait(&st);
    char *a4[] = { argv[0], argv[1], "child", "4", NULL };
    if (fork() == 0) { execve(argv[0], a4, envp); _exit(9); } wait(&st);
    char *a5[] = { argv[0], argv[1], "child", "5", NULL };
    posix_spawnp(&p, argv[0], NULL, NULL, a5, envp); waitpid(p, &st, 0);
    char *a6[] = { argv[0], argv[1], "child", "6", NULL };
    if (fork() == 0) { int fd = open(argv[0], O_RDONLY); fexecve(fd, a6, envp); _exit(9); } wait(&st);
    char *a7[] = { argv[0], argv[1], "child", "7", NULL };
    if (fork() == 0) { execveat(AT_FDCWD, argv[0], a7, envp, 0); _exit(9); } wait(&st);
    return 0;
}
