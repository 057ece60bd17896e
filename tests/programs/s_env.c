/* What the program sees of the recorder: LD_PRELOAD and the recorder's variables, and
 * whether the preload library is mapped. Maps the device (argv[1]) and writes 1. */
#include "mmio.h"
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *p = getenv("LD_PRELOAD");
    int lib = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "mmio_trace_preload")) lib = 1;
    uint8_t *bar = map_device(argv[1], 4096);
    wr32(bar, 1);
    printf("preload=%s lib=%d shm=%s\n", p ? p : "-", lib, getenv("MMIO_TRACE_SHM_FD") ? "y" : "n");
    return 0;
}
