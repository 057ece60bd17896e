/* A device mapping made and unmapped by raw system calls, which no libc hook sees:
 * syscall(SYS_mmap) maps it, a write and a read are made, syscall(SYS_munmap) unmaps it
 * (then a write to another device mapping, made by libc, shows when the UNMAP came);
 * then anonymous memory is mapped at the same address (the program's heap from now on)
 * and written and read. Those writes must stay in the program's memory: none logged, the
 * device file unchanged by them. With argv[2] = "fixed", the anonymous memory is mapped
 * over the device mapping with MAP_FIXED instead of after a munmap. Prints the values
 * read. */
#include "mmio.h"
#include <sys/syscall.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    uint8_t *other = map_device(argv[1], 4096);
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) return 3;
    uint8_t *bar = (uint8_t *)syscall(SYS_mmap, 0, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (bar == MAP_FAILED) return 4;
    wr32(bar + 0x10, 0x1234);
    uint32_t a = rd32(bar + 0x1004);
    int fixed = argc > 2 && argv[2][0] == 'f';
    if (!fixed && syscall(SYS_munmap, bar, 8192) != 0) return 5;
    uint8_t *heap = bar;
    if (fixed) {
        heap = (uint8_t *)syscall(SYS_mmap, bar, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (heap != bar) return 6;
    }
    wr32(other + 0x20, 0x77);
    if (!fixed) heap = mmap(bar, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (heap != bar) return 6;
    wr32(heap + 0x10, 0xdead);
    wr32(heap + 0x1004, 0xbeef);
    uint32_t b = rd32(heap + 0x10), c = rd32(heap + 0x1004);
    printf("a=%x b=%x c=%x\n", a, b, c);
    syscall(SYS_munmap, heap, 8192);
    return 0;
}
