/* Raw forks (syscall(SYS_fork): no atfork handler runs) while another thread maps and
 * unmaps the device in a loop: the region lock may be held at the fork. Each child maps
 * the device and writes to it; none may hang (a child still running after 2 s is
 * reported and killed). Prints the number of children that exited 0 and of hung ones. */
#include "mmio.h"
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
static int fd;
static void *churn(void *a) {
    (void)a;
    for (;;) {
        void *q = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        munmap(q, 4096);
    }
    return 0;
}
int main(int argc, char **argv) {
    (void)argc;
    fd = open(argv[1], O_RDWR);
    int n = atoi(argv[2]);
    pthread_t t;
    pthread_create(&t, 0, churn, 0);
    int ok = 0, hung = 0;
    for (int i = 0; i < n; i++) {
        long pid = syscall(SYS_fork);
        if (pid == 0) {
            uint8_t *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            wr32(p, 1);
            syscall(SYS_exit_group, 0);
        }
        int st = 0, w = 0;
        for (int k = 0; k < 400 && !(w = waitpid(pid, &st, WNOHANG)); k++) usleep(5000);
        if (!w) {
            hung++;
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        } else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            ok++;
        }
    }
    printf("ok %d hung %d\n", ok, hung);
    fflush(stdout);
    _exit(0);
}
