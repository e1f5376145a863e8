/*
 * rooms.c - rooms and their keyed streams: the four push actions (relay,
 * replace, append, compact), per-room seqs, the retained-bytes and count
 * limits, room creation and (conditional) deletion, and the reads net
 * serves clients from.
 *
 * A stream is a contiguous array of entries sorted by seq (appends only grow
 * seqs; compact puts S first and keeps only seqs > S), so reads with `after`
 * are a binary search and hand out the array itself. Rooms sit in a seeded
 * hash table for lookups and in a creation-order list for every walk (the
 * listing and snapshot.c), and so do a room's keys.
 *
 * Room commands check every limit before touching anything and allocate
 * before they change state, so a refusal or ENOMEM leaves the room as it
 * was. Not here: deciding when an idle room expires (the leader's
 * consensus/expiry.c proposes a delete conditional on last_ms).
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "state_internal.h"

/* ---- streams ------------------------------------------------------------- */

void relay__stream_free(struct relay__stream *st)
{
    for (size_t i = 0; i < st->n; i++)
        free((void *)st->e[i].value);
    free(st->e);
    free(st->key);
    free(st);
}

struct relay__stream *relay__stream_new(const char *key, size_t key_len)
{
    struct relay__stream *st = calloc(1, sizeof(*st));

    if (st == NULL)
        return NULL;
    st->key = relay__dup_bytes(key, key_len);
    if (st->key == NULL)
        goto err_free;
    st->key_len = key_len;
    return st;
err_free:
    free(st);
    return NULL;
}

bool relay__stream_reserve(struct relay__stream *st, size_t need)
{
    struct relay_entry *e;
    size_t cap;

    if (st->cap >= need)
        return true;
    cap = st->cap < 4 ? 4 : st->cap * 2;
    while (cap < need)
        cap *= 2;
    e = realloc(st->e, cap * sizeof(*e));
    if (e == NULL)
        return false;
    st->e = e;
    st->cap = cap;
    return true;
}

