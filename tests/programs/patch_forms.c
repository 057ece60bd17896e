/* Hot-site patching: every instruction form a trampoline must cover, each at one site (a
 * noinline function holding one instruction of known bytes) executed many times, so that
 * it is patched after its first traps. Each site goes round the targets below: mappings
 * of the device and memory that is never traced (must not be logged, must be read and
 * written as natively): the same instruction in and out of the traced ranges. Before
 * each execution the target's bytes are primed with a value that depends on the site
 * and the iteration; after it they are read back. The program prints, per site, a hash
 * of everything it saw; it prints MISMATCH if two targets gave different results (a
 * file-backed device behaves as memory), so its output is the same natively, trap-only
 * and patched.
 *
 * A third mapping of the device (map C) is used only after the warm-up: sites patched
 * on A and B meet a traced range they have not met before. A shared mapping of an
 * ordinary file (a memfd) is another address the sites must not log.
 *
 * Sites: instruction lengths 2..15 (plain encodings up to 12 bytes, then redundant DS
 * prefixes); loads and stores of widths 1, 2, 4, 8 (mov, movzx, movsx, movsxd, mov imm,
 * movnti, high-byte and REX registers), 16 (movups, movdqu, movaps, movdqa, movntdq,
 * movntps, movntpd), 32 (vmovdqu, vmovups, vmovntdq: AVX only); read-modify-write forms
 * (add, or, inc, xor, and, sub, neg, not, xchg, lock add) and reads with flags (cmp,
 * test, add m,r), their flags checked; a load between a cmp and the branch that reads its
 * flags; rsp-based addressing with live data in the red zone; RIP-relative instructions
 * right before and after a short site; a site at a loop head and one followed by a branch
 * target.
 *
 * usage: patch_forms DEVICE [WARM [ITERATIONS]]   (the device: at least 96 KiB) */
#define _GNU_SOURCE
#include "mmio.h"
#include <dlfcn.h>
#include <sys/syscall.h>
#include <string.h>

#define NI static __attribute__((noinline, noclone))
#define B(...) ".byte " #__VA_ARGS__ "\n\t"

/* What a site function does with the target address T: computes T's effective address
 * from (base, ix) with its own displacement; the driver passes base = T - disp - ix. */
typedef uint64_t (*load_fn)(volatile void *base, uint64_t ix);
typedef void (*store_fn)(volatile void *base, uint64_t ix, uint64_t v);
/* Read-modify-write and read-with-flags: *v in rax before and after; returns flags. */
typedef uint64_t (*rmw_fn)(volatile void *base, uint64_t ix, uint64_t *v);
typedef void (*vec_fn)(volatile void *base, uint64_t ix, uint8_t *buf);

/* Each site instruction sits between the labels NAME_site and NAME_end. */
#define AT(name, ...) #name "_site:\n\t" B(__VA_ARGS__) #name "_end:\n\t"
#define LABELS(name) extern char name##_site[], name##_end[];
#define LOAD(name, ...)                                                                    \
    LABELS(name)                                                                           \
    NI uint64_t name(volatile void *p, uint64_t ix) {                                      \
        uint64_t v;                                                                        \
        __asm__ volatile("xor %%eax, %%eax\n\t" AT(name, __VA_ARGS__) : "=&a"(v) : "D"(p), "c"(ix) \
                         : "memory");                                                      \
        return v;                                                                          \
    }
#define STORE(name, ...)                                                                   \
    LABELS(name)                                                                           \
    NI void name(volatile void *p, uint64_t ix, uint64_t v) {                              \
        __asm__ volatile(AT(name, __VA_ARGS__) : : "a"(v), "D"(p), "c"(ix) : "memory");           \
    }
#define RMW(name, ...)                                                                     \
    LABELS(name)                                                                           \
    NI uint64_t name(volatile void *p, uint64_t ix, uint64_t *v) {                         \
        uint64_t fl, a = *v;                                                               \
        __asm__ volatile(AT(name, __VA_ARGS__) "pushfq\n\tpopq %%rdx"                             \
                         : "=&d"(fl), "+a"(a) : "D"(p), "c"(ix) : "memory", "cc");         \
        *v = a;                                                                            \
        return fl;                                                                         \
    }
/* 16-byte forms through xmm0 (xmm8 for the REX one); buf: 32 bytes in or out. */
#define VLOAD(name, ...)                                                                   \
    LABELS(name)                                                                           \
    NI void name(volatile void *p, uint64_t ix, uint8_t *buf) {                            \
        __asm__ volatile("pxor %%xmm0, %%xmm0\n\t" AT(name, __VA_ARGS__) "movdqu %%xmm0, (%2)"    \
                         : : "D"(p), "c"(ix), "r"(buf) : "memory", "xmm0");                \
    }
#define VSTORE(name, ...)                                                                  \
    LABELS(name)                                                                           \
    NI void name(volatile void *p, uint64_t ix, uint8_t *buf) {                            \
        __asm__ volatile("movdqu (%2), %%xmm0\n\t" AT(name, __VA_ARGS__)                          \
                         : : "D"(p), "c"(ix), "r"(buf) : "memory", "xmm0");                \
    }
