/* One instruction (the same address every time) reads a device mapping that is replaced
 * under it: round r maps device page r % P at the same virtual address (MAP_FIXED over
 * the previous mapping), reads its word at 0x10 and writes r there. Prints the sum of
 * the reads. Usage: blk_remap DEV P ROUNDS (a device of P pages). */
#include "mmio.h"

__attribute__((noinline)) static uint32_t touch(volatile uint8_t *p, uint32_t v) {
    uint32_t old = rd32(p + 0x10);
    wr32(p + 0x10, v);
    return old;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror(argv[1]); return 100; }
    long pages = atol(argv[2]), rounds = atol(argv[3]);
    uint8_t *at = NULL;
    unsigned long long sum = 0;
    for (long r = 0; r < rounds; r++) {
        void *p = mmap(at, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | (at ? MAP_FIXED : 0), fd,
                       (r % pages) * 4096);
        if (p == MAP_FAILED) { perror("mmap"); return 3; }
        at = p;
        sum += touch(at, (uint32_t)r);
    }
    printf("%llx\n", sum);
    return 0;
}
