/*
 * ctl.h - driftctl internals shared by its files: the HTTP client over
 * libcurl, the calls that follow a change to the leader, and the commands.
 *
 * driftctl knows only driftd's HTTP API (docs/admin-api.md): no driftd
 * header, no raft. It is a short-lived, single-threaded program, so it
 * blocks on the network and sleeps between polls; every wait has a
 * deadline.
 *
 * Errors: functions return CTL_OK (0) or CTL_EFAIL (1, refused or failed:
 * the one-line reason is already on stderr as "driftctl: ...") or
 * CTL_EUSAGE (2); these are the process exit codes.
 */
#ifndef DRIFTD_CTL_H
#define DRIFTD_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

enum {
    CTL_OK = 0,
    CTL_EFAIL = 1,
    CTL_EUSAGE = 2,
};

/* Timeouts (ms). Changes may wait for a new voter to catch up. */
#define CTL_CONNECT_MS 2000
#define CTL_READ_MS 10000
#define CTL_CHANGE_MS 30000
/* Probing other nodes (status columns, client-side quorum check). */
#define CTL_PROBE_CONNECT_MS 1000
#define CTL_PROBE_MS 2000

/* Largest response body we accept; a bigger one is an error. */
#define CTL_MAX_BODY (64u * 1024u * 1024u)

struct ctl_resp {
    long status; /* HTTP status */
    char *body;  /* NUL-terminated, owned */
    size_t len;
    json_t *json; /* the body parsed, or NULL if it is not JSON; owned */
};

struct ctl {
    char *server;      /* base URL, no trailing slash; owned */
    char scheme[16];   /* "http" or "https", for addresses from the cluster */
    const char *token; /* borrowed from argv / environment, or NULL */
    const char *cacert; /* --cacert: PEM bundle for https://; NULL: system */
    bool json;         /* --json */
    void *curl;        /* CURL *, reused for keep-alive */
    void *headers;     /* struct curl_slist * */
    char errmsg[1024]; /* detail of the last transport failure */
};

/* ---- http.c ------------------------------------------------------------- */

/* Reads nothing from the network. server is copied. Returns CTL_OK or
 * CTL_EFAIL (message printed). ctl_close() is safe after any return. */
int ctl_init(struct ctl *c, const char *server, const char *token, bool json);
void ctl_close(struct ctl *c);

/* One request. method "GET" or "POST"; body (JSON text) only for POST, may
 * be NULL. On CTL_OK *out holds the answer, whatever its status; release it
 * with ctl_resp_close(). On a transport failure (no answer) returns
 * CTL_EFAIL with the reason in c->errmsg and prints nothing. */
int ctl_request(struct ctl *c, const char *method, const char *url,
                const char *body, long connect_ms, long total_ms,
                struct ctl_resp *out);
void ctl_resp_close(struct ctl_resp *r);

/* "SCHEME://addr" for an HTTP address (HOST:PORT) the cluster reported. */
void ctl_base_of(const struct ctl *c, const char *addr, char *buf, size_t size);

/* GET base + path (an admin read). On CTL_OK *out is a 200 answer with a
 * JSON object body. Otherwise prints the reason and returns CTL_EFAIL. */
int ctl_get(struct ctl *c, const char *base, const char *path,
            struct ctl_resp *out);

/* Prints the reason of a failed answer (status not 2xx) as one line on
 * stderr: the server's "error" text, with a hint for some codes. */
void ctl_report(const struct ctl *c, const char *what,
                const struct ctl_resp *r);

/* POSTs body to path, first at base, then at whichever node a 421
 * "not_leader" answer names (a few hops; when the leader is unknown, polls
 * for it for a few seconds). On CTL_OK *out is the final answer, any status
 * but 421, and answered_by (if not NULL, size bytes) the base that gave
 * it. On a transport failure or no leader prints the reason and returns
 * CTL_EFAIL. */
int ctl_post_leader(struct ctl *c, const char *base, const char *path,
                    const char *body, struct ctl_resp *out, char *answered_by,
                    size_t size);

/* Who base is and whom it takes for the leader (GET /admin/status, short
 * timeouts): CTL_OK with *self, *leader (0 when unknown) and, if known, the
 * leader's base URL in leader_base (empty when its HTTP address is not
 * known yet). Prints nothing on failure: CTL_EFAIL. */
int ctl_leader_of(struct ctl *c, const char *base, uint32_t *self,
                  uint32_t *leader, char *leader_base, size_t size);

/* Sleeps ms milliseconds; a monotonic clock in ms. */
void ctl_sleep_ms(long ms);
int64_t ctl_now_ms(void);

/* ---- json helpers (driftctl.c) ------------------------------------------- */

/* obj[key] as an integer, or dflt when missing or not an integer. */
long long ctl_jint(const json_t *obj, const char *key, long long dflt);
/* obj[key] as a string (borrowed), or NULL. */
const char *ctl_jstr(const json_t *obj, const char *key);
/* Prints root as one line of JSON on stdout. */
int ctl_print_json(const json_t *root);
/* Prints "driftctl: ..." and a newline on stderr. */
void ctl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- commands ----------------------------------------------------------- */

/* show.c */
int ctl_cmd_status(struct ctl *c);
int ctl_cmd_rooms(struct ctl *c);
int ctl_cmd_room(struct ctl *c, const char *room);
/* name NULL: show the settings; else set name to value (decimal). */
int ctl_cmd_config(struct ctl *c, const char *name, const char *value);
/* level NULL: show the node's log level and format; else set its level. */
int ctl_cmd_log_level(struct ctl *c, const char *level);

/* members.c */
int ctl_cmd_add(struct ctl *c, uint32_t id, const char *raft, bool standby);
int ctl_cmd_role(struct ctl *c, uint32_t id, bool voter, bool force);
int ctl_cmd_remove(struct ctl *c, uint32_t id, bool force);
int ctl_cmd_transfer(struct ctl *c, uint32_t id);

#endif
