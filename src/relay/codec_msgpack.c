/*
 * codec_msgpack.c - msgpack token reader and the msgpack client format.
 *
 * The reader decodes one item header at a time from a byte range and is the
 * basis of every walk over canonical values (schema, JSON and CBOR output),
 * so those walks allocate nothing and keep at most a fixed per-level stack.
 * Canonical bytes are written with msgpack-c's packer (relay__buf_packer).
 *
 * Client msgpack frames are re-packed canonically by relay__mp_normalize,
 * which also validates them and bounds their depth. We do not use
 * msgpack-c's unpacker for this: its fixed parse stack
 * (MSGPACK_EMBED_STACK_SIZE, 32) counts the frame map too, so it would
 * allow one level less than the JSON and CBOR paths and report the overflow
 * as a generic error; and it builds an object tree we would only walk once.
 *
 * Not here: the message schema (codec.c).
 */
#include "codec_internal.h"

static uint16_t load16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t load32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

static uint64_t load64(const uint8_t *p)
{
    return (uint64_t)load32(p) << 32 | load32(p + 4);
}

/* Integer from a signed wire format: non-negative ones read as UINT, so a
 * value has one kind whatever encoding the sender picked. */
static void set_signed(struct relay__mp_tok *t, int64_t v)
{
    if (v >= 0) {
        t->kind = RELAY__MP_UINT;
        t->u = (uint64_t)v;
    } else {
        t->kind = RELAY__MP_INT;
        t->i = v;
    }
}

int relay__mp_next(const uint8_t *p, size_t len, size_t *pos,
                   struct relay__mp_tok *t)
{
    size_t at = *pos;
    size_t avail;
    size_t hdr = 1;  /* header bytes, type byte included */
    size_t body = 0; /* payload bytes after the header */
    uint8_t c;

    if (at >= len)
        return RELAY__MP_TRUNC;
    avail = len - at;
    c = p[at];
    memset(t, 0, sizeof(*t));

#define NEED(n)                                                                \
    do {                                                                       \
        if (avail < (size_t)(n))                                               \
            return RELAY__MP_TRUNC;                                            \
    } while (0)

