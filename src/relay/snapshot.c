/*
 * snapshot.c - the whole replicated state to msgpack bytes and back, for
 * raft snapshots (consensus/fsm.c wraps these bytes with a checksum).
 *
 * The layout below is the one place that decides the bytes. Every section
 * is written in the state's walk order (state_internal.h), never in hash
 * table order, so two nodes that applied the same log write byte-identical
 * snapshots whatever their seeds (tests/unit/test_snapshot_golden.c holds
 * bytes written before state.c was split, test_htab.c and
 * test_relay_state.c compare states).
 *
 * Restore reads into a fresh state and swaps it in only when the whole
 * input was valid: any shape error, out-of-range value, duplicate or
 * trailing byte is RELAY_EINVAL and leaves the state as it was. Values
 * are depth-checked as the log's are.
 */
#include <stdlib.h>
#include <string.h>

#include "codec_internal.h"
#include "state_internal.h"

/*
 * Layout (msgpack):
 *   ["driftd-relay", 2,
 *    [[room_id(bin), last_seq, last_ms, [[key(bin), [seq, value]...]...]]...],
 *    [[node, session, counter, last_ms]...],   dedupe, least recent first
 *    [[id, raft(str), http(str)]...],          directory, by id
 *    [set_mask, value0 .. value5]]             cluster settings (v2)
 * Each stream is [key, seq1, value1, seq2, value2, ...] to avoid one array
 * header per entry. Values are embedded as the msgpack items they are.
 * Version 1 (still read) is the same five elements without the settings.
 */
#define SNAP_MAGIC "driftd-relay"
#define SNAP_VERSION 2

void relay__snap_head(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 6);
    msgpack_pack_str(pk, sizeof(SNAP_MAGIC) - 1);
    msgpack_pack_str_body(pk, SNAP_MAGIC, sizeof(SNAP_MAGIC) - 1);
    msgpack_pack_uint32(pk, SNAP_VERSION);
}

/* The live state is written through a view too (view.c), one that is
 * encoded at once and so pins nothing: one encoder for both. */
int relay_state_snapshot(const struct relay_state *s, uint8_t **buf,
                         size_t *len)
{
    struct relay_view *v;
    int rv;

    *buf = NULL;
    *len = 0;
    rv = relay__view_capture(s, &v);
    if (rv != RELAY_OK)
        return rv;
    rv = relay__view_encode(v, buf, len);
    relay__view_drop(v);
    return rv;
}

/* A reader over the snapshot that turns every shape error into EINVAL. */
struct rd {
    const uint8_t *p;
    size_t len, pos;
};

static int rd_tok(struct rd *rd, enum relay__mp_kind kind,
                  struct relay__mp_tok *t)
{
    if (relay__mp_next(rd->p, rd->len, &rd->pos, t) != RELAY__MP_OK ||
        t->kind != kind)
        return RELAY_EINVAL;
    return RELAY_OK;
}

static int rd_array(struct rd *rd, uint32_t *n)
{
    struct relay__mp_tok t;

    if (rd_tok(rd, RELAY__MP_ARRAY, &t) != RELAY_OK)
        return RELAY_EINVAL;
    *n = t.n;
    return RELAY_OK;
}

static int rd_uint(struct rd *rd, uint64_t *u)
{
    struct relay__mp_tok t;

    if (rd_tok(rd, RELAY__MP_UINT, &t) != RELAY_OK)
        return RELAY_EINVAL;
    *u = t.u;
    return RELAY_OK;
}

static int rd_bytes(struct rd *rd, enum relay__mp_kind kind, const char **p,
                    size_t *n)
{
    struct relay__mp_tok t;

    if (rd_tok(rd, kind, &t) != RELAY_OK)
        return RELAY_EINVAL;
    *p = (const char *)t.ptr;
    *n = t.n;
    return RELAY_OK;
}

static int restore_stream(struct rd *rd, struct relay_state *s,
                          struct relay__room *r)
{
    struct relay__stream *st;
    const char *key;
    size_t key_len;
    uint32_t n;
    uint64_t prev = 0;

