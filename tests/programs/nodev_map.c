/* Shared mappings that no device rule may match: runs its arguments in order.
 *   PATH N   maps PATH shared (4096 bytes at offset 0) N times, reading a byte each time
 *   -p PATH  maps PATH private once (never listed)
 *   -z       maps /dev/zero, a memfd and anonymous memory shared (never listed)
 *   -t N     maps the first PATH argument shared N times from each of 4 threads
 *   -f       forks: the child runs the remaining arguments, the parent waits for it
 *   -w ADDR  writes 1 at byte offset ADDR of the last mapping, kept mapped (the traced case)
 *   -x       ends with _exit(0) (no exit handlers)
 *   -e PROG ARGS...  execs PROG with ARGS (the rest of the arguments)
 * Exits 0, or 4 when a mapping fails. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile uint8_t sink;
static const char *first_path;
static long per_thread;

static int map_times(const char *path, long n, int flags, int keep, uint8_t **last) {
    int fd = open(path, O_RDWR);
    if (fd < 0) fd = open(path, O_RDONLY);
    if (fd < 0) return 4;
    for (long i = 0; i < n; i++) {
        uint8_t *p = mmap(NULL, 4096, PROT_READ | (keep ? PROT_WRITE : 0), flags, fd, 0);
        if (p == MAP_FAILED) return 4;
        sink = p[0];
        if (keep && last) *last = p;
        else munmap(p, 4096);
    }
    close(fd);
    return 0;
}

static void *thread_main(void *arg) {
    (void)arg;
    return (void *)(intptr_t)map_times(first_path, per_thread, MAP_SHARED, 0, NULL);
}

int main(int argc, char **argv) {
    uint8_t *last = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-p")) {
            if (map_times(argv[++i], 1, MAP_PRIVATE, 0, NULL)) return 4;
        } else if (!strcmp(a, "-z")) {
            if (map_times("/dev/zero", 3, MAP_SHARED, 0, NULL)) return 4;
            int m = memfd_create("nodev", 0);
            if (m < 0 || ftruncate(m, 4096)) return 4;
            void *p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, m, 0);
            if (p == MAP_FAILED) return 4;
            munmap(p, 4096);
            p = mmap(NULL, 4096, PROT_READ, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) return 4;
            munmap(p, 4096);
        } else if (!strcmp(a, "-t")) {
            per_thread = atol(argv[++i]);
            pthread_t t[4];
            for (int k = 0; k < 4; k++) pthread_create(&t[k], NULL, thread_main, NULL);
            for (int k = 0; k < 4; k++) {
                void *r;
                pthread_join(t[k], &r);
                if (r) return 4;
            }
        } else if (!strcmp(a, "-f")) {
            pid_t c = fork();
            if (c < 0) return 4;
            if (c > 0) {
                int st;
                waitpid(c, &st, 0);
                return WIFEXITED(st) ? WEXITSTATUS(st) : 5;
            }
        } else if (!strcmp(a, "-w")) {
            if (!last) return 4;
            ((volatile uint8_t *)last)[atol(argv[++i])] = 1;
        } else if (!strcmp(a, "-e")) {
            execv(argv[i + 1], &argv[i + 1]);
            return 6;
        } else if (!strcmp(a, "-x")) {
            _exit(0);
        } else {
            if (!first_path) first_path = a;
            long n = atol(argv[++i]);
            int keep = i + 1 < argc && !strcmp(argv[i + 1], "-w");
            if (map_times(a, n, MAP_SHARED, keep, &last)) return 4;
        }
    }
    return 0;
}
