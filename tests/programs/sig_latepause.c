/* Thread B blocks every signal for 1 s with a raw system call (as some runtimes and glibc
 * internals do), then unblocks. Meanwhile main makes one access that takes the step fallback. */
#include "mmio.h"
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
static void *b(void *a) { (void)a; unsigned long all = ~0ul, old;
    syscall(SYS_rt_sigprocmask, SIG_BLOCK, &all, &old, 8);
    sleep(1);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, NULL, 8);
    usleep(100000); return NULL; }
int main(int argc, char **argv) {
    uint8_t *bar = map_device(argv[1], 4096);
    pthread_t t; pthread_create(&t, NULL, b, NULL); usleep(100000);
    uint32_t crc = 0; __asm__ volatile("crc32l 0x100(%1), %0" : "+r"(crc) : "r"(bar) : "memory");
    pthread_join(t, NULL); printf("done %x\n", crc); return 0;
}
