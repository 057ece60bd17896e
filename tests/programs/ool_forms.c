/* One instruction form (or glibc string function) on device memory per run, for the
 * out-of-line fault path: the emulator does not complete these, so the tracer runs them
 * on a bounce buffer. Prints the program's own results (the same natively and traced).
 * The device holds 32-bit word k = 0x1000 + k (tests/common) unless the test put a
 * string at 0x100.
 *
 * usage: ool_forms DEVICE FORM */
#define _GNU_SOURCE
#include "mmio.h"
#include <pthread.h>
#include <setjmp.h>
#include <sys/wait.h>
#include <signal.h>
#include <ucontext.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static volatile uint8_t *dev;
static sigjmp_buf jb;
static volatile uint64_t fpe_addr;

extern char ool_div0_insn[], ool_gp_insn[];
static volatile uint64_t segv_rip;
static void on_segv(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)si;
    segv_rip = (uint64_t)((ucontext_t *)uc)->uc_mcontext.gregs[REG_RIP];
    siglongjmp(jb, 1);
}

static void on_fpe(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)uc;
    fpe_addr = (uint64_t)si->si_addr;
    siglongjmp(jb, 1);
}

static volatile long nested_hits, nested_bad;
static void on_alarm(int sig) {
    (void)sig;
    uint32_t v;
    __asm__ volatile("popcntl (%1), %0" : "=r"(v) : "r"(dev + 0x44) : "memory");
    if (v != 3) nested_bad++;
    nested_hits++;
}

static void bits(const char *name, const void *p, size_t n) {
    printf("%s", name);
    for (size_t i = 0; i < n; i++) printf(" %02x", ((const uint8_t *)p)[i]);
    printf("\n");
}

/* Everything the program had in registers survives an out-of-line store (whose epilogue
 * calls into the tracer): general registers, flags, the red zone below the stack pointer,
 * all 16 (or, with AVX-512, 32) vector registers in full and the x87 stack. */
