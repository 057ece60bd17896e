/* The recorder's liveness pipe in a traced program: its read end is inherited (number in
 * MMIO_TRACE_LIVE_FD), survives the program's close(), and shows no hang-up while the
 * recorder runs. Then a device access, traced. */
#include "mmio.h"
#include <poll.h>
#include <sys/stat.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *v = getenv("MMIO_TRACE_LIVE_FD");
    if (!v) return 3;
    int fd = atoi(v);
    close(fd); /* refused by the tracer */
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) return 4;
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 0) != 0 || p.revents != 0) return 5;
    uint8_t *bar = map_device(argv[1], 4096);
    wr32(bar + 8, 42);
    return 0;
}
