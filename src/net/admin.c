/*
 * admin.c - the admin HTTP API under /admin/ (documented in
 * docs/admin-api.md), used by driftctl.
 *
 *   GET  /admin/status                  = GET /cluster/status
 *   POST /admin/members                 {"id","raft","role"}
 *   POST /admin/members/ID/role         {"role","force"}
 *   POST /admin/members/ID/remove       {"force"}
 *   POST /admin/transfer                {"id"} or {}
 *   GET  /admin/rooms
 *   GET  /admin/rooms/ID
 *   GET  /admin/config                  the cluster settings
 *   POST /admin/config                  {"name","value"}, through the log
 *   GET  /admin/log                     this node's log level and format
 *   POST /admin/log                     {"level"} and/or {"format"}
 *
 * With --admin-token every call needs "Authorization: Bearer TOKEN" (401
 * otherwise; compared in constant time; never taken from the query
 * string). With a cluster key and no token the API is closed (403). Errors are
 * {"error", "code"}; a change sent to a follower answers 421 "not_leader" with
 * the leader's id and HTTP address so the caller can re-send it there.
 *
 * A membership change answers when raft has finished it: the connection
 * holds a net_admin_op that consensus' callback resolves. If the
 * connection goes first the op is detached and the callback only frees it.
 */
#define LOG_MODULE "net"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "internal.h"
#include "log.h"

#define CT_JSON "application/json"

struct net_admin_op {
    struct net_conn *conn; /* NULL once detached */
};

/* ---- answers ------------------------------------------------------------- */

static void respond_json(struct net_conn *c, unsigned status, json_t *root)
{
    char *text = root != NULL ? json_dumps(root, JSON_COMPACT) : NULL;

    json_decref(root);
    if (text == NULL) {
        static const char oom[] =
            "{\"error\":\"out of memory\",\"code\":\"unavailable\"}";

        net__http_respond(c, 503, CT_JSON, oom, sizeof(oom) - 1);
        return;
    }
    net__http_respond(c, status, CT_JSON, text, strlen(text));
    free(text);
}

static void respond_err(struct net_conn *c, unsigned status, const char *code,
                        const char *msg)
{
    json_t *o = json_object();

    json_object_set_new(o, "error", json_string(msg));
    json_object_set_new(o, "code", json_string(code));
    respond_json(c, status, o);
}

static void respond_ok(struct net_conn *c, const char *msg)
{
    json_t *o = json_object();

    json_object_set_new(o, "ok", json_true());
    json_object_set_new(o, "message", json_string(msg));
    respond_json(c, 200, o);
}

static void respond_not_leader(struct net_conn *c)
{
    struct cons_status st;
    json_t *o = json_object(), *leader = json_null();
    const char *http;

    cons_node_status(c->srv->cons, &st);
    if (st.leader_id != 0 && st.leader_id != st.id) {
        http = cons_node_http_addr(c->srv->cons, st.leader_id);
        leader = json_object();
        json_object_set_new(leader, "id", json_integer(st.leader_id));
        json_object_set_new(leader, "http",
                            http != NULL ? json_string(http) : json_null());
    }
    json_object_set_new(o, "error", json_string("this node is not the leader"));
    json_object_set_new(o, "code", json_string("not_leader"));
    json_object_set_new(o, "leader", leader);
    respond_json(c, 421, o);
}

/* Maps a consensus refusal to an answer. */
static void respond_cons_err(struct net_conn *c, int code, const char *msg)
{
    switch (code) {
    case CONS_ENOTLEADER:
        respond_not_leader(c);
        return;
    case CONS_EBUSY:
        respond_err(c, 409, "busy", msg);
        return;
    case CONS_EQUORUM:
        respond_err(c, 409, "quorum", msg);
        return;
    case CONS_EAGAIN:
        respond_err(c, 503, "settling", msg);
        return;
    case CONS_ENOTFOUND:
        respond_err(c, 404, "not_found", msg);
        return;
    case CONS_EISLEADER:
        respond_err(c, 400, "is_leader", msg);
        return;
    case CONS_ELASTVOTER:
        respond_err(c, 400, "last_voter", msg);
        return;
    case CONS_EINVAL:
        respond_err(c, 400, "invalid", msg);
        return;
    default:
        respond_err(c, 503, "unavailable", msg);
        return;
    }
}

