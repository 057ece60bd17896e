/* Costs under `record --pid`: ns per system call (getppid) and per device access
 * (a 32-bit write then read of one register), N of each.
 *   a_bench DEVICE N            measure now (natively, or under `record --` for the
 *                               preload route)
 *   a_bench DEVICE N DIR        write DIR/ready, wait for DIR/go (the recorder attached),
 *                               then measure
 * Prints: syscall_ns=X access_ns=Y */
#define _GNU_SOURCE
#include "mmio.h"
#include <sys/syscall.h>
#include <time.h>

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: a_bench DEVICE N [DIR]\n");
        return 100;
    }
    long n = atol(argv[2]);
    uint8_t *dev = map_device(argv[1], 4096);
    if (argc > 3) {
        char p[4096];
        snprintf(p, sizeof p, "%s/ready", argv[3]);
        FILE *f = fopen(p, "w");
        if (!f || fclose(f))
            return 100;
        snprintf(p, sizeof p, "%s/go", argv[3]);
        while (access(p, F_OK) != 0)
            usleep(1000);
    }
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    uint64_t t1 = now_ns();
    for (long i = 0; i < n; i++) {
        wr32(dev + 0x10, (uint32_t)i);
        if (rd32(dev + 0x10) != (uint32_t)i)
            return 1;
    }
    uint64_t t2 = now_ns();
    printf("syscall_ns=%.1f access_ns=%.1f\n", (double)(t1 - t0) / n, (double)(t2 - t1) / (2.0 * n));
    return 0;
}
