/*
 * bench.h - driftd-bench, the load generator and checker for driftd (and
 * any DriftDB-protocol server): shared types of its parts.
 *
 * Design: one process, one thread, one libuv loop; one lws context on that
 * loop (a foreign loop) holds every WebSocket client connection. A scenario
 * (ingest, fanout, rooms, connections) is a set of rooms, each with
 * publishers and subscribers; the same engine (run.c) drives all four and
 * checks that every subscriber received every acknowledged push of its
 * room exactly once and in seq order. Rooms are created and node memory is
 * read with small blocking helpers (sys.c) before the loop runs.
 *
 * Parts: main.c (command line, scenario set-up, exit code), run.c (the
 * engine), wire.c (frame encoding and a scanning decoder for JSON and
 * msgpack), hist.c (latency histograms), sys.c (HTTP, /proc, rlimits),
 * report.c (the table, --json, and the `report` aggregation command).
 *
 * TLS: https:// (or wss://) node URLs mean wss for the WebSockets (lws
 * with OpenSSL) and TLS for the HTTP helpers (OpenSSL in sys.c), both
 * verifying the node against --cacert. Plain URLs take the plain path,
 * with nothing of TLS on it.
 *
 * Deliberately not here: client certificates, CBOR, HTTP /send pushes, replay
 * (`get` with a seq from the past) and reconnects after the set-up phase: a
 * connection lost while measuring is a failure of the run, not something to
 * hide.
 */
#ifndef DRIFTD_BENCH_H
#define DRIFTD_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define BENCH_MAX_URLS 16
#define BENCH_ROOM_ID_MAX 64
#define BENCH_MAX_WORKERS 64

/* ---- histograms (hist.c) ------------------------------------------------- */

/*
 * Log-linear buckets over nanoseconds (HdrHistogram's layout with 6 bits of
 * sub-bucket precision): values below 128 ns have their own bucket, above
 * that every power of two is split into 64 buckets, so a reported
 * percentile is within 1.6% of the true value. No allocation per sample.
 */
#define BENCH_HIST_BUCKETS (128 + 57 * 64)

struct bench_hist {
    uint64_t count;
    uint64_t min;
    uint64_t max;
    double sum;
    uint64_t buckets[BENCH_HIST_BUCKETS];
};

void bench_hist_reset(struct bench_hist *h);
void bench_hist_add(struct bench_hist *h, uint64_t ns);
/* Adds h's samples to into (the histograms of several workers). */
void bench_hist_merge(struct bench_hist *into, const struct bench_hist *h);
/* The value at quantile q (0..1), in ns: the highest value of the bucket
 * that holds it, capped at the maximum. 0 when empty. */
uint64_t bench_hist_quantile(const struct bench_hist *h, double q);
double bench_hist_mean(const struct bench_hist *h);

/* ---- options (main.c) ---------------------------------------------------- */

enum bench_scenario {
    BENCH_INGEST,
    BENCH_FANOUT,
    BENCH_ROOMS,
    BENCH_CONNECTIONS,
};

struct bench_url {
    char host[64];
    int port;
    char hostport[80];  /* "host:port", the Host header */
    bool tls;           /* https:// or wss:// */
    int pid;            /* the node's pid for RSS/CPU, 0 when unknown */
    bool pid_from_port; /* found through /proc by its listening port */
};

struct bench_opts {
    enum bench_scenario scenario;
    const char *scenario_name;
    struct bench_url urls[BENCH_MAX_URLS];
    size_t n_urls;
    bool msgpack;
    bool json_out;
    bool quiet;
    bool verbose;
    bool allow_errors;
    bool tls;           /* some URL is https:// */
    const char *cacert; /* CA bundle for TLS nodes; NULL: the system's */
    const char *label;

    double duration_s;
    double warmup_s;
    double drain_s;
    double connect_timeout_s;
    double progress_s;

