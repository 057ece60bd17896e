/* q_cases DEV CASE [ARGS...]: the inject route's hard cases, one per CASE, each a fixed
 * sequence of device accesses (offsets and values chosen per case so that a trace tells
 * which step made each access) and a fixed output and exit status. Built static (the
 * inject route is chosen automatically) and dynamic (the preload route), and the two
 * traces compared. */
#include "mmio.h"
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <x86intrin.h>

static uint8_t *dev;
static const char *dev_path;

static void say(const char *s) { fputs(s, stdout); fflush(stdout); }

/* ---- fork without exec: both sides touch the device ---- */
static int c_fork(void) {
    wr32(dev + 0x10, 1);
    pid_t p = fork();
    if (p < 0) return 90;
    if (p == 0) {
        wr32(dev + 0x14, 2);
        uint32_t v = rd32(dev + 0x10);
        _exit(v == 1 ? 3 : 91);
    }
    int st;
    if (waitpid(p, &st, 0) != p) return 92;
    wr32(dev + 0x18, WIFEXITED(st) ? WEXITSTATUS(st) : 0x100 + WTERMSIG(st));
    printf("child %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));
    return 0;
}

/* ---- the child of a fork, vfork or CLONE_VFORK clone execs ARGS ---- */
static char **exec_argv;
static int run_child(void *unused) {
    (void)unused;
    execv(exec_argv[0], exec_argv);
    _exit(errno == ENOENT ? 93 : 94);
}
static int wait_child(pid_t p) {
    int st;
    if (p < 0) return 95;
    if (waitpid(p, &st, 0) != p) return 96;
    wr32(dev + 0x18, WIFEXITED(st) ? WEXITSTATUS(st) : 0x100 + WTERMSIG(st));
    printf("child %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));
    return 0;
}
static int c_spawn(const char *how) {
    wr32(dev + 0x10, 1);
    pid_t p;
    if (!strcmp(how, "fork")) {
        p = fork();
        if (p == 0) run_child(NULL);
    } else if (!strcmp(how, "vfork")) {
        p = vfork();
        if (p == 0) run_child(NULL);
    } else if (!strcmp(how, "vforkw")) {
        /* the vfork child touches the device before it execs */
        p = vfork();
        if (p == 0) {
            wr32(dev + 0x1c, 5);
            run_child(NULL);
        }
    } else {
        static char stack[64 * 1024] __attribute__((aligned(16)));
        p = clone(run_child, stack + sizeof stack, CLONE_VM | CLONE_VFORK | SIGCHLD, NULL);
    }
    return wait_child(p);
}

/* ---- the program's own seccomp filter ---- */
static void own_filter(unsigned ret) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, ret),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) exit(97);
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) { perror("seccomp"); exit(98); }
}
static volatile int sys_seen;
static void on_sys(int sig, siginfo_t *si, void *uc_) {
    (void)sig;
    ucontext_t *uc = uc_;
    wr32(dev + 0x30, si->si_syscall);
    sys_seen++;
    uc->uc_mcontext.gregs[REG_RAX] = 4321;
}
static int c_seccomp(const char *kind) {
    if (!strcmp(kind, "errno")) {
        own_filter(SECCOMP_RET_ERRNO | 77);
    } else {
        struct sigaction sa = {0};
        sa.sa_sigaction = on_sys;
        sa.sa_flags = SA_SIGINFO;
        if (sigaction(SIGSYS, &sa, NULL)) return 89;
        own_filter(SECCOMP_RET_TRAP | 5);
    }
    uint8_t *d = map_device(dev_path, 8192);
    wr32(d + 0x20, 0xa1);
    errno = 0;
    long r = syscall(SYS_getppid);
    int e = errno;
    wr32(d + 0x24, (uint32_t)r);
    uint32_t v = rd32(d + 0x20);
    munmap(d, 8192);
    printf("getppid %ld errno %d seen %d read %x\n", r, e, sys_seen, v);
    return 0;
}

