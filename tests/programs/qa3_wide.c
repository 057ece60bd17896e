/* Five 64-byte reads and writes (zmm) and one 32-byte pair (ymm) on the device. */
#include "mmio.h"
int main(int argc, char **argv) {
    uint8_t *dev = map_device(argv[1], 4096);
    for (int i = 0; i < 5; i++)
        __asm__ volatile("vmovdqu64 (%0), %%zmm0\n\tvmovdqu64 %%zmm0, 64(%0)\n\tvzeroupper" :: "r"(dev) : "memory", "xmm0");
    __asm__ volatile("vmovdqu (%0), %%ymm0\n\tvmovdqu %%ymm0, 128(%0)\n\tvzeroupper" :: "r"(dev) : "memory", "xmm0");
    return 0;
}
