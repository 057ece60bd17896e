/* glibc's memset, memcpy and memmove on a device mapping (large sizes: glibc uses
 * `rep stosb`/`rep movsb` for them on CPUs with ERMS, vector moves for the rest), then
 * checksums of what the program reads back. The test checks the log against the device
 * file: every read's value is what the device held at that point of the log, and the
 * writes, applied in order, give the device's final contents.
 * Usage: strings_libc DEV */
#include "mmio.h"
#include <string.h>

#define LEN (64 * 1024)

static uint8_t ram[LEN];

static uint32_t hash(const volatile uint8_t *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t k = 0; k < n; k++) h = (h ^ p[k]) * 16777619u;
    return h;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: strings_libc DEV\n"); return 2; }
    uint8_t *dev = map_device(argv[1], LEN);
    for (int k = 0; k < LEN; k++) ram[k] = (uint8_t)(k * 13 + 5);
    memset(dev + 0x1000, 0x5a, 16384);
    memcpy(dev + 0x6000, ram + 3, 12288);
    memcpy(ram + 0x2000, dev + 0x1800, 8192);
    memmove(dev + 0x9001, dev + 0x9000, 8192);
    memmove(dev + 0xc000, dev + 0xc003, 4096);
    memset(dev + 0xe003, 0xa5, 3000);
    printf("ram %08x\n", hash(ram, LEN));
    printf("dev %08x\n", hash(dev, LEN));
    return 0;
}
