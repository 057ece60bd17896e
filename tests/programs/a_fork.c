/* A program that forks while `record --pid` is attached: maps DEVICE, writes DIR/ready,
 * waits for DIR/go, then forks; the child (which inherits the traced, closed pages) makes
 * W32 0x30 = 0x77, R32 0x30 (must read 0x77), writes DIR/child, waits for DIR/stop, then
 * makes W32 0x34 = 0x88 (after the recorder has detached) and exits 0, or 1 if a value
 * was wrong. The parent makes W32 0x10 = 1 after the fork, waits for the child and exits
 * with 0 if the child exited 0, else 1.
 *
 * usage: a_fork DEVICE DIR */
#define _GNU_SOURCE
#include "mmio.h"
#include <string.h>
#include <sys/wait.h>
#include <time.h>

static const char *dir;

static int exists(const char *name) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static void touch(const char *name) {
    char p[4096], tmp[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", getpid()) < 0 || fclose(f) != 0 || rename(tmp, p) != 0) {
        perror(p);
        _exit(100);
    }
}

static void wait_for(const char *name) {
    while (!exists(name)) {
        struct timespec t = {0, 1000 * 1000};
        nanosleep(&t, NULL);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: a_fork DEVICE DIR\n");
        return 100;
    }
    dir = argv[2];
    uint8_t *dev = map_device(argv[1], 4096);
    touch("ready");
    wait_for("go");
    fflush(stdout);
    pid_t c = fork();
    if (c < 0) {
        perror("fork");
        return 100;
    }
    if (c == 0) {
        int bad = 0;
        wr32(dev + 0x30, 0x77);
        if (rd32(dev + 0x30) != 0x77)
            bad = 1;
        touch("child");
        wait_for("stop");
        wr32(dev + 0x34, 0x88);
        _exit(bad);
    }
    wr32(dev + 0x10, 1);
    int st = 0;
    if (waitpid(c, &st, 0) != c) {
        perror("waitpid");
        return 1;
    }
    printf("child %d status %#x\n", (int)c, st);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
