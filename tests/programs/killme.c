/* Writes 0..N-1 (argv[2]) to a register, then SIGKILLs itself: every one of the N
 * completed writes must still be in the trace. */
#include "mmio.h"
#include <signal.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    uint8_t *bar = map_device(argv[1], 4096);
    long n = atol(argv[2]);
    for (long i = 0; i < n; i++) wr32(bar + 0x40, (uint32_t)i);
    kill(getpid(), SIGKILL);
    return 0;
}
