/* The tracer's per-thread block as code in the traced program sees it: the preload
 * library exports mmio_trace_block_tls_offset(), the offset from the thread pointer of an
 * initial-exec TLS slot that holds the calling thread's block address. In the main
 * thread, in T threads from pthread_create (made one after the other) and in a fork
 * child, this reads the slot with one %fs-relative load and checks the block's key
 * (offset 0: FS base | 1 << 63) and tid (offset 8). Prints one line each: "WHO ok", or
 * what is wrong; "untraced" when the symbol is absent (a native run).
 * Usage: blk_tls DEV T (a 1-page device). */
#include "mmio.h"
#include <asm/prctl.h>
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static long off;
static uint8_t *bar;

static void check(const char *who) {
    uint64_t blk;
    __asm__ volatile("movq %%fs:(%1), %0" : "=r"(blk) : "r"(off) : "memory");
    unsigned long fs = 0;
    syscall(SYS_arch_prctl, ARCH_GET_FS, &fs);
    if (blk == 0) {
        printf("%s no block\n", who);
        return;
    }
    uint64_t key;
    uint32_t tid;
    memcpy(&key, (void *)blk, 8);
    memcpy(&tid, (void *)(blk + 8), 4);
    if (key != (fs | 1ULL << 63))
        printf("%s key %#lx, fs %#lx\n", who, (unsigned long)key, fs);
    else if (tid != (uint32_t)syscall(SYS_gettid))
        printf("%s tid %u, gettid %ld\n", who, tid, syscall(SYS_gettid));
    else
        printf("%s ok\n", who);
}

static void *run(void *p) {
    long i = (long)p;
    char who[32];
    snprintf(who, sizeof who, "thread%ld", i);
    check(who);
    wr32(bar + 4 * i, (uint32_t)i);
    check(who);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    bar = map_device(argv[1], 4096);
    int T = atoi(argv[2]);
    long (*get)(void) = (long (*)(void))dlsym(RTLD_DEFAULT, "mmio_trace_block_tls_offset");
    if (!get) {
        printf("untraced\n");
        return 0;
    }
    off = get();
    printf("offset %s\n", off < 0 ? "below the thread pointer" : "NOT NEGATIVE");
    check("main");
    rd32(bar);
    check("main");
    for (long i = 0; i < T; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, run, (void *)(i + 1)) != 0) return 3;
        pthread_join(t, NULL);
    }
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        check("child");
        rd32(bar + 0x10);
        check("child");
        fflush(stdout);
        _exit(0);
    }
    int st;
    waitpid(c, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 4;
}