#define YLOAD(name, ...)                                                                   \
    LABELS(name)                                                                           \
    NI __attribute__((target("avx"))) void name(volatile void *p, uint64_t ix, uint8_t *buf) { \
        __asm__ volatile("vpxor %%xmm0, %%xmm0, %%xmm0\n\t" AT(name, __VA_ARGS__)                 \
                         "vmovdqu %%ymm0, (%2)\n\tvzeroupper"                              \
                         : : "D"(p), "c"(ix), "r"(buf) : "memory", "xmm0");                \
    }
#define YSTORE(name, ...)                                                                  \
    LABELS(name)                                                                           \
    NI __attribute__((target("avx"))) void name(volatile void *p, uint64_t ix, uint8_t *buf) { \
        __asm__ volatile("vmovdqu (%2), %%ymm0\n\t" AT(name, __VA_ARGS__) "vzeroupper"            \
                         : : "D"(p), "c"(ix), "r"(buf) : "memory", "xmm0");                \
    }

/* Loads (rax zeroed first). The name ends with the instruction's length. */
LOAD(ld8_2, 0x8a, 0x07)                                   /* mov (%rdi),%al */
LOAD(ld8ah_2, 0x8a, 0x27)                                 /* mov (%rdi),%ah */
LOAD(ld32_2, 0x8b, 0x07)                                  /* mov (%rdi),%eax */
LOAD(ld16_3, 0x66, 0x8b, 0x07)                            /* mov (%rdi),%ax */
LOAD(ld64_3, 0x48, 0x8b, 0x07)                            /* mov (%rdi),%rax */
LOAD(movzb_3, 0x0f, 0xb6, 0x07)                           /* movzbl (%rdi),%eax */
LOAD(movsb_3, 0x0f, 0xbe, 0x07)                           /* movsbl (%rdi),%eax */
LOAD(movsbq_4, 0x48, 0x0f, 0xbe, 0x07)                    /* movsbq (%rdi),%rax */
LOAD(movswq_4, 0x48, 0x0f, 0xbf, 0x07)                    /* movswq (%rdi),%rax */
LOAD(movzw_4, 0x0f, 0xb7, 0x47, 0x10)                     /* movzwl 0x10(%rdi),%eax */
LOAD(movslq_4, 0x48, 0x63, 0x47, 0x08)                    /* movslq 0x8(%rdi),%rax */
LOAD(ld64_5, 0x48, 0x8b, 0x44, 0x0f, 0x10)                /* mov 0x10(%rdi,%rcx),%rax */
LOAD(ld32_6, 0x8b, 0x87, 0x00, 0x01, 0x00, 0x00)          /* mov 0x100(%rdi),%eax */
LOAD(ld64_7, 0x48, 0x8b, 0x87, 0x00, 0x01, 0x00, 0x00)    /* mov 0x100(%rdi),%rax */
LOAD(ld64_8, 0x48, 0x8b, 0x84, 0x0f, 0x00, 0x01, 0x00, 0x00) /* mov 0x100(%rdi,%rcx),%rax */
LOAD(ld64_9, 0x3e, 0x48, 0x8b, 0x84, 0x0f, 0x00, 0x01, 0x00, 0x00) /* ds: the same */
LABELS(ldr8_3)
NI uint64_t ldr8_3(volatile void *p, uint64_t ix) { /* mov (%rdi),%r8 */
    uint64_t v;
    __asm__ volatile(AT(ldr8_3, 0x4c, 0x8b, 0x07) "mov %%r8, %0" : "=r"(v) : "D"(p), "c"(ix) : "memory", "r8");
    return v;
}

