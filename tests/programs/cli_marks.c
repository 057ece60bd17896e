/* Markers that could be taken for records, long ones: each argv[3..] is passed to
 * mmio_trace_mark(), with "\n", "\t", "\r", "\e" and "\\" as C escapes, and "LONG:N"
 * as N bytes 'a'..'z' repeated; a device write follows each. Then creates argv[2] and,
 * if argc says so, waits for the file named by the last argument. */
#include "mmio.h"
#include <dlfcn.h>
#include <string.h>
#include <time.h>

static char *unescape(const char *s) {
    if (strncmp(s, "LONG:", 5) == 0) {
        long n = atol(s + 5);
        char *t = malloc(n + 1);
        for (long i = 0; i < n; i++) t[i] = 'a' + i % 26;
        t[n] = 0;
        return t;
    }
    char *t = malloc(strlen(s) + 1), *o = t;
    for (; *s; s++) {
        if (*s != '\\' || !s[1]) { *o++ = *s; continue; }
        s++;
        switch (*s) {
        case 'n': *o++ = '\n'; break;
        case 't': *o++ = '\t'; break;
        case 'r': *o++ = '\r'; break;
        case 'e': *o++ = 27; break;
        default: *o++ = *s;
        }
    }
    *o = 0;
    return t;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    void (*mark)(const char *) = (void (*)(const char *))dlsym(RTLD_DEFAULT, "mmio_trace_mark");
    if (!mark) return 3;
    uint8_t *bar = map_device(argv[1], 4096);
    const char *wait = NULL;
    int last = argc;
    if (argc > 3 && strncmp(argv[argc - 1], "WAIT:", 5) == 0) {
        wait = argv[argc - 1] + 5;
        last = argc - 1;
    }
    for (int i = 3; i < last; i++) {
        mark(unescape(argv[i]));
        wr32(bar, (uint32_t)i);
    }
    int fd = open(argv[2], O_CREAT | O_WRONLY, 0644);
    if (fd < 0) return 4;
    close(fd);
    struct timespec ts = {0, 5 * 1000 * 1000};
    if (wait)
        for (int i = 0; access(wait, F_OK) != 0; i++) {
            if (i > 24000) return 9; /* two minutes: the test is gone */
            nanosleep(&ts, NULL);
        }
    wr32(bar, 0xff);
    return 0;
}
