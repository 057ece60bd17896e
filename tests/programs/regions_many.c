/* Many device mappings: N one-page mappings of the device (each its own mmap, of page
 * k % PAGES), a write of k to word 2 of every STRIDE-th one, a read back of each written
 * one (checked against the last value written to that page), then all unmapped.
 * INTERLEAVE=1 maps and writes mapping by mapping (the aliases made on first access then
 * compete with the program's own mmaps for address-space entries).
 * Usage: regions_many DEV N STRIDE PAGES [INTERLEAVE]. Prints "ok N". */
#include "mmio.h"
#include <errno.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    long n = atol(argv[2]), stride = atol(argv[3]), pages = atol(argv[4]);
    int interleave = argc > 5 && atoi(argv[5]);
    int fd = open(argv[1], O_RDWR);
    if (fd < 0 || n <= 0 || stride <= 0 || pages <= 0) return 2;
    uint8_t **m = calloc(n, sizeof *m);
    uint32_t *last = calloc(pages, sizeof *last);
    if (!m || !last) return 2;
    for (long k = 0; k < n; k++) {
        m[k] = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (k % pages) * 4096);
        if (m[k] == MAP_FAILED) {
            fprintf(stderr, "mmap %ld: %s\n", k, strerror(errno));
            return 3;
        }
        if (interleave && k % stride == 0) {
            wr32(m[k] + 8, (uint32_t)k);
            last[k % pages] = (uint32_t)k;
        }
    }
    if (!interleave) {
        for (long k = 0; k < n; k += stride) {
            wr32(m[k] + 8, (uint32_t)k);
            last[k % pages] = (uint32_t)k;
        }
    }
    for (long k = 0; k < n; k += stride) {
        uint32_t v = rd32(m[k] + 8);
        if (v != last[k % pages]) {
            fprintf(stderr, "mapping %ld read %u, want %u\n", k, v, last[k % pages]);
            return 4;
        }
    }
    for (long k = 0; k < n; k++) {
        if (munmap(m[k], 4096) != 0) {
            fprintf(stderr, "munmap %ld: %s\n", k, strerror(errno));
            return 5;
        }
    }
    printf("ok %ld\n", n);
    return 0;
}
