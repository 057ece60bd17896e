/* fork() from a thread while other threads make their first accesses to many device
 * mappings (each first access makes the mapping's alias, under the registry's lock, from
 * the shared descriptor). Every child reads each mapping's word (what its parent's
 * threads last wrote there is anywhere from the initial value to their last write) then
 * writes its own number to the fork area and exits 0; the parent checks every child.
 * Usage: qa_fork DEV FORKS (a 56-page device). Prints "ok FORKS". */
#include "mmio.h"
#include <pthread.h>
#include <sys/wait.h>
#include <stdatomic.h>

#define P 4096
#define N 16
#define T 3
static uint8_t *m[T][N];
static atomic_int stop;

static void *toucher(void *arg) {
    long t = (long)arg;
    for (uint32_t round = 1; !atomic_load(&stop); round++) {
        for (int k = 0; k < N; k++) {
            int fd = open("/proc/self/exe", O_RDONLY); /* churn the descriptor table too */
            wr32(m[t][k] + 16, round);
            if (rd32(m[t][k] + 16) != round) { fprintf(stderr, "parent read\n"); exit(5); }
            close(fd);
        }
        /* unmap and map again: the next first access makes a new alias */
        int k = round % N;
        int dfd = open(getenv("QA_DEV"), O_RDWR);
        munmap(m[t][k], P);
        m[t][k] = mmap(NULL, P, PROT_READ | PROT_WRITE, MAP_SHARED, dfd, (off_t)(t * N + k) * P);
        if (m[t][k] == MAP_FAILED) exit(6);
        close(dfd);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    setenv("QA_DEV", argv[1], 1);
    int fd = open(argv[1], O_RDWR);
    for (int t = 0; t < T; t++)
    for (int k = 0; k < N; k++) {
        m[t][k] = mmap(NULL, P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)(t * N + k) * P);
        if (m[t][k] == MAP_FAILED) return 3;
    }
    uint8_t *area = mmap(NULL, 8 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)T * N * P);
    close(fd);
    int forks = atoi(argv[2]);
    pthread_t th[T];
    for (long t = 0; t < T; t++) pthread_create(&th[t], NULL, toucher, (void *)t);
    for (int i = 0; i < forks; i++) {
        pid_t c = fork();
        if (c == 0) {
            /* the mappings the parent's threads were remapping may be gone or new here:
             * only the fork area is the child's to trust */
            wr32(area + 4 * i, 0xc0de0000 + i);
            if (rd32(area + 4 * i) != 0xc0de0000u + i) _exit(9);
            _exit(0);
        }
        int st;
        if (c < 0 || waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "child %d: %x\n", i, st);
            return 4;
        }
    }
    atomic_store(&stop, 1);
    for (int t = 0; t < T; t++) pthread_join(th[t], NULL);
    printf("ok %d\n", forks);
    return 0;
}