/* ---- auth ---------------------------------------------------------------- */

/* A cluster key means a closed cluster: its admin API, which lists every
 * room and changes membership, is never open to anyone who can reach it. */
static bool admin_is_closed(const struct net_server *s)
{
    return s->cfg.has_cluster_key &&
           (s->cfg.admin_token == NULL || s->cfg.admin_token[0] == '\0');
}

static bool authorized(struct net_conn *c)
{
    return net__admin_token_ok(c->srv, c->wsi);
}

bool net__admin_token_ok(struct net_server *s, struct lws *wsi)
{
    const char *token = s->cfg.admin_token;
    char hdr[NET_ADMIN_TOKEN_MAX + 16];
    size_t tl, hl;
    unsigned diff = 0;
    int n;

    if (token == NULL || token[0] == '\0')
        return true;
    n = lws_hdr_copy(wsi, hdr, sizeof(hdr), WSI_TOKEN_HTTP_AUTHORIZATION);
    if (n <= 7 || strncmp(hdr, "Bearer ", 7) != 0)
        return false;
    tl = strlen(token);
    hl = (size_t)n - 7;
    /* Constant time in the header's content. */
    for (size_t i = 0; i < hl; i++)
        diff |= (unsigned)(hdr[7 + i] ^ token[i < tl ? i : 0]);
    return diff == 0 && hl == tl;
}

/* ---- changes ------------------------------------------------------------- */

static void on_change_done(void *arg, int status, const char *msg)
{
    struct net_admin_op *op = arg;
    struct net_conn *c = op->conn;

    free(op);
    if (c == NULL)
        return; /* the asker is gone (or the server is closing) */
    c->http.admin_op = NULL;
    c->http.pending = NET_PENDING_NONE;
    if (status == CONS_OK)
        respond_ok(c, msg);
    else
        respond_cons_err(c, status, msg);
}

void net__admin_detach(struct net_conn *c)
{
    if (c->http.admin_op != NULL)
        c->http.admin_op->conn = NULL;
    c->http.admin_op = NULL;
    c->http.pending = NET_PENDING_NONE;
}

/* Starts a change through fn; the answer comes from on_change_done. */
static struct net_admin_op *op_new(struct net_conn *c)
{
    struct net_admin_op *op = calloc(1, sizeof(*op));

    if (op == NULL) {
        respond_err(c, 503, "unavailable", "out of memory");
        return NULL;
    }
    op->conn = c;
    return op;
}

static void op_started(struct net_conn *c, struct net_admin_op *op, int rv)
{
    if (rv != CONS_OK) {
        free(op);
        respond_cons_err(c, rv, cons_node_errmsg(c->srv->cons));
        return;
    }
    c->http.admin_op = op;
    c->http.pending = NET_PENDING_ADMIN;
}

static json_t *body_json(struct net_conn *c)
{
    json_error_t e;

    if (c->http.body_len == 0)
        return json_object();
    return json_loadb((const char *)c->http.body, c->http.body_len, 0, &e);
}

static bool parse_role(const char *s, enum cons_role *role)
{
    if (s != NULL && strcmp(s, "voter") == 0)
        *role = CONS_ROLE_VOTER;
    else if (s != NULL && strcmp(s, "standby") == 0)
        *role = CONS_ROLE_STANDBY;
    else
        return false;
    return true;
}

static bool parse_id(const char *s, size_t n, uint32_t *id)
{
    uint64_t v = 0;

    if (n == 0 || n > 10)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v == 0 || v > UINT32_MAX)
        return false;
    *id = (uint32_t)v;
    return true;
}

static void do_add(struct net_conn *c, json_t *body)
{
    json_int_t id = json_integer_value(json_object_get(body, "id"));
    const char *raft = json_string_value(json_object_get(body, "raft"));
    const char *rs = json_string_value(json_object_get(body, "role"));
    enum cons_role role = CONS_ROLE_VOTER;
    struct net_admin_op *op;

    if (id <= 0 || id > (json_int_t)UINT32_MAX || raft == NULL ||
        (rs != NULL && !parse_role(rs, &role))) {
        respond_err(c, 400, "invalid",
                    "want {\"id\": N, \"raft\": \"HOST:PORT\", \"role\": "
                    "\"voter\"|\"standby\"}");
        return;
    }
    op = op_new(c);
    if (op != NULL)
        op_started(c, op,
                   cons_member_add(c->srv->cons, (uint32_t)id, raft, role,
                                   on_change_done, op));
}

