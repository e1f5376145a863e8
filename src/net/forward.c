/*
 * forward.c - the follower -> leader forward link, both ends.
 *
 * A follower hands the commands proposed on it to the leader's proposer
 * (ARCHITECTURE.md, "A push, end to end", step 2). Consensus packs them into
 * relay batches and calls our struct cons_forwarder; we carry each batch as
 * one binary WebSocket message over a single lws client connection to the
 * leader's HTTP address (from the replicated node directory), path
 * NET_FWD_PATH, subprotocol NET_FWD_PROTOCOL. The leader feeds every
 * message to cons_propose_batch(). Nothing comes back on the link: results
 * arrive on every node through the log (on_applied), and consensus re-sends
 * what it does not see applied.
 *
 * Happy path (follower): send() finds no link, looks the leader up in the
 * directory, starts an lws client connection on our context and vhost and
 * queues the batch (copied, LWS_PRE headroom) even while connecting.
 * CLIENT_ESTABLISHED kicks consensus and asks for writeable; each
 * CLIENT_WRITEABLE writes whole messages while the socket takes them (lws
 * keeps a partly written tail itself and reports writeable only after it
 * went out), re-arming while the queue is not empty.
 * Happy path (leader): the upgrade on NET_FWD_PATH is confirmed only for
 * the NET_FWD_PROTOCOL subprotocol while this node leads; every complete
 * binary message goes to cons_propose_batch().
 *
 * Failure modes:
 * - leader not in the directory yet: send() refuses (consensus retries on
 *   its 50 ms timer); logged once per leader.
 * - queue over NET_FWD_MAX_QUEUE_MSGS / _BYTES: send() refuses; we kick
 *   consensus when the queue has room again.
 * - connect fails, the leader refuses or closes the link, a write fails:
 *   the queue is dropped (what was in it, or in flight, may be lost),
 *   cons_forward_reset() re-sends everything unapplied from the oldest, and
 *   the timer reconnects after 50 ms doubling to 1 s while a leader other
 *   than us is known. Dedupe in the state machine makes re-sends safe.
 * - leader changed: a link to another node is abandoned (closed 1001,
 *   queue dropped; consensus has already rewound its cursor) and the next
 *   send() connects to the new one.
 * - the leader stops answering without closing: lws pings the idle link
 *   and hangs up after NET_FWD_HANGUP_S without a valid frame (link_down).
 * - leader side: not the leader (4001), proposer full (1013), closing
 *   (1001), malformed batch (1003, logged), text frame (1003), message over
 *   the bound (1009), out of memory (1011). The follower resets and re-sends.
 *
 * Not here: batching, retries and exactly-once (consensus/proposer.c), the
 * dispatch of lws callbacks and the close cascade (server.c).
 * With --admin-token the link carries it (Authorization: Bearer) and the
 * leader refuses a link without it: every node of a cluster is started
 * with the same token. Deliberately not done: TLS between nodes, keepalive
 * pings (a dead leader is noticed by raft, whose leader
 * change drops the link).
 */
#define LOG_MODULE "net"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "log.h"

/* Bounds on the follower's queue: at most this much waits for the link. */
#define NET_FWD_MAX_QUEUE_MSGS 4096
#define NET_FWD_MAX_QUEUE_BYTES ((size_t)64 * 1024 * 1024)
/* One forwarded batch on the leader, reassembled. A batch is at most
 * max_batch_bytes (1 MiB) unless it carries one bigger command, and a
 * command is bounded by max_message; see max_message() below. */
#define NET_FWD_MAX_MESSAGE ((size_t)16 * 1024 * 1024)
/* Reassembly buffers bigger than this are released after each message. */
#define NET_FWD_RX_KEEP ((size_t)1024 * 1024)
#define NET_FWD_BACKOFF_MIN_MS 50
#define NET_FWD_BACKOFF_MAX_MS 1000
/* A link that stayed up this long resets the backoff when it drops. */
#define NET_FWD_STABLE_MS 1000
/* Private-use close code (RFC 6455 section 7.4.2): "I am not the leader". */
#define NET_FWD_CLOSE_NOT_LEADER 4001
/* 1013 "Try Again Later" (IANA WebSocket close code registry). */
#define NET_FWD_CLOSE_TRY_LATER 1013

