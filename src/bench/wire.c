/*
 * wire.c - the few DriftDB messages the benchmark sends, and a scanning
 * decoder for what the server sends back, in JSON and msgpack.
 *
 * The decoder walks the top-level map once and keeps pointers to the
 * fields it needs (type, key, value when it is a string, seq, message); it
 * skips anything else, nested values included, without building a tree or
 * allocating: at a million deliveries per second a DOM parser would cost
 * more than the server. Strings with escapes are left escaped (our values
 * never contain any; a foreign one simply fails to parse as a stamp).
 *
 * Push values are ASCII strings "PUB.CTR.TIME." padded with 'x': the
 * publisher id, its counter (from 1) and the send time in ns on the
 * monotonic clock, which all our connections share.
 *
 * Not here: CBOR, validation beyond what the checks need.
 */
#include <stdio.h>
#include <string.h>

#include "bench.h"

/* ---- encoding ------------------------------------------------------------ */

static char *put_u64(char *w, uint64_t v)
{
    char tmp[20];
    int n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0)
        *w++ = tmp[--n];
    return w;
}

size_t bench_wire_value(char *out, size_t cap, const struct bench_stamp *s,
                        size_t size)
{
    char hdr[64], *w = hdr;
    size_t n;

    w = put_u64(w, s->pub);
    *w++ = '.';
    w = put_u64(w, s->ctr);
    *w++ = '.';
    w = put_u64(w, s->t_ns);
    *w++ = '.';
    n = (size_t)(w - hdr);
    if (n > cap)
        return 0;
    memcpy(out, hdr, n);
    if (size > cap)
        size = cap;
    if (size > n) {
        memset(out + n, 'x', size - n);
        n = size;
    }
    return n;
}

static bool parse_u64(const char **pp, const char *end, uint64_t *out)
{
    const char *p = *pp;
    uint64_t v = 0;

    if (p >= end || *p < '0' || *p > '9')
        return false;
    while (p < end && *p >= '0' && *p <= '9') {
        v = v * 10 + (uint64_t)(*p - '0');
        p++;
    }
    if (p >= end || *p != '.')
        return false;
    *pp = p + 1;
    *out = v;
    return true;
}

bool bench_wire_parse_value(const char *v, size_t n, struct bench_stamp *s)
{
    const char *end;
    uint64_t pub;

    if (v == NULL)
        return false;
    end = v + n;
    if (!parse_u64(&v, end, &pub) || pub > UINT32_MAX ||
        !parse_u64(&v, end, &s->ctr) || !parse_u64(&v, end, &s->t_ns))
        return false;
    s->pub = (uint32_t)pub;
    return true;
}

/* msgpack str header for n bytes. */
static uint8_t *mp_str(uint8_t *w, const char *s, size_t n)
{
    if (n < 32) {
        *w++ = (uint8_t)(0xa0 | n);
    } else if (n < 256) {
        *w++ = 0xd9;
        *w++ = (uint8_t)n;
    } else if (n < 65536) {
        *w++ = 0xda;
        *w++ = (uint8_t)(n >> 8);
        *w++ = (uint8_t)n;
    } else {
        *w++ = 0xdb;
        *w++ = (uint8_t)(n >> 24);
        *w++ = (uint8_t)(n >> 16);
        *w++ = (uint8_t)(n >> 8);
        *w++ = (uint8_t)n;
    }
    memcpy(w, s, n);
    return w + n;
}

#define MP_LIT(w, s) mp_str((w), (s), sizeof(s) - 1)

