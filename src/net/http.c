/*
 * http.c - the HTTP routes of docs/protocol.md: POST /new, GET /room/ID,
 * POST /room/ID/send, GET /healthz, CORS preflights, and the 404/405/413/
 * 503 answers around them.
 *
 * Happy path: LWS_CALLBACK_HTTP parses the route; a POST with a body waits
 * for LWS_CALLBACK_HTTP_BODY_COMPLETION; then the request is decided. An
 * answer known at once is stored in c->http and written from
 * LWS_CALLBACK_HTTP_WRITEABLE (headers, then the body, then the
 * transaction completes and the connection may serve the next request). A
 * request that proposes (POST /new, a push sent to /send) registers a fresh
 * origin session and holds its answer until net_server_on_applied or
 * net_server_on_failed names that session.
 *
 * Failure modes:
 * - the client disconnects while its answer is held: CLOSED_HTTP drops the
 *   session from the owner table, and the later result finds nobody.
 * - a body over cfg.max_http_body: 413 and the connection is closed (the
 *   rest of the body is never read).
 * - past cfg.max_connections or while stopping: 503, then close.
 *
 * Not here: WebSocket upgrades beyond refusing them (ws.c).
 */
#define LOG_MODULE "net"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "internal.h"
#include "log.h"

#define CT_JSON "application/json"
#define CT_TEXT "text/plain; charset=utf-8"
/* Prometheus text exposition format. */
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"

/* 24 random bytes: 192 bits, 32 base64url characters without padding. */
#define ROOM_ID_RANDOM_BYTES 24

/* ---- routing ------------------------------------------------------------ */

static bool room_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
}

bool net__route_parse(const char *path, size_t len, enum net_route *route,
                      char *room, size_t *room_len)
{
    const char *p, *end, *id;
    size_t n;

    *route = NET_ROUTE_NONE;
    *room_len = 0;
    /* One trailing slash is tolerated: "/new/" is "/new". */
    if (len > 1 && path[len - 1] == '/')
        len--;
    if (len == 4 && memcmp(path, "/new", 4) == 0) {
        *route = NET_ROUTE_NEW;
        return true;
    }
    if (len == 8 && memcmp(path, "/healthz", 8) == 0) {
        *route = NET_ROUTE_HEALTHZ;
        return true;
    }
    if (len == 8 && memcmp(path, "/metrics", 8) == 0) {
        *route = NET_ROUTE_METRICS;
        return true;
    }
    if (len == 15 && memcmp(path, "/cluster/status", 15) == 0) {
        *route = NET_ROUTE_CLUSTER_STATUS;
        return true;
    }
    if (len == 16 && memcmp(path, "/_driftd/forward", 16) == 0) {
        *route = NET_ROUTE_FORWARD; /* the upgrade only: forward.c */
        return true;
    }
    if (len > 7 && memcmp(path, "/admin/", 7) == 0) {
        *route = NET_ROUTE_ADMIN;
        return true;
    }
    if ((len == 3 && memcmp(path, "/ui", 3) == 0) ||
        (len > 4 && memcmp(path, "/ui/", 4) == 0)) {
        *route = NET_ROUTE_UI; /* ui.c: the file, or 404 */
        return true;
    }
    if (len <= 6 || memcmp(path, "/room/", 6) != 0)
        return false;
    id = path + 6;
    end = path + len;
    for (p = id; p < end && *p != '/'; p++)
        if (!room_char_ok(*p))
            return false;
    n = (size_t)(p - id);
    if (n == 0 || n > RELAY_ROOM_ID_MAX)
        return false;
    memcpy(room, id, n);
    room[n] = '\0';
    *room_len = n;
    if (p == end) {
        *route = NET_ROUTE_ROOM;
        return true;
    }
    if ((size_t)(end - p) == 8 && memcmp(p, "/connect", 8) == 0) {
        *route = NET_ROUTE_CONNECT;
        return true;
    }
    if ((size_t)(end - p) == 5 && memcmp(p, "/send", 5) == 0) {
        *route = NET_ROUTE_SEND;
        return true;
    }
    return false;
}

/* ---- answers ------------------------------------------------------------ */