    if (c <= 0x7f) {
        t->kind = RELAY__MP_UINT;
        t->u = c;
    } else if (c <= 0x8f) {
        t->kind = RELAY__MP_MAP;
        t->n = c & 0x0fu;
    } else if (c <= 0x9f) {
        t->kind = RELAY__MP_ARRAY;
        t->n = c & 0x0fu;
    } else if (c <= 0xbf) {
        t->kind = RELAY__MP_STR;
        t->n = c & 0x1fu;
        body = t->n;
    } else if (c >= 0xe0) {
        t->kind = RELAY__MP_INT;
        t->i = (int8_t)c;
    } else {
        const uint8_t *q = p + at + 1;

        switch (c) {
        case 0xc0:
            t->kind = RELAY__MP_NIL;
            break;
        case 0xc2:
        case 0xc3:
            t->kind = RELAY__MP_BOOL;
            t->b = c == 0xc3;
            break;
        case 0xc4:
        case 0xd9:
            NEED(2);
            hdr = 2;
            t->n = q[0];
            break;
        case 0xc5:
        case 0xda:
            NEED(3);
            hdr = 3;
            t->n = load16(q);
            break;
        case 0xc6:
        case 0xdb:
            NEED(5);
            hdr = 5;
            t->n = load32(q);
            break;
        case 0xc7:
            NEED(3);
            hdr = 3;
            t->n = q[0];
            t->ext_type = (int8_t)q[1];
            break;
        case 0xc8:
            NEED(4);
            hdr = 4;
            t->n = load16(q);
            t->ext_type = (int8_t)q[2];
            break;
        case 0xc9:
            NEED(6);
            hdr = 6;
            t->n = load32(q);
            t->ext_type = (int8_t)q[4];
            break;
        case 0xca: {
            uint32_t bits;

            NEED(5);
            hdr = 5;
            bits = load32(q);
            t->kind = RELAY__MP_F32;
            memcpy(&t->f, &bits, sizeof(t->f));
            break;
        }
        case 0xcb: {
            uint64_t bits;

            NEED(9);
            hdr = 9;
            bits = load64(q);
            t->kind = RELAY__MP_F64;
            memcpy(&t->d, &bits, sizeof(t->d));
            break;
        }
        case 0xcc:
            NEED(2);
            hdr = 2;
            t->kind = RELAY__MP_UINT;
            t->u = q[0];
            break;
        case 0xcd:
            NEED(3);
            hdr = 3;
            t->kind = RELAY__MP_UINT;
            t->u = load16(q);
            break;
        case 0xce:
            NEED(5);
            hdr = 5;
            t->kind = RELAY__MP_UINT;
            t->u = load32(q);
            break;
        case 0xcf:
            NEED(9);
            hdr = 9;
            t->kind = RELAY__MP_UINT;
            t->u = load64(q);
            break;
        case 0xd0:
            NEED(2);
            hdr = 2;
            set_signed(t, (int8_t)q[0]);
            break;
        case 0xd1:
            NEED(3);
            hdr = 3;
            set_signed(t, (int16_t)load16(q));
            break;
        case 0xd2:
            NEED(5);
            hdr = 5;
            set_signed(t, (int32_t)load32(q));
            break;
        case 0xd3:
            NEED(9);
            hdr = 9;
            set_signed(t, (int64_t)load64(q));
            break;
        case 0xd4:
        case 0xd5:
        case 0xd6:
        case 0xd7:
        case 0xd8:
            NEED(2);
            hdr = 2;
            t->n = 1u << (c - 0xd4);
            t->ext_type = (int8_t)q[0];
            break;
        case 0xdc:
            NEED(3);
            hdr = 3;
            t->kind = RELAY__MP_ARRAY;
            t->n = load16(q);
            break;
        case 0xdd:
            NEED(5);
            hdr = 5;
            t->kind = RELAY__MP_ARRAY;
            t->n = load32(q);
            break;
        case 0xde:
            NEED(3);
            hdr = 3;
            t->kind = RELAY__MP_MAP;
            t->n = load16(q);
            break;
        case 0xdf:
            NEED(5);
            hdr = 5;
            t->kind = RELAY__MP_MAP;
            t->n = load32(q);
            break;
        default: /* 0xc1: never used */
            return RELAY__MP_BAD;
        }
        if (c == 0xc4 || c == 0xc5 || c == 0xc6) {
            t->kind = RELAY__MP_BIN;
            body = t->n;
        } else if (c == 0xd9 || c == 0xda || c == 0xdb) {
            t->kind = RELAY__MP_STR;
            body = t->n;
        } else if ((c >= 0xc7 && c <= 0xc9) || (c >= 0xd4 && c <= 0xd8)) {
            t->kind = RELAY__MP_EXT;
            body = t->n;
        }
    }
#undef NEED
    if (avail < hdr || avail - hdr < body)
        return RELAY__MP_TRUNC;
    if (body > 0 || t->kind == RELAY__MP_STR || t->kind == RELAY__MP_BIN ||
        t->kind == RELAY__MP_EXT)
        t->ptr = p + at + hdr;
    *pos = at + hdr + body;
    return RELAY__MP_OK;
}

int relay__mp_skip(const uint8_t *p, size_t len, size_t *pos)
{
    uint64_t left = 1; /* items still to read; every one costs >= 1 byte */
    size_t at = *pos;

    while (left > 0) {
        struct relay__mp_tok t;
        int rc = relay__mp_next(p, len, &at, &t);

        if (rc != RELAY__MP_OK)
            return rc;
        left--;
        if (t.kind == RELAY__MP_ARRAY)
            left += t.n;
        else if (t.kind == RELAY__MP_MAP)
            left += 2 * (uint64_t)t.n;
    }
    *pos = at;
    return RELAY__MP_OK;
}

