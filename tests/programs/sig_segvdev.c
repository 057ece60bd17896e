/* The program's own SIGSEGV handler (no SA_NODEFER) touches a device register, e.g. to
 * quiesce the device on a crash, then exits 7. With argv[2] = "nested", the handler then
 * faults for real itself: SIGSEGV is blocked there, so the kernel kills the program. */
#include "mmio.h"
#include <signal.h>
#include <string.h>
static uint8_t *bar;
static int nested;
static void on_segv(int sig) {
    (void)sig;
    wr32(bar + 4, 0xdead);
    if (nested) *(volatile int *)24 = 1;
    printf("handler wrote reset reg\n"); fflush(stdout);
    _exit(7);
}
int main(int argc, char **argv) {
    bar = map_device(argv[1], 4096);
    nested = argc > 2 && !strcmp(argv[2], "nested");
    struct sigaction sa; memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_segv;
    sigaction(SIGSEGV, &sa, NULL);
    *(volatile int *)16 = 1; /* a genuine crash */
    return 0;
}
