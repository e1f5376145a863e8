/*
 * test_hostile.c - regression tests for what the libFuzzer targets of
 * tests/fuzz found in relay (their inputs are also kept in the corpora as
 * crash-* files and replayed by make fuzz).
 *
 * - fuzz_cbor: a CBOR text string that is not UTF-8 was stored as a msgpack
 *   str that the CBOR writer could only send back as a byte string. Now
 *   refused, as JSON refuses invalid UTF-8; a byte string is still fine.
 * - fuzz_snapshot: restore took values of any nesting depth, which no
 *   client format could then carry (every get of the key failed). Now held
 *   to RELAY_MAX_DEPTH like the log's values.
 * - fuzz_snapshot: a stream's entry count was trusted to size its array, so
 *   a few corrupt bytes made restore ask for 48 GB. Now bounded by the
 *   bytes left.
 * - the same rule for log batches: an empty container one level too deep
 *   was accepted by the batch decoder but refused by the JSON writer (the
 *   client decoders count empty containers; now the batch decoder does too).
 *
 * - fuzz_json: a frame that is not an object and holds an integer beyond
 *   int64 (the overflow path) leaked its list of number literals; a client
 *   could grow the node's memory with every such frame. The ASan suite's
 *   leak check catches it (test_json_overflow_not_object).
 *
 * Not here: the net side (empty first piece of a forwarded message), which
 * only the fuzz target reaches.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "relay.h"
#include "unit_util.h"

/* ---- CBOR text ------------------------------------------------------------
 */

/* {"type":"push","key":KEY,"action":{"type":"append"},"value":VALUE} with
 * key and value given as raw CBOR items. */
static void cbor_push(struct vec *f, const void *key, size_t kn,
                      const void *value, size_t vn)
{
    static const uint8_t head[] = {0xa4, 0x64, 't', 'y',  'p', 'e', 0x64, 'p',
                                   'u',  's',  'h', 0x63, 'k', 'e', 'y'};
    static const uint8_t action[] = {
        0x66, 'a', 'c', 't', 'i', 'o', 'n', 0xa1, 0x64, 't', 'y', 'p', 'e',
        0x66, 'a', 'p', 'p', 'e', 'n', 'd', 0x65, 'v',  'a', 'l', 'u', 'e'};

    f->n = 0;
    vput(f, head, sizeof(head));
    vput(f, key, kn);
    vput(f, action, sizeof(action));
    vput(f, value, vn);
}

static int decode_cbor(const struct vec *f)
{
    struct relay_msg m;
    char err[256];
    int rc =
        relay_msg_decode(RELAY_FMT_CBOR, f->p, f->n, 0, &m, err, sizeof(err));

    if (rc != RELAY_OK)
        assert_non_null(strstr(err, "UTF-8"));
    relay_msg_free(&m);
    return rc;
}

static void test_cbor_text_must_be_utf8(void **state)
{
    static const uint8_t key_ok[] = {0x61, 'k'};
    static const uint8_t text_bad[] = {0x62, 0xc3, 0x28};  /* bad 2nd byte */
    static const uint8_t text_ok[] = {0x62, 0xc3, 0xa9};   /* U+00E9 */
    static const uint8_t bytes_bad[] = {0x42, 0xc3, 0x28}; /* bytes: fine */
    static const uint8_t surrogate[] = {0x63, 0xed, 0xa0, 0x80};
    /* indefinite text: each chunk must be valid on its own */
    static const uint8_t chunks[] = {0x7f, 0x61, 0xc3, 0x61, 0xa9, 0xff};
    static const uint8_t in_array[] = {0x82, 0x01, 0x62, 0xc3, 0x28};
    struct vec f = {0};

    (void)state;
    cbor_push(&f, key_ok, sizeof(key_ok), text_ok, sizeof(text_ok));
    assert_int_equal(decode_cbor(&f), RELAY_OK);
    cbor_push(&f, key_ok, sizeof(key_ok), bytes_bad, sizeof(bytes_bad));
    assert_int_equal(decode_cbor(&f), RELAY_OK);
    cbor_push(&f, key_ok, sizeof(key_ok), text_bad, sizeof(text_bad));
    assert_int_equal(decode_cbor(&f), RELAY_EINVAL);
    cbor_push(&f, key_ok, sizeof(key_ok), surrogate, sizeof(surrogate));
    assert_int_equal(decode_cbor(&f), RELAY_EINVAL);
    cbor_push(&f, key_ok, sizeof(key_ok), chunks, sizeof(chunks));
    assert_int_equal(decode_cbor(&f), RELAY_EINVAL);
    cbor_push(&f, key_ok, sizeof(key_ok), in_array, sizeof(in_array));
    assert_int_equal(decode_cbor(&f), RELAY_EINVAL);
    /* a key as text must be UTF-8 too; as bytes it may be anything */
    cbor_push(&f, text_bad, sizeof(text_bad), text_ok, sizeof(text_ok));
    assert_int_equal(decode_cbor(&f), RELAY_EINVAL);
    cbor_push(&f, bytes_bad, sizeof(bytes_bad), text_ok, sizeof(text_ok));
    assert_int_equal(decode_cbor(&f), RELAY_OK);
    free(f.p);
}