    if (rd_array(rd, &n) != RELAY_OK || n % 2 != 1 ||
        rd_bytes(rd, RELAY__MP_BIN, &key, &key_len) != RELAY_OK ||
        key_len > s->lim.max_key_len)
        return RELAY_EINVAL;
    if (relay__room_find_key(r, key, key_len) != NULL || n < 3)
        return RELAY_EINVAL; /* duplicate key or empty stream */
    /* Each entry takes at least two bytes (seq, value): a count the rest of
     * the input cannot hold is refused before it sizes an allocation (a
     * few corrupt bytes asked for 48 GB). */
    if (n / 2 > (rd->len - rd->pos) / 2)
        return RELAY_EINVAL;
    st = relay__stream_new(key, key_len);
    if (st == NULL)
        return RELAY_ENOMEM;
    if (!relay__room_key_reserve(r) || !relay__stream_reserve(st, n / 2)) {
        relay__stream_free(st);
        return RELAY_ENOMEM;
    }
    relay__room_add_key(r, st);
    st->bytes = key_len;
    for (uint32_t i = 0; i < n / 2; i++) {
        uint64_t seq;
        size_t start, vlen;
        uint8_t *v;

        if (rd_uint(rd, &seq) != RELAY_OK || seq == 0 || seq > r->last_seq ||
            (i > 0 && seq <= prev))
            return RELAY_EINVAL;
        start = rd->pos;
        /* Depth-checked as the log's values are: a corrupt snapshot must
         * not leave values that no client format can carry. */
        if (relay__mp_skip_value(rd->p, rd->len, &rd->pos) != RELAY__MP_OK)
            return RELAY_EINVAL;
        vlen = rd->pos - start;
        v = malloc(vlen);
        if (v == NULL)
            return RELAY_ENOMEM;
        memcpy(v, rd->p + start, vlen);
        st->e[st->n++] =
            (struct relay_entry){.seq = seq, .value = v, .value_len = vlen};
        st->bytes += vlen;
        prev = seq;
    }
    r->bytes += st->bytes;
    r->entries += st->n;
    return RELAY_OK;
}

static int restore_rooms(struct rd *rd, struct relay_state *s)
{
    uint32_t n_rooms;

    if (rd_array(rd, &n_rooms) != RELAY_OK)
        return RELAY_EINVAL;
    for (uint32_t i = 0; i < n_rooms; i++) {
        const char *id;
        size_t id_len;
        uint32_t four, n_keys;
        struct relay__room *r;
        int rv;

        if (rd_array(rd, &four) != RELAY_OK || four != 4 ||
            rd_bytes(rd, RELAY__MP_BIN, &id, &id_len) != RELAY_OK ||
            id_len == 0 || id_len > RELAY_ROOM_ID_MAX ||
            relay__room_find(s, id, id_len) != NULL)
            return RELAY_EINVAL;
        r = relay__room_insert(s, id, id_len);
        if (r == NULL)
            return RELAY_ENOMEM;
        if (rd_uint(rd, &r->last_seq) != RELAY_OK ||
            rd_uint(rd, &r->last_ms) != RELAY_OK ||
            rd_array(rd, &n_keys) != RELAY_OK)
            return RELAY_EINVAL;
        for (uint32_t k = 0; k < n_keys; k++) {
            rv = restore_stream(rd, s, r);
            if (rv != RELAY_OK)
                return rv;
        }
    }
    return RELAY_OK;
}

static int restore_dedupe(struct rd *rd, struct relay_state *s)
{
    uint32_t n;

    if (rd_array(rd, &n) != RELAY_OK)
        return RELAY_EINVAL;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t four;
        uint64_t node, session, counter, last_ms;
        struct relay__dd *d;

        if (rd_array(rd, &four) != RELAY_OK || four != 4 ||
            rd_uint(rd, &node) != RELAY_OK || node == 0 || node > UINT32_MAX ||
            rd_uint(rd, &session) != RELAY_OK ||
            rd_uint(rd, &counter) != RELAY_OK ||
            rd_uint(rd, &last_ms) != RELAY_OK ||
            relay__dd_find(s, (uint32_t)node, session) != NULL)
            return RELAY_EINVAL;
        if (!relay__dd_reserve(s))
            return RELAY_ENOMEM;
        d = calloc(1, sizeof(*d));
        if (d == NULL)
            return RELAY_ENOMEM;
        d->node = (uint32_t)node;
        d->session = session;
        d->counter = counter;
        d->last_ms = last_ms;
        relay__dd_link(s, d);
    }
    return RELAY_OK;
}

