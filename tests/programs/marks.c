/* Markers: the preload library's mmio_trace_mark() between device writes; then creates
 * the file argv[2], waits for the file argv[3] to appear (the test sends `mmio-trace mark`
 * in between) and writes again. */
#include "mmio.h"
#include <dlfcn.h>
#include <time.h>

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    void (*mark)(const char *) = (void (*)(const char *))dlsym(RTLD_DEFAULT, "mmio_trace_mark");
    if (!mark) return 3;
    uint8_t *bar = map_device(argv[1], 4096);
    wr32(bar, 1);
    mark("between one and two");
    wr32(bar, 2);
    int fd = open(argv[2], O_CREAT | O_WRONLY, 0644);
    if (fd < 0) return 4;
    close(fd);
    struct timespec ts = {0, 5 * 1000 * 1000};
    while (access(argv[3], F_OK) != 0) nanosleep(&ts, NULL);
    wr32(bar, 3);
    return 0;
}
