/* Target of the ptrace engine's loader/call tests (crates/ptrace/tests/image.rs), built
 * dynamic and static. argv[1]:
 *   read:      loads known values into XMM0-15 (YMM0-15 with AVX), blocks in a raw read of
 *              stdin, then checks the registers:  "ret=N data=TEXT vec=OK usr1=K"
 *              (ret is the raw kernel result: -4 would be EINTR, -516 a leaked restart code)
 *   nanosleep: sleeps 300 ms:                      "ret=0 errno=0 ms>=300=1"
 *   thread:    as read, in a second thread; prints its tid after "ready"; the main thread
 *              waits in pthread_join.
 *   filter:    installs a seccomp filter that traps (SIGSYS) munmap and mprotect unless
 *              called from 0x2aa000000000..0x2aa001000000 (where the test loads its blob),
 *              checks it with a munmap of its own (one SIGSYS), then as read; prints
 *              "sigsys=N" after the read's line.
 * SIGUSR1 and SIGSYS have counting handlers (SA_RESTART). Exit status 0. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile int usr1, sigsys;
static void on_usr1(int s) { (void)s; usr1++; }
static void on_sigsys(int s) { (void)s; sigsys++; }

static int install_filter(void) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_munmap, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mprotect, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, instruction_pointer) + 4),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x2aa0, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, instruction_pointer)),
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x01000000, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -1;
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

static unsigned char pat[16][32] __attribute__((aligned(32)));
static unsigned char out[16][32] __attribute__((aligned(32)));
static volatile pid_t worker_tid;

#define LY(i) "vmovdqu " #i "*32(%[p]), %%ymm" #i "\n"
#define SY(i) "vmovdqu %%ymm" #i ", " #i "*32(%[o])\n"
#define LX(i) "movdqu " #i "*32(%[p]), %%xmm" #i "\n"
#define SX(i) "movdqu %%xmm" #i ", " #i "*32(%[o])\n"
#define ALL(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13) M(14) M(15)
#define VCLOB "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", \
              "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"

static void blocked_read(void) {
    int avx = __builtin_cpu_supports("avx");
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 32; j++)
            pat[i][j] = (unsigned char)(i * 37 + j * 5 + 1);
    char buf[64] = {0};
    long r;
    if (avx)
        __asm__ volatile(ALL(LY) "syscall\n" ALL(SY)
                         : "=a"(r)
                         : "a"(0L), "D"(0L), "S"(buf), "d"(sizeof buf - 1), [p] "r"(pat),
                           [o] "r"(out)
                         : "rcx", "r11", "memory", VCLOB);
    else
        __asm__ volatile(ALL(LX) "syscall\n" ALL(SX)
                         : "=a"(r)
                         : "a"(0L), "D"(0L), "S"(buf), "d"(sizeof buf - 1), [p] "r"(pat),
                           [o] "r"(out)
                         : "rcx", "r11", "memory", VCLOB);
    int ok = 1;
    for (int i = 0; i < 16; i++)
        if (memcmp(pat[i], out[i], avx ? 32 : 16) != 0)
            ok = 0;
    printf("ret=%ld data=%s vec=%s usr1=%d\n", r, r > 0 ? buf : "", ok ? "OK" : "BAD", usr1);
}

static void *worker(void *a) {
    (void)a;
    worker_tid = (pid_t)syscall(SYS_gettid);
    blocked_read();
    return NULL;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_sigsys;
    sigaction(SIGSYS, &sa, NULL);
    const char *mode = argc > 1 ? argv[1] : "read";
    if (!strcmp(mode, "read")) {
        printf("ready\n");
        blocked_read();
    } else if (!strcmp(mode, "filter")) {
        void *page = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (page == MAP_FAILED || install_filter() != 0)
            return 3;
        munmap(page, 4096);
        if (sigsys != 1)
            return 4;
        printf("ready\n");
        blocked_read();
        printf("sigsys=%d\n", sigsys);
    } else if (!strcmp(mode, "nanosleep")) {
        printf("ready\n");
        struct timespec t0, t1, d = {0, 300 * 1000 * 1000};
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int r = nanosleep(&d, NULL);
        int e = r ? errno : 0;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        printf("ret=%d errno=%d ms>=300=%d\n", r, e, ms >= 300);
    } else if (!strcmp(mode, "thread")) {
        pthread_t t;
        pthread_create(&t, NULL, worker, NULL);
        while (!worker_tid)
            usleep(1000);
        printf("ready\n%d\n", (int)worker_tid);
        pthread_join(t, NULL);
    } else {
        return 2;
    }
    return 0;
}