/* ---- the program's own SIGSYS handler, raised by kill ---- */
static int c_sigsys(void) {
    struct sigaction sa = {0};
    sa.sa_sigaction = on_sys;
    sa.sa_flags = SA_SIGINFO;
    if (sigaction(SIGSYS, &sa, NULL)) return 89;
    wr32(dev + 0x20, 0xb1);
    raise(SIGSYS);
    kill(getpid(), SIGSYS);
    uint8_t *d = map_device(dev_path, 4096);
    wr32(d + 0x24, sys_seen);
    munmap(d, 4096);
    printf("seen %d\n", sys_seen);
    return 0;
}

/* ---- all signals blocked around mmap, accesses and munmap ---- */
static int c_blockall(int query) {
    sigset_t all, old, now;
    sigfillset(&all);
    if (sigprocmask(SIG_BLOCK, &all, &old)) return 89;
    uint8_t *d = map_device(dev_path, 8192);
    wr32(d + 0x40, 0xc1);
    uint32_t v = rd32(d + 0x1000);
    /* what a query says: natively, every signal but SIGKILL and SIGSTOP is blocked */
    sigprocmask(SIG_SETMASK, NULL, &now);
    int segv = sigismember(&now, SIGSEGV), sys = sigismember(&now, SIGSYS);
    munmap(d, 8192);
    sigprocmask(SIG_SETMASK, &old, NULL);
    wr32(dev + 0x44, 0xc2);
    if (query)
        printf("blocked segv %d sys %d\n", segv, sys);
    else
        printf("read %x\n", v);
    return 0;
}

/* ---- a handler with sa_mask all; the same on a small alternate stack ---- */
static volatile int usr_seen;
static void on_usr(int sig) {
    (void)sig;
    wr32(dev + 0x50, 0xd0 + usr_seen);
    wr64(dev + 0x58, rd32(dev + 0x50));
    usr_seen++;
}
static int c_handler(size_t onstack, int full) {
    struct sigaction sa = {0};
    sa.sa_handler = on_usr;
    if (full) sigfillset(&sa.sa_mask);
    static char alt[256 * 1024] __attribute__((aligned(16)));
    if (onstack) {
        /* the top ONSTACK bytes of the array */
        stack_t ss = {.ss_sp = alt + sizeof alt - onstack, .ss_size = onstack, .ss_flags = 0};
        if (sigaltstack(&ss, NULL)) return 88;
        sa.sa_flags = SA_ONSTACK;
    }
    if (sigaction(SIGUSR1, &sa, NULL)) return 89;
    if (onstack) memset(alt, 0xa5, sizeof alt);
    raise(SIGUSR1);
    raise(SIGUSR1);
    if (onstack) {
        /* how deep the handlers went: the lowest byte no longer the fill */
        size_t low = 0;
        while (low < sizeof alt && alt[low] == (char)0xa5) low++;
        size_t used = sizeof alt - low;
        if (getenv("Q_DEPTH")) fprintf(stderr, "depth %zu\n", used);
        if (used > onstack) printf("alternate stack overflowed\n");
    }
    struct sigaction back;
    sigaction(SIGUSR1, NULL, &back);
    int segv = sigismember(&back.sa_mask, SIGSEGV);
    printf("seen %d segv-in-mask %d\n", usr_seen, segv);
    return 0;
}

/* ---- many short-lived threads, more than there are rings ---- */
static void *one_thread(void *arg) {
    uintptr_t k = (uintptr_t)arg;
    wr32(dev + 0x100 + 4 * (k % 64), (uint32_t)k);
    (void)rd32(dev + 0x100 + 4 * (k % 64));
    wr32(dev + 0x80, (uint32_t)(k | 0x10000));
    return NULL;
}
static int c_threads(int n) {
    for (int k = 0; k < n; k += 4) {
        pthread_t t[4];
        int m = n - k < 4 ? n - k : 4;
        for (int j = 0; j < m; j++)
            if (pthread_create(&t[j], NULL, one_thread, (void *)(uintptr_t)(k + j))) return 89;
        for (int j = 0; j < m; j++) pthread_join(t[j], NULL);
    }
    wr32(dev + 0x84, n);
    printf("threads %d\n", n);
    return 0;
}

