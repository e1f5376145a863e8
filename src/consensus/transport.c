/*
 * transport.c - raft's TCP transport, with a mutual challenge-response in
 * front of it: the struct raft_uv_transport that raft_uv talks to.
 *
 * libraft's own TCP transport lets anyone who reaches the raft port claim
 * any node id and hands their bytes to libraft's decoder, which trusts
 * them (a forged AppendEntries can rewrite the log; a malformed one
 * crashed the node). Here a connection is raft's only after both ends have
 * proved they hold the cluster key, and libraft never sees a byte of a
 * connection that did not.
 *
 * Wire, integers big-endian, lock-step so that neither end ever reads past
 * the handshake into raft's own bytes:
 *   client -> server  HELLO  "DRIFTRF1" | client id u64 | server id u64 |
 *                            nonce_c[32] | addr len u16 | client raft addr
 *   server -> client  CHAL   "DRIFTRF1" | server id u64 | nonce_s[32] |
 *                            mac_s[32]
 *   client -> server  PROOF  mac_c[32]
 *   server -> client  OK     0x01
 * mac_s = HMAC(key, "driftd raft server" | T), mac_c = HMAC(key, "driftd
 * raft client" | T), T = nonce_c | nonce_s | client id | server id | addr.
 * Fresh nonces on both sides make every proof single-use; distinct labels
 * keep a server's proof from passing as a client's. Then the client hands
 * the stream to raft_uv as an outbound connection and the server as an
 * accepted one, with the id and address the client proved.
 *
 * Happy path (server): accept -> read HELLO (fixed part, then the address)
 * -> write CHAL -> read PROOF -> stop reading, write OK -> in its callback
 * raft's accept callback gets the stream.
 * Happy path (client): resolve (numeric addresses skip it) -> connect ->
 * write HELLO -> read CHAL, check it -> write PROOF -> read OK -> raft's
 * connect callback gets the stream.
 *
 * Failure modes: anything unexpected (bad magic, wrong id, wrong proof, a
 * byte too many, EOF, TP_HANDSHAKE_MS without finishing) closes the
 * connection; the client's raft request fails with RAFT_NOCONNECTION
 * (raft_uv retries later), or RAFT_CANCELED while closing. Refused
 * incoming peers are logged with their address, rate-limited. At most
 * TP_MAX_INBOUND handshakes run at once; more are closed on accept.
 *
 * Streams are allocated with raft_malloc: raft_uv frees the ones it gets.
 * With --peer-cert the socket is first wrapped in mutual TLS (tls.c) and
 * all of the above runs inside it, on a socketpair the pump feeds; raft_uv
 * then gets that socketpair's end instead of the socket.
 */
#define LOG_MODULE "cons"
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "log.h"

#define TP_MAGIC "DRIFTRF1"
#define TP_MAGIC_LEN 8
#define TP_HELLO_FIXED (TP_MAGIC_LEN + 8 + 8 + CONS_NONCE_LEN + 2)
#define TP_ADDR_MAX 255
#define TP_CHAL_LEN (TP_MAGIC_LEN + 8 + CONS_NONCE_LEN + CONS_MAC_LEN)
#define TP_OK_BYTE 0x01
#define TP_HANDSHAKE_MS 5000
#define TP_MAX_INBOUND 64

static const char LABEL_SERVER[] = "driftd raft server";
static const char LABEL_CLIENT[] = "driftd raft client";

enum tp_stage {
    TP_RESOLVING,
    TP_CONNECTING,
    TP_WAIT_HELLO, /* server: fixed part */
    TP_WAIT_ADDR,  /* server: the client's address */
    TP_WAIT_CHAL,  /* client */
    TP_WAIT_PROOF, /* server */
    TP_WAIT_OK,    /* client */
    TP_WRITING_OK, /* server */
    TP_DONE,       /* handed to raft, or failed */
};

