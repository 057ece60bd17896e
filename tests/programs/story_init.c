/* A driver's bring-up with a known story, for `analyze`, `show --fold` and `diff`:
 * reset, a polling loop that waits for bit 3 of STATUS (the test program sets it
 * itself, through the file, after 50 polls), configuration writes, then a steady
 * state that only writes registers written before.
 *
 * argv: DEVICE [VARIANT [MAP_OFFSET [POLLS]]]. VARIANT "b" writes CFG1 = 0x6
 * instead of 0x5 and adds one read of ID after it; MAP_OFFSET maps the device at
 * that file offset (another physical base); POLLS (default 50) is how many reads
 * see bit 3 clear. VARIANT "w" waits, after the last first write, for bit 0 of
 * BUSY to clear (20 reads see it set). Exits 0. */
#include "mmio.h"
#include <string.h>

#define CTRL 0x00
#define STATUS 0x08
#define CFG0 0x10
#define CFG1 0x14
#define DOORBELL 0x18
#define BUSY 0x1c
#define ID 0x20

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int b = argc > 2 && strcmp(argv[2], "b") == 0;
    int w = argc > 2 && strcmp(argv[2], "w") == 0;
    off_t off = argc > 3 ? (off_t)strtoul(argv[3], NULL, 0) : 0;
    int polls = argc > 4 ? atoi(argv[4]) : 50;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) return 100;
    uint8_t *bar = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off);
    if (bar == MAP_FAILED) return 100;

    wr32(bar + CTRL, 0x1); /* reset */
    for (int i = 0;; i++) {
        if (rd32(bar + STATUS) & 0x8) break;
        if (i == polls - 1) {
            /* The "device" finishes its reset: bit 3 of STATUS, set behind the
             * mapping's back (not an access of the program). */
            uint32_t v = 0x100a;
            if (pwrite(fd, &v, 4, off + STATUS) != 4) return 101;
        }
    }
    wr32(bar + CFG0, 0xabc);
    wr32(bar + CFG1, b ? 0x6 : 0x5);
    if (b) (void)rd32(bar + ID);
    wr32(bar + DOORBELL, 0x1); /* the last write to a register not written before */
    for (int i = 0; w; i++) {
        if (!(rd32(bar + BUSY) & 0x1)) break;
        if (i == 19) {
            uint32_t v = 0x1006;
            if (pwrite(fd, &v, 4, off + BUSY) != 4) return 101;
        }
    }
    for (int i = 0; i < 4; i++) { /* steady state: registers written before */
        (void)rd32(bar + STATUS);
        wr32(bar + DOORBELL, 0x10 + i);
    }
    munmap(bar, 4096);
    return 0;
}