/* ---- threads one after another, each on its predecessor's stack and TCB (libc's stack
 * cache), each hammering the same instruction (hot: patched) ---- */
static uint32_t reuse_n;
static void *reuse_thread(void *arg) {
    uintptr_t k = (uintptr_t)arg;
    for (uint32_t i = 0; i < reuse_n; i++) wr32(dev + 0x94, (uint32_t)(k << 16 | i));
    return NULL;
}
static int c_reuse(int rounds, int n) {
    reuse_n = (uint32_t)n;
    void *first = NULL;
    int same = 0;
    for (int k = 0; k < rounds; k++) {
        pthread_t t;
        if (pthread_create(&t, NULL, reuse_thread, (void *)(uintptr_t)k)) return 89;
        /* The thread's TCB is its pthread_t: the same one means the same stack too. */
        if (k == 0) first = (void *)t;
        else same += (void *)t == first;
        pthread_join(t, NULL);
    }
    wr32(dev + 0x84, (uint32_t)rounds);
    printf("reuse %d same-tcb %d\n", rounds, same);
    return 0;
}

/* ---- the same with raw clone(CLONE_SETTLS) threads and no libc: a TCB of the program's
 * own at the top of the stack's mapping (as libc lays out a thread), given to thread A,
 * then, once A has ended (raw SYS_exit), to thread B on the same stack. MODE "cleartid":
 * the threads have a clear_child_tid word (CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID,
 * as libc's); "flag": such a word holding 1, not the tid, until the kernel zeroes it;
 * "none": no such word (as Go's threads). Each writes tag | j at 0x98, K
 * times (A 0x10000000, B 0x20000000) ---- */
#define RR_MAP (1 << 20)
#define RR_TCB (RR_MAP - 4096)
/* Zeroed bytes between the stack's top and the TCB (where libc keeps static TLS: a slot
 * read there finds nothing). */
#define RR_GAP 65536
#define RR_CAP 50000
struct rr { uint32_t tag; long k; int until_fast; volatile pid_t ctid; volatile int done; };
static int rr_body(void *p) {
    struct rr *c = p;
    /* until_fast: K accesses at least, then on until 64 in a row took under 1500 cycles
     * each (the instruction patched: a trap costs microseconds), at most RR_CAP. */
    int fast = !c->until_fast;
    uint64_t t0 = __rdtsc();
    long j;
    for (j = 0; j < c->k || (!fast && j < RR_CAP); j++) {
        wr32(dev + 0x98, c->tag | (uint32_t)j);
        if (c->until_fast && (j + 1) % 64 == 0) {
            uint64_t t = __rdtsc();
            fast = t - t0 < 64 * 1500;
            t0 = t;
        }
    }
    c->k = j;
    c->done = 1;
    __asm__ volatile("syscall" :: "a"(SYS_exit), "D"(0) : "rcx", "r11", "memory");
    __builtin_unreachable();
}
static int rr_run(uint8_t *area, struct rr *c, int cleartid) {
    int flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
                CLONE_SYSVSEM | CLONE_SETTLS;
    if (cleartid == 1) flags |= CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;
    if (cleartid == 2) {
        flags |= CLONE_CHILD_CLEARTID;
        c->ctid = 1;
    }
    pid_t t = clone(rr_body, area + RR_TCB - RR_GAP, flags, c, &c->ctid, area + RR_TCB,
                    &c->ctid);
    if (t < 0) return -1;
    /* Until the thread is gone (the kernel clears ctid before it is; tgkill says so). */
    while (!c->done || (cleartid && c->ctid) || syscall(SYS_tgkill, getpid(), t, 0) == 0)
        sched_yield();
    return t;
}
static int c_rawreuse(const char *mode, long k) {
    int cleartid = !strcmp(mode, "cleartid") ? 1 : !strcmp(mode, "flag") ? 2 : 0;
    if (!cleartid && strcmp(mode, "none")) return 102;
    uint8_t *area = mmap(NULL, RR_MAP, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED) return 88;
    /* The TCB: the caller's first 256 bytes (its stack guard among them), its own self
     * pointer. */
    uint8_t *tcb = area + RR_TCB, *mine;
    __asm__("movq %%fs:0, %0" : "=r"(mine));
    memcpy(tcb, mine, 256);
    *(uint8_t **)tcb = tcb;
    struct rr a = {0x10000000, k, 1, 0, 0}, b = {0x20000000, k, 0, 0, 0};
    pid_t ta = rr_run(area, &a, cleartid);
    pid_t tb = rr_run(area, &b, cleartid);
    if (ta < 0 || tb < 0) return 89;
    wr32(dev + 0x84, 2);
    printf("rawreuse %s %d A %ld\n", mode, ta != tb, a.k);
    return 0;
}

