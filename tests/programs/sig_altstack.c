/* The program installs its own SIGSTKSZ-sized alternate stack inside a larger buffer whose
 * lower part holds program data; then device accesses. The tracer's handler must not run
 * on (and overflow) that stack, and sigaltstack must report the program's stack back. */
#include "mmio.h"
#include <signal.h>
#include <string.h>
int main(int argc, char **argv) {
    (void)argc;
    uint8_t *bar = map_device(argv[1], 4096);
    static uint8_t buf[65536] __attribute__((aligned(64)));
    memset(buf, 0xA5, sizeof buf);
    size_t sz = 8192; /* glibc's legacy SIGSTKSZ */
    stack_t ss = { .ss_sp = buf + sizeof buf - sz, .ss_size = sz, .ss_flags = 0 };
    if (sigaltstack(&ss, NULL)) { perror("sigaltstack"); return 2; }
    stack_t cur;
    if (sigaltstack(NULL, &cur)) return 3;
    int same = cur.ss_sp == ss.ss_sp && cur.ss_size == sz && cur.ss_flags == 0;
    uint32_t v = rd32(bar + 8);
    wr32(bar + 12, 0x77);
    size_t clobbered = 0;
    for (size_t i = 0; i < sizeof buf - sz; i++) if (buf[i] != 0xA5) clobbered++;
    printf("read %#x reported %d clobbered %zu\n", v, same, clobbered);
    return clobbered != 0;
}
