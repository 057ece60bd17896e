/* Maps the device (argv[1]), writes 1, writes its pid to the file argv[2] (created
 * whole, by rename), then sleeps up to 60 s and exits 0: for killing its recorder. */
#include "mmio.h"

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    uint8_t *bar = map_device(argv[1], 4096);
    wr32(bar, 1);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[2]);
    FILE *f = fopen(tmp, "w");
    if (!f) return 3;
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    rename(tmp, argv[2]);
    for (int i = 0; i < 600; i++) usleep(100000);
    return 0;
}
