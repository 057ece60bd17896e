/* t_regs DEV [NEXT ARGS...]: the route tests' driver, built dynamic, static (glibc) and
 * static (musl). Writes and reads known registers of DEV with every width, prints what
 * it read and its effective uid, then execs NEXT ARGS... if given (an exec chain), else
 * exits with status 7. */
#include "mmio.h"
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2) return 100;
    uint8_t *d = map_device(argv[1], 8192);
    wr32(d + 0x10, 0x11223344);
    wr8(d + 0x20, 0xab);
    wr16(d + 0x22, 0xbeef);
    wr64(d + 0x28, 0x0102030405060708ull);
    uint32_t a = rd32(d + 0x10);
    uint32_t b = rd32(d + 0x1000);
    uint16_t c = rd16(d + 0x22);
    printf("read %x %x %x euid %d\n", a, b, c, (int)geteuid());
    fflush(stdout);
    munmap(d, 8192);
    if (argc > 2) {
        execv(argv[2], argv + 2);
        perror(argv[2]);
        return 101;
    }
    return 7;
}
