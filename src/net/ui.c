/*
 * ui.c - the dashboard at /ui (docs/operations.md, "Dashboard"): the files
 * of src/net/ui/, embedded into the binary at build time by
 * cmake/ui_embed.cmake, answered with their Content-Type, a strict
 * Content-Security-Policy and cache validators; and the CORS rule of the
 * admin API, which the dashboard calls across nodes.
 *
 * Design in a few lines:
 * - GET /ui and /ui/ answer index.html, /ui/NAME an embedded file, any
 *   other path under /ui 404. Nothing is read from disk at run time.
 * - Every answer says "Cache-Control: no-cache" with an ETag (a hash of
 *   the file, fixed at build time): a browser revalidates and gets a 304
 *   without a body while the binary is the same, and never runs a stale
 *   script after an upgrade.
 * - Bounded: a request costs one copy of one embedded file (sizes fixed at
 *   build time, tens of KiB) and a header block built on the stack.
 * - CSP: scripts, styles and images from this node only (no inline script
 *   or style, no eval); connections to this node and to the HTTP and
 *   WebSocket origins of the cluster's members, taken from the replicated
 *   node directory when the page is answered.
 *
 * Where the data of other nodes comes from: the browser asks each node
 * itself (GET /cluster/status and /metrics once a second, through the HTTP
 * addresses of the node directory), and sends membership changes to the
 * leader. Why not this node as a proxy: whether a node is up is only known
 * by asking it, so a proxy would learn it no sooner than the browser does;
 * it would need an HTTP client to every peer on the node's loop, and it
 * would carry the operator's admin token between nodes. Both open
 * endpoints already allow any origin (they are open, and hold no room ids
 * or payloads); the admin API allows only the cluster's own origins
 * (net__ui_admin_origin), and still needs the bearer token. The cost: one
 * status and one metrics answer per node per second for each open
 * dashboard, like a Prometheus scrape. The limit: the browser must reach
 * the advertised addresses; a node it cannot reach is shown as down.
 *
 * Not here: the dashboard itself (the scripts in src/net/ui); any state: the
 * page keeps its history of rates in the browser.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

#define CT_TEXT "text/plain; charset=utf-8"

/* Room for the CSP: its fixed part plus two origins per member. */
#define UI_CSP_MAX (512 + CONS_MAX_NODES * 2 * 80)

static const char csp_head[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'; connect-src 'self'";

static const struct net_ui_asset *find_asset(const char *path, size_t n)
{
    static const char index[] = "/ui/index.html";

    if ((n == 3 && memcmp(path, "/ui", 3) == 0) ||
        (n == 4 && memcmp(path, "/ui/", 4) == 0)) {
        path = index;
        n = sizeof(index) - 1;
    }
    for (size_t i = 0; i < net__ui_n_assets; i++) {
        const struct net_ui_asset *a = &net__ui_assets[i];

        if (strlen(a->path) == n && memcmp(a->path, path, n) == 0)
            return a;
    }
    return NULL;
}

void net__ui_serve(struct net_conn *c)
{
    struct net_http *h = &c->http;
    const struct net_ui_asset *a;
    char inm[64];
    int n;

    if (h->method != LWSHUMETH_GET) {
        net__http_respond(c, 405, CT_TEXT, "method not allowed", 18);
        return;
    }
    a = find_asset(h->path, strcspn(h->path, "?"));
    if (a == NULL) {
        net__http_respond(c, 404, CT_TEXT, "not found", 9);
        return;
    }
    h->ui_asset = a;
    n = lws_hdr_copy(c->wsi, inm, sizeof(inm), WSI_TOKEN_HTTP_IF_NONE_MATCH);
    if (n > 0 && strcmp(inm, a->etag) == 0) {
        net__http_respond(c, 304, NULL, NULL, 0);
        return;
    }
    net__http_respond(c, 200, a->ctype, a->data, a->len);
}

/* ---- headers ------------------------------------------------------------ */

static int add(struct lws *wsi, const char *name, const char *value,
               unsigned char **p, unsigned char *end)
{
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                       (const unsigned char *)value,
                                       (int)strlen(value), p, end);
}

