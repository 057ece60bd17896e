/* QA probes: instruction forms with a memory operand on the device, each run once;
 * prints what the program computed so a traced run can be compared with a native one. */
#include "mmio.h"
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>

static sigjmp_buf jb;
static uint8_t *g_dev;
static volatile int g_ticks, g_forks, g_bad;
static void *unmapper(void *arg) {
    usleep(20000);
    munmap(arg, 4096);
    return NULL;
}
/* SIGALRM: every 8th tick forks; the child reads the device out of line (in the
 * handler, possibly on top of the parent's slot) and reports through its status. */
static void on_alarm(int sig) {
    (void)sig;
    if (++g_ticks % 8 || g_forks >= 20) return;
    pid_t p = fork();
    if (p == 0) {
        unsigned v;
        __asm__ volatile("popcntl (%1), %0" : "=r"(v) : "r"(g_dev + 0x48) : "memory", "cc");
        _exit(v == 3 ? 0 : 1); /* 0x1012 */
    }
    if (p > 0) {
        int st = 0;
        waitpid(p, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) g_bad++;
        g_forks++;
    }
}
static void on_fpe(int sig) { (void)sig; siglongjmp(jb, 1); }

static void dump(const char *name, const void *p, size_t n) {
    printf("%s", name);
    for (size_t i = 0; i < n; i++) printf(" %02x", ((const uint8_t *)p)[i]);
    printf("\n");
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: qa3_forms DEVICE FORM\n"); return 2; }
    uint8_t *dev = map_device(argv[1], 4096);
    const char *f = argv[2];
    uint8_t out[64] __attribute__((aligned(64)));
    memset(out, 0xcc, sizeof out);
    if (!strcmp(f, "bcst")) {
        __asm__ volatile("vpternlogd $0xff, %%zmm1, %%zmm1, %%zmm1\n\t"
                         "vpaddd (%1)%{1to16%}, %%zmm1, %%zmm0\n\tvmovdqu64 %%zmm0, (%0)\n\tvzeroupper"
                         :: "r"(out), "r"(dev + 0x40) : "memory", "xmm0", "xmm1");
        dump("bcst", out, 64);
    } else if (!strcmp(f, "pmovzx")) {
        __asm__ volatile("vpmovzxbd (%1), %%ymm0\n\tvmovdqu %%ymm0, (%0)\n\tvzeroupper"
                         :: "r"(out), "r"(dev + 0x48) : "memory", "xmm0");
        dump("pmovzx", out, 32);
    } else if (!strcmp(f, "cvtph")) {
        __asm__ volatile("vcvtph2ps (%1), %%ymm0\n\tvmovdqu %%ymm0, (%0)\n\tvzeroupper"
                         :: "r"(out), "r"(dev + 0x50) : "memory", "xmm0");
        dump("cvtph", out, 32);
    } else if (!strcmp(f, "inserti")) {
        __asm__ volatile("vpcmpeqd %%ymm1, %%ymm1, %%ymm1\n\tvinserti128 $1, (%1), %%ymm1, %%ymm0\n\t"
                         "vmovdqu %%ymm0, (%0)\n\tvzeroupper"
                         :: "r"(out), "r"(dev + 0x60) : "memory", "xmm0", "xmm1");
        dump("inserti", out, 32);
    } else if (!strcmp(f, "pshufd")) {
        __asm__ volatile("vpshufd $0x1b, (%1), %%xmm0\n\tvmovdqu %%xmm0, (%0)"
                         :: "r"(out), "r"(dev + 0x70) : "memory", "xmm0");
        dump("pshufd", out, 16);
    } else if (!strcmp(f, "movhps")) {
        __asm__ volatile("vpcmpeqd %%xmm0, %%xmm0, %%xmm0\n\tmovhps (%1), %%xmm0\n\tmovdqu %%xmm0, (%0)"
                         :: "r"(out), "r"(dev + 0x80) : "memory", "xmm0");
        dump("movhps", out, 16);
    } else if (!strcmp(f, "movhps_st")) {
        uint64_t v[2] = {0x1122334455667788ull, 0x99aabbccddeeff00ull};
        __asm__ volatile("movdqu (%0), %%xmm0\n\tmovhps %%xmm0, (%1)" :: "r"(v), "r"(dev + 0x88) : "memory", "xmm0");
        dump("movhps_st", dev + 0x80, 24);
    } else if (!strcmp(f, "pcmpestri")) {
        unsigned idx;
        __asm__ volatile("movdqu (%2), %%xmm1\n\tmov $4, %%eax\n\tmov $16, %%edx\n\t"
                         "pcmpestri $0x0c, (%1), %%xmm1\n\tmov %%ecx, %0"
                         : "=r"(idx) : "r"(dev + 0x90), "r"(dev + 0x98) : "memory", "rax", "rcx", "rdx", "xmm1", "cc");
        printf("pcmpestri %u\n", idx);
    } else if (!strcmp(f, "xlat")) {
        unsigned v;
        __asm__ volatile("mov %1, %%rbx\n\tmov $5, %%eax\n\txlatb\n\tmovzbl %%al, %0"
                         : "=r"(v) : "r"(dev + 0xa0) : "memory", "rax", "rbx");
        printf("xlat %x\n", v);
    } else if (!strcmp(f, "kstore")) {
        __asm__ volatile("vpternlogd $0xff, %%zmm0, %%zmm0, %%zmm0\n\tmov $0x00f0f00fa5a5f0f0, %%rax\n\tkmovq %%rax, %%k1\n\t"
                         "vmovdqu8 %%zmm0, (%0)%{%%k1%}\n\tvzeroupper"
                         :: "r"(dev + 0x100) : "memory", "rax", "xmm0");
        dump("kstore", dev + 0x100, 64);
    } else if (!strcmp(f, "compress")) {
        __asm__ volatile("vpternlogd $0xff, %%zmm0, %%zmm0, %%zmm0\n\tmov $0x0f0f, %%eax\n\tkmovw %%eax, %%k1\n\t"
                         "vpcompressd %%zmm0, (%0)%{%%k1%}\n\tvzeroupper"
                         :: "r"(dev + 0x140), "r"(0) : "memory", "rax", "xmm0");
        dump("compress", dev + 0x140, 64);
    } else if (!strcmp(f, "expand")) {
        __asm__ volatile("vpternlogd $0xff, %%zmm0, %%zmm0, %%zmm0\n\tmov $0xf0f0, %%eax\n\tkmovw %%eax, %%k1\n\t"
                         "vpexpandd (%1), %%zmm0%{%%k1%}\n\tvmovdqu64 %%zmm0, (%0)\n\tvzeroupper"
                         :: "r"(out), "r"(dev + 0x180) : "memory", "rax", "xmm0");
        dump("expand", out, 64);
    } else if (!strcmp(f, "gather")) {
        int idx[8] = {0, 3, 1, 7, 2, 2, 5, 4};
        __asm__ volatile("vmovdqu (%2), %%ymm1\n\tvpcmpeqd %%ymm2, %%ymm2, %%ymm2\n\t"
                         "vpgatherdd %%ymm2, (%1,%%ymm1,4), %%ymm0\n\tvmovdqu %%ymm0, (%0)\n\tvzeroupper"
                         :: "r"(out), "r"(dev + 0x1c0), "r"(idx) : "memory", "xmm0", "xmm1", "xmm2");
        dump("gather", out, 32);
    } else if (!strcmp(f, "fnstenv")) {
        __asm__ volatile("fnstenv (%0)\n\tfldenv (%0)" :: "r"(dev + 0x200) : "memory");
        printf("fnstenv ok\n");
    } else if (!strcmp(f, "fxsave")) {
        __asm__ volatile("fxsave (%0)" :: "r"(dev + 0x400) : "memory");
        printf("fxsave ok %02x\n", dev[0x418]);
    } else if (!strcmp(f, "cmov")) {
        uint64_t v = 7;
        __asm__ volatile("xor %%eax, %%eax\n\tcmovzq (%1), %0" : "+r"(v) : "r"(dev + 0x20) : "memory", "rax", "cc");
        printf("cmov %lx\n", (unsigned long)v);
    } else if (!strcmp(f, "movsxd")) {
        int64_t v;
        __asm__ volatile("movslq (%1), %0" : "=r"(v) : "r"(dev + 0x2c) : "memory");
        printf("movsxd %lx\n", (unsigned long)v);
    } else if (!strcmp(f, "bextr")) {
        uint32_t v;
        __asm__ volatile("mov $0x0804, %%ecx\n\tbextr %%ecx, (%1), %0" : "=r"(v) : "r"(dev + 0x30) : "memory", "rcx", "cc");
        printf("bextr %x\n", v);
    } else if (!strcmp(f, "adcx")) {
        uint64_t v = 1;
        __asm__ volatile("stc\n\tadcx (%1), %0" : "+r"(v) : "r"(dev + 0x38) : "memory", "cc");
        printf("adcx %lx\n", (unsigned long)v);
    } else if (!strcmp(f, "ro_store")) {
        /* A store out of line to a page the program made read-only faults as natively. */
        if (mprotect(dev, 4096, PROT_READ)) { perror("mprotect"); return 100; }
        printf("ro_store\n");
        fflush(stdout);
        __asm__ volatile("pcmpeqd %%xmm0, %%xmm0\n\tpextrd $1, %%xmm0, (%0)" :: "r"(dev + 0x380) : "memory", "xmm0");
        printf("not reached\n");
    } else if (!strcmp(f, "none_read")) {
        if (mprotect(dev, 4096, PROT_NONE)) { perror("mprotect"); return 100; }
        printf("none_read\n");
        fflush(stdout);
        unsigned v;
        __asm__ volatile("popcntl (%1), %0" : "=r"(v) : "r"(dev + 0x44) : "memory", "cc");
        printf("not reached %u\n", v);
    } else if (!strcmp(f, "fpe_jumps")) {
        /* 20 divisions by a device zero, each left with siglongjmp from the SIGFPE
         * handler, then out-of-line reads that must still compute right. */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_fpe;
        sigaction(SIGFPE, &sa, NULL);
        wr32(dev + 0x3c, 0);
        volatile int caught = 0;
        for (int i = 0; i < 20; i++) {
            if (sigsetjmp(jb, 1) == 0) {
                unsigned q;
                __asm__ volatile("xor %%edx, %%edx\n\tmov $100, %%eax\n\tdivl (%1)"
                                 : "=&a"(q) : "r"(dev + 0x3c) : "memory", "rdx", "cc");
                printf("no fault %u\n", q);
            } else {
                caught++;
            }
        }
        unsigned sum = 0;
        for (int i = 0; i < 4; i++) {
            unsigned v;
            __asm__ volatile("popcntl (%1), %0" : "=r"(v) : "r"(dev + 0x40 + 4 * i) : "memory", "cc");
            sum += v;
        }
        printf("fpe_jumps caught %d popcnt %u\n", caught, sum);
    } else if (!strcmp(f, "libc_mem")) {
        /* glibc's memory and string functions to, from and within the device. */
        static const char msg[] = "the quick brown fox jumps over the lazy dog, twice: the quick brown fox";
        uint8_t local[256];
        memset(dev + 0x200, 0x5a, 100);
        memcpy(dev + 0x280, msg, sizeof msg);          /* NUL included */
        memmove(dev + 0x301, dev + 0x300, 67);         /* overlapping, device to device */
        memmove(dev + 0x380, dev + 0x383, 45);
        memcpy(local, dev + 0x100, 93);
        dump("copy", local, 93);
        local[40] ^= 1;
        printf("memcmp %d %d\n", memcmp(dev + 0x100, local, 40) == 0, memcmp(dev + 0x100, local, 64) < 0);
        const uint8_t *c = memchr(dev + 0x280, 'z', 200);
        printf("memchr %ld\n", c ? (long)(c - (dev + 0x280)) : -1L);
        const char *r = strrchr((const char *)dev + 0x280, 'q');
        printf("strrchr %ld\n", r ? (long)(r - (const char *)(dev + 0x280)) : -1L);
        printf("strnlen %zu %zu\n", strnlen((const char *)dev + 0x280, 500), strnlen((const char *)dev + 0x280, 13));
        printf("strlen %zu\n", strlen((const char *)dev + 0x280));
        printf("strcpy %s\n", strcpy((char *)local, (const char *)dev + 0x280));
    } else if (!strcmp(f, "vfork")) {
        /* A vfork child shares the parent's memory and FS base: it writes and reads
         * the device (emulated and out of line), then _exits; the parent goes on. */
        wr32(dev + 0x10, 0x11111111);
        pid_t pid = vfork();
        if (pid == 0) {
            wr32(dev + 0x14, 0x22222222);
            unsigned v;
            __asm__ volatile("popcntl (%1), %0" : "=r"(v) : "r"(dev + 0x14) : "memory", "cc");
            wr32(dev + 0x18, v);
            /* A store out of line (its epilogue runs on the program's stack). */
            __asm__ volatile("pcmpeqd %%xmm0, %%xmm0\n\tpextrd $1, %%xmm0, (%0)" :: "r"(dev + 0x20) : "memory", "xmm0");
            _exit(0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        unsigned v;
        __asm__ volatile("popcntl (%1), %0" : "=r"(v) : "r"(dev + 0x10) : "memory", "cc");
        wr32(dev + 0x1c, v);
        __asm__ volatile("pcmpeqd %%xmm0, %%xmm0\n\tpextrd $1, %%xmm0, (%0)" :: "r"(dev + 0x24) : "memory", "xmm0");
        printf("vfork %d %x %u %u %x %x\n", st, rd32(dev + 0x14), rd32(dev + 0x18), rd32(dev + 0x1c), rd32(dev + 0x20), rd32(dev + 0x24));
    } else if (!strcmp(f, "fork_in_slot")) {
        /* A timer's handler forks while the main thread reads the device out of line. */
        g_dev = dev;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm;
        sa.sa_flags = SA_RESTART;
        sigaction(SIGALRM, &sa, NULL);
        struct itimerval it = {{0, 200}, {0, 200}};
        setitimer(ITIMER_REAL, &it, NULL);
        unsigned wrong = 0;
        for (long i = 0; g_forks < 20 && i < 50000000; i++) {
            unsigned v;
            __asm__ volatile("popcntl (%1), %0" : "=r"(v) : "r"(dev + 0x44) : "memory", "cc");
            if (v != 3) wrong++; /* 0x1011 */
        }
        struct itimerval off = {{0, 0}, {0, 0}};
        setitimer(ITIMER_REAL, &off, NULL);
        printf("fork_in_slot forks %d bad %d wrong %u\n", g_forks >= 20 ? 20 : g_forks, g_bad, wrong);
    } else if (!strcmp(f, "unmapped_meanwhile")) {
        /* Another thread unmaps the device while this one reads it out of line and
         * emulated: the reader dies of SIGSEGV, as natively. */
        pthread_t t;
        printf("unmapped_meanwhile\n");
        fflush(stdout);
        pthread_create(&t, NULL, unmapper, dev);
        for (;;) {
            unsigned v;
            __asm__ volatile("popcntl (%1), %0" : "=r"(v) : "r"(dev + 0x44) : "memory", "cc");
            (void)rd32(dev + 0x40);
        }
    } else {
        fprintf(stderr, "unknown form %s\n", f);
        return 2;
    }
    return 0;
}