void net__http_reset(struct net_conn *c)
{
    struct net_http *h = &c->http;

    if (h->pending == NET_PENDING_ADMIN)
        net__admin_detach(c);
    else if (h->pending != NET_PENDING_NONE)
        net__owner_unregister(c->srv, c);
    free(h->body);
    free(h->resp);
    memset(h, 0, sizeof(*h));
}

/* Takes buf (LWS_PRE headroom, payload at +LWS_PRE, len bytes). */
static void respond_take(struct net_conn *c, unsigned status, const char *ctype,
                         uint8_t *buf, size_t len)
{
    struct net_http *h = &c->http;

    free(h->resp);
    h->resp = buf;
    h->resp_len = len;
    h->status = status;
    h->ctype = ctype;
    h->resp_ready = true;
    h->acted = true;
    lws_callback_on_writable(c->wsi);
}

static void respond(struct net_conn *c, unsigned status, const char *ctype,
                    const void *body, size_t len)
{
    uint8_t *buf = malloc(LWS_PRE + len + 1);

    if (buf == NULL) {
        /* Without memory for the answer, the connection goes. */
        LOG_WARN("event=http_oom status=%u", status);
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        c->http.acted = true;
        return;
    }
    if (len > 0)
        memcpy(buf + LWS_PRE, body, len);
    respond_take(c, status, ctype, buf, len);
}

void net__http_respond(struct net_conn *c, unsigned status, const char *ctype,
                       const void *body, size_t len)
{
    respond(c, status, ctype, body, len);
}

static size_t error_json(char *out, size_t cap, const char *msg)
{
    char *o = out, *end = out + cap;
    static const char head[] = "{\"type\":\"error\",\"message\":";

    if (cap < sizeof(head) + 8)
        return 0;
    memcpy(o, head, sizeof(head) - 1);
    o += sizeof(head) - 1;
    if (!net__json_str(&o, end - 2, msg, strlen(msg))) {
        o = out + sizeof(head) - 1;
        net__json_str(&o, end - 2, "error", 5);
    }
    *o++ = '}';
    return (size_t)(o - out);
}

static void respond_error(struct net_conn *c, unsigned status, const char *fmt,
                          ...) __attribute__((format(printf, 3, 4)));

/* The kind of an error answer for driftd_errors_total, from its status
 * and the start of its message. */
static enum net_err_kind error_kind(const struct net_conn *c, unsigned status,
                                    const char *msg)
{
    switch (status) {
    case 400:
        return NET_ERR_DECODE;
    case 404:
        return c->http.route == NET_ROUTE_ROOM ||
                       c->http.route == NET_ROUTE_CONNECT ||
                       c->http.route == NET_ROUTE_SEND
                   ? NET_ERR_ROOM_NOT_FOUND
                   : NET_ERR_OTHER;
    case 413:
        return NET_ERR_TOO_BIG;
    case 429:
        return NET_ERR_RATE_LIMIT;
    case 503:
        if (strncmp(msg, "not ready", 9) == 0)
            return NET_ERR_NOT_READY;
        if (strncmp(msg, "push ", 5) == 0 || strncmp(msg, "room ", 5) == 0)
            return NET_ERR_NOT_APPLIED;
        return NET_ERR_OTHER;
    default:
        return NET_ERR_OTHER;
    }
}

static void respond_error(struct net_conn *c, unsigned status, const char *fmt,
                          ...)
{
    char msg[300], body[700];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!c->http.err_counted)
        net__count_error(c->srv, error_kind(c, status, msg));
    c->http.err_counted = false;
    respond(c, status, CT_JSON, body, error_json(body, sizeof(body), msg));
}

void net__http_respond_built(struct net_conn *c, const char *ctype, char *body,
                             size_t len)
{
    if (body == NULL) {
        respond_error(c, 503, "out of memory");
        return;
    }
    respond(c, 200, ctype, body, len);
    free(body);
}

