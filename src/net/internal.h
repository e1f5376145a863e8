/*
 * internal.h - what the files of net/ share: the server, connection, frame
 * and subscription-index structs and the net__ functions between them.
 *
 * Design in a few lines:
 * - One lws context on the node's uv loop (foreign loop), one vhost, one
 *   protocol that serves both HTTP and WebSocket. Every accepted socket gets
 *   a struct net_conn, hung on the wsi as its opaque user data (it survives
 *   the HTTP -> WS upgrade, which re-allocates lws' per-session data).
 * - Sessions: a WS connection is one origin session; each HTTP request that
 *   proposes gets a fresh one. srv->owners maps session id -> conn so that
 *   an applied or failed command finds its origin (or finds nothing, when
 *   the connection closed meanwhile, and the result is dropped).
 * - Subscriptions: srv->rooms holds only rooms with local WS sessions; each
 *   room maps key -> subscriber list, plus its debug sessions. A broadcast is
 *   two hash lookups and a walk over the subscribers.
 * - Fan-out: a push is encoded once per format actually needed into a
 *   refcounted struct net_frame; each session queues a reference in a ring
 *   bounded by cfg.max_out_bytes.
 * - Order: a session's replies follow the order of its requests; a get or
 *   ping waits behind that session's pushes still in consensus.
 *
 * Not here: anything about raft (consensus.h) or message semantics
 * (relay.h).
 */
#ifndef DRIFTD_NET_INTERNAL_H
#define DRIFTD_NET_INTERNAL_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "consensus.h"
#include "htab.h"
#include "net.h"
#include "relay.h"

/*
 * Bytes charged against a session's outbound budget for each queued frame
 * on top of its payload: the ring slot and lws framing. It also bounds the
 * ring length to max_out_bytes / NET_FRAME_OVERHEAD entries.
 */
#define NET_FRAME_OVERHEAD 64

/*
 * A session's queued frames go out as one write of up to this many bytes
 * (WebSocket headers included) per round: one send() for a burst of
 * broadcasts instead of one per frame (docs/benchmarks.md). A frame bigger
 * than a quarter of it is written on its own, without the copy.
 */
#define NET_COALESCE_MAX 65536

/*
 * Bounds on one session's subscriptions: keys come from the client, and
 * each subscription keeps a copy of its key in the index.
 */
#define NET_MAX_SUBS 10000
#define NET_MAX_SUB_KEY_BYTES (1024 * 1024)

/*
 * Messages of one session that wait behind its unacknowledged pushes (see
 * ws.c: replies keep the order of requests). Reading from the socket is
 * paused meanwhile, so this only holds what lws had read already.
 */
#define NET_MAX_DEFERRED 4096

/* Proposal times kept per WebSocket session (ring by origin counter): a
 * push further behind than this when applied is not timed. */
#define NET_PUSH_TIMES 16

/* Largest Host header we echo back into room URLs. */
#define NET_HOST_MAX 256

/* ---- frames (ws.c) ------------------------------------------------------ */

/*
 * One encoded server message, shared by every session it is queued on.
 * buf comes from a relay_enc_* call with LWS_PRE headroom; the payload is at
 * buf + LWS_PRE. Freed when the last reference is dropped.
 */
struct net_frame {
    uint32_t refs;
    bool binary; /* LWS_WRITE_BINARY (CBOR, msgpack) or TEXT (JSON) */
    size_t len;
    uint8_t *buf;
};

/* Takes ownership of buf (freed on failure too). NULL: out of memory. */
struct net_frame *net__frame_new(uint8_t *buf, size_t len, enum relay_fmt fmt);
void net__frame_unref(struct net_frame *f);

/* ---- connections -------------------------------------------------------- */

