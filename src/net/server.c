/*
 * server.c - the net server object: configuration, the lws context on the
 * node's libuv loop (a foreign loop), the one protocol callback that
 * dispatches HTTP and WebSocket events, session ids, and the consensus
 * hooks that route applied/failed commands back to their origin.
 *
 * Happy path: init (no I/O) -> start (lws context + vhost listening) ->
 * requests and sockets -> stop (listener closed, 1001 to every socket) ->
 * close (lws_context_destroy, wait until lws wrote NULL into info.pcontext,
 * free, cb).
 *
 * Failure modes:
 * - listen fails: start returns NET_ELISTEN with the reason; the context
 *   exists and close still has to destroy it asynchronously.
 * - lws on a foreign libuv loop finishes closing its handles over later
 *   loop turns. lws 4.1 completes its destruction only when
 *   lws_context_destroy() is called again after its own idle and timer
 *   handles have closed, so close polls with a uv timer: first until the
 *   WebSockets said goodbye (bounded), then until lws' handles left the
 *   loop, then calls lws_context_destroy() again and waits for NULL.
 *
 * Two protocols share on_lws_event: "driftdb" (HTTP and client
 * WebSockets) and "driftd-forward" (both ends of the forward links). A
 * socket we accepted carries its struct net_conn as opaque user data; our
 * one client socket (the link to the leader) carries none and goes to
 * forward.c. The link's reconnect timer is the second handle the close
 * sequence waits for.
 *
 * Not here: HTTP routes (http.c), WebSocket sessions (ws.c), the
 * subscription index (subs.c), the forward links (forward.c).
 */
#define LOG_MODULE "net"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strings.h>
#include <sys/random.h>

#include "internal.h"
#include "log.h"

/* How long close waits for WebSockets to complete their close handshake
 * and for the last HTTP answers to be written. */
#define NET_CLOSE_WS_WAIT_MS 2000
/* After this, a context that has not finished destroying is logged. */
#define NET_CLOSE_CTX_WAIT_MS 10000
#define NET_CLOSE_TICK_MS 5
/* A loop turn at least this long is a stall worth a log line. */
#define NET_STALL_LOG_MS 10

/* Bytes lws hands to one LWS_CALLBACK_RECEIVE at most (per connection). */
#define NET_RX_BUFFER_SIZE 4096
/* Forward links carry batches of up to ~1 MiB: bigger reads. */
#define NET_FWD_RX_BUFFER_SIZE 65536

void net_config_default(struct net_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->http_host = "127.0.0.1";
    cfg->http_port = 8080;
    cfg->public_url = NULL;
    cfg->max_message = 1024 * 1024;
    cfg->max_connections = 10000;
    cfg->max_out_bytes = 8 * 1024 * 1024;
    cfg->max_http_body = 0; /* = max_message */
    cfg->max_conns_per_ip = 256;
    cfg->room_rate = 10;
    cfg->room_burst = 100;
    cfg->msg_rate = 20000;
    cfg->byte_rate = 64u << 20;
    cfg->header_timeout_ms = NET_HEADER_TIMEOUT_MS;
    cfg->message_timeout_ms = NET_MESSAGE_TIMEOUT_MS;
}

const char *net_strerror(int code)
{
    switch (code) {
    case NET_OK:
        return "ok";
    case NET_ENOMEM:
        return "out of memory";
    case NET_EINVAL:
        return "invalid configuration";
    case NET_ELISTEN:
        return "could not listen";
    case NET_EBUSY:
        return "refused by a per-client limit";
    default:
        return "unknown error";
    }
}

const char *net_server_errmsg(const struct net_server *s)
{
    return s == NULL ? "no server" : s->errmsg;
}

