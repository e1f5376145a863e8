/*
 * test_log.c - the log sink (src/log.c) in both formats.
 *
 * Design: during each log_emit() (the EMIT macro) stderr is pointed at a
 * temporary file, so cmocka's own messages still reach the terminal; the
 * test reads the lines back. JSON lines must parse (jansson rejects invalid
 * UTF-8, so escaping is checked too) and carry the fixed fields and each
 * key=value; text lines keep their layout. Hostile messages (quotes,
 * control bytes, invalid UTF-8, a message past LOG_JSON_MSG_MAX, fields that
 * all need escaping) and seeded random bytes must still give one valid
 * object per line, of bounded size.
 *
 * Not covered here: the macros' level check and run-time changes through
 * the admin API (tests/blackbox/logging.test.mjs).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "log.h"
#include "unit_util.h"

static FILE *capture;
static int saved_stderr = -1;

static int setup(void **state)
{
    (void)state;
    capture = tmpfile();
    if (capture == NULL)
        return -1;
    saved_stderr = dup(STDERR_FILENO);
    if (saved_stderr < 0)
        return -1;
    log_format = LOG_FMT_JSON;
    log_threshold = LOG_LVL_DEBUG;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    close(saved_stderr);
    fclose(capture);
    log_format = LOG_FMT_TEXT;
    log_threshold = LOG_LVL_INFO;
    return 0;
}

static void redirect(void)
{
    fflush(stderr);
    assert_true(dup2(fileno(capture), STDERR_FILENO) >= 0);
}

static void restore(void)
{
    fflush(stderr);
    assert_true(dup2(saved_stderr, STDERR_FILENO) >= 0);
}

#define EMIT(...)                                                              \
    do {                                                                       \
        redirect();                                                            \
        log_emit(__VA_ARGS__);                                                 \
        restore();                                                             \
    } while (0)

/* Everything written since the last call (the file is then emptied). */
static char *take_output(size_t *len)
{
    int fd = fileno(capture);
    off_t n = lseek(fd, 0, SEEK_END);
    char *buf;

    assert_true(n >= 0);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)n, 0), n);
    buf[n] = '\0';
    assert_int_equal(ftruncate(fd, 0), 0);
    assert_true(lseek(fd, 0, SEEK_SET) == 0);
    if (len != NULL)
        *len = (size_t)n;
    return buf;
}

/* The one line written since the last call, parsed; asserts it is a single
 * JSON object with the fixed fields. */
static json_t *take_json(void)
{
    size_t len;
    char *text = take_output(&len);
    json_error_t e;
    json_t *o;

    assert_true(len > 0);
    assert_true(text[len - 1] == '\n');
    assert_null(memchr(text, '\n', len - 1)); /* one line */
    o = json_loadb(text, len, 0, &e);
    if (o == NULL)
        fail_msg("not JSON (%s at %d): %.300s", e.text, e.position, text);
    assert_true(json_is_object(o));
    assert_true(json_is_string(json_object_get(o, "time")));
    assert_true(json_is_string(json_object_get(o, "level")));
    assert_true(json_is_string(json_object_get(o, "module")));
    assert_true(json_is_string(json_object_get(o, "where")));
    free(text);
    return o;
}

static const char *field(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));

    if (s == NULL)
        fail_msg("no string field \"%s\"", key);
    return s;
}

static void test_json_fields(void **state)
{
    regex_t re;
    json_t *o;

    (void)state;
    EMIT(LOG_LVL_INFO, "net", "/src/net/server.c", 662,
         "event=listening http=%s:%d tls=%s", "127.0.0.1", 8080, "no");
    o = take_json();
    assert_int_equal(regcomp(&re,
                             "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:"
                             "[0-9]{2}\\.[0-9]{3}Z$",
                             REG_EXTENDED | REG_NOSUB),
                     0);
    assert_int_equal(regexec(&re, field(o, "time"), 0, NULL, 0), 0);
    regfree(&re);
    assert_string_equal(field(o, "level"), "info");
    assert_string_equal(field(o, "module"), "net");
    assert_string_equal(field(o, "where"), "server.c:662");
    assert_string_equal(field(o, "event"), "listening");
    assert_string_equal(field(o, "http"), "127.0.0.1:8080");
    assert_string_equal(field(o, "tls"), "no");
    assert_null(json_object_get(o, "message"));
    assert_null(json_object_get(o, "truncated"));
    assert_int_equal(json_object_size(o), 7);
    json_decref(o);

    /* Quoted values lose their quotes; words that are not key=value go to
     * "message"; a fixed name used as a key gets "_". */
    EMIT(LOG_LVL_WARN, "cons", "fsm.c", 132,
         "event=bad_entry index=%d why=\"%s\" level=7: skipped", 5,
         "two words");
    o = take_json();
    assert_string_equal(field(o, "level"), "warn");
    assert_string_equal(field(o, "index"), "5");
    assert_string_equal(field(o, "why"), "two words");
    assert_string_equal(field(o, "_level"), "7:");
    assert_string_equal(field(o, "message"), "skipped");
    json_decref(o);

    /* A raft diagnostic: free text only. */
    EMIT(LOG_LVL_DEBUG, "raft", "uv.c", 604, "%s", "start index 1, 1 entries");
    o = take_json();
    assert_string_equal(field(o, "level"), "debug");
    assert_string_equal(field(o, "message"), "start index 1, 1 entries");
    json_decref(o);
}

