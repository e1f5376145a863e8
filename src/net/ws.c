/*
 * ws.c - WebSocket sessions: the upgrade on GET /room/ID/connect, inbound
 * reassembly and decoding, push/get/ping, fan-out of broadcasts, and the
 * bounded outbound queue of every session.
 *
 * Happy path: CONFIRM_UPGRADE checks the room and reads the query
 * (cbor/msgpack/debug); ESTABLISHED registers the session (its origin id)
 * and attaches it to the room index; every complete message is decoded
 * (text: JSON, binary: the session's binary format) and acted upon; pushes
 * are proposed with origin (node, session, ++counter) and their results come
 * back through net__ws_on_applied / net__ws_on_failed. Replies keep the
 * order of requests: a get/ping behind an unacknowledged push waits for it
 * (see handle_message), with the socket's reading paused meanwhile.
 *
 * Outbound: every server message is a refcounted struct net_frame (payload
 * after LWS_PRE headroom, so lws can put the WS header in front without a
 * copy). A session queues references in a ring and writes them from
 * SERVER_WRITEABLE while the socket takes more; a broadcast encodes at most
 * one frame per format and shares it among all subscribers.
 *
 * Failure modes:
 * - a frame that cannot be decoded: an `error` message; the session stays.
 * - a message over cfg.max_message: close 1009 "message too big".
 * - a session whose queue would pass cfg.max_out_bytes: close 1008 "slow
 *   consumer", its queue dropped; lws cuts it if its socket does not take
 *   the close frame in time.
 * - the session closes with results in flight: it leaves the owner table
 *   and the index at CLOSED, so a later result finds nobody.
 *
 * Not here: HTTP answers (http.c), the index data structure (subs.c).
 */
#define LOG_MODULE "net"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "log.h"

/* Reassembly buffers bigger than this are released after each message. */
#define NET_RX_KEEP 65536

/* ---- frames ------------------------------------------------------------- */

struct net_frame *net__frame_new(uint8_t *buf, size_t len, enum relay_fmt fmt)
{
    struct net_frame *f = malloc(sizeof(*f));

    if (f == NULL) {
        free(buf);
        return NULL;
    }
    f->refs = 1;
    f->binary = fmt != RELAY_FMT_JSON;
    f->len = len;
    f->buf = buf;
    return f;
}

void net__frame_unref(struct net_frame *f)
{
    if (f == NULL || --f->refs > 0)
        return;
    free(f->buf);
    free(f);
}

/* ---- outbound queue ----------------------------------------------------- */

/* One message held back until the session's earlier pushes resolved. */
struct net_deferred {
    struct net_deferred *next;
    size_t cost;   /* raw frame bytes, against the bound */
    bool is_error; /* a decode error to report, not a message */
    /* A get that replays: it runs once the read it asked consensus for
     * (read_seq-th of this session) is answered, with read_status. */
    uint64_t read_seq;
    int read_status;
    struct relay_msg msg; /* owned */
    char err[256];
};

static void deferred_free_all(struct net_conn *c)
{
    struct net_deferred *d;

    while ((d = c->defer_head) != NULL) {
        c->defer_head = d->next;
        relay_msg_free(&d->msg);
        free(d);
    }
    c->defer_tail = NULL;
    c->n_deferred = 0;
    c->deferred_bytes = 0;
}

void net__ws_release(struct net_conn *c)
{
    deferred_free_all(c);
    while (c->q_len > 0) {
        net__frame_unref(c->q[c->q_head]);
        c->q_head = (c->q_head + 1) % c->q_cap;
        c->q_len--;
    }
    free(c->q);
    c->q = NULL;
    c->q_cap = c->q_head = 0;
    c->out_bytes = 0;
    free(c->rx);
    c->rx = NULL;
    c->rx_cap = c->rx_len = 0;
    c->rx_active = false;
}

/*
 * Closing a WebSocket with a code, the lws 4.1 way:
 * - inside the connection's own RECEIVE/ESTABLISHED callback the dispatcher
 *   (server.c) calls lws_close_reason() and returns -1 after the handler;
 * - from anywhere else (a broadcast, the stop sequence) the connection goes
 *   on srv's close list, and net__ws_run_closes() calls lws_close_reason()
 *   then lws_set_timeout(LWS_TO_KILL_SYNC), which starts lws' close
 *   handshake: the close frame goes out when the socket takes it, and lws
 *   cuts the connection if that does not happen within its close timeout.
 *   It runs after the caller's loops over the index, because lws may report
 *   the connection closed synchronously, which detaches it.
 * Returning -1 from SERVER_WRITEABLE is not used: lws 4.1 treats that as a
 * failed write and drops the socket without a close frame.
 */
