/*
 * show.c - driftctl status, rooms and room: read-only views, as aligned
 * text tables (columns separated by two spaces, one header line, so awk
 * and cut work) or, with --json, one line of JSON.
 *
 * status asks the node given with --server for /admin/status, the leader
 * for its replication view (match index per member, its last index: the
 * LAG column is the leader's last index minus the member's match index)
 * and every member with an HTTP address for its own role and applied
 * index, with short timeouts: a member that does not answer shows as
 * "unreachable" and the command still succeeds.
 *
 * Text from the cluster (room ids, keys) is printed with control
 * characters replaced, so a key cannot drive the terminal.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "ctl.h"

#define TABLE_MAX_COLS 8

struct table {
    size_t ncols;
    size_t ncells;
    size_t cap;
    char **cells; /* row-major, owned */
    bool oom;
};

static void table_init(struct table *t, size_t ncols)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
}

static void table_close(struct table *t)
{
    for (size_t i = 0; i < t->ncells; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof(*t));
}

static void table_cell(struct table *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Appends one cell; rows fill left to right. */
static void table_cell(struct table *t, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL, **grown;

    if (t->oom)
        return;
    if (t->ncells == t->cap) {
        size_t cap = t->cap != 0 ? t->cap * 2 : 64;

        grown = realloc(t->cells, cap * sizeof(*grown));
        if (grown == NULL) {
            t->oom = true;
            return;
        }
        t->cells = grown;
        t->cap = cap;
    }
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    if (s == NULL) {
        t->oom = true;
        return;
    }
    /* Control characters from the cluster must not reach the terminal. */
    for (char *p = s; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    t->cells[t->ncells++] = s;
}

/* Width on a terminal, counting UTF-8 sequences as one column. */
static size_t text_width(const char *s)
{
    size_t w = 0;

    for (; *s != '\0'; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            w++;
    return w;
}

static int table_print(struct table *t)
{
    size_t width[TABLE_MAX_COLS] = {0};

    if (t->oom) {
        ctl_fail("out of memory");
        return CTL_EFAIL;
    }
    for (size_t i = 0; i < t->ncells; i++) {
        size_t w = text_width(t->cells[i]);

        if (w > width[i % t->ncols])
            width[i % t->ncols] = w;
    }
    for (size_t i = 0; i < t->ncells; i++) {
        size_t col = i % t->ncols;
        bool last = col + 1 == t->ncols || i + 1 == t->ncells;

        fputs(t->cells[i], stdout);
        if (last) {
            putchar('\n');
            continue;
        }
        for (size_t pad = text_width(t->cells[i]); pad < width[col] + 2; pad++)
            putchar(' ');
    }
    return CTL_OK;
}

/* A number cell, or "-" when the value is missing. */
static void num_cell(struct table *t, const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);

    if (json_is_integer(v))
        table_cell(t, "%lld", (long long)json_integer_value(v));
    else
        table_cell(t, "-");
}

static const char *str_or(const char *s, const char *dflt)
{
    return s != NULL ? s : dflt;
}

/* ---- status ------------------------------------------------------------- */

/* GET base/path with short timeouts; a JSON object or NULL (owned). */
static json_t *probe(struct ctl *c, const char *base, const char *path)
{
    struct ctl_resp r;
    char url[1024];
    json_t *out = NULL;

    snprintf(url, sizeof(url), "%s%s", base, path);
    if (ctl_request(c, "GET", url, NULL, CTL_PROBE_CONNECT_MS, CTL_PROBE_MS,
                    &r) != CTL_OK)
        return NULL;
    if (r.status == 200 && json_is_object(r.json))
        out = json_incref(r.json);
    ctl_resp_close(&r);
    return out;
}

static const json_t *member(const json_t *st, long long id)
{
    const json_t *nodes = json_object_get(st, "nodes");
    size_t i;
    json_t *node;

    json_array_foreach(nodes, i, node)
    {
        if (ctl_jint(node, "id", -1) == id)
            return node;
    }
    return NULL;
}

/*
 * Adds to each member of st: "state" (its own role as it reports it, or
 * "unreachable"), "applied_index", and from the leader's view
 * "match_index" and "lag". lst: the leader's status or NULL.
 */
static void enrich(struct ctl *c, json_t *st, const json_t *lst)
{
    json_t *nodes = json_object_get(st, "nodes"), *node;
    long long self = ctl_jint(st, "id", -1);
    long long last = ctl_jint(lst, "last_index", -1);
    size_t i;

    json_array_foreach(nodes, i, node)
    {
        long long id = ctl_jint(node, "id", -1);
        const char *http = ctl_jstr(node, "http");
        const json_t *lm = member(lst, id);
        long long match = ctl_jint(node, "match_index", -1);
        json_t *own = NULL;

        if (match < 0)
            match = ctl_jint(lm, "match_index", -1);
        if (id == self) {
            own = json_incref(st);
        } else if (lst != NULL && id == ctl_jint(lst, "id", -1)) {
            own = json_incref((json_t *)lst);
        } else if (http != NULL) {
            char base[512];

            ctl_base_of(c, http, base, sizeof(base));
            own = probe(c, base, "/cluster/status");
        }
        if (own != NULL) {
            json_object_set_new(
                node, "state",
                json_string(str_or(ctl_jstr(own, "role"), "unknown")));
            json_object_set(node, "applied_index",
                            json_object_get(own, "applied_index"));
        } else {
            json_object_set_new(node, "state",
                                http != NULL ? json_string("unreachable")
                                             : json_null());
            json_object_set_new(node, "applied_index", json_null());
        }
        json_decref(own);
        if (match >= 0) {
            json_object_set_new(node, "match_index", json_integer(match));
            if (last >= 0)
                json_object_set_new(
                    node, "lag", json_integer(last > match ? last - match : 0));
        }
    }
}

int ctl_cmd_status(struct ctl *c)
{
    struct ctl_resp r;
    json_t *st, *lst = NULL, *node;
    const json_t *leader;
    const char *role, *lhttp;
    struct table t;
    size_t i;
    int rv;

    if (ctl_get(c, c->server, "/admin/status", &r) != CTL_OK)
        return CTL_EFAIL;
    st = json_incref(r.json);
    ctl_resp_close(&r);
    role = ctl_jstr(st, "role");
    leader = json_object_get(st, "leader");
    lhttp = ctl_jstr(leader, "http");
    if (role != NULL && strcmp(role, "leader") == 0) {
        lst = json_incref(st);
    } else if (lhttp != NULL) {
        char base[512];

        ctl_base_of(c, lhttp, base, sizeof(base));
        lst = probe(c, base, "/admin/status");
    }
    enrich(c, st, lst);
    json_decref(lst);
    if (c->json) {
        rv = ctl_print_json(st);
        json_decref(st);
        return rv;
    }

    if (json_is_object(leader))
        printf("leader: node %lld (%s), term %lld\n", ctl_jint(leader, "id", 0),
               str_or(lhttp, "address unknown"), ctl_jint(st, "term", 0));
    else
        printf("leader: none, term %lld\n", ctl_jint(st, "term", 0));
    printf("node %lld (%s) answered: %s, commit %lld, applied %lld, "
           "last %lld, queued %lld\n\n",
           ctl_jint(st, "id", 0), c->server, str_or(role, "unknown"),
           ctl_jint(st, "commit_index", 0), ctl_jint(st, "applied_index", 0),
           ctl_jint(st, "last_index", 0), ctl_jint(st, "queued", 0));
    table_init(&t, 8);
    table_cell(&t, "ID");
    table_cell(&t, "ROLE");
    table_cell(&t, "STATE");
    table_cell(&t, "RAFT");
    table_cell(&t, "HTTP");
    table_cell(&t, "APPLIED");
    table_cell(&t, "MATCH");
    table_cell(&t, "LAG");
    json_array_foreach(json_object_get(st, "nodes"), i, node)
    {
        table_cell(&t, "%lld", ctl_jint(node, "id", 0));
        table_cell(&t, "%s", str_or(ctl_jstr(node, "role"), "-"));
        table_cell(&t, "%s", str_or(ctl_jstr(node, "state"), "-"));
        table_cell(&t, "%s", str_or(ctl_jstr(node, "raft"), "-"));
        table_cell(&t, "%s", str_or(ctl_jstr(node, "http"), "-"));
        num_cell(&t, node, "applied_index");
        num_cell(&t, node, "match_index");
        num_cell(&t, node, "lag");
    }
    rv = table_print(&t);
    table_close(&t);
    json_decref(st);
    return rv;
}

/* ---- rooms -------------------------------------------------------------- */

int ctl_cmd_rooms(struct ctl *c)
{
    struct ctl_resp r;
    struct table t;
    json_t *room;
    size_t i;
    int rv;

    if (ctl_get(c, c->server, "/admin/rooms", &r) != CTL_OK)
        return CTL_EFAIL;
    if (c->json) {
        rv = ctl_print_json(r.json);
        ctl_resp_close(&r);
        return rv;
    }
    table_init(&t, 5);
    table_cell(&t, "ROOM");
    table_cell(&t, "KEYS");
    table_cell(&t, "ENTRIES");
    table_cell(&t, "BYTES");
    table_cell(&t, "LAST_SEQ");
    json_array_foreach(json_object_get(r.json, "rooms"), i, room)
    {
        table_cell(&t, "%s", str_or(ctl_jstr(room, "id"), "?"));
        num_cell(&t, room, "keys");
        num_cell(&t, room, "entries");
        num_cell(&t, room, "bytes");
        num_cell(&t, room, "last_seq");
    }
    rv = table_print(&t);
    table_close(&t);
    ctl_resp_close(&r);
    return rv;
}

int ctl_cmd_room(struct ctl *c, const char *room)
{
    struct ctl_resp r;
    struct table t;
    json_t *key;
    char *esc, path[1024];
    size_t i;
    int rv;

    esc = curl_easy_escape(c->curl, room, 0);
    if (esc == NULL) {
        ctl_fail("out of memory");
        return CTL_EFAIL;
    }
    if (strlen(esc) > sizeof(path) - 32) {
        curl_free(esc);
        ctl_fail("room id too long");
        return CTL_EFAIL;
    }
    snprintf(path, sizeof(path), "/admin/rooms/%s", esc);
    curl_free(esc);
    if (ctl_get(c, c->server, path, &r) != CTL_OK)
        return CTL_EFAIL;
    if (c->json) {
        rv = ctl_print_json(r.json);
        ctl_resp_close(&r);
        return rv;
    }
    table_init(&t, 2);
    table_cell(&t, "room");
    table_cell(&t, "%s", str_or(ctl_jstr(r.json, "id"), room));
    table_cell(&t, "last seq");
    num_cell(&t, r.json, "last_seq");
    table_cell(&t, "entries");
    num_cell(&t, r.json, "entries");
    table_cell(&t, "bytes");
    num_cell(&t, r.json, "bytes");
    table_cell(&t, "subscribers");
    table_cell(&t, "%lld (connected to %s)", ctl_jint(r.json, "subscribers", 0),
               c->server);
    rv = table_print(&t);
    table_close(&t);
    if (rv != CTL_OK)
        goto out;
    putchar('\n');
    table_init(&t, 2);
    table_cell(&t, "KEY");
    table_cell(&t, "ENTRIES");
    json_array_foreach(json_object_get(r.json, "keys"), i, key)
    {
        /* A key that is not UTF-8 comes as null. */
        table_cell(&t, "%s", str_or(ctl_jstr(key, "key"), "(not UTF-8)"));
        num_cell(&t, key, "entries");
    }
    rv = table_print(&t);
    table_close(&t);
out:
    ctl_resp_close(&r);
    return rv;
}

/* driftctl config: the cluster settings; config set NAME VALUE changes one
 * through the log (any node takes it). */
int ctl_cmd_config(struct ctl *c, const char *name, const char *value)
{
    struct ctl_resp r;
    struct table t;
    json_t *s;
    size_t i;
    int rv;

    if (name != NULL) {
        char body[256], *end;
        unsigned long long v = strtoull(value, &end, 10);

        if (*value == '\0' || *end != '\0' || value[0] == '-') {
            ctl_fail("config set: bad value '%s': want an integer", value);
            return CTL_EUSAGE;
        }
        snprintf(body, sizeof(body), "{\"name\":\"%.100s\",\"value\":%llu}",
                 name, v);
        if (ctl_post_leader(c, c->server, "/admin/config", body, &r, NULL, 0) !=
            CTL_OK)
            return CTL_EFAIL;
        if (r.status != 200) {
            ctl_report(c, "config set", &r);
            ctl_resp_close(&r);
            return CTL_EFAIL;
        }
        rv = c->json ? ctl_print_json(r.json) : CTL_OK;
        if (!c->json)
            printf("%s = %llu\n", name, v);
        ctl_resp_close(&r);
        return rv;
    }
    if (ctl_get(c, c->server, "/admin/config", &r) != CTL_OK)
        return CTL_EFAIL;
    if (c->json) {
        rv = ctl_print_json(r.json);
        ctl_resp_close(&r);
        return rv;
    }
    table_init(&t, 3);
    table_cell(&t, "SETTING");
    table_cell(&t, "VALUE");
    table_cell(&t, "SOURCE");
    json_array_foreach(json_object_get(r.json, "settings"), i, s)
    {
        table_cell(&t, "%s", str_or(ctl_jstr(s, "name"), "?"));
        num_cell(&t, s, "value");
        table_cell(&t, "%s",
                   json_is_true(json_object_get(s, "set")) ? "cluster"
                                                           : "default");
    }
    rv = table_print(&t);
    table_close(&t);
    ctl_resp_close(&r);
    return rv;
}

/* driftctl log-level [LEVEL]: the asked node's log level and format, or set
 * its level. Logging is per node (not replicated): the answer is about the
 * node at --server only. The node checks the level (400 with the reason). */
int ctl_cmd_log_level(struct ctl *c, const char *level)
{
    struct ctl_resp r;
    int rv = CTL_OK;

    if (level == NULL) {
        if (ctl_get(c, c->server, "/admin/log", &r) != CTL_OK)
            return CTL_EFAIL;
    } else {
        char url[1024], *body;
        json_t *o = json_pack("{s:s}", "level", level);

        body = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (body == NULL) {
            ctl_fail("log-level: bad level (not UTF-8?) or out of memory");
            return CTL_EFAIL;
        }
        snprintf(url, sizeof(url), "%s/admin/log", c->server);
        rv = ctl_request(c, "POST", url, body, CTL_CONNECT_MS, CTL_READ_MS, &r);
        free(body);
        if (rv != CTL_OK) {
            ctl_fail("%s", c->errmsg);
            return CTL_EFAIL;
        }
        if (r.status != 200 || !json_is_object(r.json)) {
            ctl_report(c, "log-level", &r);
            ctl_resp_close(&r);
            return CTL_EFAIL;
        }
    }
    if (c->json)
        rv = ctl_print_json(r.json);
    else
        printf("%s (format %s)\n", str_or(ctl_jstr(r.json, "level"), "?"),
               str_or(ctl_jstr(r.json, "format"), "?"));
    ctl_resp_close(&r);
    return rv;
}
