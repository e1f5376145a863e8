/*
 * consensus.h - a driftd node's replicated log: canonical raft on raft_uv,
 * a group-commit proposer, and the FSM adapter that applies batches to relay.
 *
 * net proposes commands with cons_propose() and hears back through two
 * callbacks: on_applied for every command this node applies (from any
 * origin), and on_failed for a command proposed here whose batch could not
 * be committed. net never touches struct raft.
 *
 * Lifecycle: cons_node_init / _start / _stop / _close, all on one loop.
 */
#ifndef DRIFTD_CONSENSUS_H
#define DRIFTD_CONSENSUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "relay.h"

enum {
    CONS_OK = 0,
    CONS_ENOMEM = 1,
    CONS_EINVAL = 2,      /* bad configuration or command */
    CONS_EIO = 3,         /* disk / raft I/O failure (see errmsg) */
    CONS_EFULL = 4,       /* proposer queue full: command NOT applied */
    CONS_ENOTAPPLIED = 5, /* command known NOT to have been applied */
    CONS_EUNKNOWN = 6,    /* unknown: this node lost leadership mid-commit */
    CONS_ECLOSING = 7,    /* node shutting down: command NOT applied */
    CONS_ENOLEADER = 8,   /* no leader known within the wait: NOT applied */
    CONS_ENOTLEADER = 9,  /* this node is not the leader (forwarded batch) */
    CONS_EBUSY = 10,      /* another membership change is in progress */
    CONS_ENOTFOUND = 11,  /* no such node in the configuration */
    CONS_EQUORUM = 12,    /* the change would leave no working majority */
    CONS_EAGAIN = 13,     /* a new leader is settling in: retry shortly */
    /* Why a proposed command failed (cons_failed_cb). Two meanings, which
     * cons_outcome_unknown() tells apart: NOT applied (it never reached a
     * leader's log: ENOLEADER, EUNREACHABLE, ESTALLED, ENOSPACE, ECLOSING)
     * and outcome unknown (it reached a leader and may still be applied:
     * EUNKNOWN, ELEADERGONE, ELINKLOST, ETIMEDOUT, ECLOSED). */
    CONS_EUNREACHABLE = 14, /* a leader is known but could not be reached */
    CONS_ESTALLED = 15,     /* this leader's log did not take it in time */
    CONS_ELEADERGONE = 16,  /* unknown: no leader known since it was sent */
    CONS_ELINKLOST = 17,    /* unknown: the link to the leader dropped */
    CONS_ETIMEDOUT = 18,    /* unknown: not seen committed in time */
    CONS_ECLOSED = 19,      /* unknown: shutting down after it was sent */
    CONS_ENOSPACE = 20,     /* disk full: the log refused it, NOT applied */
    CONS_EPERM = 21,        /* a forward link carried a command it may not */
    CONS_EISLEADER = 22,    /* membership: the node named is the leader */
    CONS_ELASTVOTER = 23,   /* membership: the node named is the last voter */
};

const char *cons_strerror(int code);
/* True for the codes that mean "outcome unknown" (the command may have been
 * or may still be applied); false for "not applied" and everything else. */
bool cons_outcome_unknown(int code);

/* ---- the cluster key (key.c) ----------------------------------------------
 *
 * One secret shared by every node of a cluster authenticates the internal
 * links: raft connections (transport.c) and forward links (net). */
#define CONS_KEY_LEN 32
#define CONS_MAC_LEN 32
#define CONS_NONCE_LEN 32

/* Reads PATH: 64 hex digits, whitespace around them ignored. Refuses a
 * file other users may read. CONS_EINVAL with the reason in err. */
int cons_key_load(const char *path, uint8_t key[CONS_KEY_LEN], char *err,
                  size_t errlen);
/* Bytes from the kernel's CSPRNG; CONS_EIO when it cannot give them. */
int cons_random(void *buf, size_t len);

struct cons_auth_part {
    const void *data;
    size_t len;
};
/* HMAC-SHA256(key, label NUL part0 part1 ...). CONS_ENOMEM on failure. */
int cons_auth_mac(const uint8_t key[CONS_KEY_LEN], const char *label,
                  const struct cons_auth_part *parts, size_t n_parts,
                  uint8_t out[CONS_MAC_LEN]);
