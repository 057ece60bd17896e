/* Writes 0..N-1 (argv[2]) to a register and prints the file-size limit it runs with: a
 * recorder that needed a larger one for its own channel must have given it back. */
#include "mmio.h"
#include <sys/resource.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    uint8_t *bar = map_device(argv[1], 4096);
    long n = atol(argv[2]);
    for (long i = 0; i < n; i++) wr32(bar + 0x40, (uint32_t)i);
    struct rlimit l;
    getrlimit(RLIMIT_FSIZE, &l);
    printf("fsize %llu\n", (unsigned long long)l.rlim_cur);
    return 0;
}
