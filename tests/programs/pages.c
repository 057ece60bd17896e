/* One 4-byte write to each of three pages (offsets 0x0, 0x1000, 0x2000), for --range and
 * --bypass. */
#include "mmio.h"

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    uint8_t *bar = map_device(argv[1], 12288);
    wr32(bar + 0x0, 0xa0);
    wr32(bar + 0x1000, 0xa1);
    wr32(bar + 0x2000, 0xa2);
    return rd32(bar + 0x1000) == 0xa1 ? 0 : 3;
}
