/* A device removed under the driver: the device file is truncated to one page while two
 * are mapped, so every access to the second page raises SIGBUS (BUS_ADRERR), as a
 * hot-unplugged PCI device does. Each instruction of the class (loads, stores, RMW,
 * locked, SSE/AVX/AVX-512, MOVS/REP MOVS/REP STOS between two device pages, a page-split
 * load, a misaligned locked op the emulator steps) is run against it; the output must be
 * the same natively and under `record` (with or without --no-alias).
 *
 * Usage: sigbus_ops DEV MODE [OP]
 *   MODE skip: the SIGBUS handler checks the context (RIP on the instruction, registers
 *              as before it, si_addr/si_code, CR2) and skips the instruction;
 *   MODE map:  hot-unplug handler: looks the mapping up by si_addr, maps anonymous
 *              memory (filled with 0x5a) over its page with MAP_FIXED, returns: the
 *              instruction re-executes against it; the device page is mapped back;
 *   MODE mapall: the same over the whole two-page mapping (as DPDK does), mapped back;
 *   MODE jmp:  the handler leaves with siglongjmp;
 *   MODE none: no handler (OP names the one instruction run): killed by SIGBUS;
 *   MODE blocked: the skip handler, but SIGBUS blocked: killed by SIGBUS;
 *   MODE segv: real SIGSEGVs (writes to a PROT_READ device mapping, a MOVS whose ordinary
 *              destination is read-only), skipped by the handler.
 * Pointers are printed as offsets from the device mapping (or "ro+", "plain+"). */
#include "mmio.h"
#include <setjmp.h>
#include <stdarg.h>
#include <signal.h>
#include <string.h>
#include <ucontext.h>

