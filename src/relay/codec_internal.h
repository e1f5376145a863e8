/*
 * codec_internal.h - shared pieces of the client message codecs.
 *
 * Every client format converts into one canonical form, msgpack, and back:
 *   decode: JSON | CBOR | msgpack frame -> canonical msgpack frame (depth
 *           bounded, validated) -> schema walk in codec.c -> struct relay_msg
 *           whose value is a byte range copied out of that frame.
 *   encode: canonical msgpack value -> direct token walk -> JSON text / CBOR
 *           bytes (no intermediate trees), or a validated copy for msgpack.
 *
 * This header holds the growable output buffer (sticky out-of-memory flag, so
 * writers check once at the end), the msgpack token reader every walk uses,
 * and the per-format converters. Nothing here is part of relay.h.
 */
#ifndef DRIFTD_RELAY_CODEC_INTERNAL_H
#define DRIFTD_RELAY_CODEC_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <msgpack.h>

#include "relay.h"

/*
 * A client frame is a map holding the value: one level more than a value may
 * have. Converters bound the whole frame by this, so a value taken out of it
 * is nested at most RELAY_MAX_DEPTH levels.
 */
#define RELAY__FRAME_DEPTH (RELAY_MAX_DEPTH + 1)

/* ---- growable output buffer ---------------------------------------------- */

struct relay__buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    bool failed; /* an allocation failed; every later write is a no-op */
};

/*
 * Starts with `headroom` bytes reserved (len = headroom) and room for about
 * `hint` more. Returns RELAY_OK or RELAY_ENOMEM (b is then safe to free).
 */
int relay__buf_init(struct relay__buf *b, size_t headroom, size_t hint);
void relay__buf_free(struct relay__buf *b);
/* Slow path of relay__buf_reserve: grows the buffer. */
bool relay__buf_grow(struct relay__buf *b, size_t n);

/* Makes room for n more bytes; false (and b->failed) when it cannot. */
static inline bool relay__buf_reserve(struct relay__buf *b, size_t n)
{
    if (!b->failed && b->cap - b->len >= n)
        return true;
    return relay__buf_grow(b, n);
}

