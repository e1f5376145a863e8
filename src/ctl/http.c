/*
 * http.c - driftctl's HTTP client: one libcurl easy handle reused for every
 * request (keep-alive to the same node), bodies collected in memory up to
 * CTL_MAX_BODY, and the one piece of cluster logic every change needs:
 * follow a 421 "not_leader" answer to the leader the node names.
 *
 * It does not retry a change on its own: a change that timed out may still
 * complete, so the user decides (the message says so).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "ctl.h"

/* How many 421 answers a change follows before giving up. */
#define MAX_HOPS 5
/* How long a change waits for a node to learn who the leader is. */
#define LEADER_WAIT_MS 5000
#define POLL_MS 100

struct body_buf {
    char *data;
    size_t len, cap;
    bool too_big;
};

int64_t ctl_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ctl_sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int ctl_init(struct ctl *c, const char *server, const char *token, bool json)
{
    struct curl_slist *h = NULL, *next;
    char auth[1024];
    const char *sep;
    size_t len;

    memset(c, 0, sizeof(*c));
    c->token = token;
    c->json = json;
    /* "127.0.0.1:8080" means http://127.0.0.1:8080. */
    sep = strstr(server, "://");
    if (sep == NULL) {
        len = strlen(server) + sizeof("http://");
        c->server = malloc(len);
        if (c->server != NULL)
            snprintf(c->server, len, "http://%s", server);
        snprintf(c->scheme, sizeof(c->scheme), "http");
    } else {
        if ((size_t)(sep - server) >= sizeof(c->scheme) || sep == server) {
            ctl_fail("bad server URL: %s", server);
            return CTL_EUSAGE;
        }
        c->server = strdup(server);
        snprintf(c->scheme, sizeof(c->scheme), "%.*s", (int)(sep - server),
                 server);
    }
    if (c->server == NULL)
        goto err_oom;
    len = strlen(c->server);
    while (len > 0 && c->server[len - 1] == '/')
        c->server[--len] = '\0';
    if (strcmp(c->scheme, "http") != 0 && strcmp(c->scheme, "https") != 0) {
        ctl_fail("bad server URL %s: only http:// and https://", server);
        return CTL_EUSAGE;
    }

    c->curl = curl_easy_init();
    if (c->curl == NULL) {
        ctl_fail("cannot initialise libcurl");
        return CTL_EFAIL;
    }
    next = curl_slist_append(h, "Accept: application/json");
    if (next == NULL)
        goto err_oom;
    h = next;
    c->headers = h;
    next = curl_slist_append(h, "Content-Type: application/json");
    if (next == NULL)
        goto err_oom;
    if (token != NULL) {
        if (strchr(token, '\r') != NULL || strchr(token, '\n') != NULL ||
            strlen(token) > sizeof(auth) - 32) {
            ctl_fail("bad admin token: too long or has line breaks");
            return CTL_EUSAGE;
        }
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        next = curl_slist_append(h, auth);
        if (next == NULL)
            goto err_oom;
    }
    return CTL_OK;
err_oom:
    ctl_fail("out of memory");
    return CTL_EFAIL;
}

void ctl_close(struct ctl *c)
{
    if (c->curl != NULL)
        curl_easy_cleanup(c->curl);
    curl_slist_free_all(c->headers);
    free(c->server);
    c->curl = NULL;
    c->headers = NULL;
    c->server = NULL;
}

