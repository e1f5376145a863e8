/*
 * state_internal.h - the replicated state's types and the functions its
 * files share. Nothing here is part of relay.h: other modules see struct
 * relay_state as opaque and use relay.h alone.
 *
 * The state is split the way libraft splits its own (one file per concern):
 *   state.c     lifecycle, errors, relay_state_apply (the dispatch and the
 *               dedupe gate around every command)
 *   rooms.c     rooms and their keyed streams: the four actions, reads
 *   dedupe.c    the dedupe table (origin session -> last applied counter)
 *   nodes.c     the node directory (node id -> raft and HTTP address)
 *   settings.c  cluster settings (limits changed through the log)
 *   snapshot.c  the whole state to and from msgpack bytes
 *   view.c      the state frozen for an encoder on another thread, and what
 *               the state keeps alive while such a view is out
 *
 * Determinism is the point of every choice in them. Hash tables only find
 * things; whatever is walked (rooms, keys, dedupe sessions, nodes) is walked
 * in an order that depends on the applied commands alone: creation order for
 * rooms and keys, least-recently-applied order for dedupe sessions, id order
 * for nodes. So two nodes fed the same log produce byte-identical snapshots,
 * although each keys its tables (htab.h, over client-chosen room ids, stream
 * keys and origins) with its own random seed.
 *
 * Every mutation allocates first and changes state last, so ENOMEM leaves
 * the state as it was. The helpers below that cannot fail say so; their
 * callers reserved what they need beforehand.
 */
#ifndef DRIFTD_RELAY_STATE_INTERNAL_H
#define DRIFTD_RELAY_STATE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "htab.h"
#include "relay.h"

struct msgpack_packer;

/* ---- types --------------------------------------------------------------- */

/* One key's retained entries, sorted by seq (rooms.c). */
struct relay__stream {
    char *key;
    size_t key_len;
    struct relay_entry *e; /* values malloc'd, owned */
    size_t n, cap;
    size_t bytes;                /* key_len + sum of value lengths */
    uint64_t cow_gen; /* < pin.gen while a view shares e[] (view.c) */
    struct htab_node hnode;      /* in the room's key table */
    struct relay__stream *onext; /* creation order */
};

struct relay__room {
    char *id;
    size_t id_len;
    uint64_t last_seq;
    uint64_t last_ms; /* log time of creation or the last applied push */
    size_t bytes;     /* retained bytes over all streams */
    size_t entries;   /* retained entries over all streams */
    struct htab keys; /* key -> struct relay__stream */
    size_t n_keys;
    struct relay__stream *khead, *ktail;
    struct htab_node hnode; /* in the state's room table */
    struct relay__room *oprev, *onext;
};

/* The last applied counter of one origin session (dedupe.c). */
struct relay__dd {
    uint32_t node;
    uint64_t session;
    uint64_t counter;
    uint64_t last_ms;
    uint8_t key[12]; /* node, session (little-endian): the table key */
    struct htab_node hnode;
    struct relay__dd *lprev, *lnext; /* head: least recently applied */
};

/* One node directory entry (nodes.c); both addresses are C strings. */
struct relay__dnode {
    uint32_t id;
    char *raft;
    char *http;
};

struct relay_state {
    struct relay_limits lim;
    uint32_t set_mask; /* settings set through the log (bit = index) */
    uint8_t seed[RELAY_SEED_LEN]; /* of every hash table */
    struct htab rooms;            /* id -> struct relay__room */
    size_t n_rooms;
    struct relay__room *rhead, *rtail;

    struct htab dedupe; /* (node, session) -> struct relay__dd */
    size_t n_dd;
    struct relay__dd *lhead, *ltail;

    struct relay__dnode *nodes; /* sorted by id */
    size_t n_nodes;

    /* While a view is out (view.c): what it may read and the state let
     * go of meanwhile, freed at its release. Stays with the state object
     * when relay_state_restore swaps contents. */
    struct relay__pin {
        bool active;
        uint64_t gen; /* bumped by each view */
        void **dead;  /* values and entry arrays */
        size_t n_dead, cap_dead;
        struct relay__room *dead_rooms; /* linked by onext */
    } pin;
};

/* ---- state.c ------------------------------------------------------------- */

/* A NUL-terminated malloc'd copy of n bytes (which may hold NULs), or NULL. */
char *relay__dup_bytes(const char *p, size_t n);

/* ---- rooms.c ------------------------------------------------------------- */

/* A stream with a copy of key and no entries, or NULL (out of memory). */
struct relay__stream *relay__stream_new(const char *key, size_t key_len);
/* Frees st, its key and its values (st must not be linked in a room). */
void relay__stream_free(struct relay__stream *st);
/* Frees r with its streams (r must be unlinked). */
void relay__room_free(struct relay__room *r);
/* Makes room for `need` entries; false when out of memory. */
bool relay__stream_reserve(struct relay__stream *st, size_t need);

struct relay__room *relay__room_find(const struct relay_state *s,
                                     const char *id, size_t id_len);
/* Creates and links a room with a copy of id (no limit checks); NULL when
 * out of memory, with the state unchanged. */
