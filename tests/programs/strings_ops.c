/* One string instruction (MOVS, STOS, LODS, SCAS, CMPS; with or without REP) over a
 * device mapping, with its operands, count, direction flag and address size chosen on
 * the command line, so that the test can compute every access it must make and compare
 * the log with it; then the registers as the instruction left them.
 *
 * Usage: strings_ops DEV OP WIDTH COUNT SRC DST [FLAGS] [TAIL]
 *   OP     movs | stos | lods | scas | cmps
 *   WIDTH  1 | 2 | 4 | 8
 *   COUNT  RCX (decimal); "-" runs the instruction without REP
 *   SRC, DST  d+OFF (the device mapping), r+OFF (an ordinary buffer), t+OFF (the page
 *          after the device mapping, see TAIL) or - (unused); OFF decimal or 0x hex
 *   FLAGS  a combination of: d (DF=1, descending), a (32-bit addresses: the mappings
 *          are placed below 4 GiB), e (REPE instead of REP/REPNE), n (REPNE), x (no
 *          SIGSEGV/SIGBUS handler: a fault kills), or "-"
 *   TAIL   what follows the device mapping (LEN = 64 KiB of DEV): anon (an ordinary
 *          page; the default), none (unmapped: SIGSEGV), dev (DEV again at file offset
 *          LEN, a second mapping), bus (the mapping goes on past the end of the file:
 *          SIGBUS; DEV must then be LEN bytes long)
 * A fault is caught (unless x), reported with the registers at the fault, and the
 * program goes on with siglongjmp. Output: one line of registers (pointers as
 * d+/r+/t+ offsets), and the FNV-1a hash of the ordinary buffer.
 * The ordinary buffer's byte k starts as (k * 7 + 3) & 0xff. */
#include "mmio.h"
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <ucontext.h>

#define LEN (64 * 1024)
#define PAGE 4096
#define RAM (64 * 1024)

static uint8_t *dev, *tail, *ram;
static sigjmp_buf env;

static void ptr(uint64_t v, char *b) {
    /* Just below the device mapping (a descending string's end) counts as the device's. */
    if (v + PAGE - (uint64_t)dev < LEN + PAGE && v < (uint64_t)dev)
        sprintf(b, "d-%#lx", (unsigned long)((uint64_t)dev - v));
    else if (v - (uint64_t)dev < LEN) sprintf(b, "d+%#lx", (unsigned long)(v - (uint64_t)dev));
    else if (v - (uint64_t)tail < PAGE) sprintf(b, "t+%#lx", (unsigned long)(v - (uint64_t)tail));
    else if (v - (uint64_t)ram < RAM) sprintf(b, "r+%#lx", (unsigned long)(v - (uint64_t)ram));
    else sprintf(b, "%#lx", (unsigned long)v);
}

static void on_fault(int sig, siginfo_t *si, void *ucv) {
    ucontext_t *uc = ucv;
    greg_t *g = uc->uc_mcontext.gregs;
    char a[64], s[64], d[64];
    ptr((uint64_t)si->si_addr, a);
    ptr((uint64_t)g[REG_RSI], s);
    ptr((uint64_t)g[REG_RDI], d);
    printf("fault %s code %d addr %s err %#lx rsi %s rdi %s rcx %#lx rax %#lx\n",
           sig == SIGSEGV ? "SIGSEGV" : "SIGBUS", si->si_code, a,
           (unsigned long)g[REG_ERR] & 2, s, d, (unsigned long)g[REG_RCX],
           (unsigned long)g[REG_RAX]);
    siglongjmp(env, 1);
}

static uint64_t where(const char *s) {
    if (!strcmp(s, "-")) return 0;
    uint64_t off = strtoull(s + 2, NULL, 0);
    switch (s[0]) {
    case 'd': return (uint64_t)dev + off;
    case 'r': return (uint64_t)ram + off;
    case 't': return (uint64_t)tail + off;
    }
    fprintf(stderr, "bad operand %s\n", s);
    exit(2);
}

/* One instruction per (prefix, op, width); REP/REPE and REPNE share encodings 0xf3/0xf2. */
/* DF is set and the flags taken inside the asm: compiled code between could change them. */
#define INS(pfx, name)                                                                    \
    __asm__ volatile("test %[dn], %[dn]\n\tjz 1f\n\tstd\n1:\t" pfx name                 \
                     "\n\tpushf\n\tpop %[fl]\n\tcld"                                         \
                     : "+S"(rsi), "+D"(rdi), "+c"(rcx), "+a"(rax), [fl] "=r"(fl)          \
                     : [dn] "r"(down)                                                     \
                     : "memory", "cc")
