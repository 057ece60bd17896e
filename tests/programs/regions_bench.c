/* The fault path's cost against the number of traced regions: NMAPS one-page mappings of
 * the device, then ACCESSES 32-bit reads spread over 16 of them (evenly across the
 * table), timed in thread CPU time (user + system: robust against a loaded machine) after one warm-up access each. Prints "ns_per_access=X".
 * Usage: regions_bench DEV NMAPS ACCESSES. See regions_bench.sh. */
#include "mmio.h"
#include <time.h>

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    long n = atol(argv[2]), acc = atol(argv[3]);
    int fd = open(argv[1], O_RDWR);
    if (fd < 0 || n < 1 || acc < 1) return 2;
    uint8_t **m = calloc(n, sizeof *m);
    for (long k = 0; k < n; k++) {
        m[k] = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (k % 16) * 4096);
        if (m[k] == MAP_FAILED) return 3;
    }
    uint8_t *use[16];
    for (int i = 0; i < 16; i++) {
        use[i] = m[(long)i * n / 16];
        (void)rd32(use[i]);
    }
    struct timespec a, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    uint32_t sum = 0;
    for (long i = 0; i < acc; i++) sum += rd32(use[i & 15] + 8);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("ns_per_access=%.1f sum=%u\n", ns / acc, sum);
    return 0;
}
