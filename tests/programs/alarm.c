/* Asynchronous signals while tracing: a 200 us interval timer whose handler writes a
 * counter to register 0x20, while the main loop writes 0..N-1 (argv[2]) to register 0.
 * Prints how many times the handler ran. */
#include "mmio.h"
#include <signal.h>
#include <string.h>
#include <sys/time.h>

static uint8_t *bar;
static volatile uint32_t ticks;

static void on_alarm(int sig) {
    (void)sig;
    wr32(bar + 0x20, ticks);
    ticks++;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    bar = map_device(argv[1], 4096);
    long n = atol(argv[2]);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = { {0, 200}, {0, 200} };
    setitimer(ITIMER_REAL, &it, NULL);
    for (long i = 0; i < n; i++) wr32(bar, (uint32_t)i);
    struct itimerval off = { {0, 0}, {0, 0} };
    setitimer(ITIMER_REAL, &off, NULL);
    printf("%u\n", ticks);
    return 0;
}