    unsigned rooms;
    unsigned publishers;  /* total */
    unsigned subscribers; /* total, not counting publishers */
    unsigned window;      /* unacknowledged pushes per publisher */
    double rate;          /* pushes/s over all publishers; 0: closed */
    size_t value_size;
    bool relay;           /* action relay instead of append */
    bool distinct_keys;   /* each publisher its own key */
    uint64_t max_per_pub; /* pushes per publisher, 0: unbounded */
    bool coalesce;        /* publishers write many frames at once */
    unsigned connect_concurrency;
    double settle_s;  /* connections: wait before reading RSS */
    unsigned workers; /* processes sharing the connections (1: this one) */
    bool lws_rx;      /* WebSocket frames parsed by lws, not by run.c */
};

/* ---- the engine (run.c) -------------------------------------------------- */

/* Counters that only grow; rates are differences of two snapshots. */
struct bench_counts {
    uint64_t sent;       /* pushes written */
    uint64_t acked;      /* own pushes seen broadcast back */
    uint64_t errors;     /* `error` answers */
    uint64_t deliveries; /* pushes of others received */
    uint64_t frames_in;  /* every frame received */
    uint64_t bytes_in;   /* payload bytes received */
    uint64_t stream_sizes;
};

struct bench_cpu {
    double user_s;
    double sys_s;
};

struct bench_node_stats {
    int pid;
    long rss_before_kib; /* -1: unknown */
    long rss_after_kib;
    unsigned conns; /* our connections to this node */
    double cpu_s;   /* node CPU seconds in the measured window */
};

struct bench_result {
    const struct bench_opts *o;
    double measured_s;          /* length of the measured window */
    struct bench_counts window; /* counts inside the measured window */
    struct bench_counts total;  /* counts over the whole run */
    struct bench_hist ack;      /* push -> own broadcast (measured window) */
    struct bench_hist deliver;  /* push -> other subscriber (window) */
    struct bench_hist connect;  /* connect start -> subscribed */

    unsigned conns_target;
    unsigned conns_ready;
    double connect_s; /* first connect -> all subscribed */
    unsigned rooms;

    double bench_cpu_s; /* the tool (with workers: the parent and all
                           of them), in the measured window */
    double worker_cpu_s[BENCH_MAX_WORKERS]; /* each worker's share */
    double machine_busy_pct; /* all CPUs, /proc/stat; -1 unknown */
    unsigned n_cpus;
    struct bench_node_stats nodes[BENCH_MAX_URLS];
    size_t n_nodes;

    /* The check: any non-zero field fails the run. */
    uint64_t lost;              /* acknowledged but not received */
    uint64_t reordered;         /* seq or counter went backwards */
    uint64_t duplicated;        /* same counter twice */
    uint64_t unacked;           /* sent, neither acked nor refused */
    uint64_t unexpected_closes; /* closed by the server while running */
    uint64_t slow_consumer;     /* of which close code 1008 */
    uint64_t connect_failures;  /* could not connect or subscribe */
    uint64_t bad_frames;        /* undecodable or not ours */
    uint64_t behind;            /* rate mode: pushes not sent in time */
    bool drained;     /* everything arrived before the drain timeout */
    bool interrupted; /* SIGINT/SIGTERM */
    char first_failure[256];
};

/* Creates the rooms (blocking HTTP), runs the scenario to its end and fills
 * *res. Returns 0 when the run took place (the check may still have
 * failed: see bench_result_failed), non-zero with a message on stderr when
 * it could not be set up. */
int bench_run(const struct bench_opts *o, struct bench_result *res);
bool bench_result_failed(const struct bench_result *r, bool allow_errors);

/* ---- wire format (wire.c) ------------------------------------------------ */

enum bench_msg_type {
    BENCH_MSG_OTHER,
    BENCH_MSG_PUSH,
    BENCH_MSG_INIT,
    BENCH_MSG_STREAM_SIZE,
    BENCH_MSG_ERROR,
    BENCH_MSG_PONG,
};