static int restore_settings(struct rd *rd, struct relay_state *s)
{
    uint32_t n;
    uint64_t mask, v;

    if (rd_array(rd, &n) != RELAY_OK || n != 1 + RELAY_SETTINGS_N ||
        rd_uint(rd, &mask) != RELAY_OK || mask >> RELAY_SETTINGS_N != 0)
        return RELAY_EINVAL;
    for (size_t i = 0; i < RELAY_SETTINGS_N; i++) {
        /* Any positive value: states made for tests go below the ranges
         * a RELAY_CMD_CONFIG may set. */
        if (rd_uint(rd, &v) != RELAY_OK || v == 0 || v > SIZE_MAX)
            return RELAY_EINVAL;
        relay__limits_set(&s->lim, i, v);
    }
    s->set_mask = (uint32_t)mask;
    return RELAY_OK;
}

static int restore_nodes(struct rd *rd, struct relay_state *s)
{
    uint32_t n;

    if (rd_array(rd, &n) != RELAY_OK)
        return RELAY_EINVAL;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t three;
        uint64_t id;
        const char *raft, *http;
        size_t rl, hl;

        if (rd_array(rd, &three) != RELAY_OK || three != 3 ||
            rd_uint(rd, &id) != RELAY_OK || id == 0 || id > UINT32_MAX ||
            (s->n_nodes > 0 && id <= s->nodes[s->n_nodes - 1].id) ||
            rd_bytes(rd, RELAY__MP_STR, &raft, &rl) != RELAY_OK ||
            rd_bytes(rd, RELAY__MP_STR, &http, &hl) != RELAY_OK || rl == 0 ||
            rl > RELAY_ADDR_MAX || hl > RELAY_ADDR_MAX ||
            memchr(raft, '\0', rl) != NULL || memchr(http, '\0', hl) != NULL)
            return RELAY_EINVAL;
        if (relay__node_set(s, (uint32_t)id, raft, rl, http, hl) != RELAY_OK)
            return RELAY_ENOMEM;
    }
    return RELAY_OK;
}

int relay_state_restore(struct relay_state *s, const uint8_t *buf, size_t len)
{
    struct relay_state *tmp;
    struct relay_state swap;
    struct rd rd = {.p = buf, .len = len, .pos = 0};
    const char *magic;
    size_t magic_len;
    uint32_t five;
    uint64_t version;
    int rv;

    rv = relay_state_create_seeded(&s->lim, s->seed, &tmp);
    if (rv != RELAY_OK)
        return rv;
    /* Version 1 (no settings) is still read: its state keeps the limits
     * it had, with no setting marked set. */
    if (rd_array(&rd, &five) != RELAY_OK || (five != 5 && five != 6) ||
        rd_bytes(&rd, RELAY__MP_STR, &magic, &magic_len) != RELAY_OK ||
        magic_len != sizeof(SNAP_MAGIC) - 1 ||
        memcmp(magic, SNAP_MAGIC, magic_len) != 0 ||
        rd_uint(&rd, &version) != RELAY_OK ||
        version != (five == 5 ? 1u : SNAP_VERSION)) {
        rv = RELAY_EINVAL;
        goto out;
    }
    rv = restore_rooms(&rd, tmp);
    if (rv == RELAY_OK)
        rv = restore_dedupe(&rd, tmp);
    if (rv == RELAY_OK)
        rv = restore_nodes(&rd, tmp);
    if (rv == RELAY_OK && five == 6)
        rv = restore_settings(&rd, tmp);
    if (rv == RELAY_OK && rd.pos != len)
        rv = RELAY_EINVAL; /* trailing bytes */
    if (rv == RELAY_OK) {
        /* Swap contents: s gets the restored state, tmp the old one. */
        struct relay__pin pin;

        swap = *s;
        *s = *tmp;
        *tmp = swap;
        /* The pin stays with s; a view of the old content keeps its rooms
         * (view.c), whose other parts tmp frees. */
        pin = s->pin;
        s->pin = tmp->pin;
        tmp->pin = pin;
        for (struct relay__room *r = tmp->rhead, *next; r != NULL; r = next) {
            next = r->onext;
            relay__room_retire(s, r);
        }
        htab_close(&tmp->rooms);
        tmp->rhead = tmp->rtail = NULL;
        tmp->n_rooms = 0;
        if (five == 5) {
            s->lim = tmp->lim;
            s->set_mask = 0;
        }
    }
out:
    relay_state_destroy(tmp);
    return rv;
}
