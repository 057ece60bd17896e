/* An mremap that moves more pieces than the tracer moves traced (16): a 40-page mapping
 * whose odd pages are made read-only (40 pieces) is moved; then every page is written
 * (even ones) or read (odd ones) at its new place. The program must run as natively.
 * Usage: regions_pieces DEV (40 pages). Prints the sum of what it read. */
#include "mmio.h"

#define P 4096
#define N 40

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int fd = open(argv[1], O_RDWR);
    uint8_t *m = mmap(NULL, N * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return 3;
    for (int k = 1; k < N; k += 2)
        if (mprotect(m + k * P, P, PROT_READ) != 0) return 4;
    uint8_t *res = mmap(NULL, 2 * N * P, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t *t = mremap(m, N * P, N * P, MREMAP_MAYMOVE | MREMAP_FIXED, res + N * P);
    if (t != res + N * P) return 5;
    unsigned long sum = 0;
    for (int k = 0; k < N; k++) {
        if (k % 2 == 0) wr32(t + k * P, 0x100 + k);
        else sum += rd32(t + k * P);
    }
    printf("%lu\n", sum);
    return 0;
}
