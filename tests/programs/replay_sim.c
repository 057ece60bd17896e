/* A device simulated by another process, for the replay tests: maps the device file
 * shared (untraced) and answers the driver's doorbells like hardware would.
 *
 * Registers (32-bit): 0x00 ID (0x594c5052, "RPLY"), 0x04 VERSION, 0x10 CTRL (0xff: the
 * simulator ends), and four channels at 0x100 + 0x20*ch: ARG +0, DOORBELL +4,
 * STATUS +8 (bit 0 BUSY, bit 1 DONE, bit 2 ERROR), RESULT +0xc. A doorbell makes the
 * channel BUSY for about 2 ms, then RESULT = ARG * ARG + 1 and DONE, or ERROR when
 * ARG is 0xdead.
 *
 * usage: replay_sim DEVICE READY_FILE */
#include "mmio.h"
#include <time.h>

static uint64_t now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    volatile uint32_t *r = (volatile uint32_t *)map_device(argv[1], 4096);
    for (int i = 0; i < 1024; i++) r[i] = 0;
    r[0] = 0x594c5052;
    r[1] = 0x00010003;
    __sync_synchronize();
    FILE *f = fopen(argv[2], "w");
    if (!f) return 3;
    fclose(f);
    uint64_t due[4] = {0, 0, 0, 0};
    uint64_t give_up = now_us() + 120 * 1000000ull;
    while (now_us() < give_up) {
        __sync_synchronize();
        if (r[0x10 / 4] == 0xff) return 0;
        for (int ch = 0; ch < 4; ch++) {
            volatile uint32_t *c = r + (0x100 + 0x20 * ch) / 4;
            if (c[1] != 0) {
                c[1] = 0;
                c[2] = 1;
                due[ch] = now_us() + 2000;
            } else if (due[ch] != 0 && now_us() >= due[ch]) {
                due[ch] = 0;
                uint32_t a = c[0];
                if (a == 0xdead) {
                    c[2] = 4;
                } else {
                    c[3] = a * a + 1;
                    __sync_synchronize();
                    c[2] = 2;
                }
            }
        }
        usleep(100);
    }
    return 4;
}
