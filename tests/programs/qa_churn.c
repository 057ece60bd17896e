/* Threads against the rings and the step path.
 *   qa_churn DEV churn T W K: T threads in all, at most W alive at once, thread t writes
 *     (t << 12 | j) for j < K to word t % 1024 and reads it back; half of them leave with
 *     pthread_exit, a third are detached. Prints "ok T".
 *   qa_churn DEV cancel N: N times, a thread with asynchronous cancellation loops
 *     writing the device until the main thread cancels it (after it made 50 writes);
 *     then the main thread writes 0xfeed + i. Prints "ok N".
 *   qa_churn DEV spin N READY: N threads loop writing the device for ever; READY is
 *     created once they wrote 50 times each on average.
 *   qa_churn DEV same N K: N threads write (t << 24 | j) for j < K to one word.
 *   qa_churn DEV exit N: N threads loop writing the device; the main thread calls exit(7)
 *     once they all wrote 50 times.
 * A 4-page device. */
#include "mmio.h"
#include <pthread.h>
#include <string.h>
#include <stdatomic.h>

static uint8_t *bar;
static long K;
static atomic_long alive, progress;

static void *worker(void *arg) {
    long t = (long)arg;
    volatile uint8_t *w = bar + 4 * (t % 1024);
    for (long j = 0; j < K; j++) {
        wr32(w, (uint32_t)(t << 12 | j));
        if (rd32(w) != (uint32_t)(t << 12 | j)) { fprintf(stderr, "t%ld j%ld wrong\n", t, j); exit(5); }
    }
    atomic_fetch_sub(&alive, 1);
    if (t % 2) pthread_exit(NULL);
    return NULL;
}

static void *same(void *arg) {
    long t = (long)arg;
    for (long j = 0; j < K; j++) {
        wr32(bar + 0x3000, (uint32_t)(t << 24 | j));
        (void)rd32(bar + 0x3000);
    }
    return NULL;
}

static void *spinner(void *arg) {
    long i = (long)arg;
    pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, NULL);
    for (uint32_t j = 0;; j++) {
        wr32(bar + 0x1000 + 4 * (i % 8), j);
        atomic_fetch_add(&progress, 1);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    bar = map_device(argv[1], 4 * 4096);
    if (!strcmp(argv[2], "churn")) {
        long T = atol(argv[3]), W = atol(argv[4]);
        K = atol(argv[5]);
        pthread_t *th = calloc(T, sizeof *th);
        long joined = 0;
        for (long t = 0; t < T; t++) {
            while (atomic_load(&alive) >= W) {
                /* join the oldest joinable threads */
                if (joined < t && joined % 3 != 2) { pthread_join(th[joined], NULL); joined++; }
                else if (joined < t) joined++;
                else usleep(100);
            }
            atomic_fetch_add(&alive, 1);
            if (pthread_create(&th[t], NULL, worker, (void *)t) != 0) { perror("pthread_create"); return 3; }
            if (t % 3 == 2) pthread_detach(th[t]);
        }
        for (; joined < T; joined++)
            if (joined % 3 != 2) pthread_join(th[joined], NULL);
        while (atomic_load(&alive) > 0) usleep(100);
        printf("ok %ld\n", T);
    } else if (!strcmp(argv[2], "cancel")) {
        long n = atol(argv[3]);
        for (long i = 0; i < n; i++) {
            pthread_t th;
            atomic_store(&progress, 0);
            pthread_create(&th, NULL, spinner, (void *)i);
            while (atomic_load(&progress) < 50) usleep(100);
            pthread_cancel(th);
            void *r;
            pthread_join(th, &r);
            if (r != PTHREAD_CANCELED) return 4;
            wr32(bar + 0x2000, 0xfeed + i);
        }
        printf("ok %ld\n", n);
    } else if (!strcmp(argv[2], "exit")) {
        long n = atol(argv[3]);
        for (long i = 0; i < n; i++) {
            pthread_t th;
            pthread_create(&th, NULL, spinner, (void *)i);
        }
        while (atomic_load(&progress) < 50 * n) usleep(100);
        fflush(stdout);
        exit(7);
    } else if (!strcmp(argv[2], "spin")) {
        /* N threads write for ever; READY (argv[4]) once they have written 50 times */
        long n = atol(argv[3]);
        for (long i = 0; i < n; i++) {
            pthread_t th;
            pthread_create(&th, NULL, spinner, (void *)i);
        }
        while (atomic_load(&progress) < 50 * n) usleep(100);
        close(open(argv[4], O_CREAT | O_WRONLY, 0600));
        for (;;) pause();
    } else if (!strcmp(argv[2], "same")) {
        long n = atol(argv[3]);
        K = atol(argv[4]);
        pthread_t th[64];
        for (long i = 0; i < n && i < 64; i++) pthread_create(&th[i], NULL, same, (void *)(i + 1));
        for (long i = 0; i < n && i < 64; i++) pthread_join(th[i], NULL);
        printf("ok %ld\n", n);
    } else return 9;
    return 0;
}
