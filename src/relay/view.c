/*
 * view.c - the state frozen for an encoder on another thread, and what the
 * state keeps alive while such a view is out.
 *
 * A snapshot used to be encoded on the state's own thread (~1.5 ms per MB)
 * or in a forked copy of the process (the fork itself held the loop for
 * 8-31 ms at 38-200 MB). A view costs a walk of the rooms and keys instead:
 * it records, per stream, the entry array and its length as they are now,
 * and pre-encodes the small sections (dedupe sessions, node directory,
 * settings). The entries themselves are not copied; instead, while the view
 * is out, the state never changes or frees what the view may read:
 *
 *   - appends write past every recorded length, so they need nothing;
 *   - an array that would move (growth) or be changed in place (compact,
 *     replace) is first copied, and the old one kept (a stream is "shared"
 *     until then: its cow_gen is older than the view's generation);
 *   - freed values and old arrays go to a list (the pin's dead array),
 *     reserved before the command changes anything, as every allocation is;
 *   - a deleted room is unlinked and kept whole on a list of dead rooms.
 *
 * relay_view_release frees all of it on the state's thread. Rooms' ids and
 * streams' keys never change while they live, so the view points at them.
 *
 * Not here: the snapshot's layout (snapshot.c writes both the live state
 * and views through the one encoder below), the thread (consensus).
 */
#include <assert.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "codec_internal.h"
#include "state_internal.h"

struct relay__vroom {
    const char *id;
    size_t id_len;
    uint64_t last_seq, last_ms;
    size_t n_keys; /* its streams follow the previous room's in streams[] */
};

struct relay__vstream {
    const char *key;
    size_t key_len;
    const struct relay_entry *e;
    size_t n;
};

struct relay_view {
    struct relay__vroom *rooms;
    size_t n_rooms;
    struct relay__vstream *streams;
    size_t n_streams;
    /* dedupe, directory and settings sections, already msgpack */
    struct relay__buf tail;
    atomic_bool cancel;
    bool pinned; /* taken by relay_view_take (not a relay_state_snapshot) */
};

/* ---- what a pinned state keeps ------------------------------------------ */

bool relay__stream_shared(const struct relay_state *s,
                          const struct relay__stream *st)
{
    return s->pin.active && st->cow_gen < s->pin.gen;
}

bool relay__defer_reserve(struct relay_state *s, size_t k)
{
    void **d;
    size_t cap;

    if (!s->pin.active || s->pin.cap_dead - s->pin.n_dead >= k)
        return true;
    cap = s->pin.cap_dead < 64 ? 64 : s->pin.cap_dead;
    while (cap - s->pin.n_dead < k)
        cap *= 2;
    d = realloc(s->pin.dead, cap * sizeof(*d));
    if (d == NULL)
        return false;
    s->pin.dead = d;
    s->pin.cap_dead = cap;
    return true;
}

void relay__defer_free(struct relay_state *s, void *p)
{
    if (!s->pin.active) {
        free(p);
        return;
    }
    assert(s->pin.n_dead < s->pin.cap_dead); /* relay__defer_reserve done */
    s->pin.dead[s->pin.n_dead++] = p;
}

void relay__room_retire(struct relay_state *s, struct relay__room *r)
{
    if (!s->pin.active) {
        relay__room_free(r);
        return;
    }
    r->oprev = NULL;
    r->onext = s->pin.dead_rooms;
    s->pin.dead_rooms = r;
}

bool relay__stream_cow(struct relay_state *s, struct relay__stream *st,
                       size_t need)
{
    struct relay_entry *e;
    size_t cap = st->cap < 4 ? 4 : st->cap;

    while (cap < need)
        cap *= 2;
    e = malloc(cap * sizeof(*e));
    if (e == NULL)
        return false;
    if (st->n > 0)
        memcpy(e, st->e, st->n * sizeof(*e));
    relay__defer_free(s, st->e);
    st->e = e;
    st->cap = cap;
    st->cow_gen = s->pin.gen;
    return true;
}

