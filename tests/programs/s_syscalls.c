/* For route_bench.sh: N one-byte writes to /dev/null (calls the ptrace route stops for,
 * to see whether their buffer lies in device memory, in a process that maps a device);
 * with a second argument DEV, maps that file shared first. Prints
 * "syscalls ns_per_op=X". */
#include <fcntl.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    if (argc > 2) {
        int d = open(argv[2], O_RDWR);
        if (d < 0 || mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, d, 0) == MAP_FAILED) return 4;
    }
    int fd = open("/dev/null", O_WRONLY);
    if (fd < 0) return 2;
    char c = 0;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        if (write(fd, &c, 1) != 1) return 3;
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("syscalls ns_per_op=%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
