/*
 * forward.c - the follower -> leader forward link, both ends.
 *
 * A follower hands the commands proposed on it to the leader's proposer
 * (docs/architecture.md, "A push, end to end", step 2). Consensus packs
 * them into relay batches and calls our struct cons_forwarder; we carry
 * each batch as one binary WebSocket message over a single lws client
 * connection to the leader's HTTP address (from the replicated node
 * directory), path NET_FWD_PATH, subprotocol NET_FWD_PROTOCOL. The leader
 * feeds every message to cons_propose_batch(). No data comes back on the
 * link (only pongs to lws' keepalive pings, below): results arrive on every
 * node through the log (on_applied), and consensus re-sends what it does not
 * see applied.
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
 * Who may speak: with a cluster key, only a node that proves it holds the
 * key (challenge-response below); without one, a holder of the admin
 * token when one is set. Either way the leader takes from a link only
 * client commands (room creation, push) and node N's own directory entry,
 * all with origin node N, the node named at the upgrade: consensus checks
 * every command of a batch (cons_propose_batch) and a batch with anything
 * else closes the link with 1008.
 *
 * Not here: batching, retries and exactly-once (consensus/proposer.c), the
 * dispatch of lws callbacks and the close cascade (server.c). TLS: a node
 * with --tls-cert connects with TLS, checked against --peer-ca.
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

/* ---- proving the cluster key ---------------------------------------------
 *
 * With a cluster key, the link is a mutual challenge-response before any
 * batch: the follower's upgrade carries its node id and a fresh nonce_c
 * (?node=N&nonce=HEX); the leader's first message is its challenge
 *   FWD_CHAL | leader id u64 | nonce_s | HMAC(key, "driftd forward leader" | T)
 * and the follower's first message its proof
 *   FWD_PROOF | HMAC(key, "driftd forward follower" | T),
 * T = nonce_c | nonce_s | follower id u64 | leader id u64. The follower
 * sends nothing before it checked the leader's proof (its batches carry
 * client data); the leader takes nothing before the follower's, and only
 * for FWD_AUTH_TIMEOUT_S. Without a key the admin token, if any, is the
 * credential, as a bearer header.
 */
#define FWD_CHAL 0xA1
#define FWD_PROOF 0xA2
#define FWD_CHAL_LEN (1 + 8 + CONS_NONCE_LEN + CONS_MAC_LEN)
#define FWD_PROOF_LEN (1 + CONS_MAC_LEN)
#define FWD_AUTH_TIMEOUT_S 5
static const char FWD_LABEL_LEADER[] = "driftd forward leader";
static const char FWD_LABEL_FOLLOWER[] = "driftd forward follower";

