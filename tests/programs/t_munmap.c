/* t_munmap DEV libc|sys|asm: maps DEV (libc's mmap; with sys `syscall(SYS_mmap)`; with
 * asm an inline `syscall` instruction no library can see), writes and reads a register,
 * then unmaps it with a raw system call (`syscall(SYS_munmap)`, or with asm the inline
 * instruction) and maps anonymous memory at the same address the same way. The new memory is the program's own: its writes must read back, and the
 * device must not see them. Prints what it read back; exits with status 9. */
#include "mmio.h"
#include <string.h>
#include <sys/syscall.h>

static long raw6(long n, long a, long b, long c, long d, long e, long f) {
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
    return r;
}

int main(int argc, char **argv) {
    if (argc < 3) return 100;
    int asm_mode = strcmp(argv[2], "asm") == 0;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) return 100;
    uint8_t *d;
    if (asm_mode)
        d = (uint8_t *)raw6(SYS_mmap, 0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    else if (strcmp(argv[2], "sys") == 0)
        d = (uint8_t *)syscall(SYS_mmap, 0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    else
        d = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if ((long)d < 0 && (long)d > -4096) return 100;
    wr32(d + 0x40, 0x55);
    uint32_t before = rd32(d + 0x40);
    long r;
    if (asm_mode)
        r = raw6(SYS_munmap, (long)d, 4096, 0, 0, 0, 0);
    else
        r = syscall(SYS_munmap, d, 4096);
    if (r != 0) return 102;
    void *a;
    if (asm_mode)
        a = (void *)raw6(SYS_mmap, (long)d, 4096, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    else
        a = (void *)syscall(SYS_mmap, d, 4096, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (a != d) return 103;
    wr32(d + 0x40, 0xdeadbeef);
    wr32(d + 0x80, 0xcafef00d);
    printf("before %x heap %x %x\n", before, rd32(d + 0x40), rd32(d + 0x80));
    return 9;
}
