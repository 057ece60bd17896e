/* A dynamic program without any inline `syscall` instruction: maps the device with libc,
 * writes +0x30 = 0x33 and reads it back, and prints its seccomp mode (the `Seccomp:` line
 * of /proc/self/status): the preload route puts no filter into such a program. */
#include "mmio.h"
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    uint8_t *d = map_device(argv[1], 4096);
    wr32(d + 0x30, 0x33);
    uint32_t v = rd32(d + 0x30);
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 3;
    char line[256];
    int mode = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "Seccomp:", 8)) mode = atoi(line + 8);
    fclose(f);
    printf("read %#x seccomp %d\n", v, mode);
    return 0;
}