#define PAGE 4096
static int fd;
static uint8_t *bar;         /* two pages: the second is beyond the end of the file */
static uint8_t *ro;          /* the first page again, read-only */
static uint8_t *plain;       /* an ordinary read-only page */
static volatile uint64_t op_start, op_end;
static uint64_t in_rax, in_rcx, in_rdx, in_rsi, in_rdi;
static const char *mode;
static sigjmp_buf env;
static int faults;

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...) {
    char b[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    if (write(1, b, (size_t)n) < 0) _exit(9);
}

/* "+off" for pointers into one of our mappings, else the number in hex. */
static const char *ptr(uint64_t v, char *b) {
    if (v - (uint64_t)bar < 2 * PAGE) sprintf(b, "+%#lx", (unsigned long)(v - (uint64_t)bar));
    else if (v - (uint64_t)ro < PAGE) sprintf(b, "ro+%#lx", (unsigned long)(v - (uint64_t)ro));
    else if (v - (uint64_t)plain < PAGE) sprintf(b, "plain+%#lx", (unsigned long)(v - (uint64_t)plain));
    else sprintf(b, "%#lx", (unsigned long)v);
    return b;
}

static void on_fault(int sig, siginfo_t *si, void *ucv) {
    ucontext_t *uc = ucv;
    greg_t *g = uc->uc_mcontext.gregs;
    char a[32], s[32], d[32], cr2[32];
    faults++;
    uint64_t xmm0 = 0;
    memcpy(&xmm0, &uc->uc_mcontext.fpregs->_xmm[0], 8);
    out("  sig %d code %d addr %s cr2 %s err %#lx rip %s len %lu\n", sig, si->si_code,
        ptr((uint64_t)si->si_addr, a), ptr((uint64_t)g[REG_CR2], cr2), (unsigned long)g[REG_ERR],
        (uint64_t)g[REG_RIP] == op_start ? "=insn" : "elsewhere",
        (unsigned long)(op_end - op_start));
    out("  ctx rax %#lx rcx %#lx rdx %#lx rsi %s rdi %s xmm0 %#lx\n", (unsigned long)g[REG_RAX],
        (unsigned long)g[REG_RCX], (unsigned long)g[REG_RDX], ptr((uint64_t)g[REG_RSI], s),
        ptr((uint64_t)g[REG_RDI], d), (unsigned long)xmm0);
    if ((uint64_t)g[REG_RIP] != op_start) _exit(5);
    if (!strcmp(mode, "jmp")) siglongjmp(env, 1);
    if (!strcmp(mode, "map") || !strcmp(mode, "mapall")) {
        /* Look the mapping up by si_addr, as a hot-unplug handler does; map dummy memory
         * over the page (map) or, as DPDK does, over the whole resource (mapall). */
        uint64_t at = (uint64_t)si->si_addr;
        if (at - (uint64_t)bar >= 2 * PAGE) { out("  no mapping holds si_addr\n"); _exit(6); }
        int all = !strcmp(mode, "mapall");
        void *page = all ? (void *)bar : (void *)(at & ~(uint64_t)(PAGE - 1));
        size_t len = all ? 2 * PAGE : PAGE;
        void *m = mmap(page, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (m != page) _exit(7);
        memset(m, 0x5a, len);
        return;
    }
    g[REG_RIP] = (greg_t)op_end; /* skip */
}

/* Runs `insn` with RAX, RCX, RDX, RSI, RDI (and XMM0 = RDX) preset; records its start and
 * end addresses for the handler; prints the registers after. */
#define OP(name, insn)                                                                     \
    do {                                                                                   \
        if (only && strcmp(only, name)) break;                                             \
        uint64_t rax = in_rax, rcx = in_rcx, rdx = in_rdx, rsi = in_rsi, rdi = in_rdi;     \
        out("%s\n", name);                                                                 \
        if (sigsetjmp(env, 1)) {                                                           \
            out("  jumped out\n");                                                         \
            break;                                                                         \
        }                                                                                  \
        __asm__ volatile("leaq 1f(%%rip), %%r8\n\tmovq %%r8, %[s]\n\t"                   \
                         "leaq 2f(%%rip), %%r8\n\tmovq %%r8, %[e]\n\t"                     \
                         "movq %%rdx, %%xmm0\n\t"                                          \
                         "1: " insn "\n2:\n\t"                                             \
                         "movq %%xmm0, %%r9\n\t"                                           \
                         "cmpq %%r9, %%rdx\n\t"                                            \
                         "je 3f\n\t"                                                       \
                         "movq %%r9, %%rdx\n"                                              \
                         "3:\n"                                                            \
                         : "+a"(rax), "+c"(rcx), "+d"(rdx), "+S"(rsi), "+D"(rdi),          \
                           [s] "=m"(op_start), [e] "=m"(op_end)                            \
                         :                                                                 \
                         : "r8", "r9", "rbx", "xmm0", "memory", "cc");                     \
        char s_[32], d_[32];                                                               \
        out("  after rax %#lx rcx %#lx rdx %#lx rsi %s rdi %s\n", (unsigned long)rax,      \
            (unsigned long)rcx, (unsigned long)rdx, ptr(rsi, s_), ptr(rdi, d_));           \
        after(name);                                                                       \
    } while (0)

static void set(uint64_t rax, uint64_t rcx, uint64_t rdx, uint8_t *rsi, uint8_t *rdi) {
    in_rax = rax; in_rcx = rcx; in_rdx = rdx; in_rsi = (uint64_t)rsi; in_rdi = (uint64_t)rdi;
}

/* After each instruction in map mode: show what it left in the dummy page, then map the
 * (gone) device page back. */
static void after(const char *name) {
    (void)name;
    int all = !strcmp(mode, "mapall");
    if (strcmp(mode, "map") && !all) return;
    uint8_t *p1 = bar + PAGE;
    out("  page1 %016lx %016lx\n", (unsigned long)*(volatile uint64_t *)(p1 + 0x40),
        (unsigned long)*(volatile uint64_t *)(p1 + 0x48));
    if (all) {
        if (mmap(bar, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) != bar) _exit(8);
    } else if (mmap(p1, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, PAGE) != p1) {
        _exit(8);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    mode = argv[2];
    const char *only = argc > 3 ? argv[3] : NULL;
    fd = open(argv[1], O_RDWR);
    if (fd < 0 || ftruncate(fd, 2 * PAGE) != 0) return 100;
    bar = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ro = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 0);
    plain = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (bar == MAP_FAILED || ro == MAP_FAILED || plain == MAP_FAILED) return 100;
    if (ftruncate(fd, PAGE) != 0) return 100; /* the device is gone: page 1 raises SIGBUS */
    if (strcmp(mode, "none")) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGBUS, &sa, NULL);
        sigaction(SIGSEGV, &sa, NULL);
    }
    if (!strcmp(mode, "blocked")) {
        /* A fault whose signal is blocked: the kernel kills, handler or not. */
        sigset_t b;
        sigemptyset(&b);
        sigaddset(&b, SIGBUS);
        sigprocmask(SIG_BLOCK, &b, NULL);
    }
    uint8_t *p0 = bar, *p1 = bar + PAGE;
    uint64_t q = 0x1122334455667788ull;

    if (!strcmp(mode, "segv")) {
        set(0x77, 0, q, ro + 0x10, 0);
        OP("segv-store-ro", "movl %%eax, (%%rsi)");
        OP("segv-add-ro", "addl %%eax, (%%rsi)");
        OP("segv-lock-ro", "lock xaddl %%eax, (%%rsi)");
        OP("segv-sse-store-ro", "movdqu %%xmm0, (%%rsi)");
        set(0x77, 0, q, p0 + 0x100, plain + 0x20);
        OP("segv-movs-to-ro", "movsq");
        set(0x77, 4, q, p0 + 0x100, plain + 0x20);
        OP("segv-rep-movs-to-ro", "rep movsl");
        out("faults %d\n", faults);
        out("ro %08x\n", rd32(ro + 0x10));
        return 0;
    }

    set(0x1111, 0x2222, q, p1 + 0x40, p1 + 0x48);
    OP("load8", "movb (%%rsi), %%al");
    OP("load16", "movw (%%rsi), %%ax");
    OP("load32", "movl (%%rsi), %%eax");
    OP("load64", "movq (%%rsi), %%rax");
    OP("movzx", "movzbl (%%rsi), %%eax");
    OP("cmp", "cmpl $1, (%%rsi)");
    OP("store8", "movb %%dl, (%%rsi)");
    OP("store16", "movw %%dx, (%%rsi)");
    OP("store32", "movl %%edx, (%%rsi)");
    OP("store64", "movq %%rdx, (%%rsi)");
    OP("store-imm", "movl $0xabcdef, (%%rsi)");
    OP("add-rmw", "addl %%edx, (%%rsi)");
    OP("inc-rmw", "incq (%%rsi)");
    OP("lock-xadd", "lock xaddl %%edx, (%%rsi)");
    OP("xchg", "xchgq %%rdx, (%%rsi)");
    OP("lock-cmpxchg", "lock cmpxchgq %%rdx, (%%rsi)");
    OP("lock-or", "lock orl $0x100, (%%rsi)");
    OP("cmpxchg16b", "lock cmpxchg16b (%%rsi)");
    OP("sse-load", "movdqu (%%rsi), %%xmm0");
    OP("sse-store", "movdqu %%xmm0, (%%rsi)");
    if (__builtin_cpu_supports("avx")) {
        OP("avx-load", "vmovdqu (%%rsi), %%ymm0");
        OP("avx-store", "vmovdqu %%ymm0, (%%rsi)");
    }
    if (__builtin_cpu_supports("avx512f")) {
        OP("avx512-load", "vmovdqu64 (%%rsi), %%zmm0");
        OP("avx512-store", "vmovdqu64 %%zmm0, (%%rsi)");
    }
    /* The second access faults: the first (a device read) has happened, nothing else. */
    set(0x1111, 0x2222, q, p0 + 0x100, p1 + 0x40);
    OP("movs-to-gone", "movsq");
    set(0x1111, 0x2222, q, p1 + 0x40, p0 + 0x100);
    OP("movs-from-gone", "movsq");
    /* REP: the elements before the page boundary complete, RCX/RSI/RDI say so. */
    set(0x1111, 32, q, p0 + 0x100, p1 - 16);
    OP("rep-movsb", "rep movsb");
    set(0x1111, 8, q, p0 + 0x100, p1 - 8);
    OP("rep-movsl", "rep movsl");
    set(0x5151, 6, q, 0, p1 - 8);
    OP("rep-stosl", "rep stosl");
    /* An 8-byte load across the boundary; a misaligned locked op (stepped). */
    set(0x1111, 0x2222, q, p1 - 4, 0);
    OP("split-load64", "movq (%%rsi), %%rax");
    OP("split-store64", "movq %%rdx, (%%rsi)"); /* nothing of it reaches page 0 */
    set(0x1111, 0x2222, q, p1 + 0x42, 0);
    OP("lock-add-misaligned", "lock addl %%edx, -0x4(%%rsi)");
    out("faults %d\n", faults);
    /* What the device holds where the REP forms wrote before the boundary. */
    uint64_t lo = rd64(p1 - 16), hi = rd64(p1 - 8);
    out("page0 %016lx %016lx\n", (unsigned long)lo, (unsigned long)hi);
    return 0;
}
