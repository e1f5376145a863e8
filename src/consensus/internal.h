/*
 * internal.h - consensus module internals shared by node.c (lifecycle, raft
 * wiring), proposer.c (group commit) and fsm.c (apply/snapshot/restore).
 */
#ifndef DRIFTD_CONS_INTERNAL_H
#define DRIFTD_CONS_INTERNAL_H

#include <raft.h>
#include <raft/uv.h>

#include "consensus.h"

/* A command waiting to be applied; owns its bytes. */
struct cons__pcmd {
    struct relay_cmd cmd; /* room/key/value point into data */
    uint8_t *data;
    size_t bytes;    /* accounted against max_queue_bytes */
    uint64_t enq_ms; /* uv_now() when queued */
    bool sent;       /* reached a leader at least once */
    /* Why it may have been lost since it was sent (expired_code). */
    bool sent_here; /* went into this node's log while it led */
    bool lost_lead; /* ... and this node lost leadership since */
    bool lost_link; /* the forward link dropped after it was sent */
    struct cons__pcmd *prev, *next;
};

/* A FIFO of commands. */
struct cons__queue {
    struct cons__pcmd *head, *tail;
    size_t count, bytes;
};

/* One raft_apply in flight. */
struct cons__inflight {
    struct raft_apply req;
    struct cons_node *node;
    bool carrier;      /* an empty entry sent only to carry the commit index */
    uint64_t start_ns; /* uv_hrtime() at raft_apply (commit time metric) */
};

/* The authenticated raft transport (transport.c), optionally over mutual
 * TLS (tls.c). */
struct cons__hs;
struct cons__pump;
struct ssl_ctx_st;
struct cons__tp {
    struct raft_uv_transport *t;
    uv_loop_t *loop;
    uint8_t key[CONS_KEY_LEN];
    raft_id id;
    char address[256];
    uv_tcp_t listener;
    bool listener_open;
    raft_uv_accept_cb accept_cb;
    struct cons__hs *hs_head; /* handshakes in progress */
    size_t n_inbound;
    bool closing;
    bool no_dial; /* the node is stopping: no new outbound connection */
    raft_uv_transport_close_cb close_cb;
    /* Mutual TLS (NULL: plain TCP) and its pumps (tls.c). */
    struct ssl_ctx_st *tls_server, *tls_client;
    struct cons__pump *pumps;
};
/* Fills t with our transport; key NULL: all zero. Opens one handle (the
 * listener), closed by t->close. No I/O. */
void cons__tp_init(struct cons__tp *tp, struct raft_uv_transport *t,
                   uv_loop_t *loop, const uint8_t key[CONS_KEY_LEN]);
/* Calls the close callback once everything is closed (transport.c). */
void cons__tp_maybe_closed(struct cons__tp *tp);
/* tls.c: loads --peer-cert/--peer-key/--peer-ca into tp's two contexts
 * (CONS_EINVAL with the reason in err); frees them. */
int cons__tls_setup(struct cons__tp *tp, const char *cert, const char *key,
                    const char *ca, char *err, size_t errlen);
void cons__tls_free(struct cons__tp *tp);
/* Takes tcp (connected, raft_malloc'd: the pump frees it) and puts TLS on
 * it; *out is the plain-text stream to use instead (raft_malloc'd uv_pipe_t,
 * the caller's). host: the address dialled (client), NULL for a server. */
int cons__tls_start(struct cons__tp *tp, uv_tcp_t *tcp, bool server,
                    const char *host, const char *remote, uv_pipe_t **out);
/* Closes every pump (transport closing). */
void cons__tls_close_all(struct cons__tp *tp);

/* Log kept after a snapshot: at most this many bytes (by the mean entry
 * size), and never fewer than CONS_TRAILING_MIN entries (fsm.c). */
#define CONS_TRAILING_BYTES ((uint64_t)64 << 20)
#define CONS_TRAILING_MIN 16

