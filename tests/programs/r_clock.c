/* Writes i to register 0x10 for i in 0..N, printing CLOCK_MONOTONIC (ns) taken just before
 * and just after each write; with a third argument (the mmio-trace executable), asks the
 * recorder (its parent) for a marker "wI" through `mmio-trace mark --pid` after each write.
 * Also has a 50 us interval timer whose handler reads register 0x20 while the main loop
 * inserts markers with mmio_trace_mark (normal context) between the writes. */
#include "mmio.h"
#include <dlfcn.h>
#include <signal.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
static uint8_t *bar;
static volatile unsigned long ticks;
static void on_alarm(int s) { (void)s; (void)rd32(bar + 0x20); ticks++; }
static unsigned long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (unsigned long long)t.tv_sec * 1000000000ull + (unsigned long long)t.tv_nsec;
}
int main(int argc, char **argv) {
    bar = map_device(argv[1], 4096);
    long n = atol(argv[2]);
    void (*mark)(const char *) = (void (*)(const char *))dlsym(RTLD_DEFAULT, "mmio_trace_mark");
    if (!mark) return 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    for (long i = 0; i < n; i++) {
        unsigned long long a = now();
        wr32(bar + 0x10, (uint32_t)i);
        unsigned long long b = now();
        printf("%llu %llu\n", a, b);
        fflush(stdout);
        if (argc > 3) {
            char cmd[4096];
            snprintf(cmd, sizeof cmd, "'%s' mark --pid %d w%ld", argv[3], (int)getppid(), i);
            if (system(cmd) != 0) return 3;
        }
        /* Markers from normal context, interrupted by the timer's device reads. */
        struct itimerval it = { {0, 50}, {0, 50} };
        setitimer(ITIMER_REAL, &it, NULL);
        for (int k = 0; k < 2000; k++) mark("m");
        struct itimerval off = { {0, 0}, {0, 0} };
        setitimer(ITIMER_REAL, &off, NULL);
    }
    fprintf(stderr, "ticks %lu\n", ticks);
    return 0;
}
