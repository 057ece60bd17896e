/* Lifecycle of patched sites: the device's mappings change, the process forks or execs,
 * after the sites st (mov %eax,(%rdi)) and ld (mov (%rdi),%eax) were made hot. Every
 * write through st is read back through ld (the program counts wrong values). With
 * PATCH_WAIT set, the program waits after warming the sites (at most 3 s) until both were
 * rewritten, so that what follows runs through trampolines; it says on stderr if they
 * never were.
 *
 * usage: patch_life DEVICE MODE
 *   fork     after warming, fork: the child writes 0x10000 + i at 0x10, the parent
 *            0x20000 + i at 0x20 (1000 each, at the same time); stderr names the child.
 *   exec     after warming (0x30000 + i at 0x30), exec this program as "exec2": it maps
 *            the device again and writes 0x38000 + i at 0x38 (1000), its own sites
 *            warmed (and waited for) likewise.
 *   munmap   two threads write (t << 24 | i) at 0x100 * t of map A (file offset 0) for
 *            i < 2000, of map B (0x1000) for i < 6000, of map C (0x2000) for i < 8000.
 *            Once both left A, the main thread unmaps A while they run on B, maps C
 *            (where A was, if it can) and lets them go on to C.
 *   mremap   after warming at 0x10 of a 2-page mapping, mremap moves it to 4 pages
 *            elsewhere (0x40000 + i at 0x10 + 0x1000 * (i % 4)); anonymous memory is
 *            mapped where it was and written through the same sites (0x50000 + i: never
 *            logged); the new mapping shrinks in place to one page (0x60000 + i at 0x20).
 *   mprotect after warming at 0x10 (and 16 more writes): read-only, 100 reads at 0x10;
 *            a write through st (SIGSEGV to the program's handler, the device
 *            unchanged); no access, a read (SIGSEGV again); read-write again, 100
 *            writes of 0x70000 + i at 0x18. */
#define _GNU_SOURCE
#include "mmio.h"
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

/* Each site in its own 64-byte block: a short site's punned jump takes the bytes after it
 * as part of its displacement, and this program is about lifecycles, not neighbours. */
extern char st_site[], st_end[], ld_site[], ld_end[];
__attribute__((noinline, noclone, aligned(64))) static void st(volatile void *p, uint32_t v) {
    __asm__ volatile("st_site:\n\t.byte 0x89, 0x07\nst_end:" : : "a"(v), "D"(p) : "memory");
}
__attribute__((noinline, noclone, aligned(64))) static uint32_t ld(volatile void *p) {
    uint32_t v;
    __asm__ volatile("ld_site:\n\t.byte 0x8b, 0x07\nld_end:" : "=a"(v) : "D"(p) : "memory");
    return v;
}

static uint8_t st_orig[2], ld_orig[2];
static long bad;

static void put(volatile uint8_t *p, uint32_t v) {
    st(p, v);
    if (ld(p) != v) bad++;
}

/* With PATCH_WAIT set, waits until both sites were rewritten. */
static void wait_rewritten(void) {
    if (!getenv("PATCH_WAIT")) return;
    for (int ms = 0; ms < 3000; ms++) {
        if (memcmp(st_site, st_orig, 2) && memcmp(ld_site, ld_orig, 2)) return;
        usleep(1000);
    }
    fprintf(stderr, "patch_life: sites not rewritten\n");
}

/* Makes both sites hot at p (16 writes of base + i, each read back), then waits. */
static void warm(volatile uint8_t *p, uint32_t base) {
    for (uint32_t i = 0; i < 16; i++) put(p, base + i);
    wait_rewritten();
}

static int fd;
static uint8_t *map(size_t len, off_t off, void *hint) {
    uint8_t *p = mmap(hint, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off);
    if (p == MAP_FAILED) { perror("mmap"); exit(100); }
    return p;
}

/* munmap */
static uint8_t *volatile maps[3];
static volatile int progress[3];
static void *worker(void *arg) {
    long t = (long)arg;
    for (int i = 0; i < 8000; i++) {
        int m = i < 2000 ? 0 : i < 6000 ? 1 : 2;
        if (m == 2) while (!maps[2]) usleep(50);
        put(maps[m] + 0x100 * t, (uint32_t)(t << 24 | i));
        if (i == 1999) wait_rewritten();
        progress[t] = i;
    }
    return NULL;
}

