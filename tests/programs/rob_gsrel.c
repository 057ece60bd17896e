/* gs-relative device accesses (the GS base set to the mapping with arch_prctl, as for a
 * per-thread register window): read word 2, write word 3, read word 3 back. */
#include "mmio.h"
#include <asm/prctl.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
    uint8_t *bar = map_device(argv[1], 4096);
    if (syscall(SYS_arch_prctl, ARCH_SET_GS, (unsigned long)bar)) { perror("arch_prctl"); return 2; }
    uint32_t v, w;
    __asm__ volatile("movl %%gs:8, %0" : "=r"(v) :: "memory");
    __asm__ volatile("movl %0, %%gs:12" :: "r"(0xabcdu) : "memory");
    __asm__ volatile("movl %%gs:12, %0" : "=r"(w) :: "memory");
    printf("gs:8=%#x gs:12=%#x\n", v, w);
    return 0;
}
