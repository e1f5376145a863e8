/*
 * main.c - wires one driftd node: configuration from the command line, the
 * one uv_loop_t, signal handling, and the start/stop order.
 *
 * Start: consensus (raft on the data dir) then net (listen). Stop on
 * SIGTERM/SIGINT: a leader first hands leadership to another voter (while
 * everything keeps serving), for at most HANDOVER_TIMEOUTS election
 * timeouts; then net stops accepting and says goodbye, its lws context is
 * destroyed; then consensus fails what is queued and closes raft; then our
 * signal handles close, uv_run drains and uv_loop_close must return 0.
 */
#define LOG_MODULE "main"
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "consensus.h"
#include "log.h"
#include "net.h"

#define DRIFTD_VERSION "0.1.0"
/* The hand-over at stop waits at most this many election timeouts: libraft
 * gives a transfer up after one, and consensus tries twice. */
#define HANDOVER_TIMEOUTS 2

struct app {
    uv_loop_t loop;
    uv_signal_t sigterm, sigint;
    uv_timer_t handover_timer; /* bounds the leader's hand-over at stop */
    uint64_t handover_ms;
    struct cons_node *cons;
    struct net_server *net;
    bool shutting_down;
    int exit_code;
};

/* The help text is laid out by hand, as it prints. */
// clang-format off
static void usage(FILE *f)
{
    fprintf(f,
"usage: driftd [options]\n"
"\n"
"A DriftDB-compatible WebSocket/HTTP message relay whose rooms live in a\n"
"Raft-replicated log. With no options: a one-node cluster on 127.0.0.1:8080\n"
"with its data in ./driftd-data.\n"
"\n"
"Node:\n"
"  --id N                  this node's id, >= 1 (default 1)\n"
"  --http HOST:PORT        client HTTP/WebSocket address (127.0.0.1:8080)\n"
"  --raft HOST:PORT        raft address (default: HTTP host, port + 1000)\n"
"  --data DIR              data folder, created if missing (./driftd-data)\n"
"  --bootstrap ID=HOST:PORT,...  initial voters' raft addresses; acts on an\n"
"                          empty data folder only\n"
"  --join                  on an empty data folder bootstrap nothing and wait\n"
"                          to be added to a cluster\n"
"  --advertise HOST:PORT   HTTP address other nodes use to reach this one\n"
"                          (default: the --http address)\n"
"  --public-url URL        base URL for room URLs (default: request Host)\n"
"  --admin-token TOKEN     every /admin/* call (driftctl) then needs\n"
"                          Authorization: Bearer TOKEN\n"
"  --admin-token-file PATH the same, read from a file (not visible in ps)\n"
"\n"
"Security:\n"
"  --cluster-key-file PATH the cluster's shared key (driftctl keygen): raft\n"
"                          and forward links prove they hold it\n"
"  --tls-cert PATH, --tls-key PATH\n"
"                          TLS on the client port (https://, wss://), PEM;\n"
"                          forward links to the leader then use TLS too\n"
"  --peer-cert PATH, --peer-key PATH\n"
"                          mutual TLS on raft links with this node's\n"
"                          certificate (PEM); needs --peer-ca\n"
"  --peer-ca PATH          CA bundle (PEM) other nodes' certificates must\n"
"                          chain to (raft links; forward links: default\n"
"                          the system's CAs)\n"
"  --insecure              allow non-loopback addresses without a cluster\n"
"                          key (anyone who reaches the ports can then join\n"
"                          the cluster, rewrite and read it)\n"
"\n"
"Bounds:\n"
"  --max-message BYTES     largest client message / frame (1048576)\n"
"  --max-connections N     WebSocket + HTTP connections (10000)\n"
"  --max-connections-per-ip N  connections per client address (256; 0: no\n"
"                          limit)\n"
"  --max-room-rate N       POST /new per second per address, bursts of 10x\n"
"                          (10; 0: no limit; past it: 429)\n"
"  --max-msg-rate N        WebSocket messages per second per session\n"
"                          (20000), --max-byte-rate BYTES their bytes\n"
"                          (67108864); past either: error, close 1008\n"
"  --header-timeout MS     a whole first request after accept (10000)\n"
"  --message-timeout MS    a whole fragmented message (30000)\n"
"  --max-out-bytes BYTES   per-connection outbound queue; a slower consumer\n"
"                          is closed with 1008 (8388608)\n"
"  --max-room-bytes BYTES  retained bytes per room (67108864)\n"
"                          (this, --max-rooms and the value part of\n"
"                          --max-message are cluster settings: the first\n"
"                          leader proposes its flags, driftctl config set\n"
"                          changes them)\n"
"  --max-rooms N           rooms per cluster (100000)\n"
"  --max-queue N           commands waiting for the log (65536)\n"
"  --queue-timeout MS      how long commands wait for a leader (5000)\n"
"  --room-ttl SECONDS      rooms with no push for this long are deleted,\n"
"                          their sessions closed (86400; 0: never)\n"
"\n"
"Raft:\n"
"  --election-timeout MS   (500)\n"
"  --heartbeat MS          (50)\n"
"  --snapshot-threshold N  entries between snapshots (65536)\n"
"  --snapshot-bytes MIB    or after this many MiB of log, whichever comes\n"
"                          first (64; 0: by count only)\n"
"  --snapshot-trailing N   entries kept after a snapshot (2048)\n"
"  --snapshot-mode MODE    thread (a thread encodes a frozen view of the\n"
"                          state; the node goes on), fork (a child process\n"
"                          does) or inline (the node stalls for the\n"
"                          encoding) (thread)\n"
"  --max-batch-bytes BYTES one log entry, group commit bound (1048576)\n"
"\n"
"Other:\n"
"  --log-level LEVEL       error, warn, info, debug (info); changes at run\n"
"                          time with driftctl log-level\n"
"  --log-format FORMAT     text (key=value lines) or json (one object per\n"
"                          line) (text)\n"
"  --help, --version\n");
}
// clang-format on

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min ||
        v > max)
        return -1;
    *out = v;
    return 0;
}

