/* Installs a seccomp filter that returns SECCOMP_RET_TRACE (data 0x42) for getppid, prints
 * "ready", waits for one byte of stdin, then calls getppid and prints "ppid=N errno=E". */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE | 0x42),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
        perror("seccomp");
        return 2;
    }
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("ready\n");
    char c;
    if (read(0, &c, 1) != 1)
        return 3;
    errno = 0;
    long r = syscall(SYS_getppid);
    printf("ppid=%ld errno=%d\n", r, errno);
    return 0;
}