/* Constant-time comparison. */
bool cons_auth_equal(const uint8_t *a, const uint8_t *b, size_t len);
/* Hex of n bytes into out (2n + 1 bytes, NUL-terminated); decoding wants
 * exactly 2n hex digits. */
void cons_hex_encode(const uint8_t *in, size_t n, char *out);
bool cons_hex_decode(const char *hex, size_t len, uint8_t *out, size_t n);
void cons_put_u64(uint8_t *p, uint64_t v);
uint64_t cons_get_u64(const uint8_t *p);

/* Splits "host:port" or "[v6]:port"; false when malformed. */
bool cons_addr_split(const char *addr, char *host, size_t host_sz, int *port);
/* 127.0.0.0/8, ::1 or "localhost". */
bool cons_host_is_loopback(const char *host);

#define CONS_MAX_NODES 16

struct cons_peer {
    uint32_t id;
    char raft_addr[64]; /* HOST:PORT */
};

/* Where snapshots are encoded (cons_config.snapshot_mode). */
enum cons_snap_mode {
    CONS_SNAP_THREAD = 0, /* a thread, from a view of the state */
    CONS_SNAP_FORK = 1,   /* a forked child */
    CONS_SNAP_INLINE = 2, /* on the loop */
};

struct cons_config {
    uint32_t id;           /* >= 1 */
    const char *raft_addr; /* HOST:PORT this node's raft listens on */
    /* HOST:PORT other nodes reach this node's HTTP on (forward links);
     * published in the replicated node directory. NULL: not published. */
    const char *http_addr;
    const char *data_dir; /* created if missing */
    /* Initial voters; used only on an empty data dir. n_bootstrap == 0 and
     * !join: a one-node cluster of its own. */
    struct cons_peer bootstrap[CONS_MAX_NODES];
    size_t n_bootstrap;
    bool join;
    unsigned election_timeout_ms;  /* default 1000 */
    unsigned heartbeat_timeout_ms; /* default 100 */
    unsigned snapshot_threshold;   /* entries between snapshots, 65536 */
    size_t snapshot_bytes;         /* or log bytes between them, 64 MiB */
    unsigned snapshot_trailing;    /* entries kept after one, 2048 */
    /* Where a snapshot is encoded (snapjob.c): CONS_SNAP_THREAD (the
     * default), CONS_SNAP_FORK, or CONS_SNAP_INLINE (on the loop, which
     * then stalls for the encoding). */
    enum cons_snap_mode snapshot_mode;
    size_t max_batch_bytes;        /* one raft entry, default 1 MiB */
    size_t max_queue_cmds;         /* proposer queue bound, default 65536 */
    size_t max_queue_bytes;        /* proposer queue bytes, 64 MiB */
    unsigned queue_timeout_ms;     /* wait for a leader, default 5000 */
    uint64_t room_ttl_ms;          /* idle rooms expire, 24 h; 0: never */
    struct relay_limits limits;    /* zero fields: defaults */
    /* Authenticates raft connections (transport.c). Without it the raft
     * port runs the same handshake with an all-zero key: it still keeps
     * stray bytes away from libraft, but anyone can pass it. */
    bool has_key;
    uint8_t key[CONS_KEY_LEN];
    /* Mutual TLS on raft connections (tls.c): this node's certificate
     * chain and key, and the CA bundle peers' certificates must chain to
     * (PEM paths, read at start). peer_cert NULL: plain TCP. */
    const char *peer_cert;
    const char *peer_key;
    const char *peer_ca;
};

void cons_config_default(struct cons_config *cfg);

/* Delivered once per command applied on this node, in log order. */
struct cons_applied {
    const struct relay_cmd *cmd;     /* borrowed, valid during the call */
    const struct relay_effects *eff; /* borrowed, valid during the call */
    uint64_t index;                  /* raft index of the batch */
    uint64_t stamp_ms; /* the leader's wall clock when it formed the entry */
};

/*
 * Called during FSM apply, so the state read through cons_node_state() is
 * exactly the state right after this command. Must not call cons_propose()
 * re-entrantly for the same origin ordering to hold (it may, but the command
 * is queued behind everything already queued).
 */
typedef void (*cons_applied_cb)(void *arg, const struct cons_applied *ev);

