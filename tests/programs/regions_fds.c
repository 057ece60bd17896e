/* A program that closes and reuses every descriptor number after mapping the device and
 * before touching it: the tracer's descriptor for making the alias on first access must
 * survive (closefrom, close_range, close, dup2 over numbers 150..399), and be closed once
 * the mapping is gone. Prints the value read back and the device descriptors left.
 * Usage: regions_fds DEV (4 pages). */
#include "mmio.h"
#include <dirent.h>
#include <sys/stat.h>

static struct stat dev;

static int device_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d))) {
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, 0) == 0 && st.st_ino == dev.st_ino && st.st_dev == dev.st_dev) n++;
    }
    if (d) closedir(d);
    return n;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0 || fstat(fd, &dev) != 0) return 2;
    uint8_t *m = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return 3;
    close(fd);
    closefrom(3);
    close_range(3, ~0U, 0);
    for (int k = 3; k < 1024; k++) close(k);
    int z = open("/dev/null", O_RDONLY);
    if (z < 0) return 4;
    for (int k = 150; k < 400; k++)
        if (dup2(z, k) != k) return 5;
    wr32(m + 0x10, 0x55);
    uint32_t v = rd32(m + 0x10);
    if (munmap(m, 4 * 4096) != 0) return 6;
    printf("%x fds %d\n", v, device_fds());
    return 0;
}