/* "HOST:PORT" -> host (copied into buf) and port. */
static int parse_hostport(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(s, ':');
    uint64_t p;

    if (colon == NULL || colon == s || (size_t)(colon - s) >= hostlen)
        return -1;
    if (parse_u64(colon + 1, 1, 65535, &p) != 0)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = (int)p;
    return 0;
}

static int parse_bootstrap(const char *s, struct cons_config *cfg)
{
    char *copy = strdup(s), *save = NULL, *tok;
    int rv = 0;

    if (copy == NULL)
        return -1;
    cfg->n_bootstrap = 0;
    for (tok = strtok_r(copy, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        uint64_t id;
        char host[64];
        int port;

        if (eq == NULL || cfg->n_bootstrap >= CONS_MAX_NODES) {
            rv = -1;
            break;
        }
        *eq = '\0';
        if (parse_u64(tok, 1, UINT32_MAX, &id) != 0 ||
            parse_hostport(eq + 1, host, sizeof(host), &port) != 0 ||
            strlen(eq + 1) >= sizeof(cfg->bootstrap[0].raft_addr)) {
            rv = -1;
            break;
        }
        for (size_t i = 0; i < cfg->n_bootstrap; i++)
            if (cfg->bootstrap[i].id == id)
                rv = -1;
        cfg->bootstrap[cfg->n_bootstrap].id = (uint32_t)id;
        snprintf(cfg->bootstrap[cfg->n_bootstrap].raft_addr,
                 sizeof(cfg->bootstrap[0].raft_addr), "%s", eq + 1);
        cfg->n_bootstrap++;
    }
    free(copy);
    return rv;
}

static void on_cons_closed(void *arg)
{
    struct app *a = arg;

    a->cons = NULL;
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_close((uv_handle_t *)&a->handover_timer, NULL);
    /* Closing the handles gave the signals back their default action, and
     * a second stop request is common here: Ctrl-C sends SIGINT to the whole
     * process group, and the supervisor (deploy/run-cluster.sh, systemd)
     * may follow with SIGTERM. Raft is closed already; that late signal
     * must not turn the clean exit into death by signal. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
}

static void on_net_closed(void *arg)
{
    struct app *a = arg;

    a->net = NULL;
    cons_node_close(a->cons, on_cons_closed, a);
}

static void stop_node(struct app *a)
{
    cons_node_no_dial(a->cons);
    if (a->net != NULL) {
        net_server_stop(a->net);
        net_server_close(a->net, on_net_closed, a);
    } else {
        on_net_closed(a);
    }
}

static void on_handed_over(void *arg, bool moved)
{
    struct app *a = arg;

    (void)moved; /* logged by consensus */
    uv_timer_stop(&a->handover_timer);
    stop_node(a);
}

static void on_handover_timeout(uv_timer_t *t)
{
    struct app *a = t->data;

    /* No new leader known in time (every node stopping at once?): stop as
     * without a hand-over; the others elect one after a timeout. */
    LOG_WARN("event=handover_timeout ms=%llu",
             (unsigned long long)a->handover_ms);
    cons_node_hand_over_cancel(a->cons);
    stop_node(a);
}

static void shutdown_node(struct app *a)
{
    if (a->shutting_down)
        return;
    a->shutting_down = true;
    LOG_INFO("event=shutdown");
    /* A leader hands over first, so that a planned restart costs no
     * election timeout; clients and forward links are served meanwhile. */
    if (a->cons != NULL && a->net != NULL &&
        cons_node_hand_over(a->cons, on_handed_over, a) == CONS_OK) {
        uv_timer_start(&a->handover_timer, on_handover_timeout, a->handover_ms,
                       0);
        return;
    }
    stop_node(a);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct app *a = h->data;

    LOG_INFO("event=signal sig=%s", signum == SIGTERM ? "TERM" : "INT");
    shutdown_node(a);
}

enum {
    OPT_ID = 256, OPT_HTTP, OPT_ADVERTISE, OPT_RAFT, OPT_DATA, OPT_BOOTSTRAP, OPT_JOIN,
    OPT_PUBLIC_URL, OPT_ADMIN_TOKEN, OPT_MAX_MESSAGE, OPT_MAX_CONNS,
    OPT_MAX_OUT, OPT_MAX_ROOM_BYTES, OPT_MAX_ROOMS, OPT_MAX_QUEUE,
    OPT_QUEUE_TIMEOUT, OPT_ROOM_TTL, OPT_ELECTION, OPT_HEARTBEAT, OPT_SNAP_THRESHOLD,
    OPT_SNAP_TRAILING, OPT_SNAP_BYTES, OPT_MAX_BATCH, OPT_LOG_LEVEL, OPT_HELP, OPT_VERSION,
    OPT_ADMIN_TOKEN_FILE, OPT_CLUSTER_KEY_FILE, OPT_INSECURE, OPT_TLS_CERT,
    OPT_TLS_KEY, OPT_PEER_CA, OPT_PEER_CERT, OPT_PEER_KEY, OPT_CONNS_PER_IP,
    OPT_ROOM_RATE, OPT_MSG_RATE, OPT_BYTE_RATE, OPT_HEADER_TIMEOUT,
    OPT_MESSAGE_TIMEOUT, OPT_LOG_FORMAT, OPT_SNAP_MODE,
};

static const struct option long_opts[] = {
    {"id", required_argument, NULL, OPT_ID},
    {"http", required_argument, NULL, OPT_HTTP},
    {"advertise", required_argument, NULL, OPT_ADVERTISE},
    {"raft", required_argument, NULL, OPT_RAFT},
    {"data", required_argument, NULL, OPT_DATA},
    {"bootstrap", required_argument, NULL, OPT_BOOTSTRAP},
    {"join", no_argument, NULL, OPT_JOIN},
    {"public-url", required_argument, NULL, OPT_PUBLIC_URL},
    {"admin-token", required_argument, NULL, OPT_ADMIN_TOKEN},
    {"max-message", required_argument, NULL, OPT_MAX_MESSAGE},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNS},
    {"max-out-bytes", required_argument, NULL, OPT_MAX_OUT},
    {"max-room-bytes", required_argument, NULL, OPT_MAX_ROOM_BYTES},
    {"max-rooms", required_argument, NULL, OPT_MAX_ROOMS},
    {"max-queue", required_argument, NULL, OPT_MAX_QUEUE},
    {"queue-timeout", required_argument, NULL, OPT_QUEUE_TIMEOUT},
    {"room-ttl", required_argument, NULL, OPT_ROOM_TTL},
    {"election-timeout", required_argument, NULL, OPT_ELECTION},
    {"heartbeat", required_argument, NULL, OPT_HEARTBEAT},
    {"snapshot-threshold", required_argument, NULL, OPT_SNAP_THRESHOLD},
    {"snapshot-trailing", required_argument, NULL, OPT_SNAP_TRAILING},
    {"snapshot-bytes", required_argument, NULL, OPT_SNAP_BYTES},
    {"max-batch-bytes", required_argument, NULL, OPT_MAX_BATCH},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {"admin-token-file", required_argument, NULL, OPT_ADMIN_TOKEN_FILE},
    {"cluster-key-file", required_argument, NULL, OPT_CLUSTER_KEY_FILE},
    {"insecure", no_argument, NULL, OPT_INSECURE},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"peer-ca", required_argument, NULL, OPT_PEER_CA},
    {"peer-cert", required_argument, NULL, OPT_PEER_CERT},
    {"peer-key", required_argument, NULL, OPT_PEER_KEY},
    {"max-connections-per-ip", required_argument, NULL, OPT_CONNS_PER_IP},
    {"max-room-rate", required_argument, NULL, OPT_ROOM_RATE},
    {"max-msg-rate", required_argument, NULL, OPT_MSG_RATE},
    {"max-byte-rate", required_argument, NULL, OPT_BYTE_RATE},
    {"header-timeout", required_argument, NULL, OPT_HEADER_TIMEOUT},
    {"message-timeout", required_argument, NULL, OPT_MESSAGE_TIMEOUT},
    {"snapshot-mode", required_argument, NULL, OPT_SNAP_MODE},
    {NULL, 0, NULL, 0},
};

