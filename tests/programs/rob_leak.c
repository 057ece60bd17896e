/* Sequential threads that each touch the device once: the address space must not grow
 * with their number (each traced thread gets an alternate signal stack). Prints the
 * VmSize growth in kB over N threads after 100 warm-up threads. */
#include "mmio.h"
#include <pthread.h>
#include <string.h>
static uint8_t *bar;
static void *body(void *a) { (void)a; wr32(bar, 1); return NULL; }
static long vm(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char l[256];
    long v = 0;
    while (fgets(l, sizeof l, f))
        if (!strncmp(l, "VmSize:", 7)) v = atol(l + 7);
    fclose(f);
    return v;
}
static void run(int n) {
    for (int i = 0; i < n; i++) { pthread_t t; pthread_create(&t, NULL, body, NULL); pthread_join(t, NULL); }
}
int main(int argc, char **argv) {
    bar = map_device(argv[1], 4096);
    run(100);
    long v0 = vm();
    run(atoi(argv[2]));
    printf("grew %ld kB\n", vm() - v0);
    return 0;
}
