/*
 * log.c - the one log sink: stderr, one line per event, UTC timestamp with
 * milliseconds, level, module and file:line. Not thread-safe by design: only
 * the loop thread logs (libuv's thread pool does libraft's disk work and
 * io_destroy(), none of which logs).
 *
 * Text lines (the default) are written as formatted:
 *
 *   2026-01-02T03:04:05.678Z INFO  net server.c:662 event=listening http=...
 *
 * JSON lines carry the same fields, one object per line:
 *
 *   {"time":"2026-01-02T03:04:05.678Z","level":"info","module":"net",
 *    "where":"server.c:662","event":"listening","http":"..."}
 *
 * The formatted message is split back into its key=value fields (a value in
 * double quotes loses them); words that are not key=value (raft's own
 * diagnostics, "...: skipped") go, in order, to "message". Every field value
 * is a string, so a field has one type whatever its content (conn ids are
 * hex, some all digits). A field whose key is one of the fixed names gets a
 * "_" prefix. Bytes that are not UTF-8 become U+FFFD.
 *
 * Memory: a JSON line is built on the stack in buffers sized for the worst
 * case (every byte escaped as \uXXXX), from a message cut at
 * LOG_JSON_MSG_MAX bytes: no allocation, nothing unbounded.
 */
#include "log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

enum log_level log_threshold = LOG_LVL_INFO;
enum log_format log_format = LOG_FMT_TEXT;

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
static const char *const level_lower[] = {"error", "warn", "info", "debug"};
static const char *const format_names[] = {"text", "json"};

/* ---- JSON writer --------------------------------------------------------- */

/* Room kept at the end of the buffer for the closing quote of a string cut
 * short, ',"truncated":"true"', '}' and '\n'. */
#define JW_TAIL 32
/* Worst case of one message: each byte escaped to 6, plus per field
 * "",:"" (a field is at least 2 bytes: "k=" -> 7 bytes of punctuation). */
#define JW_CAP (6 * LOG_JSON_MSG_MAX + 4 * LOG_JSON_MSG_MAX + 512)

struct jw {
    char buf[JW_CAP];
    size_t len;
    bool full; /* something was dropped */
};

static bool jw_room(struct jw *w, size_t n)
{
    if (w->len + n + JW_TAIL > sizeof(w->buf)) {
        w->full = true;
        return false;
    }
    return true;
}

static void jw_raw(struct jw *w, const char *s, size_t n)
{
    if (!jw_room(w, n))
        return;
    memcpy(w->buf + w->len, s, n);
    w->len += n;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one
 * (overlong forms, surrogates and code points past U+10FFFF included). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, cp = c & 0x07;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

/* A JSON string: quotes, escapes (RFC 8259 section 7). Cut short, and the
 * line marked, when the buffer is full. The quotes always go in: callers
 * stop adding strings once w->full is set, and JW_TAIL holds the closing
 * quote of the string being cut. */
static void jw_str(struct jw *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;

    w->buf[w->len++] = '"';
    for (size_t i = 0; i < n;) {
        char esc[8];
        size_t k, m = utf8_len(p + i, n - i);

        if (m == 0) {
            memcpy(esc, "\\ufffd", 6);
            k = 6;
            m = 1;
        } else if (m > 1) {
            if (!jw_room(w, m))
                break;
            memcpy(w->buf + w->len, p + i, m);
            w->len += m;
            i += m;
            continue;
        } else if (p[i] == '"' || p[i] == '\\') {
            esc[0] = '\\';
            esc[1] = (char)p[i];
            k = 2;
        } else if (p[i] == '\n' || p[i] == '\r' || p[i] == '\t') {
            esc[0] = '\\';
            esc[1] = p[i] == '\n' ? 'n' : p[i] == '\r' ? 'r' : 't';
            k = 2;
        } else if (p[i] < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[p[i] >> 4];
            esc[5] = hex[p[i] & 15];
            k = 6;
        } else {
            esc[0] = (char)p[i];
            k = 1;
        }
        if (!jw_room(w, k))
            break;
        memcpy(w->buf + w->len, esc, k);
        w->len += k;
        i += m;
    }
    w->buf[w->len++] = '"';
}

/* ,"key":"value" - the key (plain key characters, never escaped) and the
 * punctuation whole, or nothing; the value as much as fits. */
static void jw_field(struct jw *w, const char *key, size_t klen,
                     const char *val, size_t vlen)
{
    if (w->full || !jw_room(w, klen + 6))
        return;
    w->buf[w->len++] = ',';
    jw_str(w, key, klen);
    w->buf[w->len++] = ':';
    jw_str(w, val, vlen);
}

static bool is_key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
}

