/* Partial munmap and MAP_FIXED over traced memory: the middle page of a 3-page device
 * mapping is unmapped (the rest stays traced), then an anonymous MAP_FIXED mapping replaces
 * the first page (it is ordinary memory from then on). */
#include "mmio.h"

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    uint8_t *bar = map_device(argv[1], 12288);
    if (munmap(bar + 4096, 4096) != 0) return 3;
    wr32(bar, 1);
    wr32(bar + 0x2000, 2);
    uint8_t *anon = mmap(bar, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (anon != bar) return 4;
    wr32(bar, 0x77);
    wr32(bar + 0x2000, 3);
    return rd32(bar) == 0x77 ? 0 : 5;
}