/* The room object: urls from the configured public URL, else from Host. */
static void respond_room(struct net_conn *c)
{
    struct net_server *s = c->srv;
    struct net_http *h = &c->http;
    char body[1600], url[700], base[NET_HOST_MAX + 300];
    const char *ws = "ws", *http = "http", *rest;
    char *o = body, *end = body + sizeof(body);
    int n;

    if (s->cfg.tls_cert != NULL) {
        ws = "wss";
        http = "https";
    }
    if (s->public_url != NULL) {
        rest = strstr(s->public_url, "://");
        if (rest != NULL && rest - s->public_url == 5 &&
            strncasecmp(s->public_url, "https", 5) == 0) {
            ws = "wss";
            http = "https";
        }
        rest = rest != NULL ? rest + 3 : s->public_url;
        snprintf(base, sizeof(base), "%s", rest);
    } else if (h->host[0] != '\0') {
        snprintf(base, sizeof(base), "%s", h->host);
    } else {
        snprintf(base, sizeof(base), "%s:%d", s->cfg.http_host,
                 s->cfg.http_port);
    }

    memcpy(o, "{\"room\":", 8);
    o += 8;
    if (!net__json_str(&o, end, h->room, h->room_len))
        goto err_too_long;
    n = snprintf(url, sizeof(url), "%s://%s/room/%s/connect", ws, base,
                 h->room);
    if (n < 0 || (size_t)n >= sizeof(url) || end - o < 20)
        goto err_too_long;
    memcpy(o, ",\"socket_url\":", 14);
    o += 14;
    if (!net__json_str(&o, end, url, (size_t)n))
        goto err_too_long;
    n = snprintf(url, sizeof(url), "%s://%s/room/%s/send", http, base, h->room);
    if (n < 0 || (size_t)n >= sizeof(url) || end - o < 20)
        goto err_too_long;
    memcpy(o, ",\"http_url\":", 12);
    o += 12;
    if (!net__json_str(&o, end - 1, url, (size_t)n))
        goto err_too_long;
    *o++ = '}';
    respond(c, 200, CT_JSON, body, (size_t)(o - body));
    return;
err_too_long:
    respond_error(c, 400, "host header too long");
}

static void respond_preflight(struct net_conn *c)
{
    c->http.preflight = true;
    respond(c, 200, NULL, NULL, 0);
}

/* ---- writing ------------------------------------------------------------ */

static int add_header(struct lws *wsi, const char *name, const char *value,
                      unsigned char **p, unsigned char *end)
{
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                       (const unsigned char *)value,
                                       (int)strlen(value), p, end);
}

static int write_headers(struct net_conn *c, unsigned status, const char *ctype,
                         size_t len, bool preflight, bool close_after,
                         unsigned retry_after)
{
    /* Room for the dashboard's CSP, which names every member. */
    unsigned char buf[LWS_PRE + 4096];
    unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof(buf);
    struct lws *wsi = c->wsi;
    char ra[16];

    /* A 304 has no body and no Content-Length (RFC 9110 8.6: only the
     * 200's length would be allowed); lws then closes the connection
     * after it, which costs a page load a reconnect or two. */
    if (lws_add_http_common_headers(wsi, status, ctype,
                                    status == 304 ? LWS_ILLEGAL_HTTP_CONTENT_LEN
                                                  : (lws_filepos_t)len,
                                    &p, end))
        return -1;
    /* The client API is open to pages of any origin; the admin API only to
     * the cluster's own nodes (the dashboard, ui.c); the dashboard's files
     * to nobody else. */
    if (c->http.route == NET_ROUTE_UI) {
        if (net__ui_headers(c, &p, end))
            return -1;
    } else if (c->http.route == NET_ROUTE_ADMIN) {
        if (net__ui_admin_cors(c, &p, end))
            return -1;
    } else if (add_header(wsi, "access-control-allow-origin:", "*", &p, end)) {
        return -1;
    }
    if (preflight &&
        (add_header(wsi, "access-control-allow-methods:", "GET, POST, OPTIONS",
                    &p, end) ||
         add_header(wsi, "access-control-allow-headers:",
                    "content-type, authorization, accept", &p, end) ||
         add_header(wsi, "access-control-max-age:", "86400", &p, end)))
        return -1;
    if (close_after && add_header(wsi, "connection:", "close", &p, end))
        return -1;
    snprintf(ra, sizeof(ra), "%u", retry_after);
    if (retry_after > 0 && add_header(wsi, "retry-after:", ra, &p, end))
        return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    return 0;
}

