/* Memory-locking and advice calls on a traced mapping, each printed with its result
 * ("name rc errno"), then accesses that must still be traced. The test compares the
 * output with a native run. Usage: regions_lock DEV (a 4-page device). */
#include "mmio.h"
#include <errno.h>
#include <string.h>
#include <sys/resource.h>

#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif
#ifndef MCL_ONFAULT
#define MCL_ONFAULT 4
#endif

#define P 4096
static void show(const char *what, int rc) { printf("%s %d %d\n", what, rc, rc ? errno : 0); errno = 0; }

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) return 2;
    uint8_t *m = mmap(NULL, 4 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return 3;
    wr32(m + 0x10, 1);
    show("mlock", mlock(m, 4 * P));
    show("mlock-part", mlock(m + P, 2 * P));
    show("munlock", munlock(m, 4 * P));
    show("mlock2", mlock2(m, 4 * P, 0));
    show("munlock2", munlock(m, 4 * P));
    show("mlock2-onfault", mlock2(m, 4 * P, MLOCK_ONFAULT));
    show("munlock3", munlock(m, 4 * P));
    show("mlock2-again", mlock2(m + P, 3 * P, 0));
    show("munlock4", munlock(m + P, P));
    show("munlock5", munlock(m, 4 * P));
    unsigned char vec[4];
    show("mincore", mincore(m, 4 * P, vec));
    show("madvise-willneed", madvise(m, 4 * P, MADV_WILLNEED));
    show("madvise-random", madvise(m, 4 * P, MADV_RANDOM));
    show("madvise-normal", madvise(m, 4 * P, MADV_NORMAL));
    show("madvise-dontfork", madvise(m, 4 * P, MADV_DONTFORK));
    show("madvise-dofork", madvise(m, 4 * P, MADV_DOFORK));
    show("msync", msync(m, 4 * P, MS_SYNC));
    wr32(m + P + 0x10, 2);
    /* Not mapped at all: the same error as natively. */
    show("mlock-unmapped", mlock(m + 64 * P * 1024, P));
    /* mlockall locks the whole process: beyond a small RLIMIT_MEMLOCK, the tracer's own
     * memory would make the answer differ; only where the limit does not apply. */
    struct rlimit rl;
    if (geteuid() != 0 && (getrlimit(RLIMIT_MEMLOCK, &rl) != 0 || rl.rlim_cur != RLIM_INFINITY)) {
        puts("mlockall skipped");
        return 0;
    }
    show("mlockall-current", mlockall(MCL_CURRENT));
    show("munlockall", munlockall());
    show("mlockall-onfault", mlockall(MCL_CURRENT | MCL_ONFAULT));
    show("munlockall2", munlockall());
    show("mlockall-future", mlockall(MCL_CURRENT | MCL_FUTURE));
    uint8_t *n = mmap(NULL, 2 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 2 * P);
    printf("mmap-after-future %d\n", n == MAP_FAILED ? errno : 0);
    if (n == MAP_FAILED) return 4;
    wr32(n + 0x20, 3);
    show("mlock-new", mlock(n, 2 * P));
    show("munlockall3", munlockall());
    printf("read %x %x %x\n", rd32(m + 0x10), rd32(m + P + 0x10), rd32(n + 0x20));
    show("madvise-dontneed", madvise(m, 4 * P, MADV_DONTNEED));
    printf("read-after-dontneed %x\n", rd32(m + 0x10));
    return 0;
}
