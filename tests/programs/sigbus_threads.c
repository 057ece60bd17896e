/* A device removed while two threads use it: a writer thread writes 0..N-1 to a register
 * of the page still there, while the main thread faults K times on the gone page (its
 * SIGBUS handler leaves with siglongjmp). Every write must be traced, in order, the
 * register must end as N-1, and each fault must reach the program.
 * Usage: sigbus_threads DEV K N */
#include "mmio.h"
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>

#define PAGE 4096
static uint8_t *bar;
static long n_writes;
static sigjmp_buf env;
static volatile uintptr_t fault_off;

static void on_bus(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    fault_off = (uintptr_t)si->si_addr - (uintptr_t)bar;
    siglongjmp(env, 1);
}

static void *writer(void *arg) {
    (void)arg;
    for (long i = 0; i < n_writes; i++) wr32(bar + 0x10, (uint32_t)i);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    long k = atol(argv[2]);
    n_writes = atol(argv[3]);
    int fd = open(argv[1], O_RDWR);
    if (fd < 0 || ftruncate(fd, 2 * PAGE) != 0) return 100;
    bar = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (bar == MAP_FAILED || ftruncate(fd, PAGE) != 0) return 100;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_bus;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGBUS, &sa, NULL);
    pthread_t w;
    pthread_create(&w, NULL, writer, NULL);
    long faults = 0, bad = 0;
    for (long i = 0; i < k; i++) {
        if (sigsetjmp(env, 1)) {
            faults++;
            if (fault_off != PAGE + 0x20 + 8 * (i % 8)) bad++;
            continue;
        }
        rd32(bar + PAGE + 0x20 + 8 * (i % 8));
    }
    pthread_join(w, NULL);
    printf("faults %ld bad %ld last %#x\n", faults, bad, rd32(bar + 0x10));
    return 0;
}
