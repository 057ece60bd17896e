/* Every exec path, each after the program dropped the tracer's variables from its
 * environment: `sys_exec DEV HOW` writes 0xa0 to word 0, drops them (clearenv, unsetenv,
 * environ = NULL, or an explicit environment without them), then runs itself as
 * `sys_exec DEV child N` through HOW; the child writes N to word 1 and reads word 2.
 * argv[3] = "static": the child is the program `DEV.static` instead (a static build of
 * this one). Prints "rc R" with what the exec path returned (system, pclose: the status). */
#include "mmio.h"
#include <spawn.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
extern char **environ;

int main(int argc, char **argv) {
    if (argc > 3 && !strcmp(argv[2], "child")) {
        uint8_t *bar = map_device(argv[1], 4096);
        wr32(bar + 4, (uint32_t)atoi(argv[3]));
        uint32_t v = rd32(bar + 8);
        printf("child %s read %#x\n", argv[3], v);
        return 7;
    }
    const char *how = argv[2];
    char self[4096];
    snprintf(self, sizeof self, "%s", argc > 3 ? argv[3] : argv[0]);
    const char *n = "1";
    uint8_t *bar = map_device(argv[1], 4096);
    wr32(bar, 0xa0);
    fflush(stdout);
    char *a[] = { self, argv[1], "child", (char *)n, NULL };
    char *bare[] = { "PATH=/usr/bin:/bin", NULL };
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' '%s' child 1", self, argv[1]);
    int st = 0;
    pid_t p;
    if (!strcmp(how, "system")) {
        clearenv();
        st = system(cmd);
        printf("rc %d\n", st);
        return 0;
    }
    if (!strcmp(how, "popen")) {
        unsetenv("LD_PRELOAD");
        FILE *f = popen(cmd, "r");
        char line[256] = "";
        if (!fgets(line, sizeof line, f)) strcpy(line, "nothing\n");
        st = pclose(f);
        printf("popen got %src %d\n", line, st);
        return 0;
    }
    if (!strcmp(how, "posix_spawn")) {
        posix_spawn(&p, self, NULL, NULL, a, bare); waitpid(p, &st, 0);
        printf("rc %d\n", st);
        return 0;
    }
    if (!strcmp(how, "posix_spawnp_environ")) {
        clearenv();
        posix_spawnp(&p, self, NULL, NULL, a, environ); waitpid(p, &st, 0);
        printf("rc %d\n", st);
        return 0;
    }
    pid_t c = fork();
    if (c == 0) {
        if (!strcmp(how, "execv")) { clearenv(); execv(self, a); }
        else if (!strcmp(how, "execvp")) { unsetenv("LD_PRELOAD"); execvp(self, a); }
        else if (!strcmp(how, "execl")) { environ = NULL; execl(self, self, argv[1], "child", n, (char *)NULL); }
        else if (!strcmp(how, "execlp")) { clearenv(); setenv("PATH", "/usr/bin:/bin", 1); execlp(self, self, argv[1], "child", n, (char *)NULL); }
        else if (!strcmp(how, "execle")) { execle(self, self, argv[1], "child", n, (char *)NULL, bare); }
        else if (!strcmp(how, "execve")) { execve(self, a, bare); }
        else if (!strcmp(how, "execve_null")) { execve(self, a, NULL); }
        else if (!strcmp(how, "execvpe")) { execvpe(self, a, bare); }
        else if (!strcmp(how, "execveat")) { execveat(AT_FDCWD, self, a, bare, 0); }
        else if (!strcmp(how, "fexecve")) { int fd = open(self, O_RDONLY); fexecve(fd, a, bare); }
        else if (!strcmp(how, "execveat_fd")) { int fd = open(self, O_RDONLY); clearenv(); execveat(fd, "", a, environ, AT_EMPTY_PATH); }
        else if (!strcmp(how, "syscall_execve")) { clearenv(); syscall(SYS_execve, self, a, environ); }
        else if (!strcmp(how, "vfork_execv")) { if (vfork() == 0) { environ = NULL; execv(self, a); _exit(9); } wait(&st); _exit(WEXITSTATUS(st)); }
        else if (!strcmp(how, "env_i")) { execlp("env", "env", "-i", self, argv[1], "child", n, (char *)NULL); }
        else if (!strcmp(how, "env_u")) { execlp("env", "env", "-u", "LD_PRELOAD", "-u", "MMIO_TRACE_SHM_FD", self, argv[1], "child", n, (char *)NULL); }
        else if (!strcmp(how, "sh")) {
            execl("/bin/sh", "sh", "-c", "unset LD_PRELOAD MMIO_TRACE_SHM_FD; exec \"$0\" \"$1\" child 1", self, argv[1], (char *)NULL);
        }
        perror(how);
        _exit(9);
    }
    waitpid(c, &st, 0);
    printf("rc %d\n", st);
    return 0;
}
