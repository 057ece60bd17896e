/* Device mappings and signal state set with inline `syscall` instructions (no libc
 * function at all, as a static system-call crate or a runtime of its own would), in a
 * dynamically linked program: the preload route must see them all.
 *
 * usage: lead_inline DEVICE
 *   1. mmap (inline) the device read-write, W32 +0x10 = 0x1234, R32 +0x10;
 *   2. mremap (inline) it to a new address (MREMAP_MAYMOVE|MREMAP_FIXED onto a reserved
 *      spot), W32 +0x14 = 0x5678;
 *   3. mprotect (inline) read-only: R32 +0x14; back read-write: W32 +0x18 = 0x9abc;
 *   4. rt_sigaction (inline) of SIGSEGV with its own handler, rt_sigprocmask (inline)
 *      blocking SIGSEGV: a device access still works (W32 +0x1c = 0xdef0), the unblock,
 *      then a fault of its own (a PROT_NONE page of its own) reaches its handler;
 *   5. a second thread maps the device again (inline) and writes +0x20 = 0x2222;
 *   6. munmap (inline) of both mappings, then anonymous memory mapped (inline, MAP_FIXED)
 *      at the first one's address: its writes stay its own.
 * Prints "ok own-fault 1 heap 0x77777777" and exits 0 when all held, else a step number. */
#define _GNU_SOURCE
#include "mmio.h"
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>

static long raw6(long n, long a, long b, long c, long d, long e, long f) {
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return r;
}

struct ksigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    uint64_t mask;
};

void inline_restore(void);
__asm__(".text\n.globl inline_restore\ninline_restore:\n mov $15, %eax\n syscall\n hlt\n");

static int fd;
static void *page;
static volatile int own_fault;

static void on_segv(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    if (si->si_addr != page || own_fault++ > 10) _exit(40);
    raw6(SYS_mprotect, (long)page, 4096, PROT_READ, 0, 0, 0);
}

static void *second(void *arg) {
    (void)arg;
    uint8_t *d = (uint8_t *)raw6(SYS_mmap, 0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if ((long)d < 0) return (void *)50;
    wr32(d + 0x20, 0x2222);
    if (raw6(SYS_munmap, (long)d, 4096, 0, 0, 0, 0) != 0) return (void *)51;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    fd = open(argv[1], O_RDWR);
    if (fd < 0) return 3;
    uint8_t *d = (uint8_t *)raw6(SYS_mmap, 0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if ((long)d < 0) return 10;
    wr32(d + 0x10, 0x1234);
    if (rd32(d + 0x10) != 0x1234) return 11;
    void *spot = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t *m = (uint8_t *)raw6(SYS_mremap, (long)d, 4096, 4096, MREMAP_MAYMOVE | MREMAP_FIXED, (long)spot, 0);
    if (m != spot) return 20;
    wr32(m + 0x14, 0x5678);
    if (raw6(SYS_mprotect, (long)m, 4096, PROT_READ, 0, 0, 0) != 0) return 21;
    if (rd32(m + 0x14) != 0x5678) return 22;
    if (raw6(SYS_mprotect, (long)m, 4096, PROT_READ | PROT_WRITE, 0, 0, 0) != 0) return 23;
    wr32(m + 0x18, 0x9abc);
    struct ksigaction a = {(void *)on_segv, SA_SIGINFO | 0x04000000, (void *)inline_restore, 0};
    if (raw6(SYS_rt_sigaction, SIGSEGV, (long)&a, 0, 8, 0, 0) != 0) return 30;
    uint64_t block = 1ull << (SIGSEGV - 1);
    if (raw6(SYS_rt_sigprocmask, SIG_BLOCK, (long)&block, 0, 8, 0, 0) != 0) return 31;
    wr32(m + 0x1c, 0xdef0);
    if (raw6(SYS_rt_sigprocmask, SIG_UNBLOCK, (long)&block, 0, 8, 0, 0) != 0) return 32;
    page = (void *)raw6(SYS_mmap, 0, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    volatile uint8_t *p = page;
    (void)*p;
    if (own_fault != 1) return 33;
    pthread_t t;
    void *r;
    if (pthread_create(&t, NULL, second, NULL) || pthread_join(t, &r) || r) return 50;
    if (raw6(SYS_munmap, (long)m, 4096, 0, 0, 0, 0) != 0) return 60;
    uint32_t *heap = (uint32_t *)raw6(SYS_mmap, (long)m, 4096, PROT_READ | PROT_WRITE,
                                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if ((void *)heap != (void *)m) return 61;
    heap[0x10 / 4] = 0x77777777;
    if (raw6(SYS_mprotect, (long)heap, 4096, PROT_READ | PROT_WRITE, 0, 0, 0) != 0) return 62;
    heap[0x10 / 4] = 0x77777777;
    if (heap[0x10 / 4] != 0x77777777) return 63;
    printf("ok own-fault %d heap %#x\n", own_fault, heap[0x10 / 4]);
    return 0;
}