struct cons__hs {
    struct cons__tp *tp;
    struct cons__hs *prev, *next;
    bool outbound;
    enum tp_stage stage;
    /* What keeps this struct alive: freed when all are false. */
    bool timer_open, stream_open, gai_pending;
    /* What the handshake reads and writes, then raft's: the TCP socket, or
     * with TLS the plain end of the pump's socketpair. raft_malloc'd; NULL
     * once raft has it. */
    uv_stream_t *stream;
    uv_timer_t timer;
    uv_getaddrinfo_t gai;
    uv_connect_t connect;
    uv_write_t write1, write2;
    struct raft_uv_connect *req; /* client: raft's request, until answered */
    raft_uv_connect_cb cb;
    raft_id peer_id;                 /* client: the target; server: claimed */
    char peer_addr[TP_ADDR_MAX + 1]; /* client: target; server: proved */
    char remote[64];                 /* the socket's peer, for logs */
    char host[TP_ADDR_MAX + 1];      /* client: the host dialled */
    int port;
    uint8_t nonce_c[CONS_NONCE_LEN], nonce_s[CONS_NONCE_LEN];
    uint8_t rx[TP_HELLO_FIXED + TP_ADDR_MAX];
    size_t rx_len, rx_want;
    uint8_t tx1[TP_HELLO_FIXED + TP_ADDR_MAX]; /* HELLO or CHAL */
    uint8_t tx2[CONS_MAC_LEN];                 /* PROOF or OK */
};

static struct cons__tp *tp_of(struct raft_uv_transport *t)
{
    return t->impl;
}

static void hs_maybe_free(struct cons__hs *h)
{
    struct cons__tp *tp = h->tp;

    if (h->timer_open || h->stream_open || h->gai_pending)
        return;
    if (h->prev != NULL)
        h->prev->next = h->next;
    else
        tp->hs_head = h->next;
    if (h->next != NULL)
        h->next->prev = h->prev;
    if (!h->outbound)
        tp->n_inbound--;
    free(h);
    cons__tp_maybe_closed(tp);
}

static void on_timer_closed(uv_handle_t *handle)
{
    struct cons__hs *h = handle->data;

    h->timer_open = false;
    hs_maybe_free(h);
}

static void on_stream_closed(uv_handle_t *handle)
{
    struct cons__hs *h = handle->data;

    raft_free(handle);
    h->stream_open = false;
    hs_maybe_free(h);
}

/* Fills in the transcript both proofs are made over. */
static int make_mac(const struct cons__hs *h, const char *label,
                    raft_id client_id, raft_id server_id, const char *addr,
                    uint8_t out[CONS_MAC_LEN])
{
    uint8_t ids[16];
    struct cons_auth_part parts[4];

    cons_put_u64(ids, client_id);
    cons_put_u64(ids + 8, server_id);
    parts[0] = (struct cons_auth_part){h->nonce_c, CONS_NONCE_LEN};
    parts[1] = (struct cons_auth_part){h->nonce_s, CONS_NONCE_LEN};
    parts[2] = (struct cons_auth_part){ids, sizeof(ids)};
    parts[3] = (struct cons_auth_part){addr, strlen(addr)};
    return cons_auth_mac(h->tp->key, label, parts, 4, out);
}

/*
 * Ends the handshake: the stream goes to raft (stream != NULL) or is
 * closed. why == NULL: success. A client's raft request is answered here
 * exactly once.
 */
