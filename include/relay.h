/*
 * relay.h - the pure DriftDB state machine and its codecs.
 *
 * relay holds rooms, keyed streams, per-room seq counters and the dedupe
 * table, applies commands deterministically (time and origins arrive as
 * arguments), serialises itself to a snapshot, and converts client messages
 * between JSON / CBOR / msgpack and the canonical msgpack value bytes it
 * stores. It does no I/O, keeps no globals, reads no clock and never logs:
 * outcomes leave as return codes and effect structs.
 *
 * Ownership in one line: every pointer argument is borrowed for the duration
 * of the call unless the comment says otherwise; every out-pointer documented
 * as "malloc'd" is the caller's to free().
 */
#ifndef DRIFTD_RELAY_H
#define DRIFTD_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- error codes ---------------------------------------------------------- */

enum {
    RELAY_OK = 0,
    RELAY_ENOMEM = 1,    /* allocation failed; state unchanged */
    RELAY_EINVAL = 2,    /* malformed input (codec / snapshot / batch) */
    RELAY_ENOROOM = 3,   /* unknown room */
    RELAY_EEXIST = 4,    /* room already exists */
    RELAY_ETOOBIG = 5,   /* a size limit was hit (key, value, room bytes) */
    RELAY_EFULL = 6,     /* a count limit was hit (rooms per node) */
    RELAY_ESEQ = 7,      /* compact seq greater than the room's last seq */
    RELAY_EDUP = 8,      /* origin already applied (dedupe) */
    RELAY_EDEPTH = 9,    /* value nested deeper than RELAY_MAX_DEPTH */
    RELAY_EACTIVE = 10,  /* conditional delete: the room was used since */
    RELAY_ECANCELED = 11, /* a view's encoding was cancelled */
};

/* Static text for a code; never NULL. */
const char *relay_strerror(int code);

/* ---- limits --------------------------------------------------------------- */

#define RELAY_ROOM_ID_MAX 64     /* bytes; ids are URL-safe ASCII */
#define RELAY_MAX_DEPTH 32       /* nesting of arrays/maps inside a value */

/*
 * Limits every node must agree on (they change how the log is applied).
 * Zero in any field means "use the default" (relay_limits_default()).
 */
struct relay_limits {
    size_t max_key_len;        /* default 1 KiB */
    size_t max_value_len;      /* canonical msgpack bytes, default 1 MiB */
    size_t max_room_bytes;     /* retained key+value bytes per room, 64 MiB */
    size_t max_rooms;          /* default 100000 */
    size_t max_dedupe;         /* origin sessions remembered, default 65536 */
    uint64_t dedupe_ttl_ms;    /* forget an origin idle this long, 1 h */
};

void relay_limits_default(struct relay_limits *lim);

/*
 * Cluster settings: the limits that decide whether a command applies are
 * part of the replicated state, changed only by RELAY_CMD_CONFIG through
 * the log, so every node applies the log alike whatever its own flags. A
 * state starts with relay_limits_default() values (or the ones given to
 * relay_state_create, for tests) and no setting marked set.
 * Settings are numbered 0 .. RELAY_SETTINGS_N - 1.
 */
#define RELAY_SETTINGS_N 6
struct relay_state;
const char *relay_setting_name(size_t i);
/* The index of the setting called (name, len), or -1. */
int relay_setting_find(const char *name, size_t len);
/* Its current value, and whether a RELAY_CMD_CONFIG set it. */
uint64_t relay_setting_value(const struct relay_state *s, size_t i, bool *set);
/* The value of setting i in lim (what a node's flags would propose). */
uint64_t relay_limits_setting(const struct relay_limits *lim, size_t i);
/* Valid range of setting i. */
void relay_setting_range(size_t i, uint64_t *min, uint64_t *max);
/* The settings a new cluster takes from its first leader's flags
 * (max_value_len, max_room_bytes, max_rooms) are all set. */
bool relay_state_configured(const struct relay_state *s);

/* ---- commands ------------------------------------------------------------- */

enum relay_action {
    RELAY_ACT_RELAY = 0,
    RELAY_ACT_REPLACE = 1,
    RELAY_ACT_APPEND = 2,
    RELAY_ACT_COMPACT = 3,
};

