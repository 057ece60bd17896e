/* A thread made with a raw clone(CLONE_VM | CLONE_THREAD ...) without CLONE_SETTLS: it
 * shares its parent's thread pointer (TLS). Both threads write the device K times
 * (child: 0x10000000 | j at 0x100, parent: 0x20000000 | j at 0x200); prints the last
 * values. Usage: qa_rawclone DEV K (a 1-page device). */
#include "mmio.h"
#include <sched.h>
#include <sys/syscall.h>

static uint8_t *bar;
static long K;
static volatile int child_done;

static int child(void *arg) {
    (void)arg;
    for (long j = 0; j < K; j++) wr32(bar + 0x100, (uint32_t)(0x10000000 | j));
    __atomic_store_n(&child_done, 1, __ATOMIC_SEQ_CST);
    syscall(SYS_exit, 0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    bar = map_device(argv[1], 4096);
    K = atol(argv[2]);
    char *stack = malloc(1 << 20);
    int tid = clone(child, stack + (1 << 20), CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM, NULL);
    if (tid < 0) { perror("clone"); return 3; }
    for (long j = 0; j < K; j++) wr32(bar + 0x200, (uint32_t)(0x20000000 | j));
    while (!__atomic_load_n(&child_done, __ATOMIC_SEQ_CST)) usleep(100);
    usleep(10000); /* the child's exit completes */
    uint32_t a = rd32(bar + 0x100), b = rd32(bar + 0x200);
    printf("%x %x\n", a, b);
    return 0;
}
