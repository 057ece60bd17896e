/* One thread maps device page 0, then page 1, then page 0 ... at one fixed address (MAP_FIXED
 * over the previous mapping, so the address never stops being mapped) while another
 * writes a counter there and reads it back. Natively each access goes to whichever page
 * is mapped at that instant; under record the log must say which, so replaying it gives
 * the reads and the device's end state. Usage: qa_remap_race DEV N (a 2-page device).
 * Prints "ok". */
#include "mmio.h"
#include <pthread.h>
#include <stdatomic.h>

#define P 4096
static uint8_t *x;
static int fd;
static atomic_int stop;

static void *remapper(void *arg) {
    (void)arg;
    for (long i = 0; !atomic_load(&stop); i++)
        if (mmap(x, P, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, (i % 2) * P) != x) exit(4);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    fd = open(argv[1], O_RDWR);
    x = mmap(NULL, P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (x == MAP_FAILED) return 3;
    long n = atol(argv[2]);
    pthread_t th;
    pthread_create(&th, NULL, remapper, NULL);
    for (long j = 1; j <= n; j++) {
        wr32(x + 0x10, (uint32_t)j);
        (void)rd32(x + 0x10);
    }
    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    puts("ok");
    return 0;
}