/* An address fit to stand in a header: HOST:PORT or [V6]:PORT characters
 * only. Directory entries come through the log from nodes holding the
 * cluster key; still, nothing else reaches a header (no ';' to end a CSP
 * directive, no CR/LF). */
static bool addr_ok(const char *a)
{
    if (*a == '\0')
        return false;
    for (; *a != '\0'; a++)
        if (!((*a >= 'a' && *a <= 'z') || (*a >= 'A' && *a <= 'Z') ||
              (*a >= '0' && *a <= '9') || strchr(".:-[]", *a) != NULL))
            return false;
    return true;
}

struct csp_ctx {
    char *o, *end;
    bool tls;
};

static void csp_member(void *arg, const struct cons_member *m)
{
    struct csp_ctx *k = arg;
    int n;

    if (m->http_addr == NULL || !addr_ok(m->http_addr) || k->o >= k->end)
        return;
    n = snprintf(k->o, (size_t)(k->end - k->o), " %s://%s %s://%s",
                 k->tls ? "https" : "http", m->http_addr, k->tls ? "wss" : "ws",
                 m->http_addr);
    /* A member that does not fit is left out: the page shows it down. */
    if (n > 0 && n < k->end - k->o)
        k->o += n;
    else
        *k->o = '\0';
}

int net__ui_headers(struct net_conn *c, unsigned char **p, unsigned char *end)
{
    struct net_server *s = c->srv;
    const struct net_ui_asset *a = c->http.ui_asset;
    char csp[UI_CSP_MAX];
    struct csp_ctx k = {
        .o = csp, .end = csp + sizeof(csp) - 1, .tls = s->cfg.tls_cert != NULL};

    memcpy(csp, csp_head, sizeof(csp_head));
    k.o += sizeof(csp_head) - 1;
    cons_node_members(s->cons, csp_member, &k);
    if (add(c->wsi, "content-security-policy:", csp, p, end) ||
        add(c->wsi, "x-content-type-options:", "nosniff", p, end) ||
        add(c->wsi, "referrer-policy:", "no-referrer", p, end) ||
        add(c->wsi, "x-frame-options:", "DENY", p, end) ||
        add(c->wsi, "cache-control:", "no-cache", p, end))
        return -1;
    if (a != NULL && add(c->wsi, "etag:", a->etag, p, end))
        return -1;
    return 0;
}

/* ---- CORS of the admin API ----------------------------------------------- */

struct origin_ctx {
    const char *origin; /* after "http://" or "https://" */
    uint32_t id;
};

static void origin_member(void *arg, const struct cons_member *m)
{
    struct origin_ctx *k = arg;

    if (k->id == 0 && m->http_addr != NULL &&
        strcasecmp(m->http_addr, k->origin) == 0)
        k->id = m->id;
}

uint32_t net__ui_admin_origin(struct net_server *s, struct lws *wsi)
{
    const char *scheme = s->cfg.tls_cert != NULL ? "https://" : "http://";
    char origin[128];
    struct origin_ctx k = {.origin = origin, .id = 0};
    size_t sl = strlen(scheme);

    if (lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) <= 0 ||
        strncasecmp(origin, scheme, sl) != 0)
        return 0;
    k.origin = origin + sl;
    cons_node_members(s->cons, origin_member, &k);
    return k.id;
}

int net__ui_admin_cors(struct net_conn *c, unsigned char **p,
                       unsigned char *end)
{
    struct net_server *s = c->srv;
    const char *addr;
    char origin[128];

    if (add(c->wsi, "vary:", "Origin", p, end))
        return -1;
    if (c->http.cors_node == 0)
        return 0;
    addr = cons_node_http_addr(s->cons, c->http.cors_node);
    if (addr == NULL || !addr_ok(addr))
        return 0;
    snprintf(origin, sizeof(origin), "%s://%s",
             s->cfg.tls_cert != NULL ? "https" : "http", addr);
    return add(c->wsi, "access-control-allow-origin:", origin, p, end);
}