size_t bench_wire_push(uint8_t *out, size_t cap, bool msgpack, const char *key,
                       const char *value, size_t value_len, bool relay)
{
    size_t klen = strlen(key);
    const char *act = relay ? "relay" : "append";

    /* Keys and values are ours: no characters that JSON must escape. */
    if (klen + value_len + 80 > cap)
        return 0;
    if (msgpack) {
        uint8_t *w = out;

        *w++ = 0x84;
        w = MP_LIT(w, "type");
        w = MP_LIT(w, "push");
        w = MP_LIT(w, "key");
        w = mp_str(w, key, klen);
        w = MP_LIT(w, "value");
        w = mp_str(w, value, value_len);
        w = MP_LIT(w, "action");
        *w++ = 0x81;
        w = MP_LIT(w, "type");
        w = mp_str(w, act, strlen(act));
        return (size_t)(w - out);
    } else {
        char *w = (char *)out;
        static const char a[] = "{\"type\":\"push\",\"key\":\"";
        static const char b[] = "\",\"value\":\"";
        static const char c[] = "\",\"action\":{\"type\":\"";
        static const char d[] = "\"}}";

        memcpy(w, a, sizeof(a) - 1);
        w += sizeof(a) - 1;
        memcpy(w, key, klen);
        w += klen;
        memcpy(w, b, sizeof(b) - 1);
        w += sizeof(b) - 1;
        memcpy(w, value, value_len);
        w += value_len;
        memcpy(w, c, sizeof(c) - 1);
        w += sizeof(c) - 1;
        memcpy(w, act, strlen(act));
        w += strlen(act);
        memcpy(w, d, sizeof(d) - 1);
        w += sizeof(d) - 1;
        return (size_t)(w - (char *)out);
    }
}