static void do_member(struct net_conn *c, uint32_t id, const char *verb,
                      json_t *body)
{
    bool force = json_is_true(json_object_get(body, "force"));
    struct net_admin_op *op;
    enum cons_role role;

    if (strcmp(verb, "role") == 0) {
        if (!parse_role(json_string_value(json_object_get(body, "role")),
                        &role)) {
            respond_err(c, 400, "invalid",
                        "want {\"role\": \"voter\"|\"standby\"}");
            return;
        }
        op = op_new(c);
        if (op != NULL)
            op_started(c, op,
                       cons_member_assign(c->srv->cons, id, role, force,
                                          on_change_done, op));
        return;
    }
    if (strcmp(verb, "remove") == 0) {
        op = op_new(c);
        if (op != NULL)
            op_started(c, op,
                       cons_member_remove(c->srv->cons, id, force,
                                          on_change_done, op));
        return;
    }
    respond_err(c, 404, "not_found", "unknown admin path");
}

static void do_transfer(struct net_conn *c, json_t *body)
{
    json_t *jid = json_object_get(body, "id");
    json_int_t id = jid != NULL ? json_integer_value(jid) : 0;
    struct net_admin_op *op;

    if (id < 0 || id > (json_int_t)UINT32_MAX ||
        (jid != NULL && !json_is_integer(jid) && !json_is_null(jid))) {
        respond_err(c, 400, "invalid", "want {\"id\": N} or {}");
        return;
    }
    op = op_new(c);
    if (op != NULL)
        op_started(c, op,
                   cons_leader_transfer(c->srv->cons, (uint32_t)id,
                                        on_change_done, op));
}

/* ---- reads --------------------------------------------------------------- */

static void add_room(void *arg, const struct relay_room_info *ri)
{
    json_t *o = json_object();

    json_object_set_new(o, "id", json_stringn(ri->id, ri->id_len));
    json_object_set_new(o, "keys", json_integer((json_int_t)ri->keys));
    json_object_set_new(o, "entries", json_integer((json_int_t)ri->entries));
    json_object_set_new(o, "bytes", json_integer((json_int_t)ri->bytes));
    json_object_set_new(o, "last_seq", json_integer((json_int_t)ri->last_seq));
    json_array_append_new(arg, o);
}

static void do_rooms(struct net_conn *c)
{
    json_t *root = json_object(), *rooms = json_array();

    relay_rooms_each(cons_node_state(c->srv->cons), add_room, rooms);
    json_object_set_new(root, "rooms", rooms);
    respond_json(c, 200, root);
}

struct key_ctx {
    const struct relay_state *st;
    const char *room;
    size_t room_len;
    json_t *keys;
};

static void add_key(void *arg, const char *key, size_t key_len)
{
    struct key_ctx *k = arg;
    const struct relay_entry *e;
    size_t n = 0;
    json_t *o = json_object();

    relay_stream_read(k->st, k->room, k->room_len, key, key_len, 0, &e, &n);
    /* Keys may hold any bytes; jansson wants UTF-8 (invalid -> NULL). */
    json_object_set_new(o, "key", json_stringn(key, key_len));
    json_object_set_new(o, "entries", json_integer((json_int_t)n));
    json_array_append_new(k->keys, o);
}

static void do_room(struct net_conn *c, const char *id, size_t id_len)
{
    const struct relay_state *st = cons_node_state(c->srv->cons);
    struct relay_room_info ri;
    struct net_room *nr;
    struct key_ctx k = {.st = st, .room = id, .room_len = id_len};
    json_t *root;

    if (relay_room_info(st, id, id_len, &ri) != RELAY_OK) {
        respond_err(c, 404, "not_found", "room not found");
        return;
    }
    root = json_object();
    k.keys = json_array();
    relay_room_keys(st, id, id_len, add_key, &k);
    nr = net__room_find(c->srv, id, id_len);
    json_object_set_new(root, "id", json_stringn(id, id_len));
    json_object_set_new(root, "last_seq",
                        json_integer((json_int_t)ri.last_seq));
    json_object_set_new(root, "entries", json_integer((json_int_t)ri.entries));
    json_object_set_new(root, "bytes", json_integer((json_int_t)ri.bytes));
    json_object_set_new(root, "subscribers",
                        json_integer(nr != NULL ? (json_int_t)nr->n_conns : 0));
    json_object_set_new(root, "keys", k.keys);
    respond_json(c, 200, root);
}

