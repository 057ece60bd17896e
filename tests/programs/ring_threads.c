/* N threads (argv[2]) alive at once: thread t writes t*1000+0..K-1 (K = argv[3]) to its
 * own 32-bit register at offset 4*t, waits until every thread has written (so N rings
 * are held at once), writes t*1000+K and reads the register back. Exit 0 when every
 * thread read back its last value. */
#include "mmio.h"
#include <pthread.h>

static uint8_t *bar;
static long k;
static pthread_barrier_t all_alive;

static void *worker(void *arg) {
    long t = (long)arg;
    for (long i = 0; i < k; i++) wr32(bar + 4 * t, (uint32_t)(t * 1000 + i));
    pthread_barrier_wait(&all_alive);
    wr32(bar + 4 * t, (uint32_t)(t * 1000 + k));
    return (void *)(uintptr_t)(rd32(bar + 4 * t) != (uint32_t)(t * 1000 + k));
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    int n = atoi(argv[2]);
    k = atol(argv[3]);
    bar = map_device(argv[1], (4 * (size_t)n + 4095) & ~(size_t)4095);
    pthread_t *th = calloc(n, sizeof *th);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 << 10);
    pthread_barrier_init(&all_alive, NULL, n);
    for (long t = 0; t < n; t++)
        if (pthread_create(&th[t], &attr, worker, (void *)t)) { perror("pthread_create"); return 3; }
    int bad = 0;
    for (long t = 0; t < n; t++) {
        void *r;
        pthread_join(th[t], &r);
        if (r) bad = 1;
    }
    printf("threads %d done\n", n);
    return bad;
}
