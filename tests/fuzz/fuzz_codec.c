/*
 * fuzz_codec.c - libFuzzer target for one client message format, built
 * three times (fuzz_json, fuzz_cbor, fuzz_msgpack) with FUZZ_FMT set.
 *
 * The input is one client frame. Whatever relay_msg_decode accepts must
 * then hold up everywhere the node uses it:
 * - round trip: the message written back as a client frame of the same
 *   format decodes to the same message, with the same canonical value and
 *   nonce (an unsigned 64-bit integer);
 * - fan-out: the value (and nonce) encodes as push, init, pong and HTTP
 *   JSON in every format, since subscribers of any format receive it, and
 *   each server message parses back as a well-formed frame of its format.
 * A refused frame must come with a reason for the client.
 */
#include <cbor.h>
#include <jansson.h>

#include "codec_internal.h"
#include "fuzz.h"

#ifndef FUZZ_FMT
#error "build with -DFUZZ_FMT=RELAY_FMT_JSON|CBOR|MSGPACK"
#endif

/* ---- writing a client frame back ---------------------------------------- */

struct out {
    enum relay_fmt fmt;
    struct relay__buf b;
    msgpack_packer pk;
    int fields; /* JSON: fields written in the current object */
};

static void o_sep(struct out *o)
{
    if (o->fmt == RELAY_FMT_JSON && o->fields++ > 0)
        relay__buf_byte(&o->b, ',');
}

static void o_map(struct out *o, size_t n)
{
    if (o->fmt == RELAY_FMT_JSON) {
        relay__buf_byte(&o->b, '{');
        o->fields = 0;
    } else if (o->fmt == RELAY_FMT_CBOR) {
        relay__cbor_map(&o->b, n);
    } else {
        msgpack_pack_map(&o->pk, n);
    }
}

static void o_end(struct out *o)
{
    if (o->fmt == RELAY_FMT_JSON)
        relay__buf_byte(&o->b, '}');
}

/* Text where valid UTF-8, else (CBOR, msgpack) a byte string. */
static void o_text(struct out *o, const void *s, size_t n)
{
    if (o->fmt == RELAY_FMT_JSON)
        relay__json_str(&o->b, s, n);
    else if (o->fmt == RELAY_FMT_CBOR)
        relay__cbor_text(&o->b, s, n);
    else if (relay__utf8_valid(s, n))
        msgpack_pack_str_with_body(&o->pk, s, n);
    else
        msgpack_pack_bin_with_body(&o->pk, s, n);
}

static void o_name(struct out *o, const char *name)
{
    o_sep(o);
    o_text(o, name, strlen(name));
    if (o->fmt == RELAY_FMT_JSON)
        relay__buf_byte(&o->b, ':');
}

static void o_uint(struct out *o, uint64_t u)
{
    if (o->fmt == RELAY_FMT_JSON)
        relay__json_u64(&o->b, u);
    else if (o->fmt == RELAY_FMT_CBOR)
        relay__cbor_uint(&o->b, u);
    else
        msgpack_pack_uint64(&o->pk, u);
}

static void o_null(struct out *o)
{
    static const uint8_t cbor_null = 0xf6;

    if (o->fmt == RELAY_FMT_JSON)
        relay__buf_put(&o->b, "null", 4);
    else if (o->fmt == RELAY_FMT_CBOR)
        relay__buf_put(&o->b, &cbor_null, 1);
    else
        msgpack_pack_nil(&o->pk);
}

/* A canonical msgpack value in the output format. */
static void o_value(struct out *o, const uint8_t *v, size_t n)
{
    int rc = RELAY_OK;

    if (o->fmt == RELAY_FMT_JSON)
        rc = relay__mp_to_json(&o->b, v, n);
    else if (o->fmt == RELAY_FMT_CBOR)
        rc = relay__mp_to_cbor(&o->b, v, n);
    else
        relay__buf_put(&o->b, v, n);
    CHECK(rc == RELAY_OK);
}

static const char *action_name(enum relay_action a)
{
    switch (a) {
    case RELAY_ACT_RELAY:
        return "relay";
    case RELAY_ACT_REPLACE:
        return "replace";
    case RELAY_ACT_APPEND:
        return "append";
    case RELAY_ACT_COMPACT:
        return "compact";
    }
    CHECK(!"action out of range");
    return NULL;
}

/* The client frame that says what m says. */
static void write_frame(struct out *o, const struct relay_msg *m)
{
    switch (m->type) {
    case RELAY_MSG_PUSH:
        o_map(o, 4);
        o_name(o, "type");
        o_text(o, "push", 4);
        o_name(o, "key");
        o_text(o, m->key, m->key_len);
        o_name(o, "value");
        o_value(o, m->value, m->value_len);
        o_name(o, "action");
        {
            int outer = o->fields;

            o_map(o, m->action == RELAY_ACT_COMPACT ? 2 : 1);
            o_name(o, "type");
            o_text(o, action_name(m->action), strlen(action_name(m->action)));
            if (m->action == RELAY_ACT_COMPACT) {
                o_name(o, "seq");
                o_uint(o, m->compact_seq);
            }
            o_end(o);
            o->fields = outer;
        }
        break;
    case RELAY_MSG_GET:
        o_map(o, 3);
        o_name(o, "type");
        o_text(o, "get", 3);
        o_name(o, "key");
        o_text(o, m->key, m->key_len);
        o_name(o, "seq");
        if (m->has_seq)
            o_uint(o, m->seq);
        else
            o_null(o);
        break;
    case RELAY_MSG_PING:
        o_map(o, m->has_nonce ? 2 : 1);
        o_name(o, "type");
        o_text(o, "ping", 4);
        if (m->has_nonce) {
            o_name(o, "nonce");
            o_uint(o, m->nonce);
        }
        break;
    default:
        CHECK(!"message type out of range");
    }
    o_end(o);
}

