/* Programs that tidy their descriptors must not cut the tracer off. The parent maps the
 * device and writes 1, then (mode "close") calls closefrom(3) and close_range(3, ~0, 0),
 * or (mode "dup2") dup2()s /dev/null onto every descriptor from 3 to 63 and dup3()s it
 * onto 64..127; a forked child writes 2, calls close_range(3, ~0, 0) itself and execs
 * this program (mode "exec"), which maps the device and writes 3; the parent waits and
 * writes 4. All to register 0x10. */
#include "mmio.h"
#include <string.h>
#include <sys/wait.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    uint8_t *bar = map_device(argv[1], 4096);
    if (strcmp(argv[2], "exec") == 0) {
        wr32(bar + 0x10, 3);
        return 0;
    }
    wr32(bar + 0x10, 1);
    if (strcmp(argv[2], "close") == 0) {
        closefrom(3);
        if (close_range(3, ~0U, 0) != 0) return 3;
    } else {
        int null = open("/dev/null", O_RDWR);
        if (null < 0) return 4;
        for (int fd = 3; fd < 64; fd++)
            if (fd != null && dup2(null, fd) != fd) return 5;
        for (int fd = 64; fd < 128; fd++)
            if (dup3(null, fd, O_CLOEXEC) != fd) return 6;
    }
    pid_t pid = fork();
    if (pid == 0) {
        wr32(bar + 0x10, 2);
        close_range(3, ~0U, 0);
        char *args[] = { argv[0], argv[1], "exec", NULL };
        execv(argv[0], args);
        _exit(99);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    wr32(bar + 0x10, 4);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 98;
}