/* Raft log segment size (node.c). */
#define CONS_SEGMENT_SIZE ((size_t)16 << 20)

/*
 * The proposers inside this node (not clients): each has its own session,
 * so that an applied or failed command reaches only the code that proposed
 * it (proposer.c, sys_done). Session ids have the top bit set and the low 32
 * bits zero: never one of net's (nonce << 32 | counter) ids.
 */
enum cons__owner {
    CONS_OWN_DIR,     /* this node's directory entry (directory.c) */
    CONS_OWN_EXPIRY,  /* idle-room deletes, leader only (expiry.c) */
    CONS_OWN_MEMBERS, /* directory entries of removed nodes (membership.c) */
    CONS_OWN_READ,    /* read markers (read.c) */
    CONS_OWN_CONFIG,  /* cluster settings, first leader (settings.c) */
    CONS_OWN_N,       /* not an owner: a client's session */
};

struct cons__sys {
    uint64_t session;
    uint64_t counter; /* of the last command proposed */
};

struct cons_node {
    uv_loop_t *loop;
    struct cons_config cfg;
    char raft_addr[64];
    char http_addr[RELAY_ADDR_MAX + 1];
    char data_dir[4096];
    char errmsg[512];
    /* Why the last snapshot restore failed (fsm.c), for start_reason. */
    char restore_err[160];

    struct raft raft;
    struct raft_io io;
    struct raft_uv_transport transport;
    struct cons__tp tp; /* the transport's state (transport.c) */
    struct raft_fsm fsm;
    bool transport_inited, io_inited, raft_inited, raft_started;
    /* raft_uv's start() and raft's callbacks, wrapped to watch for the
     * leader's commit index (ready.c) */
    /* raft_uv's append, wrapped to time it (iotime.c) */
    int (*io_append)(struct raft_io *io, struct raft_io_append *req,
                     const struct raft_entry entries[], unsigned n,
                     raft_io_append_cb cb);
    int (*io_start)(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                    raft_io_recv_cb recv);
    /* raft_uv's snapshot_put and close, wrapped so that a snapshot's put
     * waits for the bytes its encoder (thread or child) writes (snapjob.c) */
    int (*io_snapshot_put)(struct raft_io *io, unsigned trailing,
                           struct raft_io_snapshot_put *req,
                           const struct raft_snapshot *snapshot,
                           raft_io_snapshot_put_cb cb);
    void (*io_close)(struct raft_io *io, raft_io_close_cb cb);
    struct cons__snapjob *snap_job; /* the encoder at work, NULL: none */
    pid_t snap_zombie; /* a finished child not reaped yet (snapjob.c) */
    uint64_t snap_retry_at; /* uv_now() before which no snapshot is tried */
    raft_io_tick_cb raft_tick_cb;
    raft_io_recv_cb raft_recv_cb;
    /* The node is ready once sync_index is applied, for the leader
     * sync_leader of term sync_term (ready.c). */
    uint64_t sync_term;
    uint32_t sync_leader;
    uint64_t sync_index;

    struct relay_state *state;
    /* Log applied since the last snapshot (fsm.c): past cfg.snapshot_bytes
     * the raft threshold is lowered to force one, then restored. */
    uint64_t snap_bytes;
    unsigned snap_entries;
    unsigned snap_trailing; /* what raft was last told (fit_trailing) */
    bool snap_forced;
    uint64_t snap_last_len; /* bytes of the last snapshot taken or restored */
    /* The leader this follower has followed since snap_guard_since (fsm.c:
     * snapshots wait until it has for a while). */
    raft_id snap_guard_leader;
    uint64_t snap_guard_since;
    uint64_t last_entry_ms; /* timestamps are made monotonic across batches */