/* ---- checks ------------------------------------------------------------- */

/*
 * A server message of format fmt must be one well-formed item of that
 * format. Checked with the libraries a client might use, without our
 * frame depth bound: an init nests its values two levels down.
 */
static void check_parses(enum relay_fmt fmt, const uint8_t *p, size_t n)
{
    if (fmt == RELAY_FMT_JSON) {
        json_error_t e;
        json_t *j = json_loadb((const char *)p, n, JSON_ALLOW_NUL, &e);

        if (j == NULL && json_error_code(&e) == json_error_numeric_overflow)
            j = json_loadb((const char *)p, n,
                           JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &e);
        /* jansson's own limit; RFC 8259 allows U+0000 in names, and
         * JavaScript's JSON.parse takes it. */
        if (j == NULL && strstr(e.text, "NUL byte in object key") != NULL)
            return;
        if (j == NULL)
            fprintf(stderr, "server message does not parse: %s\n", e.text);
        CHECK(j != NULL);
        json_decref(j);
    } else if (fmt == RELAY_FMT_CBOR) {
        struct cbor_load_result r;
        cbor_item_t *item = cbor_load(p, n, &r);

        CHECK(item != NULL && r.error.code == CBOR_ERR_NONE && r.read == n);
        cbor_decref(&item);
    } else {
        CHECK(relay__mp_is_one_item(p, n));
    }
}

/* What a subscriber of each format gets from this value. */
static void check_fanout(const struct relay_msg *m)
{
    const struct relay_entry e = {
        .seq = 7, .value = m->value, .value_len = m->value_len};
    uint8_t *buf;
    size_t len;
    char *js;
    size_t js_len;

    for (int f = 0; f < RELAY_FMT_COUNT; f++) {
        enum relay_fmt fmt = (enum relay_fmt)f;

        if (m->type == RELAY_MSG_PUSH) {
            CHECK(relay_enc_push(fmt, 16, m->key, m->key_len, m->value,
                                 m->value_len, 7, &buf, &len) == RELAY_OK);
            check_parses(fmt, buf + 16, len);
            free(buf);
            CHECK(relay_enc_init(fmt, 0, m->key, m->key_len, &e, 1, &buf,
                                 &len) == RELAY_OK);
            check_parses(fmt, buf, len);
            free(buf);
        } else if (m->type == RELAY_MSG_PING) {
            CHECK(relay_enc_pong(fmt, 0, m->has_nonce, m->nonce, &buf, &len) ==
                  RELAY_OK);
            check_parses(fmt, buf, len);
            free(buf);
        } else {
            CHECK(relay_enc_init(fmt, 0, m->key, m->key_len, NULL, 0, &buf,
                                 &len) == RELAY_OK);
            check_parses(fmt, buf, len);
            free(buf);
        }
    }
    if (m->type == RELAY_MSG_PUSH) {
        CHECK(relay_value_to_json(m->value, m->value_len, &js, &js_len) ==
              RELAY_OK);
        CHECK(strlen(js) == js_len);
        free(js);
    }
}

static void check_same(const struct relay_msg *a, const struct relay_msg *b)
{
    CHECK(a->type == b->type);
    CHECK(same_bytes(a->key, a->key_len, b->key, b->key_len));
    CHECK(same_bytes(a->value, a->value_len, b->value, b->value_len));
    CHECK(a->has_nonce == b->has_nonce);
    CHECK(!a->has_nonce || a->nonce == b->nonce);
    CHECK(a->action == b->action);
    CHECK(a->compact_seq == b->compact_seq);
    CHECK(a->has_seq == b->has_seq);
    CHECK(a->seq == b->seq);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct relay_msg m, again;
    struct out o = {.fmt = FUZZ_FMT};
    char err[256];
    int rc;

    err[0] = 'x';
    rc = relay_msg_decode(FUZZ_FMT, data, size, 0, &m, err, sizeof(err));
    CHECK(memchr(err, '\0', sizeof(err)) != NULL);
    if (rc != RELAY_OK) {
        CHECK(rc == RELAY_EINVAL || rc == RELAY_EDEPTH || rc == RELAY_ETOOBIG ||
              rc == RELAY_ENOMEM);
        CHECK(err[0] != '\0');
        relay_msg_free(&m);
        return 0;
    }
    CHECK(m.key != NULL || m.type == RELAY_MSG_PING);
    CHECK(m.type != RELAY_MSG_PUSH ||
          (m.value != NULL && relay__mp_is_one_item(m.value, m.value_len)));
    /* JSON cannot carry a key that is not UTF-8 text. */
    CHECK(FUZZ_FMT != RELAY_FMT_JSON || m.key == NULL ||
          relay__utf8_valid((uint8_t *)m.key, m.key_len));

    check_fanout(&m);

    CHECK(relay__buf_init(&o.b, 0, size + 64) == RELAY_OK);
    relay__buf_packer(&o.b, &o.pk);
    write_frame(&o, &m);
    CHECK(!o.b.failed);
    rc = relay_msg_decode(FUZZ_FMT, o.b.data, o.b.len, 0, &again, err,
                          sizeof(err));
    if (rc != RELAY_OK)
        fprintf(stderr, "re-encoded frame refused: %s\n", err);
    CHECK(rc == RELAY_OK);
    check_same(&m, &again);
    relay_msg_free(&again);
    relay__buf_free(&o.b);
    relay_msg_free(&m);
    return 0;
}