void ctl_resp_close(struct ctl_resp *r)
{
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct body_buf *b = arg;
    size_t n = size * nmemb;
    char *grown;
    size_t cap;

    if (n > CTL_MAX_BODY - b->len) {
        b->too_big = true;
        return 0; /* makes curl fail the transfer */
    }
    if (b->len + n + 1 > b->cap) {
        cap = b->cap != 0 ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        grown = realloc(b->data, cap);
        if (grown == NULL)
            return 0;
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* "scheme://host:port" of a URL, for messages. */
static void origin_of(const char *url, char *buf, size_t size)
{
    const char *p = strstr(url, "://");
    size_t n = strlen(url);

    if (p != NULL) {
        p = strchr(p + 3, '/');
        if (p != NULL)
            n = (size_t)(p - url);
    }
    snprintf(buf, size, "%.*s", (int)n, url);
}

int ctl_request(struct ctl *c, const char *method, const char *url,
                const char *body, long connect_ms, long total_ms,
                struct ctl_resp *out)
{
    CURL *h = c->curl;
    struct body_buf b = {0};
    char errbuf[CURL_ERROR_SIZE] = "", origin[256];
    json_error_t jerr;
    CURLcode rc;
    bool post = strcmp(method, "POST") == 0;

    memset(out, 0, sizeof(*out));
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, total_ms);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, (struct curl_slist *)c->headers);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    /* The token must not travel to another host behind a redirect. */
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    if (c->cacert != NULL)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->cacert);
    if (post) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body != NULL ? body : "{}");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE,
                         (long)strlen(body != NULL ? body : "{}"));
    } else {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    }
    rc = curl_easy_perform(h);
    origin_of(url, origin, sizeof(origin));
    if (rc != CURLE_OK) {
        free(b.data);
        if (b.too_big)
            snprintf(c->errmsg, sizeof(c->errmsg),
                     "%s: answer larger than %u bytes", origin, CTL_MAX_BODY);
        else if (rc == CURLE_OPERATION_TIMEDOUT)
            snprintf(c->errmsg, sizeof(c->errmsg),
                     "no answer from %s within %ld s", origin,
                     (total_ms + 999) / 1000);
        else
            snprintf(c->errmsg, sizeof(c->errmsg), "cannot reach %s: %s",
                     origin,
                     errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc));
        return CTL_EFAIL;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
    if (b.data == NULL) {
        b.data = strdup("");
        if (b.data == NULL) {
            snprintf(c->errmsg, sizeof(c->errmsg), "out of memory");
            return CTL_EFAIL;
        }
    }
    out->body = b.data;
    out->len = b.len;
    out->json = json_loadb(b.data, b.len, 0, &jerr);
    return CTL_OK;
}

void ctl_base_of(const struct ctl *c, const char *addr, char *buf, size_t size)
{
    snprintf(buf, size, "%s://%s", c->scheme, addr);
}

void ctl_report(const struct ctl *c, const char *what, const struct ctl_resp *r)
{
    const char *err = ctl_jstr(r->json, "error");
    const char *code = ctl_jstr(r->json, "code");

    if (r->status == 401) {
        if (c->token == NULL)
            ctl_fail("unauthorized: the server wants an admin token "
                     "(--token or DRIFTCTL_TOKEN)");
        else
            ctl_fail("unauthorized: the server refused the admin token");
        return;
    }
    if (err == NULL) {
        /* Not driftd's admin API (or a proxy in between). */
        ctl_fail("%s: HTTP %ld%s%.*s", what, r->status, r->len > 0 ? ": " : "",
                 (int)(r->len < 200 ? r->len : 200),
                 r->body != NULL ? r->body : "");
        return;
    }
    if (code != NULL && strcmp(code, "quorum") == 0 &&
        strstr(err, "--force") == NULL)
        ctl_fail("%s (use --force to override)", err);
    else
        ctl_fail("%s", err);
}

int ctl_get(struct ctl *c, const char *base, const char *path,
            struct ctl_resp *out)
{
    char url[2048], what[2100];

    snprintf(url, sizeof(url), "%s%s", base, path);
    if (ctl_request(c, "GET", url, NULL, CTL_CONNECT_MS, CTL_READ_MS, out) !=
        CTL_OK) {
        ctl_fail("%s", c->errmsg);
        return CTL_EFAIL;
    }
    snprintf(what, sizeof(what), "GET %s", url);
    if (out->status != 200) {
        ctl_report(c, what, out);
        goto err_close;
    }
    if (!json_is_object(out->json)) {
        ctl_fail("%s: the answer is not a JSON object", what);
        goto err_close;
    }
    return CTL_OK;
err_close:
    ctl_resp_close(out);
    return CTL_EFAIL;
}

