/* daemon(3) forks inside libc (not through the interposed fork). The daemon child's
 * writes must be logged under its own pid. The parent is held (an atfork parent handler
 * waits on a pipe) until the child has written, so that the recorder is still draining. */
#include "mmio.h"
#include <pthread.h>
static int done[2];
static void parent_waits(void) { char c; close(done[1]); if (read(done[0], &c, 1) < 0) _exit(3); }
int main(int argc, char **argv) {
    (void)argc;
    uint8_t *bar = map_device(argv[1], 4096);
    wr32(bar, 1);
    if (pipe(done)) return 2;
    printf("parent %d\n", getpid()); fflush(stdout);
    pthread_atfork(NULL, parent_waits, NULL);
    if (daemon(1, 1)) return 1;
    for (int i = 2; i < 5; i++) wr32(bar, i);
    printf("daemon %d\n", getpid()); fflush(stdout);
    close(done[1]);
    return 0;
}
