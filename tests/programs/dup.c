/* Device matching follows the descriptor, not the open call: the device is mapped
 * through descriptors made by dup, dup2 and fcntl(F_DUPFD_CLOEXEC), after the original
 * was closed. Each mapping is traced. */
#include "mmio.h"

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) return 3;
    int a = dup(fd);
    int b = dup2(fd, 100);
    int c = fcntl(fd, F_DUPFD_CLOEXEC, 200);
    close(fd);
    int fds[3] = { a, b, c };
    for (int k = 0; k < 3; k++) {
        uint8_t *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fds[k], 0);
        if (p == MAP_FAILED) return 4;
        wr32(p + 4 * k, 0x100 + k);
    }
    return 0;
}