/* ---- blocking reads broken off or restarted by a signal, once a device is mapped (the
 * inject route then traps every read to see its buffer): SIGALRM without SA_RESTART
 * breaks a read of an empty pipe off (EINTR); with SA_RESTART the read goes on, into
 * device memory, until a child writes "abcd" ---- */
static volatile int alarms;
static void on_alarm(int s) { (void)s; alarms++; }
static int c_blockread(void) {
    int p[2];
    if (pipe(p)) return 87;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 0}, {0, 100000}};
    setitimer(ITIMER_REAL, &it, NULL);
    char b[8];
    ssize_t r = read(p[0], b, sizeof b);
    int e = r < 0 ? errno : 0;
    wr32(dev + 0xa0, (uint32_t)e);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    setitimer(ITIMER_REAL, &it, NULL);
    pid_t c = fork();
    if (c == 0) {
        usleep(400000);
        _exit(write(p[1], "abcd", 4) == 4 ? 0 : 1);
    }
    r = read(p[0], dev + 0x200, 8);
    int st = 0;
    waitpid(c, &st, 0);
    printf("eintr %d restarted %zd alarms %d child %d\n", e, r, alarms, st);
    return 0;
}

/* ---- malloc-heavy work between accesses ---- */
static int c_malloc(int rounds) {
    unsigned long sum = 0;
    /* a fixed threshold: each big block is its own mmap and munmap (trapped: munmap),
     * not recycled heap */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    for (int r = 0; r < rounds; r++) {
        void *big[8];
        for (int j = 0; j < 8; j++) {
            big[j] = malloc(200000 + 4096 * j);
            memset(big[j], r, 64);
            sum += ((unsigned char *)big[j])[1];
        }
        for (int j = 0; j < 8; j++) free(big[j]);
        wr32(dev + 0x90, r);
    }
    printf("sum %lu\n", sum);
    return 0;
}

/* ---- mremap, partial munmap, mprotect of a device mapping ---- */
static sigjmp_buf jb;
static volatile int segv_seen;
static void on_segv(int sig) {
    (void)sig;
    segv_seen++;
    siglongjmp(jb, 1);
}
static int c_remap(void) {
    uint8_t *d = map_device(dev_path, 8192);
    wr32(d + 0x10, 0xe1);
    uint8_t *m = mremap(d, 8192, 16384, MREMAP_MAYMOVE);
    if (m == MAP_FAILED) return 89;
    wr32(m + 0x14, 0xe2);
    uint32_t a = rd32(m + 0x3000);
    /* unmap the second page: the first and the last two stay traced */
    if (munmap(m + 0x1000, 0x1000)) return 88;
    wr32(m + 0x18, 0xe3);
    wr32(m + 0x2000, 0xe4);
    /* read-only: a write is the program's own SIGSEGV, a read is traced */
    struct sigaction sa = {0};
    sa.sa_handler = on_segv;
    sigaction(SIGSEGV, &sa, NULL);
    if (mprotect(m, 0x1000, PROT_READ)) return 87;
    uint32_t b = rd32(m + 0x10);
    if (!sigsetjmp(jb, 1)) wr32(m + 0x1c, 0xbad);
    if (mprotect(m, 0x1000, PROT_READ | PROT_WRITE)) return 86;
    wr32(m + 0x1c, 0xe5);
    munmap(m, 0x1000);
    munmap(m + 0x2000, 0x2000);
    printf("read %x %x segv %d\n", a, b, segv_seen);
    return 0;
}