static int fwd_mac(const struct net_server *s, const char *label,
                   const uint8_t *nonce_c, const uint8_t *nonce_s,
                   uint32_t follower, uint32_t leader,
                   uint8_t out[CONS_MAC_LEN])
{
    uint8_t ids[16];
    struct cons_auth_part parts[3];

    cons_put_u64(ids, follower);
    cons_put_u64(ids + 8, leader);
    parts[0] = (struct cons_auth_part){nonce_c, CONS_NONCE_LEN};
    parts[1] = (struct cons_auth_part){nonce_s, CONS_NONCE_LEN};
    parts[2] = (struct cons_auth_part){ids, sizeof(ids)};
    return cons_auth_mac(s->cfg.cluster_key, label, parts, 3, out);
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
bool net__fwd_is_link(const struct net_server *s, const struct lws *wsi)
{
    return wsi != NULL && wsi == s->fwd.wsi;
}

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
    s->metrics.fwd_resets++;
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
    char host[64], path[160], nonce_hex[2 * CONS_NONCE_LEN + 1];
    const char *addr = NULL;
    struct lws *wsi;
    int port;

    if (s->stopping || s->vhost == NULL || !leader_is_remote(s, l->leader))
        return -1;
    /* The directory's strings are borrowed: copied before anything else. */
    if (relay_node_lookup(cons_node_state(s->cons), l->leader, &ni))
        addr = ni.http_addr;
    if (addr == NULL || addr[0] == '\0' || strlen(addr) >= sizeof(l->addr) ||
        !cons_addr_split(addr, host, sizeof(host), &port)) {
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
    if (cons_random(l->nonce_c, sizeof(l->nonce_c)) != 0)
        return -1;
    cons_hex_encode(l->nonce_c, sizeof(l->nonce_c), nonce_hex);
    snprintf(path, sizeof(path), "%s?node=%u&nonce=%s", NET_FWD_PATH,
             self_id(s), nonce_hex);
    l->authed = !s->cfg.has_cluster_key;
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
    /* A TLS node's leader speaks TLS too (one cluster, one setting); its
     * certificate must chain to --peer-ca and name its address. */
    if (s->cfg.tls_cert != NULL)
        ci.ssl_connection = LCCSCF_USE_SSL;
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
    if (l->state == NET_FWD_UP && l->authed && l->q_len == 1)
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

/* The leader's challenge: check it, queue our proof ahead of every batch.
 * Returns false when the link must be dropped. */
static bool link_got_challenge(struct net_server *s, struct lws *wsi,
                               const uint8_t *in, size_t len)
{
    struct net_fwd_link *l = &s->fwd;
    uint8_t want[CONS_MAC_LEN];
    struct net_fwd_msg *m;

    if (len != FWD_CHAL_LEN || in[0] != FWD_CHAL ||
        !lws_is_final_fragment(wsi) || !lws_frame_is_binary(wsi)) {
        LOG_WARN_RL("event=fwd_auth_failed leader=%u addr=%s why=\"not a "
                    "challenge\"",
                    l->peer, l->addr);
        return false;
    }
    if (cons_get_u64(in + 1) != l->peer ||
        fwd_mac(s, FWD_LABEL_LEADER, l->nonce_c, in + 9, self_id(s), l->peer,
                want) != 0 ||
        !cons_auth_equal(want, in + 9 + CONS_NONCE_LEN, CONS_MAC_LEN)) {
        LOG_WARN_RL("event=fwd_auth_failed leader=%u addr=%s why=\"wrong "
                    "proof from the leader (a different cluster key?)\"",
                    l->peer, l->addr);
        return false;
    }
    m = malloc(sizeof(*m) + LWS_PRE + FWD_PROOF_LEN);
    if (m == NULL)
        return false;
    m->len = FWD_PROOF_LEN;
    m->buf[LWS_PRE] = FWD_PROOF;
    if (fwd_mac(s, FWD_LABEL_FOLLOWER, l->nonce_c, in + 9, self_id(s), l->peer,
                m->buf + LWS_PRE + 1) != 0) {
        free(m);
        return false;
    }
    m->next = l->head;
    l->head = m;
    if (l->tail == NULL)
        l->tail = m;
    l->q_len++;
    l->q_bytes += m->len;
    l->authed = true;
    LOG_DEBUG("event=fwd_link_authenticated leader=%u", l->peer);
    lws_callback_on_writable(wsi);
    cons_forward_kick(s->cons);
    return true;
}

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
        s->metrics.fwd_batches++;
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
        char hdr[NET_ADMIN_TOKEN_MAX + 16];
        int n;

        /* With a cluster key the link proves the key instead. */
        if (s->cfg.has_cluster_key || token == NULL || token[0] == '\0')
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
        if (!l->authed)
            return 0; /* the leader's challenge comes first */
        if (l->head != NULL)
            lws_callback_on_writable(wsi);
        cons_forward_kick(s->cons);
        return 0;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (l->state != NET_FWD_UP || !l->authed)
            return 0;
        return link_writeable(s, wsi);
    case LWS_CALLBACK_CLIENT_RECEIVE:
        /* The leader sends its challenge and nothing else. */
        if (l->authed || l->state != NET_FWD_UP)
            return 0;
        return link_got_challenge(s, wsi, in, len) ? 0 : -1;
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
    char proto[64], node[32], nonce[2 * CONS_NONCE_LEN + 8], peer[64];
    const char *v;
    char *end;
    unsigned long id;
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
    if (lws_get_peer_simple(wsi, peer, sizeof(peer)) == NULL)
        snprintf(peer, sizeof(peer), "?");
    /* The origin node of every command on the link: see propose(). */
    v = lws_get_urlarg_by_name(wsi, "node=", node, sizeof(node));
    id = v != NULL && v[0] >= '1' && v[0] <= '9' ? strtoul(v, &end, 10) : 0;
    if (id == 0 || id > UINT32_MAX || *end != '\0') {
        LOG_WARN_RL("event=fwd_refused remote=%s why=\"no node id\"", peer);
        return net__http_write_now(c, 400, "node id required") ? -1 : 1;
    }
    c->fwd_node = (uint32_t)id;
    if (s->cfg.has_cluster_key) {
        v = lws_get_urlarg_by_name(wsi, "nonce=", nonce, sizeof(nonce));
        if (v == NULL || !cons_hex_decode(v, strlen(v), c->fwd_nonce_c,
                                          sizeof(c->fwd_nonce_c))) {
            LOG_WARN_RL("event=fwd_refused remote=%s node=%u why=\"no "
                        "nonce\"",
                        peer, c->fwd_node);
            return net__http_write_now(c, 401, "cluster key proof required")
                       ? -1
                       : 1;
        }
    } else if (!net__admin_token_ok(s, wsi)) {
        LOG_WARN_RL("event=fwd_refused remote=%s why=\"bad or missing "
                    "token\"",
                    peer);
        return net__http_write_now(c, 401, "cluster token required") ? -1 : 1;
    }
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
    int rv = cons_propose_batch(s->cons, c->fwd_node, buf, len);

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
    case CONS_EPERM:
        LOG_WARN_RL("event=fwd_forbidden_batch node=%u bytes=%zu", c->fwd_node,
                    len);
        fwd_close(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, "forbidden command");
        return;
    case CONS_EINVAL:
        LOG_WARN_RL("event=fwd_bad_batch node=%u bytes=%zu", c->fwd_node, len);
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
    if (!s->cfg.has_cluster_key) {
        c->fwd_authed = true;
        return 0;
    }
    if (cons_random(c->fwd_nonce_s, sizeof(c->fwd_nonce_s)) != 0)
        return -1;
    c->fwd_chal_pending = true;
    lws_callback_on_writable(c->wsi);
    /* A follower that does not prove the key in time is cut off. */
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, FWD_AUTH_TIMEOUT_S);
    return 0;
}