static void hs_finish(struct cons__hs *h, const char *why, bool auth_failure)
{
    struct cons__tp *tp = h->tp;
    struct raft_uv_connect *req = h->req;
    uv_stream_t *stream = NULL;

    if (h->stage == TP_DONE)
        return;
    h->stage = TP_DONE;
    if (why == NULL) {
        stream = h->stream;
        uv_read_stop(stream);
        h->stream = NULL;
        h->stream_open = false; /* raft's now */
    }
    if (h->timer_open)
        uv_close((uv_handle_t *)&h->timer, on_timer_closed);
    if (h->stream != NULL && !uv_is_closing((uv_handle_t *)h->stream))
        uv_close((uv_handle_t *)h->stream, on_stream_closed);
    if (h->gai_pending)
        uv_cancel((uv_req_t *)&h->gai);
    if (why != NULL) {
        if (!h->outbound)
            LOG_WARN_RL("event=raft_peer_refused remote=%s claimed_id=%llu "
                        "why=\"%s\"",
                        h->remote, (unsigned long long)h->peer_id, why);
        else if (auth_failure)
            LOG_WARN_RL("event=raft_connect_refused id=%llu addr=%s "
                        "why=\"%s\"",
                        (unsigned long long)h->peer_id, h->peer_addr, why);
        else
            LOG_DEBUG("event=raft_connect_failed id=%llu addr=%s why=\"%s\"",
                      (unsigned long long)h->peer_id, h->peer_addr, why);
    }
    if (h->outbound) {
        h->req = NULL;
        if (req != NULL)
            h->cb(req, stream,
                  stream != NULL ? 0
                  : tp->closing  ? RAFT_CANCELED
                                 : RAFT_NOCONNECTION);
    } else if (stream != NULL) {
        LOG_DEBUG("event=raft_peer_accepted remote=%s id=%llu addr=%s",
                  h->remote, (unsigned long long)h->peer_id, h->peer_addr);
        tp->accept_cb(tp->t, h->peer_id, h->peer_addr, stream);
    }
    hs_maybe_free(h);
}

static void on_hs_timeout(uv_timer_t *t)
{
    hs_finish(t->data, "handshake timed out", false);
}

static void on_write(uv_write_t *w, int status)
{
    struct cons__hs *h = w->data;

    if (h->stage == TP_DONE)
        return;
    if (status != 0) {
        hs_finish(h, uv_strerror(status), false);
        return;
    }
    if (h->stage == TP_WRITING_OK && w == &h->write2)
        hs_finish(h, NULL, false);
}

static int hs_write(struct cons__hs *h, uv_write_t *w, const uint8_t *buf,
                    size_t len)
{
    uv_buf_t b = uv_buf_init((char *)buf, (unsigned)len);

    w->data = h;
    return uv_write(w, h->stream, &b, 1, on_write);
}

static void expect(struct cons__hs *h, enum tp_stage stage, size_t bytes)
{
    h->stage = stage;
    h->rx_len = 0;
    h->rx_want = bytes;
}

/*
 * With mutual TLS, the TCP socket goes to a pump (tls.c) and the handshake
 * continues on the plain end of its socketpair. host: what a client
 * dialled (its certificate check), NULL on the server side.
 */
static bool wrap_tls(struct cons__hs *h, const char *host)
{
    uv_pipe_t *plain;

    if (h->tp->tls_server == NULL)
        return true;
    if (cons__tls_start(h->tp, (uv_tcp_t *)h->stream, !h->outbound, host,
                        h->remote, &plain) != CONS_OK)
        return false;
    plain->data = h;
    h->stream = (uv_stream_t *)plain;
    return true;
}

/* ---- server side -------------------------------------------------------- */

static const char *server_got_hello(struct cons__hs *h)
{
    struct cons__tp *tp = h->tp;
    raft_id to;
    size_t alen;

    if (memcmp(h->rx, TP_MAGIC, TP_MAGIC_LEN) != 0)
        return "not a driftd raft handshake";
    h->peer_id = cons_get_u64(h->rx + TP_MAGIC_LEN);
    to = cons_get_u64(h->rx + TP_MAGIC_LEN + 8);
    memcpy(h->nonce_c, h->rx + TP_MAGIC_LEN + 16, CONS_NONCE_LEN);
    alen = (size_t)h->rx[TP_HELLO_FIXED - 2] << 8 | h->rx[TP_HELLO_FIXED - 1];
    if (h->peer_id == 0)
        return "node id 0";
    if (to != tp->id)
        return "addressed to another node id";
    if (alen == 0 || alen > TP_ADDR_MAX)
        return "bad address length";
    h->stage = TP_WAIT_ADDR;
    h->rx_want = TP_HELLO_FIXED + alen;
    return NULL;
}

