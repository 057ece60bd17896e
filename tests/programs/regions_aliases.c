/* The tracer's aliases leave with the pages they mirror. After each step the program
 * prints how many pages of the device are mapped in the process (its own and any the
 * tracer made), from /proc/self/maps, and at the end how many descriptors of the device
 * are open. Usage: regions_aliases DEV (an 8-page device). */
#include "mmio.h"
#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

#define P 4096
static struct stat dev;

static long device_pages(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    long pages = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long lo, hi, ino;
        char perms[8];
        unsigned long long off;
        unsigned maj, min;
        if (sscanf(line, "%lx-%lx %7s %llx %x:%x %lu", &lo, &hi, perms, &off, &maj, &min, &ino) == 7
            && ino == dev.st_ino)
            pages += (hi - lo) / P;
    }
    if (f) fclose(f);
    return pages;
}

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

#define STEP(name) printf("%s %ld\n", name, device_pages())

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0 || fstat(fd, &dev) != 0) return 2;
    uint8_t *a = mmap(NULL, 8 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (a == MAP_FAILED) return 3;
    STEP("mapped");
    wr32(a, 1);
    STEP("touched");
    if (munmap(a + 2 * P, P) != 0) return 4;
    STEP("hole");
    if (mremap(a + 3 * P, 5 * P, 3 * P, 0) != a + 3 * P) return 5;
    STEP("shrunk");
    if (mmap(a + 4 * P, P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != a + 4 * P) return 6;
    STEP("fixed");
    uint8_t *moved = mremap(a + 5 * P, P, P, MREMAP_MAYMOVE | MREMAP_FIXED, a + 6 * P);
    if (moved != a + 6 * P) return 7;
    wr32(moved, 2);
    STEP("moved");
    uint8_t *b = mmap(NULL, 4 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 4 * P);
    if (b == MAP_FAILED) return 8;
    STEP("untouched");
    if (munmap(a, 8 * P) != 0 || munmap(b, 4 * P) != 0) return 9;
    STEP("unmapped");
    close(fd);
    printf("fds %d\n", device_fds());
    return 0;
}