static size_t max_message(const struct net_server *s)
{
    size_t m = s->cfg.max_message + 1024 * 1024;

    return m > NET_FWD_MAX_MESSAGE ? m : NET_FWD_MAX_MESSAGE;
}

/* ---- follower: the queue ------------------------------------------------ */

static void queue_drop(struct net_fwd_link *l)
{
    struct net_fwd_msg *m;

    while ((m = l->head) != NULL) {
        l->head = m->next;
        free(m);
    }
    l->tail = NULL;
    l->q_len = 0;
    l->q_bytes = 0;
}

static bool queue_has_room(const struct net_fwd_link *l, size_t len)
{
    /* One batch always fits an empty queue, whatever its size. */
    if (l->q_len == 0)
        return true;
    return l->q_len < NET_FWD_MAX_QUEUE_MSGS &&
           len <= NET_FWD_MAX_QUEUE_BYTES - l->q_bytes;
}

/* ---- follower: the link ------------------------------------------------- */

static uint32_t self_id(const struct net_server *s)
{
    return cons_node_id(s->cons);
}

static bool leader_is_remote(const struct net_server *s, uint32_t leader)
{
    return leader != 0 && leader != self_id(s);
}

/* Splits "host:port" or "[v6]:port"; false when malformed. */
static bool split_addr(const char *addr, char *host, size_t host_sz, int *port)
{
    const char *colon, *h = addr;
    size_t hlen;
    char *end;
    long p;

    if (addr[0] == '[') {
        const char *rb = strchr(addr, ']');

        if (rb == NULL || rb[1] != ':')
            return false;
        h = addr + 1;
        hlen = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL)
            return false;
        hlen = (size_t)(colon - addr);
    }
    if (hlen == 0 || hlen >= host_sz)
        return false;
    p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || p <= 0 || p > 65535)
        return false;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (int)p;
    return true;
}

/*
 * Forgets the current wsi without waiting for it: it is closed with a
 * close frame when it was up, cut when it was connecting, and its later
 * callbacks do not match l->wsi any more. The queue goes with it.
 */
static void link_abandon(struct net_server *s, uint16_t code,
                         const char *reason)
{
    struct net_fwd_link *l = &s->fwd;
    struct lws *wsi = l->wsi;
    bool up = l->state == NET_FWD_UP;

    l->wsi = NULL;
    queue_drop(l);
    if (l->state == NET_FWD_BACKOFF)
        uv_timer_stop(&l->timer);
    if (l->state == NET_FWD_UP || l->state == NET_FWD_CONNECTING)
        LOG_INFO("event=fwd_link_closed leader=%u addr=%s why=\"%s\" "
                 "batches=%llu",
                 l->peer, l->addr, reason, (unsigned long long)l->sent_batches);
    l->state = NET_FWD_IDLE;
    if (wsi == NULL)
        return;
    /* lws may report the close (or the connect failure) synchronously;
     * with l->wsi cleared first, that report is ignored. */
    /* Only an established WebSocket has a close frame to send: lws
     * asserts on a wsi still in its HTTP client (connecting) role. */
    if (up)
        lws_close_reason(wsi, (enum lws_close_status)code,
                         (unsigned char *)reason, strlen(reason));
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
}

static void on_retry_timer(uv_timer_t *t);
static int link_connect(struct net_server *s);

/*
 * The link failed or closed: drop what it held, have consensus re-send
 * from its oldest unapplied command, retry after the backoff.
 */
