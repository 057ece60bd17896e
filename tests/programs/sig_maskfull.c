/* A SIGUSR1 handler installed with sa_mask = all signals (idiomatic) reads a device register. */
#include "mmio.h"
#include <signal.h>
#include <string.h>
static uint8_t *bar;
static volatile uint32_t got;
static void on_usr1(int sig) { (void)sig; got = rd32(bar + 8); }
int main(int argc, char **argv) {
    bar = map_device(argv[1], 4096);
    struct sigaction sa; memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1; sigfillset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    /* The program sees the mask it asked for. */
    struct sigaction cur; sigaction(SIGUSR1, NULL, &cur);
    if (!sigismember(&cur.sa_mask, SIGSEGV) || !sigismember(&cur.sa_mask, SIGTRAP)) return 3;
    raise(SIGUSR1);
    printf("handler read %#x\n", got);
    return 0;
}
