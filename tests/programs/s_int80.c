/* A 64-bit program making a 32-bit system call (int $0x80: i386 mmap2 of an anonymous
 * page), which the ptrace route cannot trace and must say so. Prints whether the call
 * worked (it does, natively and traced). */
#include "mmio.h"

int main(void) {
    long r;
    /* mmap2(NULL, 4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) */
    __asm__ volatile("int $0x80"
                     : "=a"(r)
                     : "a"(192), "b"(0), "c"(4096), "d"(3), "S"(0x22), "D"(-1)
                     : "memory");
    int ok = r > 0 && r < 0xfffff000L;
    if (ok) ((volatile char *)r)[0] = 1;
    printf("mmap2 %s\n", ok ? "ok" : "failed");
    return 0;
}