enum relay_cmd_type {
    RELAY_CMD_CREATE_ROOM = 1, /* room */
    RELAY_CMD_PUSH = 2,        /* room, key, action, compact_seq, value */
    /* room; compact_seq != 0 makes it conditional: applied only when the
     * room's last activity (log ms) is still exactly compact_seq, so an
     * expiry decided by the leader never deletes a room used meanwhile. */
    RELAY_CMD_DELETE_ROOM = 3,
    RELAY_CMD_NOOP = 4,        /* nothing; used to learn the commit point */
    RELAY_CMD_NODE_SET = 5,    /* node directory: node_id, raft/http addr */
    RELAY_CMD_NODE_FORGET = 6, /* node directory: node_id */
    /* A cluster setting (relay_setting_*): key = its name, compact_seq =
     * its value. Refused (RELAY_EINVAL) for an unknown name or a value out
     * of its range. */
    RELAY_CMD_CONFIG = 7,
};

#define RELAY_ADDR_MAX 255 /* bytes of a directory address */

/*
 * Who sent a command. (node, session) names one client session cluster-wide;
 * counter increases by one per command of that session. Session ids must not
 * repeat across restarts of a node (net mixes a random boot nonce into them).
 * node == 0 means "no origin": never deduplicated.
 */
struct relay_origin {
    uint32_t node;
    uint64_t session;
    uint64_t counter;
};

/* A command as it travels in the log. All pointers borrowed. */
struct relay_cmd {
    enum relay_cmd_type type;
    struct relay_origin origin;
    const char *room;
    size_t room_len;
    const char *key;
    size_t key_len;
    enum relay_action action;
    uint64_t compact_seq;       /* RELAY_ACT_COMPACT only */
    const uint8_t *value;       /* canonical msgpack, RELAY_CMD_PUSH only */
    size_t value_len;
    /* RELAY_CMD_NODE_SET / NODE_FORGET only: */
    uint32_t node_id;           /* non-zero */
    const char *raft_addr;      /* "host:port", at most RELAY_ADDR_MAX */
    size_t raft_addr_len;
    const char *http_addr;      /* "host:port", at most RELAY_ADDR_MAX */
    size_t http_addr_len;
};

/*
 * What applying one command did. Pointers inside are borrowed from the
 * command or the state and are valid until the next mutating call.
 */
struct relay_effects {
    int status;              /* RELAY_OK or the refusal (ENOROOM, ESEQ, EDUP..) */
    bool broadcast;          /* send push{key,value,seq} to subscribers */
    uint64_t seq;            /* the seq given (broadcast) or compact S */
    bool has_stream_size;    /* send stream_size to the sender */
    uint64_t stream_size;    /* retained entries on the key after the push */
};

/* ---- state ---------------------------------------------------------------- */

struct relay_state;

/*
 * lim may be NULL for defaults; copied. seed: RELAY_SEED_LEN random bytes
 * (copied) that key the state's hash tables, so clients cannot aim
 * collisions with crafted room ids, keys or origins; a node takes them from
 * getrandom. Nothing observable depends on the seed: two states fed the same
 * commands give byte-identical snapshots whatever their seeds.
 * relay_state_create is the same with an all-zero seed (tests and tools).
 * Returns RELAY_OK or RELAY_ENOMEM.
 */
#define RELAY_SEED_LEN 16
int relay_state_create_seeded(const struct relay_limits *lim,
                              const uint8_t *seed, struct relay_state **out);
int relay_state_create(const struct relay_limits *lim, struct relay_state **out);
void relay_state_destroy(struct relay_state *s);

/*
 * Applies one command at log time now_ms (the entry's timestamp, never the
 * local clock). Deterministic. Returns RELAY_OK when the command was applied
 * OR refused (the refusal is eff->status; state unchanged for a refusal);
 * returns RELAY_ENOMEM only when the state could not be updated for lack of
 * memory (the caller cannot continue applying the log).
 * A command whose origin counter is <= the highest applied for its
 * (node, session) is refused with RELAY_EDUP.
 */
int relay_state_apply(struct relay_state *s, const struct relay_cmd *cmd,
                      uint64_t now_ms, struct relay_effects *eff);

/* Whether the dedupe table records a command of origin o as applied (its
 * session's highest applied counter is >= o->counter). False also when the
 * record has expired. */
bool relay_state_origin_applied(const struct relay_state *s,
                                const struct relay_origin *o);

bool relay_room_exists(const struct relay_state *s, const char *room,
                       size_t room_len);

/* Count of rooms. */
size_t relay_state_room_count(const struct relay_state *s);

/* Last seq given in the room (0 when none yet); 0 for an unknown room. */
uint64_t relay_room_last_seq(const struct relay_state *s, const char *room,
                             size_t room_len);

/* One retained entry, borrowed from the state. */
struct relay_entry {
    uint64_t seq;
    const uint8_t *value; /* canonical msgpack */
    size_t value_len;
};