static inline void relay__buf_put(struct relay__buf *b, const void *p, size_t n)
{
    if (n == 0 || !relay__buf_reserve(b, n))
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static inline void relay__buf_byte(struct relay__buf *b, uint8_t c)
{
    if (!relay__buf_reserve(b, 1))
        return;
    b->data[b->len++] = c;
}

/* A msgpack packer that appends to b (sticky failure as above). */
void relay__buf_packer(struct relay__buf *b, msgpack_packer *pk);

/* ---- errors -------------------------------------------------------------- */

/*
 * Writes a one-line reason to err (when errlen > 0) and returns code.
 * Bytes outside printable ASCII are replaced with '?' so that client input
 * quoted in the reason can neither break the line nor the encoding.
 */
int relay__err(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Length of the valid UTF-8 sequence starting at s (n bytes left), 0 when
 * the bytes there are not valid UTF-8 (overlong, surrogate, > U+10FFFF). */
size_t relay__utf8_seq(const uint8_t *s, size_t n);
bool relay__utf8_valid(const uint8_t *s, size_t n);

/* ---- msgpack token reader (codec_msgpack.c) ------------------------------ */

enum relay__mp_kind {
    RELAY__MP_NIL,
    RELAY__MP_BOOL,
    RELAY__MP_UINT, /* every integer >= 0, whatever its wire format */
    RELAY__MP_INT,  /* negative integers only */
    RELAY__MP_F32,
    RELAY__MP_F64,
    RELAY__MP_STR,
    RELAY__MP_BIN,
    RELAY__MP_EXT,
    RELAY__MP_ARRAY,
    RELAY__MP_MAP,
};

struct relay__mp_tok {
    enum relay__mp_kind kind;
    bool b;
    uint64_t u;
    int64_t i;
    float f;
    double d;
    const uint8_t *ptr; /* str / bin / ext payload, borrowed from the input */
    uint32_t n;         /* payload bytes, or array items, or map pairs */
    int8_t ext_type;
};

enum {
    RELAY__MP_OK = 0,
    RELAY__MP_TRUNC = 1, /* input ends inside an item */
    RELAY__MP_BAD = 2,   /* 0xc1, the one never-used msgpack byte */
};

/*
 * Reads the item header at *pos (with its payload for strings, bin, ext and
 * numbers) and advances *pos past it; containers' children follow. Returns
 * RELAY__MP_OK, RELAY__MP_TRUNC or RELAY__MP_BAD (then *pos is unchanged).
 */
int relay__mp_next(const uint8_t *p, size_t len, size_t *pos,
                   struct relay__mp_tok *t);

/*
 * Skips one complete item at *pos, iteratively (no depth limit is needed
 * because nothing is kept per level). Returns as relay__mp_next.
 */
int relay__mp_skip(const uint8_t *p, size_t len, size_t *pos);

/*
 * Skips one value at *pos as relay__mp_skip does, and refuses (RELAY__MP_BAD,
 * *pos unchanged) one with containers nested deeper than RELAY_MAX_DEPTH,
 * counting empty ones as the client decoders and the JSON writer do. What
 * the log and snapshots carry is checked with it, so every stored value
 * can be sent in every format.
 */
int relay__mp_skip_value(const uint8_t *p, size_t len, size_t *pos);

/* True when [p, p+len) is exactly one well-formed msgpack item. */
bool relay__mp_is_one_item(const uint8_t *p, size_t len);

/*
 * Re-packs exactly one msgpack item (the whole input) canonically into out:
 * smallest encodings, non-negative integers as unsigned. Containers nested
 * deeper than max_depth give RELAY_EDEPTH; malformed input or trailing bytes
 * RELAY_EINVAL; err gets the reason.
 */
int relay__mp_normalize(const uint8_t *in, size_t len, int max_depth,
                        struct relay__buf *out, char *err, size_t errlen);

/* ---- JSON (codec_json.c) ------------------------------------------------- */

/* JSON text frame -> canonical msgpack frame appended to out. */
int relay__json_to_mp(const uint8_t *buf, size_t len, struct relay__buf *out,
                      char *err, size_t errlen);

/*
 * Appends the JSON text of the one msgpack item [v, v+len) to out.
 * Returns RELAY_OK, RELAY_EINVAL (malformed or trailing bytes),
 * RELAY_EDEPTH (deeper than RELAY_MAX_DEPTH) or RELAY_ENOMEM; an allocation
 * failure in out itself shows as out->failed.
 */
int relay__mp_to_json(struct relay__buf *out, const uint8_t *v, size_t len);

/* Appends s as a JSON string: quoted, escaped, invalid UTF-8 -> U+FFFD. */
void relay__json_str(struct relay__buf *out, const uint8_t *s, size_t n);
void relay__json_u64(struct relay__buf *out, uint64_t u);

/* ---- CBOR (codec_cbor.c) ------------------------------------------------- */

/* CBOR binary frame -> canonical msgpack frame appended to out. */
int relay__cbor_to_mp(const uint8_t *buf, size_t len, struct relay__buf *out,
                      char *err, size_t errlen);

/* Appends the CBOR of the one msgpack item [v, v+len). Returns as
 * relay__mp_to_json (no depth limit is needed: the walk keeps no stack). */
int relay__mp_to_cbor(struct relay__buf *out, const uint8_t *v, size_t len);

/* CBOR pieces used by the message encoders. */
void relay__cbor_uint(struct relay__buf *out, uint64_t u);
void relay__cbor_map(struct relay__buf *out, size_t n);
void relay__cbor_array(struct relay__buf *out, size_t n);
/* A text string when s is valid UTF-8, else a byte string. */
void relay__cbor_text(struct relay__buf *out, const uint8_t *s, size_t n);

#endif
