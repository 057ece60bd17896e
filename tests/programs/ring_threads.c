/* N threads (argv[2]) alive at once: thread t writes t*1000+0..K-1 (K = argv[3]) to its
 * own 32-bit register at offset 4*t, waits until every thread has written (so N rings
 * are held at once), writes t*1000+K and reads the register back. Exit 0 when every
 * thread read back its last value. With a 4th argument HOLD, every thread stays alive
 * after its accesses until HOLD (created then) is removed: for measuring memory. */
#include "mmio.h"
#include <pthread.h>

static uint8_t *bar;
static long k;
static pthread_barrier_t all_alive, all_done;
static const char *hold;
static int gate[2];

static void *worker(void *arg) {
    long t = (long)arg;
    for (long i = 0; i < k; i++) wr32(bar + 4 * t, (uint32_t)(t * 1000 + i));
    pthread_barrier_wait(&all_alive);
    wr32(bar + 4 * t, (uint32_t)(t * 1000 + k));
    uintptr_t bad = rd32(bar + 4 * t) != (uint32_t)(t * 1000 + k);
    if (hold) {
        char b;
        pthread_barrier_wait(&all_done);
        while (read(gate[0], &b, 1) > 0) {}
    }
    return (void *)bad;
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
    hold = argc > 4 ? argv[4] : NULL;
    pthread_barrier_init(&all_done, NULL, n + 1);
    if (pipe(gate)) return 3;
    for (long t = 0; t < n; t++)
        if (pthread_create(&th[t], &attr, worker, (void *)t)) { perror("pthread_create"); return 3; }
    if (hold) {
        pthread_barrier_wait(&all_done);
        FILE *f = fopen(hold, "w");
        if (f) fclose(f);
        while (access(hold, F_OK) == 0) usleep(10000);
        close(gate[1]);
    }
    int bad = 0;
    for (long t = 0; t < n; t++) {
        void *r;
        pthread_join(th[t], &r);
        if (r) bad = 1;
    }
    printf("threads %d done\n", n);
    return bad;
}
