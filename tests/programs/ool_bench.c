/* Costs of the out-of-line fault path, run under `mmio-trace record` (ool_bench.sh).
 * Prints "MODE ns_per_op=X".
 *   mov N      N `movl (dev),%eax` (emulated; MMIO_TRACE_PATH=ool runs them out of line)
 *   popcnt N   N `popcntl (dev),%eax` (out of line: a load)
 *   pextrd N   N `pextrd $0,%xmm0,(dev)` (out of line: a store, through the XSAVE epilogue)
 *   strlen N   N glibc strlen of the 64-byte string at device offset 0x100
 * usage: ool_bench MODE DEVICE N */
#define _GNU_SOURCE
#include "mmio.h"
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: ool_bench MODE DEVICE N\n"); return 2; }
    const char *mode = argv[1];
    volatile uint8_t *dev = map_device(argv[2], 4096);
    long n = atol(argv[3]);
    size_t sum = 0;
    double t0 = now();
    if (!strcmp(mode, "mov")) {
        for (long i = 0; i < n; i++) sum += rd32(dev + 0x40);
    } else if (!strcmp(mode, "popcnt")) {
        for (long i = 0; i < n; i++) {
            uint32_t v;
            __asm__ volatile("popcntl (%1), %0" : "=r"(v) : "r"(dev + 0x40) : "memory", "cc");
            sum += v;
        }
    } else if (!strcmp(mode, "pextrd")) {
        for (long i = 0; i < n; i++)
            __asm__ volatile("pextrd $0, %%xmm0, (%0)" :: "r"(dev + 0x40) : "memory");
    } else if (!strcmp(mode, "strlen")) {
        for (long i = 0; i < n; i++) sum += strlen((const char *)dev + 0x100);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    double t = now() - t0;
    printf("%s ns_per_op=%.1f (%zu)\n", mode, t * 1e9 / n, sum);
    return 0;
}