static void link_down(struct net_server *s, const char *why)
{
    struct net_fwd_link *l = &s->fwd;
    uint64_t now = uv_now(s->loop);
    bool was_up = l->state == NET_FWD_UP;
    size_t dropped = l->q_len;

    l->wsi = NULL;
    queue_drop(l);
    if (was_up && now - l->up_since >= NET_FWD_STABLE_MS)
        l->backoff_ms = NET_FWD_BACKOFF_MIN_MS;
    l->failures = was_up ? 1 : l->failures + 1;
    if (s->stopping) {
        l->state = NET_FWD_IDLE;
        return;
    }
    if (was_up || l->failures == 1)
        LOG_INFO("event=fwd_link_%s leader=%u addr=%s why=\"%s\" "
                 "dropped=%zu batches=%llu retry_ms=%llu",
                 was_up ? "closed" : "failed", l->peer, l->addr, why, dropped,
                 (unsigned long long)l->sent_batches,
                 (unsigned long long)l->backoff_ms);
    else
        LOG_DEBUG("event=fwd_link_failed leader=%u addr=%s why=\"%s\" "
                  "failures=%u retry_ms=%llu",
                  l->peer, l->addr, why, l->failures,
                  (unsigned long long)l->backoff_ms);
    if (leader_is_remote(s, l->leader)) {
        l->state = NET_FWD_BACKOFF;
        uv_timer_start(&l->timer, on_retry_timer, l->backoff_ms, 0);
        l->backoff_ms *= 2;
        if (l->backoff_ms > NET_FWD_BACKOFF_MAX_MS)
            l->backoff_ms = NET_FWD_BACKOFF_MAX_MS;
    } else {
        l->state = NET_FWD_IDLE;
    }
    /* Batches queued or in flight on the dead link may be lost. */
    cons_forward_reset(s->cons);
}

static void on_retry_timer(uv_timer_t *t)
{
    struct net_server *s = t->data;
    struct net_fwd_link *l = &s->fwd;

    if (s->stopping || l->state != NET_FWD_BACKOFF)
        return;
    l->state = NET_FWD_IDLE;
    if (!leader_is_remote(s, l->leader))
        return;
    /* Failure leaves the link idle (no address) or in backoff again. */
    link_connect(s);
    cons_forward_kick(s->cons);
}

/*
 * Starts a client connection to l->leader. Returns 0 when it is under way
 * (CONNECTING), non-zero when it could not start (no address: IDLE; lws
 * refused: BACKOFF through link_down).
 */
/*
 * Keepalive on the link: a leader that vanishes without closing (a pulled
 * cable, a partition between HTTP addresses while raft still works) would
 * otherwise hold the link, and the commands queued on it, until TCP gives
 * up many minutes later. lws pings after NET_FWD_PING_S idle seconds and
 * hangs up when nothing valid came back within NET_FWD_HANGUP_S; the
 * leader's lws answers pings by itself. Then the usual link_down path
 * re-sends everything unapplied. Its retry table is unused: our own timer
 * reconnects.
 */
#define NET_FWD_PING_S 5
#define NET_FWD_HANGUP_S 15
static const lws_retry_bo_t fwd_keepalive = {
    .secs_since_valid_ping = NET_FWD_PING_S,
    .secs_since_valid_hangup = NET_FWD_HANGUP_S,
};

static int link_connect(struct net_server *s)
{
    struct net_fwd_link *l = &s->fwd;
    struct lws_client_connect_info ci;
    struct relay_node_info ni;
    char host[64], path[64];
    const char *addr = NULL;
    struct lws *wsi;
    int port;

    if (s->stopping || s->vhost == NULL || !leader_is_remote(s, l->leader))
        return -1;
    /* The directory's strings are borrowed: copied before anything else. */
    if (relay_node_lookup(cons_node_state(s->cons), l->leader, &ni))
        addr = ni.http_addr;
    if (addr == NULL || addr[0] == '\0' || strlen(addr) >= sizeof(l->addr) ||
        !split_addr(addr, host, sizeof(host), &port)) {
        if (l->no_addr_logged != l->leader) {
            l->no_addr_logged = l->leader;
            LOG_INFO("event=fwd_no_address leader=%u addr=\"%s\"", l->leader,
                     addr != NULL ? addr : "");
        }
        return -1;
    }
    l->no_addr_logged = 0;
    l->peer = l->leader;
    snprintf(l->addr, sizeof(l->addr), "%s", addr);
    snprintf(path, sizeof(path), "%s?node=%u", NET_FWD_PATH, self_id(s));
    l->peer_close_code = 0;
    l->peer_close_reason[0] = '\0';
    l->sent_batches = 0;

    memset(&ci, 0, sizeof(ci));
    ci.context = s->ctx;
    ci.vhost = s->vhost;
    ci.address = host;
    ci.port = port;
    ci.path = path;
    ci.host = l->addr;
    ci.origin = l->addr;
    ci.protocol = NET_FWD_PROTOCOL;
    ci.local_protocol_name = NET_FWD_PROTOCOL;
    ci.ietf_version_or_minus_one = -1;
    ci.retry_and_idle_policy = &fwd_keepalive;
    /* lws stores the wsi here before it can call back about it, so the
     * callbacks recognise it even during this call. */
    ci.pwsi = &l->wsi;
    l->wsi = NULL;
    l->state = NET_FWD_CONNECTING;
    if (l->failures == 0)
        LOG_INFO("event=fwd_link_connecting leader=%u addr=%s", l->peer,
                 l->addr);
    else
        LOG_DEBUG("event=fwd_link_connecting leader=%u addr=%s failures=%u",
                  l->peer, l->addr, l->failures);
    wsi = lws_client_connect_via_info(&ci);
    if (l->state != NET_FWD_CONNECTING) {
        /* Failed and already reported through CLIENT_CONNECTION_ERROR
         * (link_down ran): whatever lws left in l->wsi is not the link. */
        l->wsi = NULL;
        return -1;
    }
    if (wsi == NULL) {
        link_down(s, "lws could not start the connection");
        return -1;
    }
    l->wsi = wsi;
    return 0;
}

