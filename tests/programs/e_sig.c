/* Blocks in read(0) with a SIGUSR1 handler (SA_SIGINFO | SA_RESTART) that records how often
 * it ran and the siginfo it got, and a SIGRTMIN+1 handler that records the values it gets in
 * order; after the read prints
 * "ret=N errno=E data=TEXT usr1=COUNT code=SI_CODE value=SI_VALUE rt=V1,V2,...". */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile int count, code, value;
static volatile int rt[16], nrt;

static void on_rt(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    if (nrt < 16)
        rt[nrt++] = si->si_value.sival_int;
}

static void on_usr1(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    count++;
    code = si->si_code;
    value = si->si_value.sival_int;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_sigaction = on_rt;
    sigaction(SIGRTMIN + 1, &sa, NULL);
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("ready\n");
    char buf[64] = {0};
    errno = 0;
    ssize_t n = read(0, buf, sizeof buf - 1);
    int err = errno;
    printf("ret=%zd errno=%d data=%s usr1=%d code=%d value=%d rt=", n, err, buf, count, code, value);
    for (int i = 0; i < nrt; i++)
        printf(i ? ",%d" : "%d", rt[i]);
    printf("\n");
    return 0;
}
