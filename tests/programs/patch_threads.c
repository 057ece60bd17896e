/* Threads hammering five adjacent short sites (each one's punned jump covers the bytes
 * of the next), to be recorded while the sites are patched, unpatched and re-patched
 * (MMIO_TRACE_PATCH_CHURN). Thread t (1..T) owns the 16 bytes at 0x100 * t of the device
 * and, per iteration i of N, makes exactly these accesses, all through the same sites:
 *     W4 +0 = i,  W4 +4 = ~i,  R4 +0 (= i),  R4 +4 (= ~i),  W8 +8 = t << 32 | i
 * every 16th iteration it runs the same sites on its own heap buffer too (never logged).
 * The main thread first makes 8 iterations as thread 0 (offset 0): the sites get hot.
 * With "late" as 4th argument and PATCH_WAIT set, it then waits (at most 3 s) until the
 * sites have been rewritten before creating the threads (threads created after
 * patching), and says on stderr how many of the five were.
 * With PATCH_CHURN_SYNC=M set (for runs under MMIO_TRACE_PATCH_CHURN), the main thread
 * watches the sites' bytes and counts the changes it sees (patch, unpatch, re-patch), and
 * the workers pace themselves so that iteration i waits until i * M / N changes were seen
 * (at most 3 s of waiting in all): their accesses spread over the churn, whatever the
 * machine's speed. The count seen goes to stderr. Prints the number of wrong values each
 * thread read (0), identical in every run.
 *
 * usage: patch_threads DEVICE T N [late] */
#define _GNU_SOURCE
#include "mmio.h"
#include <pthread.h>
#include <string.h>
#include <time.h>

extern char hammer_site[], hammer_end[];

/* The five sites, adjacent: 2, 3, 2, 3 and 4 bytes. Returns the two values read. */
__attribute__((noinline, noclone)) static void hammer(volatile void *p, uint32_t i, uint64_t w8,
                                                      uint32_t *r0, uint32_t *r4) {
    uint32_t a = i, c;
    __asm__ volatile("hammer_site:\n\t"
                     ".byte 0x89, 0x07\n\t"       /* mov %eax,(%rdi) */
                     ".byte 0x89, 0x57, 0x04\n\t" /* mov %edx,4(%rdi) */
                     ".byte 0x8b, 0x07\n\t"       /* mov (%rdi),%eax */
                     ".byte 0x8b, 0x4f, 0x04\n\t" /* mov 4(%rdi),%ecx */
                     ".byte 0x48, 0x89, 0x77, 0x08\n" /* mov %rsi,8(%rdi) */
                     "hammer_end:"
                     : "+a"(a), "=c"(c)
                     : "D"(p), "d"(~i), "S"(w8)
                     : "memory");
    *r0 = a;
    *r4 = c;
}

/* How many of the five sites (at offsets 0, 2, 5, 7, 10) differ from their bytes in orig. */
static int rewritten(const uint8_t *orig) {
    static const int at[6] = {0, 2, 5, 7, 10, 14};
    int n = 0;
    for (int k = 0; k < 5; k++) n += memcmp(hammer_site + at[k], orig + at[k], (size_t)(at[k + 1] - at[k])) != 0;
    return n;
}

static uint8_t *dev;
static int n;
static long bad[65];
static long sync_m;
static volatile long seen, pacing = 1, done;

static void pace(int i) {
    while (pacing && seen < (long)((double)i * sync_m / n)) usleep(20);
}

static void *worker(void *arg) {
    long t = (long)arg;
    volatile uint8_t *mine = dev + 0x100 * t;
    uint8_t *heap = malloc(64);
    for (int i = 0; i < n; i++) {
        uint32_t r0, r4;
        if (sync_m && i % 64 == 0) pace(i);
        hammer(mine, (uint32_t)i, (uint64_t)t << 32 | (uint32_t)i, &r0, &r4);
        if (r0 != (uint32_t)i || r4 != ~(uint32_t)i) bad[t]++;
        if (i % 16 == 0) {
            hammer(heap, (uint32_t)i ^ 0x5555, 7, &r0, &r4);
            uint64_t w8;
            memcpy(&w8, heap + 8, 8);
            if (r0 != ((uint32_t)i ^ 0x5555) || r4 != ~((uint32_t)i ^ 0x5555) || w8 != 7) bad[t]++;
        }
    }
    free(heap);
    __atomic_add_fetch(&done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    int nt = atoi(argv[2]);
    n = atoi(argv[3]);
    if (nt < 1 || nt > 64) return 2;
    dev = map_device(argv[1], 0x100 * 65);
    uint8_t orig[16];
    memcpy(orig, hammer_site, sizeof orig);
    int saved = n;
    n = 8;
    worker((void *)0);
    n = saved;
    done = 0;
    const char *m = getenv("PATCH_CHURN_SYNC");
    sync_m = m ? atol(m) : 0;
    if (argc > 4 && !strcmp(argv[4], "late") && getenv("PATCH_WAIT")) {
        /* Until all five sites are rewritten, or none changed for 300 ms after the first
         * did (at most 3 s). */
        int last = 0, still = 0;
        for (int ms = 0; ms < 3000; ms++) {
            int now = rewritten(orig);
            if (now == 5 || (now && now == last && ++still >= 300)) break;
            if (now != last) still = 0;
            last = now;
            usleep(1000);
        }
        int n5 = rewritten(orig);
        if (!n5) fprintf(stderr, "patch_threads: sites not rewritten\n");
        fprintf(stderr, "patch_threads: %d of 5 sites rewritten\n", n5);
    }
    pthread_t th[64];
    for (long t = 1; t <= nt; t++)
        if (pthread_create(&th[t - 1], NULL, worker, (void *)t)) return 3;
    if (sync_m) {
        uint8_t last[16];
        memcpy(last, hammer_site, sizeof last);
        struct timespec t0, now;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (done < nt) {
            if (memcmp(last, hammer_site, sizeof last)) {
                memcpy(last, hammer_site, sizeof last);
                seen++;
            }
            usleep(10);
            /* Bounds the pacing: the churn may end, or run slower than hoped. */
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec - t0.tv_sec >= 3) pacing = 0;
        }
        fprintf(stderr, "patch_threads: %ld changes of the sites seen\n", seen);
    }
    for (int t = 1; t <= nt; t++) pthread_join(th[t - 1], NULL);
    for (int t = 0; t <= nt; t++) printf("thread %d: %ld wrong\n", t, bad[t]);
    return 0;
}
