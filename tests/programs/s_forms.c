/* Instruction forms on a traced device (argv[1], 2 pages), for comparing the routes:
 * loads and stores of 1, 2, 4, 8, 16 and (with AVX) 32 bytes, immediate stores,
 * zero/sign-extending loads, read-modify-write (plain and locked: add, xadd, xchg,
 * cmpxchg that succeeds and one that fails, bts), test/cmp (read only), push/pop of a
 * device word, and a REP STOS and a REP MOVS. Prints what it read; exits 7. */
#include "mmio.h"

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    uint8_t *bar = map_device(argv[1], 8192);
    uint64_t acc = 0;
    wr8(bar + 0x1, 0x11);
    wr16(bar + 0x2, 0x2222);
    wr32(bar + 0x4, 0x44444444);
    wr64(bar + 0x8, 0x8888888888888888ull);
    acc += rd8(bar + 0x1) + rd16(bar + 0x2) + rd32(bar + 0x4) + rd64(bar + 0x8);
    __asm__ volatile("movq $-5, 0x10(%0)" :: "r"(bar) : "memory");
    uint32_t zx, sx;
    __asm__ volatile("movzwl 0x2(%1), %0" : "=r"(zx) : "r"(bar) : "memory");
    __asm__ volatile("movswl 0x12(%1), %0" : "=r"(sx) : "r"(bar) : "memory");
    __asm__ volatile("addl $3, 0x20(%0)" :: "r"(bar) : "memory", "cc");
    __asm__ volatile("lock addl $5, 0x24(%0)" :: "r"(bar) : "memory", "cc");
    uint32_t x = 9;
    __asm__ volatile("lock xaddl %0, 0x28(%1)" : "+r"(x) : "r"(bar) : "memory", "cc");
    uint64_t y = 0xabcdef;
    __asm__ volatile("xchgq %0, 0x30(%1)" : "+r"(y) : "r"(bar) : "memory");
    uint32_t old = rd32(bar + 0x38), want = old, ok;
    __asm__ volatile("lock cmpxchgl %2, 0x38(%3)\n\tsete %b1" : "+a"(want), "=q"(ok) : "r"(0x77u), "r"(bar) : "memory", "cc");
    uint32_t bad = 1;
    __asm__ volatile("lock cmpxchgl %1, 0x3c(%2)" : "+a"(bad) : "r"(0x66u), "r"(bar) : "memory", "cc");
    __asm__ volatile("lock btsl $3, 0x40(%0)" :: "r"(bar) : "memory", "cc");
    __asm__ volatile("testl $1, 0x44(%0)\n\tcmpq $7, 0x48(%0)" :: "r"(bar) : "memory", "cc");
    __asm__ volatile("pushq 0x50(%0)\n\tpopq 0x58(%0)" :: "r"(bar) : "memory");
    __asm__ volatile("pcmpeqd %%xmm0, %%xmm0\n\tmovdqu %%xmm0, 0x60(%0)\n\tmovdqu 0x100(%0), %%xmm1\n\tmovq %%xmm1, %%rax\n\tmovq %%rax, 0x70(%0)" :: "r"(bar) : "xmm0", "xmm1", "rax", "memory");
    if (__builtin_cpu_supports("avx")) {
        __asm__ volatile("vmovdqu 0x200(%0), %%ymm2\n\tvmovdqu %%ymm2, 0x240(%0)" :: "r"(bar) : "xmm2", "memory");
    }
    void *d = bar + 0x400;
    uint64_t n = 9, v = 0x5a5a;
    __asm__ volatile("rep stosl" : "+D"(d), "+c"(n) : "a"(v) : "memory");
    void *s = bar + 0x1000, *t = bar + 0x1100;
    n = 5;
    __asm__ volatile("rep movsq" : "+S"(s), "+D"(t), "+c"(n) :: "memory");
    acc += zx + sx + x + y + ok + bad + rd32(bar + 0x1000);
    printf("acc=%llx\n", (unsigned long long)acc);
    return 7;
}
