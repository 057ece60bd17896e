/* Buffers cut into many pieces. `sys_many DEV range`: DEV's 8 pages in one mapping (record
 * with --range tracing every other page) written to a file and read back whole.
 * `sys_many DEV many`: 9 one-page mappings of DEV between 8 anonymous pages, written to a
 * file at once: 17 pieces, more than the tracer hands to the kernel. */
#include "mmio.h"
#include <errno.h>
#include <string.h>

int main(int argc, char **argv) {
    char path[4096];
    snprintf(path, sizeof path, "%s.scratch", argv[1]);
    int f = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    int fd = open(argv[1], O_RDWR);
    long r;
    if (!strcmp(argv[2], "range")) {
        uint8_t *bar = mmap(NULL, 8 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        r = write(f, bar, 8 * 4096);
        printf("write %ld\n", r);
        r = pread(f, bar, 8 * 4096, 0);
        printf("pread %ld\n", r);
        return 0;
    }
    uint8_t *area = mmap(NULL, 17 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int i = 0; i < 17; i += 2)
        if (mmap(area + i * 4096, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) return 100;
    r = write(f, area, 17 * 4096);
    printf("write %ld errno %d\n", r, r < 0 ? errno : 0);
    return 0;
}
