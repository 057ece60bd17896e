/* Each locked read-modify-write form once on device words, with known values; prints the
 * register results. Device word k holds 0x1000 + k. */
#include "mmio.h"
int main(int argc, char **argv) {
    uint8_t *bar = map_device(argv[1], 4096);
    uint32_t a;
    uint64_t q;
    /* lock cmpxchg, failing: expected 0 vs 0x1000; eax gets 0x1000; the old value is
     * written back. */
    a = 0;
    __asm__ volatile("lock cmpxchgl %2, (%1)" : "+a"(a) : "r"(bar), "r"(0x55u) : "memory", "cc");
    printf("cmpxchg-fail eax=%#x\n", a);
    /* lock cmpxchg, succeeding: word 1 (0x1001) becomes 0x77. */
    a = 0x1001;
    __asm__ volatile("lock cmpxchgl %2, (%1)" : "+a"(a) : "r"(bar + 4), "r"(0x77u) : "memory", "cc");
    printf("cmpxchg-ok eax=%#x\n", a);
    /* xchg: word 2 (0x1002) becomes 0x99. */
    a = 0x99;
    __asm__ volatile("xchgl %0, (%1)" : "+r"(a) : "r"(bar + 8) : "memory");
    printf("xchg old=%#x\n", a);
    /* lock xadd: word 3 (0x1003) becomes 0x1013. */
    a = 0x10;
    __asm__ volatile("lock xaddl %0, (%1)" : "+r"(a) : "r"(bar + 12) : "memory", "cc");
    printf("xadd old=%#x\n", a);
    /* lock or / lock bts / lock incq on words 4, 5, 6-7. */
    __asm__ volatile("lock orl $0xf0000, (%0)" :: "r"(bar + 16) : "memory", "cc");
    __asm__ volatile("lock btsl $31, (%0)" :: "r"(bar + 20) : "memory", "cc");
    __asm__ volatile("lock incq (%0)" :: "r"(bar + 24) : "memory", "cc");
    /* lock cmpxchg8b on words 8-9: edx:eax = 0x1009:0x1008 matches; ecx:ebx stored. */
    uint32_t lo = 0x1008, hi = 0x1009;
    __asm__ volatile("lock cmpxchg8b (%2)" : "+a"(lo), "+d"(hi) : "r"(bar + 32), "b"(0xbbu), "c"(0xccu) : "memory", "cc");
    q = rd64(bar + 24);
    uint64_t c8 = rd64(bar + 32);
    uint32_t o = rd32(bar + 16), b = rd32(bar + 20);
    printf("or=%#x bts=%#x inc=%#llx c8b=%#llx\n", o, b, (unsigned long long)q,
           (unsigned long long)c8);
    return 0;
}
