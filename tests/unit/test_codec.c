/*
 * test_codec.c - client message codecs (relay_msg_decode, relay_enc_*,
 * relay_value_to_json).
 *
 * Covers: the message schema in every format (the same JSON-described cases
 * are turned into CBOR and msgpack frames by libcbor / msgpack-c here, so
 * one table drives all three); exact bytes of every server message in every
 * format (CBOR vectors were produced by node-cbor, cbor-web 8, the real
 * client's encoder); value fidelity across formats (64-bit integers, floats,
 * unicode, byte strings, empty containers); what node-cbor really sends
 * (tag 64 Uint8Array, typed-array tags, bignums, half floats) and
 * indefinite lengths; malformed, truncated and hostile input (nesting bombs);
 * and a seeded pseudo-fuzz loop over mutated frames and random canonical
 * values, meant to run under ASan/UBSan.
 *
 * Not covered here: allocation failure injection (relay has no allocator
 * hook yet).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>
#include <jansson.h>
#include <msgpack.h>

#include "relay.h"
#include "unit_util.h"

#define ERRLEN 256

/* ---- helpers ------------------------------------------------------------- */


static void vbyte(struct vec *v, uint8_t c)
{
    vput(v, &c, 1);
}

static void vrep(struct vec *v, uint8_t c, size_t count)
{
    for (size_t i = 0; i < count; i++)
        vbyte(v, c);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Appends hex digits (spaces ignored). */
static void vhex(struct vec *v, const char *hex)
{
    while (*hex) {
        int hi, lo;

        if (*hex == ' ') {
            hex++;
            continue;
        }
        hi = hexval(hex[0]);
        lo = hexval(hex[1]);
        assert_true(hi >= 0 && lo >= 0);
        vbyte(v, (uint8_t)(hi * 16 + lo));
        hex += 2;
    }
}

static char *tohex(const uint8_t *p, size_t n)
{
    char *s = malloc(2 * n + 1);

    assert_non_null(s);
    for (size_t i = 0; i < n; i++)
        snprintf(s + 2 * i, 3, "%02x", p[i]);
    s[2 * n] = '\0';
    return s;
}

static void assert_hex(const uint8_t *p, size_t n, const char *want)
{
    char *got = tohex(p, n);
    struct vec w = {0};

    vhex(&w, want);
    {
        char *wh = tohex(w.p, w.n);

        assert_string_equal(got, wh);
        free(wh);
    }
    free(w.p);
    free(got);
}

/* CBOR of a jansson tree (test-side, trusted and shallow input). */
static void cbor_of_json(struct vec *v, const json_t *j)
{
    unsigned char h[16];
    size_t n = 0;

    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *x;

        n = cbor_encode_map_start(json_object_size(j), h, sizeof(h));
        vput(v, h, n);
        json_object_foreach((json_t *)j, k, x)
        {
            n = cbor_encode_string_start(strlen(k), h, sizeof(h));
            vput(v, h, n);
            vput(v, k, strlen(k));
            cbor_of_json(v, x);
        }
        return;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *x;

        n = cbor_encode_array_start(json_array_size(j), h, sizeof(h));
        vput(v, h, n);
        json_array_foreach(j, i, x) cbor_of_json(v, x);
        return;
    }
    case JSON_STRING:
        n = cbor_encode_string_start(json_string_length(j), h, sizeof(h));
        vput(v, h, n);
        vput(v, json_string_value(j), json_string_length(j));
        return;
    case JSON_INTEGER: {
        json_int_t i = json_integer_value(j);

        if (i >= 0)
            n = cbor_encode_uint((uint64_t)i, h, sizeof(h));
        else
            n = cbor_encode_negint((uint64_t)(-(i + 1)), h, sizeof(h));
        break;
    }
    case JSON_REAL:
        n = cbor_encode_double(json_real_value(j), h, sizeof(h));
        break;
    case JSON_TRUE:
        n = cbor_encode_bool(true, h, sizeof(h));
        break;
    case JSON_FALSE:
        n = cbor_encode_bool(false, h, sizeof(h));
        break;
    case JSON_NULL:
        n = cbor_encode_null(h, sizeof(h));
        break;
    }
    vput(v, h, n);
}

static void mp_of_json(msgpack_packer *pk, const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *x;

        msgpack_pack_map(pk, json_object_size(j));
        json_object_foreach((json_t *)j, k, x)
        {
            msgpack_pack_str_with_body(pk, k, strlen(k));
            mp_of_json(pk, x);
        }
        return;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *x;

        msgpack_pack_array(pk, json_array_size(j));
        json_array_foreach(j, i, x) mp_of_json(pk, x);
        return;
    }
    case JSON_STRING:
        msgpack_pack_str_with_body(pk, json_string_value(j),
                                   json_string_length(j));
        return;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(j));
        return;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(j));
        return;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        return;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        return;
    case JSON_NULL:
        msgpack_pack_nil(pk);
        return;
    }
}

