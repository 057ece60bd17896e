/* Makes itself not dumpable (as root, first becomes uid/gid 65534, which a root tracer may
 * still attach to), prints "ready", then blocks reading stdin. */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(void) {
    if (geteuid() == 0 && (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534))) {
        perror("setresuid");
        return 2;
    }
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)) {
        perror("prctl");
        return 2;
    }
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("ready\n");
    char c;
    return read(0, &c, 1) == 1 ? 0 : 3;
}
