/* execve with an explicit environment that sets its own LD_PRELOAD: the child must see the
 * tracer's library prepended, not the program's value replaced. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
    if (argc > 1) { printf("%s\n", getenv("LD_PRELOAD")); return 0; }
    char *envp[] = { "LD_PRELOAD=/nonexistent/libmine.so", "FOO=1", NULL };
    char *a[] = { argv[0], "child", NULL };
    if (fork() == 0) { execve(argv[0], a, envp); _exit(9); }
    int st; wait(&st); return WEXITSTATUS(st);
}
