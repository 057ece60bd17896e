/* A long-lived mapping of device page 0, then 65,535 map/unmap cycles of page 1 (map ids
 * wrap their low 16 bits), one more mapping of page 2 kept, then a read of page 0 word 1. */
#include "mmio.h"
int main(int argc, char **argv) {
    int fd = open(argv[1], O_RDWR);
    uint8_t *p0 = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    for (int i = 0; i < 65535; i++) {
        void *q = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 4096);
        munmap(q, 4096);
    }
    uint8_t *p2 = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 8192);
    uint32_t a = rd32(p0 + 4), b = rd32(p2 + 8);
    printf("%#x %#x\n", a, b);
    return 0;
}