int net__http_on_writeable(struct net_conn *c)
{
    struct net_http *h = &c->http;
    bool close_after = h->close_after;

    if (!h->resp_ready)
        return 0;
    if (write_headers(c, h->status, h->ctype, h->resp_len, h->preflight,
                      close_after, h->retry_after) != 0)
        return -1;
    /* lws keeps whatever the socket does not take now and sends it before
     * the next writeable callback or the transaction's end. */
    if (h->resp_len > 0 && lws_write(c->wsi, h->resp + LWS_PRE, h->resp_len,
                                     LWS_WRITE_HTTP_FINAL) < 0)
        return -1;
    net__http_reset(c);
    if (close_after)
        return -1;
    return lws_http_transaction_completed(c->wsi) ? -1 : 0;
}

int net__http_write_now_retry(struct net_conn *c, unsigned status,
                              const char *message, unsigned retry_after)
{
    uint8_t buf[LWS_PRE + 512];
    size_t len = error_json((char *)buf + LWS_PRE, 512, message);

    if (write_headers(c, status, CT_JSON, len, false, false, retry_after) != 0)
        return -1;
    if (lws_write(c->wsi, buf + LWS_PRE, len, LWS_WRITE_HTTP_FINAL) < 0)
        return -1;
    return 0;
}

int net__http_write_now(struct net_conn *c, unsigned status,
                        const char *message)
{
    return net__http_write_now_retry(c, status, message, 0);
}

const char *net__not_ready(struct net_server *s, char *buf, size_t cap)
{
    const char *why = cons_node_not_ready(s->cons);

    if (why == NULL)
        return NULL;
    snprintf(buf, cap, "not ready: %s, retry shortly", why);
    return buf;
}

/* 503 "not ready" with Retry-After: true when the node is not ready. */
static bool refuse_not_ready(struct net_conn *c)
{
    char buf[128];
    const char *msg = net__not_ready(c->srv, buf, sizeof(buf));

    if (msg == NULL)
        return false;
    respond_error(c, 503, "%s", msg);
    c->http.retry_after = NET_RETRY_AFTER_S;
    return true;
}

/*
 * Reads are linearizable: local state answers a get, a room lookup or a
 * "room not found" only after a read barrier (cons_read_index), so it holds
 * everything acknowledged anywhere before the request. Starts the barrier
 * and returns true (the request is decided again once it is answered), or
 * returns false when it was answered already.
 */
static bool wait_read(struct net_conn *c)
{
    struct net_http *h = &c->http;
    int rv;

    if (h->read_done)
        return false;
    if (net__owner_register(c->srv, c) != NET_OK) {
        respond_error(c, 503, "out of memory");
        return true;
    }
    rv = cons_read_index(c->srv->cons, c->session);
    if (rv != CONS_OK) {
        net__owner_unregister(c->srv, c);
        respond_error(c, 503, "not ready: %s, retry shortly",
                      cons_strerror(rv));
        h->retry_after = NET_RETRY_AFTER_S;
        return true;
    }
    h->pending = NET_PENDING_READ;
    h->acted = true;
    /* lws cuts a request that says nothing for its own few seconds; the
     * barrier may wait up to the queue timeout for a leader. */
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, NET_READ_WAIT_S);
    return true;
}

/* ---- the routes --------------------------------------------------------- */

static bool room_exists(struct net_server *s, const char *id, size_t len)
{
    return relay_room_exists(cons_node_state(s->cons), id, len);
}

/*
 * Proposes cmd under this request's session and holds the answer until the
 * command is applied or fails (net__http_on_applied / on_failed); what
 * names the command in a refusal ("push not applied: ...").
 */
static void propose_and_wait(struct net_conn *c, struct relay_cmd *cmd,
                             enum net_pending pending, const char *what)
{
    struct net_server *s = c->srv;
    int rv;

