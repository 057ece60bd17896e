/* Makes one PROT_NONE page, prints "ready" and "addr=HEX", waits for a byte of stdin, then
 * touches the page with five instructions a tracer must emulate from outside (a 64-bit load,
 * an SSE load, an AVX load, an AVX store, a locked add) and prints what the loads got:
 * "rax=HEX xmm3=HEX ymm5=HEX" (bytes in memory order). */
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

static void hex(const char *tag, const uint8_t *p, int n) {
    printf("%s=", tag);
    for (int i = 0; i < n; i++)
        printf("%02x", p[i]);
}

int main(void) {
    uint8_t *p = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return 2;
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("ready\naddr=%lx\n", (unsigned long)p);
    char c;
    if (read(0, &c, 1) != 1)
        return 3;
    uint64_t a;
    uint8_t x[16], y[32], z[32];
    for (int i = 0; i < 32; i++)
        z[i] = (uint8_t)(0xd0 + i);
    __asm__ volatile("movq (%[p]), %%rax\n\t"
                     "movq %%rax, %[a]\n\t"
                     "movdqu 16(%[p]), %%xmm3\n\t"
                     "movdqu %%xmm3, (%[x])\n\t"
                     "vmovdqu 32(%[p]), %%ymm5\n\t"
                     "vmovdqu %%ymm5, (%[y])\n\t"
                     "vmovdqu (%[z]), %%ymm7\n\t"
                     "vmovdqu %%ymm7, 96(%[p])\n\t"
                     "lock addq $5, 128(%[p])\n\t"
                     "vzeroupper\n\t"
                     : [a] "=m"(a)
                     : [p] "r"(p), [x] "r"(x), [y] "r"(y), [z] "r"(z)
                     : "rax", "xmm3", "xmm5", "xmm7", "memory");
    printf("rax=%016lx ", (unsigned long)a);
    hex("xmm3", x, 16);
    printf(" ");
    hex("ymm5", y, 32);
    printf("\n");
    return 0;
}