/* The frame a client of format fmt would send for this JSON message. */
static void frame_of(enum relay_fmt fmt, const char *json, struct vec *out)
{
    json_error_t e;
    json_t *j;

    if (fmt == RELAY_FMT_JSON) {
        vput(out, json, strlen(json));
        return;
    }
    j = json_loads(json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (j == NULL)
        fail_msg("bad test JSON %s: %s", json, e.text);
    if (fmt == RELAY_FMT_CBOR) {
        cbor_of_json(out, j);
    } else {
        msgpack_sbuffer sb;
        msgpack_packer pk;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        mp_of_json(&pk, j);
        vput(out, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
    }
    json_decref(j);
}

static int decode_as(enum relay_fmt fmt, const char *json, size_t max,
                     struct relay_msg *m, char *err)
{
    struct vec f = {0};
    int rc;

    frame_of(fmt, json, &f);
    rc = relay_msg_decode(fmt, f.p, f.n, max, m, err, ERRLEN);
    free(f.p);
    return rc;
}

static void assert_one_line(const char *err)
{
    assert_true(err[0] != '\0');
    for (const char *p = err; *p; p++)
        assert_true((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f);
}

/* JSON text of a canonical value. */
static char *json_of(const uint8_t *v, size_t n)
{
    char *s = NULL;
    size_t len = 0;

    assert_int_equal(relay_value_to_json(v, n, &s, &len), RELAY_OK);
    assert_int_equal(strlen(s), len);
    return s;
}

static const char *const fmt_name[RELAY_FMT_COUNT] = {"json", "cbor",
                                                      "msgpack"};

/* ---- schema, every format ------------------------------------------------ */

static void test_push_every_format(void **state)
{
    (void)state;
    for (int f = 0; f < RELAY_FMT_COUNT; f++) {
        struct relay_msg m;
        char err[ERRLEN];

        assert_int_equal(
            decode_as(f,
                      "{\"type\":\"push\",\"key\":\"slider\",\"value\":55,"
                      "\"action\":{\"type\":\"replace\"}}",
                      0, &m, err),
            RELAY_OK);
        assert_int_equal(m.type, RELAY_MSG_PUSH);
        assert_int_equal(m.key_len, 6);
        assert_string_equal(m.key, "slider");
        assert_int_equal(m.action, RELAY_ACT_REPLACE);
        assert_int_equal(m.value_len, 1);
        assert_int_equal(m.value[0], 55);
        relay_msg_free(&m);

        /* null is a value like any other (msgpack nil) */
        assert_int_equal(
            decode_as(f,
                      "{\"type\":\"push\",\"key\":\"n\",\"value\":null,"
                      "\"action\":{\"type\":\"append\"}}",
                      0, &m, err),
            RELAY_OK);
        assert_int_equal(m.type, RELAY_MSG_PUSH);
        assert_int_equal(m.action, RELAY_ACT_APPEND);
        assert_int_equal(m.value_len, 1);
        assert_int_equal(m.value[0], 0xc0);
        relay_msg_free(&m);

        static const struct {
            const char *json;
            enum relay_action act;
            uint64_t seq;
        } acts[] = {
            {"{\"type\":\"relay\"}", RELAY_ACT_RELAY, 0},
            {"{\"type\":\"append\"}", RELAY_ACT_APPEND, 0},
            {"{\"type\":\"append\",\"seq\":\"ignored\"}", RELAY_ACT_APPEND, 0},
            {"{\"type\":\"compact\",\"seq\":3}", RELAY_ACT_COMPACT, 3},
            {"{\"seq\":0,\"type\":\"compact\"}", RELAY_ACT_COMPACT, 0},
            {"{\"type\":\"compact\",\"seq\":7.0}", RELAY_ACT_COMPACT, 7},
            {"{\"type\":\"compact\",\"seq\":9007199254740993}",
             RELAY_ACT_COMPACT, 9007199254740993ull},
        };
        for (size_t i = 0; i < sizeof(acts) / sizeof(acts[0]); i++) {
            char json[256];

            snprintf(json, sizeof(json),
                     "{\"action\":%s,\"value\":[1],\"key\":\"\","
                     "\"type\":\"push\",\"extra\":{\"x\":[null]}}",
                     acts[i].json);
            assert_int_equal(decode_as(f, json, 0, &m, err), RELAY_OK);
            assert_int_equal(m.action, acts[i].act);
            assert_true(m.compact_seq == acts[i].seq);
            assert_int_equal(m.key_len, 0);
            assert_string_equal(m.key, "");
            relay_msg_free(&m);
        }
    }
}

static void test_get_and_ping_every_format(void **state)
{
    (void)state;
    for (int f = 0; f < RELAY_FMT_COUNT; f++) {
        struct relay_msg m;
        char err[ERRLEN];

        assert_int_equal(decode_as(f,
                                   "{\"type\":\"get\",\"key\":\"k\",\"seq\":0}",
                                   0, &m, err),
                         RELAY_OK);
        assert_int_equal(m.type, RELAY_MSG_GET);
        assert_true(m.has_seq);
        assert_true(m.seq == 0);
        assert_string_equal(m.key, "k");
        relay_msg_free(&m);

        assert_int_equal(
            decode_as(f, "{\"type\":\"get\",\"key\":\"k\"}", 0, &m, err),
            RELAY_OK);
        assert_true(m.has_seq);
        assert_true(m.seq == 0);
        relay_msg_free(&m);

        assert_int_equal(
            decode_as(f, "{\"type\":\"get\",\"key\":\"k\",\"seq\":null}", 0, &m,
                      err),
            RELAY_OK);
        assert_false(m.has_seq);
        relay_msg_free(&m);

        assert_int_equal(decode_as(f,
                                   "{\"type\":\"get\",\"key\":\"k\","
                                   "\"seq\":9223372036854775807}",
                                   0, &m, err),
                         RELAY_OK);
        assert_true(m.has_seq);
        assert_true(m.seq == 9223372036854775807ull);
        relay_msg_free(&m);

        assert_int_equal(decode_as(f, "{\"type\":\"ping\"}", 0, &m, err),
                         RELAY_OK);
        assert_int_equal(m.type, RELAY_MSG_PING);
        assert_false(m.has_nonce);
        relay_msg_free(&m);

        /* nonce: an optional u64 (integral floats taken, as for seq) */
        static const struct {
            const char *json;
            uint64_t nonce;
        } nonces[] = {
            {"{\"type\":\"ping\",\"nonce\":7}", 7},
            {"{\"type\":\"ping\",\"nonce\":0}", 0},
            {"{\"nonce\":7.0,\"type\":\"ping\",\"key\":5}", 7},
            {"{\"type\":\"ping\",\"nonce\":9223372036854775807}",
             9223372036854775807ull},
        };
        for (size_t i = 0; i < sizeof(nonces) / sizeof(nonces[0]); i++) {
            assert_int_equal(decode_as(f, nonces[i].json, 0, &m, err),
                             RELAY_OK);
            assert_int_equal(m.type, RELAY_MSG_PING);
            assert_true(m.has_nonce);
            assert_true(m.nonce == nonces[i].nonce);
            relay_msg_free(&m);
        }

        assert_int_equal(
            decode_as(f, "{\"type\":\"ping\",\"nonce\":null}", 0, &m, err),
            RELAY_OK);
        assert_int_equal(m.type, RELAY_MSG_PING);
        assert_false(m.has_nonce);
        relay_msg_free(&m);
    }
}

static const struct bad_case {
    const char *json;
    int rc;
    const char *msg;
} bad_cases[] = {
    {"{\"key\":\"k\"}", RELAY_EINVAL, "missing message type"},
    {"{\"type\":5,\"key\":\"k\"}", RELAY_EINVAL,
     "message type must be a string"},
    {"{\"type\":\"subscribe\",\"key\":\"k\"}", RELAY_EINVAL,
     "unknown message type 'subscribe'"},
    {"{\"type\":\"PUSH\",\"key\":\"k\"}", RELAY_EINVAL,
     "unknown message type 'PUSH'"},
    {"{\"type\":\"push\",\"value\":1,\"action\":{\"type\":\"relay\"}}",
     RELAY_EINVAL, "push: missing key"},
    {"{\"type\":\"push\",\"key\":5,\"value\":1,\"action\":{\"type\":"
     "\"relay\"}}",
     RELAY_EINVAL, "push: key must be a string"},
    {"{\"type\":\"push\",\"key\":null,\"value\":1,\"action\":{\"type\":"
     "\"relay\"}}",
     RELAY_EINVAL, "push: key must be a string"},
    {"{\"type\":\"push\",\"key\":\"k\",\"action\":{\"type\":\"relay\"}}",
     RELAY_EINVAL, "push: missing value"},
    {"{\"type\":\"push\",\"key\":\"k\",\"value\":1}", RELAY_EINVAL,
     "push requires action"},
    {"{\"type\":\"push\",\"key\":\"k\",\"value\":1,\"action\":\"append\"}",
     RELAY_EINVAL, "push: action must be an object"},
    {"{\"type\":\"push\",\"key\":\"k\",\"value\":1,\"action\":{}}",
     RELAY_EINVAL, "push: action missing type"},
    {"{\"type\":\"push\",\"key\":\"k\",\"value\":1,\"action\":{\"type\":7}}",
     RELAY_EINVAL, "push: action type must be a string"},
    {"{\"type\":\"push\",\"key\":\"k\",\"value\":1,\"action\":{\"type\":"
     "\"foo\"}}",
     RELAY_EINVAL, "push: invalid action type 'foo'"},
    {"{\"type\":\"push\",\"key\":\"k\",\"value\":1,\"action\":{\"type\":"
     "\"compact\"}}",
     RELAY_EINVAL, "push: compact requires a non-negative integer seq"},
    {"{\"type\":\"push\",\"key\":\"k\",\"value\":1,\"action\":{\"type\":"
     "\"compact\",\"seq\":-1}}",
     RELAY_EINVAL, "push: compact requires a non-negative integer seq"},
    {"{\"type\":\"push\",\"key\":\"k\",\"value\":1,\"action\":{\"type\":"
     "\"compact\",\"seq\":1.5}}",
     RELAY_EINVAL, "push: compact requires a non-negative integer seq"},
    {"{\"type\":\"push\",\"key\":\"k\",\"value\":1,\"action\":{\"type\":"
     "\"compact\",\"seq\":\"3\"}}",
     RELAY_EINVAL, "push: compact requires a non-negative integer seq"},
    {"{\"type\":\"push\",\"key\":\"k\",\"value\":1,\"action\":{\"type\":"
     "\"compact\",\"seq\":null}}",
     RELAY_EINVAL, "push: compact requires a non-negative integer seq"},
    {"{\"type\":\"get\"}", RELAY_EINVAL, "get: missing key"},
    {"{\"type\":\"get\",\"key\":[]}", RELAY_EINVAL,
     "get: key must be a string"},
    {"{\"type\":\"get\",\"key\":\"k\",\"seq\":-1}", RELAY_EINVAL,
     "get: seq must be a non-negative integer or null"},
    {"{\"type\":\"get\",\"key\":\"k\",\"seq\":0.5}", RELAY_EINVAL,
     "get: seq must be a non-negative integer or null"},
    {"{\"type\":\"get\",\"key\":\"k\",\"seq\":\"1\"}", RELAY_EINVAL,
     "get: seq must be a non-negative integer or null"},
    {"{\"type\":\"get\",\"key\":\"k\",\"seq\":true}", RELAY_EINVAL,
     "get: seq must be a non-negative integer or null"},
    {"{\"type\":\"ping\",\"nonce\":\"abc\"}", RELAY_EINVAL,
     "ping: nonce must be a non-negative integer or null"},
    {"{\"type\":\"ping\",\"nonce\":-1}", RELAY_EINVAL,
     "ping: nonce must be a non-negative integer or null"},
    {"{\"type\":\"ping\",\"nonce\":1.5}", RELAY_EINVAL,
     "ping: nonce must be a non-negative integer or null"},
    {"{\"type\":\"ping\",\"nonce\":1e30}", RELAY_EINVAL,
     "ping: nonce must be a non-negative integer or null"},
    {"{\"type\":\"ping\",\"nonce\":[1]}", RELAY_EINVAL,
     "ping: nonce must be a non-negative integer or null"},
    {"{\"type\":\"ping\",\"nonce\":{\"a\":1}}", RELAY_EINVAL,
     "ping: nonce must be a non-negative integer or null"},
    {"{\"type\":\"ping\",\"nonce\":true}", RELAY_EINVAL,
     "ping: nonce must be a non-negative integer or null"},
    {"[1,2]", RELAY_EINVAL, "message must be an object"},
};

static void test_schema_errors_every_format(void **state)
{
    (void)state;
    for (int f = 0; f < RELAY_FMT_COUNT; f++) {
        for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
            struct relay_msg m;
            char err[ERRLEN];
            int rc = decode_as(f, bad_cases[i].json, 0, &m, err);

            if (rc != bad_cases[i].rc || strcmp(err, bad_cases[i].msg) != 0)
                fail_msg("%s %s: rc %d err '%s', want %d '%s'", fmt_name[f],
                         bad_cases[i].json, rc, err, bad_cases[i].rc,
                         bad_cases[i].msg);
            /* out is zeroed on failure and free is safe */
            assert_null(m.key);
            assert_null(m.value);
            assert_false(m.has_nonce);
            relay_msg_free(&m);
        }
        /* Non-map top-level items. */
        static const char *const scalars[] = {"1", "\"push\"", "null", "[]"};
        for (size_t i = 0; i < 4; i++) {
            struct vec fr = {0};
            struct relay_msg m;
            char err[ERRLEN];
            int rc;

            if (f == RELAY_FMT_JSON && i != 3)
                continue; /* jansson needs an object or array */
            frame_of(f, scalars[i], &fr);
            rc = relay_msg_decode(f, fr.p, fr.n, 0, &m, err, ERRLEN);
            assert_int_equal(rc, RELAY_EINVAL);
            assert_string_equal(err, "message must be an object");
            free(fr.p);
        }
    }
}

static void test_unknown_type_is_quoted_safely(void **state)
{
    struct relay_msg m;
    char err[ERRLEN];
    const char *json = "{\"type\":\"a\\nb\\u0000\\u00e9"
                       "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ\"}";

    (void)state;
    assert_int_equal(decode_as(RELAY_FMT_JSON, json, 0, &m, err), RELAY_EINVAL);
    assert_one_line(err);
    assert_non_null(strstr(err, "unknown message type 'a?b??"));
    assert_non_null(strstr(err, "...'"));
}

static void test_json_specific(void **state)
{
    struct relay_msg m;
    char err[ERRLEN];
    static const char *const bad[] = {
        "{",
        "{\"type\":\"ping\"} x",
        "{\"type\":\"ping\",}",
        "{'type':'ping'}",
        "{\"type\":\"p\xff\"}",
        "{\"type\":\"ping\",\"nonce\":NaN}",
        "{\"a\\u0000b\":1,\"type\":\"ping\"}",
        "   ",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = relay_msg_decode(RELAY_FMT_JSON, (const uint8_t *)bad[i],
                                  strlen(bad[i]), 0, &m, err, ERRLEN);

        assert_int_equal(rc, RELAY_EINVAL);
        assert_one_line(err);
        assert_non_null(strstr(err, "invalid JSON at line 1 column "));
    }
    assert_int_equal(relay_msg_decode(RELAY_FMT_JSON, (const uint8_t *)"", 0, 0,
                                      &m, err, ERRLEN),
                     RELAY_EINVAL);
    assert_string_equal(err, "empty message");
    assert_int_equal(relay_msg_decode(RELAY_FMT_JSON, (const uint8_t *)"{}", 2,
                                      0, &m, err, 0),
                     RELAY_EINVAL); /* errlen 0: nothing written, no crash */

    /* Whitespace around the object is fine; NULs inside strings too. */
    {
        const char *ok = " \n{\"type\":\"get\",\"key\":\"a\\u0000b\"}\r\n ";

        assert_int_equal(relay_msg_decode(RELAY_FMT_JSON, (const uint8_t *)ok,
                                          strlen(ok), 0, &m, err, ERRLEN),
                         RELAY_OK);
        assert_int_equal(m.key_len, 3);
        assert_memory_equal(m.key, "a\0b", 4);
        relay_msg_free(&m);
    }
    /* The nonce's range is u64's: 2^64-1 is one, 2^64 is not. */
    {
        const char *max = "{\"type\":\"ping\",\"nonce\":18446744073709551615}";
        const char *over = "{\"type\":\"ping\",\"nonce\":18446744073709551616}";

        assert_int_equal(relay_msg_decode(RELAY_FMT_JSON, (const uint8_t *)max,
                                          strlen(max), 0, &m, err, ERRLEN),
                         RELAY_OK);
        assert_true(m.has_nonce && m.nonce == UINT64_MAX);
        relay_msg_free(&m);
        assert_int_equal(relay_msg_decode(RELAY_FMT_JSON, (const uint8_t *)over,
                                          strlen(over), 0, &m, err, ERRLEN),
                         RELAY_EINVAL);
        assert_string_equal(
            err, "ping: nonce must be a non-negative integer or null");
    }
    /* An unknown format. */
    assert_int_equal(relay_msg_decode((enum relay_fmt)7, (const uint8_t *)"{}",
                                      2, 0, &m, err, ERRLEN),
                     RELAY_EINVAL);
}

static void test_binary_keys(void **state)
{
    struct vec f = {0};
    struct relay_msg m;
    char err[ERRLEN];

    (void)state;
    /* CBOR {type:"get", key: h'00ff'} */
    vhex(&f, "a2 6474797065 63676574 636b6579 4200ff");
    assert_int_equal(
        relay_msg_decode(RELAY_FMT_CBOR, f.p, f.n, 0, &m, err, ERRLEN),
        RELAY_OK);
    assert_int_equal(m.key_len, 2);
    assert_memory_equal(m.key, "\x00\xff", 3);
    relay_msg_free(&m);
    f.n = 0;
    /* msgpack {type:"get", key: bin 00ff} */
    vhex(&f, "82 a474797065 a3676574 a36b6579 c40200ff");
    assert_int_equal(
        relay_msg_decode(RELAY_FMT_MSGPACK, f.p, f.n, 0, &m, err, ERRLEN),
        RELAY_OK);
    assert_int_equal(m.key_len, 2);
    assert_memory_equal(m.key, "\x00\xff", 3);
    relay_msg_free(&m);
    free(f.p);
}

static void test_value_limit(void **state)
{
    (void)state;
    for (int f = 0; f < RELAY_FMT_COUNT; f++) {
        struct relay_msg m;
        char err[ERRLEN];
        const char *push = "{\"type\":\"push\",\"key\":\"k\",\"value\":"
                           "\"hello\",\"action\":{\"type\":\"relay\"}}";

        /* canonical "hello" is a5 68 65 6c 6c 6f: 6 bytes */
        assert_int_equal(decode_as(f, push, 5, &m, err), RELAY_ETOOBIG);
        assert_string_equal(err, "value is 6 bytes, limit 5");
        assert_int_equal(decode_as(f, push, 6, &m, err), RELAY_OK);
        assert_int_equal(m.value_len, 6);
        relay_msg_free(&m);
        /* A nonce is an integer, not a value: the value limit does not
         * apply to it. */
        assert_int_equal(decode_as(f,
                                   "{\"type\":\"ping\",\"nonce\":4294967296}",
                                   3, &m, err),
                         RELAY_OK);
        assert_true(m.has_nonce);
        relay_msg_free(&m);
    }
}

/* ---- server messages, exact bytes ---------------------------------------- */

static const uint8_t v55[] = {55};
static const uint8_t va[] = {0xa1, 'a'};

static void check_enc(int rc, uint8_t *out, size_t len, size_t headroom,
                      enum relay_fmt f, const char *want)
{
    assert_int_equal(rc, RELAY_OK);
    assert_non_null(out);
    if (f == RELAY_FMT_JSON) {
        assert_int_equal(len, strlen(want));
        assert_memory_equal(out + headroom, want, len);
    } else {
        assert_hex(out + headroom, len, want);
    }
    free(out);
}

static void test_encode_shapes(void **state)
{
    static const struct {
        const char *push, *init, *init0, *ss, *pong, *pong0, *error;
    } want[RELAY_FMT_COUNT] = {
        {
            "{\"type\":\"push\",\"key\":\"slider\",\"value\":55,\"seq\":6}",
            "{\"type\":\"init\",\"key\":\"k\",\"data\":[{\"value\":55,"
            "\"seq\":6},{\"value\":\"a\",\"seq\":7}]}",
            "{\"type\":\"init\",\"key\":\"k\",\"data\":[]}",
            "{\"type\":\"stream_size\",\"key\":\"counter\",\"size\":3}",
            "{\"type\":\"pong\",\"nonce\":7}",
            "{\"type\":\"pong\",\"nonce\":null}",
            "{\"type\":\"error\",\"message\":\"bad \\\"x\\\"\\n\"}",
        },
        {
            /* node-cbor (cbor-web 8) encodings of the same objects */
            "a464747970656470757368636b657966736c696465726576616c75651837"
            "6373657106",
            "a3647479706564696e6974636b6579616b646461746182a26576616c7565"
            "18376373657106a26576616c756561616373657107",
            "a3647479706564696e6974636b6579616b6464617461 80",
            "a364747970656b73747265616d5f73697a65636b657967636f756e746572"
            "6473697a6503",
            "a2647479706564706f6e67656e6f6e636507",
            "a2647479706564706f6e67656e6f6e6365f6",
            "a26474797065656572726f72676d6573736167656862616420227822 0a",
        },
        {
            "84a474797065a470757368a36b6579a6736c69646572a576616c756537"
            "a373657106",
            "83a474797065a4696e6974a36b6579a16ba46461746192"
            "82a576616c756537a373657106 82a576616c7565a161a373657107",
            "83a474797065a4696e6974a36b6579a16ba46461746190",
            "83a474797065ab73747265616d5f73697a65a36b6579a7636f756e746572"
            "a473697a6503",
            "82a474797065a4706f6e67a56e6f6e636507",
            "82a474797065a4706f6e67a56e6f6e6365c0",
            "82a474797065a56572726f72a76d657373616765a8626164202278220a",
        },
    };
    const struct relay_entry entries[] = {{6, v55, 1}, {7, va, 2}};

    (void)state;
    for (int f = 0; f < RELAY_FMT_COUNT; f++) {
        for (size_t headroom = 0; headroom <= 16; headroom += 16) {
            uint8_t *out;
            size_t len;
            int rc;

            /* (rc first: argument evaluation order is unspecified) */
            rc =
                relay_enc_push(f, headroom, "slider", 6, v55, 1, 6, &out, &len);
            check_enc(rc, out, len, headroom, f, want[f].push);
            rc = relay_enc_init(f, headroom, "k", 1, entries, 2, &out, &len);
            check_enc(rc, out, len, headroom, f, want[f].init);
            rc = relay_enc_init(f, headroom, "k", 1, NULL, 0, &out, &len);
            check_enc(rc, out, len, headroom, f, want[f].init0);
            rc =
                relay_enc_stream_size(f, headroom, "counter", 7, 3, &out, &len);
            check_enc(rc, out, len, headroom, f, want[f].ss);
            rc = relay_enc_pong(f, headroom, true, 7, &out, &len);
            check_enc(rc, out, len, headroom, f, want[f].pong);
            rc = relay_enc_pong(f, headroom, false, 0, &out, &len);
            check_enc(rc, out, len, headroom, f, want[f].pong0);
            rc = relay_enc_error(f, headroom, "bad \"x\"\n", &out, &len);
            check_enc(rc, out, len, headroom, f, want[f].error);
        }
    }
}

static void test_encode_keys_and_text(void **state)
{
    uint8_t *out;
    size_t len;

    (void)state;
    /* A key that is not UTF-8: JSON replaces, CBOR and msgpack use bytes. */
    assert_int_equal(
        relay_enc_stream_size(RELAY_FMT_JSON, 0, "\xff\x00", 2, 1, &out, &len),
        RELAY_OK);
    {
        const char *want = "{\"type\":\"stream_size\",\"key\":\"\xef\xbf\xbd"
                           "\\u0000\",\"size\":1}";

        assert_int_equal(len, strlen(want));
        assert_memory_equal(out, want, len);
    }
    free(out);
    assert_int_equal(
        relay_enc_stream_size(RELAY_FMT_CBOR, 0, "\xff", 1, 1, &out, &len),
        RELAY_OK);
    assert_hex(out, len,
               "a364747970656b73747265616d5f73697a65636b657941ff6473697a6501");
    free(out);
    assert_int_equal(
        relay_enc_stream_size(RELAY_FMT_MSGPACK, 0, "\xff", 1, 1, &out, &len),
        RELAY_OK);
    assert_hex(
        out, len,
        "83a474797065ab73747265616d5f73697a65a36b6579c401ffa473697a6501");
    free(out);
    /* Valid UTF-8 keys stay text. */
    assert_int_equal(
        relay_enc_stream_size(RELAY_FMT_CBOR, 0, "\xc3\xa9", 2, 1, &out, &len),
        RELAY_OK);
    assert_hex(
        out, len,
        "a364747970656b73747265616d5f73697a65636b657962c3a96473697a6501");
    free(out);
    /* Empty key, big seq and size. */
    assert_int_equal(relay_enc_push(RELAY_FMT_JSON, 0, "", 0, v55, 1,
                                    UINT64_MAX, &out, &len),
                     RELAY_OK);
    {
        const char *want = "{\"type\":\"push\",\"key\":\"\",\"value\":55,"
                           "\"seq\":18446744073709551615}";

        assert_int_equal(len, strlen(want));
        assert_memory_equal(out, want, len);
    }
    free(out);
    /* Encoders refuse a malformed or missing value. */
    {
        static const uint8_t bad[] = {0x92, 0x01}; /* array of 2, one item */
        static const uint8_t trail[] = {0x01, 0x02};
        static const uint8_t c1[] = {0xc1};

        for (int f = 0; f < RELAY_FMT_COUNT; f++) {
            out = (uint8_t *)1;
            assert_int_equal(
                relay_enc_push(f, 8, "k", 1, bad, sizeof(bad), 1, &out, &len),
                RELAY_EINVAL);
            assert_null(out);
            assert_int_equal(len, 0);
            assert_int_equal(relay_enc_push(f, 8, "k", 1, trail, sizeof(trail),
                                            1, &out, &len),
                             RELAY_EINVAL);
            assert_int_equal(
                relay_enc_push(f, 8, "k", 1, c1, sizeof(c1), 1, &out, &len),
                RELAY_EINVAL);
            assert_int_equal(
                relay_enc_push(f, 8, "k", 1, NULL, 0, 1, &out, &len),
                RELAY_EINVAL);
        }
        assert_int_equal(relay_enc_error((enum relay_fmt)9, 0, "x", &out, &len),
                         RELAY_EINVAL);
    }
}

static void test_value_to_json(void **state)
{
    static const struct {
        const char *mp;
        const char *json;
    } cases[] = {
        {"c0", "null"},
        {"c2", "false"},
        {"c3", "true"},
        {"00", "0"},
        {"ff", "-1"},
        {"cfffffffffffffffff", "18446744073709551615"},
        {"d38000000000000000", "-9223372036854775808"},
        {"cb3fb999999999999a", "0.1"},
        {"cb8000000000000000", "-0.0"},
        {"cb4014000000000000", "5.0"},
        {"cb7ff8000000000000", "null"}, /* NaN */
        {"cb7ff0000000000000", "null"}, /* +inf */
        {"cbfff0000000000000", "null"}, /* -inf */
        {"cb7fefffffffffffff", "1.7976931348623157e+308"},
        {"cb0000000000000001", "4.94065645841247e-324"},
        {"ca3fc00000", "1.5"},
        {"ca3dcccccd", "0.10000000149011612"}, /* float32 0.1, widened */
        {"c40201ff", "[1,255]"},
        {"c400", "[]"},
        {"d40105", "[5]"},
        {"a0", "\"\""},
        {"90", "[]"},
        {"80", "{}"},
        {"a3e4b8ad", "\"\xe4\xb8\xad\""},
        {"a4f09f9880", "\"\xf0\x9f\x98\x80\""},
        {"a2ff61", "\"\xef\xbf\xbd"
                   "a\""}, /* invalid byte */
        {"a3eda080",
         "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""}, /* surrogate */
        {"a2c0af", "\"\xef\xbf\xbd\xef\xbf\xbd\""},   /* overlong */
        {"a2e4b8", "\"\xef\xbf\xbd\xef\xbf\xbd\""},   /* cut sequence */
        {"a6225c0a011f7f", "\"\\\"\\\\\\n\\u0001\\u001f\x7f\""},
        {"a408090c0d", "\"\\b\\t\\f\\r\""},
        {"83 01a161 920102c3 c000", "{\"1\":\"a\",\"[1,2]\":true,\"null\":0}"},
        {"81 81a16101 02", "{\"{\\\"a\\\":1}\":2}"},
        {"81 c40101 02", "{\"[1]\":2}"},
        {"82 a17a01 a16102", "{\"z\":1,\"a\":2}"},
        {"93 90 80 91 81a0 90", "[[],{},[{\"\":[]}]]"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct vec v = {0};
        char *s;

        vhex(&v, cases[i].mp);
        s = json_of(v.p, v.n);
        if (strcmp(s, cases[i].json) != 0)
            fail_msg("%s: got %s want %s", cases[i].mp, s, cases[i].json);
        free(s);
        free(v.p);
    }
}

/* ---- fidelity across formats --------------------------------------------- */

/*
 * The value part of a push encoded in fmt for key "k", seq 1: the encoders
 * put it between a fixed prefix and suffix.
 */
static char *value_out(const uint8_t *v, size_t n, enum relay_fmt fmt)
{
    static const char *const pre[RELAY_FMT_COUNT] = {
        "{\"type\":\"push\",\"key\":\"k\",\"value\":",
        "\xa4\x64type\x64push\x63key\x61k\x65value",
        "\x84\xa4type\xa4push\xa3key\xa1k\xa5value",
    };
    static const char *const suf[RELAY_FMT_COUNT] = {
        ",\"seq\":1}",
        "\x63seq\x01",
        "\xa3seq\x01",
    };
    size_t pl = strlen(pre[fmt]), sl = strlen(suf[fmt]);
    uint8_t *out;
    size_t len;
    char *r;

    assert_int_equal(relay_enc_push(fmt, 0, "k", 1, v, n, 1, &out, &len),
                     RELAY_OK);
    assert_true(len >= pl + sl);
    assert_memory_equal(out, pre[fmt], pl);
    assert_memory_equal(out + len - sl, suf[fmt], sl);
    if (fmt == RELAY_FMT_JSON) {
        r = malloc(len - pl - sl + 1);
        assert_non_null(r);
        memcpy(r, out + pl, len - pl - sl);
        r[len - pl - sl] = '\0';
    } else {
        r = tohex(out + pl, len - pl - sl);
    }
    free(out);
    return r;
}

/* A client push frame in fmt whose value is the given value bytes/text. */
static void push_frame(enum relay_fmt fmt, const uint8_t *v, size_t n,
                       struct vec *f)
{
    if (fmt == RELAY_FMT_JSON) {
        const char *pre = "{\"type\":\"push\",\"key\":\"k\",\"action\":"
                          "{\"type\":\"relay\"},\"value\":";

        vput(f, pre, strlen(pre));
        vput(f, v, n);
        vput(f, "}", 1);
    } else if (fmt == RELAY_FMT_CBOR) {
        vhex(f, "a4 6474797065 6470757368 636b6579 616b 6576616c7565");
        vput(f, v, n);
        vhex(f, "66616374696f6e a1 6474797065 6572656c6179");
    } else {
        vhex(f, "84 a474797065 a470757368 a36b6579 a16b a576616c7565");
        vput(f, v, n);
        vhex(f, "a6616374696f6e 81 a474797065 a572656c6179");
    }
}

static int try_decode_value(enum relay_fmt fmt, const uint8_t *v, size_t n,
                            struct relay_msg *m, char *err)
{
    struct vec f = {0};
    int rc;

    push_frame(fmt, v, n, &f);
    rc = relay_msg_decode(fmt, f.p, f.n, 0, m, err, ERRLEN);
    free(f.p);
    return rc;
}

static void decode_value(enum relay_fmt fmt, const uint8_t *v, size_t n,
                         struct relay_msg *m)
{
    char err[ERRLEN];
    int rc = try_decode_value(fmt, v, n, m, err);

    if (rc != RELAY_OK) {
        char *h = tohex(v, n);

        fail_msg("%s value %s: %s", fmt_name[fmt], h, err);
    }
}

struct fid {
    const char *in; /* JSON text, or hex for CBOR/msgpack */
    const char *json, *cbor, *mp;
};

static void check_fidelity(enum relay_fmt in_fmt, const struct fid *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct vec in = {0};
        struct relay_msg m;
        const char *want[RELAY_FMT_COUNT] = {c[i].json, c[i].cbor, c[i].mp};

        if (in_fmt == RELAY_FMT_JSON)
            vput(&in, c[i].in, strlen(c[i].in));
        else
            vhex(&in, c[i].in);
        decode_value(in_fmt, in.p, in.n, &m);
        for (int f = 0; f < RELAY_FMT_COUNT; f++) {
            char *got = value_out(m.value, m.value_len, f);
            struct vec w = {0};
            char *wh;

            if (f == RELAY_FMT_JSON) {
                wh = strdup(want[f]);
            } else {
                vhex(&w, want[f]);
                wh = tohex(w.p, w.n);
            }
            if (strcmp(got, wh) != 0)
                fail_msg("%s %s -> %s: got %s want %s", fmt_name[in_fmt],
                         c[i].in, fmt_name[f], got, wh);
            free(got);
            free(wh);
            free(w.p);
        }
        /* The canonical bytes are what the msgpack client gets. */
        {
            char *h = tohex(m.value, m.value_len);
            struct vec w = {0};
            char *wh;

            vhex(&w, c[i].mp);
            wh = tohex(w.p, w.n);
            assert_string_equal(h, wh);
            free(h);
            free(wh);
            free(w.p);
        }
        relay_msg_free(&m);
        free(in.p);
    }
}

static void test_fidelity_from_json(void **state)
{
    static const struct fid cases[] = {
        {"9007199254740993", "9007199254740993", "1b0020000000000001",
         "cf0020000000000001"},
        {"-9223372036854775808", "-9223372036854775808", "3b7fffffffffffffff",
         "d38000000000000000"},
        {"9223372036854775807", "9223372036854775807", "1b7fffffffffffffff",
         "cf7fffffffffffffff"},
        {"-1", "-1", "20", "ff"},
        {"-33", "-33", "3820", "d0df"},
        {"0.1", "0.1", "fb3fb999999999999a", "cb3fb999999999999a"},
        {"1e300", "1e+300", "fb7e37e43c8800759c", "cb7e37e43c8800759c"},
        {"-0.0", "-0.0", "fb8000000000000000", "cb8000000000000000"},
        {"2.0", "2.0", "fb4000000000000000", "cb4000000000000000"},
        {"0.30000000000000004", "0.30000000000000004", "fb3fd3333333333334",
         "cb3fd3333333333334"},
        {"true", "true", "f5", "c3"},
        {"false", "false", "f4", "c2"},
        {"\"\"", "\"\"", "60", "a0"},
        {"[]", "[]", "80", "90"},
        {"{}", "{}", "a0", "80"},
        {"\"\xf0\x9f\x98\x80\xe4\xb8\xad\xe6\x96\x87\"",
         "\"\xf0\x9f\x98\x80\xe4\xb8\xad\xe6\x96\x87\"",
         "6af09f9880e4b8ade69687", "aaf09f9880e4b8ade69687"},
        {"\"\\ud83d\\ude00\"", "\"\xf0\x9f\x98\x80\"", "64f09f9880",
         "a4f09f9880"},
        {"{\"z\":[1,{\"b\":[]}],\"a\":{}}", "{\"z\":[1,{\"b\":[]}],\"a\":{}}",
         "a2617a8201a1616280 6161a0", "82a17a9201 81a16290 a16180"},
        {"[null,\"a\\u0000b\"]", "[null,\"a\\u0000b\"]", "82f663610062",
         "92c0a3610062"},
        /* Beyond int64: JavaScript prints 2**64 like this. */
        {"18446744073709552000", "1.8446744073709552e+19", "fb43f0000000000000",
         "cb43f0000000000000"},
        /* One literal beyond int64 in a frame leaves the others exact:
         * 2.0 stays a real, the uint64 maximum stays an integer. */
        {"[1,-18446744073709551616,2.0]", "[1,-1.8446744073709552e+19,2.0]",
         "8301fbc3f0000000000000fb4000000000000000",
         "9301cbc3f0000000000000cb4000000000000000"},
        {"[18446744073709551615,-9223372036854775808]",
         "[18446744073709551615,-9223372036854775808]",
         "821bffffffffffffffff3b7fffffffffffffff",
         "92cfffffffffffffffffd38000000000000000"},
    };

    (void)state;
    check_fidelity(RELAY_FMT_JSON, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_fidelity_from_cbor(void **state)
{
    static const struct fid cases[] = {
        /* Uint8Array from cbor-web: tag 64 around a byte string */
        {"d840420102", "[1,2]", "420102", "c4020102"},
        /* Float32Array([1.5, 2]): tag 85 */
        {"d855480000c03f00000040", "[0,0,192,63,0,0,0,64]",
         "480000c03f00000040", "c4080000c03f00000040"},
        /* other tags are dropped, nested ones too */
        {"c11a5f5e1000", "1600000000", "1a5f5e1000", "ce5f5e1000"},
        {"d840d841420102", "[1,2]", "420102", "c4020102"},
        {"d9d9f78101", "[1]", "8101", "9101"},
        /* half floats */
        {"f93e00", "1.5", "fa3fc00000", "ca3fc00000"},
        {"f98000", "-0.0", "fa80000000", "ca80000000"},
        {"f97c00", "null", "fa7f800000", "ca7f800000"},
        {"f90001", "5.9604644775390625e-08", "fa33800000", "ca33800000"},
        {"fa47c35040", "100000.5", "fa47c35040", "ca47c35040"},
        {"fb3fb999999999999a", "0.1", "fb3fb999999999999a",
         "cb3fb999999999999a"},
        /* integers, bignums */
        {"1bffffffffffffffff", "18446744073709551615", "1bffffffffffffffff",
         "cfffffffffffffffff"},
        {"3b7fffffffffffffff", "-9223372036854775808", "3b7fffffffffffffff",
         "d38000000000000000"},
        {"3bffffffffffffffff", "-1.8446744073709552e+19", "fbc3f0000000000000",
         "cbc3f0000000000000"},
        {"c248ffffffffffffffff", "18446744073709551615", "1bffffffffffffffff",
         "cfffffffffffffffff"},
        {"c3487fffffffffffffff", "-9223372036854775808", "3b7fffffffffffffff",
         "d38000000000000000"},
        {"c24720000000000001", "9007199254740993", "1b0020000000000001",
         "cf0020000000000001"},
        {"c2490100000000000000ff", "[1,0,0,0,0,0,0,0,255]",
         "490100000000000000ff", "c4090100000000000000ff"},
        /* undefined inside a value is null */
        {"81f7", "[null]", "81f6", "91c0"},
        /* indefinite lengths */
        {"7f616163626364ff", "\"abcd\"", "6461626364", "a461626364"},
        {"7fff", "\"\"", "60", "a0"},
        {"5f4101420203ff", "[1,2,3]", "43010203", "c403010203"},
        {"9f019fffff", "[1,[]]", "820180", "920190"},
        {"bf616101ff", "{\"a\":1}", "a1616101", "81a16101"},
        {"bf7f6161ff9f5f41ffffffff", "{\"a\":[[255]]}", "a161618141ff",
         "81a16191c401ff"},
        /* non-string keys */
        {"a2016161f502", "{\"1\":\"a\",\"true\":2}", "a2016161f502",
         "8201a161c302"},
        /* what cbor-web sends for an object value */
        {"a5616183016178a06162206163f56164f6616560",
         "{\"a\":[1,\"x\",{}],\"b\":-1,\"c\":true,\"d\":null,\"e\":\"\"}",
         "a5616183016178a06162206163f56164f6616560",
         "85a1619301a17880a162ffa163c3a164c0a165a0"},
        {"6af09f9880e4b8ade69687",
         "\"\xf0\x9f\x98\x80\xe4\xb8\xad\xe6\x96\x87\"",
         "6af09f9880e4b8ade69687", "aaf09f9880e4b8ade69687"},
        {"40", "[]", "40", "c400"},
    };

    (void)state;
    check_fidelity(RELAY_FMT_CBOR, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_fidelity_from_msgpack(void **state)
{
    static const struct fid cases[] = {
        /* re-packed canonically */
        {"d005", "5", "05", "05"},
        {"cd0005", "5", "05", "05"},
        {"d3ffffffffffffffff", "-1", "20", "ff"},
        {"d37fffffffffffffff", "9223372036854775807", "1b7fffffffffffffff",
         "cf7fffffffffffffff"},
        {"d90161", "\"a\"", "6161", "a161"},
        {"dc0001c0", "[null]", "81f6", "91c0"},
        {"de000101c3", "{\"1\":true}", "a101f5", "8101c3"},
        {"c50001ff", "[255]", "41ff", "c401ff"},
        /* kept as they are */
        {"cfffffffffffffffff", "18446744073709551615", "1bffffffffffffffff",
         "cfffffffffffffffff"},
        {"ca3fc00000", "1.5", "fa3fc00000", "ca3fc00000"},
        {"d40105", "[5]", "4105", "d40105"},
        {"c7020a0102", "[1,2]", "420102", "d50a0102"},
        {"a2ff61",
         "\"\xef\xbf\xbd"
         "a\"",
         "42ff61", "a2ff61"},
        {"83 01a161 920102c3 c000", "{\"1\":\"a\",\"[1,2]\":true,\"null\":0}",
         "a3016161820102f5f600", "8301a161920102c3c000"},
    };

    (void)state;
    check_fidelity(RELAY_FMT_MSGPACK, cases, sizeof(cases) / sizeof(cases[0]));
}

/* The real client's frames (cbor-web 8), captured with node. */
static void test_node_cbor_frames(void **state)
{
    static const char *const frames[] = {
        /* {type:'push',key:'k',value:new Uint8Array([1,2]),
         *  action:{type:'append'}} */
        "a464747970656470757368636b6579616b6576616c7565d84042010266616374696f"
        "6ea1647479706566617070656e64",
        /* {type:'push',key:'k',value:{a:1.5,b:0.1,c:-0,d:1e300,e:[],f:'',
         *  g:9007199254740991,h:-1,i:3.4028234663852886e38,j:100000.5},
         *  action:{type:'compact',seq:3}} */
        "a464747970656470757368636b6579616b6576616c7565aa6161fa3fc00000616"
        "2fb3fb999999999999a6163f980006164fb7e37e43c8800759c61658061666061"
        "671b001fffffffffffff6168206169fa7f7fffff616afa47c3504066616374696"
        "f6ea2647479706567636f6d706163746373657103",
        /* {type:'get',key:'k',seq:0} */
        "a3647479706563676574636b6579616b6373657100",
        /* {type:'ping',nonce:7} */
        "a264747970656470696e67656e6f6e636507",
        /* {type:'push',key:'k',value:undefined,action:{type:'relay'}} */
        "a464747970656470757368636b6579616b6576616c7565f766616374696f6ea164"
        "747970656572656c6179",
    };
    struct relay_msg m;
    char err[ERRLEN];
    struct vec f = {0};
    char *s;

    (void)state;
    vhex(&f, frames[0]);
    assert_int_equal(
        relay_msg_decode(RELAY_FMT_CBOR, f.p, f.n, 0, &m, err, ERRLEN),
        RELAY_OK);
    assert_int_equal(m.action, RELAY_ACT_APPEND);
    assert_hex(m.value, m.value_len, "c4020102");
    relay_msg_free(&m);

    f.n = 0;
    vhex(&f, frames[1]);
    assert_int_equal(
        relay_msg_decode(RELAY_FMT_CBOR, f.p, f.n, 0, &m, err, ERRLEN),
        RELAY_OK);
    assert_int_equal(m.action, RELAY_ACT_COMPACT);
    assert_true(m.compact_seq == 3);
    s = json_of(m.value, m.value_len);
    assert_string_equal(s, "{\"a\":1.5,\"b\":0.1,\"c\":-0.0,\"d\":1e+300,"
                           "\"e\":[],\"f\":\"\",\"g\":9007199254740991,"
                           "\"h\":-1,\"i\":3.4028234663852886e+38,"
                           "\"j\":100000.5}");
    free(s);
    relay_msg_free(&m);

    f.n = 0;
    vhex(&f, frames[2]);
    assert_int_equal(
        relay_msg_decode(RELAY_FMT_CBOR, f.p, f.n, 0, &m, err, ERRLEN),
        RELAY_OK);
    assert_int_equal(m.type, RELAY_MSG_GET);
    assert_true(m.has_seq && m.seq == 0);
    relay_msg_free(&m);

    f.n = 0;
    vhex(&f, frames[3]);
    assert_int_equal(
        relay_msg_decode(RELAY_FMT_CBOR, f.p, f.n, 0, &m, err, ERRLEN),
        RELAY_OK);
    assert_int_equal(m.type, RELAY_MSG_PING);
    assert_true(m.has_nonce && m.nonce == 7);
    relay_msg_free(&m);

    /* undefined is null, a value like any other */
    f.n = 0;
    vhex(&f, frames[4]);
    assert_int_equal(
        relay_msg_decode(RELAY_FMT_CBOR, f.p, f.n, 0, &m, err, ERRLEN),
        RELAY_OK);
    assert_int_equal(m.action, RELAY_ACT_RELAY);
    assert_hex(m.value, m.value_len, "c0");
    relay_msg_free(&m);
    free(f.p);
}

/* ---- malformed and hostile input ----------------------------------------- */

static void expect_error(enum relay_fmt fmt, const uint8_t *p, size_t n,
                         int want_rc, const char *want_sub)
{
    struct relay_msg m;
    char err[ERRLEN];
    int rc = relay_msg_decode(fmt, p, n, 0, &m, err, ERRLEN);

    if (rc == RELAY_OK || (want_rc != 0 && rc != want_rc) ||
        (want_sub != NULL && strstr(err, want_sub) == NULL)) {
        char *h = tohex(p, n < 40 ? n : 40);

        fail_msg("%s %s (%zu bytes): rc %d err '%s', want %d '%s'",
                 fmt_name[fmt], h, n, rc, err, want_rc,
                 want_sub ? want_sub : "");
    }
    assert_one_line(err);
    assert_null(m.key);
    assert_null(m.value);
    relay_msg_free(&m);
}

static void test_truncated_every_format(void **state)
{
    static const char *const msgs[] = {
        "{\"type\":\"push\",\"key\":\"slider\",\"value\":{\"a\":[1,2.5,"
        "\"x\"],\"b\":-70000},\"action\":{\"type\":\"compact\",\"seq\":4}}",
        "{\"type\":\"get\",\"key\":\"k\",\"seq\":9223372036854775807}",
        "{\"type\":\"ping\",\"nonce\":\"abcdefgh\"}",
    };

    (void)state;
    for (int f = 0; f < RELAY_FMT_COUNT; f++) {
        for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
            struct vec fr = {0};

            frame_of(f, msgs[i], &fr);
            for (size_t n = 0; n < fr.n; n++) {
                /* copy so ASan sees reads past the prefix */
                uint8_t *p = malloc(n ? n : 1);

                memcpy(p, fr.p, n);
                expect_error(f, p, n, RELAY_EINVAL, NULL);
                free(p);
            }
            free(fr.p);
        }
    }
}

static void test_trailing_bytes(void **state)
{
    struct vec f = {0};

    (void)state;
    frame_of(RELAY_FMT_CBOR, "{\"type\":\"ping\"}", &f);
    vbyte(&f, 0x00);
    expect_error(RELAY_FMT_CBOR, f.p, f.n, RELAY_EINVAL, "trailing");
    f.n = 0;
    frame_of(RELAY_FMT_MSGPACK, "{\"type\":\"ping\"}", &f);
    vbyte(&f, 0xc0);
    expect_error(RELAY_FMT_MSGPACK, f.p, f.n, RELAY_EINVAL, "trailing");
    f.n = 0;
    frame_of(RELAY_FMT_JSON, "{\"type\":\"ping\"} {}", &f);
    expect_error(RELAY_FMT_JSON, f.p, f.n, RELAY_EINVAL, "invalid JSON");
    free(f.p);
}

static void test_cbor_malformed(void **state)
{
    static const struct {
        const char *hex;
        const char *sub;
    } cases[] = {
        {"a1 6474797065 1c", "unsupported byte 0x1c"}, /* reserved */
        {"a1 6474797065 f8 20", "unsupported byte"},   /* simple(32) */
        {"a1 6474797065 ff", "unexpected break"},
        {"ff", "unexpected break"},
        {"a1 6474797065 7f 01 ff", "chunk"},    /* int in text */
        {"a1 6474797065 7f 41 61 ff", "chunk"}, /* bytes in text */
        {"a1 6474797065 7f 7f ff ff", "chunk"}, /* nested indef */
        {"a1 6474797065 7f c1 6161 ff", "tag inside"},
        {"a1 6474797065 9f c1 ff", "tag without"},
        {"bf 6474797065 ff", "map key without a value"},
        {"a1 6474797065", "truncated"},
        {"a1 6474797065 c1", "truncated"},
        {"a1 6474797065 7a ffffffff 61", "truncated"},
        {"a1 6474797065 9b ffffffffffffffff", "too many items"},
        {"a1 6474797065 5b 0000000100000000", "truncated"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct vec f = {0};

        vhex(&f, cases[i].hex);
        expect_error(RELAY_FMT_CBOR, f.p, f.n, RELAY_EINVAL, cases[i].sub);
        free(f.p);
    }
}

static void test_msgpack_malformed(void **state)
{
    static const struct {
        const char *hex;
        const char *sub;
    } cases[] = {
        {"81 a474797065 c1", "bad byte 0xc1"},
        {"81 a474797065", "truncated"},
        {"81 a474797065 db ffffffff", "truncated"},
        {"df ffffffff", "truncated"},
        {"dd ffffffff 01", "truncated"},
        {"c1", "bad byte"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct vec f = {0};

        vhex(&f, cases[i].hex);
        expect_error(RELAY_FMT_MSGPACK, f.p, f.n, RELAY_EINVAL, cases[i].sub);
        free(f.p);
    }
}

/* A value nested `levels` deep: arrays around 1 (or an empty array). */
static void nested_value(enum relay_fmt fmt, size_t levels, bool empty,
                         struct vec *v)
{
    if (fmt == RELAY_FMT_JSON) {
        vrep(v, '[', levels);
        if (!empty)
            vbyte(v, '1');
        vrep(v, ']', levels);
        return;
    }
    /* one-item arrays around the innermost item, or an empty one inside */
    if (empty) {
        vrep(v, fmt == RELAY_FMT_CBOR ? 0x81 : 0x91, levels - 1);
        vbyte(v, fmt == RELAY_FMT_CBOR ? 0x80 : 0x90);
    } else {
        vrep(v, fmt == RELAY_FMT_CBOR ? 0x81 : 0x91, levels);
        vbyte(v, 0x01);
    }
}

static void test_depth_limit_every_format(void **state)
{
    (void)state;
    for (int f = 0; f < RELAY_FMT_COUNT; f++) {
        for (int empty = 0; empty <= 1; empty++) {
            struct vec v = {0}, fr = {0};
            struct relay_msg m;
            char err[ERRLEN];
            char *s;

            nested_value(f, RELAY_MAX_DEPTH, empty, &v);
            push_frame(f, v.p, v.n, &fr);
            assert_int_equal(
                relay_msg_decode(f, fr.p, fr.n, 0, &m, err, ERRLEN), RELAY_OK);
            /* and it encodes back in every format */
            s = json_of(m.value, m.value_len);
            free(s);
            for (int g = 0; g < RELAY_FMT_COUNT; g++)
                free(value_out(m.value, m.value_len, g));
            relay_msg_free(&m);
            v.n = 0;
            fr.n = 0;
            nested_value(f, RELAY_MAX_DEPTH + 1, empty, &v);
            push_frame(f, v.p, v.n, &fr);
            expect_error(f, fr.p, fr.n, RELAY_EDEPTH,
                         "value nested deeper than 32 levels");
            free(v.p);
            free(fr.p);
        }
    }
}

static void test_nesting_bombs(void **state)
{
    const size_t deep = 100000;
    struct vec v = {0}, fr = {0};

    (void)state;
    /* JSON: unclosed, closed, and inside a push */
    vrep(&v, '[', deep);
    expect_error(RELAY_FMT_JSON, v.p, v.n, RELAY_EDEPTH, "nested deeper");
    vbyte(&v, '1');
    vrep(&v, ']', deep);
    expect_error(RELAY_FMT_JSON, v.p, v.n, RELAY_EDEPTH, "nested deeper");
    push_frame(RELAY_FMT_JSON, v.p, v.n, &fr);
    expect_error(RELAY_FMT_JSON, fr.p, fr.n, RELAY_EDEPTH, "nested deeper");
    v.n = fr.n = 0;
    vrep(&v, '{', deep);
    expect_error(RELAY_FMT_JSON, v.p, v.n, 0, NULL);
    v.n = 0;

    /* CBOR: 0x81 and 0x9f (indefinite) and 0xa1 repeated */
    static const uint8_t cbor_bombs[] = {0x81, 0x9f, 0xbf, 0xc1};
    for (size_t i = 0; i < sizeof(cbor_bombs); i++) {
        vrep(&v, cbor_bombs[i], deep);
        vbyte(&v, 0x01);
        push_frame(RELAY_FMT_CBOR, v.p, v.n, &fr);
        if (cbor_bombs[i] == 0xc1) {
            /* 100000 nested tags: dropped iteratively, then fine */
            struct relay_msg m;
            char err[ERRLEN];

            assert_int_equal(relay_msg_decode(RELAY_FMT_CBOR, fr.p, fr.n, 0, &m,
                                              err, ERRLEN),
                             RELAY_OK);
            assert_hex(m.value, m.value_len, "01");
            relay_msg_free(&m);
        } else {
            expect_error(RELAY_FMT_CBOR, v.p, v.n, RELAY_EDEPTH,
                         "nested deeper");
            expect_error(RELAY_FMT_CBOR, fr.p, fr.n, RELAY_EDEPTH,
                         "nested deeper");
        }
        v.n = fr.n = 0;
    }
    /* A map bomb: {"k":{"k":...}} */
    for (size_t i = 0; i < deep; i++)
        vhex(&v, "a1616b");
    vbyte(&v, 0x01);
    expect_error(RELAY_FMT_CBOR, v.p, v.n, RELAY_EDEPTH, "nested deeper");
    v.n = 0;

    /* msgpack: 0x91, 0xdc 0001, 0x81 with keys */
    vrep(&v, 0x91, deep);
    vbyte(&v, 0x01);
    push_frame(RELAY_FMT_MSGPACK, v.p, v.n, &fr);
    expect_error(RELAY_FMT_MSGPACK, v.p, v.n, RELAY_EDEPTH, "nested deeper");
    expect_error(RELAY_FMT_MSGPACK, fr.p, fr.n, RELAY_EDEPTH, "nested deeper");
    v.n = fr.n = 0;
    for (size_t i = 0; i < deep; i++)
        vhex(&v, "81a16b");
    vbyte(&v, 0x01);
    expect_error(RELAY_FMT_MSGPACK, v.p, v.n, RELAY_EDEPTH, "nested deeper");
    v.n = 0;
    /* deep map *keys* count as nesting too */
    vrep(&v, 0x81, deep);
    expect_error(RELAY_FMT_MSGPACK, v.p, v.n, RELAY_EDEPTH, "nested deeper");
    free(v.p);
    free(fr.p);
}

static void test_encode_depth(void **state)
{
    struct vec v = {0};
    uint8_t *out;
    size_t len;
    char *s;

    (void)state;
    /* A canonical value deeper than the limit (e.g. corrupt state). */
    vrep(&v, 0x91, 1000);
    vbyte(&v, 0x01);
    assert_int_equal(relay_value_to_json(v.p, v.n, &s, &len), RELAY_EDEPTH);
    assert_int_equal(
        relay_enc_push(RELAY_FMT_JSON, 0, "k", 1, v.p, v.n, 1, &out, &len),
        RELAY_EDEPTH);
    /* CBOR and msgpack writers keep no stack: they just convert. */
    assert_int_equal(
        relay_enc_push(RELAY_FMT_CBOR, 0, "k", 1, v.p, v.n, 1, &out, &len),
        RELAY_OK);
    free(out);
    v.n = 0;
    /* Map keys that are maps, nested in keys: {{{...}:0}:0} */
    vrep(&v, 0x81, 1000);
    vbyte(&v, 0x01);
    vrep(&v, 0x00, 1000);
    assert_int_equal(relay_value_to_json(v.p, v.n, &s, &len), RELAY_EDEPTH);
    v.n = 0;
    vhex(&v, "81 81 01 00 00");
    s = json_of(v.p, v.n);
    assert_string_equal(s, "{\"{\\\"1\\\":0}\":0}");
    free(s);
    v.n = 0;
    vhex(&v, "81 81 81 01 00 00 00");
    s = json_of(v.p, v.n);
    assert_string_equal(s, "{\"{\\\"{\\\"1\\\":0}\\\":0}\":0}");
    free(s);
    v.n = 0;
    /* Keys inside keys, 32 deep: quoted inline, not escaped per level, so
     * the text stays linear instead of doubling per level (2^32). */
    vrep(&v, 0x81, 32);
    vbyte(&v, 0x01);
    vrep(&v, 0x00, 32);
    s = json_of(v.p, v.n);
    assert_true(strlen(s) < 400);
    free(s);
    free(v.p);
}

/* ---- pseudo-fuzz --------------------------------------------------------- */


static void mutate(uint64_t *rng, struct vec *f)
{
    static const uint8_t special[] = {
        0x00, 0x01, 0x7f, 0x80, 0x81, 0x9f, 0xa1, 0xbf, 0x5f, 0x7f, 0xc1, 0xc2,
        0xd8, 0xdc, 0xdf, 0xf7, 0xf9, 0xff, '[',  '{',  '"',  '\\', ':',  ','};
    int edits = 1 + (int)(xorshift(rng) % 4);

    for (int e = 0; e < edits && f->n > 0; e++) {
        size_t at = (size_t)(xorshift(rng) % f->n);

        switch (xorshift(rng) % 6) {
        case 0:
            f->p[at] = (uint8_t)xorshift(rng);
            break;
        case 1:
            f->p[at] ^= (uint8_t)(1u << (xorshift(rng) % 8));
            break;
        case 2:
            f->p[at] = special[xorshift(rng) % sizeof(special)];
            break;
        case 3:
            f->n = at; /* truncate */
            break;
        case 4: { /* duplicate a span */
            size_t span = 1 + (size_t)(xorshift(rng) % 16);
            uint8_t tmp[16];

            if (at + span > f->n)
                span = f->n - at;
            memcpy(tmp, f->p + at, span);
            vput(f, tmp, span);
            break;
        }
        default: /* delete a byte */
            memmove(f->p + at, f->p + at + 1, f->n - at - 1);
            f->n--;
            break;
        }
    }
}

/* Invariants a decoded message must satisfy, exercised on every encoder. */
static void check_decoded(const struct relay_msg *m, uint64_t *rng)
{
    uint8_t *out;
    size_t len;

    for (int f = 0; f < RELAY_FMT_COUNT; f++) {
        size_t headroom = (size_t)(xorshift(rng) % 32);
        int rc = RELAY_OK;

        if (m->type == RELAY_MSG_PUSH) {
            struct relay_entry e = {1, m->value, m->value_len};

            assert_non_null(m->value);
            rc = relay_enc_push(f, headroom, m->key, m->key_len, m->value,
                                m->value_len, 1, &out, &len);
            assert_int_equal(rc, RELAY_OK);
            free(out);
            rc = relay_enc_init(f, headroom, m->key, m->key_len, &e, 1, &out,
                                &len);
        } else if (m->type == RELAY_MSG_GET) {
            rc = relay_enc_stream_size(f, headroom, m->key, m->key_len, m->seq,
                                       &out, &len);
        } else {
            rc =
                relay_enc_pong(f, headroom, m->has_nonce, m->nonce, &out, &len);
        }
        assert_int_equal(rc, RELAY_OK);
        free(out);
    }
    if (m->type == RELAY_MSG_PUSH) {
        /* msgpack and CBOR clients get back exactly what was stored, and
         * CBOR -> canonical -> CBOR is stable after one pass. */
        struct relay_msg m2;
        char *c1, *c2;
        char *j1, *j2, *j3;

        decode_value(RELAY_FMT_MSGPACK, m->value, m->value_len, &m2);
        assert_int_equal(m2.value_len, m->value_len);
        assert_memory_equal(m2.value, m->value, m->value_len);
        relay_msg_free(&m2);

        c1 = value_out(m->value, m->value_len, RELAY_FMT_CBOR);
        {
            struct vec b = {0};

            vhex(&b, c1);
            decode_value(RELAY_FMT_CBOR, b.p, b.n, &m2);
            free(b.p);
        }
        c2 = value_out(m2.value, m2.value_len, RELAY_FMT_CBOR);
        assert_string_equal(c1, c2);
        free(c1);
        free(c2);
        relay_msg_free(&m2);

        /* JSON settles after one round trip (bytes -> arrays, big
         * integers -> reals, keys -> strings happen on the first). */
        j1 = value_out(m->value, m->value_len, RELAY_FMT_JSON);
        if (strcmp(j1, "null") != 0) {
            char err[ERRLEN];

            /* jansson refuses one thing we print: U+0000 in a key */
            if (try_decode_value(RELAY_FMT_JSON, (const uint8_t *)j1,
                                 strlen(j1), &m2, err) != RELAY_OK) {
                assert_non_null(strstr(err, "NUL byte in object key"));
                free(j1);
                return;
            }
            j2 = value_out(m2.value, m2.value_len, RELAY_FMT_JSON);
            relay_msg_free(&m2);
            decode_value(RELAY_FMT_JSON, (const uint8_t *)j2, strlen(j2), &m2);
            j3 = value_out(m2.value, m2.value_len, RELAY_FMT_JSON);
            relay_msg_free(&m2);
            assert_string_equal(j2, j3);
            free(j2);
            free(j3);
        }
        free(j1);
    }
}

static void test_fuzz_decode(void **state)
{
    static const char *const seeds[] = {
        "{\"type\":\"push\",\"key\":\"slider\",\"value\":{\"a\":[1,2.5,"
        "\"x\\u00e9\",true,false,{}],\"b\":-70000,\"c\":[[[[1]]]],"
        "\"d\":9007199254740993},\"action\":{\"type\":\"append\"}}",
        "{\"type\":\"push\",\"key\":\"\",\"value\":\"\xf0\x9f\x98\x80\","
        "\"action\":{\"type\":\"compact\",\"seq\":12}}",
        "{\"type\":\"get\",\"key\":\"k\",\"seq\":5}",
        "{\"type\":\"get\",\"key\":\"k\",\"seq\":null}",
        "{\"type\":\"ping\",\"nonce\":4294967296,"
        "\"x\":[1,\"two\",{\"3\":4.5}]}",
        "{\"type\":\"push\",\"key\":\"n\",\"value\":null,"
        "\"action\":{\"type\":\"relay\"}}",
    };
    static const char *const cbor_extra[] = {
        /* indefinite items, tags, half floats, bytes, bignums */
        "a4 6474797065 6470757368 636b6579 7f616bff 6576616c7565"
        " bf 6161 9f f93e00 d8404201025f4101ff c248ffffffffffffffff ff"
        " 6162 a1 01 f7 ff 66616374696f6e a1 6474797065 6572656c6179",
    };
    static const char *const mp_extra[] = {
        "84 a474797065 a470757368 a36b6579 c4016b a576616c7565"
        " 95 d40105 c70300616263 ca3fc00000 d0ff 92 a2ff61 c3"
        " a6616374696f6e 81 a474797065 a572656c6179",
    };
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    /* RELAY_FUZZ_ROUNDS / RELAY_FUZZ_SEED: run longer or differently */
    const char *env_rounds = getenv("RELAY_FUZZ_ROUNDS");
    const char *env_seed = getenv("RELAY_FUZZ_SEED");
    const int rounds = env_rounds ? atoi(env_rounds) : 4000;
    int decoded = 0;
    int failed = 0;

    (void)state;
    if (env_seed != NULL)
        rng = strtoull(env_seed, NULL, 0) | 1;
    for (int f = 0; f < RELAY_FMT_COUNT; f++) {
        size_t nseeds = sizeof(seeds) / sizeof(seeds[0]) + 1;

        for (size_t s = 0; s < nseeds; s++) {
            struct vec seed = {0};

            if (s < nseeds - 1)
                frame_of(f, seeds[s], &seed);
            else if (f == RELAY_FMT_CBOR)
                vhex(&seed, cbor_extra[0]);
            else if (f == RELAY_FMT_MSGPACK)
                vhex(&seed, mp_extra[0]);
            else
                frame_of(f, seeds[0], &seed);
            {
                /* the seed itself decodes */
                struct relay_msg m;
                char err[ERRLEN];

                if (relay_msg_decode(f, seed.p, seed.n, 0, &m, err, ERRLEN) !=
                    RELAY_OK)
                    fail_msg("%s seed %zu: %s", fmt_name[f], s, err);
                check_decoded(&m, &rng);
                relay_msg_free(&m);
            }
            for (int r = 0; r < rounds; r++) {
                struct vec mut = {0};
                struct relay_msg m;
                char err[ERRLEN];
                size_t max =
                    xorshift(&rng) % 4 == 0 ? (size_t)(xorshift(&rng) % 64) : 0;
                int rc;

                vput(&mut, seed.p, seed.n);
                mutate(&rng, &mut);
                rc = relay_msg_decode(f, mut.p, mut.n, max, &m, err, ERRLEN);
                if (rc == RELAY_OK) {
                    decoded++;
                    if (max != 0 && m.value != NULL)
                        assert_true(m.value_len <= max);
                    check_decoded(&m, &rng);
                } else {
                    failed++;
                    assert_true(rc == RELAY_EINVAL || rc == RELAY_EDEPTH ||
                                rc == RELAY_ETOOBIG);
                    assert_one_line(err);
                }
                relay_msg_free(&m);
                free(mut.p);
            }
            free(seed.p);
        }
    }
    print_message("fuzz: %d frames decoded, %d refused\n", decoded, failed);
    /* the mutations leave a fair share of frames valid */
    assert_true(decoded > rounds / 10);
}

static void test_fuzz_encode(void **state)
{
    uint64_t rng = 0x123456789abcdefull;
    uint8_t buf[64];

    (void)state;
    for (int r = 0; r < 20000; r++) {
        size_t n = 1 + (size_t)(xorshift(&rng) % sizeof(buf));
        int f = (int)(xorshift(&rng) % RELAY_FMT_COUNT);
        uint8_t *out;
        size_t len;
        char *s;
        int rc;

        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)xorshift(&rng);
        /* bias towards containers so some values are well formed */
        if (xorshift(&rng) % 2)
            buf[0] = (uint8_t)(0x90 | (buf[0] & 3));
        rc = relay_enc_push(f, 4, (const char *)buf, n, buf, n, 1, &out, &len);
        assert_true(rc == RELAY_OK || rc == RELAY_EINVAL || rc == RELAY_EDEPTH);
        if (rc == RELAY_OK)
            free(out);
        else
            assert_null(out);
        rc = relay_value_to_json(buf, n, &s, &len);
        if (rc == RELAY_OK) {
            /* what we print is JSON that jansson accepts */
            json_error_t e;
            json_t *j = json_loadb(
                s, len,
                JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &e);

            if (j == NULL)
                fail_msg("invalid JSON output %s: %s", s, e.text);
            json_decref(j);
            free(s);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_push_every_format),
        cmocka_unit_test(test_get_and_ping_every_format),
        cmocka_unit_test(test_schema_errors_every_format),
        cmocka_unit_test(test_unknown_type_is_quoted_safely),
        cmocka_unit_test(test_json_specific),
        cmocka_unit_test(test_binary_keys),
        cmocka_unit_test(test_value_limit),
        cmocka_unit_test(test_encode_shapes),
        cmocka_unit_test(test_encode_keys_and_text),
        cmocka_unit_test(test_value_to_json),
        cmocka_unit_test(test_fidelity_from_json),
        cmocka_unit_test(test_fidelity_from_cbor),
        cmocka_unit_test(test_fidelity_from_msgpack),
        cmocka_unit_test(test_node_cbor_frames),
        cmocka_unit_test(test_truncated_every_format),
        cmocka_unit_test(test_trailing_bytes),
        cmocka_unit_test(test_cbor_malformed),
        cmocka_unit_test(test_msgpack_malformed),
        cmocka_unit_test(test_depth_limit_every_format),
        cmocka_unit_test(test_nesting_bombs),
        cmocka_unit_test(test_encode_depth),
        cmocka_unit_test(test_fuzz_decode),
        cmocka_unit_test(test_fuzz_encode),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
