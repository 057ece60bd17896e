/* Creates short-lived threads without pause (four at a time, each computing a checked
 * value) until stdin has a byte; prints "batches=OK bad=N" and exits with status 5. For
 * seizing a process whose threads come and go. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>
#include <poll.h>

static long bad;

static void *job(void *arg) {
    uint64_t s = (uintptr_t)arg + 1, a = s;
    for (int i = 0; i < 2000; i++)
        s = s * 6364136223846793005ull + 1442695040888963407ull;
    for (int i = 0; i < 2000; i++)
        a = a * 6364136223846793005ull + 1442695040888963407ull;
    if (s != a)
        __atomic_add_fetch(&bad, 1, __ATOMIC_RELAXED);
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("ready\n");
    long batches = 0;
    for (;;) {
        pthread_t t[4];
        for (int i = 0; i < 4; i++)
            pthread_create(&t[i], NULL, job, (void *)(uintptr_t)(batches * 4 + i));
        for (int i = 0; i < 4; i++)
            pthread_join(t[i], NULL);
        batches++;
        struct pollfd p = {.fd = 0, .events = POLLIN};
        if (poll(&p, 1, 0) == 1)
            break;
    }
    printf("batches=%s bad=%ld\n", batches > 0 ? "OK" : "none", bad);
    return 5;
}