static void set_err(struct net_server *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_err(struct net_server *s, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(s->errmsg, sizeof(s->errmsg), fmt, ap);
    va_end(ap);
}

/* ---- small shared helpers ----------------------------------------------- */

bool net__json_str(char **o, char *end, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char *w = *o;
    size_t i;

    if (w >= end)
        return false;
    *w++ = '"';
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];

        if (end - w < 7)
            return false;
        if (ch == '"' || ch == '\\') {
            *w++ = '\\';
            *w++ = (char)ch;
        } else if (ch < 0x20) {
            memcpy(w, "\\u00", 4);
            w[4] = hex[ch >> 4];
            w[5] = hex[ch & 15];
            w += 6;
        } else {
            *w++ = (char)ch;
        }
    }
    if (end - w < 1)
        return false;
    *w++ = '"';
    *o = w;
    return true;
}

/*
 * Session ids are (boot nonce << 32 | counter): the replicated dedupe table
 * remembers (node, session) -> counter across our restarts, so a session id
 * must never come back after one.
 */
uint64_t net__session_new(struct net_server *s)
{
    if (++s->next_session == 0)
        s->next_session = 1;
    return ((uint64_t)s->boot_nonce << 32) | s->next_session;
}

int net__owner_register(struct net_server *s, struct net_conn *c)
{
    if (c->registered)
        net__owner_unregister(s, c);
    c->session = net__session_new(s);
    if (htab_insert(&s->owners, &c->owner_node, &c->session,
                    sizeof(c->session)) != HTAB_OK)
        return NET_ENOMEM;
    c->registered = true;
    return NET_OK;
}

void net__owner_unregister(struct net_server *s, struct net_conn *c)
{
    if (!c->registered)
        return;
    htab_remove(&s->owners, &c->owner_node);
    c->registered = false;
}

static struct net_conn *owner_find(struct net_server *s,
                                   const struct relay_origin *o)
{
    struct htab_node *n;

    if (o->node == 0 || o->node != cons_node_id(s->cons))
        return NULL;
    n = htab_find(&s->owners, &o->session, sizeof(o->session));
    return n == NULL ? NULL : HTAB_ENTRY(n, struct net_conn, owner_node);
}

void net__push_cmd(struct net_server *s, enum net_transport tr,
                   struct relay_cmd *cmd, const char *room, size_t room_len,
                   const struct relay_msg *m)
{
    *cmd = (struct relay_cmd){
        .type = RELAY_CMD_PUSH,
        .room = room,
        .room_len = room_len,
        .key = m->key,
        .key_len = m->key_len,
        .action = m->action,
        .compact_seq = m->compact_seq,
        .value = m->value,
        .value_len = m->value_len,
    };
    if ((unsigned)m->action < 4)
        s->metrics.pushes[tr][m->action]++;
}

/* ---- consensus hooks ---------------------------------------------------- */

void net_server_on_applied(void *arg, const struct cons_applied *ev)
{
    struct net_server *s = arg;
    struct net_conn *c;

    if (s == NULL || ev == NULL || ev->cmd == NULL || ev->eff == NULL)
        return;
    /* The log is applied in order: its index never goes back. */
    assert(ev->index >= s->applied_index);
    s->applied_index = ev->index;
    c = owner_find(s, &ev->cmd->origin);
    if (c != NULL && c->kind == NET_CONN_HTTP)
        net__http_on_applied(c, ev);
    /* Broadcast first, so a sender subscribed to its key sees its push
     * before the stream_size that follows from it. */
    if (ev->eff->broadcast && ev->cmd->type == RELAY_CMD_PUSH) {
        uint64_t before = s->metrics.deliveries;

        net__ws_broadcast(s, ev->cmd, ev->eff);
        if (s->metrics.deliveries > before && ev->stamp_ms != 0) {
            struct timespec ts;
            int64_t ms;

            clock_gettime(CLOCK_REALTIME, &ts);
            ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 -
                 (int64_t)ev->stamp_ms;
            cons_hist_add(&s->metrics.deliver, (double)ms);
        }
    }
    if (c != NULL && c->kind == NET_CONN_WS)
        net__ws_on_applied(c, ev);
    if (ev->cmd->type == RELAY_CMD_DELETE_ROOM && ev->eff->status == RELAY_OK)
        net__ws_close_room(s, ev->cmd->room, ev->cmd->room_len);
    net__ws_run_closes(s);
}

