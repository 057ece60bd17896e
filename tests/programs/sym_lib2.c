/* Another library for sym_main: loaded after sym_lib is closed, likely at its address. */
#include "mmio.h"

__attribute__((noinline)) void sym_lib2_poke(volatile uint8_t *p) {
    wr32(p + 24, 0xa5a5); /* SITE-lib2 */
}
