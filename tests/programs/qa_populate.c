/* madvise(MADV_POPULATE_READ/WRITE) on traced device mappings, each printed with its
 * result ("name rc errno"), then accesses that must still be traced: a mapping touched
 * and one never touched, read-only (POPULATE_WRITE fails), a range across a device
 * mapping, anonymous memory and an unmapped hole, a misaligned start, pages beyond the
 * end of the file. The test compares the output with a native run.
 * Usage: qa_populate DEV (an 8-page device). */
#include "mmio.h"
#include <errno.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif
#define P 4096
static void show(const char *what, int rc) { printf("%s %d %d\n", what, rc, rc ? errno : 0); errno = 0; }

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) return 2;
    uint8_t *m = mmap(NULL, 4 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    uint8_t *u = mmap(NULL, 2 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 4 * P);
    uint8_t *ro = mmap(NULL, 2 * P, PROT_READ, MAP_SHARED, fd, 6 * P);
    if (m == MAP_FAILED || u == MAP_FAILED || ro == MAP_FAILED) return 3;
    wr32(m + 0x10, 1);
    show("read", madvise(m, 4 * P, MADV_POPULATE_READ));
    show("write", madvise(m, 4 * P, MADV_POPULATE_WRITE));
    show("write-part", madvise(m + P, P + 1, MADV_POPULATE_WRITE));
    show("untouched-read", madvise(u, 2 * P, MADV_POPULATE_READ));
    show("untouched-write", madvise(u, 2 * P, MADV_POPULATE_WRITE));
    show("ro-read", madvise(ro, 2 * P, MADV_POPULATE_READ));
    show("ro-write", madvise(ro, 2 * P, MADV_POPULATE_WRITE));
    show("misaligned", madvise(m + 8, P, MADV_POPULATE_READ));
    show("zero", madvise(m, 0, MADV_POPULATE_WRITE));
    /* device, anonymous, hole, in that order */
    uint8_t *r = mmap(NULL, 6 * P, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mmap(r, 2 * P, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) return 4;
    if (mmap(r + 2 * P, 2 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) return 5;
    munmap(r + 4 * P, P);
    show("mixed", madvise(r, 4 * P, MADV_POPULATE_WRITE));
    show("mixed-hole", madvise(r, 6 * P, MADV_POPULATE_WRITE));
    /* beyond the end of the file */
    uint8_t *big = mmap(NULL, 12 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (big == MAP_FAILED) return 6;
    wr32(big + 0x20, 2);
    show("past-eof", madvise(big, 12 * P, MADV_POPULATE_READ));
    show("all-in-file", madvise(big, 8 * P, MADV_POPULATE_READ));
    wr32(m + P + 0x10, 3);
    wr32(u + 0x10, 4);
    wr32(r + 0x14, 5);
    uint32_t a = rd32(m + 0x10), b = rd32(m + P + 0x10), c = rd32(u + 0x10);
    uint32_t d = rd32(ro + 0x10), e = rd32(big + 0x20);
    printf("%x %x %x %x %x\n", a, b, c, d, e);
    return 0;
}