size_t bench_wire_get(uint8_t *out, size_t cap, bool msgpack, const char *key)
{
    size_t klen = strlen(key);
    int n;

    if (klen + 64 > cap)
        return 0;
    if (msgpack) {
        uint8_t *w = out;

        *w++ = 0x83;
        w = MP_LIT(w, "type");
        w = MP_LIT(w, "get");
        w = MP_LIT(w, "key");
        w = mp_str(w, key, klen);
        w = MP_LIT(w, "seq");
        *w++ = 0x00;
        return (size_t)(w - out);
    }
    n = snprintf((char *)out, cap,
                 "{\"type\":\"get\",\"key\":\"%s\",\"seq\":0}", key);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

/* ---- decoding: common ---------------------------------------------------- */

static void set_type(struct bench_msg *m, const char *s, size_t n)
{
#define IS(lit) (n == sizeof(lit) - 1 && memcmp(s, lit, n) == 0)
    if (IS("push"))
        m->type = BENCH_MSG_PUSH;
    else if (IS("init"))
        m->type = BENCH_MSG_INIT;
    else if (IS("stream_size"))
        m->type = BENCH_MSG_STREAM_SIZE;
    else if (IS("error"))
        m->type = BENCH_MSG_ERROR;
    else if (IS("pong"))
        m->type = BENCH_MSG_PONG;
    else
        m->type = BENCH_MSG_OTHER;
#undef IS
}

enum field { F_NONE, F_TYPE, F_KEY, F_VALUE, F_SEQ, F_MESSAGE };

/* Stores a string field f of a decoded message (not F_SEQ / F_NONE). */
static void set_str_field(struct bench_msg *m, enum field f, const char *s,
                          size_t n)
{
    if (f == F_TYPE) {
        set_type(m, s, n);
    } else if (f == F_KEY) {
        m->key = s;
        m->key_len = n;
    } else if (f == F_VALUE) {
        m->value = s;
        m->value_len = n;
    } else {
        m->text = s;
        m->text_len = n;
    }
}

static enum field field_of(const char *s, size_t n)
{
    switch (n) {
    case 3:
        if (memcmp(s, "key", 3) == 0)
            return F_KEY;
        if (memcmp(s, "seq", 3) == 0)
            return F_SEQ;
        return F_NONE;
    case 4:
        return memcmp(s, "type", 4) == 0 ? F_TYPE : F_NONE;
    case 5:
        return memcmp(s, "value", 5) == 0 ? F_VALUE : F_NONE;
    case 7:
        return memcmp(s, "message", 7) == 0 ? F_MESSAGE : F_NONE;
    default:
        return F_NONE;
    }
}

/* ---- decoding: JSON ------------------------------------------------------ */

struct jscan {
    const uint8_t *p;
    const uint8_t *end;
};

static void j_ws(struct jscan *j)
{
    while (j->p < j->end &&
           (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t'))
        j->p++;
}

/* At '"': returns the raw contents (escapes kept), moves past the quote. */
static int j_string(struct jscan *j, const char **s, size_t *n)
{
    const uint8_t *start;

    if (j->p >= j->end || *j->p != '"')
        return -1;
    start = ++j->p;
    while (j->p < j->end && *j->p != '"') {
        if (*j->p == '\\') {
            j->p++;
            if (j->p >= j->end)
                return -1;
        }
        j->p++;
    }
    if (j->p >= j->end)
        return -1;
    *s = (const char *)start;
    *n = (size_t)(j->p - start);
    j->p++;
    return 0;
}

/* Skips any value; nesting is tracked by counting brackets outside
 * strings, with a depth bound against hostile input. */
static int j_skip(struct jscan *j)
{
    int depth = 0;
    const char *s;
    size_t n;

    j_ws(j);
    do {
        if (j->p >= j->end)
            return -1;
        switch (*j->p) {
        case '"':
            if (j_string(j, &s, &n) != 0)
                return -1;
            break;
        case '{':
        case '[':
            if (++depth > 64)
                return -1;
            j->p++;
            break;
        case '}':
        case ']':
            if (--depth < 0)
                return -1;
            j->p++;
            break;
        default:
            if (depth == 0) {
                /* scalar: up to the next delimiter */
                while (j->p < j->end && *j->p != ',' && *j->p != '}' &&
                       *j->p != ']' && *j->p != ' ' && *j->p != '\n')
                    j->p++;
                return 0;
            }
            j->p++;
            break;
        }
    } while (depth > 0);
    return 0;
}

int bench_wire_decode_json(const uint8_t *p, size_t n, struct bench_msg *m)
{
    struct jscan j = {p, p + n};

    memset(m, 0, sizeof(*m));
    j_ws(&j);
    if (j.p >= j.end || *j.p != '{')
        return -1;
    j.p++;
    for (;;) {
        const char *k, *s;
        size_t kn, sn;
        enum field f;

        j_ws(&j);
        if (j.p < j.end && *j.p == '}')
            return 0;
        if (j_string(&j, &k, &kn) != 0)
            return -1;
        j_ws(&j);
        if (j.p >= j.end || *j.p != ':')
            return -1;
        j.p++;
        j_ws(&j);
        if (j.p >= j.end)
            return -1;
        f = field_of(k, kn);
        if (*j.p == '"' && f != F_NONE && f != F_SEQ) {
            if (j_string(&j, &s, &sn) != 0)
                return -1;
            set_str_field(m, f, s, sn);
        } else if (f == F_SEQ && *j.p >= '0' && *j.p <= '9') {
            uint64_t v = 0;

            while (j.p < j.end && *j.p >= '0' && *j.p <= '9')
                v = v * 10 + (uint64_t)(*j.p++ - '0');
            m->seq = v;
            m->has_seq = true;
        } else if (j_skip(&j) != 0) {
            return -1;
        }
        j_ws(&j);
        if (j.p < j.end && *j.p == ',') {
            j.p++;
            continue;
        }
        if (j.p < j.end && *j.p == '}')
            return 0;
        return -1;
    }
}

/* ---- decoding: msgpack --------------------------------------------------- */

struct mscan {
    const uint8_t *p;
    const uint8_t *end;
};

static bool m_need(const struct mscan *s, size_t n)
{
    return (size_t)(s->end - s->p) >= n;
}

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;

    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Reads a str header and returns its bytes; -1 when not a str. */
static int m_str(struct mscan *s, const char **str, size_t *n)
{
    uint8_t t;
    size_t len;

    if (!m_need(s, 1))
        return -1;
    t = *s->p;
    if ((t & 0xe0) == 0xa0) {
        len = t & 0x1f;
        s->p += 1;
    } else if (t == 0xd9 && m_need(s, 2)) {
        len = s->p[1];
        s->p += 2;
    } else if (t == 0xda && m_need(s, 3)) {
        len = (size_t)be(s->p + 1, 2);
        s->p += 3;
    } else if (t == 0xdb && m_need(s, 5)) {
        len = (size_t)be(s->p + 1, 4);
        s->p += 5;
    } else {
        return -1;
    }
    if (!m_need(s, len))
        return -1;
    *str = (const char *)s->p;
    *n = len;
    s->p += len;
    return 0;
}

/* Reads an unsigned integer; -1 when not one. */
static int m_uint(struct mscan *s, uint64_t *v)
{
    uint8_t t;
    int n;

    if (!m_need(s, 1))
        return -1;
    t = *s->p;
    if (t < 0x80) {
        *v = t;
        s->p++;
        return 0;
    }
    if (t == 0xcc)
        n = 1;
    else if (t == 0xcd)
        n = 2;
    else if (t == 0xce)
        n = 4;
    else if (t == 0xcf)
        n = 8;
    else
        return -1;
    if (!m_need(s, 1 + (size_t)n))
        return -1;
    *v = be(s->p + 1, n);
    s->p += 1 + n;
    return 0;
}

static int m_skip(struct mscan *s, int depth)
{
    uint8_t t;
    uint64_t count = 0, len = 0;
    int hdr = 1;

    if (depth > 64 || !m_need(s, 1))
        return -1;
    t = *s->p;
    if (t < 0x80 || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
        s->p++;
        return 0;
    }
    if ((t & 0xe0) == 0xa0) {
        len = t & 0x1f;
    } else if ((t & 0xf0) == 0x90) {
        count = t & 0x0f;
    } else if ((t & 0xf0) == 0x80) {
        count = 2u * (t & 0x0f);
    } else {
        switch (t) {
        case 0xcc:
        case 0xd0:
            len = 1;
            break;
        case 0xcd:
        case 0xd1:
            len = 2;
            break;
        case 0xce:
        case 0xd2:
        case 0xca:
            len = 4;
            break;
        case 0xcf:
        case 0xd3:
        case 0xcb:
            len = 8;
            break;
        case 0xd4:
            len = 2;
            break;
        case 0xd5:
            len = 3;
            break;
        case 0xd6:
            len = 5;
            break;
        case 0xd7:
            len = 9;
            break;
        case 0xd8:
            len = 17;
            break;
        case 0xc4:
        case 0xd9:
            hdr = 2;
            if (!m_need(s, 2))
                return -1;
            len = s->p[1];
            break;
        case 0xc5:
        case 0xda:
            hdr = 3;
            if (!m_need(s, 3))
                return -1;
            len = be(s->p + 1, 2);
            break;
        case 0xc6:
        case 0xdb:
            hdr = 5;
            if (!m_need(s, 5))
                return -1;
            len = be(s->p + 1, 4);
            break;
        case 0xc7:
        case 0xc8:
        case 0xc9: {
            int w = t == 0xc7 ? 1 : t == 0xc8 ? 2 : 4;

            hdr = 1 + w;
            if (!m_need(s, (size_t)hdr))
                return -1;
            len = be(s->p + 1, w) + 1; /* + the type byte */
            break;
        }
        case 0xdc:
        case 0xde:
            hdr = 3;
            if (!m_need(s, 3))
                return -1;
            count = be(s->p + 1, 2) * (t == 0xde ? 2u : 1u);
            break;
        case 0xdd:
        case 0xdf:
            hdr = 5;
            if (!m_need(s, 5))
                return -1;
            count = be(s->p + 1, 4) * (t == 0xdf ? 2u : 1u);
            break;
        default:
            return -1;
        }
    }
    if (!m_need(s, (size_t)hdr + len))
        return -1;
    s->p += (size_t)hdr + len;
    for (uint64_t i = 0; i < count; i++)
        if (m_skip(s, depth + 1) != 0)
            return -1;
    return 0;
}

int bench_wire_decode_msgpack(const uint8_t *p, size_t n, struct bench_msg *m)
{
    struct mscan s = {p, p + n};
    uint64_t pairs;
    uint8_t t;

    memset(m, 0, sizeof(*m));
    if (n < 1)
        return -1;
    t = *s.p;
    if ((t & 0xf0) == 0x80) {
        pairs = t & 0x0f;
        s.p++;
    } else if (t == 0xde && m_need(&s, 3)) {
        pairs = be(s.p + 1, 2);
        s.p += 3;
    } else if (t == 0xdf && m_need(&s, 5)) {
        pairs = be(s.p + 1, 4);
        s.p += 5;
    } else {
        return -1;
    }
    for (uint64_t i = 0; i < pairs; i++) {
        const char *k, *v;
        size_t kn, vn;
        enum field f = F_NONE;
        struct mscan save;

        if (m_str(&s, &k, &kn) == 0)
            f = field_of(k, kn);
        else if (m_skip(&s, 1) != 0)
            return -1;
        save = s;
        if (f == F_SEQ) {
            if (m_uint(&s, &m->seq) == 0) {
                m->has_seq = true;
                continue;
            }
        } else if (f != F_NONE && m_str(&s, &v, &vn) == 0) {
            set_str_field(m, f, v, vn);
            continue;
        }
        s = save;
        if (m_skip(&s, 1) != 0)
            return -1;
    }
    return 0;
}