static void test_json_escaping(void **state)
{
    json_t *o;

    (void)state;
    /* Quotes inside (not before a space), backslash, control bytes, valid
     * UTF-8 kept, an invalid byte and a lone continuation byte replaced,
     * an overlong '/' and a UTF-16 surrogate replaced byte by byte. */
    EMIT(LOG_LVL_ERROR, "net", "ws.c", 1, "event=x err=\"%s\" room=%s",
         "say \"hi\"there \\ \n\t\x01 \xc3\xa9",
         "a\xff"
         "b\x80"
         "c\xc0\xaf"
         "d\xed\xa0\x80");
    o = take_json();
    assert_string_equal(field(o, "err"),
                        "say \"hi\"there \\ \n\t\x01 \xc3\xa9");
    assert_string_equal(field(o, "room"),
                        "a\xef\xbf\xbd"
                        "b\xef\xbf\xbd"
                        "c\xef\xbf\xbd\xef\xbf\xbd"
                        "d\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    json_decref(o);

    /* An unterminated quote runs to the end. */
    EMIT(LOG_LVL_INFO, "net", "ws.c", 2, "event=y msg=\"open end");
    o = take_json();
    assert_string_equal(field(o, "msg"), "open end");
    json_decref(o);
}

static void test_json_bounded(void **state)
{
    char *big = malloc(3 * LOG_JSON_MSG_MAX);
    size_t len;
    char *text;
    json_t *o;

    (void)state;
    assert_non_null(big);
    /* Longer than the cap: cut, marked, still one object. */
    memset(big, 'a', 3 * LOG_JSON_MSG_MAX - 1);
    big[3 * LOG_JSON_MSG_MAX - 1] = '\0';
    EMIT(LOG_LVL_INFO, "net", "x.c", 1, "event=big v=%s", big);
    o = take_json();
    assert_string_equal(field(o, "truncated"), "true");
    assert_true(strlen(field(o, "v")) < LOG_JSON_MSG_MAX);
    json_decref(o);

    /* Every byte escaped to \u00XX: the worst case fits whole. */
    memset(big, '\x01', LOG_JSON_MSG_MAX);
    big[LOG_JSON_MSG_MAX - 8] = '\0';
    EMIT(LOG_LVL_INFO, "net", "x.c", 1, "v=%s", big);
    o = take_json();
    assert_int_equal(strlen(field(o, "v")), LOG_JSON_MSG_MAX - 8);
    assert_null(json_object_get(o, "truncated"));
    json_decref(o);

    /* As many empty fields as fit in the message. */
    for (size_t i = 0; i + 3 < LOG_JSON_MSG_MAX; i += 3)
        memcpy(big + i, "a= ", 3);
    big[LOG_JSON_MSG_MAX - 2] = '\0';
    EMIT(LOG_LVL_INFO, "net", "x.c", 1, "%s", big);
    text = take_output(&len);
    o = json_loadb(text, len, 0, NULL);
    assert_non_null(o);
    assert_true(len < 16 * LOG_JSON_MSG_MAX);
    json_decref(o);
    free(text);
    free(big);
}

/* Seeded random messages: every line must parse as one object. */
static void test_json_random(void **state)
{
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    char msg[600];

    (void)state;
    for (int round = 0; round < 2000; round++) {
        size_t n = xorshift(&seed) % (sizeof(msg) - 1);
        json_t *o;

        for (size_t i = 0; i < n; i++) {
            uint64_t r = xorshift(&seed);
            /* Biased towards the characters the parser cares about. */
            static const char special[] = "= \"\\\n\x01\xc3\xa9\xff\xe2\x82";

            msg[i] = (r & 3) == 0 ? special[(r >> 8) % (sizeof(special) - 1)]
                                  : (char)(r >> 16);
            if (msg[i] == '\0')
                msg[i] = 'z';
        }
        msg[n] = '\0';
        EMIT(LOG_LVL_INFO, "net", "x.c", round, "%s", msg);
        o = take_json();
        json_decref(o);
    }
}

static void test_text_unchanged(void **state)
{
    regex_t re;
    char *text;

    (void)state;
    log_format = LOG_FMT_TEXT;
    EMIT(LOG_LVL_INFO, "net", "/src/net/server.c", 662,
         "event=listening http=%s why=\"%s\"", "127.0.0.1:8080", "a \"b\"");
    text = take_output(NULL);
    assert_int_equal(
        regcomp(&re,
                "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}\\.[0-9]{3}Z "
                "INFO  net server\\.c:662 event=listening "
                "http=127\\.0\\.0\\.1:8080 why=\"a \"b\"\"\n$",
                REG_EXTENDED | REG_NOSUB),
        0);
    if (regexec(&re, text, 0, NULL, 0) != 0)
        fail_msg("text line changed: %s", text);
    regfree(&re);
    free(text);
    log_format = LOG_FMT_JSON;
}

static void test_names(void **state)
{
    (void)state;
    assert_int_equal(log_level_parse("debug"), LOG_LVL_DEBUG);
    assert_int_equal(log_level_parse("WARNING"), LOG_LVL_WARN);
    assert_int_equal(log_level_parse("verbose"), -1);
    assert_string_equal(log_level_name(LOG_LVL_ERROR), "error");
    assert_int_equal(log_format_parse("json"), LOG_FMT_JSON);
    assert_int_equal(log_format_parse("Text"), LOG_FMT_TEXT);
    assert_int_equal(log_format_parse("xml"), -1);
    assert_string_equal(log_format_name(LOG_FMT_JSON), "json");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_json_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_random, setup, teardown),
        cmocka_unit_test_setup_teardown(test_text_unchanged, setup, teardown),
        cmocka_unit_test(test_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