/* ---- anonymous MAP_FIXED mappings replace parts of a device mapping ---- */
static int c_fixed(void) {
    uint8_t *d = map_device(dev_path, 12288);
    wr32(d + 0x10, 0xf1);
    void *a = mmap(d, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (a != d) return 89;
    /* plain memory now: neither traced nor reaching the device */
    wr32(d + 0x14, 0xbad1);
    uint32_t z = rd32(d + 0x14);
    /* the last page is still the device */
    wr32(d + 0x2010, 0xf2);
    /* plain memory made inaccessible: a write is the program's own SIGSEGV, not the
     * device's (the region it replaced is gone) */
    struct sigaction sa = {0};
    sa.sa_handler = on_segv;
    sigaction(SIGSEGV, &sa, NULL);
    if (mprotect(d, 4096, PROT_NONE)) return 88;
    if (!sigsetjmp(jb, 1)) wr32(d + 0x18, 0xbad2);
    /* the same, mapped inaccessible at once */
    a = mmap(d + 0x1000, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (a != d + 0x1000) return 87;
    if (!sigsetjmp(jb, 1)) wr32(d + 0x1018, 0xbad3);
    if (!sigsetjmp(jb, 1)) z += rd32(d + 0x101c);
    wr32(d + 0x2014, 0xf3);
    munmap(d, 12288);
    printf("anon %x segv %d\n", z, segv_seen);
    return 0;
}

/* ---- exec a script, a missing file, execveat and fexecve ---- */
static int c_exec(const char *how, char **rest) {
    wr32(dev + 0x10, 1);
    if (!strcmp(how, "missing")) {
        char *av[] = {"/nonexistent/q", NULL};
        execv(av[0], av);
        int e = errno;
        wr32(dev + 0x14, e);
        uint8_t *d = map_device(dev_path, 4096);
        wr32(d + 0x18, 0x99);
        munmap(d, 4096);
        printf("errno %d\n", e);
        return 0;
    }
    fflush(stdout);
    if (!strcmp(how, "errors")) {
        /* execs that fail, each with its own errno, the program going on traced: a
         * directory, a file without x, a bad path pointer, an empty file */
        /* (made beside the device, in the test's scratch directory) */
        char empty[512], noexec[512];
        snprintf(empty, sizeof empty, "%s.empty_XXXXXX", dev_path);
        snprintf(noexec, sizeof noexec, "%s.noexec_XXXXXX", dev_path);
        int fd = mkstemp(empty);
        if (fd < 0) return 89;
        fchmod(fd, 0755);
        close(fd);
        fd = mkstemp(noexec);
        if (fd < 0) return 89;
        close(fd);
        /* twenty in a row, as a shell's PATH search makes them */
        int eacces = 0;
        for (int k = 0; k < 20; k++) {
            char *av[] = {"x", NULL};
            execv("/", av);
            eacces += errno == EACCES;
        }
        wr32(dev + 0x1c, eacces);
        printf("%d ", eacces);
        const char *paths[] = {"/", noexec, (const char *)1, empty};
        for (int k = 0; k < 4; k++) {
            char *av[] = {"x", NULL};
            errno = 0;
            syscall(SYS_execve, paths[k], av, environ);
            wr32(dev + 0x20 + 4 * k, errno);
            printf("%d ", errno);
        }
        unlink(empty);
        unlink(noexec);
        /* argv NULL: the kernel gives the new image an empty argv (q_cases then
         * fails its own argument check: status 100) */
        fflush(stdout);
        syscall(SYS_execve, rest[0], NULL, NULL);
        return 88;
    } else if (!strcmp(how, "nosocket")) {
        /* a sandbox that refuses sockets (as many do) before it execs its worker */
        struct sock_filter f[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socket, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EACCES),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = {sizeof f / sizeof f[0], f};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) return 87;
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) return 86;
        execv(rest[0], rest);
    } else if (!strcmp(how, "nofile")) {
        /* no descriptor left to open: the limit is the three open ones */
        syscall(SYS_close_range, 3, ~0U, 0);
        struct rlimit rl = {3, 3};
        if (setrlimit(RLIMIT_NOFILE, &rl)) return 87;
        execv(rest[0], rest);
    } else if (!strcmp(how, "closefds")) {
        /* as a daemon does before it execs: every descriptor past stderr closed */
        syscall(SYS_close_range, 3, ~0U, 0);
        execv(rest[0], rest);
    } else if (!strcmp(how, "noenv")) {
        char *none[] = {NULL};
        execve(rest[0], rest, none);
    } else if (!strcmp(how, "system")) {
        /* glibc's posix_spawn: clone(CLONE_VM|CLONE_VFORK), then /bin/sh -c */
        char cmd[512];
        snprintf(cmd, sizeof cmd, "%s %s", rest[0], rest[1]);
        int st = system(cmd);
        wr32(dev + 0x18, WEXITSTATUS(st));
        printf("system %d\n", WEXITSTATUS(st));
        return 0;
    } else if (!strcmp(how, "execveat")) {
        syscall(SYS_execveat, AT_FDCWD, rest[0], rest, environ, 0);
    } else if (!strcmp(how, "fexecve")) {
        int fd = open(rest[0], O_RDONLY | O_CLOEXEC);
        if (fd < 0) return 89;
        fexecve(fd, rest, environ);
    } else {
        execv(rest[0], rest);
    }
    perror("exec");
    return 88;
}

