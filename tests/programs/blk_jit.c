/* Code rewritten at the same address between two device accesses (a JIT reusing its
 * buffer): one RWX page holds a single function at its start, rewritten before every
 * call with one of four instructions of different lengths and widths:
 *   0: mov eax, [rdi]        (8b 07)        read 4
 *   1: mov [rdi], rsi        (48 89 37)     write 8
 *   2: movzx eax, byte [rdi] (0f b6 07)     read 1
 *   3: mov [rdi], si         (66 89 37)     write 2
 * each followed by ret. Call k (0 <= k < N) runs form k % 4 at device offset 0x10 * k
 * with value 0x1122334455667700 + k (writes). Prints the sum of what the reads
 * returned. Usage: blk_jit DEV N (a 1-page device, N <= 256). */
#include "mmio.h"
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    uint8_t *bar = map_device(argv[1], 4096);
    int n = atoi(argv[2]);
    if (n < 0 || n > 256) return 2;
    uint8_t *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED) { perror("mmap"); return 3; }
    static const uint8_t forms[4][5] = {
        {0x8b, 0x07, 0xc3},
        {0x48, 0x89, 0x37, 0xc3},
        {0x0f, 0xb6, 0x07, 0xc3},
        {0x66, 0x89, 0x37, 0xc3},
    };
    typedef uint64_t (*fn)(volatile void *, uint64_t);
    uint64_t sum = 0;
    for (int k = 0; k < n; k++) {
        memcpy(code, forms[k % 4], 5);
        __asm__ volatile("" ::: "memory");
        uint64_t r = ((fn)(void *)code)(bar + 0x10 * k, 0x1122334455667700ull + (uint64_t)k);
        if (k % 4 == 0) sum += (uint32_t)r;
        if (k % 4 == 2) sum += (uint8_t)r;
    }
    printf("%llx\n", (unsigned long long)sum);
    return 0;
}
