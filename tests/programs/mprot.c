/* The program's own mprotect and mremap on traced memory: a page it made read-only still
 * faults for it on a write (its own handler sees the fault), and a mapping moved and grown
 * with mremap stays traced. */
#include "mmio.h"
#include <setjmp.h>
#include <signal.h>
#include <string.h>

static sigjmp_buf env;
static void *fault_addr;

static void on_segv(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)uc;
    fault_addr = si->si_addr;
    siglongjmp(env, 1);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    uint8_t *bar = map_device(argv[1], 8192);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);

    wr32(bar, 1);
    if (mprotect(bar, 8192, PROT_READ) != 0) return 3;
    uint32_t v = rd32(bar);
    int denied = 0;
    if (sigsetjmp(env, 1) == 0) {
        wr32(bar, 0xbad);
    } else {
        denied = fault_addr == bar;
    }
    if (mprotect(bar, 8192, PROT_READ | PROT_WRITE) != 0) return 4;
    wr32(bar, 2);
    uint8_t *moved = mremap(bar, 8192, 16384, MREMAP_MAYMOVE);
    if (moved == MAP_FAILED) return 5;
    wr32(moved + 0x10, 3);
    uint32_t w = rd32(moved + 0x2000);
    printf("v=%x denied=%d w=%x\n", v, denied, w);
    return denied ? 0 : 6;
}