/* ---- exit from a thread that is not the main one; exit_group while threads run ---- */
static void *exiter(void *arg) {
    (void)arg;
    wr32(dev + 0x60, 0x61);
    fflush(stdout);
    exit(5);
}
static volatile int go_on = 1;
static void *spinner(void *arg) {
    uint32_t k = (uint32_t)(uintptr_t)arg;
    while (go_on) wr32(dev + 0x200 + 4 * k, rd32(dev + 0x200 + 4 * k) + 1);
    return NULL;
}
static int c_exit(const char *how) {
    pthread_t t;
    if (!strcmp(how, "thread")) {
        say("main gone\n");
        pthread_create(&t, NULL, exiter, NULL);
        pthread_exit(NULL);
    }
    for (uintptr_t k = 0; k < 4; k++) pthread_create(&t, NULL, spinner, (void *)k);
    /* each spinner has made 50 increments (word k of the device starts at 0x1000 + k) */
    for (uint32_t k = 0; k < 4; k++)
        while (rd32(dev + 0x200 + 4 * k) < 0x1000 + 0x80 + k + 50) sched_yield();
    say("exiting\n");
    exit(6);
}

/* ---- stdin to stdout, the status given ---- */
static int c_stdio(void) {
    char buf[256];
    size_t n, total = 0;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        fwrite(buf, 1, n, stdout);
        total += n;
    }
    wr32(dev + 0x10, (uint32_t)total);
    return 42;
}

/* ---- SIGTERM (forwarded by the recorder): the handler touches the device ---- */
static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; wr32(dev + 0x70, 0x71); }
static int c_term(const char *ready) {
    struct sigaction sa = {0};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    wr32(dev + 0x10, 1);
    close(open(ready, O_CREAT | O_WRONLY, 0600));
    while (!term) pause();
    say("term\n");
    return 9;
}

/* ---- signals from another process while the program maps, unmaps and accesses ---- */
static volatile uint32_t storm_seen;
static void on_storm(int sig) {
    (void)sig;
    wr32(dev + 0x50, storm_seen);
    storm_seen++;
}
static int c_storm(int n) {
    struct sigaction sa = {0};
    sa.sa_handler = on_storm;
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGUSR1, &sa, NULL)) return 89;
    volatile uint32_t *acked = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (acked == MAP_FAILED) return 88;
    pid_t me = getpid();
    pid_t p = fork();
    if (p == 0) {
        /* one signal at a time: the next once the handler has run */
        for (int k = 0; k < n; k++) {
            kill(me, SIGUSR1);
            while (*acked <= (uint32_t)k) sched_yield();
        }
        _exit(0);
    }
    uint32_t i = 0;
    while (storm_seen < (uint32_t)n) {
        uint8_t *d = map_device(dev_path, 4096);
        wr32(d + 0x40, i++);
        munmap(d, 4096);
        *acked = storm_seen;
    }
    int st;
    waitpid(p, &st, 0);
    wr32(dev + 0x44, i);
    printf("signals %u\n", storm_seen);
    return 0;
}