    /* proposer */
    struct relay_batch_enc *enc;
    /* Commands proposed on this node, oldest first, kept until applied
     * here; cursor is the next one to send (NULL: all sent). */
    struct cons__queue pending;
    struct cons__pcmd *cursor;
    /* Leader only: commands forwarded by followers, not yet in an entry. */
    struct cons__queue foreign;
    size_t n_inflight;
    size_t max_inflight;
    uint32_t seen_leader;  /* leader id at the last check */
    uint64_t seen_term;    /* term at the last check */
    uint64_t leader_since; /* uv_now() when this node was seen leading */
    struct cons_forwarder fw;
    uv_idle_t flush_idle;   /* runs a flush on the next loop turn */
    uv_timer_t queue_timer; /* leader discovery + queue timeouts */
    bool flush_armed;
    /* Leader whose disk filled up: hands leadership to a voter with room
     * (proposer.c), at most one request at a time. */
    struct raft_transfer nospace_transfer;
    bool nospace_transferring;
    uint64_t nospace_logged;    /* uv_now() of the last refusal logged */
    uint64_t nospace_handed_at; /* uv_now() of the last hand-over try */
    /* Leader asked to stop: leadership handed over first (handover.c). */
    struct raft_transfer handover;
    bool handover_pending; /* libraft holds `handover` */
    unsigned handover_tries;
    cons_handover_cb handover_cb; /* NULL: nobody waits (any more) */
    void *handover_arg;

    /* The sessions of this node's own proposers (cons__sys_origin). */
    struct cons__sys sys[CONS_OWN_N];

    /* Node directory upkeep: this node's own entry is proposed until the
     * applied directory matches. */
    bool dir_inflight;
    uv_timer_t tick;             /* leader-change notice and directory upkeep */
    struct cons__change *change; /* the membership change in flight */
    uint64_t next_expiry_scan;   /* uv_now() of the next idle-room scan */

    /* Cluster settings proposed by this node as leader (settings.c). */
    unsigned cfg_inflight;

    /* Linearizable reads (read.c): markers under a session of their own
     * (CONS_OWN_READ, counter = the marker's number); a ring of waiting
     * tokens, the first reads_covered of which the marker in flight
     * answers. */
    uint64_t *reads;
    size_t reads_head, reads_count, reads_covered;
    bool read_marker_out;
    bool read_local; /* the covered reads are answered locally (read.c) */
    cons_read_cb on_read;

    struct cons_stats stats; /* cons_node_stats() */

    cons_applied_cb on_applied;
    cons_failed_cb on_failed;
    cons_restored_cb on_restored;
    void *cb_arg;

    bool stopping, closing;
    int pending_handles;
    cons_close_cb close_cb;
    void *close_arg;
};

/* A snapshot's data: this 8-byte header ("DRS1" and the CRC-32C of the
 * relay bytes that follow, little-endian), then relay's bytes (fsm.c). */
#define CONS_SNAP_HDR_LEN 8
void cons__snap_header(uint8_t hdr[CONS_SNAP_HDR_LEN], const uint8_t *payload,
                       size_t len);
/* From a last snapshot this big on, raft's count threshold also waits for
 * as much log as that snapshot (fsm.c, snapshot_due). */
#define CONS_SNAP_SPACED_BYTES ((uint64_t)16 << 20)
/* After a snapshot whose encoder failed, none is tried for this long. */
#define CONS_SNAP_RETRY_MS 5000

/* Snapshots encoded off the loop (snapjob.c). wrap_io: after raft_uv_init,
 * before raft_init. start: starts the encoder of the state as it is now (a
 * thread with a view, or a forked child: cfg.snapshot_mode) and gives raft
 * a placeholder buffer whose put waits for the encoder's bytes; non-zero:
 * no encoder (encode in place instead). */
void cons__snapjob_wrap_io(struct cons_node *n);
int cons__snapjob_start(struct cons_node *n, struct raft_buffer **bufs,
                         unsigned *n_bufs);
/* From the node's tick: reaps a finished child that had not exited when its
 * snapshot ended, and kills a child (cancels a thread) that has encoded for
 * longer than CONS_SNAP_CHILD_MAX_MS (its snapshot then fails and is tried
 * again). */
