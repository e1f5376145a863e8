/*
 * codec_cbor.c - CBOR client frames <-> canonical msgpack.
 *
 * Input: libcbor's stateless streaming decoder (cbor_stream_decode) reads
 * one item head per call and reports it through callbacks; those write
 * msgpack straight into the output buffer while an explicit stack of at most
 * RELAY__FRAME_DEPTH levels tracks open containers. Nothing recurses and
 * nothing is allocated per item, so hostile nesting costs one level check,
 * not stack or a tree (cbor_load would build a tree and free it
 * recursively). Indefinite-length arrays, maps and strings get a 32-bit
 * msgpack header that is patched at their break; a frame that had any is
 * then re-packed by relay__mp_normalize so the stored value is canonical.
 *
 * What the real client (node-cbor via cbor-web) sends and how it maps:
 * floats of any width (half and single become float32, double float64);
 * Uint8Array as tag 64 around a byte string, other typed arrays as tags
 * 65-87 around a byte string: tags are dropped, so all become byte strings;
 * BigInt as tag 2/3 bignums: those that fit int64/uint64 become integers
 * (negatives below int64 a float64), longer ones stay byte strings;
 * undefined becomes nil. Every other tag is dropped and its item kept.
 * Text strings must be valid UTF-8 (as JSON text must).
 * libcbor itself refuses the one-byte tags 6-20 and unassigned simple values.
 *
 * Output: a flat walk of the msgpack tokens writes CBOR heads with libcbor's
 * cbor_encode_* functions: definite lengths, smallest integers, float32 kept
 * as single, float64 as double, byte strings untagged, text that is not
 * valid UTF-8 as a byte string (CBOR text must be UTF-8).
 *
 * Not here: the message schema (codec.c).
 */
#include <cbor.h>

#include "codec_internal.h"

/* ---- input --------------------------------------------------------------- */

struct clevel {
    uint64_t left;  /* definite: items still to come */
    uint64_t count; /* indefinite: items seen so far */
    size_t hdr;     /* indefinite: offset of the header to patch */
    bool indef;
    bool map;
};

struct cdec {
    struct relay__buf *o;
    msgpack_packer pk;
    struct clevel st[RELAY__FRAME_DEPTH];
    int top;
    bool in_str; /* inside an indefinite string: only chunks or break */
    bool str_text;
    size_t str_hdr;
    uint64_t str_len;
    bool has_tag; /* a tag was read; its item comes next */
    uint64_t tag;
    bool done;    /* the top-level item is complete */
    bool patched; /* wrote a 32-bit header for an indefinite item */
    int rc;
    const char *why;
};

static void fail(struct cdec *c, int rc, const char *why)
{
    if (c->rc == RELAY_OK) {
        c->rc = rc;
        c->why = why;
    }
}

/* Counts an item that starts in its parent. False once decoding failed. */
static bool begin_item(struct cdec *c)
{
    if (c->rc != RELAY_OK)
        return false;
    if (c->in_str) {
        fail(c, RELAY_EINVAL,
             "indefinite string chunk is not a definite string of its type");
        return false;
    }
    c->has_tag = false;
    if (c->top > 0) {
        struct clevel *l = &c->st[c->top - 1];

        if (l->indef)
            l->count++;
        else
            l->left--;
    }
    return true;
}

/* After a complete item: closes the definite containers it completed. */
static void end_item(struct cdec *c)
{
    while (c->top > 0 && !c->st[c->top - 1].indef &&
           c->st[c->top - 1].left == 0)
        c->top--;
    if (c->top == 0)
        c->done = true;
}

