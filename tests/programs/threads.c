/* N threads (argv[2]) each write 0..COUNT-1 (argv[3]) to their own 32-bit register at
 * offset 8*t, then read it back once. */
#include "mmio.h"
#include <pthread.h>

static uint8_t *bar;
static long count;

static void *worker(void *arg) {
    long t = (long)arg;
    for (long i = 0; i < count; i++) wr32(bar + 8 * t, (uint32_t)i);
    return (void *)(uintptr_t)rd32(bar + 8 * t);
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    bar = map_device(argv[1], 4096);
    int n = atoi(argv[2]);
    count = atol(argv[3]);
    pthread_t th[64];
    for (long t = 0; t < n; t++) pthread_create(&th[t], NULL, worker, (void *)t);
    int bad = 0;
    for (long t = 0; t < n; t++) {
        void *r;
        pthread_join(th[t], &r);
        if ((uintptr_t)r != (uintptr_t)(count - 1)) bad = 1;
    }
    return bad;
}
