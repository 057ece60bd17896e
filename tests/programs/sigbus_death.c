/* How a program without a SIGBUS handler dies when its device is gone (the file
 * truncated under a two-page mapping): a child runs one instruction against the gone page
 * under ptrace; the parent reports the last SIGBUS/SIGSEGV the child stopped with before
 * it was killed: the kernel's siginfo and registers, i.e. what its core dump would hold.
 * Natively that is the instruction itself; under `record` it must be too (not an access
 * inside the tracer).
 *
 * Usage: sigbus_death DEV OP   (OP: load32 store64 movs rep-movsb sse-store lock-xadd
 *                               misaligned-lock) */
#include "mmio.h"
#include <signal.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>

#define PAGE 4096

/* Each op: a leaf function of the base address (RDI) with a global label on its one
 * device-touching instruction. */
#define OPFN(name, setup, insn)                                                            \
    __asm__(".text\n.globl " #name "\n" #name ":\nmov $0x1111, %eax\nmov $0x2222, %ecx\n"   \
            "mov $0x3333, %edx\n" setup "\n.globl " #name "_insn\n" #name                 \
            "_insn:\n" insn "\nret\n");                                                    \
    extern void name(uint8_t *);                                                           \
    extern char name##_insn[];
OPFN(op_load32, "lea 0x1040(%rdi), %rsi", "movl (%rsi), %eax")
OPFN(op_store64, "lea 0x1040(%rdi), %rsi\nmovabs $0x1122334455667788, %rdx", "movq %rdx, (%rsi)")
OPFN(op_movs, "lea 0x100(%rdi), %rsi\nlea 0x1040(%rdi), %rdi", "movsq")
OPFN(op_rep_movsb, "lea 0x100(%rdi), %rsi\nlea 0xff0(%rdi), %rdi\nmov $32, %ecx", "rep movsb")
OPFN(op_sse_store, "lea 0x1040(%rdi), %rsi\npcmpeqd %xmm0, %xmm0", "movdqu %xmm0, (%rsi)")
OPFN(op_lock_xadd, "lea 0x1040(%rdi), %rsi\nmov $5, %edx", "lock xaddl %edx, (%rsi)")
OPFN(op_misaligned, "lea 0x103e(%rdi), %rsi\nmov $5, %edx", "lock addl %edx, (%rsi)")

static const struct { const char *name; void (*fn)(uint8_t *); char *insn; } ops[] = {
    {"load32", op_load32, op_load32_insn},       {"store64", op_store64, op_store64_insn},
    {"movs", op_movs, op_movs_insn},             {"rep-movsb", op_rep_movsb, op_rep_movsb_insn},
    {"sse-store", op_sse_store, op_sse_store_insn}, {"lock-xadd", op_lock_xadd, op_lock_xadd_insn},
    {"misaligned-lock", op_misaligned, op_misaligned_insn},
};

static uint8_t *bar;

static const char *ptr(uint64_t v, char *b) {
    if (v - (uint64_t)bar < 2 * PAGE) sprintf(b, "+%#lx", (unsigned long)(v - (uint64_t)bar));
    else sprintf(b, "%#lx", (unsigned long)v);
    return b;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int k = -1;
    for (unsigned i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (!strcmp(ops[i].name, argv[2])) k = (int)i;
    if (k < 0) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0 || ftruncate(fd, 2 * PAGE) != 0) return 100;
    bar = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (bar == MAP_FAILED || ftruncate(fd, PAGE) != 0) return 100;
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        if (ptrace(PTRACE_TRACEME, 0, 0, 0) != 0) _exit(101);
        raise(SIGSTOP);
        ops[k].fn(bar);
        _exit(0);
    }
    int st, last = 0;
    siginfo_t si;
    struct user_regs_struct r;
    memset(&si, 0, sizeof si);
    memset(&r, 0, sizeof r);
    for (;;) {
        if (waitpid(c, &st, 0) != c) return 102;
        if (!WIFSTOPPED(st)) break;
        int sig = WSTOPSIG(st);
        if (sig == SIGBUS || sig == SIGSEGV) {
            /* Every fault is passed on; the last one before the death is the fatal one. */
            last = sig;
            ptrace(PTRACE_GETSIGINFO, c, 0, &si);
            ptrace(PTRACE_GETREGS, c, 0, &r);
        }
        ptrace(PTRACE_CONT, c, 0, (void *)(long)(sig == SIGSTOP ? 0 : sig));
    }
    char a[32], s[32], d[32];
    if (WIFSIGNALED(st))
        printf("%s: killed by signal %d\n", argv[2], WTERMSIG(st));
    else
        printf("%s: exited %d\n", argv[2], WEXITSTATUS(st));
    printf("last fault sig %d code %d addr %s rip %s rsi %s rdi %s rcx %#lx rax %#lx rdx %#lx\n", last,
           si.si_code, ptr((uint64_t)si.si_addr, a),
           r.rip == (uint64_t)ops[k].insn ? "=insn" : "elsewhere", ptr(r.rsi, s), ptr(r.rdi, d),
           (unsigned long)r.rcx, (unsigned long)r.rax, (unsigned long)r.rdx);
    return 0;
}