/* Stores (value in rax). */
STORE(st8_2, 0x88, 0x07)                                  /* mov %al,(%rdi) */
STORE(st8ah_2, 0x88, 0x27)                                /* mov %ah,(%rdi) */
STORE(st32_2, 0x89, 0x07)                                 /* mov %eax,(%rdi) */
STORE(st16_3, 0x66, 0x89, 0x07)                           /* mov %ax,(%rdi) */
STORE(st64_3, 0x48, 0x89, 0x07)                           /* mov %rax,(%rdi) */
STORE(st32_4, 0x89, 0x44, 0x0f, 0x10)                     /* mov %eax,0x10(%rdi,%rcx) */
STORE(movnti32_3, 0x0f, 0xc3, 0x07)                       /* movnti %eax,(%rdi) */
STORE(movnti64_5, 0x48, 0x0f, 0xc3, 0x47, 0x10)           /* movnti %rax,0x10(%rdi) */
STORE(sti8_3, 0xc6, 0x07, 0xa5)                           /* movb $0xa5,(%rdi) */
STORE(sti8_4, 0xc6, 0x47, 0x10, 0x5a)                     /* movb $0x5a,0x10(%rdi) */
STORE(sti16_5, 0x66, 0xc7, 0x07, 0x34, 0x12)              /* movw $0x1234,(%rdi) */
STORE(sti32_6, 0xc7, 0x07, 0x78, 0x56, 0x34, 0x12)        /* movl $0x12345678,(%rdi) */
STORE(sti32_7, 0xc7, 0x47, 0x10, 0x78, 0x56, 0x34, 0x92)  /* movl $0x92345678,0x10(%rdi) */
STORE(sti64_8, 0x48, 0xc7, 0x47, 0x10, 0xf0, 0xde, 0xbc, 0x9a) /* movq $-0x65432110,0x10(%rdi) */
STORE(sti16_9, 0x66, 0xc7, 0x87, 0x00, 0x01, 0x00, 0x00, 0xcd, 0xab) /* movw $0xabcd,0x100(%rdi) */
STORE(sti32_10, 0xc7, 0x87, 0x00, 0x01, 0x00, 0x00, 0x11, 0x22, 0x33, 0x44)
STORE(sti64_11, 0x48, 0xc7, 0x87, 0x00, 0x01, 0x00, 0x00, 0x55, 0x66, 0x77, 0x08)
STORE(sti64_12, 0x48, 0xc7, 0x84, 0x0f, 0x00, 0x01, 0x00, 0x00, 0x99, 0xaa, 0xbb, 0x7c)
STORE(sti64_13, 0x3e, 0x48, 0xc7, 0x84, 0x0f, 0x00, 0x01, 0x00, 0x00, 0x98, 0xaa, 0xbb, 0xfc)
STORE(sti64_14, 0x3e, 0x3e, 0x48, 0xc7, 0x84, 0x0f, 0x00, 0x01, 0x00, 0x00, 0x97, 0xaa, 0xbb, 0x7c)
STORE(sti64_15, 0x3e, 0x3e, 0x3e, 0x48, 0xc7, 0x84, 0x0f, 0x00, 0x01, 0x00, 0x00, 0x96, 0xaa, 0xbb, 0xfc)
LABELS(str9_3)
NI void str9_3(volatile void *p, uint64_t ix, uint64_t v) { /* mov %r9,(%rdi) */
    __asm__ volatile("mov %0, %%r9\n\t" AT(str9_3, 0x4c, 0x89, 0x0f) : : "r"(v), "D"(p), "c"(ix) : "memory", "r9");
}

/* Read-modify-write and reads with flags (flags captured right after). */
RMW(add_2, 0x01, 0x07)                                    /* add %eax,(%rdi) */
RMW(sub_2, 0x29, 0x07)                                    /* sub %eax,(%rdi) */
RMW(xor_2, 0x31, 0x07)                                    /* xor %eax,(%rdi) */
RMW(and_2, 0x21, 0x07)                                    /* and %eax,(%rdi) */
RMW(orl1_3, 0x83, 0x0f, 0x01)                             /* orl $1,(%rdi) */
RMW(incq_3, 0x48, 0xff, 0x07)                             /* incq (%rdi) */
RMW(addb_3, 0x80, 0x07, 0x7f)                             /* addb $0x7f,(%rdi) */
RMW(subw_3, 0x66, 0x29, 0x07)                             /* sub %ax,(%rdi) */
RMW(andq_8, 0x48, 0x81, 0x67, 0x10, 0xf0, 0xff, 0x00, 0xff) /* andq $-0xff0010,0x10(%rdi) */
RMW(negl_2, 0xf7, 0x1f)                                   /* negl (%rdi) */
RMW(notq_3, 0x48, 0xf7, 0x17)                             /* notq (%rdi) */
RMW(xchg_2, 0x87, 0x07)                                   /* xchg %eax,(%rdi) */
RMW(lockadd_3, 0xf0, 0x01, 0x07)                          /* lock add %eax,(%rdi) */
RMW(cmpl0_3, 0x83, 0x3f, 0x00)                            /* cmpl $0,(%rdi) */
RMW(cmpq_3, 0x48, 0x39, 0x07)                             /* cmp %rax,(%rdi) */
RMW(test_2, 0x85, 0x07)                                   /* test %eax,(%rdi) */
RMW(addload_2, 0x03, 0x07)                                /* add (%rdi),%eax */

/* 16 bytes. */
VLOAD(movups_ld_3, 0x0f, 0x10, 0x07)
VLOAD(movdqu_ld_4, 0xf3, 0x0f, 0x6f, 0x07)
VLOAD(movaps_ld_3, 0x0f, 0x28, 0x07)
VLOAD(movdqa_ld_4, 0x66, 0x0f, 0x6f, 0x07)
VLOAD(movdqu_ld_9, 0xf3, 0x0f, 0x6f, 0x84, 0x0f, 0x00, 0x01, 0x00, 0x00) /* 0x100(%rdi,%rcx) */
LABELS(movdqa8_ld_10)
NI void movdqa8_ld_10(volatile void *p, uint64_t ix, uint8_t *buf) { /* movdqa 0x100(%rdi,%rcx),%xmm8 */
    __asm__ volatile("pxor %%xmm8, %%xmm8\n\t" AT(movdqa8_ld_10, 0x66, 0x44, 0x0f, 0x6f, 0x84, 0x0f, 0x00, 0x01, 0x00, 0x00)
                     "movdqu %%xmm8, (%2)" : : "D"(p), "c"(ix), "r"(buf) : "memory", "xmm8");
}
VSTORE(movups_st_3, 0x0f, 0x11, 0x07)
VSTORE(movdqu_st_4, 0xf3, 0x0f, 0x7f, 0x07)
VSTORE(movaps_st_3, 0x0f, 0x29, 0x07)
VSTORE(movdqa_st_4, 0x66, 0x0f, 0x7f, 0x07)
VSTORE(movntdq_4, 0x66, 0x0f, 0xe7, 0x07)
VSTORE(movntps_3, 0x0f, 0x2b, 0x07)
VSTORE(movntpd_4, 0x66, 0x0f, 0x2b, 0x07)
VSTORE(movntdq_9, 0x66, 0x0f, 0xe7, 0x84, 0x0f, 0x00, 0x01, 0x00, 0x00)