enum net_route {
    NET_ROUTE_NONE = 0,
    NET_ROUTE_NEW,
    NET_ROUTE_ROOM,
    NET_ROUTE_CONNECT,
    NET_ROUTE_SEND,
    NET_ROUTE_HEALTHZ,
    NET_ROUTE_METRICS,
    NET_ROUTE_CLUSTER_STATUS,
    NET_ROUTE_ADMIN,   /* /admin/...: admin.c parses the rest */
    NET_ROUTE_FORWARD, /* GET /_driftd/forward: a follower's link */
    NET_ROUTE_UI,      /* /ui and /ui/...: the dashboard (ui.c) */
};

enum net_pending {
    NET_PENDING_NONE = 0,
    NET_PENDING_NEW,    /* POST /new waits for its CREATE_ROOM */
    NET_PENDING_SEND,   /* POST /room/ID/send waits for its PUSH */
    NET_PENDING_ADMIN,  /* a membership change waits for raft */
    NET_PENDING_READ,   /* a read waits for its barrier (cons_read_index) */
    NET_PENDING_CONFIG, /* POST /admin/config waits for its RELAY_CMD_CONFIG */
};

struct net_admin_op;
struct net_ui_asset;

/* The state of the HTTP transaction in progress on a connection. */
struct net_http {
    enum net_route route;
    int method; /* LWSHUMETH_* */
    char room[RELAY_ROOM_ID_MAX + 1];
    size_t room_len;
    char host[NET_HOST_MAX];
    bool want_body; /* wait for LWS_CALLBACK_HTTP_BODY_COMPLETION */
    bool acted;     /* the request was acted upon (answer decided) */
    uint8_t *body;  /* malloc'd, capped at cfg.max_http_body */
    size_t body_len;
    size_t body_cap;
    enum net_pending pending;
    /* The read barrier of this request was answered: decide() runs again
     * and reads local state, which is then up to date. */
    bool read_done;
    uint64_t push_ns; /* uv_hrtime() when its push was proposed */
    bool err_counted; /* the next error answer was counted by its caller */
    struct net_admin_op *admin_op; /* NET_PENDING_ADMIN */
    char path[128];                /* /admin/... and /ui/... routes: the path */
    /* /ui: the file answered (its ETag goes out with it), or NULL. */
    const struct net_ui_asset *ui_asset;
    /* /admin: the member whose HTTP origin the request came from (CORS);
     * 0: none (no Access-Control-Allow-Origin). */
    uint32_t cors_node;
    /* The answer, written from LWS_CALLBACK_HTTP_WRITEABLE. */
    bool resp_ready;
    bool close_after; /* close instead of keep-alive (413, 503 at limit) */
    bool preflight;
    unsigned retry_after; /* seconds for a Retry-After header; 0: none */
    unsigned status;
    const char *ctype;
    uint8_t *resp; /* malloc'd, LWS_PRE headroom, payload at +LWS_PRE */
    size_t resp_len;
};

/* How long an HTTP request may wait for its answer from the log (a read
 * barrier, a push, a room creation; http.c). */
#define NET_READ_WAIT_S 60

/* How long a session that was sent its close frame may take to answer. */
#define NET_CLOSE_ACK_S 5
/* How long a session being closed may take to read its close frame. */
#define NET_CLOSE_FLUSH_S 30

/* Connections past cfg.max_connections that still get their 503 answer;
 * beyond these, new ones are closed on accept. */
#define NET_OVER_LIMIT_GRACE 64

enum net_conn_kind {
    NET_CONN_HTTP = 0,
    NET_CONN_WS,
    NET_CONN_FWD, /* leader side of a follower's forward link (forward.c) */
};

struct net_sub;
struct net_room;
struct net_deferred;
struct net_ip;

/* ---- per-client limits (limits.c) -------------------------------------- */

#define NET_MAX_IPS 65536            /* addresses tracked at once */
#define NET_SWEEP_MS 1000            /* how often deadlines are checked */
#define NET_HEADER_TIMEOUT_MS 10000  /* a whole first request, from accept */
#define NET_MESSAGE_TIMEOUT_MS 30000 /* a whole fragmented message */
#define NET_RATE_BURST_S 2           /* session buckets hold 2 s of rate */
/* lws header tables: one per connection until its request is whole. More
 * than one address may hold (max_conns_per_ip), so trickling connections
 * from one address cannot take them all. 8 KiB each, allocated on use. */
