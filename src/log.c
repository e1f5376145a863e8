/*
 * log.c - the one log sink: stderr, one line per event, UTC timestamp with
 * milliseconds, level, module and file:line. Not thread-safe by design: the
 * whole node runs on one loop thread.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

enum log_level log_threshold = LOG_LVL_INFO;

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

void log_emit(enum log_level lvl, const char *module, const char *file,
              int line, const char *fmt, ...)
{
    struct timeval tv;
    struct tm tm;
    char ts[32];
    const char *base = strrchr(file, '/');
    va_list ap;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ %-5s %s %s:%d ", ts, (long)(tv.tv_usec / 1000),
            level_names[lvl], module, base != NULL ? base + 1 : file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return LOG_LVL_WARN;
    return -1;
}

int log_rl_allow(struct log_rl *rl, enum log_level lvl, const char *module,
                 const char *file, int line)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (ts.tv_sec != rl->window_s) {
        rl->window_s = ts.tv_sec;
        rl->in_window = 0;
    }
    if (rl->in_window >= LOG_RL_BURST) {
        rl->suppressed++;
        return 0;
    }
    rl->in_window++;
    if (rl->suppressed > 0) {
        log_emit(lvl, module, file, line, "event=log_suppressed lines=%llu",
                 rl->suppressed);
        rl->suppressed = 0;
    }
    return 1;
}
