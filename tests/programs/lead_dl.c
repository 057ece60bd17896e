/* A patched site in a library that is unloaded, and another library loaded at the same
 * address whose instruction there is a different one (a store where the first had a
 * load): the second must be traced as what it is.
 * Usage: lead_dl DEV LIB_A LIB_B N. Prints "same" or "moved", then "ok". */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

typedef uint32_t (*touch_fn)(volatile uint32_t *, uint32_t);

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    int n = atoi(argv[4]);
    int fd = open(argv[1], O_RDWR);
    volatile uint32_t *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return 3;
    void *a = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
    if (!a) { fprintf(stderr, "%s\n", dlerror()); return 4; }
    touch_fn ta = (touch_fn)dlsym(a, "touch");
    uint32_t sum = 0;
    /* A pause after the first accesses: the patcher patches the hot site meanwhile. */
    for (int i = 0; i < n; i++) {
        sum += ta(m + (i % 16), 0);
        if (i == 16) usleep(300000);
    }
    dlclose(a);
    void *b = dlopen(argv[3], RTLD_NOW | RTLD_LOCAL);
    if (!b) { fprintf(stderr, "%s\n", dlerror()); return 5; }
    touch_fn tb = (touch_fn)dlsym(b, "touch");
    printf("%s\n", (void *)tb == (void *)ta ? "same" : "moved");
    for (int i = 0; i < n; i++) {
        tb(m + 16 + (i % 16), 0x5000 + i);
        if (i == 16) usleep(300000);
    }
    for (int j = n - 16; j < n; j++)
        if (m[16 + j % 16] != 0x5000u + j) { fprintf(stderr, "word %d: %x\n", j % 16, m[16 + j % 16]); return 6; }
    printf("ok %u\n", sum);
    return 0;
}
