/* mprotect on traced memory fails as it would natively (argv[2]):
 *  "a": a read-only fd mapped PROT_READ: mprotect(PROT_WRITE) is EACCES; reads still traced.
 *  "b": mprotect of page 0 to read-write works (the write is traced); a misaligned
 *       mprotect on page 1 is EINVAL, so page 1 stays read-only and a write to it is
 *       fatal (never reaches the device). */
#include "mmio.h"
#include <errno.h>
#include <string.h>
int main(int argc, char **argv) {
    (void)argc;
    int a = argv[2][0] == 'a';
    int fd = open(argv[1], a ? O_RDONLY : O_RDWR);
    uint8_t *p = mmap(NULL, 2 * 4096, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return 2;
    if (a) {
        errno = 0;
        int r = mprotect(p, 4096, PROT_READ | PROT_WRITE);
        printf("mprotect %d %s\n", r, strerror(errno));
        printf("read %#x\n", rd32(p + 4));
        return 0;
    }
    int r = mprotect(p, 4096, PROT_READ | PROT_WRITE);
    printf("mprotect page 0: %d\n", r);
    wr32(p + 8, 0x77);
    errno = 0;
    r = mprotect(p + 4096 + 8, 100, PROT_READ | PROT_WRITE);
    printf("misaligned mprotect: %d %s\n", r, strerror(errno));
    fflush(stdout);
    wr32(p + 4096 + 8, 9); /* still read-only: fatal */
    printf("BUG: write to a read-only page accepted\n");
    return 0;
}