/* 32 bytes (AVX). */
YLOAD(vmovdqu_ld_4, 0xc5, 0xfe, 0x6f, 0x07)
YLOAD(vmovups_ld_4, 0xc5, 0xfc, 0x10, 0x07)
YLOAD(vmovdqu_ld_9, 0xc5, 0xfe, 0x6f, 0x84, 0x0f, 0x00, 0x01, 0x00, 0x00)
YSTORE(vmovdqu_st_4, 0xc5, 0xfe, 0x7f, 0x07)
YSTORE(vmovntdq_4, 0xc5, 0xfd, 0xe7, 0x07)
YSTORE(vmovdqu_st_5, 0xc5, 0xfe, 0x7f, 0x47, 0x10) /* vmovdqu %ymm0,0x10(%rdi) */

struct load { const char *name; load_fn f; int disp, ix; };
struct store { const char *name; store_fn f; int disp, ix; };
struct rmw { const char *name; rmw_fn f; int disp, ix; uint64_t flags; };
struct vec { const char *name; vec_fn f; int disp, ix, store, avx; };

static const struct load loads[] = {
    {"ld8_2", ld8_2, 0, 0}, {"ld8ah_2", ld8ah_2, 0, 0}, {"ld32_2", ld32_2, 0, 0},
    {"ld16_3", ld16_3, 0, 0}, {"ld64_3", ld64_3, 0, 0}, {"movzb_3", movzb_3, 0, 0},
    {"movsb_3", movsb_3, 0, 0}, {"movsbq_4", movsbq_4, 0, 0}, {"movswq_4", movswq_4, 0, 0},
    {"movzw_4", movzw_4, 0x10, 0}, {"movslq_4", movslq_4, 8, 0}, {"ld64_5", ld64_5, 0x10, 8},
    {"ld32_6", ld32_6, 0x100, 0}, {"ld64_7", ld64_7, 0x100, 0}, {"ld64_8", ld64_8, 0x100, 8},
    {"ld64_9", ld64_9, 0x100, 8}, {"ldr8_3", ldr8_3, 0, 0},
};
static const struct store stores[] = {
    {"st8_2", st8_2, 0, 0}, {"st8ah_2", st8ah_2, 0, 0}, {"st32_2", st32_2, 0, 0},
    {"st16_3", st16_3, 0, 0}, {"st64_3", st64_3, 0, 0}, {"st32_4", st32_4, 0x10, 8},
    {"movnti32_3", movnti32_3, 0, 0}, {"movnti64_5", movnti64_5, 0x10, 0},
    {"sti8_3", sti8_3, 0, 0}, {"sti8_4", sti8_4, 0x10, 0}, {"sti16_5", sti16_5, 0, 0},
    {"sti32_6", sti32_6, 0, 0}, {"sti32_7", sti32_7, 0x10, 0}, {"sti64_8", sti64_8, 0x10, 0},
    {"sti16_9", sti16_9, 0x100, 0}, {"sti32_10", sti32_10, 0x100, 0},
    {"sti64_11", sti64_11, 0x100, 0}, {"sti64_12", sti64_12, 0x100, 8},
    {"sti64_13", sti64_13, 0x100, 8}, {"sti64_14", sti64_14, 0x100, 8},
    {"sti64_15", sti64_15, 0x100, 8}, {"str9_3", str9_3, 0, 0},
};
/* Flag bits compared: CF PF AF ZF SF OF, but AF where the instruction leaves it undefined. */
#define ARITH 0x8d5
#define LOGIC 0x8c5
static const struct rmw rmws[] = {
    {"add_2", add_2, 0, 0, ARITH}, {"sub_2", sub_2, 0, 0, ARITH}, {"xor_2", xor_2, 0, 0, LOGIC},
    {"and_2", and_2, 0, 0, LOGIC}, {"orl1_3", orl1_3, 0, 0, LOGIC}, {"incq_3", incq_3, 0, 0, ARITH},
    {"addb_3", addb_3, 0, 0, ARITH}, {"subw_3", subw_3, 0, 0, ARITH},
    {"andq_8", andq_8, 0x10, 0, LOGIC}, {"negl_2", negl_2, 0, 0, ARITH},
    {"notq_3", notq_3, 0, 0, ARITH}, {"xchg_2", xchg_2, 0, 0, ARITH},
    {"lockadd_3", lockadd_3, 0, 0, ARITH}, {"cmpl0_3", cmpl0_3, 0, 0, ARITH},
    {"cmpq_3", cmpq_3, 0, 0, ARITH}, {"test_2", test_2, 0, 0, LOGIC},
    {"addload_2", addload_2, 0, 0, ARITH},
};
static const struct vec vecs[] = {
    {"movups_ld_3", movups_ld_3, 0, 0, 0, 0}, {"movdqu_ld_4", movdqu_ld_4, 0, 0, 0, 0},
    {"movaps_ld_3", movaps_ld_3, 0, 0, 0, 0}, {"movdqa_ld_4", movdqa_ld_4, 0, 0, 0, 0},
    {"movdqu_ld_9", movdqu_ld_9, 0x100, 8, 0, 0}, {"movdqa8_ld_10", movdqa8_ld_10, 0x100, 8, 0, 0},
    {"movups_st_3", movups_st_3, 0, 0, 1, 0}, {"movdqu_st_4", movdqu_st_4, 0, 0, 1, 0},
    {"movaps_st_3", movaps_st_3, 0, 0, 1, 0}, {"movdqa_st_4", movdqa_st_4, 0, 0, 1, 0},
    {"movntdq_4", movntdq_4, 0, 0, 1, 0}, {"movntps_3", movntps_3, 0, 0, 1, 0},
    {"movntpd_4", movntpd_4, 0, 0, 1, 0}, {"movntdq_9", movntdq_9, 0x100, 8, 1, 0},
    {"vmovdqu_ld_4", vmovdqu_ld_4, 0, 0, 0, 1}, {"vmovups_ld_4", vmovups_ld_4, 0, 0, 0, 1},
    {"vmovdqu_ld_9", vmovdqu_ld_9, 0x100, 8, 0, 1}, {"vmovdqu_st_4", vmovdqu_st_4, 0, 0, 1, 1},
    {"vmovntdq_4", vmovntdq_4, 0, 0, 1, 1}, {"vmovdqu_st_5", vmovdqu_st_5, 0x10, 0, 1, 1},
};
#define N(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t mix(uint64_t h, uint64_t v) { return (h ^ v) * 0x100000001b3ull + (h >> 29); }