#define NET_HEADER_POOL 1024

struct net_conn {
    struct net_server *srv;
    struct lws *wsi;
    struct net_conn *prev, *next; /* srv->conns */
    enum net_conn_kind kind;
    bool over_limit;    /* accepted past cfg.max_connections: answer 503 */
    struct net_ip *ip;  /* its address' entry (limits.c) */
    uint64_t opened_ms; /* accepted, uv_now() */
    bool requested;     /* a whole first request came (or an upgrade) */
    bool cut;           /* the sweep cut it */
    double msg_tokens, byte_tokens; /* rate buckets (WebSocket) */
    uint64_t rate_ms;               /* their last update; 0: not yet */
    uint64_t rx_started_ms;         /* when the message in rx began */

    /* Origin session: in srv->owners while registered. */
    struct htab_node owner_node;
    uint64_t session;
    bool registered;

    struct net_http http;

    /* WebSocket session (kind == NET_CONN_WS). */
    char room_id[RELAY_ROOM_ID_MAX + 1];
    size_t room_len;
    struct net_room *room;  /* index entry while attached */
    enum relay_fmt fmt_out; /* what we send */
    enum relay_fmt fmt_bin; /* how binary frames are read */
    bool debug;
    bool established;
    uint64_t counter;  /* origin counter of our last proposed push */
    uint64_t resolved; /* highest counter applied or failed */
    uint64_t push_ns[NET_PUSH_TIMES]; /* uv_hrtime() at proposal */
    /* Reads asked of consensus (cons_read_index) and answered, in order. */
    uint64_t reads_asked, reads_done;
    /* Upgraded to a room this node did not know: attached once read
     * barrier room_check_seq is answered (ws.c). */
    bool room_unconfirmed;
    uint64_t room_check_seq;
    /* Decoded messages waiting for earlier pushes' results (FIFO). */
    struct net_deferred *defer_head, *defer_tail;
    size_t n_deferred;
    size_t deferred_bytes;
    bool rx_paused;
    struct net_sub **subs; /* malloc'd array of this session's subs */
    size_t n_subs, cap_subs;
    size_t sub_key_bytes; /* sum of the subscribed keys' lengths */
    size_t debug_idx;     /* position in room->debug when debug */

    /* Forward link (kind == NET_CONN_FWD): the follower's node id from the
     * ?node= query (0: not given) and what it delivered. Such a connection
     * is no session: not in srv->owners, not in n_conns or n_ws. */
    uint32_t fwd_node;
    uint64_t fwd_batches;
    uint64_t fwd_bytes;
    /* With a cluster key the follower proves it holds it before its first
     * batch: our challenge goes out on the first SERVER_WRITEABLE. */
    bool fwd_authed, fwd_chal_pending;
    uint8_t fwd_nonce_c[CONS_NONCE_LEN], fwd_nonce_s[CONS_NONCE_LEN];

    /* Inbound reassembly, capped at cfg.max_message (forward links: see
     * forward.c). */
    uint8_t *rx;
    size_t rx_len, rx_cap;
    bool rx_active, rx_binary;

    /* Outbound ring of frame references. */
    struct net_frame **q;
    size_t q_cap, q_head, q_len;
    size_t out_bytes;

    /* Set once we decided to close (see net__ws_close). */
    bool closing;
    bool close_flush;   /* the queue goes out before the close frame */
    bool close_started; /* handed to lws */
    bool close_queued;  /* on srv->close_list */
    bool in_callback;   /* inside one of this wsi's WS callbacks */
    struct net_conn *close_next;
    uint16_t close_code;
    char close_reason[100];
};

/* ---- subscription index (subs.c) --------------------------------------- */

struct net_key {
    struct htab_node node;
    struct net_room *room;
    char *key; /* malloc'd copy; may hold NULs */
    size_t key_len;
    struct net_sub **subs;
    size_t n, cap;
};