struct options {
    struct cons_config cons;
    struct net_config net;
    char http_host[64];
    char raft_addr[64];
    char http_addr[RELAY_ADDR_MAX + 1];
    bool advertise_given;
    bool raft_given, bootstrap_given;
    const char *admin_token;
    char admin_token_buf[NET_ADMIN_TOKEN_MAX + 2];
    bool insecure;
};

static int bad_value(const char *opt, const char *val, const char *want)
{
    fprintf(stderr, "driftd: --%s %s: %s (see --help)\n", opt, val, want);
    return 2;
}

/* The admin token from a file: its first line, without the newline. */
static int read_token_file(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    size_t len;

    if (f == NULL) {
        fprintf(stderr, "driftd: --admin-token-file %s: %s\n", path,
                strerror(errno));
        return -1;
    }
    if (fgets(buf, (int)size, f) == NULL)
        buf[0] = '\0';
    fclose(f);
    len = strcspn(buf, "\r\n");
    buf[len] = '\0';
    if (len == 0) {
        fprintf(stderr, "driftd: --admin-token-file %s: empty\n", path);
        return -1;
    }
    return 0;
}

/*
 * The admin token travels in HTTP headers (ours and the forward links'):
 * printable ASCII, at most NET_ADMIN_TOKEN_MAX bytes, checked once here.
 */