static const char *server_got_addr(struct cons__hs *h)
{
    struct cons__tp *tp = h->tp;
    size_t alen = h->rx_len - TP_HELLO_FIXED;
    uint8_t *w = h->tx1;

    for (size_t i = 0; i < alen; i++) {
        uint8_t c = h->rx[TP_HELLO_FIXED + i];

        if (c <= 0x20 || c >= 0x7f)
            return "bad address";
    }
    memcpy(h->peer_addr, h->rx + TP_HELLO_FIXED, alen);
    h->peer_addr[alen] = '\0';
    if (cons_random(h->nonce_s, CONS_NONCE_LEN) != 0)
        return "no randomness";
    memcpy(w, TP_MAGIC, TP_MAGIC_LEN);
    cons_put_u64(w + TP_MAGIC_LEN, tp->id);
    memcpy(w + TP_MAGIC_LEN + 8, h->nonce_s, CONS_NONCE_LEN);
    if (make_mac(h, LABEL_SERVER, h->peer_id, tp->id, h->peer_addr,
                 w + TP_MAGIC_LEN + 8 + CONS_NONCE_LEN) != 0)
        return "out of memory";
    if (hs_write(h, &h->write1, w, TP_CHAL_LEN) != 0)
        return "write failed";
    expect(h, TP_WAIT_PROOF, CONS_MAC_LEN);
    return NULL;
}

static const char *server_got_proof(struct cons__hs *h, bool *auth_failure)
{
    uint8_t want[CONS_MAC_LEN];

    if (make_mac(h, LABEL_CLIENT, h->peer_id, h->tp->id, h->peer_addr, want) !=
        0)
        return "out of memory";
    if (!cons_auth_equal(want, h->rx, CONS_MAC_LEN)) {
        *auth_failure = true;
        return "wrong proof (a different cluster key?)";
    }
    /* Nothing more may come before OK: the client waits for it. */
    uv_read_stop(h->stream);
    h->tx2[0] = TP_OK_BYTE;
    h->stage = TP_WRITING_OK;
    if (hs_write(h, &h->write2, h->tx2, 1) != 0)
        return "write failed";
    return NULL;
}

/* ---- client side -------------------------------------------------------- */

static const char *client_got_chal(struct cons__hs *h, bool *auth_failure)
{
    struct cons__tp *tp = h->tp;
    uint8_t want[CONS_MAC_LEN];

    if (memcmp(h->rx, TP_MAGIC, TP_MAGIC_LEN) != 0)
        return "not a driftd raft handshake";
    if (cons_get_u64(h->rx + TP_MAGIC_LEN) != h->peer_id) {
        *auth_failure = true;
        return "answered as another node id";
    }
    memcpy(h->nonce_s, h->rx + TP_MAGIC_LEN + 8, CONS_NONCE_LEN);
    if (make_mac(h, LABEL_SERVER, tp->id, h->peer_id, tp->address, want) != 0)
        return "out of memory";
    if (!cons_auth_equal(want, h->rx + TP_MAGIC_LEN + 8 + CONS_NONCE_LEN,
                         CONS_MAC_LEN)) {
        *auth_failure = true;
        return "wrong proof from the server (a different cluster key?)";
    }
    if (make_mac(h, LABEL_CLIENT, tp->id, h->peer_id, tp->address, h->tx2) != 0)
        return "out of memory";
    if (hs_write(h, &h->write2, h->tx2, CONS_MAC_LEN) != 0)
        return "write failed";
    expect(h, TP_WAIT_OK, 1);
    return NULL;
}

/* ---- reading ------------------------------------------------------------ */

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct cons__hs *h = handle->data;

    (void)suggested;
    /* Never more than the current message: the bytes after it are not
     * ours to read. A zero-length buffer makes libuv report ENOBUFS. */
    *buf = uv_buf_init((char *)h->rx + h->rx_len,
                       (unsigned)(h->rx_want - h->rx_len));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct cons__hs *h = stream->data;
    const char *why = NULL;
    bool auth_failure = false;

    (void)buf;
    if (h->stage == TP_DONE || nread == 0)
        return;
    if (nread < 0) {
        hs_finish(h,
                  nread == UV_EOF ? "closed during the handshake"
                                  : uv_strerror((int)nread),
                  false);
        return;
    }
    h->rx_len += (size_t)nread;
    if (h->rx_len < h->rx_want)
        return;
    switch (h->stage) {
    case TP_WAIT_HELLO:
        why = server_got_hello(h);
        break;
    case TP_WAIT_ADDR:
        why = server_got_addr(h);
        break;
    case TP_WAIT_PROOF:
        why = server_got_proof(h, &auth_failure);
        break;
    case TP_WAIT_CHAL:
        why = client_got_chal(h, &auth_failure);
        break;
    case TP_WAIT_OK:
        if (h->rx[0] != TP_OK_BYTE)
            why = "bad OK byte";
        else
            hs_finish(h, NULL, false);
        break;
    default:
        why = "unexpected bytes";
        break;
    }
    if (why != NULL)
        hs_finish(h, why, auth_failure || !h->outbound);
}

