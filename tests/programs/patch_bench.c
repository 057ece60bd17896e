/* Benchmarks of hot-site patching (issue 15), run natively, under `record --no-patch`
 * and under `record` (tests/programs/patch_bench.sh runs them all and prints the table).
 * Each mode warms its sites up on the device (64 executions: past the default patching
 * threshold of 32), waits until they have been rewritten (at most 2 s; natively and with
 * --no-patch they never are), then times its loop for about MS milliseconds (default 200)
 * and prints one line:  MODE ... ns_per_op=X ops=N patched=yes|no
 *
 *   store DEV    one 4-byte store site (mov %eax,(%rdi)), on the device
 *   load DEV     one 4-byte load site (mov (%rdi),%eax), on the device
 *   store-burst DEV, load-burst DEV   the same, timed in bursts of 4096 accesses 2 ms
 *                apart (at most 200 bursts): the ring never fills, so the figure is the
 *                access path's own cost, not the recorder's drain rate
 *   heap DEV     the store site, made hot on the device, then timed on ordinary memory
 *   threads DEV T    T threads, each storing through the one store site to its own
 *                register; ns_per_op is wall time per access of all threads together
 *   pushbuffer DEV   per iteration, like a GPU runtime submitting work: 64 movntdq 16-byte
 *                stores into a 1 KiB push buffer on the device, a 4 KiB memset of ordinary
 *                memory, 3 8-byte GPFIFO entries and a 4-byte doorbell (ns per iteration)
 *
 * usage: patch_bench MODE DEVICE [T] (device: at least 64 KiB; MS in the environment) */
#define _GNU_SOURCE
#include "mmio.h"
#include <pthread.h>
#include <string.h>
#include <time.h>

#define NI __attribute__((noinline, noclone)) static
extern char st_site[], ld_site[], nt_site[], gp_site[], db_site[];