void net__ws_close_after_queue(struct net_conn *c, uint16_t code,
                               const char *reason)
{
    if (c->closing || !c->established)
        return;
    /* What is queued (bounded by max_out_bytes) goes first, then the close
     * frame: the client reads why (an error message) before the close. */
    c->close_flush = true;
    c->closing = true;
    c->close_code = code;
    snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason);
    lws_callback_on_writable(c->wsi);
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, NET_CLOSE_FLUSH_S);
}

void net__ws_close(struct net_conn *c, uint16_t code, const char *reason)
{
    struct net_server *s = c->srv;

    if (c->closing || !c->established)
        return;
    c->closing = true;
    c->close_code = code;
    snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason);
    /* Nothing more goes out but the close frame. */
    while (c->q_len > 0) {
        net__frame_unref(c->q[c->q_head]);
        c->q_head = (c->q_head + 1) % c->q_cap;
        c->q_len--;
    }
    c->out_bytes = 0;
    if (c->in_callback)
        return;
    c->close_next = s->close_list;
    s->close_list = c;
    c->close_queued = true;
}

void net__ws_close_room(struct net_server *s, const char *room, size_t len)
{
    /* Rare (a room expired or was deleted): a walk over all connections. */
    for (struct net_conn *c = s->conns; c != NULL; c = c->next)
        if (c->kind == NET_CONN_WS && c->established && !c->closing &&
            c->room_len == len && memcmp(c->room_id, room, len) == 0)
            net__ws_close(c, NET_CLOSE_ROOM_DELETED, "room deleted");
}

void net__ws_run_closes(struct net_server *s)
{
    struct net_conn *c;

    while ((c = s->close_list) != NULL) {
        s->close_list = c->close_next;
        c->close_next = NULL;
        c->close_queued = false;
        if (!c->established || c->close_started)
            continue;
        /* The close frame goes out from the next WRITEABLE (ws_event),
         * after whatever lws still holds of a partly written frame, so the
         * client reads a clean close with its code (RFC 6455 section 7)
         * rather than a cut connection. A peer that reads nothing more is
         * cut after NET_CLOSE_FLUSH_S; all it holds meanwhile is that tail
         * (the queue was dropped). */
        if (!lws_partial_buffered(c->wsi)) {
            /* Nothing held back: the close frame goes out now. */
            c->close_started = true;
            lws_close_reason(c->wsi, (enum lws_close_status)c->close_code,
                             (unsigned char *)c->close_reason,
                             strlen(c->close_reason));
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
            continue;
        }
        lws_callback_on_writable(c->wsi);
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, NET_CLOSE_FLUSH_S);
    }
}

void net__ws_unqueue_close(struct net_conn *c)
{
    struct net_conn **pp;

    if (!c->close_queued)
        return;
    for (pp = &c->srv->close_list; *pp != NULL; pp = &(*pp)->close_next) {
        if (*pp == c) {
            *pp = c->close_next;
            break;
        }
    }
    c->close_queued = false;
    c->close_next = NULL;
}

static int ring_grow(struct net_conn *c)
{
    size_t cap = c->q_cap == 0 ? 16 : c->q_cap * 2, i;
    struct net_frame **q = malloc(cap * sizeof(*q));

    if (q == NULL)
        return NET_ENOMEM;
    for (i = 0; i < c->q_len; i++)
        q[i] = c->q[(c->q_head + i) % c->q_cap];
    free(c->q);
    c->q = q;
    c->q_cap = cap;
    c->q_head = 0;
    return NET_OK;
}

void net__ws_queue(struct net_conn *c, struct net_frame *f)
{
    struct net_server *s = c->srv;
    size_t cost = f->len + NET_FRAME_OVERHEAD;
    char reason[100];

    if (c->closing || !c->established)
        return;
    /* One frame is always accepted into an empty queue (a big init must be
     * able to go out); beyond that the budget holds. */
    if (c->q_len > 0 && c->out_bytes + cost > s->cfg.max_out_bytes) {
        snprintf(reason, sizeof(reason),
                 "slow consumer: outbound queue over %zu bytes",
                 s->cfg.max_out_bytes);
        LOG_INFO("event=slow_consumer conn=%016llx room=%s queued=%zu",
                 (unsigned long long)c->session, c->room_id, c->out_bytes);
        s->metrics.slow_closes++;
        net__ws_close(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, reason);
        return;
    }
    if (c->q_len == c->q_cap && ring_grow(c) != NET_OK) {
        net__ws_close(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION,
                      "out of memory");
        return;
    }
    f->refs++;
    c->q[(c->q_head + c->q_len) % c->q_cap] = f;
    c->q_len++;
    assert(c->q_len <= c->q_cap);
    c->out_bytes += cost;
    if (c->q_len == 1)
        lws_callback_on_writable(c->wsi);
}

/* Pops the head frame of c's queue; the caller holds the reference. */
static struct net_frame *queue_pop(struct net_conn *c)
{
    struct net_frame *f = c->q[c->q_head];

