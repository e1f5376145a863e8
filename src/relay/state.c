/*
 * state.c - rooms, keyed streams, seqs, the dedupe table and the node
 * directory: the deterministic state every node rebuilds from the log.
 *
 * Determinism is the point of every choice here. Hash tables only find
 * things; whatever is walked (rooms, keys, dedupe sessions, nodes) is walked
 * in an order that depends on the applied commands alone: creation order for
 * rooms and keys, least-recently-applied order for dedupe sessions, id order
 * for nodes. So two nodes fed the same log produce byte-identical snapshots,
 * although each keys its tables (htab.h, over client-chosen room ids, stream
 * keys and origins) with its own random seed.
 *
 * A stream is a contiguous array of entries sorted by seq (appends only grow
 * seqs; compact puts S first and keeps only seqs > S), so reads with `after`
 * are a binary search and hand out the array itself.
 *
 * Every mutation allocates first and changes state last, so ENOMEM leaves
 * the state as it was.
 */
#include <stdlib.h>
#include <string.h>

#include "codec_internal.h"
#include "htab.h"
#include "relay.h"

/* ---- small helpers -------------------------------------------------------- */

/* A NUL-terminated copy of n bytes (which may hold NULs). */
static char *dup_bytes(const char *p, size_t n)
{
    char *c = malloc(n + 1);

    if (c == NULL)
        return NULL;
    if (n > 0)
        memcpy(c, p, n);
    c[n] = '\0';
    return c;
}

/* ---- types ---------------------------------------------------------------- */

struct stream {
    char *key;
    size_t key_len;
    struct relay_entry *e; /* values malloc'd, owned */
    size_t n, cap;
    size_t bytes;           /* key_len + sum of value lengths */
    struct htab_node hnode; /* in the room's key table */
    struct stream *onext;   /* creation order */
};

struct room {
    char *id;
    size_t id_len;
    uint64_t last_seq;
    uint64_t last_ms; /* log time of creation or the last applied push */
    size_t bytes;   /* retained bytes over all streams */
    size_t entries; /* retained entries over all streams */
    struct htab keys; /* key -> struct stream */
    size_t n_keys;
    struct stream *khead, *ktail;
    struct htab_node hnode; /* in the state's room table */
    struct room *oprev, *onext;
};

struct dd {
    uint32_t node;
    uint64_t session;
    uint64_t counter;
    uint64_t last_ms;
    uint8_t key[12]; /* node, session (little-endian): the table key */
    struct htab_node hnode;
    struct dd *lprev, *lnext; /* head: least recently applied */
};

struct dnode {
    uint32_t id;
    char *raft;
    char *http;
};

struct relay_state {
    struct relay_limits lim;
    uint32_t set_mask; /* settings set through the log (bit = index) */
    uint8_t seed[RELAY_SEED_LEN]; /* of every hash table */
    struct htab rooms;            /* id -> struct room */
    size_t n_rooms;
    struct room *rhead, *rtail;

    struct htab dedupe; /* (node, session) -> struct dd */
    size_t n_dd;
    struct dd *lhead, *ltail;

    struct dnode *nodes; /* sorted by id */
    size_t n_nodes;
};

/* ---- errors and limits ---------------------------------------------------- */

const char *relay_strerror(int code)
{
    switch (code) {
    case RELAY_OK:
        return "ok";
    case RELAY_ENOMEM:
        return "out of memory";
    case RELAY_EINVAL:
        return "invalid input";
    case RELAY_ENOROOM:
        return "room not found";
    case RELAY_EEXIST:
        return "room already exists";
    case RELAY_ETOOBIG:
        return "size limit exceeded";
    case RELAY_EFULL:
        return "too many rooms";
    case RELAY_ESEQ:
        return "compact seq must be between 1 and the room's last seq";
    case RELAY_EDUP:
        return "duplicate command (already applied)";
    case RELAY_EDEPTH:
        return "value nested too deeply";
    case RELAY_EACTIVE:
        return "room was active since the delete was decided";
    default:
        return "unknown error";
    }
}