static sigjmp_buf jb;
static volatile int segvs;
static void on_segv(int sig) {
    (void)sig;
    segvs++;
    siglongjmp(jb, 1);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *mode = argv[2];
    memcpy(st_orig, st_site, 2);
    memcpy(ld_orig, ld_site, 2);
    fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror(argv[1]); return 100; }
    if (!strcmp(mode, "fork")) {
        uint8_t *d = map(4096, 0, NULL);
        warm(d, 0x1000);
        fflush(stdout);
        pid_t c = fork();
        if (c < 0) return 3;
        if (c == 0) {
            for (uint32_t i = 0; i < 1000; i++) put(d + 0x10, 0x10000 + i);
            _exit(bad ? 1 : 0);
        }
        fprintf(stderr, "patch_life: child %d\n", (int)c);
        for (uint32_t i = 0; i < 1000; i++) put(d + 0x20, 0x20000 + i);
        int status;
        waitpid(c, &status, 0);
        printf("child status %d\n", status);
    } else if (!strcmp(mode, "exec")) {
        uint8_t *d = map(4096, 0, NULL);
        warm(d + 0x30, 0x30000);
        for (uint32_t i = 16; i < 1000; i++) put(d + 0x30, 0x30000 + i);
        printf("exec: %ld wrong\n", bad);
        fflush(stdout);
        execl("/proc/self/exe", argv[0], argv[1], "exec2", (char *)NULL);
        perror("exec");
        return 4;
    } else if (!strcmp(mode, "exec2")) {
        uint8_t *d = map(4096, 0, NULL);
        warm(d + 0x38, 0x38000);
        for (uint32_t i = 16; i < 1000; i++) put(d + 0x38, 0x38000 + i);
    } else if (!strcmp(mode, "munmap")) {
        maps[0] = map(4096, 0, NULL);
        maps[1] = map(4096, 0x1000, NULL);
        uint8_t *a = maps[0];
        pthread_t th[2];
        for (long t = 1; t <= 2; t++) pthread_create(&th[t - 1], NULL, worker, (void *)t);
        while (progress[1] < 2000 || progress[2] < 2000) usleep(20);
        munmap(a, 4096);
        uint8_t *c = map(4096, 0x2000, a);
        fprintf(stderr, "patch_life: map C %s map A's address\n", c == a ? "took" : "did not take");
        maps[2] = c;
        for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
    } else if (!strcmp(mode, "mremap")) {
        uint8_t *a = map(2 * 4096, 0, NULL);
        warm(a + 0x10, 0x10);
        for (uint32_t i = 0; i < 16; i++) put(a + 0x1010, 0x1010 + i);
        /* A free place for 4 pages, away from a. */
        uint8_t *to = mmap(NULL, 4 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        uint8_t *x = mremap(a, 2 * 4096, 4 * 4096, MREMAP_MAYMOVE | MREMAP_FIXED, to);
        if (x == MAP_FAILED) { perror("mremap"); return 5; }
        for (uint32_t i = 0; i < 200; i++) put(x + 0x10 + 0x1000 * (i % 4), 0x40000 + i);
        uint8_t *r = mmap(a, 2 * 4096, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (r != a) {
            /* Something else was mapped into the hole meanwhile (the tracer's own tables
             * may grow there): say what, and use memory elsewhere. */
            char line[512];
            FILE *m = fopen("/proc/self/maps", "r");
            while (m && fgets(line, sizeof line, m))
                if (strtoull(line, NULL, 16) <= (uintptr_t)a + 0x1fff &&
                    strtoull(strchr(line, '-') + 1, NULL, 16) > (uintptr_t)a)
                    fprintf(stderr, "patch_life: the old address is taken: %s", line);
            if (m) fclose(m);
            r = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (r == MAP_FAILED) return 6;
        }
        for (uint32_t i = 0; i < 200; i++) put(r + 0x10 + 0x1000 * (i % 2), 0x50000 + i);
        printf("anonymous memory where the device was: %08x %08x\n", ld(r + 0x10), ld(r + 0x1010));
        uint8_t *y = mremap(x, 4 * 4096, 4096, 0);
        if (y != x) { perror("mremap shrink"); return 7; }
        for (uint32_t i = 0; i < 100; i++) put(y + 0x20, 0x60000 + i);
        munmap(y, 4096);
        munmap(r, 2 * 4096);
    } else if (!strcmp(mode, "mprotect")) {
        uint8_t *a = map(4096, 0, NULL);
        warm(a + 0x10, 0x10);
        for (uint32_t i = 16; i < 32; i++) put(a + 0x10, 0x10 + i);
        signal(SIGSEGV, on_segv);
        mprotect(a, 4096, PROT_READ);
        uint32_t sum = 0;
        for (int i = 0; i < 100; i++) sum += ld(a + 0x10);
        printf("read-only: sum %08x\n", sum);
        if (!sigsetjmp(jb, 1)) {
            st(a + 0x10, 0xdead);
            printf("BUG: write to a read-only page went through\n");
        }
        mprotect(a, 4096, PROT_NONE);
        if (!sigsetjmp(jb, 1)) {
            ld(a + 0x10);
            printf("BUG: read of a PROT_NONE page went through\n");
        }
        printf("faults delivered: %d\n", segvs);
        signal(SIGSEGV, SIG_DFL);
        mprotect(a, 4096, PROT_READ | PROT_WRITE);
        for (uint32_t i = 0; i < 100; i++) put(a + 0x18, 0x70000 + i);
    } else {
        return 2;
    }
    printf("%s: %ld wrong\n", mode, bad);
    return 0;
}
