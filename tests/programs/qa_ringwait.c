/* Threads waiting for a free ring when the recorder dies. N threads each write the device
 * once (a first event: each needs a ring) and stay alive until released; with fewer rings
 * than threads the others wait for one. Creates READY once at least one thread wrote,
 * waits for GO (the test kills the recorder in between), then for every thread to have
 * written, releases them, checks each thread's word, and writes "ok N" to RESULT.
 * Usage: qa_ringwait DEV READY GO RESULT N (a 1-page device). */
#include "mmio.h"
#include <pthread.h>
#include <stdatomic.h>

static uint8_t *bar;
static atomic_int done, release;

static void *worker(void *arg) {
    long t = (long)arg;
    wr32(bar + 4 * t, 0x5000 + t);
    atomic_fetch_add(&done, 1);
    while (!atomic_load(&release)) usleep(1000);
    wr32(bar + 4 * t, 0x6000 + t);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 6) return 2;
    bar = map_device(argv[1], 4096);
    int n = atoi(argv[5]);
    pthread_t th[256];
    for (long t = 0; t < n && t < 256; t++) pthread_create(&th[t], NULL, worker, (void *)t);
    while (atomic_load(&done) < 1) usleep(1000);
    close(open(argv[2], O_CREAT | O_WRONLY, 0600));
    while (access(argv[3], F_OK) != 0) usleep(1000);
    while (atomic_load(&done) < n) usleep(1000);
    atomic_store(&release, 1);
    for (int t = 0; t < n; t++) pthread_join(th[t], NULL);
    int bad = 0;
    for (int t = 0; t < n; t++) bad += rd32(bar + 4 * t) != 0x6000u + t;
    FILE *f = fopen(argv[4], "w");
    fprintf(f, "ok %d bad %d\n", n, bad);
    fclose(f);
    return 0;
}
