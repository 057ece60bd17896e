/* Exec chain for the ptrace engine's loader tests (crates/ptrace/tests/image.rs):
 * `l_exec N` prints "ready", waits for one byte on stdin, then execs itself with N-1;
 * with N = 0 it prints "done" and exits with status 7. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 0;
    if (n <= 0) {
        printf("done\n");
        return 7;
    }
    printf("ready\n");
    fflush(stdout);
    char c;
    if (read(0, &c, 1) != 1)
        return 3;
    char arg[16];
    snprintf(arg, sizeof arg, "%d", n - 1);
    execl("/proc/self/exe", argv[0], arg, (char *)NULL);
    return 4;
}