static int fwd_send_challenge(struct net_conn *c)
{
    struct net_server *s = c->srv;
    uint8_t buf[LWS_PRE + FWD_CHAL_LEN], *m = buf + LWS_PRE;

    if (!c->fwd_chal_pending || c->closing)
        return 0;
    c->fwd_chal_pending = false;
    m[0] = FWD_CHAL;
    cons_put_u64(m + 1, cons_node_id(s->cons));
    memcpy(m + 9, c->fwd_nonce_s, CONS_NONCE_LEN);
    if (fwd_mac(s, FWD_LABEL_LEADER, c->fwd_nonce_c, c->fwd_nonce_s,
                c->fwd_node, cons_node_id(s->cons),
                m + 9 + CONS_NONCE_LEN) != 0)
        return -1;
    return lws_write(c->wsi, m, FWD_CHAL_LEN, LWS_WRITE_BINARY) < 0 ? -1 : 0;
}

/* The follower's proof: its first message. */
static void fwd_check_proof(struct net_conn *c, const uint8_t *in, size_t len)
{
    struct net_server *s = c->srv;
    uint8_t want[CONS_MAC_LEN];
    char peer[64];

    if (len == FWD_PROOF_LEN && in[0] == FWD_PROOF &&
        lws_is_final_fragment(c->wsi) && !c->fwd_chal_pending &&
        fwd_mac(s, FWD_LABEL_FOLLOWER, c->fwd_nonce_c, c->fwd_nonce_s,
                c->fwd_node, cons_node_id(s->cons), want) == 0 &&
        cons_auth_equal(want, in + 1, CONS_MAC_LEN)) {
        c->fwd_authed = true;
        lws_set_timeout(c->wsi, NO_PENDING_TIMEOUT, 0);
        LOG_DEBUG("event=fwd_authenticated node=%u", c->fwd_node);
        return;
    }
    if (lws_get_peer_simple(c->wsi, peer, sizeof(peer)) == NULL)
        snprintf(peer, sizeof(peer), "?");
    LOG_WARN_RL("event=fwd_refused remote=%s node=%u why=\"wrong proof (a "
                "different cluster key?)\"",
                peer, c->fwd_node);
    fwd_close(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, "authentication failed");
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
    if (!c->fwd_authed) {
        fwd_check_proof(c, in, len);
        return 0;
    }
    if (!c->rx_active)
        c->rx_started_ms = uv_now(c->srv->loop);
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
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return fwd_send_challenge(c); /* the only thing we ever write */
    default:
        return 0;
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