/* ---- follower: the consensus forwarder ---------------------------------- */

static int fw_send(void *arg, uint32_t leader, const uint8_t *batch, size_t len)
{
    struct net_server *s = arg;
    struct net_fwd_link *l = &s->fwd;
    struct net_fwd_msg *m;

    if (s->stopping || !leader_is_remote(s, leader))
        return -1;
    if (leader != l->leader) {
        /* Normally announced by leader_changed first. */
        if (l->state != NET_FWD_IDLE && l->peer != leader)
            link_abandon(s, LWS_CLOSE_STATUS_GOINGAWAY, "leader changed");
        l->leader = leader;
    }
    if (l->state == NET_FWD_BACKOFF)
        return -1;
    if (l->state == NET_FWD_IDLE && link_connect(s) != 0)
        return -1;
    if (!queue_has_room(l, len)) {
        l->refused_full = true;
        return -1;
    }
    m = malloc(sizeof(*m) + LWS_PRE + len);
    if (m == NULL)
        return -1;
    m->next = NULL;
    m->len = len;
    memcpy(m->buf + LWS_PRE, batch, len);
    if (l->tail != NULL)
        l->tail->next = m;
    else
        l->head = m;
    l->tail = m;
    l->q_len++;
    l->q_bytes += len;
    if (l->state == NET_FWD_UP && l->q_len == 1)
        lws_callback_on_writable(l->wsi);
    return 0;
}

static void fw_leader_changed(void *arg, uint32_t leader)
{
    struct net_server *s = arg;
    struct net_fwd_link *l = &s->fwd;

    if (s->stopping || leader == l->leader)
        return;
    l->leader = leader;
    l->backoff_ms = NET_FWD_BACKOFF_MIN_MS;
    l->failures = 0;
    if (l->state == NET_FWD_IDLE)
        return;
    if (l->state == NET_FWD_BACKOFF || l->peer != leader) {
        /* Consensus rewinds its cursor itself on a leader change; the next
         * send() connects to the new leader. */
        link_abandon(s, LWS_CLOSE_STATUS_GOINGAWAY, "leader changed");
    }
}

/* ---- follower: lws callbacks of the client wsi --------------------------- */

static int link_writeable(struct net_server *s, struct lws *wsi)
{
    struct net_fwd_link *l = &s->fwd;
    struct net_fwd_msg *m;
    int n;

    while ((m = l->head) != NULL) {
        n = lws_write(wsi, m->buf + LWS_PRE, m->len, LWS_WRITE_BINARY);
        l->head = m->next;
        if (l->head == NULL)
            l->tail = NULL;
        l->q_len--;
        l->q_bytes -= m->len;
        free(m);
        if (n < 0)
            return -1; /* lws closes it: CLIENT_CLOSED resets */
        l->sent_batches++;
        if (lws_send_pipe_choked(wsi))
            break;
    }
    if (l->head != NULL)
        lws_callback_on_writable(wsi);
    if (l->refused_full && queue_has_room(l, 0)) {
        l->refused_full = false;
        cons_forward_kick(s->cons);
    }
    return 0;
}