int ctl_leader_of(struct ctl *c, const char *base, uint32_t *self, uint32_t *id,
                  char *leader_base, size_t size)
{
    struct ctl_resp r;
    char url[1024];
    const json_t *leader;
    const char *http;

    *self = 0;
    *id = 0;
    leader_base[0] = '\0';
    snprintf(url, sizeof(url), "%s/admin/status", base);
    if (ctl_request(c, "GET", url, NULL, CTL_PROBE_CONNECT_MS, CTL_PROBE_MS,
                    &r) != CTL_OK)
        return CTL_EFAIL;
    if (r.status != 200 || !json_is_object(r.json)) {
        ctl_resp_close(&r);
        return CTL_EFAIL;
    }
    *self = (uint32_t)ctl_jint(r.json, "id", 0);
    leader = json_object_get(r.json, "leader");
    *id = (uint32_t)ctl_jint(leader, "id", 0);
    http = ctl_jstr(leader, "http");
    if (*id != 0 && http != NULL)
        ctl_base_of(c, http, leader_base, size);
    ctl_resp_close(&r);
    return CTL_OK;
}

/* Polls base until it names a leader with an HTTP address. */
static int wait_leader(struct ctl *c, const char *base, char *next, size_t size)
{
    int64_t deadline = ctl_now_ms() + LEADER_WAIT_MS;
    uint32_t self, id;

    for (;;) {
        if (ctl_leader_of(c, base, &self, &id, next, size) == CTL_OK &&
            next[0] != '\0')
            return CTL_OK;
        if (ctl_now_ms() >= deadline)
            return CTL_EFAIL;
        ctl_sleep_ms(POLL_MS);
    }
}

int ctl_post_leader(struct ctl *c, const char *base, const char *path,
                    const char *body, struct ctl_resp *out, char *answered_by,
                    size_t size)
{
    char cur[512], next[512], url[1024];
    const json_t *leader;
    const char *http;

    snprintf(cur, sizeof(cur), "%s", base);
    for (int hops = 0;; hops++) {
        snprintf(url, sizeof(url), "%s%s", cur, path);
        if (ctl_request(c, "POST", url, body, CTL_CONNECT_MS, CTL_CHANGE_MS,
                        out) != CTL_OK) {
            if (strncmp(c->errmsg, "no answer", 9) == 0)
                ctl_fail("%s; the change may still complete (see "
                         "'driftctl status')",
                         c->errmsg);
            else
                ctl_fail("%s", c->errmsg);
            return CTL_EFAIL;
        }
        if (out->status != 421)
            break;
        if (hops + 1 >= MAX_HOPS) {
            ctl_resp_close(out);
            ctl_fail("no leader found: %d nodes in a row said they are not "
                     "the leader",
                     MAX_HOPS);
            return CTL_EFAIL;
        }
        leader = json_object_get(out->json, "leader");
        http = ctl_jstr(leader, "http");
        if (http != NULL) {
            ctl_base_of(c, http, next, sizeof(next));
            /* A stale answer pointing back here: give it a moment. */
            if (strcmp(next, cur) == 0)
                ctl_sleep_ms(POLL_MS);
        } else if (wait_leader(c, cur, next, sizeof(next)) != CTL_OK) {
            ctl_resp_close(out);
            ctl_fail("the cluster has no leader (%s knows none after %d s); "
                     "it may have lost quorum",
                     cur, LEADER_WAIT_MS / 1000);
            return CTL_EFAIL;
        }
        ctl_resp_close(out);
        snprintf(cur, sizeof(cur), "%s", next);
    }
    if (answered_by != NULL)
        snprintf(answered_by, size, "%s", cur);
    return CTL_OK;
}