void net_server_on_read(void *arg, uint64_t token, int status)
{
    struct net_server *s = arg;
    struct relay_origin o;
    struct net_conn *c;

    if (s == NULL)
        return;
    o.node = cons_node_id(s->cons);
    o.session = token;
    o.counter = 0;
    c = owner_find(s, &o);
    if (c == NULL)
        return; /* the asker is gone */
    if (c->kind == NET_CONN_HTTP)
        net__http_on_read(c, status);
    else if (c->kind == NET_CONN_WS)
        net__ws_on_read(c, status);
    net__ws_run_closes(s);
}

void net_server_on_restored(void *arg)
{
    struct net_server *s = arg;

    if (s != NULL && s->started)
        net__ws_on_restored(s);
}

void net_server_on_failed(void *arg, const struct relay_origin *origin,
                          int code)
{
    struct net_server *s = arg;
    struct net_conn *c;

    if (s == NULL || origin == NULL)
        return;
    c = owner_find(s, origin);
    if (c == NULL)
        return; /* the session closed meanwhile: nobody to tell */
    if (c->kind == NET_CONN_HTTP)
        net__http_on_failed(c, code);
    else
        net__ws_on_failed(c, origin, code);
    net__ws_run_closes(s);
}

/* ---- connections -------------------------------------------------------- */

static int conn_open(struct net_server *s, struct lws *wsi)
{
    struct net_conn *c = calloc(1, sizeof(*c));

    if (c == NULL) {
        LOG_WARN("event=accept_failed err=\"out of memory\"");
        return -1;
    }
    /* Past the bound by NET_OVER_LIMIT_GRACE more, a connection is closed
     * at once: each one waiting for its 503 holds a descriptor, and a
     * flood of them must not run the process out of descriptors. */
    if (s->n_conns >= s->cfg.max_connections + NET_OVER_LIMIT_GRACE) {
        LOG_WARN_RL("event=accept_refused why=\"connection limit\" "
                    "conns=%zu limit=%zu",
                    s->n_conns, s->cfg.max_connections);
        goto err_free;
    }
    c->srv = s;
    c->wsi = wsi;
    c->opened_ms = uv_now(s->loop);
    if (net__ip_attach(s, c) != NET_OK)
        goto err_free;
    /* Counted while it exists; past the bound the request is answered 503
     * and the socket closed (HTTP and WS alike). */
    c->over_limit = s->n_conns >= s->cfg.max_connections;
    c->next = s->conns;
    if (s->conns != NULL)
        s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    lws_set_opaque_user_data(wsi, c);
    return 0;
err_free:
    free(c);
    return -1;
}

static void conn_free(struct net_conn *c)
{
    struct net_server *s = c->srv;

    if (c->kind == NET_CONN_WS)
        net__ws_on_closed(c);
    else if (c->kind == NET_CONN_FWD)
        net__fwd_on_closed(c);
    net__ws_unqueue_close(c);
    net__ip_detach(c);
    net__http_reset(c);
    net__owner_unregister(s, c);
    net__room_detach(s, c);
    net__ws_release(c);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    if (c->kind != NET_CONN_FWD) /* a forward link left the count */
        s->n_conns--;
    lws_set_opaque_user_data(c->wsi, NULL);
    free(c);
}

/*
 * The WS callbacks of one connection. A close decided inside them (message
 * too big, slow consumer while answering its own frames) leaves through
 * lws_close_reason() and -1 here: from RECEIVE, lws then sends the close
 * frame before dropping the socket.
 */
/*
 * A close frame framed here (RFC 6455 sections 5.2 and 5.5.1: FIN + opcode
 * 8, unmasked, payload = two bytes of status then the reason, at most 125
 * bytes) and written raw, as ws.c writes its coalesced frames: lws keeps
 * its own close writer private.
 */
static void write_close_frame(struct net_conn *c)
{
    uint8_t buf[LWS_PRE + 4 + 125], *p = buf + LWS_PRE;
    size_t n = strnlen(c->close_reason, 123);

    p[0] = 0x88;
    p[1] = (uint8_t)(2 + n);
    p[2] = (uint8_t)(c->close_code >> 8);
    p[3] = (uint8_t)c->close_code;
    memcpy(p + 4, c->close_reason, n);
    lws_write(c->wsi, p, 4 + n, LWS_WRITE_HTTP);
}