/* ---- taking a view ------------------------------------------------------ */

static void encode_tail(const struct relay_state *s, struct relay__buf *b)
{
    msgpack_packer pk;

    relay__buf_packer(b, &pk);
    msgpack_pack_array(&pk, s->n_dd);
    for (const struct relay__dd *d = s->lhead; d != NULL; d = d->lnext) {
        msgpack_pack_array(&pk, 4);
        msgpack_pack_uint32(&pk, d->node);
        msgpack_pack_uint64(&pk, d->session);
        msgpack_pack_uint64(&pk, d->counter);
        msgpack_pack_uint64(&pk, d->last_ms);
    }

    msgpack_pack_array(&pk, s->n_nodes);
    for (size_t i = 0; i < s->n_nodes; i++) {
        size_t rl = strlen(s->nodes[i].raft), hl = strlen(s->nodes[i].http);

        msgpack_pack_array(&pk, 3);
        msgpack_pack_uint32(&pk, s->nodes[i].id);
        msgpack_pack_str(&pk, rl);
        msgpack_pack_str_body(&pk, s->nodes[i].raft, rl);
        msgpack_pack_str(&pk, hl);
        msgpack_pack_str_body(&pk, s->nodes[i].http, hl);
    }

    msgpack_pack_array(&pk, 1 + RELAY_SETTINGS_N);
    msgpack_pack_uint32(&pk, s->set_mask);
    for (size_t i = 0; i < RELAY_SETTINGS_N; i++)
        msgpack_pack_uint64(&pk, relay_limits_setting(&s->lim, i));
}

static void view_free(struct relay_view *v)
{
    free(v->rooms);
    free(v->streams);
    relay__buf_free(&v->tail);
    free(v);
}

int relay__view_capture(const struct relay_state *s, struct relay_view **out)
{
    struct relay_view *v = calloc(1, sizeof(*v));
    size_t n_streams = 0, k = 0;

    *out = NULL;
    if (v == NULL)
        return RELAY_ENOMEM;
    atomic_init(&v->cancel, false);
    for (const struct relay__room *r = s->rhead; r != NULL; r = r->onext)
        n_streams += r->n_keys;
    v->rooms = malloc((s->n_rooms > 0 ? s->n_rooms : 1) * sizeof(*v->rooms));
    v->streams = malloc((n_streams > 0 ? n_streams : 1) * sizeof(*v->streams));
    if (v->rooms == NULL || v->streams == NULL ||
        relay__buf_init(&v->tail, 0, 64 + 40 * s->n_dd) != RELAY_OK)
        goto err_free;
    for (const struct relay__room *r = s->rhead; r != NULL; r = r->onext) {
        v->rooms[v->n_rooms++] = (struct relay__vroom){
            .id = r->id,
            .id_len = r->id_len,
            .last_seq = r->last_seq,
            .last_ms = r->last_ms,
            .n_keys = r->n_keys,
        };
        for (const struct relay__stream *st = r->khead; st != NULL;
             st = st->onext)
            v->streams[k++] = (struct relay__vstream){
                .key = st->key, .key_len = st->key_len, .e = st->e, .n = st->n};
    }
    v->n_streams = k;
    encode_tail(s, &v->tail);
    if (v->tail.failed)
        goto err_free;
    *out = v;
    return RELAY_OK;
err_free:
    view_free(v);
    return RELAY_ENOMEM;
}

int relay_view_take(struct relay_state *s, struct relay_view **out)
{
    int rv;

    *out = NULL;
    if (s->pin.active)
        return RELAY_EINVAL; /* one view at a time */
    rv = relay__view_capture(s, out);
    if (rv != RELAY_OK)
        return rv;
    (*out)->pinned = true;
    s->pin.active = true;
    s->pin.gen++; /* every stream that exists now is shared */
    return RELAY_OK;
}

/* ---- encoding ----------------------------------------------------------- */