struct net_sub {
    struct net_conn *conn;
    struct net_key *key;
    /* Broadcasts with seq <= this are not sent: the client's `get` said it
     * has them, from another node that had applied further than this one. */
    uint64_t skip_upto;
    /* The highest seq of this key the client has (from its init or a
     * broadcast) or need not have (subscribed later): where a catch-up
     * after a snapshot install starts (net__ws_on_restored). */
    uint64_t seen;
    size_t key_idx;  /* in key->subs */
    size_t conn_idx; /* in conn->subs */
};

struct net_room {
    struct htab_node node;
    char id[RELAY_ROOM_ID_MAX + 1];
    size_t id_len;
    struct htab keys;
    struct net_conn **debug;
    size_t n_debug, cap_debug;
    size_t n_conns; /* attached sessions; the entry goes at 0 */
};

/* Attaches an established WS session to its room (c->room_id), creating
 * the entry; registers it as a debug session when c->debug. */
int net__room_attach(struct net_server *s, struct net_conn *c);
/* Removes every subscription of c, then c from its room. Idempotent. */
void net__room_detach(struct net_server *s, struct net_conn *c);
struct net_room *net__room_find(struct net_server *s, const char *id,
                                size_t id_len);
struct net_key *net__key_find(struct net_room *r, const char *key,
                              size_t key_len);
/* Subscribes c to key in its room; a second call is a no-op. NET_EINVAL
 * past NET_MAX_SUBS / NET_MAX_SUB_KEY_BYTES, NET_ENOMEM. */
int net__sub_add(struct net_server *s, struct net_conn *c, const char *key,
                 size_t key_len);

/* limits.c */
void net__limits_init(struct net_server *s); /* the sweep timer: a handle */
void net__limits_start(struct net_server *s);
void net__limits_stop(struct net_server *s);
void net__limits_release(struct net_server *s);
/* Accounts c to its peer address: NET_OK, NET_EBUSY over the per-address
 * bound, NET_ENOMEM (refuse the connection then). */
int net__ip_attach(struct net_server *s, struct net_conn *c);
void net__ip_detach(struct net_conn *c);
const char *net__ip_of(const struct net_conn *c);
/* One room creation from c's address: false when over its rate. */
bool net__ip_take_room(struct net_server *s, struct net_conn *c);
/* One message of `bytes` on session c: false over a rate, *which names it. */
bool net__rate_take(struct net_server *s, struct net_conn *c, size_t bytes,
                    const char **which);

/* ---- the forward link (forward.c) --------------------------------------- */

#define NET_FWD_PROTOCOL "driftd-forward"
#define NET_FWD_PATH "/_driftd/forward"

enum net_fwd_state {
    NET_FWD_IDLE = 0,   /* no link; the next send() connects */
    NET_FWD_CONNECTING, /* client wsi created, handshake in progress */
    NET_FWD_UP,         /* established: batches are written */
    NET_FWD_BACKOFF,    /* the link failed; the timer reconnects */
};

/* One batch waiting for the link: LWS_PRE headroom, then len bytes. */
struct net_fwd_msg {
    struct net_fwd_msg *next;
    size_t len;
    uint8_t buf[];
};

/*
 * The follower's one client WebSocket to the leader (forward.c). Only the
 * wsi in `wsi` is the link: callbacks of a wsi we abandoned (leader
 * changed, stop) are ignored while lws finishes closing it. Client wsis
 * carry no opaque user data, which is how server.c tells them from
 * accepted connections.
 */
struct net_fwd_link {
    enum net_fwd_state state;
    struct lws *wsi;
    uint32_t leader; /* the leader as consensus last named it; 0: none */
    uint32_t peer;   /* the node the link (or its last attempt) goes to */
    char addr[64];   /* peer's HTTP host:port from the directory */
    struct net_fwd_msg *head, *tail;
    size_t q_len, q_bytes;
    bool refused_full;       /* send() refused for room: kick later */
    uint32_t no_addr_logged; /* leader whose missing address was logged */
    unsigned failures;       /* consecutive failed attempts */
    uint64_t backoff_ms;     /* the next retry delay */
    uint64_t up_since;
    uint16_t peer_close_code; /* from the leader's close frame, 0: none */
    char peer_close_reason[64];
    uint64_t sent_batches; /* on the current link */
    uv_timer_t timer;      /* reconnect backoff */
    /* With a cluster key: batches wait until the leader proved itself. */
    bool authed;
    uint8_t nonce_c[CONS_NONCE_LEN];
};

