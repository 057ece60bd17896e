/* A program that sets its SIGSEGV handler and signal mask by raw system calls
 * (syscall(SYS_rt_sigaction / SYS_rt_sigprocmask), the kernel's structures).
 *
 * usage: lead_rawsig DEVICE
 * Installs its handler, blocks SIGSEGV, maps the device and writes/reads +0x40, then
 * touches a PROT_NONE page of its own: its handler must see that fault (si_addr exact)
 * and make the page readable. Reads back its handler with a raw rt_sigaction and its
 * mask with a raw rt_sigprocmask. Exit 0 when everything held, else the failed check. */
#include "mmio.h"
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>

struct ksigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    uint64_t mask;
};

void lead_restore(void);
__asm__(".text\n.globl lead_restore\nlead_restore:\n mov $15, %eax\n syscall\n hlt\n");

static void *page;
static volatile void *seen;

static void on_segv(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    static int calls;
    /* Faults that are not its own (the tracer's handler gone): end instead of looping. */
    if (++calls > 100) _exit(20);
    seen = si->si_addr;
    mprotect(page, 4096, PROT_READ);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    struct ksigaction a = {(void *)on_segv, SA_SIGINFO | 0x04000000, (void *)lead_restore, 0};
    if (syscall(SYS_rt_sigaction, SIGSEGV, &a, NULL, 8) != 0) return 10;
    uint64_t block = 1ull << (SIGSEGV - 1), old = 0;
    if (syscall(SYS_rt_sigprocmask, SIG_BLOCK, &block, &old, 8) != 0) return 11;
    uint8_t *dev = map_device(argv[1], 4096);
    wr32(dev + 0x40, 0xcafe);
    uint32_t v = rd32(dev + 0x40);
    if (syscall(SYS_rt_sigprocmask, SIG_UNBLOCK, &block, NULL, 8) != 0) return 12;
    page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    volatile uint8_t *p = (uint8_t *)page + 0x123;
    uint8_t x = *p;
    if (seen != p) return 13;
    struct ksigaction q;
    memset(&q, 0, sizeof q);
    if (syscall(SYS_rt_sigaction, SIGSEGV, NULL, &q, 8) != 0) return 14;
    if (q.handler != (void *)on_segv || !(q.flags & SA_SIGINFO)) return 15;
    if (syscall(SYS_rt_sigaction, SIGSEGV, NULL, &q, 4) != -1) return 16;
    uint64_t now = 0;
    if (syscall(SYS_rt_sigprocmask, SIG_BLOCK, NULL, &now, 8) != 0) return 17;
    printf("value %#x, own fault handled, byte %u, segv blocked %d\n", v, x,
           (int)((now >> (SIGSEGV - 1)) & 1));
    return 0;
}