static int check_token(const char *token)
{
    size_t len = strlen(token);

    if (len == 0 || len > NET_ADMIN_TOKEN_MAX) {
        fprintf(stderr, "driftd: the admin token must be 1..%d bytes\n",
                NET_ADMIN_TOKEN_MAX);
        return 2;
    }
    for (size_t i = 0; i < len; i++)
        if (token[i] <= 0x20 || token[i] >= 0x7f) {
            fprintf(stderr, "driftd: the admin token must be printable "
                            "ASCII without spaces\n");
            return 2;
        }
    return -1;
}

/*
 * Raft and forward links trust whoever proves the cluster key; without one
 * they trust whoever can reach them. That is tolerable on loopback only.
 */
static int check_exposure(const struct options *o)
{
    char host[RELAY_ADDR_MAX + 1];
    int port;

    if (o->cons.has_key || o->insecure)
        return -1;
    if (!cons_host_is_loopback(o->http_host) ||
        !cons_addr_split(o->raft_addr, host, sizeof(host), &port) ||
        !cons_host_is_loopback(host)) {
        fprintf(stderr,
                "driftd: refusing to listen on %s:%d / raft %s without a "
                "cluster key: anyone who reaches those ports could join the "
                "cluster, rewrite rooms and read them. Make a key with "
                "'driftctl keygen > key; chmod 600 key', give every node "
                "--cluster-key-file key, or pass --insecure to accept the "
                "risk.\n",
                o->http_host, o->net.http_port, o->raft_addr);
        return 2;
    }
    return -1;
}