int relay__view_encode(struct relay_view *v, uint8_t **buf, size_t *len)
{
    struct relay__buf b;
    msgpack_packer pk;
    const struct relay__vstream *st = v->streams;
    size_t hint = 4096 + v->tail.len;

    *buf = NULL;
    *len = 0;
    /* Roughly the size it will be: fewer copies while growing a buffer of
     * hundreds of MB. */
    for (size_t i = 0; i < v->n_streams; i++) {
        hint += st[i].key_len + 16;
        for (size_t j = 0; j < st[i].n; j++)
            hint += st[i].e[j].value_len + 9;
    }
    if (relay__buf_init(&b, 0, hint) != RELAY_OK)
        return RELAY_ENOMEM;
    relay__buf_packer(&b, &pk);
    relay__snap_head(&pk);
    msgpack_pack_array(&pk, v->n_rooms);
    for (size_t i = 0; i < v->n_rooms; i++) {
        const struct relay__vroom *r = &v->rooms[i];

        if (atomic_load_explicit(&v->cancel, memory_order_relaxed)) {
            relay__buf_free(&b);
            return RELAY_ECANCELED;
        }
        msgpack_pack_array(&pk, 4);
        msgpack_pack_bin(&pk, r->id_len);
        msgpack_pack_bin_body(&pk, r->id, r->id_len);
        msgpack_pack_uint64(&pk, r->last_seq);
        msgpack_pack_uint64(&pk, r->last_ms);
        msgpack_pack_array(&pk, r->n_keys);
        for (size_t k = 0; k < r->n_keys; k++, st++) {
            if (atomic_load_explicit(&v->cancel, memory_order_relaxed)) {
                relay__buf_free(&b);
                return RELAY_ECANCELED;
            }
            msgpack_pack_array(&pk, 1 + 2 * st->n);
            msgpack_pack_bin(&pk, st->key_len);
            msgpack_pack_bin_body(&pk, st->key, st->key_len);
            for (size_t j = 0; j < st->n; j++) {
                msgpack_pack_uint64(&pk, st->e[j].seq);
                relay__buf_put(&b, st->e[j].value, st->e[j].value_len);
            }
        }
    }
    relay__buf_put(&b, v->tail.data, v->tail.len);
    if (b.failed) {
        relay__buf_free(&b);
        return RELAY_ENOMEM;
    }
    *buf = b.data;
    *len = b.len;
    return RELAY_OK;
}

int relay_view_encode(struct relay_view *v, uint8_t **buf, size_t *len)
{
    return relay__view_encode(v, buf, len);
}

void relay_view_cancel(struct relay_view *v)
{
    atomic_store(&v->cancel, true);
}

bool relay_view_cancelled(struct relay_view *v)
{
    return atomic_load(&v->cancel);
}

/* ---- release ------------------------------------------------------------ */

void relay__view_drop(struct relay_view *v)
{
    view_free(v);
}

void relay_view_release(struct relay_state *s, struct relay_view *v)
{
    struct relay__room *r;

    if (v == NULL)
        return;
    assert(v->pinned && s->pin.active);
    view_free(v);
    s->pin.active = false;
    for (size_t i = 0; i < s->pin.n_dead; i++)
        free(s->pin.dead[i]);
    s->pin.n_dead = 0;
    /* A long snapshot under churn can leave a big list: give it back. */
    if (s->pin.cap_dead > 4096) {
        free(s->pin.dead);
        s->pin.dead = NULL;
        s->pin.cap_dead = 0;
    }
    r = s->pin.dead_rooms;
    s->pin.dead_rooms = NULL;
    while (r != NULL) {
        struct relay__room *next = r->onext;

        relay__room_free(r);
        r = next;
    }
}

void relay__pin_close(struct relay_state *s)
{
    assert(!s->pin.active); /* a view outlived its state */
    free(s->pin.dead);
    s->pin.dead = NULL;
    s->pin.cap_dead = s->pin.n_dead = 0;
}
