/* The step fallback with other threads running: thread A makes K accesses the emulator
 * does not do (crc32 with a memory operand; each pauses the other threads and single-
 * steps), while thread B, with all signals blocked, writes 0..N-1 to its own register.
 * Nothing may be lost. */
#include "mmio.h"
#include <pthread.h>
#include <signal.h>

static uint8_t *bar;
static long k_steps, n_writes;

static void *stepper(void *arg) {
    (void)arg;
    uint32_t crc = 0;
    for (long i = 0; i < k_steps; i++) __asm__ volatile("crc32l 0x100(%1), %0" : "+r"(crc) : "r"(bar) : "memory");
    return (void *)(uintptr_t)crc;
}

static void *writer(void *arg) {
    (void)arg;
    /* Like a signal-handling thread: everything blocked. The tracer's pause signal must
     * still get through, or every step would wait for it in vain. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    for (long i = 0; i < n_writes; i++) wr32(bar, (uint32_t)i);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    bar = map_device(argv[1], 4096);
    k_steps = atol(argv[2]);
    n_writes = atol(argv[3]);
    pthread_t a, b;
    pthread_create(&a, NULL, stepper, NULL);
    pthread_create(&b, NULL, writer, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    return rd32(bar) == (uint32_t)(n_writes - 1) ? 0 : 3;
}