/*
 * The state was replaced by a snapshot while running: this node was too far
 * behind and the leader sent it one. Commands folded into it were never
 * applied here one by one, so on_applied did not report them; the callee
 * brings its sessions up to date from the new state. (A command proposed
 * here that was folded in is reported by on_applied with status RELAY_EDUP
 * once its re-sent copy reaches the log.)
 */
typedef void (*cons_restored_cb)(void *arg);

/*
 * A command proposed on this node that will not be applied or whose outcome
 * cannot be known here; cons_outcome_unknown(code) says which, the code
 * names the cause:
 * - not applied: CONS_ECLOSING (shutting down), CONS_ENOSPACE (this
 *   leader's disk is full: answered at once), or, after queue_timeout_ms
 *   without ever reaching a leader's log, CONS_ENOLEADER (no leader known),
 *   CONS_EUNREACHABLE (a leader was known but could not be reached) or
 *   CONS_ESTALLED (this node leads but its log did not take it);
 * - outcome unknown, after queue_timeout_ms: it reached a leader but was
 *   not seen applied. CONS_EUNKNOWN (this node was that leader and lost
 *   leadership), CONS_ELEADERGONE (no leader known now), CONS_ELINKLOST
 *   (the link to the leader dropped after it was sent), CONS_ETIMEDOUT
 *   (none of these), CONS_ECLOSED (shutting down). It may still be applied
 *   later, and then on_applied reports it.
 * Called at most once per proposed command, never after on_applied
 * reported it, and never from inside cons_propose().
 */
typedef void (*cons_failed_cb)(void *arg, const struct relay_origin *origin,
                               int code);

struct cons_node;

/* No I/O. *out is valid after any return (cons_node_close is safe). */
int cons_node_init(struct cons_node **out, uv_loop_t *loop,
                   const struct cons_config *cfg);
void cons_node_set_callbacks(struct cons_node *n, cons_applied_cb applied,
                             cons_failed_cb failed, void *arg);
/* Same arg as cons_node_set_callbacks. */
void cons_node_set_restored_callback(struct cons_node *n,
                                     cons_restored_cb restored);
/* Opens the data dir, loads snapshot + log, starts raft. */
int cons_node_start(struct cons_node *n);
/* Stops taking proposals; queued ones fail with CONS_ECLOSING. */
void cons_node_stop(struct cons_node *n);
/* cb fires once after raft and every handle is closed; then n is freed. */
typedef void (*cons_close_cb)(void *arg);
void cons_node_close(struct cons_node *n, cons_close_cb cb, void *arg);

const char *cons_node_errmsg(const struct cons_node *n);

/*
 * Exactly once: a node keeps every command it proposed until it has applied
 * it itself, and re-sends all of them, in order, whenever the leader (or its
 * term) changes or the link to it drops. The replicated dedupe table in relay
 * drops the copies that had already made it into the log.
 *
 * Queues a command for the log. The command and everything it points to is
 * copied. Returns CONS_OK (the outcome arrives by callback) or an error
 * (CONS_EFULL, CONS_ECLOSING, CONS_ENOMEM, CONS_EINVAL): then no callback
 * fires for it and it is not applied.
 */
int cons_propose(struct cons_node *n, const struct relay_cmd *cmd);

/*
 * Forwarding: a follower hands its commands to the leader through a link
 * that net implements (struct cons_forwarder). Batches are relay batches
 * (relay_batch_decode); the leader feeds them to cons_propose_batch().
 */
struct cons_forwarder {
    /* Queue one batch (borrowed bytes) on the link to leader_id. Return 0
     * when taken, non-zero when the link cannot take it now: consensus
     * retries after cons_forward_kick() or on its own timer. */
    int (*send)(void *arg, uint32_t leader_id, const uint8_t *batch,
                size_t len);
    /* The known leader changed (0: none). A link to another node must be
     * dropped; consensus re-sends everything unapplied to the new one. */
    void (*leader_changed)(void *arg, uint32_t leader_id);
    void *arg;
};
void cons_node_set_forwarder(struct cons_node *n,
                             const struct cons_forwarder *fw);
/* The link to the leader dropped or was re-established: re-send from the
 * oldest unapplied command. */