/* ---- dispatch ------------------------------------------------------------ */

/* ---- cluster settings ---------------------------------------------------- */

/* {"settings": [{"name", "value", "set"}...]}: "set" false means the
 * compiled-in default (the cluster was not configured yet). */
static void do_config_get(struct net_conn *c)
{
    const struct relay_state *st = cons_node_state(c->srv->cons);
    json_t *root = json_object(), *arr = json_array();

    for (size_t i = 0; i < RELAY_SETTINGS_N; i++) {
        bool set;
        uint64_t v = relay_setting_value(st, i, &set);
        json_t *o = json_object();

        json_object_set_new(o, "name", json_string(relay_setting_name(i)));
        json_object_set_new(o, "value", json_integer((json_int_t)v));
        json_object_set_new(o, "set", json_boolean(set));
        json_array_append_new(arr, o);
    }
    json_object_set_new(root, "settings", arr);
    respond_json(c, 200, root);
}

/* {"name", "value"}: proposed through the log (any node; a follower
 * forwards it); answered once applied here, 400 for an unknown name or a
 * value out of range. */
static void do_config_set(struct net_conn *c, json_t *body)
{
    const char *name = json_string_value(json_object_get(body, "name"));
    json_t *jv = json_object_get(body, "value");
    uint64_t min, max;
    int i;

    i = name != NULL ? relay_setting_find(name, strlen(name)) : -1;
    if (i < 0) {
        respond_err(c, 400, "invalid", "unknown setting name");
        return;
    }
    relay_setting_range((size_t)i, &min, &max);
    if (!json_is_integer(jv) || json_integer_value(jv) < 0 ||
        (uint64_t)json_integer_value(jv) < min ||
        (uint64_t)json_integer_value(jv) > max) {
        char msg[128];

        snprintf(msg, sizeof(msg), "%s: want an integer %llu..%llu", name,
                 (unsigned long long)min, (unsigned long long)max);
        respond_err(c, 400, "invalid", msg);
        return;
    }
    net__http_propose_config(c, (size_t)i, (uint64_t)json_integer_value(jv));
}

/* ---- this node's logging ------------------------------------------------- */

static void respond_log(struct net_conn *c)
{
    json_t *o = json_object();

    json_object_set_new(o, "level", json_string(log_level_name(log_threshold)));
    json_object_set_new(o, "format", json_string(log_format_name(log_format)));
    respond_json(c, 200, o);
}

/* The client's word, quoted back only when short and plain ASCII (a cut
 * UTF-8 sequence would make the answer invalid JSON). */
static const char *echo_word(const json_t *v)
{
    const char *s = json_string_value(v);

    if (s == NULL)
        return "(not a string)";
    if (strlen(s) > 40)
        return "(too long)";
    for (const char *p = s; *p != '\0'; p++)
        if (*p < ' ' || *p > '~')
            return "(not plain ASCII)";
    return s;
}

/* {"level": "debug"}, {"format": "json"} or both: this node only (logging
 * is not replicated state), in effect from the next line on. Nothing
 * changes unless both are valid. */
