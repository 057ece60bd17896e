/* Opens its device relative to a directory descriptor (openat), maps it and prints the
 * first register: replay must stand in for the device there too.
 * usage: replay_openat DIR NAME */
#include "mmio.h"
int main(int argc, char **argv) {
    int d = open(argv[1], O_RDONLY | O_DIRECTORY);
    int fd = openat(d, argv[2], O_RDWR);
    if (fd < 0) { perror("openat"); return 100; }
    volatile uint8_t *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    printf("id %#x\n", rd32((void *)p));
    return 0;
}