int net__fwd_client_event(struct net_server *s, struct lws *wsi,
                          enum lws_callback_reasons reason, void *in,
                          size_t len)
{
    struct net_fwd_link *l = &s->fwd;
    char why[128];

    if (wsi == NULL || wsi != l->wsi)
        return 0; /* an abandoned link winding down, or not ours */
    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
        /* The cluster shares the admin token: the leader accepts batches
         * (which carry any origin and command) only from a holder. */
        const char *token = s->cfg.admin_token;
        unsigned char **p = in, *end;
        char hdr[300];
        int n;

        if (token == NULL || token[0] == '\0')
            return 0;
        end = *p + len;
        n = snprintf(hdr, sizeof(hdr), "Bearer %s", token);
        if (n < 0 || (size_t)n >= sizeof(hdr) ||
            lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION,
                                         (unsigned char *)hdr, n, p, end))
            return -1;
        return 0;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (s->stopping)
            return -1;
        l->state = NET_FWD_UP;
        l->up_since = uv_now(s->loop);
        LOG_INFO("event=fwd_link_connected leader=%u addr=%s queued=%zu "
                 "failures=%u",
                 l->peer, l->addr, l->q_len, l->failures);
        l->failures = 0;
        if (l->head != NULL)
            lws_callback_on_writable(wsi);
        cons_forward_kick(s->cons);
        return 0;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (l->state != NET_FWD_UP)
            return 0;
        return link_writeable(s, wsi);
    case LWS_CALLBACK_CLIENT_RECEIVE:
        return 0; /* the leader sends nothing; ignore what comes */
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        /* RFC 6455 section 5.5.1: two bytes of code, then the reason.
         * (lws 4.1 reports this to servers only; with it the log of a
         * closed link says why the leader closed it.) */
        if (in != NULL && len >= 2) {
            const uint8_t *p = in;
            size_t rl = len - 2;

            l->peer_close_code = (uint16_t)(p[0] << 8 | p[1]);
            if (rl >= sizeof(l->peer_close_reason))
                rl = sizeof(l->peer_close_reason) - 1;
            for (size_t i = 0; i < rl; i++)
                l->peer_close_reason[i] =
                    p[2 + i] >= 0x20 && p[2 + i] < 0x7f && p[2 + i] != '"'
                        ? (char)p[2 + i]
                        : '?';
            l->peer_close_reason[rl] = '\0';
        }
        return 0;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        snprintf(why, sizeof(why), "connect: %.*s",
                 in != NULL ? (int)strnlen(in, 100) : 7,
                 in != NULL ? (const char *)in : "unknown");
        link_down(s, why);
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (l->peer_close_code != 0)
            snprintf(why, sizeof(why), "closed by the leader: %u %s",
                     (unsigned)l->peer_close_code, l->peer_close_reason);
        else
            snprintf(why, sizeof(why), "connection closed");
        link_down(s, why);
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        /* Gone without one of the reports above. */
        link_down(s, "connection destroyed");
        return 0;
    default:
        return 0;
    }
}

/* ---- leader: accepted links --------------------------------------------- */

bool net__fwd_is_route(struct lws *wsi)
{
    enum net_route route;
    char path[256], room[RELAY_ROOM_ID_MAX + 1];
    size_t room_len;
    int n;

    n = lws_hdr_copy(wsi, path, sizeof(path), WSI_TOKEN_GET_URI);
    return n > 0 &&
           net__route_parse(path, (size_t)n, &route, room, &room_len) &&
           route == NET_ROUTE_FORWARD;
}

bool net__fwd_is_protocol(struct lws *wsi)
{
    const struct lws_protocols *p = lws_get_protocol(wsi);

    return p != NULL && p->name != NULL &&
           strcmp(p->name, NET_FWD_PROTOCOL) == 0;
}

static bool is_leader(const struct net_server *s)
{
    struct cons_status st;

    cons_node_status(s->cons, &st);
    return st.leader_id != 0 && st.leader_id == st.id;
}