/*
 * Retained entries of (room, key) with seq > after, in seq order. Sets
 * *entries (borrowed, valid until the next mutating call) and *n. An unknown
 * key gives n = 0. Returns RELAY_ENOROOM for an unknown room.
 */
int relay_stream_read(const struct relay_state *s, const char *room,
                      size_t room_len, const char *key, size_t key_len,
                      uint64_t after, const struct relay_entry **entries,
                      size_t *n);

/*
 * Calls cb(arg, key, key_len) for every key with a stream in the room, in a
 * deterministic order (key creation order). Returns RELAY_ENOROOM or OK.
 */
typedef void (*relay_key_cb)(void *arg, const char *key, size_t key_len);
int relay_room_keys(const struct relay_state *s, const char *room,
                    size_t room_len, relay_key_cb cb, void *arg);

/*
 * Snapshot of the whole state (rooms, streams, seqs, dedupe table) as
 * msgpack. *buf is malloc'd. Two states fed the same commands give
 * byte-identical snapshots. restore replaces the state's content; on error
 * the state is unchanged.
 */
int relay_state_snapshot(const struct relay_state *s, uint8_t **buf,
                         size_t *len);
int relay_state_restore(struct relay_state *s, const uint8_t *buf, size_t len);

/*
 * A view: the state frozen as it is now, for encoding its snapshot on
 * another thread while this one goes on applying commands. Taking one
 * walks the rooms, keys and dedupe sessions, not the entries. Until it is
 * released the state copies a stream's entry array before changing it in
 * place and keeps what it frees (values, arrays, deleted rooms), so memory
 * grows by what is replaced or deleted meanwhile.
 *
 * One view at a time (take gives RELAY_EINVAL otherwise). take, release
 * and every other call on s belong to the state's own thread; encode and
 * cancel may run on any thread while it applies. encode gives the bytes
 * relay_state_snapshot would have given at take (*buf malloc'd), or
 * RELAY_ECANCELED after cancel, or RELAY_ENOMEM. The view must not be
 * encoding when it is released.
 */
struct relay_view;
int relay_view_take(struct relay_state *s, struct relay_view **out);
int relay_view_encode(struct relay_view *v, uint8_t **buf, size_t *len);
void relay_view_cancel(struct relay_view *v);
bool relay_view_cancelled(struct relay_view *v);
void relay_view_release(struct relay_state *s, struct relay_view *v);

/* ---- node directory ------------------------------------------------------ */

/*
 * The replicated directory: every node's raft and HTTP address, so any node
 * can reach the leader's HTTP endpoint. NODE_SET inserts or updates (a node
 * restarted with new addresses), NODE_FORGET removes (ENOROOM when absent).
 * Strings are NUL-terminated and borrowed from the state.
 */
struct relay_node_info {
    uint32_t id;
    const char *raft_addr;
    const char *http_addr;
};

/* false when the id is not in the directory. */
bool relay_node_lookup(const struct relay_state *s, uint32_t id,
                       struct relay_node_info *out);

/* Calls cb for every node in ascending id order. */
typedef void (*relay_node_cb)(void *arg, const struct relay_node_info *ni);
void relay_nodes_each(const struct relay_state *s, relay_node_cb cb,
                      void *arg);

/* ---- room statistics ------------------------------------------------------ */

struct relay_room_info {
    const char *id;       /* NUL-terminated, borrowed */
    size_t id_len;
    size_t keys;          /* keys with a retained stream */
    size_t entries;       /* retained entries over all keys */
    size_t bytes;         /* retained key + value bytes (the limit's measure) */
    uint64_t last_seq;
    uint64_t last_ms;     /* log time of its creation or last applied push */
};

/* Calls cb for every room in creation order. */
typedef void (*relay_room_cb)(void *arg, const struct relay_room_info *ri);
void relay_rooms_each(const struct relay_state *s, relay_room_cb cb,
                      void *arg);
/* RELAY_ENOROOM for an unknown room. */
int relay_room_info(const struct relay_state *s, const char *room,
                    size_t room_len, struct relay_room_info *out);

/* ---- log batches (one raft entry) ----------------------------------------- */

/*
 * A batch is what the proposer puts in one raft entry: the leader's timestamp
 * and a list of commands, as msgpack.
 *
 * Encoding: relay_batch_init, relay_batch_add (copies the command), then
 * relay_batch_finish hands out the bytes. The encoder is reusable after
 * finish or relay_batch_reset.
 */