int relay__mp_skip_value(const uint8_t *p, size_t len, size_t *pos)
{
    /* Items still to read at each open level; level 0 is the value. */
    uint64_t left[RELAY_MAX_DEPTH + 1];
    int depth = 0;
    size_t at = *pos;

    left[0] = 1;
    while (depth > 0 || left[0] > 0) {
        struct relay__mp_tok t;
        int rc = relay__mp_next(p, len, &at, &t);

        if (rc != RELAY__MP_OK)
            return rc;
        left[depth]--;
        if (t.kind == RELAY__MP_ARRAY || t.kind == RELAY__MP_MAP) {
            if (depth == RELAY_MAX_DEPTH)
                return RELAY__MP_BAD;
            if (t.n > 0)
                left[++depth] =
                    t.kind == RELAY__MP_MAP ? 2 * (uint64_t)t.n : t.n;
        }
        while (depth > 0 && left[depth] == 0)
            depth--;
    }
    *pos = at;
    return RELAY__MP_OK;
}

bool relay__mp_is_one_item(const uint8_t *p, size_t len)
{
    size_t pos = 0;

    return relay__mp_skip(p, len, &pos) == RELAY__MP_OK && pos == len;
}

int relay__mp_normalize(const uint8_t *in, size_t len, int max_depth,
                        struct relay__buf *out, char *err, size_t errlen)
{
    /* Items still to read at each open container level. */
    uint64_t left[RELAY__FRAME_DEPTH];
    int top = 0;
    size_t pos = 0;
    msgpack_packer pk;

    if (max_depth > RELAY__FRAME_DEPTH)
        max_depth = RELAY__FRAME_DEPTH;
    relay__buf_packer(out, &pk);
    for (;;) {
        struct relay__mp_tok t;
        size_t at = pos;
        int rc = relay__mp_next(in, len, &pos, &t);

        if (rc == RELAY__MP_TRUNC)
            return relay__err(err, errlen, RELAY_EINVAL,
                              "invalid msgpack: truncated at byte %zu", at);
        if (rc != RELAY__MP_OK)
            return relay__err(err, errlen, RELAY_EINVAL,
                              "invalid msgpack: bad byte 0x%02x at byte %zu",
                              in[at], at);
        if (top > 0)
            left[top - 1]--;
        switch (t.kind) {
        case RELAY__MP_NIL:
            msgpack_pack_nil(&pk);
            break;
        case RELAY__MP_BOOL:
            if (t.b)
                msgpack_pack_true(&pk);
            else
                msgpack_pack_false(&pk);
            break;
        case RELAY__MP_UINT:
            msgpack_pack_uint64(&pk, t.u);
            break;
        case RELAY__MP_INT:
            msgpack_pack_int64(&pk, t.i);
            break;
        case RELAY__MP_F32:
            msgpack_pack_float(&pk, t.f);
            break;
        case RELAY__MP_F64:
            msgpack_pack_double(&pk, t.d);
            break;
        case RELAY__MP_STR:
            msgpack_pack_str_with_body(&pk, t.ptr, t.n);
            break;
        case RELAY__MP_BIN:
            msgpack_pack_bin_with_body(&pk, t.ptr, t.n);
            break;
        case RELAY__MP_EXT:
            msgpack_pack_ext_with_body(&pk, t.ptr, t.n, t.ext_type);
            break;
        case RELAY__MP_ARRAY:
        case RELAY__MP_MAP:
            /* The level a container opens counts even when it is empty,
             * the same rule as the JSON and CBOR paths. */
            if (top >= max_depth)
                return relay__err(err, errlen, RELAY_EDEPTH,
                                  "value nested deeper than %d levels",
                                  RELAY_MAX_DEPTH);
            if (t.kind == RELAY__MP_ARRAY) {
                msgpack_pack_array(&pk, t.n);
                if (t.n > 0)
                    left[top++] = t.n;
            } else {
                msgpack_pack_map(&pk, t.n);
                if (t.n > 0)
                    left[top++] = 2 * (uint64_t)t.n;
            }
            break;
        }
        while (top > 0 && left[top - 1] == 0)
            top--;
        if (top == 0)
            break;
    }
    if (pos != len)
        return relay__err(err, errlen, RELAY_EINVAL,
                          "invalid msgpack: %zu trailing bytes", len - pos);
    if (out->failed)
        return relay__err(err, errlen, RELAY_ENOMEM, "out of memory");
    return RELAY_OK;
}
