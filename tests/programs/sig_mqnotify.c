/* A message queue with SIGEV_THREAD notification: glibc runs the callback in a thread
 * it creates itself, with every signal blocked; the callback writes a device register. */
#include "mmio.h"
#include <mqueue.h>
#include <signal.h>
#include <string.h>
static uint8_t *bar; static volatile int done;
static void ready(union sigval v) { (void)v; wr32(bar + 0x30, 0x51); done = 1; }
int main(int argc, char **argv) {
    (void)argc;
    bar = map_device(argv[1], 4096);
    char name[64]; snprintf(name, sizeof name, "/mmio-trace-sig-%d", getpid());
    struct mq_attr at = { .mq_maxmsg = 4, .mq_msgsize = 16 };
    mqd_t q = mq_open(name, O_CREAT | O_RDWR, 0600, &at);
    if (q == (mqd_t)-1) { perror("mq_open"); return 2; }
    mq_unlink(name);
    struct sigevent ev; memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD; ev.sigev_notify_function = ready;
    if (mq_notify(q, &ev)) { perror("mq_notify"); return 2; }
    mq_send(q, "x", 1, 0);
    while (!done) usleep(1000);
    usleep(20000);
    printf("notified\n");
    return 0;
}