/* Initialises the link and its timer on s->loop (no I/O). */
void net__fwd_init(struct net_server *s);
/* Registers the forwarder with consensus (net_server_start). */
void net__fwd_start(struct net_server *s);
/* Unregisters the forwarder, abandons the link, stops the timer. */
void net__fwd_stop(struct net_server *s);
/* uv_close of the timer handle, with cb. */
void net__fwd_close(struct net_server *s, uv_close_cb cb);
/* Frees the queued batches (once no lws callback can come). */
void net__fwd_release(struct net_server *s);
/* Is this upgrade request for NET_FWD_PATH? */
bool net__fwd_is_route(struct lws *wsi);
/* Is wsi bound to the NET_FWD_PROTOCOL protocol? */
bool net__fwd_is_protocol(struct lws *wsi);
/* Leader side: HTTP_CONFIRM_UPGRADE on NET_FWD_PATH (returns as
 * net__ws_on_confirm does). */
int net__fwd_on_confirm(struct net_conn *c);
/* Leader side: ESTABLISHED, RECEIVE, SERVER_WRITEABLE of a forward conn;
 * called through server.c's ws_event (closes via net__ws_close). */
int net__fwd_on_event(struct net_conn *c, enum lws_callback_reasons reason,
                      void *in, size_t len);
/* Leader side: the forward conn closed. Idempotent. */
void net__fwd_on_closed(struct net_conn *c);
/*
 * Leader side: reassembles a forwarded message from the pieces lws hands
 * to RECEIVE, in c->rx (pure: no lws calls, so the fuzz target drives it).
 * binary: the frame is binary (read at a message's first piece); final:
 * this piece ends the message; rest: bytes its frame still announces; max:
 * the bound on a message. On NET_FWD_RX_MESSAGE, *msg and *msg_len are the
 * whole message, either `in` itself or c->rx (valid until the next call).
 */
enum {
    NET_FWD_RX_MORE = 0,
    NET_FWD_RX_MESSAGE,
    NET_FWD_RX_TEXT,    /* a text message: not a batch */
    NET_FWD_RX_TOO_BIG, /* over max, known as soon as announced */
    NET_FWD_RX_NOMEM,
};
int net__fwd_rx_feed(struct net_conn *c, const uint8_t *in, size_t len,
                     bool binary, bool final, size_t rest, size_t max,
                     const uint8_t **msg, size_t *msg_len);
/* Whether wsi is this node's own link to the leader (lws stores it before
 * any callback about it, through the connect info's pwsi). */
bool net__fwd_is_link(const struct net_server *s, const struct lws *wsi);
/* Follower side: a callback of a wsi without a net_conn (client wsis). */
int net__fwd_client_event(struct net_server *s, struct lws *wsi,
                          enum lws_callback_reasons reason, void *in,
                          size_t len);

/* ---- metrics (metrics.c) ------------------------------------------------ */

/* Client-visible errors, by kind (driftd_errors_total{kind=...}). */
enum net_err_kind {
    NET_ERR_DECODE = 0,     /* malformed message or request (400) */
    NET_ERR_RATE_LIMIT,     /* a per-client rate (429, close 1008) */
    NET_ERR_NOT_READY,      /* node not ready to read (503 + Retry-After) */
    NET_ERR_ROOM_NOT_FOUND, /* 404, close 4004 */
    NET_ERR_TOO_BIG,        /* message or body over its bound (1009, 413) */
    NET_ERR_NOT_APPLIED,    /* push not applied or outcome unknown */
    NET_ERR_REFUSED,        /* relay refused an applied push (limits) */
    NET_ERR_OTHER,          /* 404 path, 405, 411, out of memory, ... */
    NET_ERR_COUNT,
};

