/*
 * codec_json.c - JSON client frames <-> canonical msgpack.
 *
 * Input: jansson parses the frame (it validates UTF-8 and stops at its own
 * depth of 2048, so its recursive parser and json_decref stay bounded); a
 * depth-bounded walk of the tree packs it as msgpack: integers as integers,
 * reals as float64, objects as maps in their key order. An integer literal
 * outside int64 makes jansson fail; such a frame is parsed again with every
 * number as a real, and the number literals of the text, scanned in order,
 * give each real back its exact integer when the literal was one (so
 * 18446744073709551615 stays a uint64). Literals beyond uint64 become
 * floats, as they would in JavaScript. If the tree's numbers do not line up
 * with the text's (duplicate object keys), integral reals within +-2^53 are
 * packed as integers instead.
 *
 * Output: a hand-written writer walks the msgpack bytes directly (no
 * json_t trees on the broadcast path): strings escaped with UTF-8 passed
 * through and invalid bytes replaced by U+FFFD, integers exact over the whole
 * int64/uint64 range, floats in the shortest form that reads back to the same
 * double (NaN and infinities as null), byte strings and ext data as arrays of
 * numbers, non-string map keys as the JSON text of the key (keys inside
 * such keys are quoted, not escaped again, so the size stays linear).
 *
 * Not here: the message schema (codec.c).
 */
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

#include "codec_internal.h"

/* ---- input --------------------------------------------------------------- */

/* 2^53: every integer up to this is exact in a double. */
#define EXACT_DOUBLE_INT 9007199254740992.0

/* The number literals of a frame, in text order (the overflow path). */
struct numtok {
    double d;     /* strtod of the literal */
    bool is_int;  /* an integer literal within the int64/uint64 range */
    bool neg;
    uint64_t mag; /* its magnitude */
};

struct numlist {
    struct numtok *t;
    size_t n, next;
};

/* Parses an integer literal [p, p+n) into neg/mag; false when it is not one
 * or is out of the int64/uint64 range. */
static bool int_literal(const char *p, size_t n, bool *neg, uint64_t *mag)
{
    uint64_t m = 0;
    size_t i = 0;

    *neg = n > 0 && p[0] == '-';
    i = *neg ? 1 : 0;
    if (i == n)
        return false;
    for (; i < n; i++) {
        unsigned dgt;

        if (p[i] < '0' || p[i] > '9')
            return false;
        dgt = (unsigned)(p[i] - '0');
        if (m > (UINT64_MAX - dgt) / 10)
            return false;
        m = m * 10 + dgt;
    }
    if (*neg && m > (uint64_t)INT64_MAX + 1)
        return false;
    *mag = m;
    return true;
}

/* Collects every number literal outside strings; the text is valid JSON
 * (jansson accepted it), so a simple scan suffices. */
static bool scan_numbers(const uint8_t *buf, size_t len, struct numlist *nl)
{
    size_t cap = 0;

    nl->t = NULL;
    nl->n = nl->next = 0;
    for (size_t i = 0; i < len;) {
        char lit[128];
        size_t start = i, n;

        if (buf[i] == '"') {
            for (i++; i < len && buf[i] != '"'; i++)
                if (buf[i] == '\\')
                    i++;
            i++;
            continue;
        }
        if (buf[i] != '-' && (buf[i] < '0' || buf[i] > '9')) {
            i++;
            continue;
        }
        while (i < len && (buf[i] == '-' || buf[i] == '+' || buf[i] == '.' ||
                           buf[i] == 'e' || buf[i] == 'E' ||
                           (buf[i] >= '0' && buf[i] <= '9')))
            i++;
        n = i - start;
        if (nl->n == cap) {
            size_t nc = cap == 0 ? 16 : cap * 2;
            struct numtok *t = realloc(nl->t, nc * sizeof(*t));

            if (t == NULL)
                return false;
            nl->t = t;
            cap = nc;
        }
        if (n >= sizeof(lit))
            n = sizeof(lit) - 1; /* only the double matters for such */
        memcpy(lit, buf + start, n);
        lit[n] = '\0';
        nl->t[nl->n].d = strtod(lit, NULL);
        nl->t[nl->n].is_int = int_literal(lit, n, &nl->t[nl->n].neg,
                                          &nl->t[nl->n].mag);
        nl->n++;
    }
    return true;
}

