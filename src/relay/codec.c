/*
 * codec.c - client message schema and server message encoders.
 *
 * Decoding: the format-specific converter (codec_json.c, codec_cbor.c,
 * codec_msgpack.c) turns a frame into one canonical msgpack frame, depth
 * bounded and validated; parse_frame() then walks that frame once with the
 * token reader and copies key, value and nonce (an integer) out of it. So
 * the schema rules (docs/protocol.md "Client to server", the reference
 * server's types) live in one place for every format, and a value's
 * canonical bytes are exactly a byte range of the frame.
 *
 * Encoding: struct enc writes the fixed message shapes of docs/protocol.md
 * ("Server to client") in the connection's format, field by field, straight
 * into one growable buffer that starts with the caller's headroom; values are
 * converted by a direct walk of their canonical bytes (or copied, for
 * msgpack, after a cheap validity scan).
 *
 * Not here: any I/O, logging or global state; limits other than
 * max_value_len (key length and the rest belong to relay_state_apply).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "codec_internal.h"

/* ---- buffer -------------------------------------------------------------- */

int relay__buf_init(struct relay__buf *b, size_t headroom, size_t hint)
{
    size_t cap;

    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->failed = true;
    if (hint < 64)
        hint = 64;
    if (hint > SIZE_MAX - headroom)
        return RELAY_ENOMEM;
    cap = headroom + hint;
    b->data = malloc(cap);
    if (b->data == NULL)
        return RELAY_ENOMEM;
    b->failed = false;
    b->cap = cap;
    b->len = headroom;
    return RELAY_OK;
}

void relay__buf_free(struct relay__buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

bool relay__buf_grow(struct relay__buf *b, size_t n)
{
    size_t need;
    size_t cap;
    uint8_t *p;

    if (b->failed)
        return false;
    if (b->cap - b->len >= n)
        return true;
    need = b->len + n;
    if (need < b->len)
        goto err_fail;
    cap = b->cap < 64 ? 64 : b->cap;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    p = realloc(b->data, cap);
    if (p == NULL)
        goto err_fail;
    b->data = p;
    b->cap = cap;
    return true;
err_fail:
    b->failed = true;
    return false;
}

static int buf_write(void *data, const char *p, size_t n)
{
    struct relay__buf *b = data;

    relay__buf_put(b, p, n);
    return b->failed ? -1 : 0;
}

void relay__buf_packer(struct relay__buf *b, msgpack_packer *pk)
{
    msgpack_packer_init(pk, b, buf_write);
}

/* ---- errors and UTF-8 ---------------------------------------------------- */

int relay__err(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;
    size_t i;

    if (err == NULL || errlen == 0)
        return code;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    for (i = 0; err[i] != '\0'; i++) {
        unsigned char c = (unsigned char)err[i];

        if (c < 0x20 || c >= 0x7f)
            err[i] = '?';
    }
    return code;
}

size_t relay__utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    uint8_t lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    size_t need;
    size_t i;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        need = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* UTF-16 surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < need || s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i < need; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return need;
}