static int ws_event(struct net_conn *c, enum lws_callback_reasons reason,
                    void *in, size_t len)
{
    int rv;

    c->in_callback = true;
    if (c->kind == NET_CONN_FWD)
        rv = net__fwd_on_event(c, reason, in, len);
    else if (reason == LWS_CALLBACK_ESTABLISHED)
        rv = net__ws_on_established(c);
    else if (reason == LWS_CALLBACK_RECEIVE)
        rv = net__ws_on_receive(c, in, len);
    else
        rv = net__ws_on_writeable(c);
    c->in_callback = false;
    if (rv == 1)
        return 0; /* a closing session still flushing its queue */
    if (rv == 0 && c->close_flush && !c->close_started &&
        reason != LWS_CALLBACK_SERVER_WRITEABLE)
        return 0; /* its queue, then the close frame, from WRITEABLE */
    if (rv == 0 && c->closing && !c->close_started &&
        reason != LWS_CALLBACK_SERVER_WRITEABLE &&
        lws_partial_buffered(c->wsi)) {
        /* lws still holds part of a frame: the close frame follows it from
         * the next WRITEABLE (below), within NET_CLOSE_FLUSH_S. */
        lws_callback_on_writable(c->wsi);
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, NET_CLOSE_FLUSH_S);
        return 0;
    }
    if (rv == 0 && c->closing && !c->close_started) {
        c->close_started = true;
        lws_close_reason(c->wsi, (enum lws_close_status)c->close_code,
                         (unsigned char *)c->close_reason,
                         strlen(c->close_reason));
        /* lws sends the stored close frame when it closes the wsi from
         * RECEIVE; from WRITEABLE (a session closed while lws still held a
         * partly written frame or our queue, e.g. a slow consumer) it drops
         * the socket without one, so the frame is written here, where the
         * socket has room for it. */
        if (reason != LWS_CALLBACK_SERVER_WRITEABLE)
            return -1;
        /* And the socket stays open, read and discarded, until the client
         * answers with its own close (lws then ends it) or NET_CLOSE_ACK_S
         * passes: closing it with unread input would send a reset, and a
         * reset makes the client's TCP drop what it had not read yet,
         * our close frame included. */
        write_close_frame(c);
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, NET_CLOSE_ACK_S);
        return 0;
    }
    return rv;
}

