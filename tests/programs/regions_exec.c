/* Code run from a device page mapped PROT_EXEC, while the device's other page stays
 * traced. Page 0 of the device holds `mov $42, %eax; ret` (written with pwrite before
 * mapping). Prints the function's result. With "noexec", the mapping lacks PROT_EXEC:
 * the call must die of SIGSEGV, as natively. Usage: regions_exec DEV [noexec] (2 pages). */
#include <string.h>
#include "mmio.h"

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) return 2;
    static const uint8_t code[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3};
    if (pwrite(fd, code, sizeof code, 0x100) != (ssize_t)sizeof code) return 3;
    int exec = !(argc > 2 && strcmp(argv[2], "noexec") == 0);
    uint8_t *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE | (exec ? PROT_EXEC : 0), MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return 4;
    wr32(m + 4096 + 8, 7);
    int (*f)(void) = (int (*)(void))(m + 0x100);
    int a = f();
    int b = f();
    uint32_t v = rd32(m + 4096 + 8);
    printf("%d %d %u\n", a, b, v);
    return 0;
}