/* ---- one device mapped several ways: at an offset read-only, through a dup, through
 * /proc/self/fd, used after its descriptor is closed ---- */
static int c_maps(void) {
    int fd = open(dev_path, O_RDWR);
    if (fd < 0) return 89;
    uint8_t *ro = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0x1000);
    int fd2 = dup(fd);
    uint8_t *rw = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd2, 0);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int fd3 = open(path, O_RDWR);
    uint8_t *pr = fd3 < 0 ? MAP_FAILED : mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd3, 0);
    if (ro == MAP_FAILED || rw == MAP_FAILED || pr == MAP_FAILED) return 88;
    uint32_t a = rd32(ro + 0x10);
    wr32(rw + 0x1010, 0x77);
    uint32_t b = rd32(ro + 0x10);
    wr8(pr + 0x20, 0x5a);
    close(fd);
    close(fd2);
    close(fd3);
    wr16(rw + 0x24, 0x1234);
    uint64_t c = rd64(pr + 0x20);
    printf("read %x %x %llx\n", a, b, (unsigned long long)c);
    return 0;
}

/* ---- fork while another thread is accessing the device ---- */
static int c_thrfork(void) {
    pthread_t t;
    pthread_create(&t, NULL, spinner, (void *)0);
    while (rd32(dev + 0x200) < 0x1080 + 20) sched_yield();
    pid_t p = fork();
    if (p == 0) {
        wr32(dev + 0x14, 2);
        _exit(3);
    }
    int st;
    waitpid(p, &st, 0);
    go_on = 0;
    pthread_join(t, NULL);
    wr32(dev + 0x18, WEXITSTATUS(st));
    printf("child %d\n", WEXITSTATUS(st));
    return 0;
}

/* ---- the program stops itself; a child of it continues it ---- */
static int c_stopcont(void) {
    wr32(dev + 0x10, 1);
    pid_t me = getpid();
    pid_t p = fork();
    if (p == 0) {
        /* wait until the parent is stopped (state T in /proc/PID/stat), continue it */
        char path[64], buf[256];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)me);
        for (;;) {
            int fd = open(path, O_RDONLY);
            ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
            if (fd >= 0) close(fd);
            if (n <= 0) _exit(90);
            buf[n] = 0;
            char *st = strrchr(buf, ')');
            if (st && (st[2] == 'T' || st[2] == 't')) break;
            usleep(1000);
        }
        kill(me, SIGCONT);
        _exit(0);
    }
    raise(SIGSTOP);
    wr32(dev + 0x14, 2);
    int st;
    waitpid(p, &st, 0);
    printf("continued %d\n", WEXITSTATUS(st));
    return 0;
}

/* ---- SIGSYS and SIGSEGV ignored (SIG_IGN), SIGSYS raised ---- */
static int c_ignore(void) {
    signal(SIGSYS, SIG_IGN);
    signal(SIGSEGV, SIG_IGN);
    uint8_t *d = map_device(dev_path, 4096);
    wr32(d + 0x20, 0xa7);
    raise(SIGSYS);
    uint32_t v = rd32(d + 0x20);
    munmap(d, 4096);
    struct sigaction back;
    sigaction(SIGSEGV, NULL, &back);
    printf("read %x ign %d\n", v, back.sa_handler == SIG_IGN);
    return 0;
}

/* ---- a mapping of the program's own at a fixed high address ---- */
static int c_high(const char *at, int replace) {
    uint8_t *want = (uint8_t *)strtoull(at, NULL, 0);
    int how = replace ? MAP_FIXED : MAP_FIXED_NOREPLACE;
    uint8_t *p = mmap(want, replace ? 0x400000 : 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | how, -1, 0);
    if (p != want) { printf("mmap %s: %s\n", at, strerror(errno)); return 3; }
    p[0] = 1;
    wr32(dev + 0x20, p[0]);
    printf("mapped\n");
    return 0;
}

