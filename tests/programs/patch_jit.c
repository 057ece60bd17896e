/* Code that must never be patched, however hot: a store and a load copied into
 *   rwx  anonymous memory mapped read-write-execute (a JIT),
 *   rx   anonymous memory made read-execute after the copy (a W^X JIT),
 *   shm  a shared file mapping (memfd) mapped read-execute.
 * Each copy sits at a fixed address (0x5a0000000000 + 0x10000 * k) so that its PCs are
 * the same in every run, and is called 200 times: store 0x100 * (k + 1) + i at
 * 0x10 * (k + 1), read it back. Prints the wrong values read (0) and the sites.
 *
 * usage: patch_jit DEVICE */
#define _GNU_SOURCE
#include "mmio.h"
#include <string.h>
#include <sys/syscall.h>

static const uint8_t code[] = {
    0x89, 0x37, 0xc3, /* store: mov %esi,(%rdi); ret */
    0x90,
    0x8b, 0x07, 0xc3, /* load: mov (%rdi),%eax; ret */
};

static uint8_t *place(int k) {
    void *at = (void *)(0x5a0000000000ull + 0x10000ull * (uint64_t)k);
    uint8_t *p;
    if (k == 2) {
        int m = (int)syscall(SYS_memfd_create, "patch_jit", 0);
        if (m < 0 || write(m, code, sizeof code) != (ssize_t)sizeof code) { perror("memfd"); exit(100); }
        p = mmap(at, 4096, PROT_READ | PROT_EXEC, MAP_SHARED | MAP_FIXED_NOREPLACE, m, 0);
    } else {
        p = mmap(at, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (p != MAP_FAILED) {
            memcpy(p, code, sizeof code);
            if (k == 1 && mprotect(p, 4096, PROT_READ | PROT_EXEC)) { perror("mprotect"); exit(100); }
        }
    }
    if (p != at) { perror("mmap at a fixed address"); exit(100); }
    return p;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    uint8_t *dev = map_device(argv[1], 4096);
    static const char *names[] = {"rwx", "rx", "shm"};
    long bad = 0;
    for (int k = 0; k < 3; k++) {
        uint8_t *p = place(k);
        void (*store)(volatile void *, uint32_t) = (void (*)(volatile void *, uint32_t))p;
        uint32_t (*load)(volatile void *) = (uint32_t(*)(volatile void *))(p + 4);
        volatile uint8_t *r = dev + 0x10 * (k + 1);
        for (uint32_t i = 0; i < 200; i++) {
            uint32_t v = 0x100u * (uint32_t)(k + 1) + i;
            store(r, v);
            if (load(r) != v) bad++;
        }
        printf("%s: store at %p, load at %p\n", names[k], (void *)p, (void *)(p + 4));
    }
    printf("%ld wrong\n", bad);
    return 0;
}