/* The value primed into word w of a target before iteration i of site s. */
static uint64_t prime_val(int s, int i, int w) {
    uint64_t x = (uint64_t)(s + 1) * 0x9e3779b97f4a7c15ull + (uint64_t)i * 0xbf58476d1ce4e5b9ull + (uint64_t)w;
    return x ^ (x >> 31);
}
/* Fills the 64-byte slot at t through plain 8-byte stores (sites of their own). */
static void prime(volatile uint8_t *t, int s, int i) {
    for (int w = 0; w < 8; w++) wr64(t + 8 * w, prime_val(s, i, w));
}
/* Reads the slot back. */
static uint64_t readback(volatile uint8_t *t, uint64_t h) {
    for (int w = 0; w < 8; w++) h = mix(h, rd64(t + 8 * w));
    return h;
}

/* The targets: map A of the device, the heap, map B of the device, a shared mapping of
 * an ordinary file (a memfd: never traced) and map C of the device, used only in the
 * measured pass (a patched site meets a traced range it never met before). */
#define TARGETS 5
static uint8_t *targets[TARGETS];
static const char *target_names[TARGETS] = {"device", "heap", "device-b", "shared-file", "device-c"};
static int ntargets = TARGETS;
static int iters = 12, failed;

/* Site number s: its slot is at 0x400 + 64 * s in every target. */
static volatile uint8_t *slot(int t, int s) { return targets[t] + 0x400 + 64 * s; }
static void *basefor(volatile uint8_t *t, int disp, int ix) { return (void *)(t - disp - ix); }

static void report(const char *name, uint64_t h[TARGETS]) {
    printf("%-14s %016llx\n", name, (unsigned long long)h[0]);
    for (int t = 1; t < ntargets; t++)
        if (h[t] != h[0]) {
            printf("MISMATCH %s: %s %016llx, %s %016llx\n", name, target_names[0],
                   (unsigned long long)h[0], target_names[t], (unsigned long long)h[t]);
            failed = 1;
        }
}

static int site_no;

static void run_load(const struct load *l) {
    int s = site_no++;
    uint64_t h[TARGETS] = {0};
    for (int i = 0; i < iters; i++)
        for (int t = 0; t < ntargets; t++) {
            volatile uint8_t *a = slot(t, s);
            prime(a, s, i);
            h[t] = mix(h[t], l->f(basefor(a, l->disp, l->ix), (uint64_t)l->ix));
        }
    report(l->name, h);
}

static void run_store(const struct store *st) {
    int s = site_no++;
    uint64_t h[TARGETS] = {0};
    for (int i = 0; i < iters; i++)
        for (int t = 0; t < ntargets; t++) {
            volatile uint8_t *a = slot(t, s);
            prime(a, s, i);
            st->f(basefor(a, st->disp, st->ix), (uint64_t)st->ix, prime_val(s, i, 9) * 0x10001);
            h[t] = readback(a, h[t]);
        }
    report(st->name, h);
}

static void run_rmw(const struct rmw *r) {
    int s = site_no++;
    uint64_t h[TARGETS] = {0};
    for (int i = 0; i < iters; i++)
        for (int t = 0; t < ntargets; t++) {
            volatile uint8_t *a = slot(t, s);
            prime(a, s, i);
            /* Operands that give carries, overflows, zero and negative results. */
            uint64_t v = i % 4 == 0 ? 0 : i % 4 == 1 ? rd64(a) : i % 4 == 2 ? ~rd64(a) + 1 : prime_val(s, i, 10);
            if (i % 6 == 5) wr64(a, 0);
            uint64_t fl = r->f(basefor(a, r->disp, r->ix), (uint64_t)r->ix, &v);
            h[t] = mix(mix(h[t], fl & r->flags), v);
            h[t] = readback(a, h[t]);
        }
    report(r->name, h);
}

