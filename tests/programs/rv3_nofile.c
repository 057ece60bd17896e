/* The step fallback when the program has no free file descriptor: a writer thread writes
 * 0..N-1 to its register while the main thread, at its RLIMIT_NOFILE (opened files until
 * EMFILE), makes K accesses the emulator does not do (crc32 with a memory operand; each is
 * single-stepped with the other threads paused). Pausing them must not need a new
 * descriptor: nothing of the writer may be lost. */
#include "mmio.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

static uint8_t *bar;
static long n_writes;

static void *writer(void *arg) {
    (void)arg;
    for (long i = 0; i < n_writes; i++) wr32(bar, (uint32_t)i);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    bar = map_device(argv[1], 4096);
    long k_steps = atol(argv[2]);
    n_writes = atol(argv[3]);
    pthread_t b;
    pthread_create(&b, NULL, writer, NULL);
    struct rlimit rl = {64, 64};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) return 4;
    int opened = 0;
    for (;;) {
        int fd = open("/dev/null", O_RDONLY);
        if (fd < 0) {
            if (errno != EMFILE) return 5;
            break;
        }
        opened++;
    }
    if (opened == 0) return 6;
    uint32_t crc = 0;
    for (long i = 0; i < k_steps; i++) __asm__ volatile("crc32l 0x100(%1), %0" : "+r"(crc) : "r"(bar) : "memory");
    pthread_join(b, NULL);
    return rd32(bar) == (uint32_t)(n_writes - 1) ? 0 : 3;
}
