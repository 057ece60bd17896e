/* A signal handler that touches the device through the same sites as the loop it
 * interrupts (so it runs inside a trampoline's window once they are patched).
 * Main loop, iteration i:  W4 REG0 = i (site st),  R4 REG0 (site ld, must be i).
 * SIGALRM every 100 us (setitimer): the handler reads REG0 (site ld) and writes
 * 0x80000000 | that value to REG1 (site st).
 * Each iteration also does about 200 ns of ordinary work, so that a patched loop does not
 * log millions of events while it waits for the handler runs. The loop runs at least MIN
 * iterations and until HANDLERS handler runs (at most 20 s).
 * REG0 is at 0x0, REG1 at 0x40. Prints the wrong values main read (0); the number of
 * iterations and handler runs go to stderr (they depend on timing).
 *
 * usage: patch_signal DEVICE MIN HANDLERS */
#define _GNU_SOURCE
#include "mmio.h"
#include <signal.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

__attribute__((noinline, noclone)) static void st(volatile void *p, uint32_t v) {
    __asm__ volatile(".byte 0x89, 0x07" : : "a"(v), "D"(p) : "memory"); /* mov %eax,(%rdi) */
}
__attribute__((noinline, noclone)) static uint32_t ld(volatile void *p) {
    uint32_t v;
    __asm__ volatile(".byte 0x8b, 0x07" : "=a"(v) : "D"(p) : "memory"); /* mov (%rdi),%eax */
    return v;
}

static uint8_t *dev;
static volatile long handled;

static void on_alarm(int sig) {
    (void)sig;
    uint32_t h = ld(dev);
    st(dev + 0x40, 0x80000000u | h);
    handled++;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    long min = atol(argv[2]), want = atol(argv[3]);
    dev = map_device(argv[1], 4096);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 100}, {0, 100}};
    setitimer(ITIMER_REAL, &it, NULL);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long bad = 0, i;
    for (i = 0;; i++) {
        st(dev, (uint32_t)i);
        if (ld(dev) != (uint32_t)i) bad++;
        for (volatile int w = 0; w < 300; w++) {
        }
        if (i + 1 >= min && handled >= want) break;
        if (i % 1024 == 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec - t0.tv_sec >= 20 && i + 1 >= min) break;
        }
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("main read %ld wrong values\n", bad);
    fprintf(stderr, "patch_signal: %ld iterations, %ld handler runs\n", i + 1, handled);
    return 0;
}
