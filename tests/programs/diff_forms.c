/* Every instruction form the x86 emulator's differential suite knows, plus the forms the
 * emulator does not complete (issue 14), each run once on a device mapping (DEV, 16 KiB).
 * Usage: diff_forms DEV [THREADS]
 * DEV (16 KiB per thread) is mapped at 0x30000000 (below 4 GiB, for the addr32 forms), with
 * a page of generated code per thread just below it (RIP-relative and moffs64 forms); the
 * program exits 100 if those addresses are taken. With THREADS = 2, two threads run all
 * the forms at once, thread t on the 16 KiB at 16384*t; their lines are printed thread 0's
 * first. Form k uses the 64 bytes at 64*k of its thread's part. Most forms first
 * store a known pattern there with plain 8-byte moves (pat(), below; the test knows it).
 * For each form one line goes to stdout: its name and the program-visible results
 * (registers, flags & 0x8d5, vector lanes, ordinary memory), or "NAME skipped" when the
 * CPU lacks the instruction. crates/cli/tests/record_paths.rs checks the recorded accesses
 * and that this output is the same traced (on each fault path) as untraced. */
#include "mmio.h"
#include <asm/prctl.h>
#include <cpuid.h>
#include <stdarg.h>
#include <string.h>
#include <sys/syscall.h>

#include <pthread.h>

#define LOW 0x30000000UL
/* Per thread: its part of the device, its code page, its output. */
static __thread uint8_t *D, *JIT;
static __thread unsigned jit_at;
static __thread FILE *OUT;

/* Copies `n` bytes of machine code into the code page (made executable by jit_done()). */
static void *jit(const uint8_t *code, unsigned n) {
    void *f = JIT + jit_at;
    memcpy(f, code, n);
    jit_at += (n + 15) & ~15u;
    return f;
}
static void jit_done(void) {
    if (mprotect(JIT, 4096, PROT_READ | PROT_EXEC) != 0) { perror("mprotect"); exit(100); }
}
static void put32(uint8_t *b, uint32_t v) { memcpy(b, &v, 4); }
static void put64(uint8_t *b, uint64_t v) { memcpy(b, &v, 8); }
static __thread unsigned slot, o;

static uint64_t pat(uint64_t off) { return 0x9e3779b97f4a7c15ULL * (off + 1); }

/* Stores pat() over n bytes at offset off, 8 at a time (one traced W of 8 each). */
static void set(unsigned off, int n) {
    for (int j = 0; j < n; j += 8) wr64(D + off + j, pat(off + j));
}

/* Starts the next form: sets `o` to its slot; 0 (and a "skipped" line) when !ok. */
static int form(const char *name, int ok) {
    o = slot;
    slot += 64;
    if (!ok) {
        fprintf(OUT, "%s skipped\n", name);
        return 0;
    }
    fprintf(OUT, "%s", name);
    return 1;
}

static void out(int n, ...) {
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) fprintf(OUT, " %llx", (unsigned long long)va_arg(ap, uint64_t));
    va_end(ap);
    fprintf(OUT, "\n");
}

/* Prints `n` bytes of ordinary memory as 8-byte words (n a multiple of 8). */
static void outb(const void *m, int n) {
    for (int i = 0; i < n; i += 8) {
        uint64_t w;
        memcpy(&w, (const uint8_t *)m + i, 8);
        fprintf(OUT, " %llx", (unsigned long long)w);
    }
    fprintf(OUT, "\n");
}

#define FL "pushfq\n\tpopq %[fl]\n\t"
#define FLAGS(f) ((f) & 0x8d5)

static const uint64_t A = 0x8f7e6d5c4b3a2918ULL, B = 0x0123456789abcdefULL;
static __thread uint8_t ram[128] __attribute__((aligned(64)));
static uint8_t vin[64] __attribute__((aligned(64)));
static __thread uint8_t vout[64] __attribute__((aligned(64)));

static int cpu1_ecx(int bit) { unsigned a, b, c, d; __cpuid(1, a, b, c, d); return (c >> bit) & 1; }
static int cpu7_ecx(int bit) { unsigned a, b, c, d; if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0; return (c >> bit) & 1; }
static int cpux_ecx(int bit) { unsigned a, b, c, d; if (!__get_cpuid(0x80000001, &a, &b, &c, &d)) return 0; return (c >> bit) & 1; }

static int sse41, sse42, avx, avx2, avx512, avx512bw, movbe, cx16, popcnt, lzcnt, movdiri, movdir64b;
static uint8_t *DEV;
static int nthreads;
static pthread_barrier_t start;
static char *outbuf[2];
static size_t outlen[2];

