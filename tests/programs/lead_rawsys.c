/* Device mappings made and undone by `syscall(SYS_...)`, not libc's wrappers.
 *
 * usage: lead_rawsys DEVICE [libc|raw|stale]
 * Maps the device with syscall(SYS_mmap) (libc's mmap with "stale"), writes 0x11223344
 * at +0x10 and reads it back 40 times through one non-inlined store site (so the site
 * gets hot and may be patched), unmaps it with syscall(SYS_munmap), maps anonymous
 * memory at the same address ("raw": syscall(SYS_mmap); else libc's mmap) and stores
 * through the same site 40 times: that memory is the program's own, so it reads its own
 * values back and the device keeps 0x11223344. Then syscall(SYS_mremap) of a second
 * device mapping and syscall(SYS_mprotect) read-only then read-write on it, with a
 * store after each. Prints what it read; exit 1 if its own memory did not hold its own
 * values. */
#include "mmio.h"
#include <string.h>
#include <sys/syscall.h>

__attribute__((noinline)) static void put(volatile uint32_t *p, uint32_t v) {
    __asm__ volatile("movl %0, (%1)" ::"r"(v), "r"(p) : "memory");
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *mode = argc > 2 ? argv[2] : "libc";
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) return 100;
    uint8_t *dev = !strcmp(mode, "stale")
        ? mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        : (uint8_t *)syscall(SYS_mmap, NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (dev == MAP_FAILED) return 100;
    uint32_t got = 0;
    for (int i = 0; i < 40; i++) {
        put((volatile uint32_t *)(dev + 0x10), 0x11223344);
        got = rd32(dev + 0x10);
    }
    printf("device %#x\n", got);
    if (syscall(SYS_munmap, dev, 4096) != 0) return 101;
    uint8_t *mem;
    if (!strcmp(mode, "raw"))
        mem = (uint8_t *)syscall(SYS_mmap, dev, 4096, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    else
        mem = mmap(dev, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (mem != dev) return 102;
    int bad = 0;
    for (uint32_t i = 0; i < 40; i++) {
        put((volatile uint32_t *)(mem + 0x10), 0xa0000000 + i);
        if (rd32(mem + 0x10) != 0xa0000000 + i) bad++;
    }
    printf("own memory %s\n", bad ? "WRONG" : "ok");
    /* A second mapping, moved and re-protected by raw calls. */
    uint8_t *d2 = (uint8_t *)syscall(SYS_mmap, NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (d2 == MAP_FAILED) return 103;
    wr32(d2 + 0x20, 0x55);
    uint8_t *moved = (uint8_t *)syscall(SYS_mremap, d2, 4096, 8192, MREMAP_MAYMOVE);
    if (moved == MAP_FAILED) return 104;
    wr32(moved + 0x24, 0x66);
    if (syscall(SYS_mprotect, moved, 8192, PROT_READ) != 0) return 105;
    printf("read-only %#x\n", rd32(moved + 0x24));
    if (syscall(SYS_mprotect, moved, 8192, PROT_READ | PROT_WRITE) != 0) return 106;
    wr32(moved + 0x28, 0x77);
    printf("done\n");
    return bad ? 1 : 0;
}
