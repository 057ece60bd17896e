/* A battery of instruction forms on a traced device (argv[1]); prints what it read and
 * exits with status 7 (the recorder must pass it through). */
#include "mmio.h"

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    uint8_t *bar = map_device(argv[1], 8192);
    int fd = open(argv[1], O_RDONLY);
    /* A private mapping of the same file and an anonymous one: never traced. */
    uint8_t *priv = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    uint8_t *anon = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (priv == MAP_FAILED || anon == MAP_FAILED) return 100;
    anon[0] = 1;

    uint32_t id = rd32(bar + 0x0);
    wr32(bar + 0x4, 0xdeadbeef);
    wr8(bar + 0x8, 0x5a);
    wr16(bar + 0xa, 0x1234);
    wr64(bar + 0x10, 0x1122334455667788ull);
    uint8_t b = rd8(bar + 0x8);
    uint16_t h = rd16(bar + 0xa);
    uint64_t q = rd64(bar + 0x10);
    /* Immediate store, zero/sign-extending loads. */
    __asm__ volatile("movl $0xcafef00d, 0x20(%0)" :: "r"(bar) : "memory");
    uint32_t zx, sx;
    __asm__ volatile("movzbl 0x23(%1), %0" : "=r"(zx) : "r"(bar) : "memory");
    __asm__ volatile("movsbl 0x23(%1), %0" : "=r"(sx) : "r"(bar) : "memory");
    /* Read-modify-write: one read, one write. */
    __asm__ volatile("addl $5, 0x1000(%0)" :: "r"(bar) : "memory");
    /* A 16-byte SSE store and load. */
    __asm__ volatile("pcmpeqd %%xmm0, %%xmm0\n\tmovdqu %%xmm0, 0x30(%0)\n\tmovdqu 0x30(%0), %%xmm1" :: "r"(bar) : "xmm0", "xmm1", "memory");
    /* Not emulated: crc32 with a memory operand takes the step fallback. */
    uint32_t crc = 0;
    __asm__ volatile("crc32l 0x4(%1), %0" : "+r"(crc) : "r"(bar) : "memory");
    uint32_t s2 = rd32(bar + 0x1000);
    printf("id=%08x b=%02x h=%04x q=%016llx zx=%x sx=%x crc=%08x s2=%08x priv=%02x\n", id, b, h,
           (unsigned long long)q, zx, sx, crc, s2, priv[8]);
    munmap(bar, 8192);
    return 7;
}
