/* N processes (argv[2]) alive at once: child c writes c*1000+0..K-1 (K = argv[3]) to its
 * own 32-bit register at offset 4*c, tells the parent, waits until the parent has heard
 * from every child (so N rings are held at once), writes c*1000+K, reads the register
 * back and exits 0 if it read its last value. The parent exits 0 when every child did. */
#include "mmio.h"
#include <sys/wait.h>

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    int n = atoi(argv[2]);
    long k = atol(argv[3]);
    uint8_t *bar = map_device(argv[1], (4 * (size_t)n + 4095) & ~(size_t)4095);
    int ready[2], go[2];
    if (pipe(ready) || pipe(go)) return 3;
    for (long c = 0; c < n; c++) {
        pid_t p = fork();
        if (p < 0) { perror("fork"); return 3; }
        if (p == 0) {
            close(ready[0]);
            close(go[1]);
            for (long i = 0; i < k; i++) wr32(bar + 4 * c, (uint32_t)(c * 1000 + i));
            char b = 1;
            if (write(ready[1], &b, 1) != 1) _exit(4);
            /* EOF once the parent closes its write end. */
            while (read(go[0], &b, 1) > 0) {}
            wr32(bar + 4 * c, (uint32_t)(c * 1000 + k));
            _exit(rd32(bar + 4 * c) != (uint32_t)(c * 1000 + k));
        }
    }
    close(ready[1]);
    close(go[0]);
    char b;
    for (int c = 0; c < n; c++)
        if (read(ready[0], &b, 1) != 1) { fprintf(stderr, "a child died early\n"); return 5; }
    close(go[1]);
    int bad = 0, st;
    for (int c = 0; c < n; c++) {
        if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) bad = 1;
    }
    printf("processes %d done\n", n);
    return bad;
}
