/* A POSIX timer with SIGEV_THREAD notification (glibc runs the callback in threads it
 * creates itself, with every signal blocked); the callback writes a counter to a device
 * register. Stops after 5 callbacks. A late callback can overlap the next one on a
 * busy machine: the lock keeps each count written once, in order. */
#include "mmio.h"
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
static uint8_t *bar; static volatile uint32_t n;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static void tick(union sigval v) {
    (void)v;
    pthread_mutex_lock(&lock);
    if (n < 5) { wr32(bar + 0x10, n); n++; }
    pthread_mutex_unlock(&lock);
}
int main(int argc, char **argv) {
    (void)argc;
    bar = map_device(argv[1], 4096);
    struct sigevent ev; memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD; ev.sigev_notify_function = tick;
    timer_t t; if (timer_create(CLOCK_MONOTONIC, &ev, &t)) { perror("timer_create"); return 2; }
    struct itimerspec its = {{0, 2000000}, {0, 2000000}}; timer_settime(t, 0, &its, NULL);
    while (n < 5) usleep(1000);
    struct itimerspec off = {{0,0},{0,0}}; timer_settime(t, 0, &off, NULL); usleep(20000);
    printf("%u\n", n); return 0;
}