/* ---- JSON ---------------------------------------------------------------- */

static void test_json_overflow_not_object(void **state)
{
    static const char *const frames[] = {
        "[547700,-0.0,181e300,18446744073709551615,-9208]",
        "[18446744073709551616]",
    };
    struct relay_msg m;
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(frames) / sizeof(frames[0]); i++) {
        assert_int_equal(
            relay_msg_decode(RELAY_FMT_JSON, (const uint8_t *)frames[i],
                             strlen(frames[i]), 0, &m, err, sizeof(err)),
            RELAY_EINVAL);
        assert_string_equal(err, "message must be an object");
        relay_msg_free(&m);
    }
}

/* ---- nesting in snapshots and batches ------------------------------------ */

/* depth - 1 one-item arrays around `inner` (an empty array when true,
 * else the integer 1): a value nested `depth` levels. */
static void nested(struct vec *v, int depth, bool empty_inner)
{
    static const uint8_t one = 0x91, empty = 0x90, leaf = 0x01;

    for (int i = 0; i < depth - 1; i++)
        vput(v, &one, 1);
    vput(v, empty_inner ? &empty : &one, 1);
    if (!empty_inner)
        vput(v, &leaf, 1);
}

/* A snapshot with room "r" (last seq 1), key "k", seq 1 = value. Not
 * inlined: GCC 12 otherwise warns of an overflow that cannot happen
 * (-Wstringop-overflow on the vector's terminating NUL). */
__attribute__((noinline)) static void snapshot_with(struct vec *s,
                                                    const struct vec *value)
{
    static const uint8_t head[] = {
        0x95, 0xac, 'd',  'r',  'i', 'f', 't',  'd',
        '-',  'r',  'e',  'l',  'a', 'y', 0x01, /* version */
        0x91, 0x94, 0xc4, 0x01, 'r',            /* [[bin "r", */
        0x01, 0x00,                             /*   last_seq 1, last_ms 0, */
        0x91, 0x93, 0xc4, 0x01, 'k',            /*   [[bin "k", */
        0x01};                                  /*     1, VALUE]]]] */
    static const uint8_t tail[] = {0x90, 0x90}; /* no dedupe, no nodes */

    s->n = 0;
    vput(s, head, sizeof(head));
    vput(s, value->p, value->n);
    vput(s, tail, sizeof(tail));
}

static int restore(const struct vec *snap)
{
    struct relay_state *s;
    int rc;

    assert_int_equal(relay_state_create(NULL, &s), RELAY_OK);
    rc = relay_state_restore(s, snap->p, snap->n);
    if (rc == RELAY_OK) {
        const struct relay_entry *e;
        uint8_t *out;
        size_t n, len;

        /* what was restored can be served in every format */
        assert_int_equal(relay_stream_read(s, "r", 1, "k", 1, 0, &e, &n),
                         RELAY_OK);
        assert_int_equal(n, 1);
        for (int f = 0; f < RELAY_FMT_COUNT; f++) {
            assert_int_equal(
                relay_enc_init((enum relay_fmt)f, 0, "k", 1, e, n, &out, &len),
                RELAY_OK);
            free(out);
        }
    }
    relay_state_destroy(s);
    return rc;
}

