/* THREADS threads, each ITERS times: `rep stosq` of 64 quadwords (thread << 32 | i) into
 * its own 0x1000-byte part of the device, then `rep movsq` of them back into its own
 * ordinary buffer, which it checks. Prints "ok" when every copy was right.
 * Usage: strings_threads DEV THREADS ITERS */
#include "mmio.h"
#include <pthread.h>

static uint8_t *dev;
static long iters;
static int bad;

static void *run(void *arg) {
    long t = (long)arg;
    uint64_t buf[64];
    for (long i = 0; i < iters; i++) {
        void *d = dev + t * 0x1000, *s;
        uint64_t c = 64, v = (uint64_t)t << 32 | (uint64_t)i;
        __asm__ volatile("rep stosq" : "+D"(d), "+c"(c) : "a"(v) : "memory");
        d = buf;
        s = dev + t * 0x1000;
        c = 64;
        __asm__ volatile("rep movsq" : "+D"(d), "+S"(s), "+c"(c) : : "memory");
        for (int k = 0; k < 64; k++)
            if (buf[k] != v) __atomic_store_n(&bad, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: strings_threads DEV THREADS ITERS\n"); return 2; }
    int n = atoi(argv[2]);
    iters = atol(argv[3]);
    dev = map_device(argv[1], 16 * 0x1000);
    pthread_t th[16];
    for (long t = 0; t < n && t < 16; t++) pthread_create(&th[t], NULL, run, (void *)t);
    for (int t = 0; t < n && t < 16; t++) pthread_join(th[t], NULL);
    printf(bad ? "bad\n" : "ok\n");
    return bad;
}