/* A decoded server message; the pointers borrow the frame. */
struct bench_msg {
    enum bench_msg_type type;
    const char *key;
    size_t key_len;
    const char *value; /* the contents of a string value, else NULL */
    size_t value_len;
    uint64_t seq;
    bool has_seq;
    const char *text; /* error message */
    size_t text_len;
};

/* Decodes one frame. Returns 0, or -1 when it is not a well-formed map. */
int bench_wire_decode_json(const uint8_t *p, size_t n, struct bench_msg *m);
int bench_wire_decode_msgpack(const uint8_t *p, size_t n, struct bench_msg *m);

/* What a push value carries: publisher id, its counter, the send time. */
struct bench_stamp {
    uint32_t pub;
    uint64_t ctr;
    uint64_t t_ns;
};

/* The value of a push: "PUB.CTR.TIME." padded with 'x' to size bytes (or
 * longer when the stamp itself is). Returns its length (<= cap). */
size_t bench_wire_value(char *out, size_t cap, const struct bench_stamp *s,
                        size_t size);
bool bench_wire_parse_value(const char *v, size_t n, struct bench_stamp *s);

/* Encodes a client message into out (cap bytes); returns its length or 0
 * when it does not fit. */
size_t bench_wire_push(uint8_t *out, size_t cap, bool msgpack, const char *key,
                       const char *value, size_t value_len, bool relay);
size_t bench_wire_get(uint8_t *out, size_t cap, bool msgpack, const char *key);

/* ---- system helpers (sys.c) ---------------------------------------------- */

/* "http://h:p", "ws://h:p", "h:p", "https://h:p", "wss://h:p" (path
 * ignored; the last two set u->tls). Returns 0 or -1. */
int bench_url_parse(const char *s, struct bench_url *u);

/* TLS for the HTTP helpers on https:// URLs: certificates must chain to
 * cafile (copied by OpenSSL; NULL: the system's CAs). Call once before
 * the first https request; bench_tls_close() releases it. Returns 0 or -1
 * (message in err). */
int bench_tls_init(const char *cafile, char *err, size_t errlen);
void bench_tls_close(void);

/* Creates n rooms with POST /new on u, up to `parallel` requests at once.
 * ids: n * BENCH_ROOM_ID_MAX bytes. Returns 0 or -1 (message in err). */
int bench_http_new_rooms(const struct bench_url *u, unsigned n,
                         unsigned parallel, char *ids, double timeout_s,
                         char *err, size_t errlen);
/* GET path on u: the HTTP status, or -1 when there was no answer. */
int bench_http_status(const struct bench_url *u, const char *path,
                      double timeout_s);

/* The pid of the process listening on TCP port (IPv4/IPv6, any address),
 * from /proc/net/tcp* and /proc/PID/fd; 0 when not found. */
int bench_pid_by_port(int port);
long bench_rss_kib(int pid);      /* VmRSS, -1 when unknown */
double bench_proc_cpu_s(int pid); /* utime + stime, -1 when unknown */
struct bench_cpu bench_self_cpu(void);
/* Busy and total jiffies over all CPUs (/proc/stat); false if unknown. */
bool bench_machine_jiffies(uint64_t *busy, uint64_t *total, unsigned *cpus);
/* Raises RLIMIT_NOFILE to at least want (as far as allowed); returns the
 * soft limit in force. */
unsigned long bench_raise_nofile(unsigned long want);
double bench_now_s(void);

/* ---- output (report.c) --------------------------------------------------- */

void bench_report_table(const struct bench_result *r, bool allow_errors,
                        FILE *out);
void bench_report_json(const struct bench_result *r, bool allow_errors,
                       FILE *out);
/* `driftd-bench report FILE...`: median/min/max over runs. */
int bench_report_main(int argc, char **argv);

#endif