/* Counts the numbers of a tree, and checks they match the literals. */
static bool numbers_line_up(const json_t *j, struct numlist *nl, int depth)
{
    if (depth <= 0)
        return false;
    if (json_is_array(j)) {
        for (size_t i = 0; i < json_array_size(j); i++)
            if (!numbers_line_up(json_array_get(j, i), nl, depth - 1))
                return false;
        return true;
    }
    if (json_is_object(j)) {
        for (void *it = json_object_iter((json_t *)j); it != NULL;
             it = json_object_iter_next((json_t *)j, it))
            if (!numbers_line_up(json_object_iter_value(it), nl, depth - 1))
                return false;
        return true;
    }
    if (json_is_real(j)) {
        if (nl->next == nl->n || nl->t[nl->next].d != json_real_value(j))
            return false;
        nl->next++;
    }
    return true;
}

static int pack_json(msgpack_packer *pk, const json_t *j, int depth_left,
                     struct numlist *nl);

static int pack_container(msgpack_packer *pk, json_t *j, int depth_left,
                          struct numlist *nl)
{
    int rc;

    /* Bounded recursion: depth_left shrinks by one per level. */
    if (depth_left <= 0)
        return RELAY_EDEPTH;
    if (json_is_array(j)) {
        size_t n = json_array_size(j);

        if (n > UINT32_MAX)
            return RELAY_EINVAL;
        msgpack_pack_array(pk, n);
        for (size_t i = 0; i < n; i++) {
            rc = pack_json(pk, json_array_get(j, i), depth_left - 1, nl);
            if (rc != RELAY_OK)
                return rc;
        }
        return RELAY_OK;
    }
    if (json_object_size(j) > UINT32_MAX)
        return RELAY_EINVAL;
    msgpack_pack_map(pk, json_object_size(j));
    for (void *it = json_object_iter(j); it != NULL;
         it = json_object_iter_next(j, it)) {
        size_t kn = json_object_iter_key_len(it);

        if (kn > UINT32_MAX)
            return RELAY_EINVAL;
        msgpack_pack_str_with_body(pk, json_object_iter_key(it), kn);
        rc = pack_json(pk, json_object_iter_value(it), depth_left - 1, nl);
        if (rc != RELAY_OK)
            return rc;
    }
    return RELAY_OK;
}

/*
 * nl: NULL on the normal path; on the overflow path the literals to take
 * exact integers from, or a list with t == NULL for the 2^53 fallback.
 */
static int pack_json(msgpack_packer *pk, const json_t *j, int depth_left,
                     struct numlist *nl)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
    case JSON_ARRAY:
        return pack_container(pk, (json_t *)j, depth_left, nl);
    case JSON_STRING: {
        size_t n = json_string_length(j);

        if (n > UINT32_MAX)
            return RELAY_EINVAL;
        msgpack_pack_str_with_body(pk, json_string_value(j), n);
        return RELAY_OK;
    }
    case JSON_INTEGER:
        msgpack_pack_int64(pk, (int64_t)json_integer_value(j));
        return RELAY_OK;
    case JSON_REAL: {
        double d = json_real_value(j);

        if (nl != NULL && nl->t != NULL) {
            const struct numtok *t = &nl->t[nl->next++];

            if (t->is_int && t->neg)
                msgpack_pack_int64(pk, t->mag == (uint64_t)INT64_MAX + 1
                                           ? INT64_MIN
                                           : -(int64_t)t->mag);
            else if (t->is_int)
                msgpack_pack_uint64(pk, t->mag);
            else
                msgpack_pack_double(pk, d);
            return RELAY_OK;
        }
        if (nl != NULL && d >= -EXACT_DOUBLE_INT &&
            d <= EXACT_DOUBLE_INT && (double)(int64_t)d == d)
            msgpack_pack_int64(pk, (int64_t)d);
        else
            msgpack_pack_double(pk, d);
        return RELAY_OK;
    }
    case JSON_TRUE:
        msgpack_pack_true(pk);
        return RELAY_OK;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        return RELAY_OK;
    case JSON_NULL:
        msgpack_pack_nil(pk);
        return RELAY_OK;
    }
    return RELAY_EINVAL;
}