__attribute__((noinline)) static void preserve(int avx512) {
    uint8_t pat[64], out[32][64];
    uint64_t gp[4], rz[2];
    double x87[2];
    for (int i = 0; i < 64; i++) pat[i] = (uint8_t)(i * 7 + 1);
    __asm__ volatile("vmovdqu (%0), %%ymm0\n\t"
                     "vpaddb %%ymm0, %%ymm0, %%ymm1\n\tvpaddb %%ymm1, %%ymm0, %%ymm2\n\t"
                     "vpaddb %%ymm2, %%ymm0, %%ymm3\n\tvpaddb %%ymm3, %%ymm0, %%ymm4\n\t"
                     "vpaddb %%ymm4, %%ymm0, %%ymm5\n\tvpaddb %%ymm5, %%ymm0, %%ymm6\n\t"
                     "vpaddb %%ymm6, %%ymm0, %%ymm7\n\tvpaddb %%ymm7, %%ymm0, %%ymm8\n\t"
                     "vpaddb %%ymm8, %%ymm0, %%ymm9\n\tvpaddb %%ymm9, %%ymm0, %%ymm10\n\t"
                     "vpaddb %%ymm10, %%ymm0, %%ymm11\n\tvpaddb %%ymm11, %%ymm0, %%ymm12\n\t"
                     "vpaddb %%ymm12, %%ymm0, %%ymm13\n\tvpaddb %%ymm13, %%ymm0, %%ymm14\n\t"
                     "vpaddb %%ymm14, %%ymm0, %%ymm15\n\t"
                     :: "r"(pat) : "memory");
    if (avx512)
        __asm__ volatile("vmovdqu64 (%0), %%zmm16\n\tvpaddb %%zmm16, %%zmm16, %%zmm17\n\t"
                         "vpaddb %%zmm17, %%zmm16, %%zmm31\n\tvpaddb %%zmm31, %%zmm16, %%zmm24\n\t"
                         :: "r"(pat) : "memory");
    double a = 1.25, b = -7.5;
    __asm__ volatile(
        "fldl %[a]\n\tfldl %[b]\n\t"
        "mov $0x1111111111111111, %%r8\n\tmov $0x2222222222222222, %%r9\n\t"
        "mov $0x3333333333333333, %%r10\n\tmov $0x4444444444444444, %%r11\n\t"
        "movq $0x5555, -8(%%rsp)\n\tmovq $0x6666, -128(%%rsp)\n\t"
        "stc\n\t"
        "pextrd $1, %%xmm3, (%[d])\n\t"
        "setc %%al\n\tmovzbl %%al, %%eax\n\tmov %%rax, 24(%[gp])\n\t"
        "mov -8(%%rsp), %%rax\n\tmov %%rax, (%[rz])\n\tmov -128(%%rsp), %%rax\n\tmov %%rax, 8(%[rz])\n\t"
        "mov %%r8, (%[gp])\n\tmov %%r10, 8(%[gp])\n\tmov %%r11, 16(%[gp])\n\t"
        "fstpl (%[x])\n\tfstpl 8(%[x])\n\t"
        : : [a] "m"(a), [b] "m"(b), [d] "r"(dev + 0x380), [gp] "r"(gp), [rz] "r"(rz), [x] "r"(x87)
        : "memory", "rax", "r8", "r9", "r10", "r11", "cc");
    __asm__ volatile("vmovdqu %%ymm0, 0*64(%0)\n\tvmovdqu %%ymm1, 1*64(%0)\n\tvmovdqu %%ymm2, 2*64(%0)\n\t"
                     "vmovdqu %%ymm3, 3*64(%0)\n\tvmovdqu %%ymm4, 4*64(%0)\n\tvmovdqu %%ymm5, 5*64(%0)\n\t"
                     "vmovdqu %%ymm6, 6*64(%0)\n\tvmovdqu %%ymm7, 7*64(%0)\n\tvmovdqu %%ymm8, 8*64(%0)\n\t"
                     "vmovdqu %%ymm9, 9*64(%0)\n\tvmovdqu %%ymm10, 10*64(%0)\n\tvmovdqu %%ymm11, 11*64(%0)\n\t"
                     "vmovdqu %%ymm12, 12*64(%0)\n\tvmovdqu %%ymm13, 13*64(%0)\n\tvmovdqu %%ymm14, 14*64(%0)\n\t"
                     "vmovdqu %%ymm15, 15*64(%0)\n\tvzeroupper"
                     :: "r"(out) : "memory");
    unsigned long sum = 0;
    for (int r = 0; r < 16; r++)
        for (int i = 0; i < 32; i++) sum = sum * 31 + out[r][i];
    if (avx512) {
        __asm__ volatile("vmovdqu64 %%zmm16, 0*64(%0)\n\tvmovdqu64 %%zmm17, 1*64(%0)\n\t"
                         "vmovdqu64 %%zmm31, 2*64(%0)\n\tvmovdqu64 %%zmm24, 3*64(%0)\n\tvzeroupper"
                         :: "r"(out) : "memory");
        for (int r = 0; r < 4; r++)
            for (int i = 0; i < 64; i++) sum = sum * 31 + out[r][i];
    }
    printf("vec %lx gp %lx %lx %lx cf %lu rz %lx %lx x87 %g %g dev %x\n", sum,
           (unsigned long)gp[0], (unsigned long)gp[1], (unsigned long)gp[2], (unsigned long)gp[3],
           (unsigned long)rz[0], (unsigned long)rz[1], x87[0], x87[1], rd32(dev + 0x380));
}

/* Out-of-line accesses from many threads at once (each has its own frames), threads
 * that come and go (their frames are unmapped and their slots reused), and a fork child. */
