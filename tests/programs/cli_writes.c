/* Output failures: writes 0..N-1 to the device (one W line each), then creates the
 * sentinel file argv[3] and exits with status 3. With argv[4], first creates that file
 * and waits for argv[5] to appear (the test closes the trace's reader meanwhile). */
#include "mmio.h"
#include <time.h>

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    uint8_t *bar = map_device(argv[1], 4096);
    if (argc >= 6) {
        int fd = open(argv[4], O_CREAT | O_WRONLY, 0644);
        if (fd < 0) return 4;
        close(fd);
        struct timespec ts = {0, 5 * 1000 * 1000};
        for (int i = 0; access(argv[5], F_OK) != 0; i++) {
            if (i > 24000) return 9; /* two minutes: the test is gone */
            nanosleep(&ts, NULL);
        }
    }
    long n = atol(argv[2]);
    for (long i = 0; i < n; i++) wr32(bar + 0x40, (uint32_t)i);
    int fd = open(argv[3], O_CREAT | O_WRONLY, 0644);
    if (fd < 0) return 4;
    if (write(fd, "ran to the end\n", 15) != 15) return 5;
    close(fd);
    printf("program stdout\n");
    return 3;
}