int relay__json_to_mp(const uint8_t *buf, size_t len, struct relay__buf *out,
                      char *err, size_t errlen)
{
    /* Strings may hold U+0000 (keys are any string, NULs included). */
    const size_t flags = JSON_ALLOW_NUL;
    struct numlist nl = {0}, *nlp = NULL;
    json_error_t e;
    json_t *root;
    msgpack_packer pk;
    int rc;

    root = json_loadb((const char *)buf, len, flags, &e);
    if (root == NULL && json_error_code(&e) == json_error_numeric_overflow) {
        root = json_loadb((const char *)buf, len,
                          flags | JSON_DECODE_INT_AS_REAL, &e);
        nlp = &nl;
        if (root != NULL) {
            if (!scan_numbers(buf, len, &nl)) {
                json_decref(root);
                free(nl.t);
                return relay__err(err, errlen, RELAY_ENOMEM, "out of memory");
            }
            if (!numbers_line_up(root, &nl, RELAY__FRAME_DEPTH + 1) ||
                nl.next != nl.n) {
                free(nl.t);
                nl.t = NULL;
            }
            nl.next = 0;
        }
    }
    if (root == NULL) {
        switch (json_error_code(&e)) {
        case json_error_out_of_memory:
            return relay__err(err, errlen, RELAY_ENOMEM, "out of memory");
        case json_error_stack_overflow:
            return relay__err(err, errlen, RELAY_EDEPTH,
                              "value nested deeper than %d levels",
                              RELAY_MAX_DEPTH);
        default:
            return relay__err(err, errlen, RELAY_EINVAL,
                              "invalid JSON at line %d column %d: %s", e.line,
                              e.column, e.text);
        }
    }
    if (!json_is_object(root)) {
        json_decref(root);
        free(nl.t); /* the overflow path's literals (leaked before) */
        return relay__err(err, errlen, RELAY_EINVAL,
                          "message must be an object");
    }
    relay__buf_packer(out, &pk);
    rc = pack_json(&pk, root, RELAY__FRAME_DEPTH, nlp);
    json_decref(root);
    free(nl.t);
    if (rc == RELAY_EDEPTH)
        return relay__err(err, errlen, rc, "value nested deeper than %d levels",
                          RELAY_MAX_DEPTH);
    if (rc != RELAY_OK)
        return relay__err(err, errlen, rc, "JSON string too long");
    return RELAY_OK;
}

/* ---- output -------------------------------------------------------------- */

static void put_lit(struct relay__buf *o, const char *s)
{
    relay__buf_put(o, s, strlen(s));
}

void relay__json_u64(struct relay__buf *o, uint64_t u)
{
    char tmp[20];
    size_t i = sizeof(tmp);

    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    relay__buf_put(o, tmp + i, sizeof(tmp) - i);
}

static void put_i64(struct relay__buf *o, int64_t v)
{
    if (v < 0) {
        relay__buf_byte(o, '-');
        relay__json_u64(o, 0 - (uint64_t)v); /* INT64_MIN included */
    } else {
        relay__json_u64(o, (uint64_t)v);
    }
}