    if (net__owner_register(s, c) != NET_OK) {
        respond_error(c, 503, "out of memory");
        return;
    }
    cmd->origin.node = cons_node_id(s->cons);
    cmd->origin.session = c->session;
    cmd->origin.counter = 1;
    rv = cons_propose(s->cons, cmd);
    if (rv != CONS_OK) {
        net__owner_unregister(s, c);
        respond_error(c, 503, "%s: %s", what, cons_strerror(rv));
        return;
    }
    c->http.pending = pending;
    c->http.acted = true;
    /* The answer may wait up to the queue timeout (lws would cut it). */
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, NET_READ_WAIT_S);
}

static void start_new(struct net_conn *c)
{
    static const char b64url[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    struct net_server *s = c->srv;
    struct net_http *h = &c->http;
    uint8_t rnd[ROOM_ID_RANDOM_BYTES];
    struct relay_cmd cmd;
    size_t i, o = 0;

    if (!net__ip_take_room(s, c)) {
        respond_error(c, 429,
                      "too many rooms created from this address: at most "
                      "%g per second",
                      s->cfg.room_rate);
        h->retry_after = NET_RETRY_AFTER_S;
        return;
    }
    /* The room id is the bearer token of the room: CSPRNG only. */
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        respond_error(c, 503, "no randomness available");
        return;
    }
    for (i = 0; i < sizeof(rnd); i += 3) {
        uint32_t v =
            (uint32_t)rnd[i] << 16 | (uint32_t)rnd[i + 1] << 8 | rnd[i + 2];

        h->room[o++] = b64url[(v >> 18) & 63];
        h->room[o++] = b64url[(v >> 12) & 63];
        h->room[o++] = b64url[(v >> 6) & 63];
        h->room[o++] = b64url[v & 63];
    }
    h->room[o] = '\0';
    h->room_len = o;

    memset(&cmd, 0, sizeof(cmd));
    cmd.type = RELAY_CMD_CREATE_ROOM;
    cmd.room = h->room;
    cmd.room_len = h->room_len;
    propose_and_wait(c, &cmd, NET_PENDING_NEW, "room not created");
}

static void send_push(struct net_conn *c, const struct relay_msg *m)
{
    struct net_server *s = c->srv;
    struct net_http *h = &c->http;
    struct relay_cmd cmd;

    net__push_cmd(s, NET_TR_HTTP, &cmd, h->room, h->room_len, m);
    h->push_ns = uv_hrtime();
    propose_and_wait(c, &cmd, NET_PENDING_SEND, "push not applied");
}

void net__http_propose_config(struct net_conn *c, size_t setting,
                              uint64_t value)
{
    struct relay_cmd cmd;

    memset(&cmd, 0, sizeof(cmd));
    cmd.type = RELAY_CMD_CONFIG;
    cmd.key = relay_setting_name(setting);
    cmd.key_len = strlen(cmd.key);
    cmd.compact_seq = value;
    propose_and_wait(c, &cmd, NET_PENDING_CONFIG, "setting not applied");
}

static void send_get(struct net_conn *c, const struct relay_msg *m)
{
    struct net_server *s = c->srv;
    struct net_http *h = &c->http;
    const struct relay_entry *entries;
    uint8_t *buf;
    size_t n, len;
    int rv;

    /* No subscription over HTTP; "seq": null asks for no replay. */
    if (!m->has_seq) {
        respond(c, 200, CT_JSON, "null", 4);
        return;
    }
    rv = relay_stream_read(cons_node_state(s->cons), h->room, h->room_len,
                           m->key, m->key_len, m->seq, &entries, &n);
    if (rv == RELAY_ENOROOM) {
        respond_error(c, 404, "room not found");
        return;
    }
    if (rv == RELAY_OK)
        rv = relay_enc_init(RELAY_FMT_JSON, LWS_PRE, m->key, m->key_len,
                            entries, n, &buf, &len);
    if (rv != RELAY_OK) {
        respond_error(c, 503, "get failed: %s", relay_strerror(rv));
        return;
    }
    respond_take(c, 200, CT_JSON, buf, len);
}

static void send_ping(struct net_conn *c, const struct relay_msg *m)
{
    uint8_t *buf;
    size_t len;
    int rv = relay_enc_pong(RELAY_FMT_JSON, LWS_PRE, m->has_nonce, m->nonce,
                            &buf, &len);

    if (rv != RELAY_OK) {
        respond_error(c, 503, "ping failed: %s", relay_strerror(rv));
        return;
    }
    respond_take(c, 200, CT_JSON, buf, len);
}

