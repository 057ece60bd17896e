/* The recorder dies while the program runs: ring_gone DEV READY GO RESULT THREADS PROCS.
 * PROCS processes (the parent and PROCS-1 children) each map DEV and run THREADS threads;
 * thread j of process c owns the 32-bit register at 64*(c*THREADS+j). Phase 1: each
 * thread writes and reads back its register 100 times. Then each process notes the
 * protection /proc/self/maps shows for its mapping of DEV, the parent creates READY once
 * every process got there, and all wait for GO to exist (the test kills the recorder in
 * between). Phase 2: each
 * thread writes and reads back 20000 values, then the protection is noted again, and
 * again after mprotect(READ) and mprotect(READ|WRITE); then DEV is mapped a second time
 * and written through that mapping (read back through the first).
 * Each process writes "proc C: phase1 ok|bad PERMS phase2 ok|bad PERMS" to RESULT.C;
 * the parent, after its children ended, renames RESULT.0 to RESULT. */
#include "mmio.h"
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

static uint8_t *bar;
static int nthreads, proc;
static volatile int failed;

struct job { int j; long from, count; };

static void *run(void *arg) {
    struct job *jb = arg;
    volatile uint8_t *reg = bar + 64 * (proc * nthreads + jb->j);
    for (long i = jb->from; i < jb->from + jb->count; i++) {
        uint32_t v = (uint32_t)(proc << 24 | jb->j << 20 | i);
        wr32(reg, v);
        if (rd32(reg) != v) failed = 1;
    }
    return NULL;
}

static int phase(long from, long count) {
    pthread_t th[64];
    struct job jobs[64];
    failed = 0;
    for (int j = 0; j < nthreads; j++) {
        jobs[j] = (struct job){ j, from, count };
        pthread_create(&th[j], NULL, run, &jobs[j]);
    }
    for (int j = 0; j < nthreads; j++) pthread_join(th[j], NULL);
    return !failed;
}

/* The permissions column of /proc/self/maps for the mapping at `at`. */
static void perms_at(const void *at, char out[5]) {
    strcpy(out, "????");
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return;
    char line[512];
    unsigned long lo, hi;
    char p[5];
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, p) == 3 && lo == (unsigned long)at) {
            memcpy(out, p, 5);
            break;
        }
    fclose(f);
}

static void perms(char out[5]) { perms_at(bar, out); }

int main(int argc, char **argv) {
    if (argc < 7) return 2;
    const char *ready = argv[2], *go = argv[3], *result = argv[4];
    nthreads = atoi(argv[5]);
    int procs = atoi(argv[6]);
    if (nthreads < 1 || nthreads > 64 || procs < 1 || procs * nthreads > 64) return 2;
    int gate[2];
    if (pipe(gate)) return 3;
    for (proc = procs - 1; proc > 0; proc--)
        if (fork() == 0) break;
    bar = map_device(argv[1], 4096);
    int ok1 = phase(0, 100);
    char p1[5], p2[5];
    perms(p1);
    struct stat st;
    if (proc == 0) {
        /* The children are done with phase 1 too before READY. */
        for (int c = 1; c < procs; c++) { char b; if (read(gate[0], &b, 1) != 1) return 4; }
        FILE *f = fopen(ready, "w");
        if (f) fclose(f);
    } else if (write(gate[1], "r", 1) != 1) {
        _exit(4);
    }
    while (stat(go, &st) != 0) usleep(2000);
    int ok2 = phase(100, 20000);
    perms(p2);
    /* After the death: the program's own mprotect holds, and a new mapping of the device
     * is not traced (it works, with the program's protection). */
    char p3[5], p4[5], p5[5];
    mprotect(bar, 4096, PROT_READ);
    perms(p3);
    mprotect(bar, 4096, PROT_READ | PROT_WRITE);
    perms(p4);
    uint8_t *again = map_device(argv[1], 4096);
    perms_at(again, p5); /* before any access: not even closed for a first trap */
    uint32_t mark = 0xa5000000u | proc;
    wr32(again + 64 * proc * nthreads + 4, mark);
    int ok3 = rd32(bar + 64 * proc * nthreads + 4) == mark;
    char name[4096];
    snprintf(name, sizeof name, "%s.%d", result, proc);
    FILE *f = fopen(name, "w");
    if (!f) return 5;
    fprintf(f, "proc %d: phase1 %s %s phase2 %s %s mprotect %s %s remap %s %s\n", proc,
            ok1 ? "ok" : "bad", p1, ok2 ? "ok" : "bad", p2, p3, p4, ok3 ? "ok" : "bad", p5);
    fclose(f);
    if (proc != 0) _exit(0);
    while (wait(NULL) > 0) {}
    rename(name, result);
    return 0;
}
