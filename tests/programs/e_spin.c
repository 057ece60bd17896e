/* argv[2] = "idle": the threads block reading a pipe instead of spinning.
 * argv[1]-1 threads spin on a register-heavy computation (integer and floating point),
 * each round checked against the first; the main thread blocks reading one byte of stdin,
 * then stops them and prints "rounds=OK mismatches=N" and exits with status 7. Used to
 * check that ptrace injections and attach/detach leave running code undisturbed. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile int stop;
static long mismatches, rounds;
static int idle_pipe[2];

static void *idle(void *arg) {
    char c;
    (void)arg;
    while (read(idle_pipe[0], &c, 1) > 0)
        ;
    __atomic_add_fetch(&rounds, 1, __ATOMIC_RELAXED);
    return NULL;
}

static uint64_t work(uint64_t s) {
    double d = 1.0;
    for (int i = 0; i < 20000; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        d = d * 1.0000001 + (double)(s & 0xff);
    }
    return s ^ (uint64_t)d;
}

static void *spin(void *arg) {
    uint64_t seed = (uintptr_t)arg + 0x9e3779b97f4a7c15ull;
    uint64_t ref = work(seed);
    while (!stop) {
        if (work(seed) != ref)
            __atomic_add_fetch(&mismatches, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&rounds, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 2;
    pthread_t th[256];
    int idling = argc > 2 && !strcmp(argv[2], "idle");
    setvbuf(stdout, NULL, _IONBF, 0);
    if (pipe(idle_pipe))
        return 4;
    for (int i = 0; i < n - 1 && i < 256; i++)
        pthread_create(&th[i], NULL, idling ? idle : spin, (void *)(uintptr_t)i);
    while (!idling && __atomic_load_n(&rounds, __ATOMIC_RELAXED) < n)
        usleep(1000);
    printf("ready\n");
    char c;
    if (read(0, &c, 1) != 1)
        return 3;
    stop = 1;
    close(idle_pipe[1]);
    for (int i = 0; i < n - 1 && i < 256; i++)
        pthread_join(th[i], NULL);
    printf("rounds=%s mismatches=%ld\n", rounds > 0 ? "OK" : "none", mismatches);
    return 7;
}