static struct cons__hs *hs_new(struct cons__tp *tp, bool outbound)
{
    struct cons__hs *h = calloc(1, sizeof(*h));
    uv_tcp_t *tcp;

    if (h == NULL)
        return NULL;
    tcp = raft_malloc(sizeof(*tcp));
    if (tcp == NULL)
        goto err_free;
    h->tp = tp;
    h->outbound = outbound;
    uv_tcp_init(tp->loop, tcp);
    tcp->data = h;
    h->stream = (uv_stream_t *)tcp;
    h->stream_open = true;
    uv_timer_init(tp->loop, &h->timer);
    h->timer.data = h;
    h->timer_open = true;
    uv_timer_start(&h->timer, on_hs_timeout, TP_HANDSHAKE_MS, 0);
    h->next = tp->hs_head;
    if (h->next != NULL)
        h->next->prev = h;
    tp->hs_head = h;
    if (!outbound)
        tp->n_inbound++;
    return h;
err_free:
    free(h);
    return NULL;
}

/* ---- listening ---------------------------------------------------------- */

static void on_connection(uv_stream_t *server, int status)
{
    struct cons__tp *tp = server->data;
    struct cons__hs *h;
    struct sockaddr_storage sa;
    int len = sizeof(sa);

    if (status < 0) {
        LOG_WARN_RL("event=raft_accept_failed err=\"%s\"", uv_strerror(status));
        return;
    }
    if (tp->closing)
        return;
    h = hs_new(tp, false);
    if (h == NULL) {
        LOG_WARN_RL("event=raft_accept_failed err=\"out of memory\"");
        return;
    }
    snprintf(h->remote, sizeof(h->remote), "?");
    if (uv_accept(server, h->stream) != 0) {
        hs_finish(h, "accept failed", false);
        return;
    }
    if (uv_tcp_getpeername((uv_tcp_t *)h->stream, (struct sockaddr *)&sa,
                           &len) == 0) {
        char ip[48];

        if (sa.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a6 = (const void *)&sa;

            uv_ip6_name(a6, ip, sizeof(ip));
            snprintf(h->remote, sizeof(h->remote), "[%s]:%u", ip,
                     (unsigned)ntohs(a6->sin6_port));
        } else {
            const struct sockaddr_in *a4 = (const void *)&sa;

            uv_ip4_name(a4, ip, sizeof(ip));
            snprintf(h->remote, sizeof(h->remote), "%s:%u", ip,
                     (unsigned)ntohs(a4->sin_port));
        }
    }
    if (tp->n_inbound > TP_MAX_INBOUND) {
        hs_finish(h, "too many handshakes in progress", false);
        return;
    }
    /* TCP_NODELAY: raft batches by itself, and Nagle would hold a small
     * AppendEntries behind the peer's delayed ACK, ~40 ms on Linux. */
    uv_tcp_nodelay((uv_tcp_t *)h->stream, 1);
    if (!wrap_tls(h, NULL)) {
        hs_finish(h, "TLS setup failed", false);
        return;
    }
    expect(h, TP_WAIT_HELLO, TP_HELLO_FIXED);
    if (uv_read_start(h->stream, on_alloc, on_read) != 0)
        hs_finish(h, "read failed", false);
}

