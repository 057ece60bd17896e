/* The program's own SIGSEGV handler under the ptrace route: one installed before the
 * device is mapped, one installed after traced accesses began. Each time a PROT_NONE
 * page of the program's own is touched; the handler saves si_addr and siglongjmps back.
 * Device accesses around them are traced. Prints whether each handler saw its address. */
#include "mmio.h"
#include <setjmp.h>
#include <signal.h>
#include <string.h>

static sigjmp_buf env;
static void *volatile seen;
static volatile int which;

static void first(int sig, siginfo_t *si, void *uc) { (void)sig; (void)uc; seen = si->si_addr; which = 1; siglongjmp(env, 1); }
static void second(int sig, siginfo_t *si, void *uc) { (void)sig; (void)uc; seen = si->si_addr; which = 2; siglongjmp(env, 1); }

static void install(void (*h)(int, siginfo_t *, void *)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = h;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    install(first);
    uint8_t *guard = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t *bar = map_device(argv[1], 4096);
    wr32(bar + 0x10, 1);
    int ok1 = 0, ok2 = 0;
    if (!sigsetjmp(env, 1)) rd32(guard + 0x24);
    else ok1 = seen == guard + 0x24 && which == 1;
    wr32(bar + 0x10, 2);
    install(second);
    if (!sigsetjmp(env, 1)) wr32(guard + 0x38, 5);
    else ok2 = seen == guard + 0x38 && which == 2;
    wr32(bar + 0x10, rd32(bar + 0x10) + 1);
    printf("first=%d second=%d\n", ok1, ok2);
    return ok1 && ok2 ? 0 : 1;
}
