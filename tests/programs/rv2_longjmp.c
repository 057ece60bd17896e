/* Threads that each catch many NULL reads with sigsetjmp/siglongjmp from a SIGSEGV
 * handler (the handler is left by a jump, never returns), in several waves so that
 * thread stacks land near earlier threads' alternate signal stacks. Every catch must
 * reach the handler: a stale "inside the handler" state would make a later fault fatal.
 * Prints the number of catches; writes the total to the device at the end. */
#include "mmio.h"
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#define THREADS 16
#define CATCHES 50
#define WAVES 16
static __thread sigjmp_buf jb;
static void on_segv(int s) { (void)s; siglongjmp(jb, 1); }
static int probe(volatile int *p) { if (sigsetjmp(jb, 1)) return 1; (void)*p; return 0; }
static void *worker(void *a) {
    long ok = 0;
    for (int i = 0; i < CATCHES; i++) ok += probe((int *)16);
    return (void *)ok;
}
int main(int argc, char **argv) {
    (void)argc;
    uint8_t *dev = map_device(argv[1], 4096);
    struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_handler = on_segv;
    sigaction(SIGSEGV, &sa, 0);
    long total = 0;
    for (int w = 0; w < WAVES; w++) {
        pthread_t t[THREADS];
        for (int i = 0; i < THREADS; i++) pthread_create(&t[i], 0, worker, 0);
        for (int i = 0; i < THREADS; i++) { void *r; pthread_join(t[i], &r); total += (long)r; }
    }
    total += (long)worker(0);
    wr32(dev, (uint32_t)total);
    printf("%ld\n", total);
    return 0;
}
