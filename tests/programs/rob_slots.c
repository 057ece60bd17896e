/* N short-lived threads, one after another, each on its own caller-provided stack (so each
 * has a distinct thread pointer); thread i writes i once. */
#include "mmio.h"
#include <pthread.h>
static uint8_t *bar;
static void *body(void *a) { wr32(bar, (uint32_t)(uintptr_t)a); return NULL; }
int main(int argc, char **argv) {
    bar = map_device(argv[1], 4096);
    int n = atoi(argv[2]);
    size_t ss = 64 * 1024;
    uint8_t *stacks = mmap(NULL, ss * n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    for (int i = 0; i < n; i++) {
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setstack(&at, stacks + (size_t)i * ss, ss);
        pthread_t t;
        if (pthread_create(&t, &at, body, (void *)(uintptr_t)i)) { perror("pthread_create"); return 2; }
        pthread_join(t, NULL);
    }
    return 0;
}
