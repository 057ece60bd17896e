/* The calls of sys_buf.c the ptrace route makes device memory reachable for (read, write,
 * pread64, pwrite64, readv, writev, preadv(2), pwritev(2), send(to), recv(from),
 * sendmsg, recvmsg, ioctl, the stat family, getrandom, pipe(2), socketpair, readlink(at),
 * getcwd, uname; raw or not), the rest of sys_buf.c left out (futex, poll, waitpid,
 * sendmmsg/recvmmsg, clock_gettime, stdio).
 * System calls handed buffers in device memory: `s_sysbuf DEV` maps DEV's two pages as
 * two mappings side by side (map 1: file offset 0, map 2: offset 0x1000) between two
 * anonymous pages, and hands the kernel buffers in them, some across the edges (anonymous
 * and device memory; the two mappings). It never touches the device itself: what it
 * prints (each call's result and errno, and what came out of the device through the
 * kernel) is the same natively and under the tracer, and so must the device be. */
#include "mmio.h"
#include <errno.h>
#include <linux/futex.h>
#include <linux/random.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <poll.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>

static void show(const char *what, long r) {
    printf("%s = %ld", what, r);
    if (r < 0) printf(" errno %d", errno);
    printf("\n");
}

static void hex(const char *what, const uint8_t *p, long n) {
    if (n < 0) n = 0;
    printf("%s:", what);
    for (long i = 0; i < n; i++) printf(" %02x", p[i]);
    printf("\n");
}

int main(int argc, char **argv) {
    int fd = open(argv[1], O_RDWR);
    uint8_t *area = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t *m1 = mmap(area + 4096, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    uint8_t *m2 = mmap(area + 8192, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 4096);
    if (m1 == MAP_FAILED || m2 == MAP_FAILED) { perror("mmap"); return 100; }
    memset(area, 'A', 4096);
    int p[2];
    if (pipe2(p, O_NONBLOCK)) return 101; /* a failed call must not block the next */
    uint8_t local[256];
    long r;

    /* write from device memory; read into it */
    show("write", write(p[1], m1 + 0x40, 64));
    r = read(p[0], local, sizeof local); show("drain", r); hex("wrote", local, r);
    for (int i = 0; i < 32; i++) local[i] = 0x80 + i;
    write(p[1], local, 32);
    show("read", read(p[0], m1 + 0x100, 32));

    /* across anonymous and device memory; across the two mappings */
    show("write across", write(p[1], m1 - 16, 48));
    r = read(p[0], local, sizeof local); show("drain", r); hex("wrote", local, r);
    for (int i = 0; i < 16; i++) local[i] = 0xc0 + i;
    write(p[1], local, 16);
    show("read across maps", read(p[0], m2 - 8, 16));

    /* a short read: only what the kernel wrote is logged */
    write(p[1], "xyz", 3);
    show("short read", read(p[0], m2 + 0x30, 64));

    /* positional calls on a scratch file */
    char path[4096];
    snprintf(path, sizeof path, "%s.scratch", argv[1]);
    int f = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    show("pwrite", pwrite(f, m2 + 0x10, 16, 0));
    show("pread", pread(f, m2 + 0x20, 16, 0));
    struct iovec iv[2] = { { local, 4 }, { m2 + 0x40, 8 } };
    memcpy(local, "ABCD", 4);
    show("pwritev", pwritev(f, iv, 2, 100));
    struct iovec rv[2] = { { m1 + 0x48, 6 }, { local + 100, 6 } };
    show("preadv", preadv(f, rv, 2, 100));
    hex("preadv local", local + 100, 6);
    show("pwritev2", pwritev2(f, iv + 1, 1, 200, 0));
    show("preadv2", preadv2(f, rv, 1, 200, 0));
    show("writev", writev(p[1], iv, 2));
    show("readv", readv(p[0], rv, 2));
    hex("readv local", local + 100, 6);

    /* sockets */
    int sv[2];
    socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, sv);
    show("send", send(sv[0], m1 + 0x200, 12, 0));
    show("recv", recv(sv[1], m2 + 0x200, 12, 0));
    show("sendto", sendto(sv[0], m1 + 0x210, 4, 0, NULL, 0));
    show("recvfrom", recvfrom(sv[1], m2 + 0x210, 4, 0, NULL, NULL));
    struct iovec mi[2] = { { m1 + 0x220, 4 }, { m2 - 2, 4 } };
    struct msghdr mh = { .msg_iov = mi, .msg_iovlen = 2 };
    show("sendmsg", sendmsg(sv[0], &mh, 0));
    struct iovec ri[1] = { { m2 + 0x230, 8 } };
    struct msghdr rh = { .msg_iov = ri, .msg_iovlen = 1 };
    show("recvmsg", recvmsg(sv[1], &rh, 0));
    printf("recvmsg flags %d\n", rh.msg_flags);
    /* structures the kernel writes */
    int un = open("/dev/urandom", O_RDONLY);
    show("ioctl", ioctl(un, RNDGETENTCNT, m1 + 0x500));
    show("ioctl across maps", ioctl(un, RNDGETENTCNT, m1 + 4096 - 2));
    int dn = open("/dev/null", O_RDONLY);
    show("fstat", fstat(dn, (struct stat *)(m1 + 0x600)));
    show("stat across", stat("/dev/null", (struct stat *)(m1 + 4096 - 64)));
    show("lstat", lstat("/dev/null", (struct stat *)(m2 + 0x600)));
    show("fstatat", fstatat(AT_FDCWD, "/dev/null", (struct stat *)(m2 + 0x700), 0));
    show("statx", statx(AT_FDCWD, "/dev/null", 0, STATX_BASIC_STATS, (struct statx *)(m2 + 0x800)));
    show("getrandom", getrandom(m1 + 0x800, 32, 0));
    show("pipe", pipe((int *)(m1 + 0x900)));
    show("pipe2", pipe2((int *)(m1 + 0x908), O_CLOEXEC));
    show("socketpair", socketpair(AF_UNIX, SOCK_STREAM, 0, (int *)(m1 + 0x910)));

    /* more calls that write into the program's memory */
    show("readlink", readlink("/dev/stdin", (char *)(m1 + 0xb00), 64));
    show("readlinkat across maps", readlinkat(AT_FDCWD, "/dev/stdin", (char *)(m2 - 4), 64));
    printf("getcwd %d\n", getcwd((char *)(m2 + 0xd00), 256) == (char *)(m2 + 0xd00));
    show("uname into device and memory after it", uname((struct utsname *)(m2 + 0xf00)));
    /* the same through syscall(2) */
    show("syscall write", syscall(SYS_write, p[1], m1 + 0xa00, 8));
    show("syscall read", syscall(SYS_read, p[0], m2 + 0xa00, 8));
    return 0;
}
