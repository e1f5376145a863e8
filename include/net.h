/*
 * net.h - the HTTP + WebSocket front of a driftd node: libwebsockets on the
 * node's libuv loop (foreign loop), the DriftDB routes, sessions,
 * subscriptions and fan-out.
 *
 * net proposes through consensus and learns outcomes from the callbacks it
 * registers with cons_node_set_callbacks (net_server_on_applied /
 * net_server_on_failed).
 *
 * Everything runs on the loop given to net_server_init; nothing here is
 * thread-safe. Design notes are in src/net/internal.h.
 */
#ifndef DRIFTD_NET_H
#define DRIFTD_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "consensus.h"

enum {
    NET_OK = 0,
    NET_ENOMEM = 1,
    NET_EINVAL = 2,
    NET_ELISTEN = 3, /* could not listen (see errmsg) */
    NET_EBUSY = 4,   /* a per-client limit refused it */
};

/* A short text for a NET_* code (never NULL). */
const char *net_strerror(int code);

/* Longest admin token (checked at start-up: a longer one would not fit the
 * headers that carry it). */
#define NET_ADMIN_TOKEN_MAX 256

struct net_config {
    const char *http_host;     /* default "127.0.0.1" */
    int http_port;             /* default 8080 */
    const char *public_url;    /* e.g. "https://relay.example.com"; NULL: Host */
    size_t max_message;        /* one client message (reassembled), 1 MiB */
    size_t max_connections;    /* WebSocket + HTTP, default 10000 */
/* Descriptors kept for everything but client connections (raft links and
 * handshakes, log segments, the forward link, 503 answers past the
 * bound): max_connections is capped at RLIMIT_NOFILE minus this. */
#define NET_FD_RESERVE 512
    size_t max_out_bytes;      /* per-session outbound queue, 8 MiB */
    size_t max_http_body;      /* POST body, default = max_message */
    /* Per client (limits.c); 0: no limit. */
    size_t max_conns_per_ip;   /* connections per address, default 256 */
    double room_rate;          /* POST /new per second per address, 10 */
    size_t room_burst;         /* ... and at once, 100 */
    size_t msg_rate;           /* WebSocket messages/s per session, 20000 */
    size_t byte_rate;          /* and bytes/s, 64 MiB */
    unsigned header_timeout_ms;  /* a whole first request, 10000 */
    unsigned message_timeout_ms; /* a whole fragmented message, 30000 */
    const char *admin_token;   /* bearer token for the admin API; NULL: open */
    /* The cluster key: forward links prove they hold it (forward.c), and
     * the admin API is never open without a token while it is set. */
    bool has_cluster_key;
    uint8_t cluster_key[CONS_KEY_LEN];
    /* TLS on the client port (https://, wss://): PEM certificate chain and
     * key, read once by net_server_start; NULL: plain. A node with TLS
     * also speaks TLS to the leader's port on its forward link, checking
     * the leader's certificate against peer_ca (PEM bundle; NULL: the
     * system's CAs). Borrowed: must stay valid until start returns. */
    const char *tls_cert;
    const char *tls_key;
    const char *peer_ca;
};

void net_config_default(struct net_config *cfg);

struct net_server;

/*
 * No I/O (it initialises one uv timer on loop for the close sequence).
 * cfg is copied, strings included; zero/NULL fields take the defaults. cons
 * is borrowed and must outlive the server. On success *out is set and the
 * server must be closed with net_server_close (after start or not). On
 * failure (NET_EINVAL: bad port, no randomness; NET_ENOMEM) everything is
 * released already and *out is NULL.
 */
int net_server_init(struct net_server **out, uv_loop_t *loop,
                    const struct net_config *cfg, struct cons_node *cons);
/*
 * Creates the lws context on the loop (libuv event library, foreign loop)
 * and listens on cfg.http_host:http_port. NET_ELISTEN when the context or
 * the listener cannot be created (the reason is in net_server_errmsg);
 * net_server_close is still required then.
 */
int net_server_start(struct net_server *s);
/*
 * Stops accepting (closes the listener), answers held HTTP requests with
 * 503 and starts a close handshake 1001 "going away" on every WebSocket.
 * Idempotent; safe before start.
 */
void net_server_stop(struct net_server *s);
/*
 * Stops if needed, waits (up to 2 s) for WebSockets to finish closing and
 * the last HTTP answers to go out, destroys the lws context and waits until
 * lws finished releasing its handles on the loop. cb fires once, from a
 * later loop turn (never before this returns), after which s is freed and
 * no handle of net is left on the loop. With s == NULL, cb fires at once.
 */
typedef void (*net_close_cb)(void *arg);
void net_server_close(struct net_server *s, net_close_cb cb, void *arg);
/* The last error's detail; never NULL. */
const char *net_server_errmsg(const struct net_server *s);

/*
 * Hooks for cons_node_set_callbacks(cons, ..., s). Both are valid only until
 * net_server_close's cb fired: whoever closes consensus afterwards must make
 * sure neither is called any more (unset the callbacks first).
 * ev/origin are borrowed for the call. Commands whose origin is another node
 * or a session that closed meanwhile only feed the fan-out.
 */
void net_server_on_applied(void *arg, const struct cons_applied *ev);
/* cons_read_cb: a read barrier asked by a session was answered. */
void net_server_on_read(void *arg, uint64_t token, int status);
/* cons_restored_cb: brings every session up to date after a snapshot
 * install (see net__ws_on_restored). */
void net_server_on_restored(void *arg);
void net_server_on_failed(void *arg, const struct relay_origin *origin,
                          int code);

#endif