    assert(c->q_len > 0 && f != NULL && f->refs > 0);
    assert(c->out_bytes >= f->len + NET_FRAME_OVERHEAD);
    c->q[c->q_head] = NULL;
    c->q_head = (c->q_head + 1) % c->q_cap;
    c->q_len--;
    c->out_bytes -= f->len + NET_FRAME_OVERHEAD;
    return f;
}

/* A server-to-client (unmasked, final) frame header for f at h; returns
 * its length (RFC 6455 5.2). A coalesced frame fits in NET_COALESCE_MAX
 * with its header, so the 16-bit length form is the longest needed. */
#define FRAME_HEADER_MAX 4
_Static_assert(NET_COALESCE_MAX <= 0xffff + FRAME_HEADER_MAX,
               "coalesced frames must fit the 16-bit length form");
static size_t frame_header(uint8_t *h, const struct net_frame *f)
{
    h[0] = 0x80 | (f->binary ? 0x2 : 0x1);
    if (f->len < 126) {
        h[1] = (uint8_t)f->len;
        return 2;
    }
    h[1] = 126;
    h[2] = (uint8_t)(f->len >> 8);
    h[3] = (uint8_t)f->len;
    return 4;
}

/*
 * Writes the head of c's queue: either one big frame through lws_write, or
 * as many small frames as fit in srv->wbuf, framed here and handed to lws
 * as raw bytes (LWS_WRITE_HTTP on a WebSocket connection is sent as is).
 * That is one send() per burst: a group-committed batch queues many
 * broadcasts on a subscriber at once, and per-frame writes cost a syscall
 * and a TCP segment each on both ends. No extension (permessage-deflate) is
 * offered, so frames need no transformation by lws.
 */
