/* Loads known patterns into every register the ptrace engine's Regs exposes (GPRs, XMM/YMM
 * or ZMM0-31, opmasks, three x87 registers), spins while R15 holds FLAG, then stores them
 * all and prints them, so a test can read them while it spins and change some.
 * argv[1]: "avx512" (ZMM0-31, k0-7), "avx2" (YMM0-15), or "vzeroupper" (YMM0-15 loaded, then
 * VZEROUPPER: the upper halves are in their initial state, XSTATE_BV bit 2 clear).
 * Output after the spin: "vN HEX" (64 bytes, little-endian byte order), "kN HEX",
 * "gN HEX" for GPRs in hardware order except RSP (4) and R15 (15). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

uint8_t pat[32 * 64] __attribute__((aligned(64)));
uint8_t out[32 * 64 + 8 * 8 + 16 * 8] __attribute__((aligned(64)));

void probe512(uint8_t *o);
void probe256(uint8_t *o);
void probe256z(uint8_t *o);

#define FLAG "0x0f0f0f0f0f0f0f0f"
#define GPRS                                                                                \
    "mov rax, 0xa0a0a0a0a0a0a000\n mov rcx, 0xa1a1a1a1a1a1a101\n"                           \
    "mov rdx, 0xa2a2a2a2a2a2a202\n mov rbx, 0xa3a3a3a3a3a3a303\n"                           \
    "mov rbp, 0xa5a5a5a5a5a5a505\n mov rsi, 0xa6a6a6a6a6a6a606\n"                           \
    "mov rdi, 0xa7a7a7a7a7a7a707\n mov r8, 0xa8a8a8a8a8a8a808\n"                            \
    "mov r9, 0xa9a9a9a9a9a9a909\n mov r10, 0xaaaaaaaaaaaaaa0a\n"                            \
    "mov r11, 0xabababababab0b0b\n mov r12, 0xacacacacacacac0c\n"                           \
    "mov r13, 0xadadadadadadad0d\n mov r14, 0xaeaeaeaeaeaeae0e\n"                           \
    "mov r15, " FLAG "\n"                                                                   \
    "fninit\n fld1\n fldpi\n fldl2t\n"                                                      \
    "1: mov r15, r15\n cmp r15, [rip + flagv]\n je 1b\n"                                    \
    "xchg rdi, [rsp]\n"                                                                     \
    "mov [rdi + 2048 + 64 + 0*8], rax\n mov [rdi + 2048 + 64 + 1*8], rcx\n"                 \
    "mov [rdi + 2048 + 64 + 2*8], rdx\n mov [rdi + 2048 + 64 + 3*8], rbx\n"                 \
    "mov [rdi + 2048 + 64 + 5*8], rbp\n mov [rdi + 2048 + 64 + 6*8], rsi\n"                 \
    "mov rax, [rsp]\n mov [rdi + 2048 + 64 + 7*8], rax\n"                                   \
    "mov [rdi + 2048 + 64 + 8*8], r8\n mov [rdi + 2048 + 64 + 9*8], r9\n"                   \
    "mov [rdi + 2048 + 64 + 10*8], r10\n mov [rdi + 2048 + 64 + 11*8], r11\n"               \
    "mov [rdi + 2048 + 64 + 12*8], r12\n mov [rdi + 2048 + 64 + 13*8], r13\n"               \
    "mov [rdi + 2048 + 64 + 14*8], r14\n fninit\n"

__asm__(".intel_syntax noprefix\n"
        ".data\n flagv: .quad " FLAG "\n .text\n"
        ".globl probe512\n probe512:\n"
        "push rbx\n push rbp\n push r12\n push r13\n push r14\n push r15\n push rdi\n"
        ".irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
        "vmovdqu64 zmm\\n, [rip + pat + \\n*64]\n .endr\n"
        ".irp n,0,1,2,3,4,5,6,7\n mov rax, 0x0101010101010101 * (\\n + 1) + 0x10\n kmovq k\\n, rax\n .endr\n"
        GPRS
        ".irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
        "vmovdqu64 [rdi + \\n*64], zmm\\n\n .endr\n"
        ".irp n,0,1,2,3,4,5,6,7\n kmovq [rdi + 2048 + \\n*8], k\\n\n .endr\n"
        "vzeroupper\n pop rdi\n pop r15\n pop r14\n pop r13\n pop r12\n pop rbp\n pop rbx\n ret\n"
        ".globl probe256\n probe256:\n"
        "push rbx\n push rbp\n push r12\n push r13\n push r14\n push r15\n push rdi\n"
        ".irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
        "vmovdqu ymm\\n, [rip + pat + \\n*64]\n .endr\n"
        GPRS
        ".irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
        "vmovdqu [rdi + \\n*64], ymm\\n\n .endr\n"
        "vzeroupper\n pop rdi\n pop r15\n pop r14\n pop r13\n pop r12\n pop rbp\n pop rbx\n ret\n"
        ".globl probe256z\n probe256z:\n"
        "push rbx\n push rbp\n push r12\n push r13\n push r14\n push r15\n push rdi\n"
        ".irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
        "vmovdqu ymm\\n, [rip + pat + \\n*64]\n .endr\n"
        "vzeroupper\n"
        GPRS
        ".irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
        "vmovdqu [rdi + \\n*64], ymm\\n\n .endr\n"
        "vzeroupper\n pop rdi\n pop r15\n pop r14\n pop r13\n pop r12\n pop rbp\n pop rbx\n ret\n"
        ".att_syntax\n");

static void hex(const char *tag, int n, const uint8_t *p, int len) {
    printf("%s%d ", tag, n);
    for (int i = 0; i < len; i++)
        printf("%02x", p[i]);
    printf("\n");
}

int main(int argc, char **argv) {
    int z = argc > 1 && !strcmp(argv[1], "avx512");
    for (int i = 0; i < 32 * 64; i++)
        pat[i] = (uint8_t)(i * 7 + 3);
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("ready\n");
    if (z)
        probe512(out);
    else if (argc > 1 && !strcmp(argv[1], "vzeroupper"))
        probe256z(out);
    else
        probe256(out);
    for (int i = 0; i < (z ? 32 : 16); i++)
        hex("v", i, out + i * 64, z ? 64 : 32);
    for (int i = 0; z && i < 8; i++)
        hex("k", i, out + 2048 + i * 8, 8);
    for (int i = 0; i < 15; i++)
        if (i != 4)
            hex("g", i, out + 2048 + 64 + i * 8, 8);
    return 0;
}
