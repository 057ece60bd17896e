/* Costs of 4 KiB string operations into a traced buffer, run under `mmio-trace record`
 * (strings_bench.sh). Prints "MODE ns_per_op=X" (one op: 4 KiB moved).
 *   stos N     N `rep stosq` of 512 quadwords into the device (one trap each)
 *   movs N     N `rep movsq` of 512 quadwords from ordinary memory into the device
 *   loop N     N loops of 512 `movq` stores into the device: the per-element cost a
 *              string operation paid when each element was an access of its own
 *   native N   N `rep stosq` into ordinary memory (no tracer cost)
 * usage: strings_bench MODE DEVICE N [ELEMENTS]   (ELEMENTS: 512 unless given, at most 512) */
#define _GNU_SOURCE
#include "mmio.h"
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t ram[512];

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: strings_bench MODE DEVICE N [ELEMENTS]\n"); return 2; }
    uint64_t elems = argc > 4 ? strtoull(argv[4], NULL, 0) : 512;
    if (elems > 512) elems = 512;
    const char *mode = argv[1];
    uint8_t *dev = map_device(argv[2], 4096);
    long n = atol(argv[3]);
    for (int k = 0; k < 512; k++) ram[k] = k * 0x9e3779b97f4a7c15ull;
    double t0 = now();
    for (long i = 0; i < n; i++) {
        void *d = dev, *s = ram;
        uint64_t c = elems, v = (uint64_t)i;
        if (!strcmp(mode, "stos")) {
            __asm__ volatile("rep stosq" : "+D"(d), "+c"(c) : "a"(v) : "memory");
        } else if (!strcmp(mode, "movs")) {
            __asm__ volatile("rep movsq" : "+D"(d), "+S"(s), "+c"(c) : : "memory");
        } else if (!strcmp(mode, "loop")) {
            for (uint64_t k = 0; k < elems; k++) wr64(dev + 8 * k, v);
        } else if (!strcmp(mode, "native")) {
            d = ram;
            __asm__ volatile("rep stosq" : "+D"(d), "+c"(c) : "a"(v) : "memory");
        } else {
            fprintf(stderr, "unknown mode %s\n", mode);
            return 2;
        }
    }
    double t = now() - t0;
    printf("%s ns_per_op=%.1f\n", mode, t * 1e9 / n);
    return 0;
}
