/* The program's own SIGSEGV handler must keep working under the tracer: a guard page is
 * touched, the handler siglongjmps back. Device accesses before and after are traced.
 * With argv[2] = "crash", it dereferences a bad pointer with no handler and dies of
 * SIGSEGV, as it would without the tracer. */
#include "mmio.h"
#include <setjmp.h>
#include <signal.h>
#include <string.h>

static sigjmp_buf env;
static volatile void *fault_addr;

static void on_segv(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)uc;
    fault_addr = si->si_addr;
    siglongjmp(env, 1);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    uint8_t *bar = map_device(argv[1], 4096);
    if (argc > 2 && strcmp(argv[2], "crash") == 0) {
        wr32(bar, 1);
        rd32((void *)16);
        return 0;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    /* Our own handler must be reported back as installed. */
    struct sigaction cur;
    sigaction(SIGSEGV, NULL, &cur);
    if (cur.sa_sigaction != on_segv) return 3;

    uint8_t *guard = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    wr32(bar + 4, 0x11);
    int recovered = 0;
    if (sigsetjmp(env, 1) == 0) {
        rd32(guard + 8);
    } else {
        recovered = (fault_addr == guard + 8);
    }
    /* A second time: the handler stays installed (no SA_RESETHAND). */
    if (sigsetjmp(env, 1) == 0) {
        wr32(guard, 1);
    } else {
        recovered += (fault_addr == guard);
    }
    wr32(bar + 4, 0x22);
    printf("recovered=%d\n", recovered);
    return recovered == 2 ? 0 : 4;
}