static int on_lws_event(struct lws *wsi, enum lws_callback_reasons reason,
                        void *user, void *in, size_t len)
{
    struct lws_context *ctx = lws_get_context(wsi);
    struct net_server *s = ctx != NULL ? lws_context_user(ctx) : NULL;
    struct net_conn *c = lws_get_opaque_user_data(wsi);

    (void)user;
    if (s == NULL)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        /* libwebsockets announces this node's own outgoing link to the
         * leader here too: it is no client of ours. Taken for one, it was
         * counted against 127.0.0.1's connections and cut by the request
         * deadline (it never sends a request), so every follower dropped
         * its link and re-sent what was in flight every ~11 s. */
        if (net__fwd_is_link(s, wsi))
            return 0;
        return conn_open(s, wsi);
    case LWS_CALLBACK_WSI_DESTROY:
        if (c != NULL)
            conn_free(c);
        else
            net__fwd_client_event(s, wsi, reason, in, len);
        return 0;
    case LWS_CALLBACK_HTTP:
        if (c == NULL)
            return -1;
        c->requested = true;
        return net__http_on_request(c);
    case LWS_CALLBACK_HTTP_BODY:
        return c == NULL ? -1 : net__http_on_body(c, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return c == NULL ? -1 : net__http_on_body_done(c);
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return c == NULL ? -1 : net__http_on_writeable(c);
    case LWS_CALLBACK_CLOSED_HTTP:
        if (c != NULL) {
            net__http_reset(c);
            net__owner_unregister(s, c);
        }
        return 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        if (c == NULL)
            return -1;
        c->requested = true;
        if (in == NULL || strcasecmp(in, "websocket") != 0)
            return net__http_write_now(c, 400, "unsupported upgrade") == 0 ? 1
                                                                           : -1;
        if (net__fwd_is_route(wsi))
            return net__fwd_on_confirm(c);
        return net__ws_on_confirm(c);
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        /* lws binds an upgraded socket to the protocol its subprotocol
         * names: only a forward link may speak driftd-forward, and client
         * sessions only driftdb. Non-zero refuses. */
        return c == NULL ||
               (c->kind == NET_CONN_FWD) != net__fwd_is_protocol(wsi);
    case LWS_CALLBACK_ESTABLISHED:
    case LWS_CALLBACK_RECEIVE:
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return c == NULL ? -1 : ws_event(c, reason, in, len);
    case LWS_CALLBACK_CLOSED:
        if (c != NULL && c->kind == NET_CONN_FWD)
            net__fwd_on_closed(c);
        else if (c != NULL)
            net__ws_on_closed(c);
        return 0;
    /* Our client connection (the forward link to the leader) has no
     * net_conn: forward.c recognises its wsi. */
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
    case LWS_CALLBACK_CLIENT_RECEIVE:
    case LWS_CALLBACK_CLIENT_WRITEABLE:
    case LWS_CALLBACK_CLIENT_CLOSED:
        return net__fwd_client_event(s, wsi, reason, in, len);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        return c == NULL ? net__fwd_client_event(s, wsi, reason, in, len) : 0;
    default:
        return 0;
    }
}

/* ---- lws logging into ours ---------------------------------------------- */

static void on_lws_log(int level, const char *line)
{
    const char *p = line, *q;
    size_t n;

    /* lws prefixes "[date time] E: "; our logger adds its own. */
    if (*p == '[' && (q = strchr(p, ']')) != NULL) {
        p = q + 1;
        while (*p == ' ')
            p++;
        if (p[0] != '\0' && p[1] == ':' && p[2] == ' ')
            p += 3;
    }
    n = strlen(p);
    while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r'))
        n--;
    /* Rate-limited: a peer can make lws repeat a line at will (e.g.
     * "accept: errno 24" at every loop turn while the fds are gone). */
    if (level & LLL_ERR)
        LOG_AT_RL(LOG_LVL_ERROR, "event=lws msg=\"%.*s\"", (int)n, p);
    else
        LOG_WARN_RL("event=lws msg=\"%.*s\"", (int)n, p);
}

/* ---- lifecycle ---------------------------------------------------------- */