void cons_forward_reset(struct cons_node *n);
/* The link can take more batches now. */
void cons_forward_kick(struct cons_node *n);
/*
 * Leader side: queues the commands of a batch forwarded by follower `from`
 * (the node the link authenticated; the origin travels inside each
 * command). A link carries only that node's client commands (room
 * creation, push), its read markers (NOOP, see cons_read_index) and its own
 * directory entry, all with origin node `from`: anything else (room deletes,
 * other nodes' entries, forged origins) refuses the whole batch with
 * CONS_EPERM. Returns CONS_OK, CONS_EPERM, CONS_EINVAL for malformed bytes,
 * CONS_ENOTLEADER when this node is not the leader (the caller drops the link
 * so the follower re-sends elsewhere), CONS_EFULL, CONS_ECLOSING, or
 * CONS_ENOMEM. Failures are never reported per command: the origin node
 * re-sends what it does not see applied.
 */
int cons_propose_batch(struct cons_node *n, uint32_t from, const uint8_t *batch,
                       size_t len);

/*
 * Linearizable reads. cons_read_index() queues a read identified by token;
 * the read callback then fires once with CONS_OK when this node has applied
 * everything committed in the cluster before the call (read the state then:
 * it includes every push acknowledged anywhere before), or with an error
 * code (no leader, link lost, closing: answer "retry"). Callbacks fire in
 * the order of the calls, never from inside cons_read_index(). Returns
 * CONS_OK, or CONS_EFULL / CONS_ECLOSING / CONS_ENOMEM (then no callback).
 * Each batch of reads costs one small command through the log.
 */
typedef void (*cons_read_cb)(void *arg, uint64_t token, int status);
/* Same arg as cons_node_set_callbacks. */
void cons_node_set_read_callback(struct cons_node *n, cons_read_cb cb);
int cons_read_index(struct cons_node *n, uint64_t token);

/* The applied state, read-only. Never NULL after a successful init. */
const struct relay_state *cons_node_state(const struct cons_node *n);

uint32_t cons_node_id(const struct cons_node *n);

/*
 * Ready to answer reads: a leader is known and this node has applied
 * everything that leader had committed when this node first heard from it
 * in the current term (on the leader itself: every entry in its log when it
 * took office). Before that the applied state may lack rooms and messages
 * that exist, so net answers a retryable "not ready", never "not found".
 * False while starting and shutting down, and while no leader is known.
 */
bool cons_node_is_ready(struct cons_node *n);
/* NULL when ready, else why not: "starting", "shutting down", "no leader
 * known", "waiting to hear from the leader" or "catching up with the
 * leader" (static strings). */
const char *cons_node_not_ready(struct cons_node *n);
/* NULL unless this node's disk leaves its log less room than libraft keeps
 * in reserve (4 MiB): then a static text saying so. A leader in that state
 * refuses writes (CONS_ENOSPACE) and hands leadership to another voter;
 * reads are still served; writes resume once space returns. */
const char *cons_node_disk_fault(const struct cons_node *n);

struct cons_status {
    uint32_t id;
    const char *role;   /* "leader", "follower", "candidate", ... */
    uint32_t leader_id; /* 0 when unknown */
    uint64_t term;
    uint64_t commit_index;
    uint64_t applied_index;
    uint64_t last_index;
    /* Index of the log entry that holds the configuration this node uses
     * (the last one it has, committed or not); 0 before any. */
    uint64_t config_index;
    size_t queued; /* commands waiting in the proposer */
};
void cons_node_status(const struct cons_node *n, struct cons_status *st);

/* Upper bounds, in milliseconds, of the latency histograms' buckets (the
 * entry commit time below; net uses the same for push -> ack). */
#define CONS_LAT_BUCKETS 11
extern const double cons_lat_bounds_ms[CONS_LAT_BUCKETS];

/* A latency histogram: buckets by cons_lat_bounds_ms, not cumulative, the
 * last one over them; the sum in seconds. */
struct cons_hist {
    uint64_t buckets[CONS_LAT_BUCKETS + 1];
    uint64_t count;
    double seconds;
};
/* Counts one observation of ms milliseconds (negative counts as 0). */
void cons_hist_add(struct cons_hist *h, double ms);

/*
 * Running counts for metrics (net's GET /metrics), kept by consensus as
 * events happen; read-only, never reset while the node lives. Borrowed:
 * valid until cons_node_close, read on the loop thread.
 */