static void do_log_set(struct net_conn *c, json_t *body)
{
    json_t *jl = json_object_get(body, "level");
    json_t *jf = json_object_get(body, "format");
    int lvl = (int)log_threshold, fmt = (int)log_format;
    enum log_level was_lvl;
    enum log_format was_fmt;
    char msg[160];

    if (jl == NULL && jf == NULL) {
        respond_err(c, 400, "invalid",
                    "want {\"level\": \"error\"|\"warn\"|\"info\"|\"debug\"} "
                    "and/or {\"format\": \"text\"|\"json\"}");
        return;
    }
    if (jl != NULL && (!json_is_string(jl) ||
                       (lvl = log_level_parse(json_string_value(jl))) < 0)) {
        snprintf(msg, sizeof(msg),
                 "unknown log level '%s': want error, warn, info or debug",
                 echo_word(jl));
        respond_err(c, 400, "invalid", msg);
        return;
    }
    if (jf != NULL && (!json_is_string(jf) ||
                       (fmt = log_format_parse(json_string_value(jf))) < 0)) {
        snprintf(msg, sizeof(msg), "unknown log format '%s': want text or json",
                 echo_word(jf));
        respond_err(c, 400, "invalid", msg);
        return;
    }
    was_lvl = log_threshold;
    was_fmt = log_format;
    log_threshold = (enum log_level)lvl;
    log_format = (enum log_format)fmt;
    /* One line whatever the new level (an operator's change is rare and
     * always worth a line), in the new format. */
    log_emit(LOG_LVL_WARN, LOG_MODULE, __FILE__, __LINE__,
             "event=log_config log_level=%s log_format=%s was_level=%s "
             "was_format=%s",
             log_level_name(log_threshold), log_format_name(log_format),
             log_level_name(was_lvl), log_format_name(was_fmt));
    respond_log(c);
}

void net__admin_decide(struct net_conn *c)
{
    struct net_http *h = &c->http;
    const char *p = h->path + 7; /* after "/admin/" */
    size_t n = strcspn(p, "?");
    bool get = h->method == LWSHUMETH_GET, post = h->method == LWSHUMETH_POST;
    json_t *body = NULL;

    if (n > 0 && p[n - 1] == '/')
        n--;
    if (admin_is_closed(c->srv)) {
        respond_err(c, 403, "disabled",
                    "the admin API needs an admin token on a cluster with a "
                    "cluster key: start the node with --admin-token-file");
        return;
    }
    if (!authorized(c)) {
        LOG_INFO_RL("event=admin_unauthorized");
        respond_err(c, 401, "unauthorized",
                    "admin calls need Authorization: Bearer TOKEN");
        return;
    }
    if (get && n == 6 && memcmp(p, "status", 6) == 0) {
        size_t len;
        char *text = net__cluster_status_json(c->srv, &len);

        if (text == NULL) {
            respond_err(c, 503, "unavailable", "out of memory");
            return;
        }
        net__http_respond(c, 200, CT_JSON, text, len);
        free(text);
        return;
    }
    if (get && n == 5 && memcmp(p, "rooms", 5) == 0) {
        do_rooms(c);
        return;
    }
    if (get && n == 6 && memcmp(p, "config", 6) == 0) {
        do_config_get(c);
        return;
    }
    if (get && n == 3 && memcmp(p, "log", 3) == 0) {
        respond_log(c);
        return;
    }
    if (get && n > 6 && memcmp(p, "rooms/", 6) == 0) {
        do_room(c, p + 6, n - 6);
        return;
    }
    if (!post) {
        respond_err(c, get ? 404 : 405, get ? "not_found" : "invalid",
                    get ? "unknown admin path" : "method not allowed");
        return;
    }
    body = body_json(c);
    if (!json_is_object(body)) {
        json_decref(body);
        respond_err(c, 400, "invalid", "body must be a JSON object");
        return;
    }
    if (n == 6 && memcmp(p, "config", 6) == 0) {
        do_config_set(c, body);
    } else if (n == 3 && memcmp(p, "log", 3) == 0) {
        do_log_set(c, body);
    } else if (n == 7 && memcmp(p, "members", 7) == 0) {
        do_add(c, body);
    } else if (n == 8 && memcmp(p, "transfer", 8) == 0) {
        do_transfer(c, body);
    } else if (n > 8 && memcmp(p, "members/", 8) == 0) {
        const char *id_s = p + 8, *slash = memchr(id_s, '/', n - 8);
        uint32_t id;
        char verb[16];

        if (slash == NULL || !parse_id(id_s, (size_t)(slash - id_s), &id) ||
            (size_t)(p + n - slash - 1) >= sizeof(verb)) {
            respond_err(c, 404, "not_found", "unknown admin path");
        } else {
            snprintf(verb, sizeof(verb), "%.*s", (int)(p + n - slash - 1),
                     slash + 1);
            do_member(c, id, verb, body);
        }
    } else {
        respond_err(c, 404, "not_found", "unknown admin path");
    }
    json_decref(body);
}
