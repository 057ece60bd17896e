/* A freestanding static-pie test blob for the ptrace engine's loader and remote calls
 * (crates/ptrace/tests/image.rs). Built with
 *   cc -nostdlib -static-pie -fPIE -fno-stack-protector -O2 -Wl,--export-dynamic
 * It has R_X86_64_RELATIVE relocations (pointer tables to data and to code, read-only after
 * relocation and writable ones), a .bss with a large zeroed array, and functions that use
 * raw system calls and the vector registers. With -DBIG it also carries 1 MiB of data and
 * 4096 more relocations (the load benchmark). */
typedef unsigned long u64;

static long v0 = 11, v1 = 22, v2 = 33;
/* .data.rel.ro: relocated, then read-only (PT_GNU_RELRO). */
long *const table_ro[] = {&v0, &v1, &v2};
/* .data: relocated and writable. */
long *table_rw[] = {&v2, &v1, &v0};

long add(long a, long b) { return a + b; }
long sub(long a, long b) { return a - b; }
long sum6(long a, long b, long c, long d, long e, long f) {
    return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f;
}

static long (*const fns[])(long, long) = {add, sub};

/* Reads through both relocated tables: 1000 * *table_ro[i] + *table_rw[i]. */
long via_table(long i) { return 1000 * *table_ro[i] + *table_rw[i]; }
/* Calls through a relocated table of code pointers. */
long call_fn(long i, long a, long b) { return fns[i](a, b); }

static long bss_val;
static volatile unsigned char big_bss[1 << 16];

long bss_put(long v) {
    bss_val = v;
    big_bss[sizeof big_bss - 1] = 1;
    return 0;
}
long bss_get(void) { return bss_val; }
/* Sum of the large .bss array: 0 until bss_put. */
long bss_sum(void) {
    long s = 0;
    for (u64 i = 0; i < sizeof big_bss; i++)
        s += big_bss[i];
    return s;
}

static long sys0(long nr) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(nr) : "rcx", "r11", "memory");
    return r;
}
static long sys3(long nr, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
long raw_getpid(void) { return sys0(39); }
long raw_gettid(void) { return sys0(186); }
/* tgkill(getpid(), gettid(), sig): a signal arriving during the call. */
long raise_sig(long sig) { return sys3(234, sys0(39), sys0(186), sig); }

/* Overwrites XMM0-15 (and the YMM upper halves with avx != 0) with all-ones. */
long clobber_vec(long avx) {
    if (avx)
        __asm__ volatile(
            "vpcmpeqd %%ymm0,%%ymm0,%%ymm0\n vpcmpeqd %%ymm1,%%ymm1,%%ymm1\n"
            "vpcmpeqd %%ymm2,%%ymm2,%%ymm2\n vpcmpeqd %%ymm3,%%ymm3,%%ymm3\n"
            "vpcmpeqd %%ymm4,%%ymm4,%%ymm4\n vpcmpeqd %%ymm5,%%ymm5,%%ymm5\n"
            "vpcmpeqd %%ymm6,%%ymm6,%%ymm6\n vpcmpeqd %%ymm7,%%ymm7,%%ymm7\n"
            "vpcmpeqd %%ymm8,%%ymm8,%%ymm8\n vpcmpeqd %%ymm9,%%ymm9,%%ymm9\n"
            "vpcmpeqd %%ymm10,%%ymm10,%%ymm10\n vpcmpeqd %%ymm11,%%ymm11,%%ymm11\n"
            "vpcmpeqd %%ymm12,%%ymm12,%%ymm12\n vpcmpeqd %%ymm13,%%ymm13,%%ymm13\n"
            "vpcmpeqd %%ymm14,%%ymm14,%%ymm14\n vpcmpeqd %%ymm15,%%ymm15,%%ymm15\n" ::
                : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
                  "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
    else
        __asm__ volatile(
            "pcmpeqd %%xmm0,%%xmm0\n pcmpeqd %%xmm1,%%xmm1\n pcmpeqd %%xmm2,%%xmm2\n"
            "pcmpeqd %%xmm3,%%xmm3\n pcmpeqd %%xmm4,%%xmm4\n pcmpeqd %%xmm5,%%xmm5\n"
            "pcmpeqd %%xmm6,%%xmm6\n pcmpeqd %%xmm7,%%xmm7\n pcmpeqd %%xmm8,%%xmm8\n"
            "pcmpeqd %%xmm9,%%xmm9\n pcmpeqd %%xmm10,%%xmm10\n pcmpeqd %%xmm11,%%xmm11\n"
            "pcmpeqd %%xmm12,%%xmm12\n pcmpeqd %%xmm13,%%xmm13\n pcmpeqd %%xmm14,%%xmm14\n"
            "pcmpeqd %%xmm15,%%xmm15\n" ::
                : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
                  "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
    return 7;
}

/* RSP at entry (after the call pushed the return address): its low 4 bits must be 8. */
__attribute__((naked)) long sp_at_entry(void) {
    __asm__("mov %rsp, %rax\n ret\n");
}
/* Sum of n bytes at p. */
long sum_bytes(const unsigned char *p, long n) {
    long s = 0;
    for (long i = 0; i < n; i++)
        s += p[i];
    return s;
}
long fault_at(long addr) {
    *(volatile long *)addr = 1;
    return 0;
}
long illegal(void) {
    __asm__ volatile("ud2");
    return 0;
}
long spin(void) {
    for (;;)
        __asm__ volatile("");
}

#ifdef BIG
static const unsigned char pad[1 << 20] = {1, 2, 3};
static const unsigned char *const ptrs[4096] = {
#define P8(i) pad + (i), pad + (i) + 1, pad + (i) + 2, pad + (i) + 3, pad + (i) + 4, pad + (i) + 5, pad + (i) + 6, pad + (i) + 7
#define P64(i) P8(i), P8(i + 8), P8(i + 16), P8(i + 24), P8(i + 32), P8(i + 40), P8(i + 48), P8(i + 56)
#define P512(i) P64(i), P64(i + 64), P64(i + 128), P64(i + 192), P64(i + 256), P64(i + 320), P64(i + 384), P64(i + 448)
    P512(0), P512(512), P512(1024), P512(1536), P512(2048), P512(2560), P512(3072), P512(3584)};
long big(long i) { return *ptrs[i & 4095] + pad[(i * 7919) & ((1 << 20) - 1)]; }
#endif

void _start(void) {
    for (;;)
        __asm__ volatile("");
}