int net__fwd_on_confirm(struct net_conn *c)
{
    struct net_server *s = c->srv;
    struct lws *wsi = c->wsi;
    char proto[64], node[32];
    const char *v;
    int n;

    if (s->stopping)
        return net__http_write_now(c, 503, "server shutting down") ? -1 : 1;
    /* The subprotocol decides which handler lws binds the socket to. */
    n = lws_hdr_copy(wsi, proto, sizeof(proto), WSI_TOKEN_PROTOCOL);
    if (n <= 0 || strcmp(proto, NET_FWD_PROTOCOL) != 0)
        return net__http_write_now(c, 400,
                                   "subprotocol " NET_FWD_PROTOCOL " required")
                   ? -1
                   : 1;
    if (!net__admin_token_ok(s, wsi)) {
        LOG_WARN("event=fwd_refused why=\"bad or missing token\"");
        return net__http_write_now(c, 401, "cluster token required") ? -1 : 1;
    }
    v = lws_get_urlarg_by_name(wsi, "node=", node, sizeof(node));
    if (v != NULL)
        c->fwd_node = (uint32_t)strtoul(v, NULL, 10);
    if (!is_leader(s)) {
        LOG_DEBUG("event=fwd_refused node=%u why=\"not leader\"", c->fwd_node);
        return net__http_write_now(c, 503, "not leader") ? -1 : 1;
    }
    /* Not a client connection: it leaves the connection count (and so
     * passes cfg.max_connections, which bounds clients). */
    if (c->kind != NET_CONN_FWD) {
        c->kind = NET_CONN_FWD;
        s->n_conns--;
    }
    return 0;
}

static void fwd_close(struct net_conn *c, uint16_t code, const char *reason)
{
    LOG_INFO("event=fwd_accept_closing node=%u code=%u why=\"%s\" "
             "batches=%llu",
             c->fwd_node, (unsigned)code, reason,
             (unsigned long long)c->fwd_batches);
    net__ws_close(c, code, reason);
}

static void propose(struct net_conn *c, const uint8_t *buf, size_t len)
{
    struct net_server *s = c->srv;
    int rv = cons_propose_batch(s->cons, buf, len);

    switch (rv) {
    case CONS_OK:
        c->fwd_batches++;
        c->fwd_bytes += len;
        return;
    case CONS_ENOTLEADER:
        fwd_close(c, NET_FWD_CLOSE_NOT_LEADER, "not leader");
        return;
    case CONS_EFULL:
        fwd_close(c, NET_FWD_CLOSE_TRY_LATER, "leader queue full");
        return;
    case CONS_ECLOSING:
        fwd_close(c, LWS_CLOSE_STATUS_GOINGAWAY, "going away");
        return;
    case CONS_EINVAL:
        LOG_WARN("event=fwd_bad_batch node=%u bytes=%zu", c->fwd_node, len);
        fwd_close(c, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE, "malformed batch");
        return;
    default:
        fwd_close(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, cons_strerror(rv));
        return;
    }
}

static int fwd_established(struct net_conn *c)
{
    struct net_server *s = c->srv;
    char peer[64];

    c->kind = NET_CONN_FWD;
    c->established = true;
    s->n_fwd++;
    if (lws_get_peer_simple(c->wsi, peer, sizeof(peer)) == NULL)
        snprintf(peer, sizeof(peer), "?");
    LOG_INFO("event=fwd_accepted node=%u peer=%s", c->fwd_node, peer);
    return 0;
}

int net__fwd_rx_feed(struct net_conn *c, const uint8_t *in, size_t len,
                     bool binary, bool final, size_t rest, size_t max,
                     const uint8_t **msg, size_t *msg_len)
{
    size_t cap, want;
    uint8_t *b;

    if (!c->rx_active) {
        c->rx_active = true;
        c->rx_binary = binary;
        c->rx_len = 0;
        if (!c->rx_binary)
            return NET_FWD_RX_TEXT;
        if (final) {
            /* The whole message in one piece: no copy. */
            c->rx_active = false;
            if (len > max)
                return NET_FWD_RX_TOO_BIG;
            *msg = in;
            *msg_len = len;
            return NET_FWD_RX_MESSAGE;
        }
    }
    /* Refused as soon as the announced length passes the bound. */
    if (len > max - c->rx_len || rest > max - c->rx_len - len)
        return NET_FWD_RX_TOO_BIG;
    if (c->rx_len + len > c->rx_cap) {
        want = c->rx_len + len + rest; /* <= max: sized once per frame */
        cap = c->rx_cap == 0 ? 65536 : c->rx_cap;
        while (cap < want)
            cap *= 2;
        if (cap > max)
            cap = max;
        b = realloc(c->rx, cap);
        if (b == NULL)
            return NET_FWD_RX_NOMEM;
        c->rx = b;
        c->rx_cap = cap;
    }
    /* An empty piece may come before anything was allocated: NULL + 0 is
     * undefined behaviour, even for memcpy of nothing. */
    if (len > 0)
        memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += len;
    if (!final)
        return NET_FWD_RX_MORE;
    c->rx_active = false;
    *msg = c->rx;
    *msg_len = c->rx_len;
    return NET_FWD_RX_MESSAGE;
}