int net_server_init(struct net_server **out, uv_loop_t *loop,
                    const struct net_config *cfg, struct cons_node *cons)
{
    struct net_server *s;
    struct net_config def;
    uint8_t rnd[20];
    size_t n;
    int rv;

    if (out == NULL)
        return NET_EINVAL;
    *out = NULL;
    if (loop == NULL || cons == NULL)
        return NET_EINVAL;
    net_config_default(&def);
    if (cfg == NULL)
        cfg = &def;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NET_ENOMEM;
    s->loop = loop;
    s->cons = cons;
    s->cfg = *cfg;
    if (s->cfg.http_host == NULL || s->cfg.http_host[0] == '\0')
        s->cfg.http_host = def.http_host;
    if (s->cfg.http_port < 0 || s->cfg.http_port > 65535) {
        rv = NET_EINVAL;
        goto err_free_server;
    }
    if (s->cfg.max_message == 0)
        s->cfg.max_message = def.max_message;
    if (s->cfg.max_connections == 0)
        s->cfg.max_connections = def.max_connections;
    if (s->cfg.header_timeout_ms == 0)
        s->cfg.header_timeout_ms = def.header_timeout_ms;
    if (s->cfg.message_timeout_ms == 0)
        s->cfg.message_timeout_ms = def.message_timeout_ms;
    if (s->cfg.max_out_bytes == 0)
        s->cfg.max_out_bytes = def.max_out_bytes;
    if (s->cfg.max_http_body == 0)
        s->cfg.max_http_body = s->cfg.max_message;

    rv = NET_ENOMEM;
    s->http_host = strdup(s->cfg.http_host);
    if (s->http_host == NULL)
        goto err_free_server;
    s->cfg.http_host = s->http_host;
    if (cfg->public_url != NULL && cfg->public_url[0] != '\0') {
        s->public_url = strdup(cfg->public_url);
        if (s->public_url == NULL)
            goto err_free_host;
        n = strlen(s->public_url);
        while (n > 0 && s->public_url[n - 1] == '/')
            s->public_url[--n] = '\0';
    }
    s->cfg.public_url = s->public_url;

    /* getrandom() without flags blocks only before the kernel's pool is
     * initialised, at boot; never later. */
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        rv = NET_EINVAL;
        goto err_free_url;
    }
    memcpy(s->seed, rnd, sizeof(s->seed));
    memcpy(&s->boot_nonce, rnd + 16, sizeof(s->boot_nonce));
    htab_init(&s->owners, s->seed);
    htab_init(&s->rooms, s->seed);

    s->protocols[0].name = "driftdb";
    s->protocols[0].callback = on_lws_event;
    s->protocols[0].per_session_data_size = 0;
    s->protocols[0].rx_buffer_size = NET_RX_BUFFER_SIZE;
    /* Both ends of the forward links (forward.c) share one callback. */
    s->protocols[1].name = NET_FWD_PROTOCOL;
    s->protocols[1].callback = on_lws_event;
    s->protocols[1].per_session_data_size = 0;
    s->protocols[1].rx_buffer_size = NET_FWD_RX_BUFFER_SIZE;

    rv = uv_timer_init(loop, &s->timer);
    if (rv != 0) {
        rv = NET_EINVAL;
        goto err_free_url;
    }
    s->timer.data = s;
    /* libuv's uv_prepare_init only fills the handle in and returns 0; were
     * it to fail, s->timer above could not be closed before s is freed. */
    (void)uv_prepare_init(loop, &s->turn_probe);
    s->turn_probe.data = s;
    net__fwd_init(s); /* its timer: nothing can fail after this */
    net__limits_init(s);
    s->open_handles = 4;
    *out = s;
    return NET_OK;

err_free_url:
    free(s->public_url);
err_free_host:
    free(s->http_host);
err_free_server:
    free(s);
    return rv;
}

/*
 * The loop lag probe: how long each turn of the event loop kept it from new
 * events, i.e. the turn's time outside its wait in epoll (libuv's idle time
 * metric, which main turns on). Whatever arrives during a turn waits at
 * most that long for the loop: a snapshot encoded in place, a long
 * callback, a stall inside a library, or the thread descheduled on a busy
 * machine all show. A uv_prepare handle runs once per turn, right before
 * the wait, so it costs two clock reads per turn and nothing when idle (a
 * 1 ms timer cost 2.3% of a core on an idle node here).
 */
static void log_stall(struct net_server *s, double busy_ms)
{
    uint64_t now = uv_now(s->loop);

    s->lag_stalls++;
    if (s->lag_logged_at != 0 && now - s->lag_logged_at < 1000)
        return;
    LOG_INFO("event=loop_stall ms=%.1f stalls=%llu", busy_ms,
             (unsigned long long)s->lag_stalls);
    s->lag_logged_at = now;
    s->lag_stalls = 0;
}

static void on_turn(uv_prepare_t *p)
{
    struct net_server *s = p->data;
    uint64_t now = uv_hrtime(), idle = uv_metrics_idle_time(s->loop);
    double busy_ms;

    if (s->turn_start_ns != 0) {
        busy_ms = (double)((now - s->turn_start_ns) -
                           (idle - s->turn_idle_ns)) / 1e6;
        cons_hist_add(&s->metrics.loop_lag, busy_ms);
        if (busy_ms > s->metrics.loop_lag_max_ms)
            s->metrics.loop_lag_max_ms = busy_ms;
        if (busy_ms >= NET_STALL_LOG_MS)
            log_stall(s, busy_ms);
    }
    s->turn_start_ns = now;
    s->turn_idle_ns = idle;
}

