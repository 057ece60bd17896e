/* Thread ends the tracer must see (argv[2]):
 *  "key N":    N threads each set a pthread key whose destructor writes to the device
 *              (after the thread's start routine returned). At the end, counts the
 *              recorder's rings still owned by a thread of this process other than the main
 *              one (all have ended): their rings must have been given back.
 *  "cancel N": N threads touch the device and are cancelled while in pause(): prints how
 *              much VmSize grew over them, in units of 64 KiB (the tracer's per-thread
 *              alternate stack is 256 KiB), after a warm-up batch. */
#include "mmio.h"
#include <pthread.h>
#include <string.h>
#define HEADER_SIZE 4096
static uint8_t *dev;
static pthread_key_t key;
static void dtor(void *v) { wr32(dev + 4, (uint32_t)(uintptr_t)v); }
static void *cancel_me(void *a) { (void)a; wr32(dev, 1); for (;;) pause(); return 0; }
static void *keyed(void *a) { (void)a; pthread_setspecific(key, (void *)(uintptr_t)7); return 0; }
static long vmkb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char l[256];
    long v = 0;
    while (fgets(l, sizeof l, f)) if (!strncmp(l, "VmSize:", 7)) v = atol(l + 7);
    fclose(f);
    return v;
}
static void cancel_batch(int n) {
    for (int i = 0; i < n; i++) {
        pthread_t t;
        pthread_create(&t, 0, cancel_me, 0);
        usleep(200);
        pthread_cancel(t);
        pthread_join(t, 0);
    }
}
/* Rings (of the recorder's shared memory) owned by a thread of this process but main. */
static int foreign_owned_rings(void) {
    const char *e = getenv("MMIO_TRACE_SHM_FD");
    if (!e) return -1;
    int fd = atoi(e);
    uint8_t *h = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
    if (h == MAP_FAILED) return -2;
    uint32_t nrings = *(uint32_t *)(h + 12);
    size_t len = HEADER_SIZE + (size_t)nrings * 128;
    munmap(h, 4096);
    h = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    if (h == MAP_FAILED) return -3;
    int n = 0;
    for (uint32_t i = 0; i < nrings; i++) {
        volatile uint32_t *c = (volatile uint32_t *)(h + HEADER_SIZE + i * 128);
        /* tid at byte 16, pid at 20, state at 24 (2 = owned) */
        if (c[6] == 2 && c[5] == (uint32_t)getpid() && c[4] != (uint32_t)getpid()) n++;
    }
    munmap(h, len);
    return n;
}
int main(int argc, char **argv) {
    (void)argc;
    dev = map_device(argv[1], 4096);
    int n = atoi(argv[3]);
    if (!strcmp(argv[2], "cancel")) {
        cancel_batch(20);
        long before = vmkb();
        cancel_batch(n);
        printf("grew %ld\n", (vmkb() - before) / 64);
    } else {
        pthread_key_create(&key, dtor);
        for (int i = 0; i < n; i++) {
            pthread_t t;
            pthread_create(&t, 0, keyed, 0);
            pthread_join(t, 0);
        }
        printf("rings of ended threads still owned: %d\n", foreign_owned_rings());
    }
    return 0;
}
