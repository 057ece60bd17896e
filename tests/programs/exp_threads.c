/* Exports' recorded program: the main thread and two workers access a device (argv[1])
 * with every width (1, 2, 4, 8 and a 16-byte SSE store and load), with a marker
 * between; each worker has its own registers. Exit 0. */
#include "mmio.h"
#include <dlfcn.h>
#include <pthread.h>

static uint8_t *bar;

static void *worker(void *arg) {
    long t = (long)arg;
    uint8_t *r = bar + 0x100 * t;
    for (uint32_t i = 0; i < 5; i++) wr32(r + 0x4, (uint32_t)(t * 1000 + i));
    wr8(r + 0x8, (uint8_t)(0x50 + t));
    wr16(r + 0xa, (uint16_t)(0x1200 + t));
    wr64(r + 0x10, 0x1122334455667700ull + (uint64_t)t);
    (void)rd32(r + 0x4);
    (void)rd8(r + 0x8);
    (void)rd16(r + 0xa);
    (void)rd64(r + 0x10);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    void (*mark)(const char *) = (void (*)(const char *))dlsym(RTLD_DEFAULT, "mmio_trace_mark");
    bar = map_device(argv[1], 4096);
    wr32(bar, 0xabcd0001);
    if (mark) mark("workers start");
    pthread_t th[2];
    for (long t = 0; t < 2; t++)
        if (pthread_create(&th[t], NULL, worker, (void *)(t + 1))) return 3;
    for (long t = 0; t < 2; t++) pthread_join(th[t], NULL);
    if (mark) mark("workers done");
    /* 16 bytes: all ones, stored and read back. */
    __asm__ volatile("pcmpeqd %%xmm0, %%xmm0\n\tmovdqu %%xmm0, 0x30(%0)\n\tmovdqu 0x30(%0), %%xmm1"
                     :: "r"(bar) : "xmm0", "xmm1", "memory");
    (void)rd32(bar);
    munmap(bar, 4096);
    return 0;
}
