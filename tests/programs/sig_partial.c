/* mprotect on part of a traced mapping, and mremap(p, 0, ...) (a second view of it): the
 * rest of the mapping and the original must stay usable. argv[2]: munmap | mprotect | dup. */
#define _GNU_SOURCE
#include "mmio.h"
#include <string.h>
int main(int argc, char **argv) {
    int fd = open(argv[1], O_RDWR);
    uint8_t *p = mmap(NULL, 3*4096, PROT_READ|PROT_WRITE, MAP_SHARED, fd, 0);
    if (!strcmp(argv[2], "munmap")) {
        munmap(p + 2*4096, 4096);            /* trim the last page */
        printf("after trim: %#x\n", rd32(p)); /* page 0 still mapped */
    } else if (!strcmp(argv[2], "mprotect")) {
        mprotect(p + 2*4096, 4096, PROT_READ); /* make only the last page read-only */
        wr32(p, 5);                            /* page 0 stays writable */
        printf("write to page 0 ok: %#x\n", rd32(p));
    } else if (!strcmp(argv[2], "dup")) {
        uint8_t *q = mremap(p, 0, 3*4096, MREMAP_MAYMOVE); /* a second view */
        printf("dup at %p: %#x\n", q, rd32(q));
        printf("original: %#x\n", rd32(p));
    }
    return 0;
}