static int resolve_bind(const char *address, struct sockaddr_storage *out,
                        char *err, size_t errlen)
{
    char host[TP_ADDR_MAX + 1];
    struct addrinfo hints, *res = NULL;
    int port, rv;

    if (!cons_addr_split(address, host, sizeof(host), &port)) {
        snprintf(err, errlen, "bad raft address %.100s", address);
        return RAFT_INVALID;
    }
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)out) == 0 ||
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)out) == 0)
        return 0;
    /* A host name: resolved once, at start-up, before anything is served. */
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rv = getaddrinfo(host, NULL, &hints, &res);
    if (rv != 0 || res == NULL) {
        snprintf(err, errlen, "resolve %.100s: %s", host, gai_strerror(rv));
        return RAFT_INVALID;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    if (res->ai_family == AF_INET6)
        ((struct sockaddr_in6 *)out)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)out)->sin_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return 0;
}

static int tp_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
    struct cons__tp *tp = tp_of(t);

    if (strlen(address) > TP_ADDR_MAX) {
        snprintf(t->errmsg, sizeof(t->errmsg), "raft address too long");
        return RAFT_NAMETOOLONG;
    }
    tp->id = id;
    snprintf(tp->address, sizeof(tp->address), "%s", address);
    return 0;
}

static int tp_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct cons__tp *tp = tp_of(t);
    struct sockaddr_storage sa;
    int rv;

    rv = resolve_bind(tp->address, &sa, t->errmsg, sizeof(t->errmsg));
    if (rv != 0)
        return rv;
    tp->accept_cb = cb;
    rv = uv_tcp_bind(&tp->listener, (const struct sockaddr *)&sa, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&tp->listener, 128, on_connection);
    if (rv != 0) {
        snprintf(t->errmsg, sizeof(t->errmsg), "listen %.100s: %s", tp->address,
                 uv_strerror(rv));
        return RAFT_IOERR;
    }
    return 0;
}

/* ---- connecting --------------------------------------------------------- */

static void on_connect(uv_connect_t *req, int status)
{
    struct cons__hs *h = req->data;
    struct cons__tp *tp = h->tp;
    uint8_t *w = h->tx1;
    size_t alen = strlen(tp->address);

    if (h->stage == TP_DONE)
        return;
    if (status != 0) {
        hs_finish(h, uv_strerror(status), false);
        return;
    }
    uv_tcp_nodelay((uv_tcp_t *)h->stream, 1);
    if (!wrap_tls(h, h->host)) {
        hs_finish(h, "TLS setup failed", false);
        return;
    }
    if (cons_random(h->nonce_c, CONS_NONCE_LEN) != 0) {
        hs_finish(h, "no randomness", false);
        return;
    }
    memcpy(w, TP_MAGIC, TP_MAGIC_LEN);
    cons_put_u64(w + TP_MAGIC_LEN, tp->id);
    cons_put_u64(w + TP_MAGIC_LEN + 8, h->peer_id);
    memcpy(w + TP_MAGIC_LEN + 16, h->nonce_c, CONS_NONCE_LEN);
    w[TP_HELLO_FIXED - 2] = (uint8_t)(alen >> 8);
    w[TP_HELLO_FIXED - 1] = (uint8_t)alen;
    memcpy(w + TP_HELLO_FIXED, tp->address, alen);
    expect(h, TP_WAIT_CHAL, TP_CHAL_LEN);
    if (hs_write(h, &h->write1, w, TP_HELLO_FIXED + alen) != 0 ||
        uv_read_start(h->stream, on_alloc, on_read) != 0)
        hs_finish(h, "write failed", false);
}

static void start_connect(struct cons__hs *h, const struct sockaddr *sa)
{
    int rv;

    h->stage = TP_CONNECTING;
    h->connect.data = h;
    rv = uv_tcp_connect(&h->connect, (uv_tcp_t *)h->stream, sa, on_connect);
    if (rv != 0)
        hs_finish(h, uv_strerror(rv), false);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct cons__hs *h = req->data;

    h->gai_pending = false;
    if (h->stage == TP_DONE) {
        uv_freeaddrinfo(res);
        hs_maybe_free(h);
        return;
    }
    if (status != 0 || res == NULL) {
        uv_freeaddrinfo(res);
        hs_finish(h, status != 0 ? uv_strerror(status) : "no address", false);
        return;
    }
    if (res->ai_family == AF_INET6)
        ((struct sockaddr_in6 *)res->ai_addr)->sin6_port =
            htons((uint16_t)h->port);
    else
        ((struct sockaddr_in *)res->ai_addr)->sin_port =
            htons((uint16_t)h->port);
    start_connect(h, res->ai_addr);
    uv_freeaddrinfo(res);
}