enum net_transport {
    NET_TR_WS = 0,
    NET_TR_HTTP,
    NET_TR_COUNT,
};

/*
 * Counters net keeps as events happen: plain increments on the loop
 * thread, read by GET /metrics. Gauges (connections, rooms, raft) are read
 * from their owners at scrape time instead.
 */
struct net_metrics {
    uint64_t pushes[NET_TR_COUNT][4]; /* by transport, relay_action */
    uint64_t deliveries;              /* push frames queued to subscribers */
    uint64_t stream_size[NET_TR_COUNT];
    uint64_t errors[NET_ERR_COUNT];
    uint64_t slow_closes;
    uint64_t http_requests;
    uint64_t ws_accepted;
    uint64_t fwd_resets;      /* our link to the leader dropped: re-send */
    uint64_t fwd_batches;     /* batches written on our link */
    struct cons_hist ack;     /* push proposed here -> applied here */
    struct cons_hist deliver; /* leader's stamp -> push frames queued here */
    struct cons_hist loop_lag; /* loop turns' busy time (server.c) */
    double loop_lag_max_ms;
};

/* The push command of client message m in room (origin left zero; both
 * transports fill it their way), counted in the pushes metric of tr. */
void net__push_cmd(struct net_server *s, enum net_transport tr,
                   struct relay_cmd *cmd, const char *room, size_t room_len,
                   const struct relay_msg *m);

/* Records one push -> ack latency, from a uv_hrtime() taken at proposal. */
void net__metrics_latency(struct net_server *s, uint64_t start_ns);
/* GET /metrics: the text exposition format 0.0.4; malloc'd, NULL without
 * memory. */
char *net__metrics_text(struct net_server *s, size_t *len);

/* ---- the server (server.c) ---------------------------------------------- */

enum net_close_phase {
    NET_CLOSE_NONE = 0,
    NET_CLOSE_WAIT_WS,      /* close frames sent, waiting for sockets */
    NET_CLOSE_WAIT_CONTEXT, /* lws_context_destroy called */
    NET_CLOSE_DONE,
};

#define NET_MAX_STATIC_HANDLES 8

struct net_server {
    uv_loop_t *loop;
    struct net_config cfg; /* strings point at our copies below */
    char *http_host;       /* strdup'd */
    char *public_url;      /* strdup'd, trailing '/' removed, or NULL */
    struct cons_node *cons;

    struct lws_context *ctx; /* lws writes NULL here when destroyed */
    struct lws_vhost *vhost;
    /* "driftdb" (HTTP + client sessions), NET_FWD_PROTOCOL, terminator. */
    struct lws_protocols protocols[3];
    /* lws' own handles on our loop (its idle and timer), seen at context
     * creation; when they are gone the context can be finalised. */
    const void *lws_handles[NET_MAX_STATIC_HANDLES];
    size_t n_lws_handles;

    uint8_t seed[16];       /* hash seed, from getrandom */
    uint32_t boot_nonce;    /* high half of every session id */
    uint64_t applied_index; /* of the last command applied (asserted) */
    uint32_t next_session;

    struct htab owners;          /* session id -> struct net_conn */
    struct htab rooms;           /* room id -> struct net_room */
    struct net_conn *conns;      /* every accepted connection */
    struct net_conn *close_list; /* WS closes decided, not yet started */
    size_t n_conns;
    size_t n_ws;
    size_t n_fwd; /* established forward links from followers */

    struct net_fwd_link fwd; /* ours, to the leader */

    struct htab ips; /* peer address -> struct net_ip (limits.c) */
    struct net_ip *ip_list;
    size_t n_ips;
    uv_timer_t sweep;    /* deadlines and idle address entries */
    bool fwd_registered; /* our forwarder is set in consensus */