#define WIDTHS(pfx, op)                                                                   \
    switch (width) {                                                                      \
    case 1: INS(pfx, op "b"); break;                                                      \
    case 2: INS(pfx, op "w"); break;                                                      \
    case 4: INS(pfx, op "l"); break;                                                      \
    default: INS(pfx, op "q"); break;                                                     \
    }
#define OPS(pfx)                                                                          \
    if (!strcmp(op, "movs")) { WIDTHS(pfx, "movs") }                                      \
    else if (!strcmp(op, "stos")) { WIDTHS(pfx, "stos") }                                 \
    else if (!strcmp(op, "lods")) { WIDTHS(pfx, "lods") }                                 \
    else if (!strcmp(op, "scas")) { WIDTHS(pfx, "scas") }                                 \
    else { WIDTHS(pfx, "cmps") }

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: strings_ops DEV OP WIDTH COUNT SRC DST [FLAGS] [TAIL]\n");
        return 2;
    }
    const char *op = argv[2];
    int width = atoi(argv[3]);
    int rep = strcmp(argv[4], "-") != 0;
    uint64_t count = rep ? strtoull(argv[4], NULL, 0) : 0;
    const char *flags = argc > 7 ? argv[7] : "-";
    const char *tailkind = argc > 8 ? argv[8] : "anon";
    uint64_t down = strchr(flags, 'd') != NULL;
    int a32 = strchr(flags, 'a') != NULL;
    int repe = strchr(flags, 'e') != NULL, repne = strchr(flags, 'n') != NULL;
    setvbuf(stdout, NULL, _IONBF, 0);

    /* Reserve the device mapping and its tail page, then map over the reservation. */
    int extra = a32 ? MAP_32BIT : 0;
    uint8_t *base = mmap(NULL, LEN + PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | extra, -1, 0);
    ram = mmap(NULL, RAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | extra, -1, 0);
    if (base == MAP_FAILED || ram == MAP_FAILED) { perror("mmap"); return 100; }
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror(argv[1]); return 100; }
    int bus = !strcmp(tailkind, "bus");
    dev = mmap(base, bus ? LEN + PAGE : LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    if (dev == MAP_FAILED) { perror("mmap dev"); return 100; }
    tail = base + LEN;
    if (!strcmp(tailkind, "anon")) {
        if (mmap(tail, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) { perror("mmap tail"); return 100; }
        memset(tail, 0x5a, PAGE);
    } else if (!strcmp(tailkind, "dev")) {
        if (mmap(tail, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, LEN) == MAP_FAILED) { perror("mmap tail"); return 100; }
    } else if (!strcmp(tailkind, "none")) {
        munmap(tail, PAGE);
    }
    for (int k = 0; k < RAM; k++) ram[k] = (uint8_t)(k * 7 + 3);

    if (!strchr(flags, 'x')) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSEGV, &sa, NULL);
        sigaction(SIGBUS, &sa, NULL);
    }

    uint64_t rsi = where(argv[5]), rdi = where(argv[6]), rcx = count;
    uint64_t rax = 0x1122334455667788ull;
    if (!strcmp(op, "scas")) rax = 0; /* REPNE SCAS looks for a zero... */
    if (a32 && ((rsi | rdi) >> 32)) { fprintf(stderr, "not below 4 GiB\n"); return 100; }
    uint64_t fl = 0;
    if (!sigsetjmp(env, 1)) {
        if (!rep) {
            if (a32) { OPS("addr32 ") } else { OPS("") }
        } else if (repe) {
            if (a32) { OPS("addr32 repe ") } else { OPS("repe ") }
        } else if (repne) {
            if (a32) { OPS("addr32 repne ") } else { OPS("repne ") }
        } else {
            if (a32) { OPS("addr32 rep ") } else { OPS("rep ") }
        }
        char s[64], d[64];
        ptr(rsi, s);
        ptr(rdi, d);
        printf("done rsi %s rdi %s rcx %#lx rax %#lx zf %d\n", s, d, (unsigned long)rcx,
               (unsigned long)rax, (int)(fl >> 6 & 1));
    } else {
        __asm__ volatile("cld");
    }
    uint32_t h = 2166136261u;
    for (int k = 0; k < RAM; k++) h = (h ^ ram[k]) * 16777619u;
    printf("ram %08x\n", h);
    return 0;
}
