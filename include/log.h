/*
 * log.h - one logging macro family for consensus, net and main (relay never
 * logs). One event per line on stderr: time, level, module, file:line, then
 * stable key=value fields. The level is checked before formatting.
 *
 * Two line formats (--log-format): "text", today's key=value line, and
 * "json", one JSON object per line with the same fields (see log.c). The
 * level and the format are plain globals read at every call: the admin API
 * (POST /admin/log) changes them at run time, on the loop thread.
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

enum log_format {
    LOG_FMT_TEXT = 0,
    LOG_FMT_JSON = 1,
};

extern enum log_format log_format;

void log_emit(enum log_level lvl, const char *module, const char *file,
              int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Parses "error", "warn", "info", "debug"; returns -1 when unknown. */
int log_level_parse(const char *s);
/* "error", "warn", "info", "debug" (static strings). */
const char *log_level_name(enum log_level lvl);
/* Parses "text", "json"; returns -1 when unknown. */
int log_format_parse(const char *s);
/* "text", "json" (static strings). */
const char *log_format_name(enum log_format fmt);

/*
 * A JSON line carries at most LOG_JSON_MSG_MAX bytes of the formatted
 * message; a longer one is cut and the object gets "truncated": "true".
 * Text lines are not cut.
 */
#define LOG_JSON_MSG_MAX 4096

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

/*
 * Rate-limited lines for events an outsider can repeat at will (refused
 * peers, failed handshakes, accept errors): each call site logs at most
 * LOG_RL_BURST lines per second; the next line it lets through after a
 * quiet spell is preceded by "event=log_suppressed lines=N".
 */
#define LOG_RL_BURST 5
struct log_rl {
    long long window_s;
    unsigned in_window;
    unsigned long long suppressed;
};
/* True when the site may log now. Emits the suppression note itself. */
int log_rl_allow(struct log_rl *rl, enum log_level lvl, const char *module,
                 const char *file, int line);

#define LOG_AT_RL(lvl, ...)                                                    \
    do {                                                                       \
        static struct log_rl log_rl_site_;                                     \
        if ((lvl) <= log_threshold &&                                          \
            log_rl_allow(&log_rl_site_, (lvl), LOG_MODULE, __FILE__,           \
                         __LINE__))                                            \
            log_emit((lvl), LOG_MODULE, __FILE__, __LINE__, __VA_ARGS__);      \
    } while (0)

#define LOG_WARN_RL(...) LOG_AT_RL(LOG_LVL_WARN, __VA_ARGS__)
#define LOG_INFO_RL(...) LOG_AT_RL(LOG_LVL_INFO, __VA_ARGS__)

#endif
