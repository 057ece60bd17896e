/* A running program that maps a NEW device while `record --pid` is attached: maps
 * DEVICE, writes DIR/ready, waits for DIR/go (checking every millisecond), then maps
 * DEVICE2 shared and makes W32 0x40 = 0xfeed, R32 0x40 (must read 0xfeed), W16 0x44 =
 * 0xbeef there, hands the kernel 4 bytes at DEVICE2+0x40 (pwrite into DIR/out.bin: must
 * write 4) and 2 bytes into DEVICE2+0x48 (pread of DIR/out.bin at 0: must read 2),
 * unmaps it, makes W32 0x10 = 0x5a5a on DEVICE, and writes DIR/done; then waits for
 * DIR/stop and exits 0 (1 if a value read back or a call's result was wrong).
 *
 * usage: a_newdev DEVICE DEVICE2 DIR */
#define _GNU_SOURCE
#include "mmio.h"
#include <errno.h>
#include <string.h>
#include <time.h>

static const char *dir;

static int exists(const char *name) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static void touch(const char *name) {
    char p[4096], tmp[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", getpid()) < 0 || fclose(f) != 0 || rename(tmp, p) != 0) {
        perror(p);
        exit(100);
    }
}

static void wait_for(const char *name) {
    while (!exists(name)) {
        struct timespec t = {0, 1000 * 1000};
        nanosleep(&t, NULL);
    }
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: a_newdev DEVICE DEVICE2 DIR\n");
        return 100;
    }
    dir = argv[3];
    int errors = 0;
    uint8_t *dev = map_device(argv[1], 4096);
    touch("ready");
    wait_for("go");
    uint8_t *dev2 = map_device(argv[2], 4096);
    wr32(dev2 + 0x40, 0xfeed);
    uint32_t v = rd32(dev2 + 0x40);
    if (v != 0xfeed) {
        fprintf(stderr, "a_newdev: read %#x, want 0xfeed\n", v);
        errors++;
    }
    wr16(dev2 + 0x44, 0xbeef);
    char out[4096];
    snprintf(out, sizeof out, "%s/out.bin", dir);
    int fd = open(out, O_RDWR | O_CREAT | O_TRUNC, 0600);
    ssize_t n = fd < 0 ? -1 : pwrite(fd, dev2 + 0x40, 4, 0);
    if (n != 4) {
        fprintf(stderr, "a_newdev: pwrite from the device returned %zd (%s)\n", n, strerror(errno));
        errors++;
    }
    n = fd < 0 ? -1 : pread(fd, dev2 + 0x48, 2, 0);
    if (n != 2) {
        fprintf(stderr, "a_newdev: pread into the device returned %zd (%s)\n", n, strerror(errno));
        errors++;
    }
    if (fd >= 0)
        close(fd);
    if (munmap(dev2, 4096) != 0) {
        perror("munmap");
        errors++;
    }
    wr32(dev + 0x10, 0x5a5a);
    touch("done");
    wait_for("stop");
    printf("errors %d\n", errors);
    return errors ? 1 : 0;
}