/* Index of the first entry with seq > after. */
static size_t stream_upper(const struct relay__stream *st, uint64_t after)
{
    size_t lo = 0, hi = st->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (st->e[mid].seq <= after)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ---- rooms --------------------------------------------------------------- */

void relay__room_free(struct relay__room *r)
{
    struct relay__stream *st = r->khead;

    while (st != NULL) {
        struct relay__stream *next = st->onext;

        relay__stream_free(st);
        st = next;
    }
    htab_close(&r->keys);
    free(r->id);
    free(r);
}

struct relay__stream *relay__room_find_key(const struct relay__room *r,
                                           const char *key, size_t key_len)
{
    struct htab_node *n = htab_find(&r->keys, key, key_len);

    return n != NULL ? HTAB_ENTRY(n, struct relay__stream, hnode) : NULL;
}

/* Makes room in the key table for one more key. */
bool relay__room_key_reserve(struct relay__room *r)
{
    return htab_reserve(&r->keys, r->n_keys + 1) == HTAB_OK;
}

/* Links a new stream (relay__room_key_reserve done, so this cannot fail). */
void relay__room_add_key(struct relay__room *r, struct relay__stream *st)
{
    htab_insert(&r->keys, &st->hnode, st->key, st->key_len);
    if (r->ktail != NULL)
        r->ktail->onext = st;
    else
        r->khead = st;
    r->ktail = st;
    r->n_keys++;
}

struct relay__room *relay__room_find(const struct relay_state *s,
                                     const char *id, size_t id_len)
{
    struct htab_node *n = htab_find(&s->rooms, id, id_len);

    return n != NULL ? HTAB_ENTRY(n, struct relay__room, hnode) : NULL;
}

/* Creates and links a room (no limit checks). */
struct relay__room *relay__room_insert(struct relay_state *s, const char *id,
                                       size_t id_len)
{
    struct relay__room *r;

    if (htab_reserve(&s->rooms, s->n_rooms + 1) != HTAB_OK)
        return NULL;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->id = relay__dup_bytes(id, id_len);
    if (r->id == NULL) {
        free(r);
        return NULL;
    }
    r->id_len = id_len;
    htab_init(&r->keys, s->seed);
    htab_insert(&s->rooms, &r->hnode, r->id, r->id_len);
    r->oprev = s->rtail;
    if (s->rtail != NULL)
        s->rtail->onext = r;
    else
        s->rhead = r;
    s->rtail = r;
    s->n_rooms++;
    return r;
}

static void room_unlink(struct relay_state *s, struct relay__room *r)
{
    htab_remove(&s->rooms, &r->hnode);
    if (r->oprev != NULL)
        r->oprev->onext = r->onext;
    else
        s->rhead = r->onext;
    if (r->onext != NULL)
        r->onext->oprev = r->oprev;
    else
        s->rtail = r->oprev;
    s->n_rooms--;
}

void relay__rooms_clear(struct relay_state *s)
{
    struct relay__room *r = s->rhead;

    while (r != NULL) {
        struct relay__room *next = r->onext;

        relay__room_free(r);
        r = next;
    }
    htab_close(&s->rooms);
    s->n_rooms = 0;
    s->rhead = s->rtail = NULL;
}

/* ---- apply --------------------------------------------------------------- */

int relay__apply_create(struct relay_state *s, const struct relay_cmd *cmd,
                        uint64_t now_ms, struct relay_effects *eff)
{
    struct relay__room *r;

    if (cmd->room_len == 0 || cmd->room_len > RELAY_ROOM_ID_MAX) {
        eff->status = RELAY_EINVAL;
        return RELAY_OK;
    }
    if (relay__room_find(s, cmd->room, cmd->room_len) != NULL) {
        eff->status = RELAY_EEXIST;
        return RELAY_OK;
    }
    if (s->n_rooms >= s->lim.max_rooms) {
        eff->status = RELAY_EFULL;
        return RELAY_OK;
    }
    r = relay__room_insert(s, cmd->room, cmd->room_len);
    if (r == NULL)
        return RELAY_ENOMEM;
    r->last_ms = now_ms;
    return RELAY_OK;
}

int relay__apply_delete(struct relay_state *s, const struct relay_cmd *cmd,
                        struct relay_effects *eff)
{
    struct relay__room *r = relay__room_find(s, cmd->room, cmd->room_len);

    if (r == NULL) {
        eff->status = RELAY_ENOROOM;
        return RELAY_OK;
    }
    if (cmd->compact_seq != 0 && r->last_ms != cmd->compact_seq) {
        eff->status = RELAY_EACTIVE;
        return RELAY_OK;
    }
    room_unlink(s, r);
    relay__room_retire(s, r);
    return RELAY_OK;
}

static void set_stream_size(const struct relay__stream *st,
                            struct relay_effects *eff)
{
    if (st->n > 1) {
        eff->has_stream_size = true;
        eff->stream_size = st->n;
    }
}

int relay__apply_push(struct relay_state *s, const struct relay_cmd *cmd,
                      uint64_t now_ms, struct relay_effects *eff)
{
    struct relay__room *r;
    struct relay__stream *st, *fresh = NULL;
    uint8_t *val = NULL;
    size_t drop = 0, drop_bytes = 0, new_bytes, base;

    if ((unsigned)cmd->action > RELAY_ACT_COMPACT) {
        eff->status = RELAY_EINVAL;
        return RELAY_OK;
    }
    r = relay__room_find(s, cmd->room, cmd->room_len);
    if (r == NULL) {
        eff->status = RELAY_ENOROOM;
        return RELAY_OK;
    }
    if (cmd->key_len > s->lim.max_key_len ||
        cmd->value_len > s->lim.max_value_len) {
        eff->status = RELAY_ETOOBIG;
        return RELAY_OK;
    }
    if (cmd->action == RELAY_ACT_COMPACT &&
        (cmd->compact_seq == 0 || cmd->compact_seq > r->last_seq)) {
        eff->status = RELAY_ESEQ;
        return RELAY_OK;
    }

    st = relay__room_find_key(r, cmd->key, cmd->key_len);
    if (cmd->action == RELAY_ACT_RELAY) {
        /* Retains nothing, creates no stream; the sender still hears the
         * key's retained length, as after any push in the reference. */
        eff->broadcast = true;
        eff->seq = ++r->last_seq;
        r->last_ms = now_ms;
        if (st != NULL)
            set_stream_size(st, eff);
        return RELAY_OK;
    }
    /* What the room's retained bytes become, to refuse before touching. */
    base = st != NULL ? st->bytes : cmd->key_len;
    switch (cmd->action) {
    case RELAY_ACT_REPLACE:
        drop = st != NULL ? st->n : 0;
        drop_bytes = st != NULL ? st->bytes - st->key_len : 0;
        break;
    case RELAY_ACT_COMPACT:
        if (st != NULL) {
            drop = stream_upper(st, cmd->compact_seq);
            for (size_t i = 0; i < drop; i++)
                drop_bytes += st->e[i].value_len;
        }
        break;
    default:
        break;
    }
    new_bytes = r->bytes - (st != NULL ? st->bytes : 0) + base - drop_bytes +
                cmd->value_len;
    if (new_bytes > s->lim.max_room_bytes) {
        eff->status = RELAY_ETOOBIG;
        return RELAY_OK;
    }

    val = malloc(cmd->value_len > 0 ? cmd->value_len : 1);
    if (val == NULL)
        return RELAY_ENOMEM;
    if (cmd->value_len > 0)
        memcpy(val, cmd->value, cmd->value_len);
    if (st == NULL) {
        fresh = relay__stream_new(cmd->key, cmd->key_len);
        if (fresh == NULL || !relay__room_key_reserve(r))
            goto nomem;
        fresh->cow_gen = s->pin.gen; /* in no view */
        st = fresh;
    }
    /* Compact and replace never grow the array past n + 1 either. While a
     * view shares the array (view.c) it is copied before it would move or
     * change below n: appends alone write past what the view reads. The
     * dropped values and the old array may need deferred frees. */
    if (!relay__defer_reserve(s, drop + 1))
        goto nomem;
    if (relay__stream_shared(s, st) &&
        (st->cap < st->n - drop + 1 ||
         (st->n > 0 && (cmd->action == RELAY_ACT_COMPACT ||
                        cmd->action == RELAY_ACT_REPLACE)))) {
        if (!relay__stream_cow(s, st, st->n - drop + 1))
            goto nomem;
    } else if (!relay__stream_reserve(st, st->n - drop + 1)) {
        goto nomem;
    }
    if (fresh != NULL)
        relay__room_add_key(r, fresh);

    for (size_t i = 0; i < drop; i++)
        relay__defer_free(s, (void *)st->e[i].value);
    r->entries -= drop;
    r->bytes = new_bytes;
    st->bytes = base - drop_bytes + cmd->value_len;
    if (cmd->action == RELAY_ACT_COMPACT) {
        /* Keep seqs > S, put {value, S} first. */
        memmove(&st->e[1], &st->e[drop], (st->n - drop) * sizeof(*st->e));
        st->n = st->n - drop + 1;
        st->e[0] = (struct relay_entry){
            .seq = cmd->compact_seq, .value = val, .value_len = cmd->value_len};
        eff->seq = cmd->compact_seq;
        /* get's binary search needs seqs strictly increasing. */
        assert(st->n == 1 || st->e[1].seq > st->e[0].seq);
    } else {
        if (cmd->action == RELAY_ACT_REPLACE)
            st->n = 0;
        eff->broadcast = true;
        eff->seq = ++r->last_seq;
        assert(st->n == 0 || st->e[st->n - 1].seq < eff->seq);
        st->e[st->n++] = (struct relay_entry){
            .seq = eff->seq, .value = val, .value_len = cmd->value_len};
    }
    r->entries++;
    r->last_ms = now_ms;
    set_stream_size(st, eff);
    return RELAY_OK;
nomem:
    free(val);
    if (fresh != NULL)
        relay__stream_free(fresh);
    return RELAY_ENOMEM;
}

/* ---- reads --------------------------------------------------------------- */

bool relay_room_exists(const struct relay_state *s, const char *room,
                       size_t room_len)
{
    return relay__room_find(s, room, room_len) != NULL;
}

size_t relay_state_room_count(const struct relay_state *s)
{
    return s->n_rooms;
}

uint64_t relay_room_last_seq(const struct relay_state *s, const char *room,
                             size_t room_len)
{
    const struct relay__room *r = relay__room_find(s, room, room_len);

    return r != NULL ? r->last_seq : 0;
}

int relay_stream_read(const struct relay_state *s, const char *room,
                      size_t room_len, const char *key, size_t key_len,
                      uint64_t after, const struct relay_entry **entries,
                      size_t *n)
{
    const struct relay__room *r = relay__room_find(s, room, room_len);
    const struct relay__stream *st;
    size_t i;

    *entries = NULL;
    *n = 0;
    if (r == NULL)
        return RELAY_ENOROOM;
    st = relay__room_find_key(r, key, key_len);
    if (st == NULL)
        return RELAY_OK;
    i = stream_upper(st, after);
    *entries = st->e + i;
    *n = st->n - i;
    return RELAY_OK;
}

int relay_room_keys(const struct relay_state *s, const char *room,
                    size_t room_len, relay_key_cb cb, void *arg)
{
    const struct relay__room *r = relay__room_find(s, room, room_len);

    if (r == NULL)
        return RELAY_ENOROOM;
    for (const struct relay__stream *st = r->khead; st != NULL; st = st->onext)
        cb(arg, st->key, st->key_len);
    return RELAY_OK;
}

static void room_fill_info(const struct relay__room *r,
                           struct relay_room_info *ri)
{
    ri->id = r->id;
    ri->id_len = r->id_len;
    ri->keys = r->n_keys;
    ri->entries = r->entries;
    ri->bytes = r->bytes;
    ri->last_seq = r->last_seq;
    ri->last_ms = r->last_ms;
}

void relay_rooms_each(const struct relay_state *s, relay_room_cb cb, void *arg)
{
    for (const struct relay__room *r = s->rhead; r != NULL; r = r->onext) {
        struct relay_room_info ri;

        room_fill_info(r, &ri);
        cb(arg, &ri);
    }
}

int relay_room_info(const struct relay_state *s, const char *room,
                    size_t room_len, struct relay_room_info *out)
{
    const struct relay__room *r = relay__room_find(s, room, room_len);

    if (r == NULL)
        return RELAY_ENOROOM;
    room_fill_info(r, out);
    return RELAY_OK;
}
