/*
 * log.h - one logging macro family for consensus, net and main (relay never
 * logs). One event per line on stderr: time, level, module, file:line, then
 * stable key=value fields. The level is checked before formatting.
 */
#ifndef DRIFTD_LOG_H
#define DRIFTD_LOG_H

enum log_level {
    LOG_LVL_ERROR = 0,
    LOG_LVL_WARN = 1,
    LOG_LVL_INFO = 2,
    LOG_LVL_DEBUG = 3,
};

extern enum log_level log_threshold;

void log_emit(enum log_level lvl, const char *module, const char *file,
              int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Parses "error", "warn", "info", "debug"; returns -1 when unknown. */
int log_level_parse(const char *s);

#ifndef LOG_MODULE
#define LOG_MODULE "driftd"
#endif

#define LOG_AT(lvl, ...)                                                       \
    do {                                                                       \
        if ((lvl) <= log_threshold)                                            \
            log_emit((lvl), LOG_MODULE, __FILE__, __LINE__, __VA_ARGS__);      \
    } while (0)

#define LOG_ERROR(...) LOG_AT(LOG_LVL_ERROR, __VA_ARGS__)
#define LOG_WARN(...) LOG_AT(LOG_LVL_WARN, __VA_ARGS__)
#define LOG_INFO(...) LOG_AT(LOG_LVL_INFO, __VA_ARGS__)
#define LOG_DEBUG(...) LOG_AT(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