/*
 * The shortest of %.15g / %.16g / %.17g that reads back as the same double
 * (17 digits always do), so 0.1 prints as 0.1. A float32 is widened first:
 * a CBOR client sent it as float32 only because the double was exactly
 * representable, so the double is the number it meant. Integral reals keep
 * a ".0" so they stay reals through a JSON round trip (as jansson prints).
 */
static void put_double(struct relay__buf *o, double d)
{
    char tmp[40];
    int n = 0;
    bool real_looking = false;

    if (d != d || d > 1.7976931348623157e308 || d < -1.7976931348623157e308) {
        put_lit(o, "null"); /* JSON has no NaN or infinities */
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
        if (n <= 0 || (size_t)n >= sizeof(tmp)) {
            put_lit(o, "null"); /* cannot happen for a finite double */
            return;
        }
        if (strtod(tmp, NULL) == d)
            break;
    }
    for (int i = 0; i < n; i++) {
        if (tmp[i] == ',')
            tmp[i] = '.'; /* a locale with a decimal comma */
        if (tmp[i] == '.' || tmp[i] == 'e')
            real_looking = true;
    }
    relay__buf_put(o, tmp, (size_t)n);
    if (!real_looking)
        put_lit(o, ".0");
}

void relay__json_str(struct relay__buf *o, const uint8_t *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i = 0;

    if (!relay__buf_reserve(o, n + 2))
        return;
    relay__buf_byte(o, '"');
    while (i < n) {
        size_t start = i;
        uint8_t c;

        /* The common case: a run of ASCII needing no escape. */
        while (i < n && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' &&
               s[i] != '\\')
            i++;
        relay__buf_put(o, s + start, i - start);
        if (i == n)
            break;
        c = s[i];
        if (c >= 0x80) {
            size_t k = relay__utf8_seq(s + i, n - i);

            if (k > 0) {
                relay__buf_put(o, s + i, k);
                i += k;
            } else {
                relay__buf_put(o, "\xef\xbf\xbd", 3); /* U+FFFD */
                i++;
            }
            continue;
        }
        i++;
        switch (c) {
        case '"':
            put_lit(o, "\\\"");
            break;
        case '\\':
            put_lit(o, "\\\\");
            break;
        case '\n':
            put_lit(o, "\\n");
            break;
        case '\r':
            put_lit(o, "\\r");
            break;
        case '\t':
            put_lit(o, "\\t");
            break;
        case '\b':
            put_lit(o, "\\b");
            break;
        case '\f':
            put_lit(o, "\\f");
            break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

            relay__buf_put(o, u, sizeof(u));
            break;
        }
        }
    }
    relay__buf_byte(o, '"');
}

/* Byte strings have no JSON form: an array of numbers, as the reference. */
static void put_byte_array(struct relay__buf *o, const uint8_t *s, size_t n)
{
    uint8_t *w;

    if (n > (SIZE_MAX - 2) / 4 || !relay__buf_reserve(o, 4 * n + 2))
        return;
    w = o->data + o->len;
    *w++ = '[';
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];

        if (i > 0)
            *w++ = ',';
        if (c >= 100)
            *w++ = (uint8_t)('0' + c / 100);
        if (c >= 10)
            *w++ = (uint8_t)('0' + c / 10 % 10);
        *w++ = (uint8_t)('0' + c % 10);
    }
    *w++ = ']';
    o->len = (size_t)(w - o->data);
}

struct jlevel {
    uint64_t left; /* items still to write at this level */
    uint64_t idx;  /* items written so far (keys and values for maps) */
    bool map;
    bool quoted; /* key mode: this container is a key, close its quote */
};

/*
 * Writes one complete item at *pos, iteratively.
 *
 * A map key that is not a string becomes a string holding its JSON text:
 * the key is rendered into a scratch buffer in key mode and that text is
 * escaped once. In key mode, keys that are not strings are written inline
 * between plain quotes instead of being escaped again: escaping at every
 * level of keys-inside-keys would double the size per level, and 32 levels
 * would turn a few bytes into gigabytes. So the recursion is one level deep
 * and the output stays linear in the input.
 */
