/* Shared helpers of the end-to-end test programs: map a "device" file and access it
 * with single instructions of a known width (inline asm, so the compiler can neither
 * merge, split nor elide an access). */
#ifndef MMIO_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define MMIO_H
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static inline uint8_t rd8(volatile void *p) { uint8_t v; __asm__ volatile("movb (%1), %0" : "=q"(v) : "r"(p) : "memory"); return v; }
static inline uint16_t rd16(volatile void *p) { uint16_t v; __asm__ volatile("movw (%1), %0" : "=r"(v) : "r"(p) : "memory"); return v; }
static inline uint32_t rd32(volatile void *p) { uint32_t v; __asm__ volatile("movl (%1), %0" : "=r"(v) : "r"(p) : "memory"); return v; }
static inline uint64_t rd64(volatile void *p) { uint64_t v; __asm__ volatile("movq (%1), %0" : "=r"(v) : "r"(p) : "memory"); return v; }
static inline void wr8(volatile void *p, uint8_t v) { __asm__ volatile("movb %0, (%1)" :: "q"(v), "r"(p) : "memory"); }
static inline void wr16(volatile void *p, uint16_t v) { __asm__ volatile("movw %0, (%1)" :: "r"(v), "r"(p) : "memory"); }
static inline void wr32(volatile void *p, uint32_t v) { __asm__ volatile("movl %0, (%1)" :: "r"(v), "r"(p) : "memory"); }
static inline void wr64(volatile void *p, uint64_t v) { __asm__ volatile("movq %0, (%1)" :: "r"(v), "r"(p) : "memory"); }

/* Maps `len` bytes of `path` shared, read-write; exits on failure. */
static inline uint8_t *map_device(const char *path, size_t len) {
    int fd = open(path, O_RDWR);
    if (fd < 0) { perror(path); exit(100); }
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(100); }
    return p;
}
#endif
