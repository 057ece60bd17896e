/* mremap of part of a traced mapping (argv[2]):
 *  "sub":   map 3 pages, move the middle page elsewhere (MREMAP_FIXED); pages 0 and 2 stay
 *           traced where they are, the moved page is traced at its new place.
 *  "split": make pages 1-2 read-only, then move all 3 pages; each keeps its protection,
 *           so the write to the moved read-only page 2 is a fault (the program dies of it).
 *  "grow":  map 2 pages, grow to 3 in place or moved (MREMAP_MAYMOVE); all three traced. */
#include "mmio.h"
#include <string.h>
int main(int argc, char **argv) {
    (void)argc;
    int fd = open(argv[1], O_RDWR);
    if (!strcmp(argv[2], "grow")) {
        uint8_t *p = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        wr32(p, 1);
        uint8_t *q = mremap(p, 2 * 4096, 3 * 4096, MREMAP_MAYMOVE);
        if (q == MAP_FAILED) return 2;
        wr32(q + 4, 2);
        wr32(q + 4096 + 4, 3);
        wr32(q + 2 * 4096 + 4, 4);
        printf("grow ok %#x\n", rd32(q + 2 * 4096 + 8));
        return 0;
    }
    uint8_t *p = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    wr32(p, 1);
    if (!strcmp(argv[2], "sub")) {
        uint8_t *dst = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        uint8_t *q = mremap(p + 4096, 4096, 4096, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
        if (q != dst) return 2;
        wr32(p, 2);
        wr32(p + 2 * 4096, 3);
        wr32(q + 8, 4);
        printf("sub ok %#x\n", rd32(q + 12));
        munmap(q, 4096);
        munmap(p, 4096);
        munmap(p + 2 * 4096, 4096);
        printf("unmapped\n");
    } else {
        mprotect(p + 4096, 2 * 4096, PROT_READ);
        uint8_t *dst = mmap(NULL, 3 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        uint8_t *q = mremap(p, 3 * 4096, 3 * 4096, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
        if (q != dst) return 2;
        wr32(q, 4);
        printf("split read %#x\n", rd32(q + 2 * 4096));
        fflush(stdout);
        wr32(q + 2 * 4096, 5); /* read-only page: fatal */
        printf("BUG: write to a read-only page succeeded\n");
    }
    return 0;
}
