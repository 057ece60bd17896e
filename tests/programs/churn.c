/* More threads over the program's life than the recorder has rings: B batches (argv[2])
 * of 20 threads, each writing its number once (half of them end with pthread_exit). */
#include "mmio.h"
#include <pthread.h>

static uint8_t *bar;

static void *worker(void *arg) {
    long k = (long)arg;
    wr32(bar + 4 * (k % 1024), (uint32_t)k);
    if (k % 2) pthread_exit(NULL);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    bar = map_device(argv[1], 4096);
    long batches = atol(argv[2]);
    for (long b = 0; b < batches; b++) {
        pthread_t th[20];
        for (long t = 0; t < 20; t++) pthread_create(&th[t], NULL, worker, (void *)(b * 20 + t));
        for (long t = 0; t < 20; t++) pthread_join(th[t], NULL);
    }
    return 0;
}