static int have_avx;

static void run_vec(const struct vec *v) {
    int s = site_no++;
    if (v->avx && !have_avx) {
        printf("%-14s skipped: the CPU has no AVX\n", v->name);
        return;
    }
    uint64_t h[TARGETS] = {0};
    for (int i = 0; i < iters; i++)
        for (int t = 0; t < ntargets; t++) {
            volatile uint8_t *a = slot(t, s);
            uint8_t buf[32];
            prime(a, s, i);
            for (int k = 0; k < 32; k++) buf[k] = (uint8_t)(prime_val(s, i, 20 + k) >> 8);
            v->f(basefor(a, v->disp, v->ix), (uint64_t)v->ix, buf);
            for (int k = 0; k < 32; k++) h[t] = mix(h[t], buf[k]);
            h[t] = readback(a, h[t]);
        }
    report(v->name, h);
}

/* A load between a cmp and the branch (and the flag readers) after it. */
LABELS(flags_live)
NI uint64_t flags_live(volatile void *p, uint32_t x, uint32_t y, uint64_t *fl) {
    uint64_t v, f, taken = 0;
    __asm__ volatile("cmp %k4, %k3\n\t" AT(flags_live, 0x8b, 0x07) /* mov (%rdi),%eax */
                     "pushfq\n\tpopq %1\n\t"
                     "jne 1f\n\tadd $1, %2\n"
                     "1:"
                     : "=&a"(v), "=&r"(f), "+r"(taken) : "r"(x), "r"(y), "D"(p) : "memory", "cc");
    *fl = (f & ARITH) | taken << 32;
    return v;
}
/* The same with adc consuming CF after the load. */
LABELS(flags_adc)
NI uint64_t flags_adc(volatile void *p, uint32_t x, uint32_t y) {
    uint64_t v;
    __asm__ volatile("cmp %k2, %k1\n\t" AT(flags_adc, 0x48, 0x8b, 0x07) /* mov (%rdi),%rax */
                     "adc $0, %%rax"
                     : "=&a"(v) : "r"(x), "r"(y), "D"(p) : "memory", "cc");
    return v;
}

/* rsp-based: the index register holds (target - rsp). */
LABELS(rsp_ld_3)
NI uint64_t rsp_ld_3(volatile void *p) {
    uint64_t v;
    __asm__ volatile("mov %%rdi, %%rcx\n\tsub %%rsp, %%rcx\n\txor %%eax, %%eax\n\t"
                     AT(rsp_ld_3, 0x8b, 0x04, 0x0c) /* mov (%rsp,%rcx),%eax */
                     : "=&a"(v) : "D"(p) : "rcx", "memory");
    return v;
}
LABELS(rsp_ld_5)
NI uint64_t rsp_ld_5(volatile void *p) {
    uint64_t v;
    __asm__ volatile("lea -0x10(%%rdi), %%rcx\n\tsub %%rsp, %%rcx\n\t"
                     AT(rsp_ld_5, 0x48, 0x8b, 0x44, 0x0c, 0x10) /* mov 0x10(%rsp,%rcx),%rax */
                     : "=&a"(v) : "D"(p) : "rcx", "memory");
    return v;
}
LABELS(rsp_st_3)
NI void rsp_st_3(volatile void *p, uint64_t x) {
    __asm__ volatile("mov %%rdi, %%rcx\n\tsub %%rsp, %%rcx\n\t"
                     AT(rsp_st_3, 0x89, 0x04, 0x0c) /* mov %eax,(%rsp,%rcx) */
                     : : "a"(x), "D"(p) : "rcx", "memory");
}
/* Live data in the red zone below rsp while an rsp-based and a plain site run. */
LABELS(redzone_rsp)
LABELS(redzone_rdi)
NI uint64_t redzone(volatile void *p, uint64_t *sum) {
    uint64_t v, s;
    __asm__ volatile("lea -256(%%rsp), %%rsp\n\t"
                     "movq $0x1111, -8(%%rsp)\n\tmovq $0x2222, -64(%%rsp)\n\tmovq $0x4444, -128(%%rsp)\n\t"
                     "mov %%rdi, %%rcx\n\tsub %%rsp, %%rcx\n\t"
                     AT(redzone_rsp, 0x8b, 0x04, 0x0c) /* mov (%rsp,%rcx),%eax */
                     AT(redzone_rdi, 0x03, 0x47, 0x04) /* add 4(%rdi),%eax */
                     "mov -8(%%rsp), %%rdx\n\tadd -64(%%rsp), %%rdx\n\tadd -128(%%rsp), %%rdx\n\t"
                     "lea 256(%%rsp), %%rsp"
                     : "=&a"(v), "=&d"(s) : "D"(p) : "rcx", "memory", "cc");
    *sum = s;
    return v;
}