static int write_some(struct net_conn *c)
{
    struct net_server *s = c->srv;
    uint8_t *out = s->wbuf + LWS_PRE;
    struct net_frame *f = c->q[c->q_head];
    size_t off = 0;
    int n;

    if (c->q_len == 1 || f->len > NET_COALESCE_MAX / 4) {
        f = queue_pop(c);
        n = lws_write(c->wsi, f->buf + LWS_PRE, f->len,
                      f->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
        net__frame_unref(f);
        return n < 0 ? -1 : 0;
    }
    while (c->q_len > 0) {
        f = c->q[c->q_head];
        if (off + FRAME_HEADER_MAX + f->len > NET_COALESCE_MAX)
            break;
        off += frame_header(out + off, f);
        memcpy(out + off, f->buf + LWS_PRE, f->len);
        off += f->len;
        net__frame_unref(queue_pop(c));
    }
    /* The head frame always fits (it is under a quarter of the buffer). */
    assert(off > 0 && off <= NET_COALESCE_MAX);
    return lws_write(c->wsi, out, off, LWS_WRITE_HTTP) < 0 ? -1 : 0;
}

int net__ws_on_writeable(struct net_conn *c)
{
    size_t rounds = 0;

    if (!c->established || (c->closing && !c->close_flush))
        return 0;
    /* lws_partial_buffered() is true once the socket did not take a whole
     * write (lws keeps the rest): stop there. It costs no syscall, unlike
     * lws_send_pipe_choked(). A few rounds at most, so one session with a
     * deep queue does not hold the loop from the others. */
    while (c->q_len > 0 && !lws_partial_buffered(c->wsi) && rounds++ < 4) {
        if (write_some(c) != 0)
            return -1;
    }
    if (c->q_len > 0 || (c->close_flush && lws_partial_buffered(c->wsi))) {
        lws_callback_on_writable(c->wsi);
        return 1; /* not done: no close frame yet (ws_event) */
    }
    return 0;
}

/* Wraps buf from a relay encoder and queues it on c alone. */
static void send_buf(struct net_conn *c, int rv, uint8_t *buf, size_t len)
{
    struct net_frame *f;

    if (rv != RELAY_OK) {
        LOG_WARN("event=encode_failed conn=%016llx err=\"%s\"",
                 (unsigned long long)c->session, relay_strerror(rv));
        return;
    }
    f = net__frame_new(buf, len, c->fmt_out);
    if (f == NULL) {
        net__ws_close(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION,
                      "out of memory");
        return;
    }
    net__ws_queue(c, f);
    net__frame_unref(f);
}

static void send_error(struct net_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void send_error(struct net_conn *c, const char *fmt, ...)
{
    char msg[300];
    uint8_t *buf = NULL;
    size_t len = 0;
    va_list ap;
    int rv;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    rv = relay_enc_error(c->fmt_out, LWS_PRE, msg, &buf, &len);
    send_buf(c, rv, buf, len);
}

/*
 * init for (room, key) with the entries after seq; with skip_empty, nothing
 * at all when there are none. Returns the seq of the last entry sent, or
 * after when none was.
 */
static uint64_t send_init(struct net_conn *c, const char *key, size_t key_len,
                          uint64_t after, bool skip_empty)
{
    struct net_server *s = c->srv;
    const struct relay_entry *entries;
    uint8_t *buf = NULL;
    size_t n = 0, len = 0;
    int rv;

    rv = relay_stream_read(cons_node_state(s->cons), c->room_id, c->room_len,
                           key, key_len, after, &entries, &n);
    if (rv == RELAY_ENOROOM) {
        net__count_error(s, NET_ERR_ROOM_NOT_FOUND);
        send_error(c, "room not found");
        return after;
    }
    if (rv == RELAY_OK && n == 0 && skip_empty)
        return after;
    if (rv == RELAY_OK)
        rv = relay_enc_init(c->fmt_out, LWS_PRE, key, key_len, entries, n, &buf,
                            &len);
    send_buf(c, rv, buf, len);
    return rv == RELAY_OK && n > 0 ? entries[n - 1].seq : after;
}

/*
 * A client that reconnects to this node after reading up to seq S on
 * another may be ahead of what this node has applied: replay nothing, and
 * leave out the broadcasts up to S when this node applies them, so it gets
 * each message once.
 */
static void set_skip(struct net_conn *c, const struct relay_msg *m)
{
    uint64_t last = relay_room_last_seq(cons_node_state(c->srv->cons),
                                        c->room_id, c->room_len);

    for (size_t i = 0; i < c->n_subs; i++) {
        struct net_key *k = c->subs[i]->key;

        if (k->key_len == m->key_len &&
            memcmp(k->key, m->key, m->key_len) == 0) {
            c->subs[i]->skip_upto = m->has_seq && m->seq > last ? m->seq : 0;
            /* The init that follows (or, without a seq, nothing) brings the
             * client to the room's last seq, or it is already further. */
            c->subs[i]->seen =
                c->subs[i]->skip_upto > last ? c->subs[i]->skip_upto : last;
            return;
        }
    }
}

/* ---- upgrade and lifecycle ---------------------------------------------- */

/* "true"/"1" is on; absent, "false" and anything else is off. */
static bool query_flag(struct lws *wsi, const char *name)
{
    char buf[64];
    const char *v = lws_get_urlarg_by_name(wsi, name, buf, sizeof(buf));

    return v != NULL && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
}

int net__ws_on_confirm(struct net_conn *c)
{
    struct net_server *s = c->srv;
    struct lws *wsi = c->wsi;
    enum net_route route;
    char path[256], buf[128];
    const char *why;
    bool cbor, msgpack;
    int n;

    if (c->over_limit)
        return net__http_write_now(c, 503, "too many connections") ? -1 : 1;
    if (s->stopping)
        return net__http_write_now(c, 503, "server shutting down") ? -1 : 1;
    n = lws_hdr_copy(wsi, path, sizeof(path), WSI_TOKEN_GET_URI);
    if (n <= 0 ||
        !net__route_parse(path, (size_t)n, &route, c->room_id, &c->room_len) ||
        route != NET_ROUTE_CONNECT)
        return net__http_write_now(c, 404, "not found") ? -1 : 1;
    /* Until this node has caught up, a room it lacks may exist: "not
     * ready" (retryable), never "room not found" nor an empty init. */
    why = net__not_ready(s, buf, sizeof(buf));
    if (why != NULL) {
        net__count_error(s, NET_ERR_NOT_READY);
        return net__http_write_now_retry(c, 503, why, NET_RETRY_AFTER_S) ? -1
                                                                         : 1;
    }
    /* A room this node does not know yet may have been created elsewhere
     * a moment ago (reads are linearizable: "not found" only after a read
     * barrier). The upgrade cannot wait for one, so it is accepted and the
     * session attached once the barrier is answered; a room that is still
     * unknown then closes it with 4004 (net__ws_on_read). */
    c->room_unconfirmed =
        !relay_room_exists(cons_node_state(s->cons), c->room_id, c->room_len);

    cbor = query_flag(wsi, "cbor=");
    msgpack = query_flag(wsi, "msgpack=");
    c->debug = query_flag(wsi, "debug=");
    /* The reference reads binary frames as CBOR whatever the query says;
     * msgpack=true (our extension) switches both directions. */
    c->fmt_bin = msgpack ? RELAY_FMT_MSGPACK : RELAY_FMT_CBOR;
    c->fmt_out =
        msgpack ? RELAY_FMT_MSGPACK : (cbor ? RELAY_FMT_CBOR : RELAY_FMT_JSON);
    c->kind = NET_CONN_WS;
    return 0;
}

struct debug_walk {
    struct net_conn *c;
};

static void on_debug_key(void *arg, const char *key, size_t key_len)
{
    struct debug_walk *w = arg;

    send_init(w->c, key, key_len, 0, false);
}

static int attach(struct net_conn *c);

int net__ws_on_established(struct net_conn *c)
{
    struct net_server *s = c->srv;

    c->kind = NET_CONN_WS;
    c->established = true;
    s->n_ws++;
    s->metrics.ws_accepted++;
    if (c->room_unconfirmed) {
        if (net__owner_register(s, c) != NET_OK ||
            cons_read_index(s->cons, c->session) != CONS_OK) {
            lws_close_reason(c->wsi, (enum lws_close_status)NET_CLOSE_TRY_LATER,
                             (unsigned char *)"not ready, retry", 16);
            return -1;
        }
        c->room_check_seq = ++c->reads_asked;
        c->rx_paused = true;
        lws_rx_flow_control(c->wsi, 0);
        return 0;
    }
    return attach(c);
}

/* The session joins its room: subscriptions, debug replay. */
static int attach(struct net_conn *c)
{
    struct net_server *s = c->srv;
    struct debug_walk w = {c};

    if (net__owner_register(s, c) != NET_OK ||
        net__room_attach(s, c) != NET_OK) {
        lws_close_reason(c->wsi, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION,
                         (unsigned char *)"out of memory", 13);
        return -1;
    }
    LOG_DEBUG("event=ws_open conn=%016llx room=%s fmt=%d debug=%d",
              (unsigned long long)c->session, c->room_id, (int)c->fmt_out,
              (int)c->debug);
    /* debug=true: the whole room now, then every broadcast. Both happen on
     * this loop turn, so nothing falls between. */
    if (c->debug &&
        relay_room_keys(cons_node_state(s->cons), c->room_id, c->room_len,
                        on_debug_key, &w) == RELAY_ENOROOM)
        send_error(c, "room not found");
    return 0;
}

void net__ws_on_closed(struct net_conn *c)
{
    struct net_server *s = c->srv;

    if (!c->established)
        return;
    c->established = false;
    s->n_ws--;
    LOG_DEBUG("event=ws_close conn=%016llx room=%s",
              (unsigned long long)c->session, c->room_id);
    net__owner_unregister(s, c);
    net__room_detach(s, c);
    net__ws_release(c);
}

/* ---- inbound ------------------------------------------------------------ */

static void do_push(struct net_conn *c, const struct relay_msg *m)
{
    struct net_server *s = c->srv;
    struct relay_cmd cmd;
    int rv;

    net__push_cmd(s, NET_TR_WS, &cmd, c->room_id, c->room_len, m);
    cmd.origin.node = cons_node_id(s->cons);
    cmd.origin.session = c->session;
    cmd.origin.counter = ++c->counter;
    c->push_ns[c->counter % NET_PUSH_TIMES] = uv_hrtime();
    rv = cons_propose(s->cons, &cmd);
    if (rv != CONS_OK) {
        net__count_error(s, NET_ERR_NOT_APPLIED);
        /* Never queued and no callback will name it: the counter is free
         * again, which keeps the in-flight ones contiguous. */
        c->counter--;
        send_error(c, "push not applied: %s", cons_strerror(rv));
    }
}

static void do_get(struct net_conn *c, const struct relay_msg *m)
{
    struct net_server *s = c->srv;
    int rv;

    if (!relay_room_exists(cons_node_state(s->cons), c->room_id, c->room_len)) {
        net__count_error(s, NET_ERR_ROOM_NOT_FOUND);
        send_error(c, "room not found");
        return;
    }
    /* Subscribe, then replay, in this one callback: no broadcast can be
     * applied in between, so none is lost or repeated. Debug sessions
     * already receive every key. */
    if (!c->debug) {
        rv = net__sub_add(s, c, m->key, m->key_len);
        if (rv == NET_EINVAL) {
            send_error(c,
                       "get refused: over %d subscriptions or %d bytes "
                       "of subscribed keys",
                       NET_MAX_SUBS, NET_MAX_SUB_KEY_BYTES);
            return;
        }
        if (rv != NET_OK) {
            send_error(c, "get failed: out of memory");
            return;
        }
    }
    if (!c->debug)
        set_skip(c, m);
    if (m->has_seq)
        send_init(c, m->key, m->key_len, m->seq, false);
}

static void do_ping(struct net_conn *c, const struct relay_msg *m)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rv =
        relay_enc_pong(c->fmt_out, LWS_PRE, m->has_nonce, m->nonce, &buf, &len);

    send_buf(c, rv, buf, len);
}

static void process(struct net_conn *c, const struct relay_msg *m)
{
    switch (m->type) {
    case RELAY_MSG_PUSH:
        do_push(c, m);
        break;
    case RELAY_MSG_GET:
        do_get(c, m);
        break;
    case RELAY_MSG_PING:
        do_ping(c, m);
        break;
    default:
        send_error(c, "unknown message type");
        break;
    }
}

static bool pushes_in_flight(const struct net_conn *c)
{
    return c->counter > c->resolved;
}

/*
 * Replies keep the order of requests, as with the reference server, which
 * handles a push before reading the next frame: a get or ping (or a bad
 * frame's error) that follows a push not yet applied waits until it is, so
 * its init includes that push and its pong comes after the push's
 * broadcast and stream_size. Pushes are not held back by pushes: consensus
 * keeps a session's pushes in order. Once one message waits, every later
 * one queues behind it, and the socket is not read meanwhile.
 */
static void handle_message(struct net_conn *c, const uint8_t *buf, size_t len,
                           bool binary)
{
    enum relay_fmt fmt = binary ? c->fmt_bin : RELAY_FMT_JSON;
    struct net_deferred *d;
    struct relay_msg m;
    const char *which;
    bool needs_read;
    char err[256];
    int rv;

    if (!net__rate_take(c->srv, c, len, &which)) {
        LOG_INFO_RL("event=rate_limited conn=%016llx remote=%s limit=\"%s\"",
                    (unsigned long long)c->session, net__ip_of(c), which);
        net__count_error(c->srv, NET_ERR_RATE_LIMIT);
        send_error(c, "rate limit: over %zu %s; closing",
                   strcmp(which, "messages per second") == 0
                       ? c->srv->cfg.msg_rate
                       : c->srv->cfg.byte_rate,
                   which);
        net__ws_close_after_queue(c, LWS_CLOSE_STATUS_POLICY_VIOLATION,
                                  "rate limit");
        return;
    }
    err[0] = '\0';
    rv = relay_msg_decode(fmt, buf, len, c->srv->cfg.max_message, &m, err,
                          sizeof(err));
    if (rv != RELAY_OK) {
        LOG_DEBUG("event=bad_frame conn=%016llx err=\"%s\"",
                  (unsigned long long)c->session, err);
        net__count_error(c->srv, NET_ERR_DECODE);
        if (err[0] == '\0')
            snprintf(err, sizeof(err), "%s", relay_strerror(rv));
    }
    /* A replaying get is a read: it waits for a read barrier (every push
     * acknowledged anywhere before it is then in its init). */
    needs_read = rv == RELAY_OK && m.type == RELAY_MSG_GET && m.has_seq;
    if (c->defer_head == NULL && !needs_read && !c->room_unconfirmed &&
        (!pushes_in_flight(c) ||
         (rv == RELAY_OK && m.type == RELAY_MSG_PUSH))) {
        if (rv != RELAY_OK)
            send_error(c, "%s", err);
        else
            process(c, &m);
        relay_msg_free(&m);
        return;
    }
    if (rv != RELAY_OK)
        relay_msg_free(&m); /* only its error text travels */
    if (c->n_deferred >= NET_MAX_DEFERRED ||
        len > 2 * c->srv->cfg.max_message - c->deferred_bytes ||
        (d = calloc(1, sizeof(*d))) == NULL) {
        relay_msg_free(&m);
        net__ws_close(c, LWS_CLOSE_STATUS_POLICY_VIOLATION,
                      "too many messages behind unacknowledged pushes");
        return;
    }
    d->cost = len;
    d->is_error = rv != RELAY_OK;
    if (d->is_error)
        memcpy(d->err, err, sizeof(d->err));
    else
        d->msg = m; /* ownership moves to d */
    if (needs_read) {
        d->read_status = cons_read_index(c->srv->cons, c->session);
        if (d->read_status == CONS_OK)
            d->read_seq = ++c->reads_asked;
    }
    if (c->defer_tail != NULL)
        c->defer_tail->next = d;
    else
        c->defer_head = d;
    c->defer_tail = d;
    c->n_deferred++;
    c->deferred_bytes += len;
    if (!c->rx_paused) {
        c->rx_paused = true;
        lws_rx_flow_control(c->wsi, 0);
    }
}

/* Runs the held messages that may run now; called as pushes resolve. */
static void drain_deferred(struct net_conn *c)
{
    struct net_deferred *d;

    if (c->room_unconfirmed)
        return; /* nothing runs before the session has its room */
    while ((d = c->defer_head) != NULL && !c->closing) {
        if (pushes_in_flight(c) &&
            (d->is_error || d->msg.type != RELAY_MSG_PUSH))
            return;
        if (d->read_seq > c->reads_done)
            return; /* its read barrier is not answered yet */
        c->defer_head = d->next;
        if (c->defer_head == NULL)
            c->defer_tail = NULL;
        c->n_deferred--;
        c->deferred_bytes -= d->cost;
        if (d->is_error)
            send_error(c, "%s", d->err);
        else if (d->read_status != CONS_OK)
            send_error(c, "get failed: %s; retry",
                       cons_strerror(d->read_status));
        else
            process(c, &d->msg);
        relay_msg_free(&d->msg);
        free(d);
    }
    if (c->defer_head == NULL && c->rx_paused && !c->closing) {
        c->rx_paused = false;
        lws_rx_flow_control(c->wsi, LWS_RXFLOW_REASON_APPLIES_ENABLE |
                                        LWS_RXFLOW_REASON_USER_BOOL |
                                        LWS_RXFLOW_REASON_FLAG_PROCESS_NOW);
    }
}

void net__ws_on_read(struct net_conn *c, int status)
{
    struct net_deferred *d;

    c->reads_done++;
    if (c->room_unconfirmed && c->reads_done == c->room_check_seq) {
        c->room_unconfirmed = false;
        if (status != CONS_OK) {
            net__count_error(c->srv, NET_ERR_NOT_READY);
            net__ws_close(c, NET_CLOSE_TRY_LATER, "not ready, retry");
        } else if (!relay_room_exists(cons_node_state(c->srv->cons), c->room_id,
                                      c->room_len)) {
            net__count_error(c->srv, NET_ERR_ROOM_NOT_FOUND);
            net__ws_close(c, NET_CLOSE_ROOM_DELETED, "room not found");
        } else if (attach(c) != 0) {
            net__ws_close(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION,
                          "out of memory");
        }
        drain_deferred(c);
        return;
    }
    for (d = c->defer_head; d != NULL; d = d->next)
        if (d->read_seq == c->reads_done) {
            d->read_status = status;
            break;
        }
    drain_deferred(c);
}

static void resolve(struct net_conn *c, uint64_t counter)
{
    if (counter > c->resolved)
        c->resolved = counter;
    drain_deferred(c);
}

int net__ws_on_receive(struct net_conn *c, const void *in, size_t len)
{
    size_t max = c->srv->cfg.max_message, cap;
    bool final;
    uint8_t *b;

    if (!c->established)
        return 0;
    final = lws_is_final_fragment(c->wsi) != 0;
    if (!c->rx_active) {
        c->rx_active = true;
        c->rx_started_ms = uv_now(c->srv->loop);
        c->rx_binary = lws_frame_is_binary(c->wsi) != 0;
        c->rx_len = 0;
        if (final) {
            /* Whole message in one piece: decode in place, no copy. */
            c->rx_active = false;
            if (len > max)
                goto too_big;
            if (!c->closing)
                handle_message(c, in, len, c->rx_binary);
            return 0;
        }
    }
    if (len > max - c->rx_len)
        goto too_big;
    if (c->rx_len + len > c->rx_cap) {
        cap = c->rx_cap == 0 ? 4096 : c->rx_cap;
        while (cap < c->rx_len + len)
            cap *= 2;
        if (cap > max)
            cap = max;
        b = realloc(c->rx, cap);
        if (b == NULL) {
            lws_close_reason(c->wsi, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION,
                             (unsigned char *)"out of memory", 13);
            return -1;
        }
        c->rx = b;
        c->rx_cap = cap;
    }
    if (len > 0) /* an empty first piece: c->rx may be NULL */
        memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += len;
    if (!final)
        return 0;
    c->rx_active = false;
    if (!c->closing)
        handle_message(c, c->rx, c->rx_len, c->rx_binary);
    c->rx_len = 0;
    if (c->rx_cap > NET_RX_KEEP) {
        free(c->rx);
        c->rx = NULL;
        c->rx_cap = 0;
    }
    return 0;
too_big:
    /* RFC 6455 section 7.4.1: 1009, a message too big to process. */
    LOG_DEBUG("event=message_too_big conn=%016llx",
              (unsigned long long)c->session);
    net__count_error(c->srv, NET_ERR_TOO_BIG);
    lws_close_reason(c->wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                     (unsigned char *)"message too big", 15);
    return -1;
}

/* ---- results from consensus --------------------------------------------- */

void net__ws_on_applied(struct net_conn *c, const struct cons_applied *ev)
{
    const struct relay_effects *eff = ev->eff;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rv;

    if (!c->established || c->closing)
        return;
    /* Its proposal time is still in the ring unless more than
     * NET_PUSH_TIMES later pushes were proposed meanwhile. */
    if (c->counter - ev->cmd->origin.counter < NET_PUSH_TIMES)
        net__metrics_latency(
            c->srv, c->push_ns[ev->cmd->origin.counter % NET_PUSH_TIMES]);
    if (eff->status == RELAY_EDUP) {
        /* Applied before (a retried forward): it was answered then. */
    } else if (eff->status != RELAY_OK) {
        net__count_error(c->srv, eff->status == RELAY_ENOROOM
                                     ? NET_ERR_ROOM_NOT_FOUND
                                     : NET_ERR_REFUSED);
        send_error(c, "%s", relay_strerror(eff->status));
    } else if (eff->has_stream_size) {
        c->srv->metrics.stream_size[NET_TR_WS]++;
        rv = relay_enc_stream_size(c->fmt_out, LWS_PRE, ev->cmd->key,
                                   ev->cmd->key_len, eff->stream_size, &buf,
                                   &len);
        send_buf(c, rv, buf, len);
    }
    resolve(c, ev->cmd->origin.counter);
}

void net__ws_on_failed(struct net_conn *c, const struct relay_origin *origin,
                       int code)
{
    if (!c->established || c->closing)
        return;
    net__count_error(c->srv, NET_ERR_NOT_APPLIED);
    if (cons_outcome_unknown(code))
        send_error(c, "push outcome unknown: %s", cons_strerror(code));
    else
        send_error(c, "push not applied: %s", cons_strerror(code));
    resolve(c, origin->counter);
}

/* ---- fan-out ------------------------------------------------------------ */

struct fanout {
    const struct relay_cmd *cmd;
    const struct relay_effects *eff;
    struct net_frame *frame[RELAY_FMT_COUNT]; /* encoded lazily, shared */
    bool failed[RELAY_FMT_COUNT];
};

static void deliver(struct fanout *fo, struct net_conn *c)
{
    enum relay_fmt fmt = c->fmt_out;
    uint8_t *buf;
    size_t len;
    int rv;

    if (c->closing || !c->established)
        return;
    if (fo->frame[fmt] == NULL) {
        if (fo->failed[fmt])
            return;
        rv = relay_enc_push(fmt, LWS_PRE, fo->cmd->key, fo->cmd->key_len,
                            fo->cmd->value, fo->cmd->value_len, fo->eff->seq,
                            &buf, &len);
        if (rv == RELAY_OK)
            fo->frame[fmt] = net__frame_new(buf, len, fmt);
        if (fo->frame[fmt] == NULL) {
            fo->failed[fmt] = true;
            LOG_WARN("event=encode_failed what=push fmt=%d err=\"%s\"",
                     (int)fmt,
                     relay_strerror(rv == RELAY_OK ? RELAY_ENOMEM : rv));
            return;
        }
    }
    c->srv->metrics.deliveries++;
    net__ws_queue(c, fo->frame[fmt]);
}

void net__ws_broadcast(struct net_server *s, const struct relay_cmd *cmd,
                       const struct relay_effects *eff)
{
    struct net_room *r = net__room_find(s, cmd->room, cmd->room_len);
    struct fanout fo;
    struct net_key *k;
    size_t i;

    if (r == NULL)
        return; /* no local session in this room */
    memset(&fo, 0, sizeof(fo));
    fo.cmd = cmd;
    fo.eff = eff;
    /* Queueing never changes these arrays (a slow consumer is only marked
     * closing here), so plain index loops are safe. */
    k = net__key_find(r, cmd->key, cmd->key_len);
    if (k != NULL)
        for (i = 0; i < k->n; i++) {
            if (eff->seq > k->subs[i]->skip_upto)
                deliver(&fo, k->subs[i]->conn);
            if (eff->seq > k->subs[i]->seen)
                k->subs[i]->seen = eff->seq;
        }
    for (i = 0; i < r->n_debug; i++)
        deliver(&fo, r->debug[i]);
    for (i = 0; i < RELAY_FMT_COUNT; i++)
        net__frame_unref(fo.frame[i]);
}

/* ---- catch-up after a snapshot install ----------------------------------- */

/*
 * A node that fell too far behind gets the leader's snapshot: the pushes
 * folded into it were never applied here one by one, so they were never
 * broadcast to this node's subscribers. Each subscription gets them now as
 * an `init` with the retained entries after the last seq it has, which is
 * what a client reconnecting with that seq would get (the driftdb client
 * handles an init's entries like pushes). Relay messages are not retained
 * and cannot be replayed: those are lost to these subscribers, as to any
 * client that was not connected when they were sent. Debug sessions get
 * nothing here.
 */
void net__ws_on_restored(struct net_server *s)
{
    const struct relay_state *st = cons_node_state(s->cons);
    size_t caught_up = 0;

    for (struct net_conn *c = s->conns; c != NULL; c = c->next) {
        if (c->kind != NET_CONN_WS || !c->established || c->closing)
            continue;
        if (!relay_room_exists(st, c->room_id, c->room_len)) {
            net__ws_close(c, NET_CLOSE_ROOM_DELETED, "room deleted");
            continue;
        }
        for (size_t i = 0; i < c->n_subs; i++) {
            struct net_sub *sub = c->subs[i];

            sub->seen =
                send_init(c, sub->key->key, sub->key->key_len, sub->seen, true);
        }
        caught_up++;
    }
    LOG_INFO("event=sessions_caught_up sessions=%zu", caught_up);
    net__ws_run_closes(s);
}