static void test_snapshot_value_depth(void **state)
{
    struct vec v = {0}, snap = {0};

    (void)state;
    nested(&v, RELAY_MAX_DEPTH, false);
    snapshot_with(&snap, &v);
    assert_int_equal(restore(&snap), RELAY_OK);
    v.n = 0;
    nested(&v, RELAY_MAX_DEPTH, true);
    snapshot_with(&snap, &v);
    assert_int_equal(restore(&snap), RELAY_OK);
    v.n = 0;
    nested(&v, RELAY_MAX_DEPTH + 1, false);
    snapshot_with(&snap, &v);
    assert_int_equal(restore(&snap), RELAY_EINVAL);
    v.n = 0;
    nested(&v, RELAY_MAX_DEPTH + 1, true);
    snapshot_with(&snap, &v);
    assert_int_equal(restore(&snap), RELAY_EINVAL);
    v.n = 0;
    nested(&v, 5000, false);
    snapshot_with(&snap, &v);
    assert_int_equal(restore(&snap), RELAY_EINVAL);
    free(v.p);
    free(snap.p);
}

static void test_snapshot_entry_count(void **state)
{
    /* The stream announces 2^32 - 1 items (array32) in a few bytes. */
    static const uint8_t snap[] = {
        0x95, 0xac, 'd',  'r',  'i',  'f',  't',  'd',  '-',  'r',  'e',  'l',
        'a',  'y',  0x01, 0x91, 0x94, 0xc4, 0x01, 'r',  0x01, 0x00, 0x91, 0xdd,
        0xff, 0xff, 0xff, 0xff, 0xc4, 0x01, 'k',  0x01, 0x01, 0x90, 0x90};
    struct relay_state *s;

    (void)state;
    assert_int_equal(relay_state_create(NULL, &s), RELAY_OK);
    assert_int_equal(relay_state_restore(s, snap, sizeof(snap)), RELAY_EINVAL);
    relay_state_destroy(s);
}

static int count_cb(void *arg, const struct relay_cmd *cmd, uint64_t now_ms)
{
    (void)cmd;
    (void)now_ms;
    ++*(int *)arg;
    return 0;
}

/* [1, 0, [[2, 1, 1, 1, bin "r", bin "k", 2, 0, VALUE]]], padded. */
static int decode_push_with(const struct vec *value)
{
    static const uint8_t head[] = {0x93, 0x01, 0x00, 0x91, 0x99, 0x02,
                                   0x01, 0x01, 0x01, 0xc4, 0x01, 'r',
                                   0xc4, 0x01, 'k',  0x02, 0x00};
    static const uint8_t nil = 0xc0;
    struct vec b = {0};
    int calls = 0, rc;

    vput(&b, head, sizeof(head));
    vput(&b, value->p, value->n);
    while (b.n % 8 != 0)
        vput(&b, &nil, 1);
    rc = relay_batch_decode(b.p, b.n, count_cb, &calls);
    assert_int_equal(calls, rc == RELAY_OK ? 1 : 0);
    free(b.p);
    return rc;
}

static void test_batch_value_depth(void **state)
{
    struct vec v = {0};

    (void)state;
    nested(&v, RELAY_MAX_DEPTH, false);
    assert_int_equal(decode_push_with(&v), RELAY_OK);
    v.n = 0;
    nested(&v, RELAY_MAX_DEPTH, true);
    assert_int_equal(decode_push_with(&v), RELAY_OK);
    v.n = 0;
    nested(&v, RELAY_MAX_DEPTH + 1, true);
    assert_int_equal(decode_push_with(&v), RELAY_EINVAL);
    v.n = 0;
    nested(&v, RELAY_MAX_DEPTH + 1, false);
    assert_int_equal(decode_push_with(&v), RELAY_EINVAL);
    free(v.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cbor_text_must_be_utf8),
        cmocka_unit_test(test_json_overflow_not_object),
        cmocka_unit_test(test_snapshot_value_depth),
        cmocka_unit_test(test_snapshot_entry_count),
        cmocka_unit_test(test_batch_value_depth),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
