/* Main loop inserts N markers (mmio_trace_mark, normal context) while a 200 us interval
 * timer's handler writes a counter to a device register: both go to the same thread's ring. */
#include "mmio.h"
#include <dlfcn.h>
#include <signal.h>
#include <string.h>
#include <sys/time.h>
static uint8_t *bar; static volatile uint32_t ticks;
static void on_alarm(int s) { (void)s; wr32(bar + 0x20, ticks); ticks++; }
int main(int argc, char **argv) {
    (void)argc;
    bar = map_device(argv[1], 4096);
    void (*mark)(const char *) = (void (*)(const char *))dlsym(RTLD_DEFAULT, "mmio_trace_mark");
    if (!mark) return 2;
    struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_handler = on_alarm; sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = { {0, 200}, {0, 200} }; setitimer(ITIMER_REAL, &it, NULL);
    long n = atol(argv[2]);
    for (long i = 0; i < n; i++) mark("m");
    struct itimerval off = { {0, 0}, {0, 0} }; setitimer(ITIMER_REAL, &off, NULL);
    printf("%u\n", ticks); return 0;
}
