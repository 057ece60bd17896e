/* A tiny user-space driver for QEMU's `edu` PCI device, used by scripts/vm-test to
 * check `mmio-trace record` on a real BAR (VM_PFNMAP|VM_IO, reads with effects).
 *
 *   edu_driver RESOURCE0 [--threads] [--mremap] [--wait-ms N]
 *
 * Prints every answer the device gives, one per line, so that the output with and
 * without the tracer can be compared, and the trace checked against it:
 *   id 0x010000ed                  read of 0x00 (identification)
 *   live 0x12345678 0xedcba987     write of 0x04, read back (the device complements)
 *   fact 5 120                     write 0x08, poll status 0x20 bit 0, read 0x08
 * With --threads, two threads each do 50 liveness round trips under a lock (so each
 * write/read pair stays together) with values that name the thread.
 * With --mremap, the mapping is moved with mremap(MREMAP_MAYMOVE|MREMAP_FIXED)
 * before the factorial (the kernel refuses to grow BAR mappings, but moves them).
 * With --wait-ms N, it sleeps N ms between mapping the BAR and its first access (time
 * for `mmio-trace record --pid` to attach to an existing mapping).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile uint32_t *bar;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static uint32_t rd(unsigned off) { return bar[off / 4]; }
static void wr(unsigned off, uint32_t v) { bar[off / 4] = v; }

static void live(uint32_t v) {
    wr(0x04, v);
    uint32_t r = rd(0x04);
    printf("live 0x%08x 0x%08x\n", v, r);
}

static void *worker(void *arg) {
    uint32_t t = (uint32_t)(uintptr_t)arg;
    for (uint32_t i = 0; i < 50; i++) {
        pthread_mutex_lock(&lock);
        live((t << 24) | i);
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s RESOURCE0 [--threads] [--mremap] [--wait-ms N]\n", argv[0]);
        return 2;
    }
    int threads = 0, move = 0, wait_ms = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--threads")) threads = 1;
        else if (!strcmp(argv[i], "--mremap")) move = 1;
        else if (!strcmp(argv[i], "--wait-ms") && i + 1 < argc) wait_ms = atoi(argv[++i]);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int fd = open(argv[1], O_RDWR | O_SYNC);
    if (fd < 0) { perror(argv[1]); return 1; }
    void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) { perror("mmap"); return 1; }
    bar = m;
    if (wait_ms > 0) usleep((useconds_t)wait_ms * 1000);

    printf("id 0x%08x\n", rd(0x00));
    live(0x12345678);
    if (threads) {
        pthread_t a, b;
        pthread_create(&a, NULL, worker, (void *)1);
        pthread_create(&b, NULL, worker, (void *)2);
        pthread_join(a, NULL);
        pthread_join(b, NULL);
    }
    if (move) {
        /* A fresh spot to move to: reserve it, then move the BAR mapping over it. */
        void *to = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        void *moved = mremap(m, 4096, 4096, MREMAP_MAYMOVE | MREMAP_FIXED, to);
        if (moved == MAP_FAILED) { perror("mremap"); return 1; }
        bar = moved;
        printf("moved\n");
        printf("id 0x%08x\n", rd(0x00));
    }
    wr(0x08, 5);
    unsigned polls = 0;
    while (rd(0x20) & 1) polls++;
    printf("fact 5 %u\n", rd(0x08));
    (void)polls; /* the count varies with timing; the trace shows every poll */
    return 0;
}