void relay_limits_default(struct relay_limits *lim)
{
    lim->max_key_len = 1024;
    lim->max_value_len = 1024 * 1024;
    lim->max_room_bytes = 64 * 1024 * 1024;
    lim->max_rooms = 100000;
    lim->max_dedupe = 65536;
    lim->dedupe_ttl_ms = 3600 * 1000;
}

/* ---- cluster settings ------------------------------------------------------ */

static const struct {
    const char *name;
    uint64_t min, max;
} settings[RELAY_SETTINGS_N] = {
    {"max_value_len", 1024, (uint64_t)64 << 20},
    {"max_room_bytes", 1024, (uint64_t)1 << 40},
    {"max_rooms", 1, 100000000},
    {"max_key_len", 1, 65536},
    {"max_dedupe", 16, 100000000},
    {"dedupe_ttl_ms", 1000, (uint64_t)30 * 24 * 3600 * 1000},
};
/* Set at bootstrap from the first leader's flags. */
#define SETTINGS_BOOTSTRAP 0x7u

const char *relay_setting_name(size_t i)
{
    return i < RELAY_SETTINGS_N ? settings[i].name : NULL;
}

int relay_setting_find(const char *name, size_t len)
{
    for (size_t i = 0; i < RELAY_SETTINGS_N; i++)
        if (strlen(settings[i].name) == len &&
            memcmp(settings[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

void relay_setting_range(size_t i, uint64_t *min, uint64_t *max)
{
    *min = settings[i].min;
    *max = settings[i].max;
}

uint64_t relay_limits_setting(const struct relay_limits *lim, size_t i)
{
    switch (i) {
    case 0:
        return lim->max_value_len;
    case 1:
        return lim->max_room_bytes;
    case 2:
        return lim->max_rooms;
    case 3:
        return lim->max_key_len;
    case 4:
        return lim->max_dedupe;
    default:
        return lim->dedupe_ttl_ms;
    }
}

static void limits_set(struct relay_limits *lim, size_t i, uint64_t v)
{
    switch (i) {
    case 0:
        lim->max_value_len = (size_t)v;
        break;
    case 1:
        lim->max_room_bytes = (size_t)v;
        break;
    case 2:
        lim->max_rooms = (size_t)v;
        break;
    case 3:
        lim->max_key_len = (size_t)v;
        break;
    case 4:
        lim->max_dedupe = (size_t)v;
        break;
    default:
        lim->dedupe_ttl_ms = v;
        break;
    }
}

uint64_t relay_setting_value(const struct relay_state *s, size_t i, bool *set)
{
    *set = (s->set_mask >> i & 1u) != 0;
    return relay_limits_setting(&s->lim, i);
}

bool relay_state_configured(const struct relay_state *s)
{
    return (s->set_mask & SETTINGS_BOOTSTRAP) == SETTINGS_BOOTSTRAP;
}

static int apply_config(struct relay_state *s, const struct relay_cmd *cmd,
                        struct relay_effects *eff)
{
    int i = relay_setting_find(cmd->key, cmd->key_len);

    if (i < 0 || cmd->compact_seq < settings[i].min ||
        cmd->compact_seq > settings[i].max) {
        eff->status = RELAY_EINVAL;
        return RELAY_OK;
    }
    limits_set(&s->lim, (size_t)i, cmd->compact_seq);
    s->set_mask |= 1u << i;
    return RELAY_OK;
}

static void limits_fill(struct relay_limits *dst, const struct relay_limits *src)
{
    struct relay_limits def;

    relay_limits_default(&def);
    *dst = def;
    if (src == NULL)
        return;
    if (src->max_key_len != 0)
        dst->max_key_len = src->max_key_len;
    if (src->max_value_len != 0)
        dst->max_value_len = src->max_value_len;
    if (src->max_room_bytes != 0)
        dst->max_room_bytes = src->max_room_bytes;
    if (src->max_rooms != 0)
        dst->max_rooms = src->max_rooms;
    if (src->max_dedupe != 0)
        dst->max_dedupe = src->max_dedupe;
    if (src->dedupe_ttl_ms != 0)
        dst->dedupe_ttl_ms = src->dedupe_ttl_ms;
}

/* ---- streams -------------------------------------------------------------- */

static void stream_free(struct stream *st)
{
    for (size_t i = 0; i < st->n; i++)
        free((void *)st->e[i].value);
    free(st->e);
    free(st->key);
    free(st);
}

static struct stream *stream_new(const char *key, size_t key_len)
{
    struct stream *st = calloc(1, sizeof(*st));

    if (st == NULL)
        return NULL;
    st->key = dup_bytes(key, key_len);
    if (st->key == NULL) {
        free(st);
        return NULL;
    }
    st->key_len = key_len;
    return st;
}

static bool stream_reserve(struct stream *st, size_t need)
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
static size_t stream_upper(const struct stream *st, uint64_t after)
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

/* ---- rooms ---------------------------------------------------------------- */

static void room_free(struct room *r)
{
    struct stream *st = r->khead;

    while (st != NULL) {
        struct stream *next = st->onext;

        stream_free(st);
        st = next;
    }
    htab_close(&r->keys);
    free(r->id);
    free(r);
}

static struct stream *room_find_key(const struct room *r, const char *key,
                                    size_t key_len)
{
    struct htab_node *n = htab_find(&r->keys, key, key_len);

    return n != NULL ? HTAB_ENTRY(n, struct stream, hnode) : NULL;
}

/* Makes room in the key table for one more key. */
static bool room_key_reserve(struct room *r)
{
    return htab_reserve(&r->keys, r->n_keys + 1) == HTAB_OK;
}

/* Links a new stream (room_key_reserve done, so this cannot fail). */
static void room_add_key(struct room *r, struct stream *st)
{
    htab_insert(&r->keys, &st->hnode, st->key, st->key_len);
    if (r->ktail != NULL)
        r->ktail->onext = st;
    else
        r->khead = st;
    r->ktail = st;
    r->n_keys++;
}

static struct room *find_room(const struct relay_state *s, const char *id,
                              size_t id_len)
{
    struct htab_node *n = htab_find(&s->rooms, id, id_len);

    return n != NULL ? HTAB_ENTRY(n, struct room, hnode) : NULL;
}

/* Creates and links a room (no limit checks). */
static struct room *room_insert(struct relay_state *s, const char *id,
                                size_t id_len)
{
    struct room *r;

    if (htab_reserve(&s->rooms, s->n_rooms + 1) != HTAB_OK)
        return NULL;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->id = dup_bytes(id, id_len);
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

static void room_unlink(struct relay_state *s, struct room *r)
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

/* ---- dedupe table --------------------------------------------------------- */

/* The table key of an origin session: fixed width and byte order, so it
 * does not depend on struct padding. */
static void dd_key(uint8_t key[12], uint32_t node, uint64_t session)
{
    for (int i = 0; i < 4; i++)
        key[i] = (uint8_t)(node >> (8 * i));
    for (int i = 0; i < 8; i++)
        key[4 + i] = (uint8_t)(session >> (8 * i));
}

static struct dd *dd_find(const struct relay_state *s, uint32_t node,
                          uint64_t session)
{
    struct htab_node *n;
    uint8_t key[12];

    dd_key(key, node, session);
    n = htab_find(&s->dedupe, key, sizeof(key));
    return n != NULL ? HTAB_ENTRY(n, struct dd, hnode) : NULL;
}

bool relay_state_origin_applied(const struct relay_state *s,
                                const struct relay_origin *o)
{
    const struct dd *d = dd_find(s, o->node, o->session);

    return d != NULL && o->counter <= d->counter;
}

static bool dd_reserve(struct relay_state *s)
{
    return htab_reserve(&s->dedupe, s->n_dd + 1) == HTAB_OK;
}

static void dd_lru_unlink(struct relay_state *s, struct dd *d)
{
    if (d->lprev != NULL)
        d->lprev->lnext = d->lnext;
    else
        s->lhead = d->lnext;
    if (d->lnext != NULL)
        d->lnext->lprev = d->lprev;
    else
        s->ltail = d->lprev;
    d->lprev = d->lnext = NULL;
}

static void dd_lru_append(struct relay_state *s, struct dd *d)
{
    d->lprev = s->ltail;
    d->lnext = NULL;
    if (s->ltail != NULL)
        s->ltail->lnext = d;
    else
        s->lhead = d;
    s->ltail = d;
}

static void dd_remove(struct relay_state *s, struct dd *d)
{
    htab_remove(&s->dedupe, &d->hnode);
    dd_lru_unlink(s, d);
    s->n_dd--;
    free(d);
}

/* Links a new record at the most-recent end (dd_reserve done, so this
 * cannot fail). */
static void dd_link(struct relay_state *s, struct dd *d)
{
    dd_key(d->key, d->node, d->session);
    htab_insert(&s->dedupe, &d->hnode, d->key, sizeof(d->key));
    dd_lru_append(s, d);
    s->n_dd++;
}

/* Forgets sessions idle for longer than the TTL at log time now_ms. */
static void dd_expire(struct relay_state *s, uint64_t now_ms)
{
    while (s->lhead != NULL && now_ms > s->lhead->last_ms &&
           now_ms - s->lhead->last_ms > s->lim.dedupe_ttl_ms)
        dd_remove(s, s->lhead);
}

/*
 * Records that origin o was applied (or refused) at now_ms. spare is a
 * pre-allocated record used when the session is new (set to NULL when used).
 */
static void dd_record(struct relay_state *s, const struct relay_origin *o,
                      uint64_t now_ms, struct dd **spare)
{
    struct dd *d = dd_find(s, o->node, o->session);

    if (d == NULL) {
        d = *spare;
        *spare = NULL;
        d->node = o->node;
        d->session = o->session;
        dd_link(s, d);
    } else {
        dd_lru_unlink(s, d);
        dd_lru_append(s, d);
    }
    d->counter = o->counter;
    /* Log time can step back when leadership moves between nodes with
     * skewed clocks; clamping keeps the list ordered by time, so expiry
     * from the head stays exact. */
    if (d->lprev != NULL && d->lprev->last_ms > now_ms)
        now_ms = d->lprev->last_ms;
    d->last_ms = now_ms;
    while (s->n_dd > s->lim.max_dedupe)
        dd_remove(s, s->lhead);
}

/* ---- node directory ------------------------------------------------------- */

static size_t node_pos(const struct relay_state *s, uint32_t id)
{
    size_t lo = 0, hi = s->n_nodes;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (s->nodes[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool relay_node_lookup(const struct relay_state *s, uint32_t id,
                       struct relay_node_info *out)
{
    size_t i = node_pos(s, id);

    if (i == s->n_nodes || s->nodes[i].id != id)
        return false;
    out->id = id;
    out->raft_addr = s->nodes[i].raft;
    out->http_addr = s->nodes[i].http;
    return true;
}

void relay_nodes_each(const struct relay_state *s, relay_node_cb cb, void *arg)
{
    for (size_t i = 0; i < s->n_nodes; i++) {
        struct relay_node_info ni = {.id = s->nodes[i].id,
                                     .raft_addr = s->nodes[i].raft,
                                     .http_addr = s->nodes[i].http};
        cb(arg, &ni);
    }
}

/* Inserts or updates a node; RELAY_ENOMEM leaves the directory unchanged. */
static int node_set(struct relay_state *s, uint32_t id, const char *raft,
                    size_t raft_len, const char *http, size_t http_len)
{
    size_t i = node_pos(s, id);
    char *r = dup_bytes(raft, raft_len);
    char *h = dup_bytes(http, http_len);

    if (r == NULL || h == NULL)
        goto err;
    if (i < s->n_nodes && s->nodes[i].id == id) {
        free(s->nodes[i].raft);
        free(s->nodes[i].http);
    } else {
        struct dnode *nn = realloc(s->nodes, (s->n_nodes + 1) * sizeof(*nn));

        if (nn == NULL)
            goto err;
        s->nodes = nn;
        memmove(&s->nodes[i + 1], &s->nodes[i],
                (s->n_nodes - i) * sizeof(*nn));
        s->n_nodes++;
        s->nodes[i].id = id;
    }
    s->nodes[i].raft = r;
    s->nodes[i].http = h;
    return RELAY_OK;
err:
    free(r);
    free(h);
    return RELAY_ENOMEM;
}

static int node_forget(struct relay_state *s, uint32_t id)
{
    size_t i = node_pos(s, id);

    if (i == s->n_nodes || s->nodes[i].id != id)
        return RELAY_ENOROOM;
    free(s->nodes[i].raft);
    free(s->nodes[i].http);
    memmove(&s->nodes[i], &s->nodes[i + 1],
            (s->n_nodes - i - 1) * sizeof(*s->nodes));
    s->n_nodes--;
    return RELAY_OK;
}

/* ---- lifecycle ------------------------------------------------------------ */

static void state_clear(struct relay_state *s)
{
    struct room *r = s->rhead;
    struct dd *d = s->lhead;

    while (r != NULL) {
        struct room *next = r->onext;

        room_free(r);
        r = next;
    }
    while (d != NULL) {
        struct dd *next = d->lnext;

        free(d);
        d = next;
    }
    for (size_t i = 0; i < s->n_nodes; i++) {
        free(s->nodes[i].raft);
        free(s->nodes[i].http);
    }
    free(s->nodes);
    htab_close(&s->rooms);
    htab_close(&s->dedupe);
    s->nodes = NULL;
    s->n_rooms = s->n_dd = s->n_nodes = 0;
    s->rhead = s->rtail = NULL;
    s->lhead = s->ltail = NULL;
}

int relay_state_create_seeded(const struct relay_limits *lim,
                              const uint8_t *seed, struct relay_state **out)
{
    struct relay_state *s = calloc(1, sizeof(*s));

    *out = NULL;
    if (s == NULL)
        return RELAY_ENOMEM;
    limits_fill(&s->lim, lim);
    if (seed != NULL)
        memcpy(s->seed, seed, sizeof(s->seed));
    htab_init(&s->rooms, s->seed);
    htab_init(&s->dedupe, s->seed);
    *out = s;
    return RELAY_OK;
}

int relay_state_create(const struct relay_limits *lim, struct relay_state **out)
{
    return relay_state_create_seeded(lim, NULL, out);
}

void relay_state_destroy(struct relay_state *s)
{
    if (s == NULL)
        return;
    state_clear(s);
    free(s);
}

/* ---- apply ---------------------------------------------------------------- */

static int apply_create(struct relay_state *s, const struct relay_cmd *cmd,
                        uint64_t now_ms, struct relay_effects *eff)
{
    struct room *r;

    if (cmd->room_len == 0 || cmd->room_len > RELAY_ROOM_ID_MAX) {
        eff->status = RELAY_EINVAL;
        return RELAY_OK;
    }
    if (find_room(s, cmd->room, cmd->room_len) != NULL) {
        eff->status = RELAY_EEXIST;
        return RELAY_OK;
    }
    if (s->n_rooms >= s->lim.max_rooms) {
        eff->status = RELAY_EFULL;
        return RELAY_OK;
    }
    r = room_insert(s, cmd->room, cmd->room_len);
    if (r == NULL)
        return RELAY_ENOMEM;
    r->last_ms = now_ms;
    return RELAY_OK;
}

static int apply_delete(struct relay_state *s, const struct relay_cmd *cmd,
                        struct relay_effects *eff)
{
    struct room *r = find_room(s, cmd->room, cmd->room_len);

    if (r == NULL) {
        eff->status = RELAY_ENOROOM;
        return RELAY_OK;
    }
    if (cmd->compact_seq != 0 && r->last_ms != cmd->compact_seq) {
        eff->status = RELAY_EACTIVE;
        return RELAY_OK;
    }
    room_unlink(s, r);
    room_free(r);
    return RELAY_OK;
}

static void set_stream_size(const struct stream *st, struct relay_effects *eff)
{
    if (st->n > 1) {
        eff->has_stream_size = true;
        eff->stream_size = st->n;
    }
}

static int apply_push(struct relay_state *s, const struct relay_cmd *cmd,
                      uint64_t now_ms, struct relay_effects *eff)
{
    struct room *r;
    struct stream *st, *fresh = NULL;
    uint8_t *val = NULL;
    size_t drop = 0, drop_bytes = 0, new_bytes, base;

    if ((unsigned)cmd->action > RELAY_ACT_COMPACT) {
        eff->status = RELAY_EINVAL;
        return RELAY_OK;
    }
    r = find_room(s, cmd->room, cmd->room_len);
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

    st = room_find_key(r, cmd->key, cmd->key_len);
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
        fresh = stream_new(cmd->key, cmd->key_len);
        if (fresh == NULL || !room_key_reserve(r))
            goto nomem;
        st = fresh;
    }
    /* Compact and replace never grow the array past n + 1 either. */
    if (!stream_reserve(st, st->n - drop + 1))
        goto nomem;
    if (fresh != NULL)
        room_add_key(r, fresh);

    for (size_t i = 0; i < drop; i++)
        free((void *)st->e[i].value);
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
    } else {
        if (cmd->action == RELAY_ACT_REPLACE)
            st->n = 0;
        eff->broadcast = true;
        eff->seq = ++r->last_seq;
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
        stream_free(fresh);
    return RELAY_ENOMEM;
}

static int apply_node(struct relay_state *s, const struct relay_cmd *cmd,
                      struct relay_effects *eff)
{
    if (cmd->node_id == 0) {
        eff->status = RELAY_EINVAL;
        return RELAY_OK;
    }
    if (cmd->type == RELAY_CMD_NODE_FORGET) {
        eff->status = node_forget(s, cmd->node_id);
        return RELAY_OK;
    }
    /* Addresses are C strings everywhere after this: no NULs inside. */
    if (cmd->raft_addr_len == 0 || cmd->raft_addr_len > RELAY_ADDR_MAX ||
        cmd->http_addr_len > RELAY_ADDR_MAX ||
        memchr(cmd->raft_addr, '\0', cmd->raft_addr_len) != NULL ||
        (cmd->http_addr_len > 0 &&
         memchr(cmd->http_addr, '\0', cmd->http_addr_len) != NULL)) {
        eff->status = RELAY_EINVAL;
        return RELAY_OK;
    }
    return node_set(s, cmd->node_id, cmd->raft_addr, cmd->raft_addr_len,
                    cmd->http_addr, cmd->http_addr_len);
}

int relay_state_apply(struct relay_state *s, const struct relay_cmd *cmd,
                      uint64_t now_ms, struct relay_effects *eff)
{
    struct dd *spare = NULL;
    bool dedupe = cmd->origin.node != 0;
    int rv;

    memset(eff, 0, sizeof(*eff));
    if (dedupe) {
        struct dd *d;

        dd_expire(s, now_ms);
        d = dd_find(s, cmd->origin.node, cmd->origin.session);
        if (d != NULL && cmd->origin.counter <= d->counter) {
            eff->status = RELAY_EDUP;
            return RELAY_OK;
        }
        if (d == NULL) {
            /* Allocated up front so recording cannot fail after applying. */
            if (!dd_reserve(s))
                return RELAY_ENOMEM;
            spare = calloc(1, sizeof(*spare));
            if (spare == NULL)
                return RELAY_ENOMEM;
        }
    }

    switch (cmd->type) {
    case RELAY_CMD_CREATE_ROOM:
        rv = apply_create(s, cmd, now_ms, eff);
        break;
    case RELAY_CMD_PUSH:
        rv = apply_push(s, cmd, now_ms, eff);
        break;
    case RELAY_CMD_DELETE_ROOM:
        rv = apply_delete(s, cmd, eff);
        break;
    case RELAY_CMD_NOOP:
        rv = RELAY_OK;
        break;
    case RELAY_CMD_CONFIG:
        rv = apply_config(s, cmd, eff);
        break;
    case RELAY_CMD_NODE_SET:
    case RELAY_CMD_NODE_FORGET:
        rv = apply_node(s, cmd, eff);
        break;
    default:
        eff->status = RELAY_EINVAL;
        rv = RELAY_OK;
        break;
    }
    if (rv == RELAY_OK && dedupe)
        dd_record(s, &cmd->origin, now_ms, &spare);
    free(spare);
    return rv;
}

/* ---- reads ---------------------------------------------------------------- */

bool relay_room_exists(const struct relay_state *s, const char *room,
                       size_t room_len)
{
    return find_room(s, room, room_len) != NULL;
}

size_t relay_state_room_count(const struct relay_state *s)
{
    return s->n_rooms;
}

uint64_t relay_room_last_seq(const struct relay_state *s, const char *room,
                             size_t room_len)
{
    const struct room *r = find_room(s, room, room_len);

    return r != NULL ? r->last_seq : 0;
}

int relay_stream_read(const struct relay_state *s, const char *room,
                      size_t room_len, const char *key, size_t key_len,
                      uint64_t after, const struct relay_entry **entries,
                      size_t *n)
{
    const struct room *r = find_room(s, room, room_len);
    const struct stream *st;
    size_t i;

    *entries = NULL;
    *n = 0;
    if (r == NULL)
        return RELAY_ENOROOM;
    st = room_find_key(r, key, key_len);
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
    const struct room *r = find_room(s, room, room_len);

    if (r == NULL)
        return RELAY_ENOROOM;
    for (const struct stream *st = r->khead; st != NULL; st = st->onext)
        cb(arg, st->key, st->key_len);
    return RELAY_OK;
}

static void room_fill_info(const struct room *r, struct relay_room_info *ri)
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
    for (const struct room *r = s->rhead; r != NULL; r = r->onext) {
        struct relay_room_info ri;

        room_fill_info(r, &ri);
        cb(arg, &ri);
    }
}

int relay_room_info(const struct relay_state *s, const char *room,
                    size_t room_len, struct relay_room_info *out)
{
    const struct room *r = find_room(s, room, room_len);

    if (r == NULL)
        return RELAY_ENOROOM;
    room_fill_info(r, out);
    return RELAY_OK;
}

/* ---- snapshot ------------------------------------------------------------- */

/*
 * Layout (msgpack):
 *   ["driftd-relay", 1,
 *    [[room_id(bin), last_seq, last_ms, [[key(bin), [seq, value]...]...]]...],
 *    [[node, session, counter, last_ms]...],   dedupe, least recent first
 *    [[id, raft(str), http(str)]...],          directory, by id
 *    [set_mask, value0 .. value5]]             cluster settings (v2)
 * Each stream is [key, seq1, value1, seq2, value2, ...] to avoid one array
 * header per entry. Values are embedded as the msgpack items they are.
 */
#define SNAP_MAGIC "driftd-relay"
#define SNAP_VERSION 2

int relay_state_snapshot(const struct relay_state *s, uint8_t **buf,
                         size_t *len)
{
    struct relay__buf b;
    msgpack_packer pk;

    *buf = NULL;
    *len = 0;
    if (relay__buf_init(&b, 0, 4096) != RELAY_OK)
        return RELAY_ENOMEM;
    relay__buf_packer(&b, &pk);
    msgpack_pack_array(&pk, 6);
    msgpack_pack_str(&pk, sizeof(SNAP_MAGIC) - 1);
    msgpack_pack_str_body(&pk, SNAP_MAGIC, sizeof(SNAP_MAGIC) - 1);
    msgpack_pack_uint32(&pk, SNAP_VERSION);

    msgpack_pack_array(&pk, s->n_rooms);
    for (const struct room *r = s->rhead; r != NULL; r = r->onext) {
        msgpack_pack_array(&pk, 4);
        msgpack_pack_bin(&pk, r->id_len);
        msgpack_pack_bin_body(&pk, r->id, r->id_len);
        msgpack_pack_uint64(&pk, r->last_seq);
        msgpack_pack_uint64(&pk, r->last_ms);
        msgpack_pack_array(&pk, r->n_keys);
        for (const struct stream *st = r->khead; st != NULL; st = st->onext) {
            msgpack_pack_array(&pk, 1 + 2 * st->n);
            msgpack_pack_bin(&pk, st->key_len);
            msgpack_pack_bin_body(&pk, st->key, st->key_len);
            for (size_t i = 0; i < st->n; i++) {
                msgpack_pack_uint64(&pk, st->e[i].seq);
                relay__buf_put(&b, st->e[i].value, st->e[i].value_len);
            }
        }
    }

    msgpack_pack_array(&pk, s->n_dd);
    for (const struct dd *d = s->lhead; d != NULL; d = d->lnext) {
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

    if (b.failed) {
        relay__buf_free(&b);
        return RELAY_ENOMEM;
    }
    *buf = b.data;
    *len = b.len;
    return RELAY_OK;
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

static int restore_stream(struct rd *rd, struct relay_state *s, struct room *r)
{
    struct stream *st;
    const char *key;
    size_t key_len;
    uint32_t n;
    uint64_t prev = 0;

    if (rd_array(rd, &n) != RELAY_OK || n % 2 != 1 ||
        rd_bytes(rd, RELAY__MP_BIN, &key, &key_len) != RELAY_OK ||
        key_len > s->lim.max_key_len)
        return RELAY_EINVAL;
    if (room_find_key(r, key, key_len) != NULL || n < 3)
        return RELAY_EINVAL; /* duplicate key or empty stream */
    /* Each entry takes at least two bytes (seq, value): a count the rest of
     * the input cannot hold is refused before it sizes an allocation (a
     * few corrupt bytes asked for 48 GB). */
    if (n / 2 > (rd->len - rd->pos) / 2)
        return RELAY_EINVAL;
    st = stream_new(key, key_len);
    if (st == NULL)
        return RELAY_ENOMEM;
    if (!room_key_reserve(r) || !stream_reserve(st, n / 2)) {
        stream_free(st);
        return RELAY_ENOMEM;
    }
    room_add_key(r, st);
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
        struct room *r;
        int rv;

        if (rd_array(rd, &four) != RELAY_OK || four != 4 ||
            rd_bytes(rd, RELAY__MP_BIN, &id, &id_len) != RELAY_OK ||
            id_len == 0 || id_len > RELAY_ROOM_ID_MAX ||
            find_room(s, id, id_len) != NULL)
            return RELAY_EINVAL;
        r = room_insert(s, id, id_len);
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
        struct dd *d;

        if (rd_array(rd, &four) != RELAY_OK || four != 4 ||
            rd_uint(rd, &node) != RELAY_OK || node == 0 ||
            node > UINT32_MAX || rd_uint(rd, &session) != RELAY_OK ||
            rd_uint(rd, &counter) != RELAY_OK ||
            rd_uint(rd, &last_ms) != RELAY_OK ||
            dd_find(s, (uint32_t)node, session) != NULL)
            return RELAY_EINVAL;
        if (!dd_reserve(s))
            return RELAY_ENOMEM;
        d = calloc(1, sizeof(*d));
        if (d == NULL)
            return RELAY_ENOMEM;
        d->node = (uint32_t)node;
        d->session = session;
        d->counter = counter;
        d->last_ms = last_ms;
        dd_link(s, d);
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
        limits_set(&s->lim, i, v);
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
            rd_bytes(rd, RELAY__MP_STR, &http, &hl) != RELAY_OK ||
            rl == 0 || rl > RELAY_ADDR_MAX || hl > RELAY_ADDR_MAX ||
            memchr(raft, '\0', rl) != NULL || memchr(http, '\0', hl) != NULL)
            return RELAY_EINVAL;
        if (node_set(s, (uint32_t)id, raft, rl, http, hl) != RELAY_OK)
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
        swap = *s;
        *s = *tmp;
        *tmp = swap;
        if (five == 5) {
            s->lim = tmp->lim;
            s->set_mask = 0;
        }
    }
out:
    relay_state_destroy(tmp);
    return rv;
}