static void collect_handle(uv_handle_t *h, void *arg)
{
    struct net_server *s = arg;

    /* lws' idle and timer handles carry its context as data; see the file
     * comment for why they matter. */
    if ((h->type == UV_IDLE || h->type == UV_TIMER) &&
        h->data == (void *)s->ctx && s->n_lws_handles < NET_MAX_STATIC_HANDLES)
        s->lws_handles[s->n_lws_handles++] = h;
}

int net_server_start(struct net_server *s)
{
    struct lws_context_creation_info info;
    void *loops[1];

    if (s->started || s->closing) {
        set_err(s, "start: already started");
        return NET_EINVAL;
    }
    lws_set_log_level(LLL_ERR | LLL_WARN, on_lws_log);

    memset(&info, 0, sizeof(info));
    loops[0] = s->loop;
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS |
                   LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;
    if (s->cfg.tls_cert != NULL)
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.foreign_loops = loops; /* read during creation only */
    info.pcontext = &s->ctx;
    info.user = s;
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = s->protocols;
    /* Deferred answers (POST /new, /send) hold a header table until the
     * command is applied; leave room for many at once. */
    info.max_http_header_pool = NET_HEADER_POOL;
    info.max_http_header_data = 8192;
    s->ctx = lws_create_context(&info);
    if (s->ctx == NULL) {
        set_err(s, "start: cannot create the lws context");
        return NET_ELISTEN;
    }
    s->started = true;
    uv_walk(s->loop, collect_handle, s);

    info.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;
    if (strchr(s->cfg.http_host, ':') == NULL)
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    info.port = s->cfg.http_port;
    info.iface = s->cfg.http_host;
    info.vhost_name = "driftd";
    if (s->cfg.tls_cert != NULL) {
        /* One port, TLS only: a plain request gets no answer but a failed
         * handshake (no downgrade). The client context of the same vhost
         * carries our forward link to the leader. */
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = s->cfg.tls_cert;
        info.ssl_private_key_filepath = s->cfg.tls_key;
        info.client_ssl_ca_filepath = s->cfg.peer_ca;
        /* HTTP/1.1 only: our request handling (deferred answers, the
         * WebSocket upgrade) is written for it, and lws would otherwise
         * offer h2 through ALPN. */
        info.alpn = "http/1.1";
    }
    s->vhost = lws_create_vhost(s->ctx, &info);
    if (s->vhost == NULL) {
        set_err(s, "start: listen %s:%d: %s", s->cfg.http_host,
                s->cfg.http_port,
                s->cfg.tls_cert != NULL
                    ? "cannot bind, or cannot load the TLS certificate/key"
                    : "cannot bind (address in use?)");
        return NET_ELISTEN;
    }
    LOG_INFO("event=listening http=%s:%d tls=%s", s->cfg.http_host,
             lws_get_vhost_listen_port(s->vhost),
             s->cfg.tls_cert != NULL ? "yes" : "no");
    net__fwd_start(s);
    net__limits_start(s);
    uv_prepare_start(&s->turn_probe, on_turn);
    return NET_OK;
}

void net_server_stop(struct net_server *s)
{
    struct net_conn *c;

    if (s == NULL || s->stopping)
        return;
    s->stopping = true;
    uv_prepare_stop(&s->turn_probe);
    net__limits_stop(s);
    /* Consensus stops calling us before anything goes away; our link to
     * the leader closes (its queued batches are dropped: consensus keeps
     * and fails its commands itself). */
    net__fwd_stop(s);
    if (s->ctx == NULL)
        return;
    /* Closes the listening socket; live connections carry on. */
    lws_context_deprecate(s->ctx, NULL);
    for (c = s->conns; c != NULL; c = c->next) {
        if ((c->kind == NET_CONN_WS || c->kind == NET_CONN_FWD) &&
            c->established)
            net__ws_close(c, LWS_CLOSE_STATUS_GOINGAWAY, "going away");
        else if (c->kind == NET_CONN_HTTP)
            net__http_on_stop(c);
    }
    net__ws_run_closes(s);
}