/* Runs every form on thread t's part of the device; 0 on success. */
static int run_forms(int t) {
    D = DEV + 16384 * t;
    JIT = (uint8_t *)(LOW - 4096 * (t + 1));
    if (mmap(JIT, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != JIT) { perror("mmap of the code page"); exit(100); }
    OUT = open_memstream(&outbuf[t], &outlen[t]);
    if (!OUT) return 4;
    if (syscall(SYS_arch_prctl, ARCH_SET_GS, (unsigned long)D) != 0) return 3;
    /* Both threads start the forms together, so that their faults overlap. */
    if (nthreads == 2) pthread_barrier_wait(&start);
    uint64_t a, b, c, d, fl;

    /* ---- MOV loads and stores ---- */
    if (form("mov r8,m8", 1)) { set(o, 8); a = A; __asm__ volatile("movb 5(%[p]), %b[a]" : [a] "+q"(a) : [p] "r"(D + o) : "memory"); out(1, a); }
    if (form("mov ah,m8", 1)) { set(o, 8); a = A; __asm__ volatile("movb 3(%[p]), %%ah" : "+a"(a) : [p] "S"(D + o) : "memory"); out(1, a); }
    if (form("mov r16,m16", 1)) { set(o, 8); a = A; __asm__ volatile("movw 2(%[p]), %w[a]" : [a] "+r"(a) : [p] "r"(D + o) : "memory"); out(1, a); }
    if (form("mov r32,m32 sib", 1)) { set(o, 16); a = A; c = 2; __asm__ volatile("movl 4(%[p],%[c],4), %k[a]" : [a] "+r"(a) : [p] "r"(D + o), [c] "r"(c) : "memory"); out(1, a); }
    if (form("mov r64,m64", 1)) { set(o, 16); a = A; __asm__ volatile("movq 8(%[p]), %[a]" : [a] "+r"(a) : [p] "r"(D + o) : "memory"); out(1, a); }
    if (form("mov m8,r8", 1)) { __asm__ volatile("movb %b[a], 3(%[p])" :: [a] "q"(A), [p] "r"(D + o) : "memory"); out(0); }
    if (form("mov m16,r16", 1)) { __asm__ volatile("movw %w[a], 6(%[p])" :: [a] "r"(A), [p] "r"(D + o) : "memory"); out(0); }
    if (form("mov m32,r32", 1)) { __asm__ volatile("movl %k[a], 8(%[p])" :: [a] "r"(A), [p] "r"(D + o) : "memory"); out(0); }
    if (form("mov m64,r64", 1)) { __asm__ volatile("movq %[a], 16(%[p])" :: [a] "r"(A), [p] "r"(D + o) : "memory"); out(0); }
    if (form("mov m8,imm8", 1)) { __asm__ volatile("movb $0x9c, 1(%[p])" :: [p] "r"(D + o) : "memory"); out(0); }
    if (form("mov m32,imm32", 1)) { __asm__ volatile("movl $0xdeadbeef, 4(%[p])" :: [p] "r"(D + o) : "memory"); out(0); }
    if (form("mov m64,imm32sx", 1)) { __asm__ volatile("movq $-0x12345678, 8(%[p])" :: [p] "r"(D + o) : "memory"); out(0); }
    if (form("mov r32,gs:m32", 1)) { set(o, 8); a = A; c = o + 4; __asm__ volatile("movl %%gs:(%[c]), %k[a]" : [a] "+r"(a) : [c] "r"(c) : "memory"); out(1, a); }
    if (form("mov gs:m64,r64", 1)) { c = o + 8; __asm__ volatile("movq %[b], %%gs:(%[c])" :: [b] "r"(B), [c] "r"(c) : "memory"); out(0); }

    /* ---- zero/sign extension, movbe, movdiri ---- */
    if (form("movzx r32,m8", 1)) { set(o, 8); a = A; __asm__ volatile("movzbl 7(%[p]), %k[a]" : [a] "+r"(a) : [p] "r"(D + o) : "memory"); out(1, a); }
    if (form("movzx r64,m16", 1)) { set(o, 8); a = A; __asm__ volatile("movzwq 6(%[p]), %[a]" : [a] "+r"(a) : [p] "r"(D + o) : "memory"); out(1, a); }
    if (form("movsx r32,m8", 1)) { set(o, 8); a = A; __asm__ volatile("movsbl 7(%[p]), %k[a]" : [a] "+r"(a) : [p] "r"(D + o) : "memory"); out(1, a); }
    if (form("movsx r64,m16", 1)) { set(o, 8); a = A; __asm__ volatile("movswq 6(%[p]), %[a]" : [a] "+r"(a) : [p] "r"(D + o) : "memory"); out(1, a); }
    if (form("movsxd r64,m32", 1)) { set(o, 8); a = A; __asm__ volatile("movslq 4(%[p]), %[a]" : [a] "+r"(a) : [p] "r"(D + o) : "memory"); out(1, a); }
    if (form("movbe r32,m32", movbe)) { set(o, 8); a = A; __asm__ volatile("movbel 4(%[p]), %k[a]" : [a] "+r"(a) : [p] "r"(D + o) : "memory"); out(1, a); }
    if (form("movbe m64,r64", movbe)) { __asm__ volatile("movbeq %[b], 8(%[p])" :: [b] "r"(B), [p] "r"(D + o) : "memory"); out(0); }
    if (form("movdiri m32,r32", movdiri)) { __asm__ volatile("movdiri %k[b], 4(%[p])" :: [b] "r"(B), [p] "r"(D + o) : "memory"); out(0); }
    if (form("movdir64b", movdir64b)) { __asm__ volatile("movdir64b (%[s]), %[p]" :: [s] "r"(vin), [p] "r"(D + o) : "memory"); out(0); }

    /* ---- MMX, movlps/movhps ---- */
    if (form("movq mm,m64", 1)) { set(o, 8); __asm__ volatile("movq (%[p]), %%mm0\n\tmovq %%mm0, %[a]\n\temms" : [a] "=r"(a) : [p] "r"(D + o) : "memory"); out(1, a); }
    if (form("movd m32,mm", 1)) { __asm__ volatile("movq %[b], %%mm1\n\tmovd %%mm1, 4(%[p])\n\temms" :: [b] "r"(B), [p] "r"(D + o) : "memory"); out(0); }
    if (form("movntq m64,mm", 1)) { __asm__ volatile("movq %[b], %%mm2\n\tmovntq %%mm2, 8(%[p])\n\temms" :: [b] "r"(B), [p] "r"(D + o) : "memory"); out(0); }
    if (form("movlps xmm,m64", 1)) { set(o, 8); __asm__ volatile("movdqu (%[v]), %%xmm0\n\tmovlps (%[p]), %%xmm0\n\tmovdqu %%xmm0, (%[w])" :: [v] "r"(vin), [w] "r"(vout), [p] "r"(D + o) : "memory", "xmm0", "xmm1", "xmm2"); outb(vout, 16); }
    if (form("movhps m64,xmm", 1)) { __asm__ volatile("movdqu (%[v]), %%xmm1\n\tmovhps %%xmm1, 8(%[p])" :: [v] "r"(vin), [p] "r"(D + o) : "memory", "xmm0", "xmm1", "xmm2"); out(0); }
    if (form("movhpd xmm,m64", 1)) { set(o, 16); __asm__ volatile("movdqu (%[v]), %%xmm0\n\tmovhpd 8(%[p]), %%xmm0\n\tmovdqu %%xmm0, (%[w])" :: [v] "r"(vin), [w] "r"(vout), [p] "r"(D + o) : "memory", "xmm0", "xmm1", "xmm2"); outb(vout, 16); }

    /* ---- cmov, mul/imul, movnti ---- */
    if (form("cmove r32,m32 taken", 1)) { set(o, 8); a = A; __asm__ volatile("cmp %k[a], %k[a]\n\tcmovel (%[p]), %k[a]\n\t" FL : [a] "+r"(a), [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(2, a, FLAGS(fl)); }
    if (form("cmovne r64,m64 not taken", 1)) { set(o, 8); a = A; __asm__ volatile("cmp %[a], %[a]\n\tcmovneq (%[p]), %[a]\n\t" FL : [a] "+r"(a), [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(2, a, FLAGS(fl)); }
    if (form("mul m32", 1)) { set(o, 8); a = A; d = B; __asm__ volatile("mull 4(%[p])\n\t" FL : "+a"(a), "+d"(d), [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(3, a, d, fl & 0x801); }
    if (form("imul r64,m64", 1)) { set(o, 8); a = A; __asm__ volatile("imulq (%[p]), %[a]\n\t" FL : [a] "+r"(a), [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(2, a, fl & 0x801); }
    if (form("movnti m64,r64", 1)) { __asm__ volatile("movntiq %[b], 16(%[p])\n\tsfence" :: [b] "r"(B), [p] "r"(D + o) : "memory"); out(0); }

    /* ---- xchg, cmpxchg, xadd ---- */
    if (form("xchg m32,r32", 1)) { set(o, 8); b = B; __asm__ volatile("xchgl %k[b], 4(%[p])" : [b] "+r"(b) : [p] "r"(D + o) : "memory"); out(1, b); }
    if (form("lock cmpxchg m32 equal", 1)) { set(o, 8); a = pat(o) & 0xffffffff; c = B; __asm__ volatile("lock cmpxchgl %k[c], (%[p])\n\t" FL : "+a"(a), [fl] "=r"(fl) : [c] "r"(c), [p] "r"(D + o) : "memory", "cc"); out(2, a, FLAGS(fl)); }
    if (form("lock cmpxchg m64 differ", 1)) { set(o, 8); a = A; c = B; __asm__ volatile("lock cmpxchgq %[c], (%[p])\n\t" FL : "+a"(a), [fl] "=r"(fl) : [c] "r"(c), [p] "r"(D + o) : "memory", "cc"); out(2, a, FLAGS(fl)); }
    if (form("cmpxchg m16 equal", 1)) { set(o, 8); a = pat(o) & 0xffff; c = B; __asm__ volatile("cmpxchgw %w[c], (%[p])\n\t" FL : "+a"(a), [fl] "=r"(fl) : [c] "r"(c), [p] "r"(D + o) : "memory", "cc"); out(2, a, FLAGS(fl)); }
    if (form("lock cmpxchg8b equal", 1)) { set(o, 8); uint64_t v = pat(o); a = v & 0xffffffff; d = v >> 32; b = 0x11112222; c = 0x33334444; __asm__ volatile("lock cmpxchg8b (%[p])\n\t" FL : "+a"(a), "+d"(d), [fl] "=r"(fl) : "b"(b), "c"(c), [p] "r"(D + o) : "memory", "cc"); out(3, a, d, FLAGS(fl)); }
    if (form("lock cmpxchg16b differ", cx16)) { set(o, 16); a = A; d = B; b = 1; c = 2; __asm__ volatile("lock cmpxchg16b (%[p])\n\t" FL : "+a"(a), "+d"(d), [fl] "=r"(fl) : "b"(b), "c"(c), [p] "r"(D + o) : "memory", "cc"); out(3, a, d, FLAGS(fl)); }
    if (form("xadd m32,r32", 1)) { set(o, 8); b = B; __asm__ volatile("xaddl %k[b], (%[p])\n\t" FL : [b] "+r"(b), [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(2, b, FLAGS(fl)); }
    if (form("lock xadd m64,r64", 1)) { set(o, 8); b = A; __asm__ volatile("lock xaddq %[b], (%[p])\n\t" FL : [b] "+r"(b), [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(2, b, FLAGS(fl)); }

    /* ---- ALU read-modify-write and reads ---- */
    if (form("add m32,r32", 1)) { set(o, 8); __asm__ volatile("addl %k[b], (%[p])\n\t" FL : [fl] "=r"(fl) : [b] "r"(B), [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl)); }
    if (form("lock add m64,r64", 1)) { set(o, 8); __asm__ volatile("lock addq %[b], (%[p])\n\t" FL : [fl] "=r"(fl) : [b] "r"(A), [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl)); }
    if (form("add r32,m32", 1)) { set(o, 8); a = A; __asm__ volatile("addl 4(%[p]), %k[a]\n\t" FL : [a] "+r"(a), [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(2, a, FLAGS(fl)); }
    if (form("or m16,imm16", 1)) { set(o, 8); __asm__ volatile("orw $0x1234, 2(%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl)); }
    if (form("adc m8,r8 cf=1", 1)) { set(o, 8); __asm__ volatile("stc\n\tadcb %b[b], 1(%[p])\n\t" FL : [fl] "=r"(fl) : [b] "q"(B), [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl)); }
    if (form("sbb m32,imm8 cf=1", 1)) { set(o, 8); __asm__ volatile("stc\n\tsbbl $-3, (%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl)); }
    if (form("and m64,imm32", 1)) { set(o, 8); __asm__ volatile("andq $-0x0f0f0f10, (%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl)); }
    if (form("sub m32,r32", 1)) { set(o, 8); __asm__ volatile("subl %k[b], 4(%[p])\n\t" FL : [fl] "=r"(fl) : [b] "r"(A), [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl)); }
    if (form("xor m8,imm8", 1)) { set(o, 8); __asm__ volatile("xorb $0x5a, 6(%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl)); }
    if (form("lock or m32,r32", 1)) { set(o, 8); __asm__ volatile("lock orl %k[b], (%[p])\n\t" FL : [fl] "=r"(fl) : [b] "r"(B), [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl)); }
    if (form("cmp m32,imm8", 1)) { set(o, 8); __asm__ volatile("cmpl $5, (%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl)); }
    if (form("test m64,r64", 1)) { set(o, 8); __asm__ volatile("testq %[b], (%[p])\n\t" FL : [fl] "=r"(fl) : [b] "r"(B), [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl)); }
    if (form("inc m8", 1)) { set(o, 8); __asm__ volatile("incb 2(%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl)); }
    if (form("dec m16", 1)) { set(o, 8); __asm__ volatile("decw 4(%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl)); }
    if (form("not m32", 1)) { set(o, 8); __asm__ volatile("notl (%[p])" :: [p] "r"(D + o) : "memory"); out(0); }
    if (form("neg m64", 1)) { set(o, 8); __asm__ volatile("negq (%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl)); }
    if (form("lock inc m32", 1)) { set(o, 8); __asm__ volatile("lock incl 4(%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl)); }

    /* ---- shifts and rotates ---- */
    if (form("shl m32,1", 1)) { set(o, 8); __asm__ volatile("shll $1, (%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl) & ~0x810ULL); }
    if (form("shr m64,cl", 1)) { set(o, 8); __asm__ volatile("shrq %%cl, (%[p])\n\t" FL : [fl] "=r"(fl) : "c"(13), [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl) & ~0x810ULL); }
    if (form("rol m16,imm8", 1)) { set(o, 8); __asm__ volatile("rolw $5, 2(%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl) & 1); }
    if (form("rcl m8,1 cf=1", 1)) { set(o, 8); __asm__ volatile("stc\n\trclb $1, 5(%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl) & 0x801); }
    if (form("sar m32,imm8", 1)) { set(o, 8); __asm__ volatile("sarl $7, 4(%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl) & ~0x810ULL); }
    if (form("shld m32,r32,imm8", 1)) { set(o, 8); __asm__ volatile("shldl $9, %k[b], (%[p])\n\t" FL : [fl] "=r"(fl) : [b] "r"(B), [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl) & ~0x810ULL); }
    if (form("shrd m64,r64,cl", 1)) { set(o, 8); __asm__ volatile("shrdq %%cl, %[b], (%[p])\n\t" FL : [fl] "=r"(fl) : [b] "r"(A), "c"(20), [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl) & ~0x810ULL); }

    /* ---- bit tests, setcc ---- */
    if (form("bt m32,imm8", 1)) { set(o, 8); __asm__ volatile("btl $5, 4(%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl) & 1); }
    if (form("bt m64,r64 bit 70", 1)) { set(o, 16); __asm__ volatile("btq %[i], (%[p])\n\t" FL : [fl] "=r"(fl) : [i] "r"(70ULL), [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl) & 1); }
    if (form("bts m32,imm8", 1)) { set(o, 8); __asm__ volatile("btsl $3, (%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl) & 1); }
    if (form("btr m16,r16 bit 20", 1)) { set(o, 8); __asm__ volatile("btrw %w[i], (%[p])\n\t" FL : [fl] "=r"(fl) : [i] "r"(20ULL), [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl) & 1); }
    if (form("btc m64,imm8", 1)) { set(o, 8); __asm__ volatile("btcq $62, (%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl) & 1); }
    if (form("lock bts m32,r32 bit 35", 1)) { set(o, 8); __asm__ volatile("lock btsl %k[i], (%[p])\n\t" FL : [fl] "=r"(fl) : [i] "r"(35ULL), [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl) & 1); }
    if (form("sete m8 zf=1", 1)) { __asm__ volatile("xor %%eax, %%eax\n\tsete 3(%[p])" :: [p] "r"(D + o) : "memory", "cc", "rax"); out(0); }
    if (form("setb m8 cf=0", 1)) { __asm__ volatile("clc\n\tsetb 5(%[p])" :: [p] "r"(D + o) : "memory", "cc"); out(0); }

    /* ---- push m / pop m ---- */
    if (form("push m64", 1)) { set(o, 8); __asm__ volatile("pushq (%[p])\n\tpopq %[a]" : [a] "=r"(a) : [p] "r"(D + o) : "memory"); out(1, a); }
    if (form("pop m64", 1)) { __asm__ volatile("pushq %[b]\n\tpopq 8(%[p])" :: [b] "r"(B), [p] "r"(D + o) : "memory"); out(0); }

    /* ---- SSE moves ---- */
    /* Loads: xmm0 starts as vin (so merges are visible), then is stored to vout. */
#define SLOAD(name, ok, ins, setn) \
    if (form(name, ok)) { set(o, setn); memset(vout, 0x77, 64); \
        __asm__ volatile("movdqu (%[v]), %%xmm0\n\t" ins "\n\tmovdqu %%xmm0, (%[w])" :: [p] "r"(D + o), [w] "r"(vout), [v] "r"(vin) : "memory", "xmm0", "xmm1", "xmm2"); outb(vout, 16); }
#define SSTORE(name, ok, ins) \
    if (form(name, ok)) { __asm__ volatile("movdqu (%[v]), %%xmm1\n\t" ins :: [p] "r"(D + o), [v] "r"(vin) : "memory", "xmm0", "xmm1", "xmm2"); out(0); }
    SLOAD("movd xmm,m32", 1, "movd 4(%[p]), %%xmm0", 8)
    SSTORE("movd m32,xmm", 1, "movd %%xmm1, 4(%[p])")
    SLOAD("movq xmm,m64", 1, "movq 8(%[p]), %%xmm0", 16)
    SSTORE("movq m64,xmm", 1, "movq %%xmm1, 8(%[p])")
    SLOAD("movss xmm,m32", 1, "movss 4(%[p]), %%xmm0", 8)
    SSTORE("movss m32,xmm", 1, "movss %%xmm1, 12(%[p])")
    SLOAD("movsd xmm,m64", 1, "movsd 8(%[p]), %%xmm0", 16)
    SSTORE("movsd m64,xmm", 1, "movsd %%xmm1, 16(%[p])")
    SLOAD("movaps xmm,m128", 1, "movaps 16(%[p]), %%xmm0", 32)
    SSTORE("movaps m128,xmm", 1, "movaps %%xmm1, 32(%[p])")
    SLOAD("movups xmm,m128", 1, "movups 1(%[p]), %%xmm0", 24)
    SSTORE("movups m128,xmm", 1, "movups %%xmm1, 3(%[p])")
    SLOAD("movapd xmm,m128", 1, "movapd (%[p]), %%xmm0", 16)
    SSTORE("movupd m128,xmm", 1, "movupd %%xmm1, 8(%[p])")
    SLOAD("movdqa xmm,m128", 1, "movdqa 16(%[p]), %%xmm0", 32)
    SSTORE("movdqu m128,xmm", 1, "movdqu %%xmm1, 5(%[p])")
    SSTORE("movntdq m128,xmm", 1, "movntdq %%xmm1, 16(%[p])\n\tsfence")
    SLOAD("movntdqa xmm,m128", sse41, "movntdqa 32(%[p]), %%xmm0", 48)
    SSTORE("movntps m128,xmm", 1, "movntps %%xmm1, (%[p])\n\tsfence")
    SSTORE("movntpd m128,xmm", 1, "movntpd %%xmm1, 48(%[p])\n\tsfence")
    SLOAD("lddqu xmm,m128", sse41, "lddqu 2(%[p]), %%xmm0", 24)

    /* ---- VEX moves ---- */
#define YLOAD(name, ok, ins, n, setn) \
    if (form(name, ok)) { set(o, setn); memset(vout, 0x77, 64); \
        __asm__ volatile("vmovdqu (%[v]), %%ymm0\n\t" ins "\n\tvmovdqu %%ymm0, (%[w])\n\tvzeroupper" :: [p] "r"(D + o), [w] "r"(vout), [v] "r"(vin) : "memory", "xmm0", "xmm1", "xmm2"); outb(vout, n); }
#define YSTORE(name, ok, ins) \
    if (form(name, ok)) { __asm__ volatile("vmovdqu (%[v]), %%ymm1\n\t" ins "\n\tvzeroupper" :: [p] "r"(D + o), [v] "r"(vin) : "memory", "xmm0", "xmm1", "xmm2"); out(0); }
    YLOAD("vmovdqu ymm,m256", avx, "vmovdqu 1(%[p]), %%ymm0", 32, 40)
    YSTORE("vmovdqu m256,ymm", avx, "vmovdqu %%ymm1, 8(%[p])")
    YLOAD("vmovaps ymm,m256", avx, "vmovaps 32(%[p]), %%ymm0", 32, 64)
    YSTORE("vmovups m128,xmm", avx, "vmovups %%xmm1, 4(%[p])")
    YLOAD("vmovd xmm,m32", avx, "vmovd 4(%[p]), %%xmm0", 32, 8)
    YSTORE("vmovq m64,xmm", avx, "vmovq %%xmm1, 8(%[p])")
    YLOAD("vmovss xmm,m32", avx, "vmovss 8(%[p]), %%xmm0", 32, 16)
    YSTORE("vmovsd m64,xmm", avx, "vmovsd %%xmm1, 16(%[p])")
    YSTORE("vmovntdq m256,ymm", avx, "vmovntdq %%ymm1, 32(%[p])\n\tsfence")
    YLOAD("vmovntdqa ymm,m256", avx2, "vmovntdqa (%[p]), %%ymm0", 32, 32)
    YLOAD("vlddqu ymm,m256", avx, "vlddqu 3(%[p]), %%ymm0", 32, 40)
    YLOAD("vmovlps xmm,xmm,m64", avx, "vmovlps 8(%[p]), %%xmm0, %%xmm0", 32, 16)

    /* ---- EVEX moves (k1 set first; zmm0 starts as vin) ---- */
#define ZLOAD(name, ok, kv, ins, setn) \
    if (form(name, ok)) { set(o, setn); memset(vout, 0x77, 64); \
        __asm__ volatile("vmovdqu64 (%[v]), %%zmm0\n\tkmovq %[k], %%k1\n\t" ins "\n\tvmovdqu64 %%zmm0, (%[w])\n\tvzeroupper" :: [p] "r"(D + o), [w] "r"(vout), [v] "r"(vin), [k] "r"((uint64_t)(kv)) : "memory", "xmm0", "xmm1", "xmm2"); outb(vout, 64); }
#define ZSTORE(name, ok, kv, ins) \
    if (form(name, ok)) { set(o, 64); __asm__ volatile("vmovdqu64 (%[v]), %%zmm1\n\tkmovq %[k], %%k1\n\t" ins "\n\tvzeroupper" :: [p] "r"(D + o), [v] "r"(vin), [k] "r"((uint64_t)(kv)) : "memory", "xmm0", "xmm1", "xmm2"); out(0); }
    ZLOAD("vmovdqu64 zmm,m512", avx512bw, 0, "vmovdqu64 (%[p]), %%zmm0", 64)
    ZSTORE("vmovdqu64 m512,zmm", avx512bw, 0, "vmovdqu64 %%zmm1, (%[p])")
    ZLOAD("vmovdqu32 zmm{k1},m512 mask f0f0", avx512bw, 0xf0f0, "vmovdqu32 (%[p]), %%zmm0%{%%k1%}", 64)
    ZLOAD("vmovdqu64 zmm{k1}{z},m512 mask 3c", avx512bw, 0x3c, "vmovdqu64 (%[p]), %%zmm0%{%%k1%}%{z%}", 64)
    ZSTORE("vmovdqu8 m128{k1},xmm mask ff0", avx512bw, 0x0ff0, "vmovdqu8 %%xmm1, 16(%[p])%{%%k1%}")
    ZLOAD("vmovaps zmm,m512", avx512bw, 0, "vmovaps (%[p]), %%zmm0", 64)

    /* ---- string instructions (DF=0 unless said; ram is ordinary memory) ---- */
    if (form("movsb dev->ram", 1)) { set(o, 8); memset(ram, 0, sizeof ram); uint64_t s = (uint64_t)(D + o + 2), t = (uint64_t)ram; __asm__ volatile("movsb" : "+S"(s), "+D"(t) :: "memory"); out(3, s - (uint64_t)D, t - (uint64_t)ram, ram[0]); }
    if (form("movsl ram->dev", 1)) { memcpy(ram, &B, 8); uint64_t s = (uint64_t)ram, t = (uint64_t)(D + o + 4); __asm__ volatile("movsl" : "+S"(s), "+D"(t) :: "memory"); out(2, s - (uint64_t)ram, t - (uint64_t)D); }
    if (form("movsq dev->dev", 1)) { set(o, 8); uint64_t s = (uint64_t)(D + o), t = (uint64_t)(D + o + 32); __asm__ volatile("movsq" : "+S"(s), "+D"(t) :: "memory"); out(2, s - (uint64_t)D, t - (uint64_t)D); }
    if (form("rep movsb dev->dev n=3", 1)) { set(o, 8); uint64_t s = (uint64_t)(D + o + 1), t = (uint64_t)(D + o + 40); c = 3; __asm__ volatile("rep movsb" : "+S"(s), "+D"(t), "+c"(c) :: "memory"); out(3, s - (uint64_t)D, t - (uint64_t)D, c); }
    if (form("std rep movsw dev->ram n=2", 1)) { set(o, 8); memset(ram, 0, sizeof ram); uint64_t s = (uint64_t)(D + o + 6), t = (uint64_t)(ram + 6); c = 2; __asm__ volatile("std\n\trep movsw\n\tcld" : "+S"(s), "+D"(t), "+c"(c) :: "memory", "cc"); out(5, s - (uint64_t)D, t - (uint64_t)ram, c, *(uint64_t *)ram, 0); }
    if (form("stosl", 1)) { uint64_t t = (uint64_t)(D + o + 8); a = A; __asm__ volatile("stosl" : "+D"(t) : "a"(a) : "memory"); out(1, t - (uint64_t)D); }
    if (form("rep stosw n=3", 1)) { uint64_t t = (uint64_t)(D + o + 2); a = B; c = 3; __asm__ volatile("rep stosw" : "+D"(t), "+c"(c) : "a"(a) : "memory"); out(2, t - (uint64_t)D, c); }
    if (form("rep stosq n=2", 1)) { uint64_t t = (uint64_t)(D + o + 16); a = A; c = 2; __asm__ volatile("rep stosq" : "+D"(t), "+c"(c) : "a"(a) : "memory"); out(2, t - (uint64_t)D, c); }
    if (form("lodsw", 1)) { set(o, 8); uint64_t s = (uint64_t)(D + o + 2); a = A; __asm__ volatile("lodsw" : "+S"(s), "+a"(a) :: "memory"); out(2, s - (uint64_t)D, a); }
    if (form("cmpsb dev,ram", 1)) { set(o, 8); ram[0] = 0x40; uint64_t s = (uint64_t)(D + o + 1), t = (uint64_t)ram; __asm__ volatile("cmpsb\n\t" FL : "+S"(s), "+D"(t), [fl] "=r"(fl) :: "memory", "cc"); out(3, s - (uint64_t)D, t - (uint64_t)ram, FLAGS(fl)); }
    if (form("repe cmpsb dev,dev n=4", 1)) { set(o, 8); wr16(D + o + 32, (uint16_t)pat(o)); wr16(D + o + 34, 0xffff); uint64_t s = (uint64_t)(D + o), t = (uint64_t)(D + o + 32); c = 4; __asm__ volatile("repe cmpsb\n\t" FL : "+S"(s), "+D"(t), "+c"(c), [fl] "=r"(fl) :: "memory", "cc"); out(4, s - (uint64_t)D, t - (uint64_t)D, c, FLAGS(fl)); }
    if (form("scasl", 1)) { set(o, 8); uint64_t t = (uint64_t)(D + o + 4); a = A; __asm__ volatile("scasl\n\t" FL : "+D"(t), [fl] "=r"(fl) : "a"(a) : "memory", "cc"); out(2, t - (uint64_t)D, FLAGS(fl)); }
    if (form("repne scasb n=8", 1)) { set(o, 8); uint64_t t = (uint64_t)(D + o); a = (pat(o) >> 24) & 0xff; c = 8; __asm__ volatile("repne scasb\n\t" FL : "+D"(t), "+c"(c), [fl] "=r"(fl) : "a"(a) : "memory", "cc"); out(3, t - (uint64_t)D, c, FLAGS(fl)); }

    /* ---- more operand sizes and encodings of the classes above ---- */
    if (form("movzx r16,m8", 1)) { set(o, 8); a = A; __asm__ volatile("movzbw 3(%[p]), %w[a]" : [a] "+r"(a) : [p] "r"(D + o) : "memory"); out(1, a); }
    if (form("mov m16,imm16", 1)) { __asm__ volatile("movw $0xbeef, 2(%[p])" :: [p] "r"(D + o) : "memory"); out(0); }
    if (form("imul r32,m32,imm8", 1)) { set(o, 8); __asm__ volatile("imull $-7, 4(%[p]), %k[a]\n\t" FL : [a] "=r"(a), [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(2, a, fl & 0x801); }
    if (form("mul m8", 1)) { set(o, 8); a = A; __asm__ volatile("mulb 5(%[p])\n\t" FL : "+a"(a), [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(2, a, fl & 0x801); }
    if (form("xchg m8,r8", 1)) { set(o, 8); b = B; __asm__ volatile("xchgb %b[b], 6(%[p])" : [b] "+q"(b) : [p] "r"(D + o) : "memory"); out(1, b); }
    if (form("lock cmpxchg m8 equal", 1)) { set(o, 8); a = (pat(o) >> 8) & 0xff; c = B; __asm__ volatile("lock cmpxchgb %b[c], 1(%[p])\n\t" FL : "+a"(a), [fl] "=r"(fl) : [c] "q"(c), [p] "r"(D + o) : "memory", "cc"); out(2, a, FLAGS(fl)); }
    if (form("xadd m16,r16", 1)) { set(o, 8); b = B; __asm__ volatile("xaddw %w[b], 2(%[p])\n\t" FL : [b] "+r"(b), [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(2, b, FLAGS(fl)); }
    if (form("sbb r64,m64 cf=1", 1)) { set(o, 8); a = A; __asm__ volatile("stc\n\tsbbq (%[p]), %[a]\n\t" FL : [a] "+r"(a), [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(2, a, FLAGS(fl)); }
    if (form("test m8,imm8", 1)) { set(o, 8); __asm__ volatile("testb $0x81, 7(%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl) & ~0x10ULL); }
    if (form("lock neg m16", 1)) { set(o, 8); __asm__ volatile("lock negw 4(%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl)); }
    if (form("lock btr m64,imm8", 1)) { set(o, 8); __asm__ volatile("lock btrq $60, (%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl) & 1); }
    if (form("sal m8,cl", 1)) { set(o, 8); __asm__ volatile("salb %%cl, 1(%[p])\n\t" FL : [fl] "=r"(fl) : "c"(3), [p] "r"(D + o) : "memory", "cc"); out(1, FLAGS(fl) & ~0x810ULL); }
    if (form("ror m64,1", 1)) { set(o, 8); __asm__ volatile("rorq $1, (%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, fl & 0x801); }
    if (form("rcr m32,imm8 cf=1", 1)) { set(o, 8); __asm__ volatile("stc\n\trcrl $4, (%[p])\n\t" FL : [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(1, fl & 1); }

    /* ---- addressing: RIP-relative and moffs (generated code), addr32, fs: ---- */
    {
        /* mov eax,[rip+d]; ret  |  mov [rip+d],edi; ret  |  mov eax,[moffs64]; ret  |
         * mov rax,rdi; mov [moffs64],rax; ret: their targets are the next four slots. */
        unsigned s0 = slot;
        uint8_t c1[7] = {0x8b, 0x05, 0, 0, 0, 0, 0xc3}, c2[7] = {0x89, 0x3d, 0, 0, 0, 0, 0xc3};
        uint8_t c3[10] = {0xa1, 0, 0, 0, 0, 0, 0, 0, 0, 0xc3}, c4[14] = {0x48, 0x89, 0xf8, 0x48, 0xa3, 0, 0, 0, 0, 0, 0, 0, 0, 0xc3};
        uint8_t *f1 = JIT + jit_at;
        put32(c1 + 2, (uint32_t)((uint64_t)(D + s0 + 4) - (uint64_t)(f1 + 6)));
        jit(c1, 7);
        uint8_t *f2 = JIT + jit_at;
        put32(c2 + 2, (uint32_t)((uint64_t)(D + s0 + 64 + 8) - (uint64_t)(f2 + 6)));
        jit(c2, 7);
        put64(c3 + 1, (uint64_t)(D + s0 + 128 + 12));
        uint32_t (*ld_moffs)(void) = (uint32_t (*)(void))jit(c3, 10);
        put64(c4 + 5, (uint64_t)(D + s0 + 192 + 16));
        void (*st_moffs)(uint64_t) = (void (*)(uint64_t))jit(c4, 14);
        jit_done();
        uint32_t (*ld_rip)(void) = (uint32_t (*)(void))f1;
        void (*st_rip)(uint32_t) = (void (*)(uint32_t))f2;
        if (form("mov r32,[rip+d32]", 1)) { set(o, 8); out(1, (uint64_t)ld_rip()); }
        if (form("mov [rip+d32],r32", 1)) { st_rip((uint32_t)B); out(0); }
        if (form("mov eax,moffs64", 1)) { set(o, 16); out(1, (uint64_t)ld_moffs()); }
        if (form("mov moffs64,rax", 1)) { st_moffs(A); out(0); }
    }
    if (form("mov r32,m32 addr32", 1)) { set(o, 8); __asm__ volatile("movl 4(%%edi), %%eax" : "=a"(a) : "D"((uint64_t)(D + o)) : "memory"); out(1, a); }
    if (form("add m16,r16 addr32 sib", 1)) { set(o, 8); __asm__ volatile("addw %%si, 2(%%edi,%%ecx,2)\n\t" FL : [fl] "=r"(fl) : "D"((uint64_t)(D + o)), "c"(1ULL), "S"(B) : "memory", "cc"); out(1, FLAGS(fl)); }
    if (form("mov r64,fs:m64", 1)) {
        set(o, 8);
        unsigned long fs;
        if (syscall(SYS_arch_prctl, ARCH_GET_FS, &fs) != 0) return 3;
        c = (uint64_t)(D + o) - fs;
        __asm__ volatile("movq %%fs:(%[c]), %[a]" : [a] "=r"(a) : [c] "r"(c) : "memory");
        out(1, a);
    }
    if (form("xor fs:m32,imm32", 1)) {
        set(o, 8);
        unsigned long fs;
        if (syscall(SYS_arch_prctl, ARCH_GET_FS, &fs) != 0) return 3;
        c = (uint64_t)(D + o + 4) - fs;
        __asm__ volatile("xorl $0x0ff00ff0, %%fs:(%[c])\n\t" FL : [fl] "=r"(fl) : [c] "r"(c) : "memory", "cc");
        out(1, FLAGS(fl));
    }

    /* ---- accesses across the boundary of two device pages (at 12288, past every slot) ---- */
#define X (D + 12288)
    if (form("mov r32,m32 page-straddle", 1)) { set(12280, 16); __asm__ volatile("movl -2(%[p]), %k[a]" : [a] "=r"(a) : [p] "r"(X) : "memory"); out(1, a); }
    if (form("add m64,r64 page-straddle", 1)) { set(12280, 16); __asm__ volatile("addq %[b], -3(%[p])\n\t" FL : [fl] "=r"(fl) : [b] "r"(B), [p] "r"(X) : "memory", "cc"); out(1, FLAGS(fl)); }
    if (form("movdqu m128,xmm page-straddle", 1)) { __asm__ volatile("movdqu (%[v]), %%xmm1\n\tmovdqu %%xmm1, -8(%[p])" :: [v] "r"(vin), [p] "r"(X) : "memory", "xmm1"); out(0); }
    if (form("rep movsb page-straddle n=4", 1)) { set(12280, 16); uint64_t s = (uint64_t)(X - 2), t = (uint64_t)(X + 6); c = 4; __asm__ volatile("rep movsb" : "+S"(s), "+D"(t), "+c"(c) :: "memory"); out(3, s - (uint64_t)D, t - (uint64_t)D, c); }
#undef X

    /* ---- forms the emulator does not complete (issue 14, "Why") ---- */
    if (form("div m32", 1)) { set(o, 8); a = 0x89abcdef; d = 0x1234; __asm__ volatile("divl 4(%[p])" : "+a"(a), "+d"(d) : [p] "r"(D + o) : "memory", "cc"); out(2, a, d); }
    if (form("idiv m64", 1)) { set(o, 8); a = A; d = -1ULL; __asm__ volatile("idivq (%[p])" : "+a"(a), "+d"(d) : [p] "r"(D + o) : "memory", "cc"); out(2, a, d); }
    if (form("popcnt r32,m32", popcnt)) { set(o, 8); __asm__ volatile("popcntl 4(%[p]), %k[a]\n\t" FL : [a] "=r"(a), [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(2, a, FLAGS(fl)); }
    if (form("popcnt r64,m64", popcnt)) { set(o, 8); __asm__ volatile("popcntq (%[p]), %[a]\n\t" FL : [a] "=r"(a), [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(2, a, FLAGS(fl)); }
    if (form("lzcnt r64,m64", lzcnt)) { set(o, 8); wr32(D + o + 4, 0x00012345); __asm__ volatile("lzcntq (%[p]), %[a]\n\t" FL : [a] "=r"(a), [fl] "=r"(fl) : [p] "r"(D + o) : "memory", "cc"); out(2, a, FLAGS(fl) & 0x41); }
    if (form("crc32 r32,m8", sse42)) { set(o, 8); a = 0xffffffff; __asm__ volatile("crc32b 3(%[p]), %k[a]" : [a] "+r"(a) : [p] "r"(D + o) : "memory"); out(1, a); }
    if (form("crc32 r64,m64", sse42)) { set(o, 8); a = 0xffffffff; __asm__ volatile("crc32q (%[p]), %[a]" : [a] "+r"(a) : [p] "r"(D + o) : "memory"); out(1, a); }
    SLOAD("pinsrd xmm,m32,imm8", sse41, "pinsrd $2, 4(%[p]), %%xmm0", 8)
    SSTORE("pextrd m32,xmm,imm8", sse41, "pextrd $3, %%xmm1, 8(%[p])")
    SLOAD("pcmpeqb xmm,m128", 1, "pcmpeqb (%[p]), %%xmm0", 16)
    SLOAD("pminub xmm,m128", 1, "pminub 16(%[p]), %%xmm0", 32)
    SLOAD("addsd xmm,m64", 1, "addsd 8(%[p]), %%xmm0", 16)
    SLOAD("cvtsi2sd xmm,m32", 1, "cvtsi2sdl 4(%[p]), %%xmm0", 8)
    YLOAD("vpbroadcastd xmm,m32", avx2, "vpbroadcastd 4(%[p]), %%xmm0", 32, 8)
    YLOAD("vpaddd ymm,ymm,m256", avx2, "vpaddd (%[p]), %%ymm0, %%ymm0", 32, 32)
    YLOAD("vpcmpeqb ymm,ymm,m256", avx2, "vpcmpeqb (%[p]), %%ymm0, %%ymm0", 32, 32)
    YLOAD("vmaskmovps ymm,ymm,m256", avx, "vmovdqu (%[v]), %%ymm1\n\tvmaskmovps (%[p]), %%ymm1, %%ymm0", 32, 32)
    YSTORE("vmaskmovps m128,xmm,xmm", avx, "vmovdqu 16(%[v]), %%xmm2\n\tvmaskmovps %%xmm2, %%xmm1, 16(%[p])")
    if (form("vpcmpb k,zmm,m512", avx512bw)) { set(o, 64); __asm__ volatile("vmovdqu64 (%[v]), %%zmm0\n\tvpcmpb $4, (%[p]), %%zmm0, %%k2\n\tkmovq %%k2, %[a]\n\tvzeroupper" : [a] "=r"(a) : [p] "r"(D + o), [v] "r"(vin) : "memory", "xmm0", "xmm1", "xmm2"); out(1, a); }
    if (form("fld m32", 1)) { set(o, 8); wr32(D + o + 4, 0x40490fdb); double r; __asm__ volatile("flds 4(%[p])\n\tfstpl %[r]" : [r] "=m"(r) : [p] "r"(D + o) : "memory"); memcpy(&a, &r, 8); out(1, a); }
    if (form("fild m32", 1)) { set(o, 8); double r; __asm__ volatile("fildl 4(%[p])\n\tfstpl %[r]" : [r] "=m"(r) : [p] "r"(D + o) : "memory"); memcpy(&a, &r, 8); out(1, a); }
    if (form("fstp m64", 1)) { double r = 2.5; __asm__ volatile("fldl %[r]\n\tfstpl 8(%[p])" :: [r] "m"(r), [p] "r"(D + o) : "memory"); out(0); }
    if (form("fstps m32", 1)) { double r = -0.75; __asm__ volatile("fldl %[r]\n\tfstps 4(%[p])" :: [r] "m"(r), [p] "r"(D + o) : "memory"); out(0); }
    fclose(OUT);
    return 0;
}

static void *thread_main(void *arg) {
    return (void *)(intptr_t)run_forms((int)(intptr_t)arg);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    if (threads != 1 && threads != 2) return 2;
    for (int i = 0; i < 64; i++) vin[i] = (uint8_t)(0xa5 ^ (i * 7));
    __builtin_cpu_init();
    sse41 = __builtin_cpu_supports("sse4.1"), sse42 = __builtin_cpu_supports("sse4.2");
    avx = __builtin_cpu_supports("avx"), avx2 = __builtin_cpu_supports("avx2");
    avx512 = __builtin_cpu_supports("avx512f");
    avx512bw = avx512 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    movbe = cpu1_ecx(22), cx16 = cpu1_ecx(13), popcnt = cpu1_ecx(23), lzcnt = cpux_ecx(5);
    movdiri = cpu7_ecx(27), movdir64b = cpu7_ecx(28);
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror(argv[1]); return 100; }
    DEV = mmap((void *)LOW, 16384 * threads, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
    if (DEV != (uint8_t *)LOW) { perror("mmap of the device at 0x30000000"); return 100; }
    nthreads = threads;
    pthread_barrier_init(&start, NULL, threads);
    pthread_t th;
    if (threads == 2 && pthread_create(&th, NULL, thread_main, (void *)1) != 0) return 5;
    int rc = run_forms(0);
    if (threads == 2) {
        void *r;
        pthread_join(th, &r);
        if (!rc) rc = (int)(intptr_t)r;
    }
    for (int t = 0; t < threads; t++) fwrite(outbuf[t], 1, outlen[t], stdout);
    return rc;
}
