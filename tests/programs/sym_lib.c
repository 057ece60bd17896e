/* A shared library that sym_main loads with dlopen after its first device map. */
#include "mmio.h"

__attribute__((noinline)) void sym_lib_poke(volatile uint8_t *p) {
    wr32(p + 16, 0x5a5a); /* SITE-lib */
}
