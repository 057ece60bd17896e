/* The driver of replay_sim's device, for the replay tests.
 *
 * usage: replay_drv DEVICE [single|threads|fork]
 *   single  (default) identify, enable, run three jobs on channel 0, shut down;
 *   threads two threads run two jobs each on channels 1 and 2, then channel 0 as single;
 *   fork    a child process runs two jobs on channel 3, the parent channel 0 as single.
 * Environment: REPLAY_DELTA=N adds N to the second job's ARG of channel 0 (a driver
 * changed to write one different value); REPLAY_EXTRA_POLLS=N reads STATUS N more
 * times after each job (a driver that polls a different number of times).
 * Each job: ARG, DOORBELL, STATUS polled until DONE or ERROR, RESULT, STATUS cleared.
 * Prints what it learned; exit 3 when the device reports an error (its error path). */
#include "mmio.h"
#include <pthread.h>
#include <string.h>
#include <sys/wait.h>

static volatile uint8_t *dev;

static uint32_t job(int ch, uint32_t arg) {
    volatile uint8_t *c = dev + 0x100 + 0x20 * ch;
    wr32(c + 0, arg);
    wr32(c + 4, 1);
    uint32_t st;
    int polls = 0;
    do {
        usleep(200);
        st = rd32(c + 8);
        /* A device that never answers (a broken replay) must not hang the tests. */
        if (++polls > 50000) {
            printf("channel %d: timeout\n", ch);
            exit(4);
        }
    } while (!(st & 6));
    const char *extra = getenv("REPLAY_EXTRA_POLLS");
    for (int i = extra ? atoi(extra) : 0; i > 0; i--) st = rd32(c + 8);
    if (st & 4) {
        printf("channel %d: device error (status %#x): error path\n", ch, st);
        fflush(stdout);
        wr32(dev + 0x10, 0xff);
        exit(3);
    }
    uint32_t r = rd32(c + 0xc);
    /* Acknowledge: the next job's first polls must not see this job's DONE while the
     * simulator (a process that looks every 100 us) has not yet taken the next doorbell. */
    wr32(c + 8, 0);
    return r;
}

static void *worker(void *p) {
    int ch = (int)(intptr_t)p;
    for (uint32_t k = 1; k <= 2; k++) {
        uint32_t r = job(ch, 100 * ch + k);
        printf("thread channel %d job %u: %u\n", ch, k, r);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *mode = argc > 2 ? argv[2] : "single";
    dev = map_device(argv[1], 4096);
    uint32_t id = rd32(dev), ver = rd32(dev + 4);
    printf("id %#x version %u.%u\n", id, ver >> 16, ver & 0xffff);
    fflush(stdout);
    wr32(dev + 0x10, 1);
    if (!strcmp(mode, "threads")) {
        pthread_t t[2];
        for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, worker, (void *)(intptr_t)(i + 1));
        for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    }
    pid_t child = -1;
    if (!strcmp(mode, "fork")) {
        fflush(stdout);
        child = fork();
        if (child == 0) {
            worker((void *)(intptr_t)3);
            fflush(stdout);
            _exit(0);
        }
        int st;
        waitpid(child, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st)) return 5;
    }
    const char *d = getenv("REPLAY_DELTA");
    uint32_t delta = d ? (uint32_t)strtoul(d, NULL, 0) : 0;
    const char *a = getenv("REPLAY_ARG");
    for (uint32_t k = 1; k <= 3; k++) {
        uint32_t arg = 10 * k + (k == 2 ? delta : 0);
        if (k == 2 && a) arg = (uint32_t)strtoul(a, NULL, 0);
        printf("job %u: %u\n", k, job(0, arg));
    }
    wr32(dev + 0x10, 0xff);
    printf("done\n");
    return 0;
}