/* RIP-relative instructions around short sites (a pun's jump covers their bytes). */
volatile uint32_t g_rip = 0x01000000;
LABELS(rip_after)
NI uint64_t rip_after(volatile void *p) {
    uint64_t v;
    __asm__ volatile("xor %%eax, %%eax\n\t" AT(rip_after, 0x8a, 0x07) /* mov (%rdi),%al */
                     "movl g_rip(%%rip), %%edx\n\tadd %%rdx, %%rax"
                     : "=&a"(v) : "D"(p) : "rdx", "memory", "cc");
    return v;
}
LABELS(rip_before)
NI uint64_t rip_before(volatile void *p) {
    uint64_t v;
    __asm__ volatile("movl g_rip(%%rip), %%edx\n\t" AT(rip_before, 0x8b, 0x07) /* mov (%rdi),%eax */
                     "movl %%edx, g_rip(%%rip)\n\tadd %%rdx, %%rax"
                     : "=&a"(v) : "D"(p) : "rdx", "memory", "cc");
    return v;
}
LABELS(rip_store)
NI void rip_store(volatile void *p) {
    __asm__ volatile("movl g_rip(%%rip), %%eax\n\t" AT(rip_store, 0x89, 0x07) /* mov %eax,(%rdi) */
                     "movl %%eax, g_rip(%%rip)"
                     : : "D"(p) : "rax", "memory");
}
/* A site at a loop head (a branch target itself), four times per call. */
LABELS(loop_head)
NI uint64_t loop_head(volatile void *p) {
    uint64_t s = 0;
    __asm__ volatile("mov $4, %%r8d\n"
                     "1:\t" AT(loop_head, 0x8b, 0x07) /* mov (%rdi),%eax */
                     "add %%rax, %0\n\tadd $8, %%rdi\n\tdec %%r8d\n\tjnz 1b"
                     : "+d"(s), "+D"(p) : : "rax", "r8", "memory", "cc");
    return s;
}
/* A short site followed by a branch target: the jump around it lands right after it. */
LABELS(then_label)
NI uint64_t then_label(volatile void *p, int skip) {
    uint64_t v;
    __asm__ volatile("xor %%eax, %%eax\n\tmov $0x77, %%al\n\ttest %2, %2\n\tjnz 2f\n\t"
                     AT(then_label, 0x8a, 0x07) /* mov (%rdi),%al */
                     "2:\tmovzbl %%al, %%eax"
                     : "=&a"(v) : "D"(p), "r"(skip) : "memory", "cc");
    return v;
}

static void run_special(void) {
    int s = site_no++;
    uint64_t h[TARGETS] = {0};
    for (int i = 0; i < iters; i++)
        for (int t = 0; t < ntargets; t++) {
            volatile uint8_t *a = slot(t, s);
            prime(a, s, i);
            uint64_t fl, sum;
            uint32_t x = (uint32_t)prime_val(s, i, 30), y = i % 3 == 0 ? x : (uint32_t)prime_val(s, i, 31);
            h[t] = mix(h[t], flags_live(a, x, y, &fl));
            h[t] = mix(h[t], fl);
            h[t] = mix(h[t], flags_adc(a + 8, x, y));
            h[t] = mix(h[t], rsp_ld_3(a + 16));
            h[t] = mix(h[t], rsp_ld_5(a + 24));
            rsp_st_3(a + 32, prime_val(s, i, 32));
            h[t] = mix(h[t], redzone(a + 40, &sum));
            h[t] = mix(h[t], sum);
            h[t] = readback(a, h[t]);
        }
    report("flags+rsp", h);
    s = site_no++;
    memset(h, 0, sizeof h);
    for (int i = 0; i < iters; i++)
        for (int t = 0; t < ntargets; t++) {
            volatile uint8_t *a = slot(t, s);
            prime(a, s, i);
            h[t] = mix(h[t], rip_after(a));
            h[t] = mix(h[t], rip_before(a + 8));
            rip_store(a + 16);
            h[t] = mix(h[t], loop_head(a + 24));
            h[t] = mix(h[t], then_label(a + 1, (i & 3) == 3));
            h[t] = readback(a, h[t]);
        }
    report("rip+branches", h);
}

/* Every site, whether a trampoline must cover it (all but the implicitly locked xchg and
 * lock add, which may stay on the trap path), and its original bytes. */
