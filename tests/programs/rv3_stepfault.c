/* Faults of single-stepped instructions reach the program's own handlers, which leave
 * with siglongjmp, while a writer thread writes 0..N-1 to its register:
 *  - `divl 0x100(bar)` of EDX:EAX = 0xffffffff00000000 by the register (0x1040: the
 *    quotient overflows; the emulator does not do DIV: it is stepped) raises SIGFPE;
 *  - `crc32l` at bar+4094 straddles into an unmapped page: SIGSEGV (MAPERR) mid-step.
 * Each must end the step (pages closed, other threads released, the step lock free): the
 * writer's writes and K later steps (crc32 at 0x100) must all be traced. */
#include "mmio.h"
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>

static uint8_t *bar;
static long n_writes;
static sigjmp_buf env;

static void on_fault(int sig) { siglongjmp(env, sig); }

static void *writer(void *arg) {
    (void)arg;
    for (long i = 0; i < n_writes; i++) wr32(bar, (uint32_t)i);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    long faults = atol(argv[2]), k_steps = atol(argv[3]);
    n_writes = atol(argv[4]);
    /* The device page with an unmapped page right after it. */
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) return 100;
    uint8_t *area = mmap(NULL, 8192, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED) return 100;
    bar = mmap(area, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    if (bar != area || munmap(area + 4096, 4096) != 0) return 100;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fault;
    sigaction(SIGFPE, &sa, NULL);
    sigaction(SIGSEGV, &sa, NULL);
    pthread_t b;
    pthread_create(&b, NULL, writer, NULL);
    long fpe = 0, segv = 0;
    for (long i = 0; i < faults; i++) {
        int got = sigsetjmp(env, 1);
        if (got == 0) {
            uint32_t lo = 0, hi = 0xffffffffu;
            __asm__ volatile("divl 0x100(%2)" : "+a"(lo), "+d"(hi) : "r"(bar) : "memory", "cc");
            return 4; /* the quotient overflows: the division must fault */
        }
        if (got == SIGFPE) fpe++;
    }
    for (long i = 0; i < faults; i++) {
        int got = sigsetjmp(env, 1);
        if (got == 0) {
            uint32_t crc = 0;
            __asm__ volatile("crc32l 4094(%1), %0" : "+r"(crc) : "r"(bar) : "memory");
            return 5;
        }
        if (got == SIGSEGV) segv++;
    }
    uint32_t crc = 0;
    for (long i = 0; i < k_steps; i++) __asm__ volatile("crc32l 0x100(%1), %0" : "+r"(crc) : "r"(bar) : "memory");
    pthread_join(b, NULL);
    if (fpe != faults || segv != faults) return 6;
    return rd32(bar) == (uint32_t)(n_writes - 1) ? 0 : 3;
}