static void patch32(struct cdec *c, size_t at, uint64_t v)
{
    uint8_t *p;

    if (v > UINT32_MAX) {
        fail(c, RELAY_EINVAL, "indefinite item too long");
        return;
    }
    if (c->o->failed)
        return;
    p = c->o->data + at + 1;
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put_hdr32(struct cdec *c, uint8_t type)
{
    const uint8_t h[5] = {type, 0, 0, 0, 0};

    relay__buf_put(c->o, h, sizeof(h));
    c->patched = true;
}

static void on_uint(struct cdec *c, uint64_t v)
{
    if (!begin_item(c))
        return;
    msgpack_pack_uint64(&c->pk, v);
    end_item(c);
}

/* CBOR negative integers are -1 - n for n up to 2^64 - 1. */
static void pack_negint(struct cdec *c, uint64_t n)
{
    if (n <= INT64_MAX)
        msgpack_pack_int64(&c->pk, -1 - (int64_t)n);
    else
        msgpack_pack_double(&c->pk, -1.0 - (double)n); /* below int64 */
}

static void on_negint(struct cdec *c, uint64_t n)
{
    if (!begin_item(c))
        return;
    pack_negint(c, n);
    end_item(c);
}

/* A bignum's magnitude when it fits 64 bits. */
static bool bignum(const uint8_t *d, size_t n, uint64_t *v)
{
    while (n > 0 && *d == 0) {
        d++;
        n--;
    }
    if (n > 8)
        return false;
    *v = 0;
    for (size_t i = 0; i < n; i++)
        *v = *v << 8 | d[i];
    return true;
}

static void on_string(struct cdec *c, const uint8_t *d, size_t n, bool text)
{
    uint64_t tag = c->tag;
    bool tagged = c->has_tag;
    uint64_t v;

    if (c->rc != RELAY_OK)
        return;
    /* RFC 8949 section 3.1: text is UTF-8, and so is each chunk of an
     * indefinite one. Taken as is, it would be stored as a msgpack str
     * that the CBOR writer could only send back as a byte string. */
    if (text && !relay__utf8_valid(d, n)) {
        fail(c, RELAY_EINVAL, "text string is not valid UTF-8");
        return;
    }
    if (c->in_str) {
        if (c->has_tag || text != c->str_text) {
            fail(c, RELAY_EINVAL,
                 "indefinite string chunk is not a "
                 "definite string of its type");
            return;
        }
        c->str_len += n;
        if (c->str_len > UINT32_MAX) {
            fail(c, RELAY_EINVAL, "string too long");
            return;
        }
        relay__buf_put(c->o, d, n);
        return;
    }
    if (!begin_item(c))
        return;
    if (!text && tagged && (tag == 2 || tag == 3) && bignum(d, n, &v)) {
        if (tag == 2)
            msgpack_pack_uint64(&c->pk, v);
        else
            pack_negint(c, v);
    } else if (n > UINT32_MAX) {
        fail(c, RELAY_EINVAL, "string too long");
        return;
    } else if (text) {
        msgpack_pack_str_with_body(&c->pk, d, n);
    } else {
        msgpack_pack_bin_with_body(&c->pk, d, n);
    }
    end_item(c);
}

static void on_string_start(struct cdec *c, bool text)
{
    if (!begin_item(c))
        return;
    c->in_str = true;
    c->str_text = text;
    c->str_len = 0;
    c->str_hdr = c->o->len;
    put_hdr32(c, text ? 0xdb : 0xc6); /* str32 / bin32 */
}

static void on_container(struct cdec *c, bool map, bool indef, size_t n)
{
    struct clevel *l;

    if (!begin_item(c))
        return;
    if (c->top >= RELAY__FRAME_DEPTH) {
        fail(c, RELAY_EDEPTH, "too deep");
        return;
    }
    l = &c->st[c->top];
    memset(l, 0, sizeof(*l));
    l->map = map;
    if (indef) {
        l->indef = true;
        l->hdr = c->o->len;
        put_hdr32(c, map ? 0xdf : 0xdd); /* map32 / array32 */
        c->top++;
        return;
    }
    if (n > UINT32_MAX) {
        fail(c, RELAY_EINVAL, "too many items");
        return;
    }
    if (map)
        msgpack_pack_map(&c->pk, n);
    else
        msgpack_pack_array(&c->pk, n);
    if (n == 0) {
        end_item(c);
        return;
    }
    l->left = map ? 2 * (uint64_t)n : n;
    c->top++;
}

static void on_break(struct cdec *c)
{
    struct clevel *l;

    if (c->rc != RELAY_OK)
        return;
    if (c->has_tag) {
        fail(c, RELAY_EINVAL, "tag without an item");
        return;
    }
    if (c->in_str) {
        c->in_str = false;
        patch32(c, c->str_hdr, c->str_len);
        end_item(c);
        return;
    }
    if (c->top == 0 || !c->st[c->top - 1].indef) {
        fail(c, RELAY_EINVAL, "unexpected break");
        return;
    }
    l = &c->st[c->top - 1];
    if (l->map && (l->count & 1)) {
        fail(c, RELAY_EINVAL, "map key without a value");
        return;
    }
    patch32(c, l->hdr, l->map ? l->count / 2 : l->count);
    c->top--;
    end_item(c);
}

static void on_tag(struct cdec *c, uint64_t tag)
{
    if (c->rc != RELAY_OK)
        return;
    if (c->in_str) {
        fail(c, RELAY_EINVAL, "tag inside an indefinite string");
        return;
    }
    /* Nested tags: the innermost one describes the item. */
    c->has_tag = true;
    c->tag = tag;
}

static void on_float(struct cdec *c, float f)
{
    if (!begin_item(c))
        return;
    msgpack_pack_float(&c->pk, f);
    end_item(c);
}

/* The callback shims libcbor calls; ctx is our struct cdec. */
static void cb_uint8(void *ctx, uint8_t v)
{
    on_uint(ctx, v);
}
static void cb_uint16(void *ctx, uint16_t v)
{
    on_uint(ctx, v);
}
static void cb_uint32(void *ctx, uint32_t v)
{
    on_uint(ctx, v);
}
static void cb_uint64(void *ctx, uint64_t v)
{
    on_uint(ctx, v);
}
static void cb_negint8(void *ctx, uint8_t v)
{
    on_negint(ctx, v);
}
static void cb_negint16(void *ctx, uint16_t v)
{
    on_negint(ctx, v);
}
static void cb_negint32(void *ctx, uint32_t v)
{
    on_negint(ctx, v);
}
static void cb_negint64(void *ctx, uint64_t v)
{
    on_negint(ctx, v);
}
static void cb_bytes(void *ctx, cbor_data d, size_t n)
{
    on_string(ctx, d, n, false);
}
static void cb_bytes_start(void *ctx)
{
    on_string_start(ctx, false);
}
static void cb_text(void *ctx, cbor_data d, size_t n)
{
    on_string(ctx, d, n, true);
}
static void cb_text_start(void *ctx)
{
    on_string_start(ctx, true);
}
static void cb_array(void *ctx, size_t n)
{
    on_container(ctx, false, false, n);
}
static void cb_indef_array(void *ctx)
{
    on_container(ctx, false, true, 0);
}
static void cb_map(void *ctx, size_t n)
{
    on_container(ctx, true, false, n);
}
static void cb_indef_map(void *ctx)
{
    on_container(ctx, true, true, 0);
}
static void cb_tag(void *ctx, uint64_t tag)
{
    on_tag(ctx, tag);
}
static void cb_float(void *ctx, float f)
{
    on_float(ctx, f);
}
static void cb_double(void *ctx, double d)
{
    struct cdec *c = ctx;

    if (!begin_item(c))
        return;
    msgpack_pack_double(&c->pk, d);
    end_item(c);
}
static void cb_null(void *ctx)
{
    struct cdec *c = ctx;

    /* undefined too: msgpack has no such value */
    if (!begin_item(c))
        return;
    msgpack_pack_nil(&c->pk);
    end_item(c);
}
static void cb_bool(void *ctx, bool b)
{
    struct cdec *c = ctx;

    if (!begin_item(c))
        return;
    if (b)
        msgpack_pack_true(&c->pk);
    else
        msgpack_pack_false(&c->pk);
    end_item(c);
}
static void cb_break(void *ctx)
{
    on_break(ctx);
}

static const struct cbor_callbacks callbacks = {
    .uint8 = cb_uint8,
    .uint16 = cb_uint16,
    .uint32 = cb_uint32,
    .uint64 = cb_uint64,
    .negint8 = cb_negint8,
    .negint16 = cb_negint16,
    .negint32 = cb_negint32,
    .negint64 = cb_negint64,
    .byte_string_start = cb_bytes_start,
    .byte_string = cb_bytes,
    .string = cb_text,
    .string_start = cb_text_start,
    .indef_array_start = cb_indef_array,
    .array_start = cb_array,
    .indef_map_start = cb_indef_map,
    .map_start = cb_map,
    .tag = cb_tag,
    .float2 = cb_float,
    .float4 = cb_float,
    .float8 = cb_double,
    .undefined = cb_null,
    .null = cb_null,
    .boolean = cb_bool,
    .indef_break = cb_break,
};

int relay__cbor_to_mp(const uint8_t *buf, size_t len, struct relay__buf *out,
                      char *err, size_t errlen)
{
    struct cdec c;
    size_t base = out->len;
    size_t pos = 0;

    memset(&c, 0, sizeof(c));
    c.o = out;
    relay__buf_packer(out, &c.pk);
    while (!c.done) {
        struct cbor_decoder_result r;

        if (pos >= len)
            return relay__err(err, errlen, RELAY_EINVAL,
                              "invalid CBOR: truncated at byte %zu", pos);
        r = cbor_stream_decode(buf + pos, len - pos, &callbacks, &c);
        if (c.rc == RELAY_EDEPTH)
            return relay__err(err, errlen, c.rc,
                              "value nested deeper than %d levels",
                              RELAY_MAX_DEPTH);
        if (c.rc != RELAY_OK)
            return relay__err(err, errlen, c.rc, "invalid CBOR at byte %zu: %s",
                              pos, c.why);
        if (r.status == CBOR_DECODER_NEDATA)
            return relay__err(err, errlen, RELAY_EINVAL,
                              "invalid CBOR: truncated at byte %zu", pos);
        if (r.status != CBOR_DECODER_FINISHED || r.read == 0)
            return relay__err(err, errlen, RELAY_EINVAL,
                              "invalid CBOR at byte %zu: unsupported byte "
                              "0x%02x",
                              pos, buf[pos]);
        if (out->failed)
            return relay__err(err, errlen, RELAY_ENOMEM, "out of memory");
        pos += r.read;
    }
    if (pos != len)
        return relay__err(err, errlen, RELAY_EINVAL,
                          "invalid CBOR: %zu trailing bytes", len - pos);
    if (c.patched) {
        /* Indefinite items left 32-bit headers: re-pack canonically. */
        struct relay__buf tmp;
        int rc;

        if (relay__buf_init(&tmp, 0, out->len - base) != RELAY_OK)
            return relay__err(err, errlen, RELAY_ENOMEM, "out of memory");
        rc = relay__mp_normalize(out->data + base, out->len - base,
                                 RELAY__FRAME_DEPTH, &tmp, err, errlen);
        if (rc == RELAY_OK) {
            out->len = base;
            relay__buf_put(out, tmp.data, tmp.len);
        }
        relay__buf_free(&tmp);
        if (rc != RELAY_OK)
            return rc;
    }
    return RELAY_OK;
}

/* ---- output -------------------------------------------------------------- */

/* A CBOR head is at most 9 bytes; libcbor writes it in place and returns
 * its length (0 only when the room given is too small, which reserve
 * rules out). */
#define HEAD_MAX 9

void relay__cbor_uint(struct relay__buf *o, uint64_t u)
{
    if (relay__buf_reserve(o, HEAD_MAX))
        o->len += cbor_encode_uint(u, o->data + o->len, o->cap - o->len);
}

static void put_negint(struct relay__buf *o, int64_t i)
{
    /* CBOR stores -1 - i; INT64_MIN maps to INT64_MAX without overflow. */
    uint64_t n = (uint64_t)(-(i + 1));

    if (relay__buf_reserve(o, HEAD_MAX))
        o->len += cbor_encode_negint(n, o->data + o->len, o->cap - o->len);
}

void relay__cbor_map(struct relay__buf *o, size_t n)
{
    if (relay__buf_reserve(o, HEAD_MAX))
        o->len += cbor_encode_map_start(n, o->data + o->len, o->cap - o->len);
}

void relay__cbor_array(struct relay__buf *o, size_t n)
{
    if (relay__buf_reserve(o, HEAD_MAX))
        o->len += cbor_encode_array_start(n, o->data + o->len, o->cap - o->len);
}

static void put_bytes(struct relay__buf *o, const uint8_t *s, size_t n)
{
    if (!relay__buf_reserve(o, HEAD_MAX))
        return;
    o->len +=
        cbor_encode_bytestring_start(n, o->data + o->len, o->cap - o->len);
    relay__buf_put(o, s, n);
}

void relay__cbor_text(struct relay__buf *o, const uint8_t *s, size_t n)
{
    if (!relay__utf8_valid(s, n)) {
        put_bytes(o, s, n);
        return;
    }
    if (!relay__buf_reserve(o, HEAD_MAX))
        return;
    o->len += cbor_encode_string_start(n, o->data + o->len, o->cap - o->len);
    relay__buf_put(o, s, n);
}

int relay__mp_to_cbor(struct relay__buf *o, const uint8_t *v, size_t len)
{
    uint64_t left = 1; /* items still to convert; each costs >= 1 byte */
    size_t pos = 0;

    while (left > 0) {
        struct relay__mp_tok t;

        if (relay__mp_next(v, len, &pos, &t) != RELAY__MP_OK)
            return RELAY_EINVAL;
        left--;
        if (!relay__buf_reserve(o, HEAD_MAX))
            return RELAY_ENOMEM;
        switch (t.kind) {
        case RELAY__MP_NIL:
            o->len += cbor_encode_null(o->data + o->len, o->cap - o->len);
            break;
        case RELAY__MP_BOOL:
            o->len += cbor_encode_bool(t.b, o->data + o->len, o->cap - o->len);
            break;
        case RELAY__MP_UINT:
            relay__cbor_uint(o, t.u);
            break;
        case RELAY__MP_INT:
            put_negint(o, t.i);
            break;
        case RELAY__MP_F32:
            o->len +=
                cbor_encode_single(t.f, o->data + o->len, o->cap - o->len);
            break;
        case RELAY__MP_F64:
            o->len +=
                cbor_encode_double(t.d, o->data + o->len, o->cap - o->len);
            break;
        case RELAY__MP_STR:
            relay__cbor_text(o, t.ptr, t.n);
            break;
        case RELAY__MP_BIN:
        case RELAY__MP_EXT: /* no CBOR equivalent: its data as bytes */
            put_bytes(o, t.ptr, t.n);
            break;
        case RELAY__MP_ARRAY:
            relay__cbor_array(o, t.n);
            left += t.n;
            break;
        case RELAY__MP_MAP:
            relay__cbor_map(o, t.n);
            left += 2 * (uint64_t)t.n;
            break;
        }
    }
    if (pos != len)
        return RELAY_EINVAL;
    return o->failed ? RELAY_ENOMEM : RELAY_OK;
}
