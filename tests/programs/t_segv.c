/* t_segv DEV: the program's own SIGSEGV handlers. Installs handler 1 before it maps DEV
 * and faults on a PROT_NONE page of its own; maps DEV and writes and reads a register;
 * installs handler 2 and faults on another of its own pages; reads the register again.
 * Each handler records si_addr and which handler ran, and jumps back. Prints
 * "h1 ADDR EXPECTED h2 ADDR EXPECTED reg VALUE"; exits with status 0 when every address
 * is exact and each fault reached its own handler, else 1. */
#include "mmio.h"
#include <setjmp.h>
#include <signal.h>
#include <string.h>

static sigjmp_buf jb;
static void *volatile seen_addr;
static volatile int seen_by;

static void h1(int sig, siginfo_t *si, void *uc) { (void)sig; (void)uc; seen_addr = si->si_addr; seen_by = 1; siglongjmp(jb, 1); }
static void h2(int sig, siginfo_t *si, void *uc) { (void)sig; (void)uc; seen_addr = si->si_addr; seen_by = 2; siglongjmp(jb, 1); }

static void install(void (*h)(int, siginfo_t *, void *)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = h;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0) exit(100);
}

/* Faults at `p` (a write); returns which handler saw it and where. */
static int fault_at(uint8_t *p, void **where) {
    seen_by = 0;
    seen_addr = 0;
    if (sigsetjmp(jb, 1) == 0) wr32(p, 1);
    *where = seen_addr;
    return seen_by;
}

int main(int argc, char **argv) {
    if (argc < 2) return 100;
    uint8_t *own = mmap(NULL, 3 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (own == MAP_FAILED) return 100;
    install(h1);
    void *a1, *a2;
    int by1 = fault_at(own + 0x123, &a1);
    uint8_t *d = map_device(argv[1], 4096);
    wr32(d + 0x30, 0x77);
    uint32_t v1 = rd32(d + 0x30);
    install(h2);
    int by2 = fault_at(own + 2 * 4096 + 0x8, &a2);
    uint32_t v2 = rd32(d + 0x30);
    printf("h%d %p %p h%d %p %p reg %x %x\n", by1, a1, (void *)(own + 0x123), by2, a2,
           (void *)(own + 2 * 4096 + 0x8), v1, v2);
    return !(by1 == 1 && a1 == own + 0x123 && by2 == 2 && a2 == own + 2 * 4096 + 0x8);
}