static volatile long thread_wrong;
static void *ool_worker(void *arg) {
    (void)arg;
    for (int i = 0; i < 200; i++) {
        uint32_t v;
        __asm__ volatile("popcntl (%1), %0" : "=r"(v) : "r"(dev + 0x44) : "memory", "cc");
        if (v != 3 || strlen((const char *)dev + 0x100) != 64) __sync_fetch_and_add(&thread_wrong, 1);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: ool_forms DEVICE FORM\n"); return 2; }
    dev = map_device(argv[1], 4096);
    const char *f = argv[2];
    char *s = (char *)dev + 0x100;
    if (!strcmp(f, "strlen")) {
        printf("%zu\n", strlen(s));
    } else if (!strcmp(f, "strchr")) {
        char *p = strchr(s, '!');
        printf("%ld\n", p ? (long)(p - s) : -1L);
    } else if (!strcmp(f, "strcmp")) {
        char local[128];
        strcpy(local, "hello, device");
        printf("%d\n", strcmp(s, local) > 0);
    } else if (!strcmp(f, "strncpy")) {
        char local[128];
        memset(local, 'z', sizeof local);
        strncpy(local, s, 100);
        printf("%s|%c\n", local, local[99] == 0 ? '0' : '?');
    } else if (!strcmp(f, "printf")) {
        printf("[%s]\n", s);
    } else if (!strcmp(f, "div")) {
        uint32_t q, r;
        __asm__ volatile("xor %%edx, %%edx\n\tmov $100000, %%eax\n\tdivl (%2)"
                         : "=a"(q), "=d"(r) : "r"(dev + 0x40) : "memory", "cc");
        printf("%u %u\n", q, r);
    } else if (!strcmp(f, "popcnt")) {
        uint32_t v;
        __asm__ volatile("popcntl (%1), %0" : "=r"(v) : "r"(dev + 0x44) : "memory", "cc");
        printf("%u\n", v);
    } else if (!strcmp(f, "lzcnt")) {
        uint64_t v;
        __asm__ volatile("lzcntq (%1), %0" : "=r"(v) : "r"(dev + 0x48) : "memory", "cc");
        printf("%lu\n", (unsigned long)v);
    } else if (!strcmp(f, "crc32")) {
        uint32_t v = 0xffffffff;
        __asm__ volatile("crc32l (%1), %0" : "+r"(v) : "r"(dev + 0x4c) : "memory");
        printf("%08x\n", v);
    } else if (!strcmp(f, "pinsrd")) {
        uint32_t out[4];
        __asm__ volatile("pxor %%xmm0, %%xmm0\n\tpinsrd $2, (%1), %%xmm0\n\tmovdqu %%xmm0, (%0)"
                         :: "r"(out), "r"(dev + 0x50) : "memory", "xmm0");
        printf("%x %x %x %x\n", out[0], out[1], out[2], out[3]);
    } else if (!strcmp(f, "vpbroadcastd")) {
        uint32_t out[8];
        __asm__ volatile("vpbroadcastd (%1), %%ymm0\n\tvmovdqu %%ymm0, (%0)\n\tvzeroupper"
                         :: "r"(out), "r"(dev + 0x54) : "memory", "xmm0");
        printf("%x %x\n", out[0], out[7]);
    } else if (!strcmp(f, "vpaddd")) {
        uint32_t out[8], one[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        __asm__ volatile("vmovdqu (%2), %%ymm1\n\tvpaddd (%1), %%ymm1, %%ymm0\n\t"
                         "vmovdqu %%ymm0, (%0)\n\tvzeroupper"
                         :: "r"(out), "r"(dev + 0x80), "r"(one) : "memory", "xmm0", "xmm1");
        for (int i = 0; i < 8; i++) printf("%x ", out[i]);
        printf("\n");
    } else if (!strcmp(f, "addsd")) {
        double d = 1.5;
        __asm__ volatile("addsd (%1), %0" : "+x"(d) : "r"(dev + 0x58) : "memory");
        bits("addsd", &d, 8);
    } else if (!strcmp(f, "cvtsi2sd")) {
        double d;
        __asm__ volatile("cvtsi2sdl (%1), %0" : "=x"(d) : "r"(dev + 0x60) : "memory");
        printf("%.1f\n", d);
    } else if (!strcmp(f, "fld")) {
        float x;
        __asm__ volatile("flds (%1)\n\tfstps %0" : "=m"(x) : "r"(dev + 0x64) : "memory");
        bits("fld", &x, 4);
    } else if (!strcmp(f, "fild")) {
        double x;
        __asm__ volatile("fildl (%1)\n\tfstpl %0" : "=m"(x) : "r"(dev + 0x68) : "memory");
        printf("%.1f\n", x);
    } else if (!strcmp(f, "fldt")) {
        double x;
        __asm__ volatile("fldt (%1)\n\tfstpl %0" : "=m"(x) : "r"(dev + 0x70) : "memory");
        bits("fldt", &x, 8);
    } else if (!strcmp(f, "fstp")) {
        double x = 2.5;
        __asm__ volatile("fldl %1\n\tfstpl (%0)" :: "r"(dev + 0x90), "m"(x) : "memory");
        printf("%lx\n", (unsigned long)rd64(dev + 0x90));
    } else if (!strcmp(f, "fstps")) {
        float x = -3.25f;
        __asm__ volatile("flds %1\n\tfstps (%0)" :: "r"(dev + 0x98), "m"(x) : "memory");
        printf("%x\n", rd32(dev + 0x98));
    } else if (!strcmp(f, "fstpt")) {
        double x = 1.0;
        __asm__ volatile("fldl %1\n\tfstpt (%0)" :: "r"(dev + 0xa0), "m"(x) : "memory");
        uint64_t lo = rd64(dev + 0xa0);
        uint16_t hi = rd16(dev + 0xa8);
        printf("%lx %x\n", (unsigned long)lo, hi);
    } else if (!strcmp(f, "pextrd")) {
        uint32_t in[4] = {0x11111111, 0x22222222, 0xdeadbeef, 0x44444444};
        __asm__ volatile("movdqu (%1), %%xmm0\n\tpextrd $2, %%xmm0, (%0)"
                         :: "r"(dev + 0xb0), "r"(in) : "memory", "xmm0");
        printf("%x\n", rd32(dev + 0xb0));
    } else if (!strcmp(f, "vmaskmov_load")) {
        int32_t mask[8] = {-1, 0, -1, 0, 0, 0, 0, -1};
        uint32_t out[8];
        __asm__ volatile("vmovdqu (%2), %%ymm1\n\tvpmaskmovd (%1), %%ymm1, %%ymm0\n\t"
                         "vmovdqu %%ymm0, (%0)\n\tvzeroupper"
                         :: "r"(out), "r"(dev + 0xc0), "r"(mask) : "memory", "xmm0", "xmm1");
        for (int i = 0; i < 8; i++) printf("%x ", out[i]);
        printf("\n");
    } else if (!strcmp(f, "vmaskmov_store")) {
        int32_t mask[8] = {0, -1, 0, 0, -1, 0, 0, 0};
        uint32_t in[8] = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7};
        __asm__ volatile("vmovdqu (%2), %%ymm1\n\tvmovdqu (%1), %%ymm0\n\t"
                         "vpmaskmovd %%ymm0, %%ymm1, (%0)\n\tvzeroupper"
                         :: "r"(dev + 0xe0), "r"(in), "r"(mask) : "memory", "xmm0", "xmm1");
        for (int i = 0; i < 8; i++) printf("%x ", rd32(dev + 0xe0 + 4 * i));
        printf("\n");
    } else if (!strcmp(f, "avx512_load")) {
        uint32_t out[16], one[16];
        for (int i = 0; i < 16; i++) one[i] = 0x100 * i;
        __asm__ volatile("mov $0x8421, %%eax\n\tkmovw %%eax, %%k1\n\t"
                         "vmovdqu32 (%2), %%zmm1\n\tvpxord %%zmm0, %%zmm0, %%zmm0\n\t"
                         "vpaddd (%1), %%zmm1, %%zmm0%{%%k1%}\n\t"
                         "vmovdqu32 %%zmm0, (%0)\n\tvzeroupper"
                         :: "r"(out), "r"(dev + 0x200), "r"(one) : "memory", "rax", "xmm0", "xmm1");
        for (int i = 0; i < 16; i++) printf("%x ", out[i]);
        printf("\n");
    } else if (!strcmp(f, "avx512_perm")) {
        /* A masked permute reads its whole operand: element 0 selects element 15. */
        uint32_t out[16], idx[16];
        for (int i = 0; i < 16; i++) idx[i] = 15 - i;
        __asm__ volatile("mov $0x0003, %%eax\n\tkmovw %%eax, %%k1\n\t"
                         "vmovdqu32 (%2), %%zmm1\n\tvpxord %%zmm0, %%zmm0, %%zmm0\n\t"
                         "vpermd (%1), %%zmm1, %%zmm0%{%%k1%}\n\t"
                         "vmovdqu32 %%zmm0, (%0)\n\tvzeroupper"
                         :: "r"(out), "r"(dev + 0x280), "r"(idx) : "memory", "rax", "xmm0", "xmm1");
        for (int i = 0; i < 16; i++) printf("%x ", out[i]);
        printf("\n");
    } else if (!strcmp(f, "avx512_store")) {
        uint32_t in[16];
        for (int i = 0; i < 16; i++) in[i] = 0xb0 + i;
        __asm__ volatile("mov $0x5, %%eax\n\tkmovw %%eax, %%k2\n\t"
                         "vmovdqu32 (%1), %%zmm0\n\t"
                         "vextracti32x4 $1, %%zmm0, (%0)%{%%k2%}\n\tvzeroupper"
                         :: "r"(dev + 0x240), "r"(in) : "memory", "rax", "xmm0");
        for (int i = 0; i < 4; i++) printf("%x ", rd32(dev + 0x240 + 4 * i));
        printf("\n");
    } else if (!strcmp(f, "preserve")) {
        preserve(0);
    } else if (!strcmp(f, "preserve512")) {
        preserve(1);
    } else if (!strcmp(f, "addr32")) {
        /* A 32-bit address (0x67 prefix) on a device mapped below 4 GiB. */
        int fd = open(argv[1], O_RDWR);
        uint8_t *low = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_32BIT, fd, 0);
        if (low == MAP_FAILED) { perror("mmap"); return 100; }
        uint32_t v, a = (uint32_t)(uintptr_t)(low + 0x44);
        __asm__ volatile("popcntl (%1), %0" : "=r"(v) : "r"((uint64_t)a) : "memory", "cc");
        __asm__ volatile("addr32 popcntl 0(,%k1,1), %0" : "=r"(v) : "r"((uint64_t)a) : "memory", "cc");
        printf("%u\n", v);
    } else if (!strcmp(f, "threads")) {
        for (int batch = 0; batch < 5; batch++) {
            pthread_t t[4];
            for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, ool_worker, NULL);
            for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
        }
        pid_t child = fork();
        if (child == 0) {
            ool_worker(NULL);
            _exit(thread_wrong != 0);
        }
        ool_worker(NULL);
        int st;
        waitpid(child, &st, 0);
        printf("wrong %ld child %d\n", (long)thread_wrong, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    } else if (!strcmp(f, "misaligned")) {
        /* A legacy SSE operand that is not 16-byte aligned: #GP (SIGSEGV) natively. */
        __asm__ volatile("pcmpeqb (%0), %%xmm0" :: "r"(dev + 0x104) : "memory", "xmm0");
        printf("no fault\n");
    } else if (!strcmp(f, "rmw")) {
        __asm__ volatile("addl $5, (%0)" :: "r"(dev + 0x340) : "memory", "cc");
        printf("%x\n", rd32(dev + 0x340));
    } else if (!strcmp(f, "gp_in_slot")) {
        /* ldmxcsr of a value with reserved bits raises #GP (SIGSEGV, si_code SI_KERNEL)
         * inside the slot: the handler sees the program's instruction, 20 times over (a
         * frame not released would run out), and the thread goes on out of line. */
        struct sigaction sa = {0};
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSEGV, &sa, NULL);
        wr32(dev + 0x310, 0xffff0000u);
        int at_insn = 0;
        for (int i = 0; i < 20; i++) {
            if (sigsetjmp(jb, 1) == 0) {
                __asm__ volatile(".globl ool_gp_insn\nool_gp_insn:\n\tldmxcsr (%0)"
                                 :: "r"(dev + 0x310) : "memory");
                printf("no fault\n");
            } else {
                at_insn += segv_rip == (uint64_t)ool_gp_insn;
            }
        }
        uint32_t v;
        __asm__ volatile("popcntl (%1), %0" : "=r"(v) : "r"(dev + 0x44) : "memory", "cc");
        printf("at the instruction %d of 20, then %u\n", at_insn, v);
    } else if (!strcmp(f, "divzero_fatal")) {
        wr32(dev + 0x300, 0);
        uint32_t q;
        __asm__ volatile("xor %%edx, %%edx\n\tmov $7, %%eax\n\tdivl (%1)"
                         : "=a"(q) : "r"(dev + 0x300) : "memory", "rdx", "cc");
        printf("no fault %u\n", q);
    } else if (!strcmp(f, "divzero")) {
        struct sigaction sa = {0};
        sa.sa_sigaction = on_fpe;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGFPE, &sa, NULL);
        wr32(dev + 0x300, 0);
        if (sigsetjmp(jb, 1) == 0) {
            __asm__ volatile("xor %%edx, %%edx\n\tmov $7, %%eax\n\t"
                             ".globl ool_div0_insn\nool_div0_insn:\n\tdivl (%0)"
                             :: "r"(dev + 0x300) : "memory", "rax", "rdx", "cc");
            printf("no fault\n");
        } else {
            printf("SIGFPE at the instruction: %d\n", fpe_addr == (uint64_t)ool_div0_insn);
        }
        /* The thread goes on running out of line after the fault. */
        uint32_t v;
        __asm__ volatile("popcntl (%1), %0" : "=r"(v) : "r"(dev + 0x44) : "memory", "cc");
        printf("%u\n", v);
    } else if (!strcmp(f, "nested")) {
        /* A timer handler that runs out of line itself interrupts main's out-of-line
         * accesses (pending signals are delivered at the slot's first instruction). */
        signal(SIGALRM, on_alarm);
        struct itimerval it = {{0, 100}, {0, 100}};
        setitimer(ITIMER_REAL, &it, NULL);
        long bad = 0;
        for (int i = 0; i < 20000; i++) {
            uint32_t v;
            __asm__ volatile("popcntl (%1), %0" : "=r"(v) : "r"(dev + 0x44) : "memory", "cc");
            if (v != 3) bad++;
        }
        struct itimerval off = {{0, 0}, {0, 0}};
        setitimer(ITIMER_REAL, &off, NULL);
        printf("bad %ld %ld hits %ld\n", bad, (long)nested_bad, (long)nested_hits);
        fprintf(stderr, "%ld\n", (long)nested_hits);
    } else {
        fprintf(stderr, "unknown form %s\n", f);
        return 2;
    }
    return 0;
}