static int fwd_receive(struct net_conn *c, const void *in, size_t len)
{
    const uint8_t *msg = NULL;
    size_t msg_len = 0;

    if (!c->established || c->closing)
        return 0;
    switch (net__fwd_rx_feed(c, in, len, lws_frame_is_binary(c->wsi) != 0,
                             lws_is_final_fragment(c->wsi) != 0,
                             lws_remaining_packet_payload(c->wsi),
                             max_message(c->srv), &msg, &msg_len)) {
    case NET_FWD_RX_MORE:
        return 0;
    case NET_FWD_RX_TEXT:
        fwd_close(c, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE,
                  "binary batches only");
        return 0;
    case NET_FWD_RX_TOO_BIG:
        /* RFC 6455 section 7.4.1: 1009, a message too big to process. */
        fwd_close(c, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, "message too big");
        return 0;
    case NET_FWD_RX_NOMEM:
        fwd_close(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
        return 0;
    default:
        break;
    }
    propose(c, msg, msg_len);
    if (msg != c->rx)
        return 0;
    c->rx_len = 0;
    if (c->rx_cap > NET_FWD_RX_KEEP) {
        free(c->rx);
        c->rx = NULL;
        c->rx_cap = 0;
    }
    return 0;
}

int net__fwd_on_event(struct net_conn *c, enum lws_callback_reasons reason,
                      void *in, size_t len)
{
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        return fwd_established(c);
    case LWS_CALLBACK_RECEIVE:
        return fwd_receive(c, in, len);
    default:
        return 0; /* nothing to write: the link is one-way */
    }
}

void net__fwd_on_closed(struct net_conn *c)
{
    struct net_server *s = c->srv;

    if (!c->established)
        return;
    c->established = false;
    s->n_fwd--;
    LOG_INFO("event=fwd_accept_closed node=%u batches=%llu bytes=%llu",
             c->fwd_node, (unsigned long long)c->fwd_batches,
             (unsigned long long)c->fwd_bytes);
    net__ws_release(c);
}

/* ---- lifecycle ---------------------------------------------------------- */

void net__fwd_init(struct net_server *s)
{
    struct net_fwd_link *l = &s->fwd;

    memset(l, 0, sizeof(*l));
    l->backoff_ms = NET_FWD_BACKOFF_MIN_MS;
    /* uv_timer_init cannot fail (libuv only initialises the struct). */
    uv_timer_init(s->loop, &l->timer);
    l->timer.data = s;
}

void net__fwd_start(struct net_server *s)
{
    struct cons_forwarder fw;

    memset(&fw, 0, sizeof(fw));
    fw.send = fw_send;
    fw.leader_changed = fw_leader_changed;
    fw.arg = s;
    cons_node_set_forwarder(s->cons, &fw);
    s->fwd_registered = true;
}

void net__fwd_stop(struct net_server *s)
{
    struct net_fwd_link *l = &s->fwd;
    struct cons_forwarder none;

    if (s->fwd_registered) {
        memset(&none, 0, sizeof(none));
        cons_node_set_forwarder(s->cons, &none);
        s->fwd_registered = false;
    }
    uv_timer_stop(&l->timer);
    /* s->stopping is set: nothing reconnects or re-arms the timer. */
    link_abandon(s, LWS_CLOSE_STATUS_GOINGAWAY, "going away");
}

void net__fwd_close(struct net_server *s, uv_close_cb cb)
{
    uv_close((uv_handle_t *)&s->fwd.timer, cb);
}

void net__fwd_release(struct net_server *s)
{
    queue_drop(&s->fwd);
}