void cons__snapjob_check(struct cons_node *n);
#define CONS_SNAP_CHILD_MAX_MS (5 * 60 * 1000)
/* The encoder's nice value (thread or child): below the loops it competes
 * with for the CPU, so that a loop thread that wakes takes the core at once
 * (the three nodes of one machine each encode a snapshot at the same index,
 * and with their loops and the load tool on two cores, every loop waited
 * for them). It still gets its share when the machine is busy. */
#define CONS_SNAP_NICE 10

/* libraft's allocator (heap.c). install: once, before any raft call.
 * collect: from now on what raft frees on this thread goes to l (NULL:
 * freed at once); returns the list collected before. list_new: NULL when
 * out of memory (then nothing is collected). free_later: l's pointers
 * freed on libuv's pool, then l. */
struct cons__heap_list;
void cons__heap_install(void);
struct cons__heap_list *cons__heap_collect(struct cons__heap_list *l);
struct cons__heap_list *cons__heap_list_new(void);
void cons__heap_free_later(uv_loop_t *loop, struct cons__heap_list *l);

/* Times raft_uv's appends into stats.append (iotime.c); after
 * raft_uv_init, before raft_init. */
void cons__iotime_wrap_io(struct cons_node *n);

/* Fills o for owner w's next command (node.c). */
void cons__sys_origin(struct cons_node *n, enum cons__owner w,
                      struct relay_origin *o);
/* Which of this node's proposers session belongs to; CONS_OWN_N for a
 * client's (node.c). */
enum cons__owner cons__sys_owner(const struct cons_node *n, uint64_t session);

/* settings.c: the leader proposes the bootstrap settings while unset;
 * one of its proposals completed; a CONFIG command was applied here. */
void cons__settings_check(struct cons_node *n);
void cons__settings_done(struct cons_node *n);
void cons__settings_applied(struct cons_node *n, const struct relay_cmd *cmd,
                            int status);

/* read.c: a marker of the read session was applied (CONS_OK) or failed;
 * fail every waiting read; release. */
void cons__reads_on_marker(struct cons_node *n, uint64_t counter, int status);
void cons__reads_fail_all(struct cons_node *n, int code);
/* Answers the reads a sole voter covered locally (from the flush idle). */
void cons__reads_local(struct cons_node *n);
void cons__reads_free(struct cons_node *n);

/* proposer.c */
/* May cmd travel on node's forward link? (see cons_propose_batch) */
bool cons__cmd_forwardable(const struct relay_cmd *cmd, uint32_t node);
int cons__proposer_init(struct cons_node *n);
void cons__proposer_fail_all(struct cons_node *n, int code);
/* Drops o from the pending commands; false when it was not pending (a
 * re-sent copy whose original was applied here before). */
bool cons__proposer_on_applied(struct cons_node *n,
                               const struct relay_origin *o);
/* After a snapshot install: reports (RELAY_EDUP) and drops the pending
 * commands the new state records as applied. */
void cons__proposer_on_restored(struct cons_node *n);
void cons__proposer_check_leader(struct cons_node *n);
void cons__proposer_kick(struct cons_node *n);
void cons__proposer_close(struct cons_node *n);
void cons__on_queue_timer(uv_timer_t *t);
void cons__on_flush_idle(uv_idle_t *h);

void cons__dir_check(struct cons_node *n);
void cons__dir_done(struct cons_node *n);
void cons__dir_start(struct cons_node *n);

/* expiry.c */
void cons__expiry_check(struct cons_node *n);

/* membership.c */
struct cons__change;
void cons__membership_free(struct cons_node *n);

/* fsm.c */
void cons__fsm_init(struct cons_node *n);

/* node.c */
void cons__handle_closed(uv_handle_t *h);

/* ready.c */
void cons__ready_wrap_io(struct cons_node *n);
bool cons__disk_is_full(const struct cons_node *n);

#endif
