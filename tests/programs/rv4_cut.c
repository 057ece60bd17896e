/* Descriptor cuts no preloaded library can intercept: the image a child execs finds the
 * tracer's inherited descriptors closed or replaced, and must reach the recorder again.
 * The parent maps the device and writes 1; then, by mode (argv[2]):
 *  "spawn":   posix_spawn()s this program with the file action closefrom(3) (run inside
 *             glibc's child, not through any hook);
 *  "vfork":   a vfork child dup2()s an empty file onto the descriptor named by
 *             MMIO_TRACE_SHM_FD and /dev/null onto MMIO_TRACE_LIVE_FD's (the parent's
 *             memory is shared, so the tracer cannot move its own) and execs this
 *             program;
 *  "syscall": a forked child closes every descriptor from 3 with the raw close_range
 *             system call and execs this program.
 * The exec'd image (mode "child") maps the device and writes 2; the parent waits and
 * writes 3. All to register 0x10. */
#include "mmio.h"
#include <spawn.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    uint8_t *bar = map_device(argv[1], 4096);
    if (strcmp(argv[2], "child") == 0) {
        wr32(bar + 0x10, 2);
        return 0;
    }
    wr32(bar + 0x10, 1);
    char *args[] = { argv[0], argv[1], "child", NULL };
    pid_t pid;
    if (strcmp(argv[2], "spawn") == 0) {
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        if (posix_spawn_file_actions_addclosefrom_np(&fa, 3) != 0) return 3;
        if (posix_spawn(&pid, argv[0], &fa, NULL, args, environ) != 0) return 4;
    } else if (strcmp(argv[2], "vfork") == 0) {
        const char *shm = getenv("MMIO_TRACE_SHM_FD"), *live = getenv("MMIO_TRACE_LIVE_FD");
        if (!shm || !live) return 5;
        int null = open("/dev/null", O_RDWR), empty = memfd_create("empty", 0);
        if (null < 0 || empty < 0) return 5;
        pid = vfork();
        if (pid == 0) {
            if (dup2(empty, atoi(shm)) < 0 || dup2(null, atoi(live)) < 0) _exit(6);
            execve(argv[0], args, environ);
            _exit(7);
        }
    } else {
        pid = fork();
        if (pid == 0) {
            if (syscall(SYS_close_range, 3, ~0U, 0) != 0) _exit(8);
            execve(argv[0], args, environ);
            _exit(9);
        }
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return 10;
    wr32(bar + 0x10, 3);
    return 0;
}