struct site { const char *name; uint8_t *at, *end; int required; uint8_t orig[16]; };
#define S(n) {#n, (uint8_t *)n##_site, (uint8_t *)n##_end, 1, {0}}
#define OPT(n) {#n, (uint8_t *)n##_site, (uint8_t *)n##_end, 0, {0}}
static struct site sites[] = {
    S(ld8_2), S(ld8ah_2), S(ld32_2), S(ld16_3), S(ld64_3), S(movzb_3), S(movsb_3), S(movsbq_4),
    S(movswq_4), S(movzw_4), S(movslq_4), S(ld64_5), S(ld32_6), S(ld64_7), S(ld64_8), S(ld64_9),
    S(ldr8_3),
    S(st8_2), S(st8ah_2), S(st32_2), S(st16_3), S(st64_3), S(st32_4), S(movnti32_3),
    S(movnti64_5), S(sti8_3), S(sti8_4), S(sti16_5), S(sti32_6), S(sti32_7), S(sti64_8),
    S(sti16_9), S(sti32_10), S(sti64_11), S(sti64_12), S(sti64_13), S(sti64_14), S(sti64_15),
    S(str9_3),
    S(add_2), S(sub_2), S(xor_2), S(and_2), S(orl1_3), S(incq_3), S(addb_3), S(subw_3),
    S(andq_8), S(negl_2), S(notq_3), OPT(xchg_2), OPT(lockadd_3), S(cmpl0_3), S(cmpq_3),
    S(test_2), S(addload_2),
    S(movups_ld_3), S(movdqu_ld_4), S(movaps_ld_3), S(movdqa_ld_4), S(movdqu_ld_9),
    S(movdqa8_ld_10), S(movups_st_3), S(movdqu_st_4), S(movaps_st_3), S(movdqa_st_4),
    S(movntdq_4), S(movntps_3), S(movntpd_4), S(movntdq_9),
    S(vmovdqu_ld_4), S(vmovups_ld_4), S(vmovdqu_ld_9), S(vmovdqu_st_4), S(vmovntdq_4),
    S(vmovdqu_st_5),
    S(flags_live), S(flags_adc), S(rsp_ld_3), S(rsp_ld_5), S(rsp_st_3), S(redzone_rsp),
    S(redzone_rdi), S(rip_after), S(rip_before), S(rip_store), S(loop_head), S(then_label),
};

/* Whether a site's bytes were rewritten (a jump, a punned jump, an int3 being installed). */
static int rewritten(const struct site *t) {
    return memcmp(t->at, t->orig, (size_t)(t->end - t->at)) != 0;
}
static int skipped(const struct site *t) { return t->name[0] == 'v' && !have_avx; }

static void run_all(void) {
    site_no = 0;
    for (size_t k = 0; k < N(loads); k++) run_load(&loads[k]);
    for (size_t k = 0; k < N(stores); k++) run_store(&stores[k]);
    for (size_t k = 0; k < N(rmws); k++) run_rmw(&rmws[k]);
    for (size_t k = 0; k < N(vecs); k++) run_vec(&vecs[k]);
    run_special();
}

int main(int argc, char **argv) {
    /* usage: patch_forms DEVICE [WARM [ITERATIONS]]. With PATCH_FORMS_REPORT=FILE in the
     * environment it waits (at most 3 s) after the warm-up pass until every required site
     * has been rewritten, and writes to FILE one line per site: NAME 0xADDRESS LENGTH
     * patched|unpatched (state after the warm-up wait) patched|unpatched (at the end). */
    int warm = argc > 2 ? atoi(argv[2]) : 4;
    if (argc > 3) iters = atoi(argv[3]);
    const char *report_path = getenv("PATCH_FORMS_REPORT");
    for (size_t k = 0; k < N(sites); k++)
        memcpy(sites[k].orig, sites[k].at, (size_t)(sites[k].end - sites[k].at));
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror(argv[1]); return 100; }
    targets[0] = mmap(NULL, 0x8000, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    targets[2] = mmap(NULL, 0x8000, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0x8000);
    targets[4] = mmap(NULL, 0x8000, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0x10000);
    targets[1] = aligned_alloc(4096, 0x8000);
    int mfd = (int)syscall(SYS_memfd_create, "patch_forms", 0);
    if (mfd < 0 || ftruncate(mfd, 0x8000)) { perror("memfd"); return 100; }
    targets[3] = mmap(NULL, 0x8000, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    for (int t = 0; t < TARGETS; t++)
        if (targets[t] == MAP_FAILED || !targets[t]) { perror("map"); return 100; }
    memset(targets[1], 0, 0x8000);
    __builtin_cpu_init();
    have_avx = __builtin_cpu_supports("avx");
    int main_iters = iters;
    iters = warm;
    ntargets = TARGETS - 1;
    run_all();
    int before[N(sites)];
    if (report_path)
        for (int ms = 0; ms < 3000; ms++) {
            int all = 1;
            for (size_t k = 0; k < N(sites); k++)
                if (sites[k].required && !skipped(&sites[k]) && !rewritten(&sites[k])) all = 0;
            if (all) break;
            usleep(1000);
        }
    for (size_t k = 0; k < N(sites); k++) before[k] = rewritten(&sites[k]);
    /* Present only when traced: what follows is the measured pass. */
    void (*mark)(const char *) = (void (*)(const char *))dlsym(RTLD_DEFAULT, "mmio_trace_mark");
    if (mark) mark("patch_forms: measured pass");
    iters = main_iters;
    ntargets = TARGETS;
    run_all();
    printf("g_rip %08x sites %d\n", g_rip, site_no);
    if (report_path) {
        FILE *f = fopen(report_path, "w");
        if (!f) { perror(report_path); return 100; }
        for (size_t k = 0; k < N(sites); k++)
            fprintf(f, "%s %p %d %s %s%s\n", sites[k].name, (void *)sites[k].at,
                    (int)(sites[k].end - sites[k].at), before[k] ? "patched" : "unpatched",
                    rewritten(&sites[k]) ? "patched" : "unpatched",
                    sites[k].required && !skipped(&sites[k]) ? " required" : "");
        fclose(f);
    }
    return failed ? 1 : 0;
}