/* Returns -1 to go on, or an exit code. */
static int parse_args(int argc, char **argv, struct options *o)
{
    uint64_t v;
    int c, idx = 0, lvl;

    cons_config_default(&o->cons);
    net_config_default(&o->net);
    snprintf(o->http_host, sizeof(o->http_host), "%s", "127.0.0.1");
    o->net.http_host = o->http_host;
    while ((c = getopt_long(argc, argv, "h", long_opts, &idx)) != -1) {
        const char *name = c >= OPT_ID ? long_opts[c - OPT_ID].name : "";

        switch (c) {
        case OPT_ID:
            if (parse_u64(optarg, 1, UINT32_MAX, &v) != 0)
                return bad_value(name, optarg, "want an integer >= 1");
            o->cons.id = (uint32_t)v;
            break;
        case OPT_ADVERTISE: {
            char host[RELAY_ADDR_MAX + 1];
            int port;

            if (parse_hostport(optarg, host, sizeof(host), &port) != 0)
                return bad_value(name, optarg, "want HOST:PORT");
            snprintf(o->http_addr, sizeof(o->http_addr), "%s", optarg);
            o->advertise_given = true;
            break;
        }
        case OPT_HTTP:
            if (parse_hostport(optarg, o->http_host, sizeof(o->http_host),
                               &o->net.http_port) != 0)
                return bad_value(name, optarg, "want HOST:PORT");
            break;
        case OPT_RAFT: {
            char host[64];
            int port;

            if (parse_hostport(optarg, host, sizeof(host), &port) != 0 ||
                strlen(optarg) >= sizeof(o->raft_addr))
                return bad_value(name, optarg, "want HOST:PORT");
            snprintf(o->raft_addr, sizeof(o->raft_addr), "%s", optarg);
            o->raft_given = true;
            break;
        }
        case OPT_DATA:
            o->cons.data_dir = optarg;
            break;
        case OPT_BOOTSTRAP:
            if (parse_bootstrap(optarg, &o->cons) != 0)
                return bad_value(name, optarg,
                                 "want ID=HOST:PORT,... with distinct ids");
            o->bootstrap_given = true;
            break;
        case OPT_JOIN:
            o->cons.join = true;
            break;
        case OPT_PUBLIC_URL:
            if (strncmp(optarg, "http://", 7) != 0 &&
                strncmp(optarg, "https://", 8) != 0)
                return bad_value(name, optarg, "want an http(s):// URL");
            o->net.public_url = optarg;
            break;
        case OPT_ADMIN_TOKEN:
            o->admin_token = optarg;
            o->net.admin_token = optarg;
            break;
        case OPT_ADMIN_TOKEN_FILE:
            if (read_token_file(optarg, o->admin_token_buf,
                                sizeof(o->admin_token_buf)) != 0)
                return 2;
            o->admin_token = o->admin_token_buf;
            o->net.admin_token = o->admin_token_buf;
            break;
        case OPT_CLUSTER_KEY_FILE: {
            char err[300];

            if (cons_key_load(optarg, o->cons.key, err, sizeof(err)) != 0) {
                fprintf(stderr, "driftd: --cluster-key-file: %s\n", err);
                return 2;
            }
            o->cons.has_key = true;
            o->net.has_cluster_key = true;
            memcpy(o->net.cluster_key, o->cons.key, CONS_KEY_LEN);
            break;
        }
        case OPT_INSECURE:
            o->insecure = true;
            break;
        case OPT_TLS_CERT:
            o->net.tls_cert = optarg;
            break;
        case OPT_TLS_KEY:
            o->net.tls_key = optarg;
            break;
        case OPT_PEER_CA:
            o->net.peer_ca = optarg;
            o->cons.peer_ca = optarg;
            break;
        case OPT_PEER_CERT:
            o->cons.peer_cert = optarg;
            break;
        case OPT_PEER_KEY:
            o->cons.peer_key = optarg;
            break;
        case OPT_CONNS_PER_IP:
            if (parse_u64(optarg, 0, 1000000, &v) != 0)
                return bad_value(name, optarg, "want 0..1000000 (0: none)");
            o->net.max_conns_per_ip = v;
            break;
        case OPT_ROOM_RATE:
            if (parse_u64(optarg, 0, 1000000, &v) != 0)
                return bad_value(name, optarg, "want 0..1000000 (0: none)");
            o->net.room_rate = (double)v;
            o->net.room_burst = v > 0 ? 10 * v : 0;
            break;
        case OPT_MSG_RATE:
            if (parse_u64(optarg, 0, 100000000, &v) != 0)
                return bad_value(name, optarg, "want 0..100000000 (0: none)");
            o->net.msg_rate = v;
            break;
        case OPT_BYTE_RATE:
            if (parse_u64(optarg, 0, (uint64_t)1 << 40, &v) != 0)
                return bad_value(name, optarg, "want >= 0 (0: none)");
            o->net.byte_rate = v;
            break;
        case OPT_HEADER_TIMEOUT:
            if (parse_u64(optarg, 100, 600000, &v) != 0)
                return bad_value(name, optarg, "want 100..600000 ms");
            o->net.header_timeout_ms = (unsigned)v;
            break;
        case OPT_SNAP_MODE:
            if (strcmp(optarg, "thread") == 0)
                o->cons.snapshot_mode = CONS_SNAP_THREAD;
            else if (strcmp(optarg, "fork") == 0)
                o->cons.snapshot_mode = CONS_SNAP_FORK;
            else if (strcmp(optarg, "inline") == 0)
                o->cons.snapshot_mode = CONS_SNAP_INLINE;
            else
                return bad_value(name, optarg, "want thread|fork|inline");
            break;
        case OPT_MESSAGE_TIMEOUT:
            if (parse_u64(optarg, 100, 3600000, &v) != 0)
                return bad_value(name, optarg, "want 100..3600000 ms");
            o->net.message_timeout_ms = (unsigned)v;
            break;
        case OPT_MAX_MESSAGE:
            if (parse_u64(optarg, 1024, 64u << 20, &v) != 0)
                return bad_value(name, optarg, "want 1024..67108864");
            o->net.max_message = v;
            o->net.max_http_body = v;
            o->cons.limits.max_value_len = v;
            break;
        case OPT_MAX_CONNS:
            if (parse_u64(optarg, 1, 1000000, &v) != 0)
                return bad_value(name, optarg, "want 1..1000000");
            o->net.max_connections = v;
            break;
        case OPT_MAX_OUT:
            if (parse_u64(optarg, 4096, (uint64_t)1 << 32, &v) != 0)
                return bad_value(name, optarg, "want 4096..4294967296");
            o->net.max_out_bytes = v;
            break;
        case OPT_MAX_ROOM_BYTES:
            if (parse_u64(optarg, 1024, (uint64_t)1 << 40, &v) != 0)
                return bad_value(name, optarg, "want >= 1024");
            o->cons.limits.max_room_bytes = v;
            break;
        case OPT_MAX_ROOMS:
            if (parse_u64(optarg, 1, 100000000, &v) != 0)
                return bad_value(name, optarg, "want 1..100000000");
            o->cons.limits.max_rooms = v;
            break;
        case OPT_MAX_QUEUE:
            if (parse_u64(optarg, 1, 10000000, &v) != 0)
                return bad_value(name, optarg, "want 1..10000000");
            o->cons.max_queue_cmds = v;
            break;
        case OPT_QUEUE_TIMEOUT:
            if (parse_u64(optarg, 1, 3600000, &v) != 0)
                return bad_value(name, optarg, "want 1..3600000 ms");
            o->cons.queue_timeout_ms = (unsigned)v;
            break;
        case OPT_ROOM_TTL:
            if (parse_u64(optarg, 0, 10ull * 365 * 86400, &v) != 0)
                return bad_value(name, optarg, "want 0..315360000 s");
            o->cons.room_ttl_ms = v * 1000;
            break;
        case OPT_ELECTION:
            if (parse_u64(optarg, 10, 600000, &v) != 0)
                return bad_value(name, optarg, "want 10..600000 ms");
            o->cons.election_timeout_ms = (unsigned)v;
            break;
        case OPT_HEARTBEAT:
            if (parse_u64(optarg, 1, 60000, &v) != 0)
                return bad_value(name, optarg, "want 1..60000 ms");
            o->cons.heartbeat_timeout_ms = (unsigned)v;
            break;
        case OPT_SNAP_THRESHOLD:
            if (parse_u64(optarg, 1, UINT32_MAX, &v) != 0)
                return bad_value(name, optarg, "want >= 1");
            o->cons.snapshot_threshold = (unsigned)v;
            break;
        case OPT_SNAP_TRAILING:
            if (parse_u64(optarg, 0, UINT32_MAX, &v) != 0)
                return bad_value(name, optarg, "want >= 0");
            o->cons.snapshot_trailing = (unsigned)v;
            break;
        case OPT_SNAP_BYTES:
            if (parse_u64(optarg, 0, 1u << 20, &v) != 0)
                return bad_value(name, optarg, "want 0..1048576 (MiB)");
            o->cons.snapshot_bytes = (size_t)v << 20;
            break;
        case OPT_MAX_BATCH:
            if (parse_u64(optarg, 4096, 64u << 20, &v) != 0)
                return bad_value(name, optarg, "want 4096..67108864");
            o->cons.max_batch_bytes = v;
            break;
        case OPT_LOG_LEVEL:
            lvl = log_level_parse(optarg);
            if (lvl < 0)
                return bad_value(name, optarg, "want error|warn|info|debug");
            log_threshold = (enum log_level)lvl;
            break;
        case OPT_LOG_FORMAT:
            lvl = log_format_parse(optarg);
            if (lvl < 0)
                return bad_value(name, optarg, "want text|json");
            log_format = (enum log_format)lvl;
            break;
        case OPT_HELP:
        case 'h':
            usage(stdout);
            return 0;
        case OPT_VERSION:
            printf("driftd %s\n", DRIFTD_VERSION);
            return 0;
        default:
            fprintf(stderr, "driftd: see --help\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "driftd: unexpected argument '%s' (see --help)\n",
                argv[optind]);
        return 2;
    }
    if (o->bootstrap_given && o->cons.join) {
        fprintf(stderr, "driftd: --bootstrap and --join exclude each other\n");
        return 2;
    }
    if (!o->raft_given) {
        if (o->net.http_port + 1000 > 65535) {
            fprintf(stderr, "driftd: give --raft: HTTP port + 1000 is not a "
                            "valid port\n");
            return 2;
        }
        snprintf(o->raft_addr, sizeof(o->raft_addr), "%.40s:%d", o->http_host,
                 o->net.http_port + 1000);
    }
    o->cons.raft_addr = o->raft_addr;
    if (!o->advertise_given)
        snprintf(o->http_addr, sizeof(o->http_addr), "%.200s:%d",
                 o->http_host, o->net.http_port);
    o->cons.http_addr = o->http_addr;
    if (o->admin_token != NULL && (c = check_token(o->admin_token)) >= 0)
        return c;
    if ((o->net.tls_cert == NULL) != (o->net.tls_key == NULL)) {
        fprintf(stderr, "driftd: --tls-cert and --tls-key go together\n");
        return 2;
    }
    if ((o->cons.peer_cert == NULL) != (o->cons.peer_key == NULL) ||
        (o->cons.peer_cert != NULL && o->cons.peer_ca == NULL)) {
        fprintf(stderr, "driftd: --peer-cert, --peer-key and --peer-ca go "
                        "together\n");
        return 2;
    }
    if ((c = check_exposure(o)) >= 0)
        return c;
    if (o->bootstrap_given) {
        bool found = false;

        for (size_t i = 0; i < o->cons.n_bootstrap; i++)
            if (o->cons.bootstrap[i].id == o->cons.id)
                found = true;
        if (!found) {
            fprintf(stderr, "driftd: --bootstrap must list this node's --id "
                            "%u\n", o->cons.id);
            return 2;
        }
    }
    return -1;
}

/*
 * Client connections must never run the process out of descriptors: at
 * EMFILE lws retries accept on every loop turn. The soft limit is raised to
 * the hard one (as Go's runtime and most servers do) and max_connections
 * capped to what is left after NET_FD_RESERVE.
 */
static void fit_fd_limit(struct options *o)
{
    struct rlimit rl;
    size_t cap;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max;

        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    cap = rl.rlim_cur > NET_FD_RESERVE + 16
              ? (size_t)(rl.rlim_cur - NET_FD_RESERVE)
              : 16;
    if (o->net.max_connections == 0)
        o->net.max_connections = 10000;
    if (o->net.max_connections > cap) {
        LOG_WARN("event=max_connections_capped from=%zu to=%zu "
                 "why=\"descriptor limit %llu minus %d reserved; raise "
                 "ulimit -n for more\"",
                 o->net.max_connections, cap,
                 (unsigned long long)rl.rlim_cur, NET_FD_RESERVE);
        o->net.max_connections = cap;
    }
}

int main(int argc, char **argv)
{
    struct options opts;
    struct app app;
    int rv;

    memset(&opts, 0, sizeof(opts));
    memset(&app, 0, sizeof(app));
    rv = parse_args(argc, argv, &opts);
    if (rv >= 0)
        return rv;
    signal(SIGPIPE, SIG_IGN); /* a vanished peer is an error code, not death */
    fit_fd_limit(&opts);

    uv_loop_init(&app.loop);
    /* The time the loop waits for events, which net's loop lag probe
     * subtracts from each turn (driftd_loop_lag_seconds). */
    uv_loop_configure(&app.loop, UV_METRICS_IDLE_TIME);
    uv_signal_init(&app.loop, &app.sigterm);
    uv_signal_init(&app.loop, &app.sigint);
    uv_timer_init(&app.loop, &app.handover_timer);
    app.handover_timer.data = &app;
    app.handover_ms =
        (uint64_t)HANDOVER_TIMEOUTS * opts.cons.election_timeout_ms;
    app.sigterm.data = &app;
    app.sigint.data = &app;
    uv_signal_start(&app.sigterm, on_signal, SIGTERM);
    uv_signal_start(&app.sigint, on_signal, SIGINT);

    rv = cons_node_init(&app.cons, &app.loop, &opts.cons);
    if (rv != CONS_OK) {
        LOG_ERROR("event=init_failed what=consensus err=%s", cons_strerror(rv));
        app.exit_code = 1;
        goto out_close_signals;
    }
    rv = net_server_init(&app.net, &app.loop, &opts.net, app.cons);
    if (rv != NET_OK) {
        LOG_ERROR("event=init_failed what=net err=\"%s\"", net_strerror(rv));
        app.exit_code = 1;
        app.net = NULL;
        goto out_shutdown;
    }
    cons_node_set_callbacks(app.cons, net_server_on_applied,
                            net_server_on_failed, app.net);
    cons_node_set_restored_callback(app.cons, net_server_on_restored);
    cons_node_set_read_callback(app.cons, net_server_on_read);
    rv = cons_node_start(app.cons);
    if (rv != CONS_OK) {
        LOG_ERROR("event=start_failed what=consensus err=\"%s\"",
                  cons_node_errmsg(app.cons));
        app.exit_code = 1;
        goto out_shutdown;
    }
    rv = net_server_start(app.net);
    if (rv != NET_OK) {
        LOG_ERROR("event=start_failed what=net err=\"%s\"",
                  net_server_errmsg(app.net));
        app.exit_code = 1;
        goto out_shutdown;
    }
    LOG_INFO("event=ready id=%u http=%s:%d raft=%s data=%s", opts.cons.id,
             opts.http_host, opts.net.http_port, opts.raft_addr,
             opts.cons.data_dir);
    LOG_INFO("event=security cluster_key=%s admin_token=%s tls=%s "
             "raft_tls=%s insecure=%s",
             opts.cons.has_key ? "yes" : "no",
             opts.admin_token != NULL ? "yes" : "no",
             opts.net.tls_cert != NULL ? "yes" : "no",
             opts.cons.peer_cert != NULL ? "yes" : "no",
             opts.insecure ? "yes" : "no");
    if (!opts.cons.has_key && (opts.cons.n_bootstrap > 1 || opts.cons.join))
        LOG_WARN("event=no_cluster_key why=\"raft and forward links take "
                 "anyone who reaches them; give every node "
                 "--cluster-key-file\"");
    uv_run(&app.loop, UV_RUN_DEFAULT);
    goto out_loop;

out_shutdown:
    shutdown_node(&app);
    uv_run(&app.loop, UV_RUN_DEFAULT);
    goto out_loop;
out_close_signals:
    uv_close((uv_handle_t *)&app.sigterm, NULL);
    uv_close((uv_handle_t *)&app.sigint, NULL);
    uv_close((uv_handle_t *)&app.handover_timer, NULL);
    uv_run(&app.loop, UV_RUN_DEFAULT);
out_loop:
    rv = uv_loop_close(&app.loop);
    if (rv != 0) {
        LOG_ERROR("event=loop_not_empty err=%s: a handle was left open",
                  uv_strerror(rv));
        return 1;
    }
    LOG_INFO("event=exit code=%d", app.exit_code);
    return app.exit_code;
}