/* ---- what the program inherited: SIGSEGV and SIGSYS ignored or blocked ---- */
static int c_inherited(void) {
    struct sigaction segv, sys;
    sigaction(SIGSEGV, NULL, &segv);
    sigaction(SIGSYS, NULL, &sys);
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    /* (queried with a set: what sigprocmask reports for a change) */
    sigset_t none, seen;
    sigemptyset(&none);
    sigprocmask(SIG_BLOCK, &none, &seen);
    uint8_t *d = map_device(dev_path, 4096);
    wr32(d + 0x20, 0xa9);
    uint32_t v = rd32(d + 0x20);
    munmap(d, 4096);
    printf("read %x ign %d %d blocked %d %d usr1 %d %d\n", v, segv.sa_handler == SIG_IGN,
           sys.sa_handler == SIG_IGN, sigismember(&seen, SIGSEGV), sigismember(&seen, SIGSYS),
           sigismember(&now, SIGUSR1), sigismember(&seen, SIGUSR1));
    return 0;
}

/* ---- many short-lived child processes, a few at a time ---- */
static int c_forks(int n) {
    int bad = 0;
    for (int k = 0; k < n; k += 4) {
        pid_t p[4];
        int m = n - k < 4 ? n - k : 4;
        for (int j = 0; j < m; j++) {
            p[j] = fork();
            if (p[j] == 0) {
                wr32(dev + 0x100 + 4 * ((k + j) % 64), k + j);
                _exit((k + j) & 0x7f);
            }
        }
        for (int j = 0; j < m; j++) {
            int st;
            waitpid(p[j], &st, 0);
            bad += !WIFEXITED(st) || WEXITSTATUS(st) != ((k + j) & 0x7f);
        }
    }
    wr32(dev + 0x84, n);
    printf("forks %d bad %d\n", n, bad);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) return 100;
    dev_path = argv[1];
    dev = map_device(dev_path, 4096);
    const char *c = argv[2];
    const char *a = argc > 3 ? argv[3] : "";
    exec_argv = argv + 4;
    if (!strcmp(c, "fork")) return c_fork();
    if (!strcmp(c, "spawn")) return c_spawn(a);
    if (!strcmp(c, "seccomp")) return c_seccomp(a);
    if (!strcmp(c, "sigsys")) return c_sigsys();
    if (!strcmp(c, "blockall")) return c_blockall(0);
    if (!strcmp(c, "maskquery")) return c_blockall(1);
    if (!strcmp(c, "handler")) return c_handler(0, 1);
    if (!strcmp(c, "altstack")) return c_handler(strtoul(a, NULL, 0), 0);
    if (!strcmp(c, "altfull")) return c_handler(strtoul(a, NULL, 0), 1);
    if (!strcmp(c, "threads")) return c_threads(atoi(a));
    if (!strcmp(c, "reuse")) return c_reuse(atoi(a), argc > 4 ? atoi(argv[4]) : 1000);
    if (!strcmp(c, "rawreuse")) return c_rawreuse(a, argc > 4 ? atol(argv[4]) : 1000);
    if (!strcmp(c, "blockread")) return c_blockread();
    if (!strcmp(c, "malloc")) return c_malloc(atoi(a));
    if (!strcmp(c, "remap")) return c_remap();
    if (!strcmp(c, "fixed")) return c_fixed();
    if (!strcmp(c, "exec")) return c_exec(a, argv + 4);
    if (!strcmp(c, "exit")) return c_exit(a);
    if (!strcmp(c, "stdio")) return c_stdio();
    if (!strcmp(c, "term")) return c_term(a);
    if (!strcmp(c, "storm")) return c_storm(atoi(a));
    if (!strcmp(c, "maps")) return c_maps();
    if (!strcmp(c, "thrfork")) return c_thrfork();
    if (!strcmp(c, "stopcont")) return c_stopcont();
    if (!strcmp(c, "ignore")) return c_ignore();
    if (!strcmp(c, "inherited")) return c_inherited();
    if (!strcmp(c, "forks")) return c_forks(atoi(a));
    if (!strcmp(c, "high")) return c_high(a, 0);
    if (!strcmp(c, "highfixed")) return c_high(a, 1);
    return 101;
}