static void start_send(struct net_conn *c)
{
    struct net_server *s = c->srv;
    struct net_http *h = &c->http;
    struct relay_msg m;
    char err[256];
    bool ready;
    int rv;

    /* Not ready: the room may exist without this node knowing yet. A push
     * still goes to the log, whose answer is authoritative (and waits for a
     * leader like any push); anything read from local state is refused. */
    ready = cons_node_is_ready(s->cons);
    if (ready && !room_exists(s, h->room, h->room_len)) {
        if (!wait_read(c))
            respond_error(c, 404, "room not found");
        return;
    }
    err[0] = '\0';
    rv = relay_msg_decode(
        RELAY_FMT_JSON, h->body != NULL ? h->body : (const uint8_t *)"",
        h->body_len, s->cfg.max_message, &m, err, sizeof(err));
    if (rv != RELAY_OK) {
        respond_error(c, 400, "%s", err[0] != '\0' ? err : relay_strerror(rv));
        relay_msg_free(&m);
        return;
    }
    switch (m.type) {
    case RELAY_MSG_PUSH:
        send_push(c, &m);
        break;
    case RELAY_MSG_GET:
        if (!refuse_not_ready(c) && !(m.has_seq && wait_read(c)))
            send_get(c, &m);
        break;
    case RELAY_MSG_PING:
        send_ping(c, &m);
        break;
    default:
        respond_error(c, 400, "unknown message type");
        break;
    }
    relay_msg_free(&m);
}

/* Decides the request once its body (if any) is in. */
static void decide(struct net_conn *c)
{
    struct net_server *s = c->srv;
    struct net_http *h = &c->http;
    bool get = h->method == LWSHUMETH_GET, post = h->method == LWSHUMETH_POST;

    if (h->method == LWSHUMETH_OPTIONS) {
        respond_preflight(c);
        return;
    }
    switch (h->route) {
    case NET_ROUTE_HEALTHZ: {
        char buf[128];
        const char *why;

        if (!get)
            break;
        why = net__not_ready(s, buf, sizeof(buf));
        if (why == NULL)
            why = cons_node_disk_fault(s->cons);
        if (why == NULL) {
            respond(c, 200, CT_TEXT, "ok", 2);
            return;
        }
        respond(c, 503, CT_TEXT, why, strlen(why));
        h->retry_after = NET_RETRY_AFTER_S;
        return;
    }
    case NET_ROUTE_METRICS: {
        size_t len;
        char *body;

        /* Open like /healthz and /cluster/status: aggregates only, no
         * room ids or payloads (docs/operations.md, "Metrics"). */
        if (!get)
            break;
        body = net__metrics_text(s, &len);
        net__http_respond_built(c, CT_METRICS, body, len);
        return;
    }
    case NET_ROUTE_CLUSTER_STATUS: {
        size_t len;
        char *body;

        if (!get)
            break;
        body = net__cluster_status_json(s, &len);
        net__http_respond_built(c, CT_JSON, body, len);
        return;
    }
    case NET_ROUTE_ADMIN:
        net__admin_decide(c);
        return;
    case NET_ROUTE_UI:
        net__ui_serve(c);
        return;
    case NET_ROUTE_NEW:
        if (!post)
            break;
        start_new(c);
        return;
    case NET_ROUTE_ROOM:
        if (!get)
            break;
        if (refuse_not_ready(c) || wait_read(c))
            return;
        if (room_exists(s, h->room, h->room_len))
            respond_room(c);
        else
            respond_error(c, 404, "room not found");
        return;
    case NET_ROUTE_CONNECT:
        if (!get)
            break;
        if (refuse_not_ready(c))
            return;
        if (room_exists(s, h->room, h->room_len))
            respond_error(c, 426, "websocket upgrade required");
        else if (!wait_read(c))
            respond_error(c, 404, "room not found");
        return;
    case NET_ROUTE_SEND:
        if (!post)
            break;
        start_send(c);
        return;
    default:
        respond_error(c, 404, "not found");
        return;
    }
    respond_error(c, 405, "method not allowed");
}