static int json_item(struct relay__buf *o, const uint8_t *p, size_t len,
                     size_t *pos, int max_depth, bool key_mode)
{
    struct jlevel st[RELAY_MAX_DEPTH];
    int top = 0;

    if (max_depth > RELAY_MAX_DEPTH)
        max_depth = RELAY_MAX_DEPTH;
    for (;;) {
        struct relay__mp_tok t;
        size_t start = *pos;
        bool is_key = false;
        bool quote = false; /* key mode: wrap this item in quotes */

        if (top > 0) {
            struct jlevel *l = &st[top - 1];

            if (l->idx > 0)
                relay__buf_byte(o, l->map && (l->idx & 1) ? ':' : ',');
            is_key = l->map && !(l->idx & 1);
            l->idx++;
            l->left--;
        }
        if (relay__mp_next(p, len, pos, &t) != RELAY__MP_OK)
            return RELAY_EINVAL;
        if (is_key && t.kind != RELAY__MP_STR && !key_mode) {
            struct relay__buf tmp;
            int rc;

            *pos = start;
            if (relay__buf_init(&tmp, 0, 64) != RELAY_OK)
                return RELAY_ENOMEM;
            rc = json_item(&tmp, p, len, pos, max_depth - top, true);
            if (rc == RELAY_OK && tmp.failed)
                rc = RELAY_ENOMEM;
            if (rc == RELAY_OK)
                relay__json_str(o, tmp.data, tmp.len);
            relay__buf_free(&tmp);
            if (rc != RELAY_OK)
                return rc;
            goto close_levels;
        }
        quote = is_key && t.kind != RELAY__MP_STR;
        if (quote)
            relay__buf_byte(o, '"');
        switch (t.kind) {
        case RELAY__MP_NIL:
            put_lit(o, "null");
            break;
        case RELAY__MP_BOOL:
            put_lit(o, t.b ? "true" : "false");
            break;
        case RELAY__MP_UINT:
            relay__json_u64(o, t.u);
            break;
        case RELAY__MP_INT:
            put_i64(o, t.i);
            break;
        case RELAY__MP_F32:
            put_double(o, (double)t.f);
            break;
        case RELAY__MP_F64:
            put_double(o, t.d);
            break;
        case RELAY__MP_STR:
            relay__json_str(o, t.ptr, t.n);
            break;
        case RELAY__MP_BIN:
        case RELAY__MP_EXT:
            put_byte_array(o, t.ptr, t.n);
            break;
        case RELAY__MP_ARRAY:
        case RELAY__MP_MAP: {
            bool map = t.kind == RELAY__MP_MAP;

            if (top >= max_depth)
                return RELAY_EDEPTH;
            if (t.n == 0) {
                put_lit(o, map ? "{}" : "[]");
                break;
            }
            relay__buf_byte(o, map ? '{' : '[');
            st[top].left = map ? 2 * (uint64_t)t.n : t.n;
            st[top].idx = 0;
            st[top].map = map;
            st[top].quoted = quote;
            top++;
            quote = false; /* closed with the container */
            break;
        }
        }
        if (quote)
            relay__buf_byte(o, '"');
    close_levels:
        while (top > 0 && st[top - 1].left == 0) {
            relay__buf_byte(o, st[top - 1].map ? '}' : ']');
            if (st[top - 1].quoted)
                relay__buf_byte(o, '"');
            top--;
        }
        if (top == 0)
            return RELAY_OK;
    }
}

int relay__mp_to_json(struct relay__buf *o, const uint8_t *v, size_t len)
{
    size_t pos = 0;
    int rc = json_item(o, v, len, &pos, RELAY_MAX_DEPTH, false);

    if (rc != RELAY_OK)
        return rc;
    return pos == len ? RELAY_OK : RELAY_EINVAL;
}