static int tp_connect(struct raft_uv_transport *t, struct raft_uv_connect *req,
                      raft_id id, const char *address, raft_uv_connect_cb cb)
{
    struct cons__tp *tp = tp_of(t);
    char host[TP_ADDR_MAX + 1];
    struct sockaddr_storage sa;
    struct addrinfo hints;
    struct cons__hs *h;
    int port, rv;

    if (tp->closing)
        return RAFT_CANCELED;
    if (tp->no_dial)
        return RAFT_NOCONNECTION;
    if (strlen(address) > TP_ADDR_MAX ||
        !cons_addr_split(address, host, sizeof(host), &port))
        return RAFT_NOCONNECTION;
    h = hs_new(tp, true);
    if (h == NULL)
        return RAFT_NOMEM;
    h->req = req;
    h->cb = cb;
    h->peer_id = id;
    h->port = port;
    snprintf(h->host, sizeof(h->host), "%s", host);
    snprintf(h->peer_addr, sizeof(h->peer_addr), "%s", address);
    snprintf(h->remote, sizeof(h->remote), "%.63s", address);
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&sa) == 0 ||
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&sa) == 0) {
        start_connect(h, (const struct sockaddr *)&sa);
        return 0;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    h->stage = TP_RESOLVING;
    h->gai.data = h;
    rv = uv_getaddrinfo(tp->loop, &h->gai, on_resolved, host, NULL, &hints);
    if (rv != 0) {
        /* Not answered through the callback: raft retries on its timer. */
        h->req = NULL;
        hs_finish(h, uv_strerror(rv), false);
        return RAFT_NOCONNECTION;
    }
    h->gai_pending = true;
    return 0;
}

/* ---- closing ------------------------------------------------------------ */

void cons__tp_maybe_closed(struct cons__tp *tp)
{
    raft_uv_transport_close_cb cb = tp->close_cb;

    if (!tp->closing || tp->listener_open || tp->hs_head != NULL ||
        tp->pumps != NULL || cb == NULL)
        return;
    tp->close_cb = NULL;
    cons__tls_free(tp);
    cb(tp->t);
}

static void on_listener_closed(uv_handle_t *handle)
{
    struct cons__tp *tp = handle->data;

    tp->listener_open = false;
    cons__tp_maybe_closed(tp);
}

static void tp_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
    struct cons__tp *tp = tp_of(t);
    struct cons__hs *h, *next;

    tp->closing = true;
    tp->close_cb = cb;
    for (h = tp->hs_head; h != NULL; h = next) {
        next = h->next;
        hs_finish(h, "transport closing", false);
    }
    cons__tls_close_all(tp);
    if (tp->listener_open && !uv_is_closing((uv_handle_t *)&tp->listener))
        uv_close((uv_handle_t *)&tp->listener, on_listener_closed);
    else
        cons__tp_maybe_closed(tp);
}

void cons__tp_init(struct cons__tp *tp, struct raft_uv_transport *t,
                   uv_loop_t *loop, const uint8_t key[CONS_KEY_LEN])
{
    memset(tp, 0, sizeof(*tp));
    tp->t = t;
    tp->loop = loop;
    if (key != NULL)
        memcpy(tp->key, key, CONS_KEY_LEN);
    uv_tcp_init(loop, &tp->listener);
    tp->listener.data = tp;
    tp->listener_open = true;
    memset(t, 0, sizeof(*t));
    t->version = 1;
    t->impl = tp;
    t->init = tp_init;
    t->listen = tp_listen;
    t->connect = tp_connect;
    t->close = tp_close;
}
