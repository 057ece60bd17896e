/* Benchmarks of the fault paths (driven by paths_bench.sh). Each mode maps DEV (64 KiB),
 * runs N operations on it and prints one line "MODE ns_per_op=X".
 *   mov N      N `movl (%rdi),%eax` loads (a form the emulator completes)
 *   popcnt N   N `popcntl (%rdi),%eax` (a form it does not: out of line, or stepped)
 *   strlen N   N strlen() calls on a 64-byte string at the start of DEV (glibc's, at the
 *              ISA level it picks; the string is written first, untimed)
 * Run under `mmio-trace record` with MMIO_TRACE_PATH set to compare the paths. */
#include "mmio.h"
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Through a volatile pointer, so that the compiler calls glibc's strlen every time. */
static size_t (*volatile str_len)(const char *) = strlen;

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s mov|popcnt|strlen DEV N\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    long n = atol(argv[3]);
    uint8_t *dev = map_device(argv[2], 65536);
    uint64_t sum = 0;
    double t0 = 0, t1 = 0;
    if (strcmp(mode, "mov") == 0) {
        t0 = now();
        for (long i = 0; i < n; i++) {
            uint32_t v;
            __asm__ volatile("movl (%1), %0" : "=a"(v) : "D"(dev + 4 * (i % 1024)) : "memory");
            sum += v;
        }
        t1 = now();
    } else if (strcmp(mode, "popcnt") == 0) {
        t0 = now();
        for (long i = 0; i < n; i++) {
            uint32_t v;
            __asm__ volatile("popcntl (%1), %0" : "=a"(v) : "D"(dev + 4 * (i % 1024)) : "memory", "cc");
            sum += v;
        }
        t1 = now();
    } else if (strcmp(mode, "strlen") == 0) {
        for (int i = 0; i < 64; i += 8) wr64(dev + i, 0x6161616161616161ULL);
        wr64(dev + 64, 0);
        t0 = now();
        for (long i = 0; i < n; i++) sum += str_len((const char *)dev);
        t1 = now();
        if (sum != 64 * (uint64_t)n) {
            fprintf(stderr, "strlen gave %llu in all, not %llu\n", (unsigned long long)sum,
                    64ULL * (unsigned long long)n);
            return 1;
        }
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("%s ns_per_op=%.1f (sum %llu)\n", mode, (t1 - t0) * 1e9 / n, (unsigned long long)sum);
    return 0;
}
