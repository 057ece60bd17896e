/* The program's own SIGTRAP handler (debuggers, JITs and runtimes use int3) keeps
 * working while the tracer uses SIGTRAP for its step fallback: int3 traps, device
 * accesses and a single-stepped access (crc32 with a memory operand) interleave. */
#include "mmio.h"
#include <signal.h>
#include <string.h>

static volatile int traps;

static void on_trap(int sig) {
    (void)sig;
    traps++;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    uint8_t *bar = map_device(argv[1], 4096);
    signal(SIGTRAP, on_trap);
    uint32_t crc = 0;
    for (int i = 0; i < 3; i++) {
        __asm__ volatile("int3");
        wr32(bar + 0x10, (uint32_t)i);
        __asm__ volatile("crc32l 0x10(%1), %0" : "+r"(crc) : "r"(bar) : "memory");
    }
    printf("traps=%d\n", traps);
    return traps == 3 ? 0 : 3;
}