struct relay__room *relay__room_insert(struct relay_state *s, const char *id,
                                       size_t id_len);
struct relay__stream *relay__room_find_key(const struct relay__room *r,
                                           const char *key, size_t key_len);
/* Makes room in the key table for one more key; false when out of memory. */
bool relay__room_key_reserve(struct relay__room *r);
/* Links a new stream (relay__room_key_reserve done, so this cannot fail);
 * r owns it from then on. */
void relay__room_add_key(struct relay__room *r, struct relay__stream *st);
/* Frees every room and closes the room table. */
void relay__rooms_clear(struct relay_state *s);

/* The room commands: refusals go to eff->status and return RELAY_OK;
 * RELAY_ENOMEM leaves the state unchanged. */
int relay__apply_create(struct relay_state *s, const struct relay_cmd *cmd,
                        uint64_t now_ms, struct relay_effects *eff);
int relay__apply_delete(struct relay_state *s, const struct relay_cmd *cmd,
                        struct relay_effects *eff);
int relay__apply_push(struct relay_state *s, const struct relay_cmd *cmd,
                      uint64_t now_ms, struct relay_effects *eff);

/* ---- view.c -------------------------------------------------------------- */

/* Whether a view may read st's entry array (then it must not be changed in
 * place or moved: relay__stream_cow first). */
bool relay__stream_shared(const struct relay_state *s,
                          const struct relay__stream *st);
/* Gives st a private copy of its entries with room for `need`; the old
 * array waits for the view's release (one relay__defer_reserve slot).
 * false when out of memory, st unchanged. */
bool relay__stream_cow(struct relay_state *s, struct relay__stream *st,
                       size_t need);
/* Makes room to defer k frees; always true with no view out. */
bool relay__defer_reserve(struct relay_state *s, size_t k);
/* free(p), or later if a view is out (a slot was reserved). */
void relay__defer_free(struct relay_state *s, void *p);
/* Frees an unlinked room, or keeps it until the view's release. */
void relay__room_retire(struct relay_state *s, struct relay__room *r);
/* A view of s that pins nothing (for encoding at once), and its end. */
int relay__view_capture(const struct relay_state *s, struct relay_view **out);
void relay__view_drop(struct relay_view *v);
/* The snapshot of a view; RELAY_ECANCELED once relay_view_cancel ran. */
int relay__view_encode(struct relay_view *v, uint8_t **buf, size_t *len);
/* Frees the pin's own list (no view may be out). */
void relay__pin_close(struct relay_state *s);

/* ---- snapshot.c ---------------------------------------------------------- */

/* The snapshot's first three items (its array, magic and version). */
void relay__snap_head(struct msgpack_packer *pk);

/* ---- dedupe.c ------------------------------------------------------------ */

struct relay__dd *relay__dd_find(const struct relay_state *s, uint32_t node,
                                 uint64_t session);
/* Makes room in the table for one more session; false when out of memory. */
bool relay__dd_reserve(struct relay_state *s);
/* Links d (malloc'd, node and session set) at the most-recent end; the
 * state owns it. relay__dd_reserve done, so this cannot fail. */
void relay__dd_link(struct relay_state *s, struct relay__dd *d);
/*
 * The gate before a command with origin o applies at log time now_ms:
 * forgets sessions idle past the TTL, then returns RELAY_EDUP if o's counter
 * was applied before. For a session not in the table it allocates the
 * record into *spare (left NULL otherwise), so relay__dd_record cannot fail
 * once the command has applied. RELAY_OK, RELAY_EDUP or RELAY_ENOMEM.
 */
int relay__dd_admit(struct relay_state *s, const struct relay_origin *o,
                    uint64_t now_ms, struct relay__dd **spare);
/* Records that o was applied (or refused) at now_ms, taking *spare (set to
 * NULL) when the session is new; evicts beyond max_dedupe. */
void relay__dd_record(struct relay_state *s, const struct relay_origin *o,
                      uint64_t now_ms, struct relay__dd **spare);
/* Frees every record and closes the table. */
void relay__dd_clear(struct relay_state *s);

/* ---- nodes.c ------------------------------------------------------------- */

/* Inserts or updates a node with copies of the addresses; RELAY_ENOMEM
 * leaves the directory unchanged. */
int relay__node_set(struct relay_state *s, uint32_t id, const char *raft,
                    size_t raft_len, const char *http, size_t http_len);
/* NODE_SET and NODE_FORGET, as the room commands above. */
int relay__apply_node(struct relay_state *s, const struct relay_cmd *cmd,
                      struct relay_effects *eff);
/* Frees the directory. */
void relay__nodes_clear(struct relay_state *s);

/* ---- settings.c ---------------------------------------------------------- */

/* lim's setting i (relay_setting_name order) becomes v. */
void relay__limits_set(struct relay_limits *lim, size_t i, uint64_t v);
/* dst = the defaults, overridden by src's non-zero fields (src may be
 * NULL). */
void relay__limits_fill(struct relay_limits *dst,
                        const struct relay_limits *src);
/* RELAY_CMD_CONFIG, as the room commands above. */
int relay__apply_config(struct relay_state *s, const struct relay_cmd *cmd,
                        struct relay_effects *eff);

#endif
