/* Symbolized call sites: accesses from named functions at known lines (the comment
 * SITE-name on the line of each access; the tests compute the line numbers from it).
 *   sym_main DEV             read in sym_read_status, write in sym_write_ctrl
 *   sym_main DEV dlopen LIB  then dlopen LIB (after the first device map) and call its
 *                            sym_lib_poke, which writes the device
 *   sym_main DEV fork        then a fork child reads in sym_child_read
 *   sym_main DEV exec        then a child execs this program with "child": it maps the
 *                            device itself and reads in sym_child_read
 *   sym_main DEV thread      then a second thread reads in sym_child_read
 *   sym_main DEV static      then reads in sym_static_read, a function of no dynamic
 *                            symbol (static), placed after global ones
 *   sym_main DEV reload LIB LIB2  then dlopen LIB, call sym_lib_poke, dlclose it, dlopen
 *                            LIB2 and call its sym_lib2_poke (at p+24)
 *   sym_main DEV forks N     then N fork children read in sym_child_read while two
 *                            threads keep mapping and unmapping the device (each traced
 *                            map walks the loader's list, under its lock) */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include "mmio.h"

__attribute__((noinline)) uint32_t sym_read_status(volatile uint8_t *p) {
    return rd32(p + 4); /* SITE-read */
}

__attribute__((noinline)) void sym_write_ctrl(volatile uint8_t *p, uint32_t v) {
    wr32(p + 8, v); /* SITE-write */
}

__attribute__((noinline)) uint32_t sym_child_read(volatile uint8_t *p) {
    return rd32(p + 12); /* SITE-child */
}

static __attribute__((noinline)) uint32_t sym_static_read(volatile uint8_t *p) {
    return rd32(p + 20); /* SITE-static */
}

static atomic_int stop_mapping;
static const char *dev_path;

static void *mapper(void *arg) {
    (void)arg;
    while (!atomic_load(&stop_mapping)) {
        volatile uint8_t *q = map_device(dev_path, 4096);
        munmap((void *)q, 4096);
    }
    return NULL;
}

static void *thread_main(void *p) {
    sym_child_read(p);
    return NULL;
}

int main(int argc, char **argv) {
    volatile uint8_t *p = map_device(argv[1], 4096);
    if (argc > 2 && strcmp(argv[2], "child") == 0) {
        sym_child_read(p);
        return 0;
    }
    sym_write_ctrl(p, sym_read_status(p) + 1);
    if (argc > 3 && strcmp(argv[2], "dlopen") == 0) {
        void *h = dlopen(argv[3], RTLD_NOW);
        if (!h) { fprintf(stderr, "%s\n", dlerror()); return 101; }
        void (*poke)(volatile uint8_t *) = (void (*)(volatile uint8_t *))dlsym(h, "sym_lib_poke");
        if (!poke) return 102;
        poke(p);
    } else if (argc > 2 && strcmp(argv[2], "fork") == 0) {
        pid_t c = fork();
        if (c == 0) {
            sym_child_read(p);
            _exit(0);
        }
        int st;
        if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return 103;
    } else if (argc > 4 && strcmp(argv[2], "reload") == 0) {
        void *h = dlopen(argv[3], RTLD_NOW);
        if (!h) return 101;
        ((void (*)(volatile uint8_t *))dlsym(h, "sym_lib_poke"))(p);
        if (dlclose(h) != 0) return 109;
        h = dlopen(argv[4], RTLD_NOW);
        if (!h) return 101;
        ((void (*)(volatile uint8_t *))dlsym(h, "sym_lib2_poke"))(p);
    } else if (argc > 3 && strcmp(argv[2], "forks") == 0) {
        dev_path = argv[1];
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            if (pthread_create(&t[i], NULL, mapper, NULL) != 0) return 107;
        int n = atoi(argv[3]);
        for (int i = 0; i < n; i++) {
            pid_t c = fork();
            if (c == 0) {
                sym_child_read(p);
                _exit(0);
            }
            int st;
            if (c < 0 || waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return 108;
        }
        atomic_store(&stop_mapping, 1);
        for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    } else if (argc > 2 && strcmp(argv[2], "static") == 0) {
        sym_static_read(p);
    } else if (argc > 2 && strcmp(argv[2], "thread") == 0) {
        pthread_t t;
        if (pthread_create(&t, NULL, thread_main, (void *)p) != 0) return 106;
        pthread_join(t, NULL);
    } else if (argc > 2 && strcmp(argv[2], "exec") == 0) {
        pid_t c = fork();
        if (c == 0) {
            execl("/proc/self/exe", argv[0], argv[1], "child", (char *)0);
            _exit(104);
        }
        int st;
        if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return 105;
    }
    return 0;
}