struct relay_batch_enc;
int relay_batch_enc_create(struct relay_batch_enc **out);
void relay_batch_enc_destroy(struct relay_batch_enc *b);
void relay_batch_reset(struct relay_batch_enc *b);
int relay_batch_add(struct relay_batch_enc *b, const struct relay_cmd *cmd);
size_t relay_batch_count(const struct relay_batch_enc *b);
size_t relay_batch_bytes(const struct relay_batch_enc *b); /* so far */
/*
 * Writes the batch with timestamp now_ms into a buffer from alloc(len);
 * len is a multiple of 8 (raft_uv requires it; the padding is msgpack nil
 * bytes that relay_batch_decode accepts and skips)
 * (e.g. raft_malloc) and resets the encoder. *out is the caller's.
 */
int relay_batch_finish(struct relay_batch_enc *b, uint64_t now_ms,
                       void *(*alloc)(size_t), uint8_t **out, size_t *len);

/*
 * Decodes a batch: calls cb for each command in order with the batch
 * timestamp. The command's pointers borrow from buf. Stops and returns cb's
 * non-zero result. Returns RELAY_EINVAL for malformed bytes (nothing is
 * called after the first malformed command; a batch is validated fully
 * before the first callback, so a malformed batch calls cb zero times).
 */
typedef int (*relay_batch_cb)(void *arg, const struct relay_cmd *cmd,
                              uint64_t now_ms);
int relay_batch_decode(const uint8_t *buf, size_t len, relay_batch_cb cb,
                       void *arg);

/* ---- client message codecs ------------------------------------------------ */

enum relay_fmt {
    RELAY_FMT_JSON = 0,
    RELAY_FMT_CBOR = 1,
    RELAY_FMT_MSGPACK = 2,
};
#define RELAY_FMT_COUNT 3

enum relay_msg_type {
    RELAY_MSG_PUSH = 1,
    RELAY_MSG_GET = 2,
    RELAY_MSG_PING = 3,
};

/* A decoded client message. Fields are owned by the struct (malloc'd). */
struct relay_msg {
    enum relay_msg_type type;
    char *key;                /* push, get; NUL-terminated, may hold NULs */
    size_t key_len;
    uint8_t *value;           /* push: canonical msgpack */
    size_t value_len;
    enum relay_action action; /* push */
    uint64_t compact_seq;     /* push with compact */
    /* get: seq absent -> has_seq true, seq 0; "seq": null -> has_seq false */
    bool has_seq;
    uint64_t seq;
    /* ping: nonce is an optional unsigned 64-bit integer; missing or null
     * -> has_nonce false */
    bool has_nonce;
    uint64_t nonce;
};

/*
 * Decodes one client frame of format fmt. On error returns RELAY_EINVAL /
 * RELAY_EDEPTH / RELAY_ETOOBIG / RELAY_ENOMEM and writes a one-line reason
 * for the client to err (always NUL-terminated). out is zeroed first;
 * relay_msg_free(out) is safe after success or failure.
 * max_value_len bounds the canonical value bytes (0: no extra bound).
 */
int relay_msg_decode(enum relay_fmt fmt, const uint8_t *buf, size_t len,
                     size_t max_value_len, struct relay_msg *out, char *err,
                     size_t errlen);
void relay_msg_free(struct relay_msg *m);

/*
 * Encoders for server -> client messages. Each writes into a malloc'd buffer
 * with `headroom` unused bytes at its start (lws needs LWS_PRE); the message
 * is at (*out + headroom) and is *len bytes long. *out is the caller's.
 * Values are canonical msgpack, converted to fmt (byte strings become arrays
 * of numbers in JSON).
 */
int relay_enc_push(enum relay_fmt fmt, size_t headroom, const char *key,
                   size_t key_len, const uint8_t *value, size_t value_len,
                   uint64_t seq, uint8_t **out, size_t *len);
int relay_enc_init(enum relay_fmt fmt, size_t headroom, const char *key,
                   size_t key_len, const struct relay_entry *entries,
                   size_t n, uint8_t **out, size_t *len);
int relay_enc_stream_size(enum relay_fmt fmt, size_t headroom,
                          const char *key, size_t key_len, uint64_t size,
                          uint8_t **out, size_t *len);
/* The nonce field is always present, as in the reference: the integer when
 * has_nonce, else null. */
int relay_enc_pong(enum relay_fmt fmt, size_t headroom, bool has_nonce,
                   uint64_t nonce, uint8_t **out, size_t *len);
int relay_enc_error(enum relay_fmt fmt, size_t headroom, const char *message,
                    uint8_t **out, size_t *len);

/*
 * Converts a canonical msgpack value to JSON text (for HTTP bodies), with the
 * same rules as the message codecs. *out malloc'd and NUL-terminated.
 */
int relay_value_to_json(const uint8_t *value, size_t len, char **out,
                        size_t *out_len);

#endif