int net__http_on_request(struct net_conn *c)
{
    struct net_server *s = c->srv;
    struct net_http *h = &c->http;
    struct lws *wsi = c->wsi;
    char *uri = NULL, cl[32];
    int ulen = 0, n;
    unsigned long long want;

    net__http_reset(c);
    c->kind = NET_CONN_HTTP;
    s->metrics.http_requests++;
    h->method = lws_http_get_uri_and_method(wsi, &uri, &ulen);
    if (lws_hdr_copy(wsi, h->host, sizeof(h->host), WSI_TOKEN_HOST) < 0)
        h->host[0] = '\0';
    /* An unknown path keeps NET_ROUTE_NONE: 404 once decided. */
    if (h->method >= 0 && uri != NULL && ulen > 0)
        net__route_parse(uri, (size_t)ulen, &h->route, h->room, &h->room_len);
    if (h->route == NET_ROUTE_ADMIN)
        snprintf(h->path, sizeof(h->path), "%.*s",
                 (int)((size_t)ulen < sizeof(h->path) ? (size_t)ulen
                                                      : sizeof(h->path) - 1),
                 uri);
    if (h->route == NET_ROUTE_ADMIN)
        h->cors_node = net__ui_admin_origin(s, wsi);
    /* A /ui path too long for h->path stays empty: 404, never a prefix. */
    if (h->route == NET_ROUTE_UI && (size_t)ulen < sizeof(h->path)) {
        memcpy(h->path, uri, (size_t)ulen);
        h->path[ulen] = '\0';
    }

    if (c->over_limit) {
        h->close_after = true;
        respond_error(c, 503, "too many connections");
        return 0;
    }
    if (s->stopping) {
        h->close_after = true;
        respond_error(c, 503, "server shutting down");
        return 0;
    }
    /* lws 4.1 does not de-chunk request bodies (it never reports one
     * complete), so a chunked body is refused and the connection, with the
     * body unread, closed. */
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
        h->close_after = true;
        respond_error(c, 411, "send the body with a content-length");
        return 0;
    }
    n = lws_hdr_copy(wsi, cl, sizeof(cl), WSI_TOKEN_HTTP_CONTENT_LENGTH);
    want = n > 0 ? strtoull(cl, NULL, 10) : 0;
    if (want > s->cfg.max_http_body) {
        h->close_after = true;
        respond_error(c, 413, "body over %zu bytes", s->cfg.max_http_body);
        return 0;
    }
    /* Whatever the route, a body is read to its end before the answer, so
     * the connection can carry the next request. */
    if (want > 0) {
        h->want_body = true;
        return 0; /* decided at LWS_CALLBACK_HTTP_BODY_COMPLETION */
    }
    decide(c);
    return 0;
}

int net__http_on_body(struct net_conn *c, const void *in, size_t len)
{
    struct net_http *h = &c->http;
    size_t max = c->srv->cfg.max_http_body, cap;
    uint8_t *b;

    if (h->acted)
        return 0;
    if (len > max - h->body_len) {
        h->close_after = true;
        respond_error(c, 413, "body over %zu bytes", max);
        return 0;
    }
    if (h->body_len + len > h->body_cap) {
        cap = h->body_cap == 0 ? 1024 : h->body_cap;
        while (cap < h->body_len + len)
            cap *= 2;
        if (cap > max)
            cap = max;
        b = realloc(h->body, cap);
        if (b == NULL) {
            h->close_after = true;
            respond_error(c, 503, "out of memory");
            return 0;
        }
        h->body = b;
        h->body_cap = cap;
    }
    memcpy(h->body + h->body_len, in, len);
    h->body_len += len;
    return 0;
}

int net__http_on_body_done(struct net_conn *c)
{
    if (!c->http.acted)
        decide(c);
    return 0;
}

/* ---- results from consensus --------------------------------------------- */