static void free_server(struct net_server *s)
{
    net_close_cb cb = s->close_cb;
    void *arg = s->close_arg;

    /* Every wsi is gone by now; anything left is a bug we do not leak. */
    while (s->conns != NULL) {
        struct net_conn *c = s->conns;

        s->conns = c->next;
        net__http_reset(c);
        net__room_detach(s, c);
        net__ws_release(c);
        free(c);
    }
    net__fwd_release(s);
    net__limits_release(s);
    htab_close(&s->owners);
    htab_close(&s->rooms);
    free(s->public_url);
    free(s->http_host);
    free(s);
    if (cb != NULL)
        cb(arg);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct net_server *s = h->data;

    if (--s->open_handles == 0)
        free_server(s);
}

static void close_handles(struct net_server *s)
{
    uv_close((uv_handle_t *)&s->timer, on_timer_closed);
    uv_close((uv_handle_t *)&s->turn_probe, on_timer_closed);
    uv_close((uv_handle_t *)&s->sweep, on_timer_closed);
    net__fwd_close(s, on_timer_closed);
}

struct handle_probe {
    struct net_server *s;
    size_t alive;
};

static void probe_handle(uv_handle_t *h, void *arg)
{
    struct handle_probe *p = arg;

    for (size_t i = 0; i < p->s->n_lws_handles; i++)
        if (p->s->lws_handles[i] == h)
            p->alive++;
}

/* WebSockets still open, or HTTP answers (503 at stop) not written yet. */
static bool goodbyes_pending(const struct net_server *s)
{
    const struct net_conn *c;

    if (s->n_ws > 0 || s->n_fwd > 0)
        return true;
    for (c = s->conns; c != NULL; c = c->next)
        if (c->http.resp_ready)
            return true;
    return false;
}

static void on_close_tick(uv_timer_t *t)
{
    struct net_server *s = t->data;
    uint64_t now = uv_now(s->loop);
    struct handle_probe probe = {s, 0};

    switch (s->close_phase) {
    case NET_CLOSE_WAIT_WS:
        if (goodbyes_pending(s) && now < s->close_deadline)
            return;
        if (goodbyes_pending(s))
            LOG_INFO("event=close_timeout ws_open=%zu", s->n_ws);
        s->close_phase = NET_CLOSE_WAIT_CONTEXT;
        s->close_deadline = now + NET_CLOSE_CTX_WAIT_MS;
        lws_context_destroy(s->ctx);
        return;
    case NET_CLOSE_WAIT_CONTEXT:
        if (s->ctx != NULL) {
            uv_walk(s->loop, probe_handle, &probe);
            if (probe.alive == 0)
                lws_context_destroy(s->ctx); /* finishes; NULLs s->ctx */
        }
        if (s->ctx != NULL) {
            if (now >= s->close_deadline && !s->close_overdue_logged) {
                s->close_overdue_logged = true;
                LOG_ERROR("event=close_stuck what=\"lws context not "
                          "destroyed\" handles=%zu",
                          probe.alive);
            }
            return;
        }
        s->close_phase = NET_CLOSE_DONE;
        uv_timer_stop(t);
        close_handles(s);
        return;
    default:
        return;
    }
}

void net_server_close(struct net_server *s, net_close_cb cb, void *arg)
{
    if (s == NULL) {
        if (cb != NULL)
            cb(arg);
        return;
    }
    if (s->closing)
        return;
    s->closing = true;
    s->close_cb = cb;
    s->close_arg = arg;
    net_server_stop(s);
    if (s->ctx == NULL) {
        s->close_phase = NET_CLOSE_DONE;
        close_handles(s);
        return;
    }
    s->close_phase = NET_CLOSE_WAIT_WS;
    s->close_deadline = uv_now(s->loop) + NET_CLOSE_WS_WAIT_MS;
    uv_timer_start(&s->timer, on_close_tick, 0, NET_CLOSE_TICK_MS);
}