NI void st(volatile void *p, uint32_t v) {
    __asm__ volatile("st_site: .byte 0x89, 0x07" : : "a"(v), "D"(p) : "memory"); /* mov %eax,(%rdi) */
}
NI uint32_t ld(volatile void *p) {
    uint32_t v;
    __asm__ volatile("ld_site: .byte 0x8b, 0x07" : "=a"(v) : "D"(p) : "memory"); /* mov (%rdi),%eax */
    return v;
}
/* 64 non-temporal 16-byte stores from one site. */
NI void push(volatile uint8_t *pb, const uint8_t *src) {
    __asm__ volatile("movdqu (%1), %%xmm0\n\t"
                     "mov $64, %%ecx\n"
                     "1:\n"
                     "nt_site: .byte 0x66, 0x0f, 0xe7, 0x07\n\t" /* movntdq %xmm0,(%rdi) */
                     "add $16, %0\n\tdec %%ecx\n\tjnz 1b"
                     : "+D"(pb) : "r"(src) : "rcx", "xmm0", "memory", "cc");
}
NI void gpfifo(volatile void *p, uint64_t v) {
    __asm__ volatile("gp_site: .byte 0x48, 0x89, 0x07" : : "a"(v), "D"(p) : "memory"); /* mov %rax,(%rdi) */
}
NI void doorbell(volatile void *p, uint32_t v) {
    __asm__ volatile("db_site: .byte 0x89, 0x07" : : "a"(v), "D"(p) : "memory");
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* Waits (at most 2 s) until every site in `sites` differs from `orig`. */
static int wait_rewritten(char **sites, uint8_t (*orig)[4], int n) {
    for (int ms = 0; ms < 2000; ms++) {
        int all = 1;
        for (int k = 0; k < n; k++)
            if (!memcmp(sites[k], orig[k], 2)) all = 0;
        if (all) return 1;
        usleep(1000);
    }
    return 0;
}

static double budget_ns;
static uint8_t *dev;
static volatile int go;
static volatile long done_ops[64];

static void *hammer(void *arg) {
    long t = (long)arg;
    volatile uint8_t *r = dev + 0x100 * (t + 1);
    while (!go) {
    }
    long n = 0;
    double t0 = now_ns();
    do {
        for (int i = 0; i < 256; i++) st(r, (uint32_t)(n + i));
        n += 256;
    } while (now_ns() - t0 < budget_ns);
    done_ops[t] = n;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *mode = argv[1];
    const char *ms = getenv("MS");
    budget_ns = (ms ? atof(ms) : 200) * 1e6;
    dev = map_device(argv[2], 65536);
    char *sites[] = {st_site, ld_site, nt_site, gp_site, db_site};
    uint8_t orig[5][4];
    for (int k = 0; k < 5; k++) memcpy(orig[k], sites[k], 4);
    uint8_t *heap = aligned_alloc(4096, 8192);
    memset(heap, 0, 8192);
    long n = 0;
    double t0 = 0, t1 = 0;
    int patched = 0;
    if (!strcmp(mode, "store") || !strcmp(mode, "heap")) {
        for (int i = 0; i < 64; i++) st(dev + 0x40, (uint32_t)i);
        patched = wait_rewritten(sites, orig, 1);
        volatile uint8_t *r = !strcmp(mode, "heap") ? heap + 0x40 : dev + 0x40;
        t0 = now_ns();
        do {
            for (int i = 0; i < 256; i++) st(r, (uint32_t)(n + i));
            n += 256;
        } while ((t1 = now_ns()) - t0 < budget_ns);
    } else if (!strcmp(mode, "store-burst") || !strcmp(mode, "load-burst")) {
        /* Bursts of 4096 accesses with 2 ms pauses between them: the thread's ring (16384
         * records or more) never fills, so this times the access path itself, not how fast
         * the recorder drains. */
        int is_store = mode[0] == 's';
        for (int i = 0; i < 64; i++) is_store ? st(dev + 0x40, (uint32_t)i) : (void)ld(dev + 0x40);
        patched = wait_rewritten(sites + !is_store, orig + !is_store, 1);
        double spent = 0;
        uint32_t sum = 0;
        do {
            usleep(2000);
            double b0 = now_ns();
            if (is_store)
                for (int i = 0; i < 4096; i++) st(dev + 0x40, (uint32_t)(n + i));
            else
                for (int i = 0; i < 4096; i++) sum += ld(dev + 0x40);
            spent += now_ns() - b0;
            n += 4096;
        } while (n < 4096 * 200 && spent < budget_ns);
        if (sum == 1) printf("-");
        t0 = 0;
        t1 = spent;
    } else if (!strcmp(mode, "load")) {
        for (int i = 0; i < 64; i++) ld(dev + 0x40);
        patched = wait_rewritten(sites + 1, orig + 1, 1);
        uint32_t sum = 0;
        t0 = now_ns();
        do {
            for (int i = 0; i < 256; i++) sum += ld(dev + 0x40);
            n += 256;
        } while ((t1 = now_ns()) - t0 < budget_ns);
        if (sum == 1) printf("-");
    } else if (!strcmp(mode, "threads")) {
        int nt = argc > 3 ? atoi(argv[3]) : 1;
        if (nt < 1 || nt > 64) return 2;
        for (int i = 0; i < 64; i++) st(dev + 0x40, (uint32_t)i);
        patched = wait_rewritten(sites, orig, 1);
        pthread_t th[64];
        for (long t = 0; t < nt; t++) pthread_create(&th[t], NULL, hammer, (void *)t);
        usleep(10000);
        t0 = now_ns();
        go = 1;
        for (int t = 0; t < nt; t++) pthread_join(th[t], NULL);
        t1 = now_ns();
        for (int t = 0; t < nt; t++) n += done_ops[t];
    } else if (!strcmp(mode, "pushbuffer")) {
        volatile uint8_t *pb = dev + 0x1000, *gp = dev + 0x2000, *db = dev + 0x90;
        uint8_t src[16], *ram = heap;
        memset(src, 0x5a, sizeof src);
        uint32_t put = 0;
        for (int warm = 0; warm < 2; warm++) {
            long iters = 0;
            t0 = now_ns();
            do {
                push(pb, src);
                memset(ram, (int)put, 4096);
                __asm__ volatile("" : : "r"(ram) : "memory");
                for (int g = 0; g < 3; g++) gpfifo(gp + 8 * ((put + (uint32_t)g) % 512), (uint64_t)put << 32 | 0x1000u);
                put += 3;
                doorbell(db, put);
                iters++;
            } while (warm == 0 ? iters < 64 : (t1 = now_ns()) - t0 < budget_ns);
            if (warm == 0) patched = wait_rewritten(sites + 2, orig + 2, 3);
            n = iters;
        }
    } else {
        return 2;
    }
    printf("%s ns_per_op=%.3f ops=%ld patched=%s\n", mode, (t1 - t0) / (double)n, n, patched ? "yes" : "no");
    return 0;
}