    bool started;
    bool stopping;
    bool closing;
    enum net_close_phase close_phase;
    uint64_t close_deadline;
    bool close_overdue_logged;
    uv_timer_t timer;      /* drives the close sequence */
    /* The loop lag probe (server.c): the start of this loop turn, and
     * libuv's idle time then. */
    uv_prepare_t turn_probe;
    uint64_t turn_start_ns, turn_idle_ns;
    uint64_t lag_logged_at; /* uv_now() of the last stall logged */
    uint64_t lag_stalls;    /* stalls since then */
    unsigned open_handles;  /* the timers and turn_probe, until closed */
    net_close_cb close_cb;
    void *close_arg;

    char errmsg[256];

    struct net_metrics metrics; /* metrics.c */

    /* Where net__ws_on_writeable assembles a coalesced write; lws copies
     * what the socket did not take, so it is free again on return. */
    uint8_t wbuf[LWS_PRE + NET_COALESCE_MAX];
};

/* One client-visible error of kind k (see enum net_err_kind). */
static inline void net__count_error(struct net_server *s, enum net_err_kind k)
{
    s->metrics.errors[k]++;
}

uint64_t net__session_new(struct net_server *s);
int net__owner_register(struct net_server *s, struct net_conn *c);
void net__owner_unregister(struct net_server *s, struct net_conn *c);
/* JSON string literal of (p, n) appended at *o (bounded by end); returns
 * false when it does not fit. */
bool net__json_str(char **o, char *end, const char *p, size_t n);

/* ---- HTTP (http.c) ------------------------------------------------------ */

int net__http_on_request(struct net_conn *c);
int net__http_on_body(struct net_conn *c, const void *in, size_t len);
int net__http_on_body_done(struct net_conn *c);
int net__http_on_writeable(struct net_conn *c);
/* Frees the transaction state and drops a pending result. */
void net__http_reset(struct net_conn *c);
void net__http_on_applied(struct net_conn *c, const struct cons_applied *ev);
void net__http_on_failed(struct net_conn *c, int code);
/* net_server_stop: answer a pending request with 503 now. */
void net__http_on_stop(struct net_conn *c);
/*
 * Writes a complete response synchronously, from inside a callback of
 * c->wsi (the upgrade refusal). Returns 0 or -1.
 */
int net__http_write_now(struct net_conn *c, unsigned status,
                        const char *message);
/* The same with a Retry-After header of retry_after seconds (0: none). */
int net__http_write_now_retry(struct net_conn *c, unsigned status,
                              const char *message, unsigned retry_after);
/*
 * NULL when this node's state may answer reads; else the client-facing
 * reason, "not ready: ..." (retryable: HTTP 503 with Retry-After
 * NET_RETRY_AFTER_S). A node that has not applied what its leader had
 * committed must not answer "room not found" or an empty init.
 */
const char *net__not_ready(struct net_server *s, char *buf, size_t cap);
#define NET_RETRY_AFTER_S 1
/* Parses a path into a route and room id; false for an unknown path. */
bool net__route_parse(const char *path, size_t len, enum net_route *route,
                      char *room, size_t *room_len);

/* Answers (http.c): body copied; respond_error's message becomes
 * {"error": msg, "code": code} for admin routes. */
/* 200 with body (malloc'd, freed here), or 503 "out of memory" when body
 * is NULL (the generator failed). */
void net__http_respond_built(struct net_conn *c, const char *ctype, char *body,
                             size_t len);
void net__http_respond(struct net_conn *c, unsigned status, const char *ctype,
                       const void *body, size_t len);

/* ---- admin API (admin.c) ------------------------------------------------ */

/* Decides an /admin/... request (body, if any, is in c->http). */
void net__admin_decide(struct net_conn *c);
/* True when no admin token is set or wsi's request carries it. */
bool net__admin_token_ok(struct net_server *s, struct lws *wsi);
/* The connection's transaction ends: a pending change answers nobody. */
void net__admin_detach(struct net_conn *c);

/* ---- the dashboard (ui.c, embedded files from cmake/ui_embed.cmake) ---- */

