/* Keeps working after the recorder dies: prints "ready PID", waits until the file GO
 * exists, then writes i to a device word and reads it back N times; prints the count of
 * wrong read-backs. Usage: rob_orphan DEV GO N */
#include "mmio.h"
#include <time.h>
int main(int argc, char **argv) {
    uint8_t *bar = map_device(argv[1], 4096);
    long n = atol(argv[3]);
    wr32(bar, 0);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    struct timespec ms = {0, 1000000};
    while (access(argv[2], F_OK) != 0) nanosleep(&ms, NULL);
    long bad = 0;
    for (long i = 1; i <= n; i++) {
        wr32(bar + 4, (uint32_t)i);
        if (rd32(bar + 4) != (uint32_t)i) bad++;
    }
    printf("done %ld bad %ld\n", n, bad);
    return 0;
}
