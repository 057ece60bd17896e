/* Reshaping traced device mappings in ways the registry must follow: MAP_FIXED over half
 * a mapping, munmap across several mappings, mremap of a mapping never touched, mappings
 * of one page at the device's last page, two open files and one file mapped twice,
 * mlockall(MCL_FUTURE) before mapping. Every read value is printed, so a native run
 * and a recorded one can be compared. Usage: qa_shape DEV MODE (a 16-page device). */
#include "mmio.h"
#include <errno.h>
#include <string.h>
#include <sys/resource.h>

#define P 4096UL
static int fd;
static uint8_t *map(size_t len, off_t off) {
    uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off);
    if (m == MAP_FAILED) { perror("mmap"); exit(3); }
    return m;
}
static void pr(const char *what, uint32_t v) { printf("%s %x\n", what, v); }

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    fd = open(argv[1], O_RDWR);
    if (fd < 0) return 2;
    const char *mode = argv[2];
    if (!strcmp(mode, "fixedhalf")) {
        uint8_t *m = map(4 * P, 0);
        wr32(m + 0x10, 0xa1);
        wr32(m + 3 * P + 0x10, 0xa2);
        /* pages 2-3 become the device's pages 8-9, then anonymous memory */
        if (mmap(m + 2 * P, 2 * P, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 8 * P) == MAP_FAILED) return 4;
        wr32(m + 2 * P + 0x20, 0xa3); /* device page 8 */
        pr("p9", rd32(m + 3 * P + 0x10)); /* device page 9 */
        if (mmap(m + 2 * P, 2 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) return 5;
        wr32(m + 2 * P + 0x20, 0xdead); /* anonymous: not the device */
        pr("anon", rd32(m + 2 * P + 0x20));
        wr32(m + P + 0x30, 0xa4);
        pr("p0", rd32(m + 0x10));
        munmap(m, 4 * P);
    } else if (!strcmp(mode, "span")) {
        /* three adjacent mappings of different device offsets; munmap from the middle of
         * the first to the middle of the third */
        uint8_t *r = mmap(NULL, 12 * P, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (r == MAP_FAILED) return 4;
        for (int k = 0; k < 3; k++)
            if (mmap(r + k * 4 * P, 4 * P, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, (4 - k) * 3 * P) == MAP_FAILED) return 5;
        for (int k = 0; k < 12; k++) wr32(r + k * P + 4 * k, 0xb0 + k);
        if (munmap(r + 2 * P, 8 * P) != 0) return 6;
        for (int k = 0; k < 12; k++)
            if (k < 2 || k >= 10) pr("left", rd32(r + k * P + 4 * k));
        /* the hole mapped again at other offsets */
        if (mmap(r + 2 * P, 8 * P, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) return 7;
        for (int k = 2; k < 10; k++) pr("new", rd32(r + k * P + 4 * k));
        munmap(r, 12 * P);
    } else if (!strcmp(mode, "mremap")) {
        uint8_t *m = map(2 * P, 4 * P);
        uint8_t *g = mremap(m, 2 * P, 6 * P, MREMAP_MAYMOVE);
        if (g == MAP_FAILED) return 4;
        wr32(g + 5 * P + 8, 0xc1); /* device page 9, grown part */
        wr32(g + 8, 0xc2);
        uint8_t *s = mremap(g, 6 * P, 3 * P, 0);
        if (s == MAP_FAILED) return 5;
        pr("s2", rd32(s + 2 * P + 8));
        /* untouched, moved to a fixed place, then grown there */
        uint8_t *n = map(P, 12 * P);
        uint8_t *dst = mmap(NULL, 8 * P, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        uint8_t *f = mremap(n, P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED, dst + 2 * P);
        if (f == MAP_FAILED) return 6;
        wr32(f + P + 12, 0xc3); /* device page 13 */
        pr("f0", rd32(f + 12));
        pr("f1", rd32(f + P + 12));
        munmap(dst, 8 * P);
        munmap(s, 3 * P);
    } else if (!strcmp(mode, "edge")) {
        uint8_t *last = map(P, 15 * P);
        wr32(last + P - 4, 0xd1);
        pr("last", rd32(last + P - 4));
        wr64(last + P - 8, 0x1122334455667788ULL);
        pr("last64", rd32(last + P - 8));
        /* one page, and a mapping the size of the device, unmapped page by page */
        uint8_t *all = map(16 * P, 0);
        for (int k = 15; k >= 0; k--) {
            wr8(all + k * P + k, 0xe0 + k);
            if (munmap(all + k * P, P) != 0) return 4;
        }
        pr("after", rd32(last + P - 4));
        munmap(last, P);
    } else if (!strcmp(mode, "twofiles")) {
        int fd2 = open(argv[1], O_RDWR);
        uint8_t *a = map(4 * P, 0);
        uint8_t *b = mmap(NULL, 4 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd2, 0);
        uint8_t *c = map(2 * P, 2 * P);
        uint8_t *d = mmap(NULL, 4 * P, PROT_READ, MAP_SHARED, fd2, 0);
        close(fd);
        close(fd2);
        wr32(a + 2 * P + 0x40, 0xf1);
        pr("b", rd32(b + 2 * P + 0x40));
        pr("c", rd32(c + 0x40));
        pr("d", rd32(d + 2 * P + 0x40));
        wr32(c + 0x44, 0xf2);
        pr("a", rd32(a + 2 * P + 0x44));
        munmap(a, 4 * P);
        wr32(b + 0x48, 0xf3);
        pr("d0", rd32(d + 0x48));
        munmap(b, 4 * P);
        pr("c2", rd32(c + 0x44));
        munmap(c, 2 * P);
        pr("d2", rd32(d + 2 * P + 0x44));
        munmap(d, 4 * P);
    } else if (!strcmp(mode, "future")) {
        struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
        setrlimit(RLIMIT_MEMLOCK, &rl);
        int rc = mlockall(MCL_CURRENT | MCL_FUTURE);
        printf("mlockall %d\n", rc ? errno : 0);
        uint8_t *m = map(4 * P, 0);
        wr32(m + 0x10, 0x91);
        pr("m", rd32(m + P + 0x10));
        uint8_t *n = map(2 * P, 8 * P);
        pr("n", rd32(n + 0x10));
        munlockall();
    } else if (!strcmp(mode, "nofile")) {
        uint8_t *m = map(4 * P, 0);
        close(fd);
        /* every descriptor number taken before the first access */
        int n = 0;
        while (open("/dev/null", O_RDONLY) >= 0) n++;
        printf("emfile %d\n", errno == EMFILE);
        wr32(m + 0x10, 0x77);
        pr("m", rd32(m + 0x10));
        uint8_t *k = mmap(NULL, P, PROT_READ | PROT_WRITE, MAP_SHARED, 3, 0);
        (void)k;
    } else if (!strcmp(mode, "lownofile")) {
        struct rlimit rl = {16, 16};
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) return 4;
        uint8_t *m = map(4 * P, 0);
        close(fd);
        int n = 0;
        while (open("/dev/null", O_RDONLY) >= 0) n++;
        wr32(m + 0x10, 0x78);
        pr("m", rd32(m + 0x10));
    } else return 9;
    puts("done");
    return 0;
}