bool relay__utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        size_t k;

        if (s[i] < 0x80) {
            i++;
            continue;
        }
        k = relay__utf8_seq(s + i, n - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

/* ---- decoding: the schema ------------------------------------------------ */

/* A field of a map: its first token and its byte range in the frame. */
struct field {
    bool present;
    struct relay__mp_tok tok;
    size_t start;
    size_t end;
};

static bool tok_is(const struct relay__mp_tok *t, const char *s)
{
    size_t n = strlen(s);

    return t->kind == RELAY__MP_STR && t->n == n && memcmp(t->ptr, s, n) == 0;
}

/*
 * A seq or a nonce must be a non-negative integer (the reference's u64). JSON
 * and JS numbers do not tell 5 from 5.0, so an integral float is taken too;
 * 5.5, -1 and 2^64 are not.
 */
static bool tok_to_seq(const struct relay__mp_tok *t, uint64_t *out)
{
    double d;

    if (t->kind == RELAY__MP_UINT) {
        *out = t->u;
        return true;
    }
    if (t->kind == RELAY__MP_F32)
        d = (double)t->f;
    else if (t->kind == RELAY__MP_F64)
        d = t->d;
    else
        return false;
    if (!(d >= 0.0 && d < 18446744073709551616.0))
        return false; /* also false for NaN */
    *out = (uint64_t)d;
    return (double)*out == d;
}

/* Client text quoted in an error: bounded, and relay__err masks bytes. */
static void quote(char *dst, size_t cap, const uint8_t *s, size_t n)
{
    size_t keep = n < cap - 4 ? n : cap - 4;

    memcpy(dst, s, keep);
    if (keep < n)
        memcpy(dst + keep, "...", 4);
    else
        dst[keep] = '\0';
    for (size_t i = 0; i < keep; i++)
        if (dst[i] == '\0')
            dst[i] = '?';
}

/*
 * Reads the map at *pos, recording the fields named in names[] (the last
 * occurrence wins, as in jansson) and skipping everything else.
 */
static int read_fields(const uint8_t *f, size_t len, size_t *pos,
                       uint32_t pairs, const char *const *names,
                       struct field *fields, size_t nfields)
{
    for (uint32_t i = 0; i < pairs; i++) {
        struct relay__mp_tok k;
        size_t kstart = *pos;
        size_t vstart;
        size_t j;

        if (relay__mp_next(f, len, pos, &k) != RELAY__MP_OK)
            return RELAY_EINVAL;
        if (k.kind == RELAY__MP_ARRAY || k.kind == RELAY__MP_MAP) {
            /* A container key names no field; step over all of it. */
            *pos = kstart;
            if (relay__mp_skip(f, len, pos) != RELAY__MP_OK)
                return RELAY_EINVAL;
        }
        for (j = 0; j < nfields; j++)
            if (tok_is(&k, names[j]))
                break;
        vstart = *pos;
        if (j < nfields) {
            size_t at = vstart;

            if (relay__mp_next(f, len, &at, &fields[j].tok) != RELAY__MP_OK)
                return RELAY_EINVAL;
            fields[j].present = true;
            fields[j].start = vstart;
        }
        if (relay__mp_skip(f, len, pos) != RELAY__MP_OK)
            return RELAY_EINVAL;
        if (j < nfields)
            fields[j].end = *pos;
    }
    return RELAY_OK;
}

enum { F_TYPE, F_KEY, F_VALUE, F_ACTION, F_SEQ, F_NONCE, F_COUNT };
static const char *const frame_names[F_COUNT] = {
    "type", "key", "value", "action", "seq", "nonce",
};

enum { A_TYPE, A_SEQ, A_COUNT };
static const char *const action_names[A_COUNT] = {"type", "seq"};

static const struct {
    const char *name;
    enum relay_action action;
} action_types[] = {
    {"relay", RELAY_ACT_RELAY},
    {"replace", RELAY_ACT_REPLACE},
    {"append", RELAY_ACT_APPEND},
    {"compact", RELAY_ACT_COMPACT},
};

static int take_key(const char *what, const struct field *fl,
                    struct relay_msg *m, char *err, size_t errlen)
{
    const struct relay__mp_tok *t = &fl->tok;

    if (!fl->present)
        return relay__err(err, errlen, RELAY_EINVAL, "%s: missing key", what);
    /* CBOR and msgpack clients may send the key as a byte string. */
    if (t->kind != RELAY__MP_STR && t->kind != RELAY__MP_BIN)
        return relay__err(err, errlen, RELAY_EINVAL, "%s: key must be a string",
                          what);
    m->key = malloc((size_t)t->n + 1);
    if (m->key == NULL)
        return relay__err(err, errlen, RELAY_ENOMEM, "out of memory");
    if (t->n > 0)
        memcpy(m->key, t->ptr, t->n);
    m->key[t->n] = '\0';
    m->key_len = t->n;
    return RELAY_OK;
}

/* Copies a field's canonical bytes, bounded by max (0: unbounded). */
static int take_bytes(const char *what, const uint8_t *f,
                      const struct field *fl, size_t max, uint8_t **out,
                      size_t *out_len, char *err, size_t errlen)
{
    size_t n = fl->end - fl->start;

    if (max != 0 && n > max)
        return relay__err(err, errlen, RELAY_ETOOBIG,
                          "%s is %zu bytes, limit %zu", what, n, max);
    *out = malloc(n);
    if (*out == NULL)
        return relay__err(err, errlen, RELAY_ENOMEM, "out of memory");
    memcpy(*out, f + fl->start, n);
    *out_len = n;
    return RELAY_OK;
}

static int parse_action(const uint8_t *f, size_t len, const struct field *fl,
                        struct relay_msg *m, char *err, size_t errlen)
{
    struct field a[A_COUNT];
    struct relay__mp_tok hdr;
    size_t pos = fl->start;
    size_t i;
    char q[48];

    if (!fl->present)
        return relay__err(err, errlen, RELAY_EINVAL, "push requires action");
    if (fl->tok.kind != RELAY__MP_MAP)
        return relay__err(err, errlen, RELAY_EINVAL,
                          "push: action must be an object");
    memset(a, 0, sizeof(a));
    if (relay__mp_next(f, len, &pos, &hdr) != RELAY__MP_OK ||
        read_fields(f, len, &pos, hdr.n, action_names, a, A_COUNT) != 0)
        return relay__err(err, errlen, RELAY_EINVAL, "push: bad action");
    if (!a[A_TYPE].present)
        return relay__err(err, errlen, RELAY_EINVAL,
                          "push: action missing type");
    if (a[A_TYPE].tok.kind != RELAY__MP_STR)
        return relay__err(err, errlen, RELAY_EINVAL,
                          "push: action type must be a string");
    for (i = 0; i < sizeof(action_types) / sizeof(action_types[0]); i++)
        if (tok_is(&a[A_TYPE].tok, action_types[i].name))
            break;
    if (i == sizeof(action_types) / sizeof(action_types[0])) {
        quote(q, sizeof(q), a[A_TYPE].tok.ptr, a[A_TYPE].tok.n);
        return relay__err(err, errlen, RELAY_EINVAL,
                          "push: invalid action type '%s'", q);
    }
    m->action = action_types[i].action;
    if (m->action == RELAY_ACT_COMPACT &&
        (!a[A_SEQ].present || !tok_to_seq(&a[A_SEQ].tok, &m->compact_seq)))
        return relay__err(err, errlen, RELAY_EINVAL,
                          "push: compact requires a non-negative integer seq");
    return RELAY_OK;
}

static int parse_push(const uint8_t *f, size_t len, const struct field *fl,
                      size_t max_value_len, struct relay_msg *m, char *err,
                      size_t errlen)
{
    int rc;

    m->type = RELAY_MSG_PUSH;
    if (!fl[F_KEY].present)
        return relay__err(err, errlen, RELAY_EINVAL, "push: missing key");
    if (fl[F_KEY].tok.kind != RELAY__MP_STR &&
        fl[F_KEY].tok.kind != RELAY__MP_BIN)
        return relay__err(err, errlen, RELAY_EINVAL,
                          "push: key must be a string");
    /* Any value, null included (the reference's value is any CBOR value);
     * only a push without the field is refused. */
    if (!fl[F_VALUE].present)
        return relay__err(err, errlen, RELAY_EINVAL, "push: missing value");
    rc = parse_action(f, len, &fl[F_ACTION], m, err, errlen);
    if (rc != RELAY_OK)
        return rc;
    rc = take_bytes("value", f, &fl[F_VALUE], max_value_len, &m->value,
                    &m->value_len, err, errlen);
    if (rc != RELAY_OK)
        return rc;
    return take_key("push", &fl[F_KEY], m, err, errlen);
}

static int parse_get(const struct field *fl, struct relay_msg *m, char *err,
                     size_t errlen)
{
    const struct field *seq = &fl[F_SEQ];

    m->type = RELAY_MSG_GET;
    if (!seq->present) {
        m->has_seq = true; /* absent means 0: replay everything */
        m->seq = 0;
    } else if (seq->tok.kind == RELAY__MP_NIL) {
        m->has_seq = false; /* subscribe without replay */
    } else if (tok_to_seq(&seq->tok, &m->seq)) {
        m->has_seq = true;
    } else {
        return relay__err(err, errlen, RELAY_EINVAL,
                          "get: seq must be a non-negative integer or null");
    }
    return take_key("get", &fl[F_KEY], m, err, errlen);
}

/* The reference's nonce is Option<u64>: missing and null (CBOR undefined
 * too) are None, any other non-integer makes the message ill-typed. */
static int parse_ping(const struct field *nonce, struct relay_msg *m, char *err,
                      size_t errlen)
{
    m->type = RELAY_MSG_PING;
    if (!nonce->present || nonce->tok.kind == RELAY__MP_NIL)
        return RELAY_OK;
    if (!tok_to_seq(&nonce->tok, &m->nonce))
        return relay__err(err, errlen, RELAY_EINVAL,
                          "ping: nonce must be a non-negative integer or null");
    m->has_nonce = true;
    return RELAY_OK;
}

static int parse_frame(const uint8_t *f, size_t len, size_t max_value_len,
                       struct relay_msg *m, char *err, size_t errlen)
{
    struct field fl[F_COUNT];
    struct relay__mp_tok hdr;
    const struct relay__mp_tok *type;
    size_t pos = 0;
    char q[48];

    if (relay__mp_next(f, len, &pos, &hdr) != RELAY__MP_OK)
        return relay__err(err, errlen, RELAY_EINVAL, "malformed message");
    if (hdr.kind != RELAY__MP_MAP)
        return relay__err(err, errlen, RELAY_EINVAL,
                          "message must be an object");
    memset(fl, 0, sizeof(fl));
    if (read_fields(f, len, &pos, hdr.n, frame_names, fl, F_COUNT) != 0)
        return relay__err(err, errlen, RELAY_EINVAL, "malformed message");
    type = &fl[F_TYPE].tok;
    if (!fl[F_TYPE].present)
        return relay__err(err, errlen, RELAY_EINVAL, "missing message type");
    if (type->kind != RELAY__MP_STR)
        return relay__err(err, errlen, RELAY_EINVAL,
                          "message type must be a string");
    if (tok_is(type, "push"))
        return parse_push(f, len, fl, max_value_len, m, err, errlen);
    if (tok_is(type, "get"))
        return parse_get(fl, m, err, errlen);
    if (tok_is(type, "ping"))
        return parse_ping(&fl[F_NONCE], m, err, errlen);
    quote(q, sizeof(q), type->ptr, type->n);
    return relay__err(err, errlen, RELAY_EINVAL, "unknown message type '%s'",
                      q);
}

int relay_msg_decode(enum relay_fmt fmt, const uint8_t *buf, size_t len,
                     size_t max_value_len, struct relay_msg *out, char *err,
                     size_t errlen)
{
    struct relay__buf f;
    int rc;

    memset(out, 0, sizeof(*out));
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (len == 0 || buf == NULL)
        return relay__err(err, errlen, RELAY_EINVAL, "empty message");
    /* The canonical frame is rarely much bigger than the input. */
    if (relay__buf_init(&f, 0, len + len / 4) != RELAY_OK)
        return relay__err(err, errlen, RELAY_ENOMEM, "out of memory");
    switch (fmt) {
    case RELAY_FMT_JSON:
        rc = relay__json_to_mp(buf, len, &f, err, errlen);
        break;
    case RELAY_FMT_CBOR:
        rc = relay__cbor_to_mp(buf, len, &f, err, errlen);
        break;
    case RELAY_FMT_MSGPACK:
        rc = relay__mp_normalize(buf, len, RELAY__FRAME_DEPTH, &f, err, errlen);
        break;
    default:
        rc = relay__err(err, errlen, RELAY_EINVAL, "unknown format %d",
                        (int)fmt);
        break;
    }
    if (rc == RELAY_OK && f.failed)
        rc = relay__err(err, errlen, RELAY_ENOMEM, "out of memory");
    if (rc == RELAY_OK)
        rc = parse_frame(f.data, f.len, max_value_len, out, err, errlen);
    relay__buf_free(&f);
    if (rc != RELAY_OK)
        relay_msg_free(out);
    return rc;
}

void relay_msg_free(struct relay_msg *m)
{
    if (m == NULL)
        return;
    free(m->key);
    free(m->value);
    memset(m, 0, sizeof(*m));
}

/* ---- encoding: server -> client messages --------------------------------- */

struct enc {
    enum relay_fmt fmt;
    size_t headroom;
    struct relay__buf b;
    msgpack_packer pk;
};

static int enc_begin(struct enc *e, enum relay_fmt fmt, size_t headroom,
                     size_t hint)
{
    e->fmt = fmt;
    e->headroom = headroom;
    if (fmt != RELAY_FMT_JSON && fmt != RELAY_FMT_CBOR &&
        fmt != RELAY_FMT_MSGPACK)
        return RELAY_EINVAL;
    if (relay__buf_init(&e->b, headroom, hint) != RELAY_OK)
        return RELAY_ENOMEM;
    relay__buf_packer(&e->b, &e->pk);
    return RELAY_OK;
}

static void enc_map(struct enc *e, size_t n)
{
    if (e->fmt == RELAY_FMT_JSON)
        relay__buf_byte(&e->b, '{');
    else if (e->fmt == RELAY_FMT_CBOR)
        relay__cbor_map(&e->b, n);
    else
        msgpack_pack_map(&e->pk, n);
}

static void enc_array(struct enc *e, size_t n)
{
    if (e->fmt == RELAY_FMT_JSON)
        relay__buf_byte(&e->b, '[');
    else if (e->fmt == RELAY_FMT_CBOR)
        relay__cbor_array(&e->b, n);
    else if (n > UINT32_MAX)
        e->b.failed = true; /* unrepresentable; reported as ENOMEM */
    else
        msgpack_pack_array(&e->pk, n);
}

/* Closes a map or array; only JSON has closers. */
static void enc_close(struct enc *e, char c)
{
    if (e->fmt == RELAY_FMT_JSON)
        relay__buf_byte(&e->b, (uint8_t)c);
}

/* Between fields and between array items; only JSON has separators. */
static void enc_sep(struct enc *e)
{
    if (e->fmt == RELAY_FMT_JSON)
        relay__buf_byte(&e->b, ',');
}

static void enc_text(struct enc *e, const void *s, size_t n)
{
    if (e->fmt == RELAY_FMT_JSON) {
        relay__json_str(&e->b, s, n);
    } else if (e->fmt == RELAY_FMT_CBOR) {
        relay__cbor_text(&e->b, s, n);
    } else if (n > UINT32_MAX) {
        e->b.failed = true; /* unrepresentable; reported as ENOMEM */
    } else if (relay__utf8_valid(s, n)) {
        msgpack_pack_str_with_body(&e->pk, s, n);
    } else {
        msgpack_pack_bin_with_body(&e->pk, s, n);
    }
}

/* A field name: a plain ASCII constant. */
static void enc_name(struct enc *e, const char *name)
{
    enc_text(e, name, strlen(name));
    if (e->fmt == RELAY_FMT_JSON)
        relay__buf_byte(&e->b, ':');
}

static void enc_uint(struct enc *e, uint64_t u)
{
    if (e->fmt == RELAY_FMT_JSON)
        relay__json_u64(&e->b, u);
    else if (e->fmt == RELAY_FMT_CBOR)
        relay__cbor_uint(&e->b, u);
    else
        msgpack_pack_uint64(&e->pk, u);
}

static int enc_value(struct enc *e, const uint8_t *v, size_t n)
{
    if (v == NULL || n == 0)
        return RELAY_EINVAL;
    if (e->fmt == RELAY_FMT_JSON)
        return relay__mp_to_json(&e->b, v, n);
    if (e->fmt == RELAY_FMT_CBOR)
        return relay__mp_to_cbor(&e->b, v, n);
    /* Canonical already: copy, after making sure it is one whole item so a
     * corrupt value cannot desynchronise the client's parser. */
    if (!relay__mp_is_one_item(v, n))
        return RELAY_EINVAL;
    relay__buf_put(&e->b, v, n);
    return RELAY_OK;
}

static void enc_type(struct enc *e, size_t fields, const char *type)
{
    enc_map(e, fields);
    enc_name(e, "type");
    enc_text(e, type, strlen(type));
}

static void enc_key(struct enc *e, const char *key, size_t key_len)
{
    enc_sep(e);
    enc_name(e, "key");
    enc_text(e, key, key_len);
}

static int enc_finish(struct enc *e, int rc, uint8_t **out, size_t *len)
{
    if (rc == RELAY_OK && e->b.failed)
        rc = RELAY_ENOMEM;
    if (rc != RELAY_OK) {
        relay__buf_free(&e->b);
        *out = NULL;
        *len = 0;
        return rc;
    }
    *out = e->b.data;
    *len = e->b.len - e->headroom;
    return RELAY_OK;
}

/* Sizes add up from client-bounded lengths; saturate instead of wrapping. */
static size_t add_sat(size_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

int relay_enc_push(enum relay_fmt fmt, size_t headroom, const char *key,
                   size_t key_len, const uint8_t *value, size_t value_len,
                   uint64_t seq, uint8_t **out, size_t *len)
{
    struct enc e;
    int rc;

    *out = NULL;
    *len = 0;
    rc = enc_begin(&e, fmt, headroom,
                   add_sat(add_sat(key_len, value_len), value_len / 2 + 64));
    if (rc != RELAY_OK)
        return rc;
    enc_type(&e, 4, "push");
    enc_key(&e, key, key_len);
    enc_sep(&e);
    enc_name(&e, "value");
    rc = enc_value(&e, value, value_len);
    enc_sep(&e);
    enc_name(&e, "seq");
    enc_uint(&e, seq);
    enc_close(&e, '}');
    return enc_finish(&e, rc, out, len);
}

int relay_enc_init(enum relay_fmt fmt, size_t headroom, const char *key,
                   size_t key_len, const struct relay_entry *entries, size_t n,
                   uint8_t **out, size_t *len)
{
    struct enc e;
    size_t hint = add_sat(key_len, 64);
    int rc = RELAY_OK;

    *out = NULL;
    *len = 0;
    if (n > 0 && entries == NULL)
        return RELAY_EINVAL;
    for (size_t i = 0; i < n; i++)
        hint = add_sat(hint, add_sat(entries[i].value_len, 32));
    rc = enc_begin(&e, fmt, headroom, hint);
    if (rc != RELAY_OK)
        return rc;
    enc_type(&e, 3, "init");
    enc_key(&e, key, key_len);
    enc_sep(&e);
    enc_name(&e, "data");
    enc_array(&e, n);
    for (size_t i = 0; i < n && rc == RELAY_OK; i++) {
        if (i > 0)
            enc_sep(&e);
        enc_map(&e, 2);
        enc_name(&e, "value");
        rc = enc_value(&e, entries[i].value, entries[i].value_len);
        enc_sep(&e);
        enc_name(&e, "seq");
        enc_uint(&e, entries[i].seq);
        enc_close(&e, '}');
    }
    enc_close(&e, ']');
    enc_close(&e, '}');
    return enc_finish(&e, rc, out, len);
}

int relay_enc_stream_size(enum relay_fmt fmt, size_t headroom, const char *key,
                          size_t key_len, uint64_t size, uint8_t **out,
                          size_t *len)
{
    struct enc e;
    int rc;

    *out = NULL;
    *len = 0;
    rc = enc_begin(&e, fmt, headroom, add_sat(key_len, 64));
    if (rc != RELAY_OK)
        return rc;
    enc_type(&e, 3, "stream_size");
    enc_key(&e, key, key_len);
    enc_sep(&e);
    enc_name(&e, "size");
    enc_uint(&e, size);
    enc_close(&e, '}');
    return enc_finish(&e, RELAY_OK, out, len);
}

int relay_enc_pong(enum relay_fmt fmt, size_t headroom, bool has_nonce,
                   uint64_t nonce, uint8_t **out, size_t *len)
{
    static const uint8_t nil = 0xc0; /* canonical msgpack null */
    struct enc e;
    int rc;

    *out = NULL;
    *len = 0;
    rc = enc_begin(&e, fmt, headroom, 64);
    if (rc != RELAY_OK)
        return rc;
    /* The reference serialises its Option<u64> as null when absent. */
    enc_type(&e, 2, "pong");
    enc_sep(&e);
    enc_name(&e, "nonce");
    if (has_nonce)
        enc_uint(&e, nonce);
    else
        rc = enc_value(&e, &nil, 1);
    enc_close(&e, '}');
    return enc_finish(&e, rc, out, len);
}

int relay_enc_error(enum relay_fmt fmt, size_t headroom, const char *message,
                    uint8_t **out, size_t *len)
{
    struct enc e;
    size_t n = message != NULL ? strlen(message) : 0;
    int rc;

    *out = NULL;
    *len = 0;
    rc = enc_begin(&e, fmt, headroom, add_sat(n, n / 4 + 32));
    if (rc != RELAY_OK)
        return rc;
    enc_type(&e, 2, "error");
    enc_sep(&e);
    enc_name(&e, "message");
    enc_text(&e, message != NULL ? message : "", n);
    enc_close(&e, '}');
    return enc_finish(&e, RELAY_OK, out, len);
}

int relay_value_to_json(const uint8_t *value, size_t len, char **out,
                        size_t *out_len)
{
    struct relay__buf b;
    int rc;

    *out = NULL;
    *out_len = 0;
    if (value == NULL || len == 0)
        return RELAY_EINVAL;
    if (relay__buf_init(&b, 0, add_sat(len, len / 2 + 16)) != RELAY_OK)
        return RELAY_ENOMEM;
    rc = relay__mp_to_json(&b, value, len);
    relay__buf_byte(&b, '\0');
    if (rc == RELAY_OK && b.failed)
        rc = RELAY_ENOMEM;
    if (rc != RELAY_OK) {
        relay__buf_free(&b);
        return rc;
    }
    *out = (char *)b.data;
    *out_len = b.len - 1;
    return RELAY_OK;
}