struct cons_stats {
    uint64_t terms_seen;       /* term changes seen: one per election */
    uint64_t leader_changes;   /* a different node (not "none") leads */
    uint64_t snapshots;        /* snapshots this node took */
    uint64_t snapshot_bytes;   /* size of the last one */
    double snapshot_seconds;   /* how long the last one held the loop */
    uint64_t restores;         /* snapshots installed (start-up included) */
    uint64_t entries_applied;  /* log entries applied by the FSM */
    uint64_t commands_applied; /* commands inside them */
    /* Leader: an entry from raft_apply to its apply here (append to the
     * local log, replication to a majority, commit). */
    struct cons_hist commit;
    /* Every node: one append of entries to the local log, from the call
     * into raft_uv to its completion (write and fsync). */
    struct cons_hist append;
};
const struct cons_stats *cons_node_stats(const struct cons_node *n);

/* One member of the raft configuration, for status reports. */
struct cons_member {
    uint32_t id;
    const char *role;      /* "voter", "standby" or "spare" */
    const char *raft_addr; /* borrowed */
    const char *http_addr; /* from the node directory; NULL when unknown */
    bool has_match;        /* on the leader only */
    uint64_t match_index;
};
typedef void (*cons_member_cb)(void *arg, const struct cons_member *m);
/* Calls cb for every member of the current configuration, by id order of
 * the configuration. */
void cons_node_members(const struct cons_node *n, cons_member_cb cb, void *arg);

/* The HTTP address of node id from the directory, or NULL. Borrowed until
 * the next applied entry. */
const char *cons_node_http_addr(const struct cons_node *n, uint32_t id);

/* ---- membership (leader only) ---------------------------------------------
 *
 * Each call starts one change and answers through cb exactly once, also
 * when the node closes first (status CONS_ECLOSING; the callback must then
 * touch nothing but its own arg). Synchronous refusals return
 * the code and call nothing; cons_node_errmsg() has the detail. One change
 * runs at a time (CONS_EBUSY). status passed to cb is CONS_OK or a CONS_*
 * code, with a one-line reason in msg.
 */
enum cons_role {
    CONS_ROLE_VOTER = 0,
    CONS_ROLE_STANDBY = 1,
};
typedef void (*cons_change_cb)(void *arg, int status, const char *msg);

/* Adds node id (started with --join) at raft_addr, then gives it role. A
 * voter is promoted only after it has caught up with the log. */
int cons_member_add(struct cons_node *n, uint32_t id, const char *raft_addr,
                    enum cons_role role, cons_change_cb cb, void *arg);
/* Changes a member's role. Demoting needs a majority of the remaining
 * voters up to date unless force. */
int cons_member_assign(struct cons_node *n, uint32_t id, enum cons_role role,
                       bool force, cons_change_cb cb, void *arg);
/* Removes a member. Refuses the leader itself (transfer first), the last
 * voter, and, unless force, a change that leaves fewer up-to-date voters
 * than a majority of the new configuration. The node's directory entry is
 * forgotten afterwards. */
int cons_member_remove(struct cons_node *n, uint32_t id, bool force,
                       cons_change_cb cb, void *arg);
/* Moves leadership to id, or (id 0) to the most up-to-date voter. cb fires
 * when this node is no longer leader or the transfer failed. */
/* Before a planned stop: a leader transfers leadership to the most
 * up-to-date voter. CONS_OK: a transfer started and cb fires once, moved
 * when another node is known to lead, not moved when libraft gave up;
 * libraft may never answer (every node stopping at once), so the caller
 * bounds the wait and then calls cons_node_hand_over_cancel (cb never
 * fires after it). Any other code: nothing started (not the leader, no
 * other voter, a transfer already under way). */
typedef void (*cons_handover_cb)(void *arg, bool moved);
int cons_node_hand_over(struct cons_node *n, cons_handover_cb cb, void *arg);
void cons_node_hand_over_cancel(struct cons_node *n);
/* The node is going to stop: it opens no new raft connection from now on
 * (cons_node_stop implies it). */
void cons_node_no_dial(struct cons_node *n);
int cons_leader_transfer(struct cons_node *n, uint32_t id, cons_change_cb cb,
                         void *arg);

#endif
