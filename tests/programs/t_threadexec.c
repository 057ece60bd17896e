/* t_threadexec DEV PROG: maps DEV and writes a register, then a second thread (not the
 * main one) execs PROG DEV while the main thread waits: the kernel makes the exec'ing
 * thread the process's leader. */
#include "mmio.h"
#include <pthread.h>

static char **args;

static void *run(void *p) {
    (void)p;
    execv(args[2], (char *[]){args[2], args[1], NULL});
    _exit(104);
}

int main(int argc, char **argv) {
    if (argc < 3) return 100;
    args = argv;
    uint8_t *d = map_device(argv[1], 8192);
    wr32(d + 0x300, 5);
    pthread_t t;
    if (pthread_create(&t, NULL, run, NULL) != 0) return 101;
    pthread_join(t, NULL);
    return 102;
}