/* One embedded file of src/net/ui/; the table is generated at build time. */
struct net_ui_asset {
    const char *path;  /* "/ui/NAME" */
    const char *ctype; /* Content-Type, from the extension */
    const uint8_t *data;
    size_t len;
    const char *etag; /* quoted hash of the content */
};
extern const struct net_ui_asset net__ui_assets[];
extern const size_t net__ui_n_assets;

/* Answers a /ui request (c->http.path): 200 with the file, 304 when the
 * browser's If-None-Match is its ETag, 404, 405. */
void net__ui_serve(struct net_conn *c);
/* The extra headers of a /ui answer: CSP (with the members' origins),
 * nosniff, no referrer, no framing, no-cache and the ETag. 0 or -1. */
int net__ui_headers(struct net_conn *c, unsigned char **p, unsigned char *end);
/* The member whose HTTP origin (scheme of this node's client port, then
 * its advertised HOST:PORT) is the request's Origin header; 0: none. Read
 * while the request's headers are there (LWS_CALLBACK_HTTP). */
uint32_t net__ui_admin_origin(struct net_server *s, struct lws *wsi);
/* The CORS headers of an /admin answer: "Vary: Origin", and
 * Access-Control-Allow-Origin for c->http.cors_node only. 0 or -1. */
int net__ui_admin_cors(struct net_conn *c, unsigned char **p,
                       unsigned char *end);

/* ---- cluster status (status.c) ------------------------------------------ */

/* GET /cluster/status as JSON text; malloc'd, NULL without memory. */
char *net__cluster_status_json(struct net_server *s, size_t *len);

/* ---- WebSocket (ws.c) --------------------------------------------------- */

int net__ws_on_confirm(struct net_conn *c);
int net__ws_on_established(struct net_conn *c);
int net__ws_on_receive(struct net_conn *c, const void *in, size_t len);
int net__ws_on_writeable(struct net_conn *c);
void net__ws_on_closed(struct net_conn *c);
void net__ws_on_applied(struct net_conn *c, const struct cons_applied *ev);
/* The read barrier asked by c (cons_read_index with c's session) was
 * answered with status: the waiting get runs, or answers "retry". */
void net__ws_on_read(struct net_conn *c, int status);
/* Proposes cluster setting `setting` = value for an admin request; the
 * answer follows when it is applied here (http.c). */
void net__http_propose_config(struct net_conn *c, size_t setting,
                              uint64_t value);
void net__http_on_read(struct net_conn *c, int status);
void net__ws_on_failed(struct net_conn *c, const struct relay_origin *origin,
                       int code);
/* Queues a reference to f; closes a slow consumer instead of growing. */
void net__ws_queue(struct net_conn *c, struct net_frame *f);
/* Decides to close c with code/reason; see ws.c for when it happens. */
/* Like net__ws_close, but what is already queued is sent first. */
void net__ws_close_after_queue(struct net_conn *c, uint16_t code,
                               const char *reason);
void net__ws_close(struct net_conn *c, uint16_t code, const char *reason);
/* Closes every session of a room that was deleted (expired). */
#define NET_CLOSE_ROOM_DELETED 4004
/* 1013 "Try Again Later" (IANA WebSocket close code registry). */
#define NET_CLOSE_TRY_LATER 1013
void net__ws_close_room(struct net_server *s, const char *room, size_t len);
/* Hands the connections on srv->close_list to lws. Call at the end of an
 * entry point, never while walking the subscription index. */
void net__ws_run_closes(struct net_server *s);
void net__ws_unqueue_close(struct net_conn *c);
/* Fans a broadcast out to the subscribers of (room, key) on this node. */
void net__ws_broadcast(struct net_server *s, const struct relay_cmd *cmd,
                       const struct relay_effects *eff);
/* The state was replaced by a snapshot install (consensus): every session
 * gets an init with the entries of its keys it has not seen; sessions of a
 * room that no longer exists are closed 4004. */
void net__ws_on_restored(struct net_server *s);
/* Drops queued frames and the reassembly buffer. */
void net__ws_release(struct net_conn *c);

#endif