static bool is_reserved(const char *k, size_t n)
{
    static const char *const names[] = {"time",  "level",   "module",
                                        "where", "message", "truncated"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i]) == n && memcmp(names[i], k, n) == 0)
            return true;
    return false;
}

/*
 * Splits msg into key=value fields. A quoted value ends at the first '"'
 * followed by a space or the end (values are not escaped in the text
 * format, so that is the best reading of `why="a "b" c"`); an unterminated
 * quote runs to the end. Other words are joined into rest.
 */
static void jw_fields(struct jw *w, const char *msg, size_t n, char *rest,
                      size_t *rest_len)
{
    size_t i = 0;

    *rest_len = 0;
    while (i < n) {
        size_t k0, k1, v0, v1;

        while (i < n && msg[i] == ' ')
            i++;
        if (i == n)
            break;
        k0 = i;
        while (i < n && is_key_char(msg[i]))
            i++;
        k1 = i;
        if (k1 == k0 || i == n || msg[i] != '=') {
            /* Not key=value: the word goes to "message". */
            while (i < n && msg[i] != ' ')
                i++;
            if (*rest_len > 0)
                rest[(*rest_len)++] = ' ';
            memcpy(rest + *rest_len, msg + k0, i - k0);
            *rest_len += i - k0;
            continue;
        }
        i++; /* '=' */
        if (i < n && msg[i] == '"') {
            v0 = ++i;
            while (i < n &&
                   !(msg[i] == '"' && (i + 1 == n || msg[i + 1] == ' ')))
                i++;
            v1 = i;
            if (i < n)
                i++; /* closing quote */
        } else {
            v0 = i;
            while (i < n && msg[i] != ' ')
                i++;
            v1 = i;
        }
        if (is_reserved(msg + k0, k1 - k0)) {
            char key[64];

            if (k1 - k0 + 1 > sizeof(key))
                continue;
            key[0] = '_';
            memcpy(key + 1, msg + k0, k1 - k0);
            jw_field(w, key, k1 - k0 + 1, msg + v0, v1 - v0);
        } else {
            jw_field(w, msg + k0, k1 - k0, msg + v0, v1 - v0);
        }
    }
}

static void emit_json(const char *ts, enum log_level lvl, const char *module,
                      const char *where, const char *fmt, va_list ap)
{
    struct jw w;
    char msg[LOG_JSON_MSG_MAX], rest[LOG_JSON_MSG_MAX];
    size_t n, rest_len;
    int rv;

    rv = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (rv < 0)
        rv = 0;
    n = (size_t)rv < sizeof(msg) ? (size_t)rv : sizeof(msg) - 1;
    w.len = 0;
    w.full = false;
    jw_raw(&w, "{\"time\":", 8);
    jw_str(&w, ts, strlen(ts));
    jw_field(&w, "level", 5, level_lower[lvl], strlen(level_lower[lvl]));
    jw_field(&w, "module", 6, module, strlen(module));
    jw_field(&w, "where", 5, where, strlen(where));
    jw_fields(&w, msg, n, rest, &rest_len);
    if (rest_len > 0)
        jw_field(&w, "message", 7, rest, rest_len);
    /* JW_TAIL keeps room for this tail whatever happened before. */
    if (w.full || (size_t)rv >= sizeof(msg)) {
        memcpy(w.buf + w.len, ",\"truncated\":\"true\"", 19);
        w.len += 19;
    }
    w.buf[w.len++] = '}';
    w.buf[w.len++] = '\n';
    fwrite(w.buf, 1, w.len, stderr);
}

/* ---- the sink ------------------------------------------------------------ */

void log_emit(enum log_level lvl, const char *module, const char *file,
              int line, const char *fmt, ...)
{
    struct timeval tv;
    struct tm tm;
    char ts[40], where[256];
    const char *base = strrchr(file, '/');
    size_t tl;
    va_list ap;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    tl = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof(ts) - tl, ".%03ldZ", (long)(tv.tv_usec / 1000));
    base = base != NULL ? base + 1 : file;
    va_start(ap, fmt);
    if (log_format == LOG_FMT_JSON) {
        snprintf(where, sizeof(where), "%s:%d", base, line);
        emit_json(ts, lvl, module, where, fmt, ap);
    } else {
        fprintf(stderr, "%s %-5s %s %s:%d ", ts, level_names[lvl], module, base,
                line);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
    }
    va_end(ap);
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

const char *log_level_name(enum log_level lvl)
{
    return (unsigned)lvl < 4 ? level_lower[lvl] : "?";
}

int log_format_parse(const char *s)
{
    for (int i = 0; i < 2; i++)
        if (strcasecmp(s, format_names[i]) == 0)
            return i;
    return -1;
}

const char *log_format_name(enum log_format fmt)
{
    return (unsigned)fmt < 2 ? format_names[fmt] : "?";
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
