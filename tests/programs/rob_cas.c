/* Locked read-modify-writes against another thread's plain stores. T1 spins on a LOCK
 * CMPXCHG whose expected value never matches (the CPU writes the current value back
 * atomically: a no-op for every other thread). The main thread is the only writer of the
 * word: it stores i and reads it back. Natively every read-back is i. Prints the count of
 * lost stores (0). Usage: rob_cas DEV N */
#include "mmio.h"
#include <pthread.h>
static uint8_t *bar;
static volatile int stop, started;
static void *t1(void *a) {
    (void)a;
    long k = 0;
    while (!stop) {
        uint32_t exp = 0xffffffffu, nv = 0x5555;
        __asm__ volatile("lock cmpxchgl %2, (%1)" : "+a"(exp) : "r"(bar), "r"(nv) : "memory", "cc");
        k++;
        started = 1;
    }
    return (void *)k;
}
int main(int argc, char **argv) {
    bar = map_device(argv[1], 4096);
    long n = atol(argv[2]);
    pthread_t t;
    pthread_create(&t, NULL, t1, NULL);
    while (!started) {}
    long bad = 0;
    for (long i = 1; i <= n; i++) {
        wr32(bar, (uint32_t)i);
        if (rd32(bar) != (uint32_t)i) bad++;
    }
    stop = 1;
    pthread_join(t, NULL);
    printf("stores %ld lost %ld\n", n, bad);
    return bad != 0;
}