void net__http_on_applied(struct net_conn *c, const struct cons_applied *ev)
{
    struct net_http *h = &c->http;
    const struct relay_effects *eff = ev->eff;
    enum net_pending pending = h->pending;
    uint8_t *buf;
    size_t len;
    int rv;

    if (pending == NET_PENDING_NONE)
        return;
    h->pending = NET_PENDING_NONE;
    net__owner_unregister(c->srv, c);
    if (pending == NET_PENDING_CONFIG) {
        char body[160];
        int n;

        if (eff->status != RELAY_OK && eff->status != RELAY_EDUP) {
            respond_error(c, 400, "setting refused: %s",
                          relay_strerror(eff->status));
            return;
        }
        n = snprintf(body, sizeof(body), "{\"name\":\"%.*s\",\"value\":%llu}",
                     (int)ev->cmd->key_len, ev->cmd->key,
                     (unsigned long long)ev->cmd->compact_seq);
        respond(c, 200, CT_JSON, body, (size_t)n);
        return;
    }
    if (pending == NET_PENDING_NEW) {
        /* EDUP: created, inside a snapshot this node installed. */
        if (eff->status == RELAY_OK || eff->status == RELAY_EDUP)
            respond_room(c);
        else
            respond_error(c, 503, "room not created: %s",
                          relay_strerror(eff->status));
        return;
    }
    net__metrics_latency(c->srv, h->push_ns);
    if (eff->status != RELAY_OK && eff->status != RELAY_EDUP) {
        if (eff->status != RELAY_ENOROOM) {
            net__count_error(c->srv, NET_ERR_REFUSED);
            h->err_counted = true;
        }
        respond_error(c, eff->status == RELAY_ENOROOM ? 404 : 400, "%s",
                      relay_strerror(eff->status));
        return;
    }
    if (eff->has_stream_size)
        c->srv->metrics.stream_size[NET_TR_HTTP]++;
    if (!eff->has_stream_size) {
        respond(c, 200, CT_JSON, "null", 4);
        return;
    }
    rv = relay_enc_stream_size(RELAY_FMT_JSON, LWS_PRE, ev->cmd->key,
                               ev->cmd->key_len, eff->stream_size, &buf, &len);
    if (rv != RELAY_OK) {
        /* Applied, only the size report is lost. */
        respond(c, 200, CT_JSON, "null", 4);
        return;
    }
    respond_take(c, 200, CT_JSON, buf, len);
}

void net__http_on_read(struct net_conn *c, int status)
{
    struct net_http *h = &c->http;

    if (h->pending != NET_PENDING_READ)
        return;
    h->pending = NET_PENDING_NONE;
    net__owner_unregister(c->srv, c);
    h->read_done = true;
    lws_set_timeout(c->wsi, NO_PENDING_TIMEOUT, 0);
    if (status != CONS_OK) {
        respond_error(c, 503, "not ready: %s, retry shortly",
                      cons_strerror(status));
        h->retry_after = NET_RETRY_AFTER_S;
        return;
    }
    decide(c);
}

void net__http_on_failed(struct net_conn *c, int code)
{
    struct net_http *h = &c->http;
    enum net_pending pending = h->pending;
    const char *what;

    if (pending == NET_PENDING_NONE)
        return;
    h->pending = NET_PENDING_NONE;
    net__owner_unregister(c->srv, c);
    if (cons_outcome_unknown(code))
        what = pending == NET_PENDING_NEW      ? "room creation outcome unknown"
               : pending == NET_PENDING_CONFIG ? "setting outcome unknown"
                                               : "push outcome unknown";
    else
        what = pending == NET_PENDING_NEW      ? "room not created"
               : pending == NET_PENDING_CONFIG ? "setting not applied"
                                               : "push not applied";
    respond_error(c, 503, "%s: %s", what, cons_strerror(code));
}

void net__http_on_stop(struct net_conn *c)
{
    struct net_http *h = &c->http;
    enum net_pending pending = h->pending;

    if (pending == NET_PENDING_NONE)
        return;
    if (pending == NET_PENDING_ADMIN) {
        net__admin_detach(c);
        h->close_after = true;
        respond_error(c, 503, "change outcome unknown: server shutting down");
        return;
    }
    h->pending = NET_PENDING_NONE;
    net__owner_unregister(c->srv, c);
    h->close_after = true;
    respond_error(c, 503, "%s: server shutting down",
                  pending == NET_PENDING_NEW ? "room creation outcome unknown"
                                             : "push outcome unknown");
}
