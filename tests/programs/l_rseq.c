/* rseq target of the ptrace engine's tests (crates/ptrace/tests/image.rs): prints "ready"
 * and its rseq area's address, then spins inside an rseq critical section whose abort
 * handler counts aborts and re-enters it, until stdin has a byte; prints "aborts>0=1"
 * (the kernel aborted the section at least once, as it must after any preemption) and exits
 * 0. Uses glibc's registered rseq area (glibc 2.35+), else registers its own. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/rseq.h>
#include <sys/syscall.h>
#include <unistd.h>

static struct rseq own __attribute__((aligned(32)));
static volatile long aborts;

static struct rseq *area(void) {
    if (__rseq_size > 0) {
        char *tp;
        __asm__("mov %%fs:0, %0" : "=r"(tp));
        return (struct rseq *)(tp + __rseq_offset);
    }
    if (syscall(SYS_rseq, &own, sizeof own, 0, 0x53053053) != 0)
        return NULL;
    return &own;
}

/* Spins in the critical section while *stop is 0; returns how often it was aborted. */
static __attribute__((noinline)) long spin(struct rseq *rs, volatile int *stop) {
    long n = 0;
    __asm__ volatile(
        ".pushsection .data.rel.ro, \"aw\"\n"
        ".balign 32\n"
        "4:\n"
        ".long 0, 0\n"
        ".quad 1f, 2f - 1f, 3f\n"
        ".popsection\n"
        "0:\n"
        "lea 4b(%%rip), %%rax\n"
        "mov %%rax, 8(%[rs])\n"
        "1:\n"
        "cmpl $0, (%[stop])\n"
        "je 1b\n"
        "2:\n"
        "jmp 5f\n"
        ".long 0x53053053\n"
        "3:\n"
        "incq %[n]\n"
        "jmp 0b\n"
        "5:\n"
        "movq $0, 8(%[rs])\n"
        : [n] "+r"(n)
        : [rs] "r"(rs), [stop] "r"(stop)
        : "rax", "memory", "cc");
    return n;
}

static volatile int stop;

static void *watch(void *a) {
    (void)a;
    char c;
    if (read(0, &c, 1) == 1)
        stop = 1;
    return NULL;
}

#include <pthread.h>
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct rseq *rs = area();
    if (!rs) {
        printf("no rseq\n");
        return 2;
    }
    pthread_t t;
    pthread_create(&t, NULL, watch, NULL);
    printf("ready\n%lu\n", (unsigned long)(uintptr_t)rs);
    long n = spin(rs, &stop);
    printf("aborts>0=%d\n", n > 0);
    return 0;
}
