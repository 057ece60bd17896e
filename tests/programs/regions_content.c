/* What reaches the device after the program reshapes a traced mapping: writes on both
 * sides of a hole (partial munmap), on the pieces of a partial mprotect, after an mremap
 * move (MREMAP_FIXED), an mremap growth, an in-place shrink and a duplicate view
 * (mremap of length 0). Some pieces are written before the reshaping (their alias exists
 * and is split with them), some only after (their alias is made on first access). The
 * test compares the device file with the same program run natively.
 * Usage: regions_content DEV (an 8-page device). Prints "ok". */
#include "mmio.h"
#include <errno.h>
#include <string.h>

#define P 4096
#define CHECK(c, code) do { if (!(c)) { fprintf(stderr, "line %d: %s\n", __LINE__, strerror(errno)); return code; } } while (0)

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int fd = open(argv[1], O_RDWR);
    CHECK(fd >= 0, 2);
    /* A hole punched before any access: the pieces' aliases are made afterwards, from
     * their own device offsets. */
    uint8_t *h = mmap(NULL, 3 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(h != MAP_FAILED, 3);
    CHECK(munmap(h + P, P) == 0, 3);
    wr32(h + 2 * P + 0x70, 0x72);
    wr32(h + 0x70, 0x70);
    CHECK(munmap(h, P) == 0 && munmap(h + 2 * P, P) == 0, 3);
    /* Device pages 0..5. */
    uint8_t *m = mmap(NULL, 6 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(m != MAP_FAILED, 3);
    wr32(m + 5 * P + 0x04, 0x90); /* before any reshaping: the alias covers pages 0..5 */
    /* A hole at page 2: pieces 0..1 and 3..5. */
    CHECK(munmap(m + 2 * P, P) == 0, 4);
    wr32(m + 1 * P + 0x10, 0xa1);
    wr32(m + 3 * P + 0x10, 0xb3);
    wr32(m + 5 * P + 0x10, 0xb5);
    /* A partial mprotect splits 3..5 into 3, 4, 5. */
    CHECK(mprotect(m + 4 * P, P, PROT_READ) == 0, 5);
    wr32(m + 3 * P + 0x20, 0xc3);
    wr32(m + 5 * P + 0x20, 0xc5);
    CHECK(rd32(m + 4 * P + 0x20) == 0x1000 + (4 * P + 0x20) / 4, 6);
    CHECK(mprotect(m + 4 * P, P, PROT_READ | PROT_WRITE) == 0, 7);
    wr32(m + 4 * P + 0x20, 0xc4);
    /* Move pages 3..5 to a place of our choosing (over an anonymous reservation). */
    uint8_t *res = mmap(NULL, 16 * P, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(res != MAP_FAILED, 8);
    uint8_t *t = mremap(m + 3 * P, 3 * P, 3 * P, MREMAP_MAYMOVE | MREMAP_FIXED, res + 8 * P);
    CHECK(t == res + 8 * P, 9);
    wr32(t + 0 * P + 0x30, 0xd3);
    wr32(t + 1 * P + 0x30, 0xd4);
    wr32(t + 2 * P + 0x30, 0xd5);
    /* Grow it to device pages 3..7 (in place or moved). */
    uint8_t *g = mremap(t, 3 * P, 5 * P, MREMAP_MAYMOVE);
    CHECK(g != MAP_FAILED, 10);
    wr32(g + 4 * P + 0x40, 0xe7);
    wr32(g + 3 * P + 0x40, 0xe6);
    wr32(g + 0 * P + 0x40, 0xe3);
    /* A duplicate view of the grown mapping's page 6 (device page 6... a view of its
     * last two pages: device pages 6..7). */
    uint8_t *v = mremap(g + 3 * P, 0, 2 * P, MREMAP_MAYMOVE);
    CHECK(v != MAP_FAILED, 11);
    wr32(v + 1 * P + 0x50, 0xf7);
    wr32(v + 0 * P + 0x50, 0xf6);
    /* Shrink 0..1 in place to page 0. */
    CHECK(mremap(m, 2 * P, P, 0) == m, 12);
    wr32(m + 0x60, 0xa0);
    /* The pages left after the shrink and the move are gone. */
    CHECK(rd32(g + 1 * P + 0x30) == 0xd4, 13);
    CHECK(rd32(m + 0x60) == 0xa0, 14);
    CHECK(munmap(m, P) == 0 && munmap(g, 5 * P) == 0 && munmap(v, 2 * P) == 0, 15);
    puts("ok");
    return 0;
}
