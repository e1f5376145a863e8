/*
 * main.c - driftd-bench's command line: one subcommand per scenario, each
 * mapped onto the engine's one model (rooms, publishers, subscribers, a
 * rate or a window), plus `report` to aggregate saved --json results.
 *
 * Exit status: 0 the run passed its check; 1 it ran but lost, reordered or
 * duplicated messages, had connections closed or refused, or (without
 * --allow-errors) got `error` answers; 2 bad usage or set-up failure.
 *
 * Not here: the engine (run.c), the output formats (report.c).
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static void usage(FILE *f)
{
    fputs(
        "usage: driftd-bench SCENARIO [options] [URL...]\n"
        "       driftd-bench report [--json | --median FIGURE] RESULT.json...\n"
        "\n"
        "Load generator and checker for driftd (the DriftDB protocol over\n"
        "WebSocket). Connections are spread round-robin over the node URLs\n"
        "(http://HOST:PORT, or https://HOST:PORT for a TLS node: wss; default\n"
        "http://127.0.0.1:8080). Every run checks\n"
        "that each subscriber got every acknowledged push exactly once, in "
        "seq\n"
        "order; exit status 1 when it did not, 2 on bad usage or set-up "
        "error.\n"
        "\n"
        "scenarios:\n"
        "  ingest       P publishers push as fast as the cluster "
        "acknowledges,\n"
        "               at most W unacknowledged each, each to its own key;\n"
        "               reports acknowledged pushes/s and push->ack latency\n"
        "               --publishers P (16) --window W (64) --rooms R (=P)\n"
        "               --value-size V (64) --relay (default append)\n"
        "               --rate N (0 = as fast as acknowledged)\n"
        "  fanout       one room, publishers at a fixed total rate, S\n"
        "               subscribers; reports deliveries/s and push->deliver\n"
        "               latency\n"
        "               --subscribers S (1000) --publishers P (1)\n"
        "               --rate N (1000 pushes/s in total) --value-size V (64)\n"
        "               --append (default relay) --window W (10000)\n"
        "               --rate 0: closed loop, publishers stay at most W\n"
        "               pushes ahead of the slowest subscriber (W: 256)\n"
        "  rooms        R rooms with C clients each (one publishes), low "
        "traffic\n"
        "               --rooms R (100) --clients C (4) --rate N (10 pushes/s "
        "per\n"
        "               room) --value-size V (64) --append (default relay)\n"
        "  connections  N idle subscribed connections; reports the connect "
        "rate\n"
        "               and node memory per connection (RSS before/after);\n"
        "               at the end one push per room must reach everyone\n"
        "               --connections N (1000) --rooms R (100)\n"
        "\n"
        "options:\n"
        "  --url URL          a node (repeatable, or comma-separated)\n"
        "  --pid PID          the node's pid for RSS and CPU, one per URL in\n"
        "                     order (default: the process listening on the\n"
        "                     URL's port, found in /proc)\n"
        "  --cacert PATH      CA bundle (PEM) that the certificates of\n"
        "                     https:// nodes must chain to (default: the\n"
        "                     system's CAs)\n"
        "  --msgpack          msgpack binary frames (default JSON text)\n"
        "  --duration S       measured seconds (10; connections: 5)\n"
        "  --warmup S         seconds of load before measuring (2)\n"
        "  --drain S          at most this long for the last messages (10)\n"
        "  --connect-timeout S  for every connection to subscribe (60)\n"
        "  --concurrency N    WebSocket handshakes in flight (256)\n"
        "  --json             the result as JSON on stdout (table on stderr)\n"
        "  --label TEXT       name of the run (JSON, report grouping)\n"
        "  --progress S       progress line every S seconds (1; 0: none)\n"
        "  --allow-errors     `error` answers do not fail the run\n"
        "  --no-coalesce      one write per push (default: a publisher writes\n"
        "                     every push its window allows in one send)\n"
        "  --workers N        N processes share the connections (1): each\n"
        "                     its own loop, its own share checked; the\n"
        "                     figures are their sums\n"
        "  --lws-rx           let lws parse the WebSocket frames (default: "
        "the\n"
        "                     tool does, from whole reads; lws 4.1's client\n"
        "                     goes byte by byte)\n"
        "  -q, --quiet        no progress line\n"
        "  -v, --verbose      log retries and every server error\n"
        "  -h, --help\n",
        f);
}

enum {
    OPT_URL = 256,
    OPT_PID,
    OPT_MSGPACK,
    OPT_DURATION,
    OPT_WARMUP,
    OPT_DRAIN,
    OPT_CONNECT_TIMEOUT,
    OPT_CONCURRENCY,
    OPT_JSON,
    OPT_LABEL,
    OPT_PROGRESS,
    OPT_ALLOW_ERRORS,
    OPT_PUBLISHERS,
    OPT_SUBSCRIBERS,
    OPT_WINDOW,
    OPT_ROOMS,
    OPT_VALUE_SIZE,
    OPT_RELAY,
    OPT_APPEND,
    OPT_RATE,
    OPT_CLIENTS,
    OPT_CONNECTIONS,
    OPT_NO_COALESCE,
    OPT_CACERT,
    OPT_WORKERS,
    OPT_LWS_RX,
};

static const struct option long_opts[] = {
    {"url", required_argument, NULL, OPT_URL},
    {"pid", required_argument, NULL, OPT_PID},
    {"msgpack", no_argument, NULL, OPT_MSGPACK},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"drain", required_argument, NULL, OPT_DRAIN},
    {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
    {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
    {"json", no_argument, NULL, OPT_JSON},
    {"label", required_argument, NULL, OPT_LABEL},
    {"progress", required_argument, NULL, OPT_PROGRESS},
    {"allow-errors", no_argument, NULL, OPT_ALLOW_ERRORS},
    {"publishers", required_argument, NULL, OPT_PUBLISHERS},
    {"subscribers", required_argument, NULL, OPT_SUBSCRIBERS},
    {"window", required_argument, NULL, OPT_WINDOW},
    {"rooms", required_argument, NULL, OPT_ROOMS},
    {"value-size", required_argument, NULL, OPT_VALUE_SIZE},
    {"relay", no_argument, NULL, OPT_RELAY},
    {"append", no_argument, NULL, OPT_APPEND},
    {"rate", required_argument, NULL, OPT_RATE},
    {"clients", required_argument, NULL, OPT_CLIENTS},
    {"connections", required_argument, NULL, OPT_CONNECTIONS},
    {"no-coalesce", no_argument, NULL, OPT_NO_COALESCE},
    {"cacert", required_argument, NULL, OPT_CACERT},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"lws-rx", no_argument, NULL, OPT_LWS_RX},
    {"quiet", no_argument, NULL, 'q'},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int num(const char *opt, const char *s, double lo, double hi,
               double *out)
{
    char *e;
    double v = strtod(s, &e);

    if (e == s || *e != '\0' || v < lo || v > hi) {
        fprintf(stderr,
                "driftd-bench: --%s %s: expected a number in "
                "[%g, %g]\n",
                opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int add_urls(struct bench_opts *o, const char *list)
{
    char buf[1024], *save = NULL, *tok;

    snprintf(buf, sizeof(buf), "%s", list);
    for (tok = strtok_r(buf, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        if (o->n_urls == BENCH_MAX_URLS) {
            fprintf(stderr, "driftd-bench: at most %d URLs\n", BENCH_MAX_URLS);
            return -1;
        }
        if (bench_url_parse(tok, &o->urls[o->n_urls]) != 0) {
            fprintf(stderr,
                    "driftd-bench: bad URL \"%s\" (http://HOST:PORT or "
                    "https://HOST:PORT)\n",
                    tok);
            return -1;
        }
        o->n_urls++;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct bench_opts o;
    struct bench_result *res;
    int pids[BENCH_MAX_URLS], n_pids = 0, ch, rv;
    /* what was given, per scenario knob: -1 = default */
    double publishers = -1, subscribers = -1, window = -1, rooms = -1,
           value_size = 64, rate = -1, clients = 4, connections = 1000,
           duration = -1, v;
    int action = 0; /* 0 default, 1 relay, 2 append */
    const char *scn;
    unsigned long need_fds;
    char err[256];

    if (argc >= 2 && strcmp(argv[1], "report") == 0)
        return bench_report_main(argc - 1, argv + 1);
    if (argc < 2 || argv[1][0] == '-') {
        if (argc >= 2 &&
            (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
            usage(stdout);
            return 0;
        }
        usage(stderr);
        return 2;
    }
    memset(&o, 0, sizeof(o));
    scn = argv[1];
    o.scenario_name = scn;
    if (strcmp(scn, "ingest") == 0)
        o.scenario = BENCH_INGEST;
    else if (strcmp(scn, "fanout") == 0)
        o.scenario = BENCH_FANOUT;
    else if (strcmp(scn, "rooms") == 0)
        o.scenario = BENCH_ROOMS;
    else if (strcmp(scn, "connections") == 0)
        o.scenario = BENCH_CONNECTIONS;
    else {
        fprintf(stderr, "driftd-bench: unknown scenario \"%s\"\n", scn);
        usage(stderr);
        return 2;
    }
    o.warmup_s = 2;
    o.drain_s = 10;
    o.connect_timeout_s = 60;
    o.progress_s = 1;
    o.connect_concurrency = 256;
    o.coalesce = true;
    o.workers = 1;
    optind = 2;
    while ((ch = getopt_long(argc, argv, "qvh", long_opts, NULL)) != -1) {
        switch (ch) {
        case OPT_URL:
            if (add_urls(&o, optarg) != 0)
                return 2;
            break;
        case OPT_PID:
            if (n_pids == BENCH_MAX_URLS || num("pid", optarg, 1, 1e9, &v))
                return 2;
            pids[n_pids++] = (int)v;
            break;
        case OPT_MSGPACK:
            o.msgpack = true;
            break;
        case OPT_JSON:
            o.json_out = true;
            break;
        case OPT_LABEL:
            o.label = optarg;
            break;
        case OPT_ALLOW_ERRORS:
            o.allow_errors = true;
            break;
        case OPT_RELAY:
            action = 1;
            break;
        case OPT_APPEND:
            action = 2;
            break;
        case OPT_NO_COALESCE:
            o.coalesce = false;
            break;
        case OPT_CACERT:
            o.cacert = optarg;
            break;
        case OPT_LWS_RX:
            o.lws_rx = true;
            break;
        case 'q':
            o.quiet = true;
            break;
        case 'v':
            o.verbose = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case OPT_DURATION:
            if (num("duration", optarg, 0.1, 86400, &duration))
                return 2;
            break;
        case OPT_WARMUP:
            if (num("warmup", optarg, 0, 86400, &o.warmup_s))
                return 2;
            break;
        case OPT_DRAIN:
            if (num("drain", optarg, 0.1, 3600, &o.drain_s))
                return 2;
            break;
        case OPT_CONNECT_TIMEOUT:
            if (num("connect-timeout", optarg, 1, 3600, &o.connect_timeout_s))
                return 2;
            break;
        case OPT_PROGRESS:
            if (num("progress", optarg, 0, 3600, &o.progress_s))
                return 2;
            break;
        case OPT_CONCURRENCY:
            if (num("concurrency", optarg, 1, 100000, &v))
                return 2;
            o.connect_concurrency = (unsigned)v;
            break;
        case OPT_PUBLISHERS:
            if (num("publishers", optarg, 1, 100000, &publishers))
                return 2;
            break;
        case OPT_SUBSCRIBERS:
            if (num("subscribers", optarg, 0, 1000000, &subscribers))
                return 2;
            break;
        case OPT_WINDOW:
            if (num("window", optarg, 1, 1e7, &window))
                return 2;
            break;
        case OPT_ROOMS:
            if (num("rooms", optarg, 1, 1000000, &rooms))
                return 2;
            break;
        case OPT_VALUE_SIZE:
            if (num("value-size", optarg, 1, 1 << 20, &value_size))
                return 2;
            break;
        case OPT_RATE:
            if (num("rate", optarg, 0, 1e8, &rate))
                return 2;
            break;
        case OPT_CLIENTS:
            if (num("clients", optarg, 2, 100000, &clients))
                return 2;
            break;
        case OPT_CONNECTIONS:
            if (num("connections", optarg, 1, 1000000, &connections))
                return 2;
            break;
        case OPT_WORKERS:
            if (num("workers", optarg, 1, BENCH_MAX_WORKERS, &v))
                return 2;
            o.workers = (unsigned)v;
            break;
        default:
            usage(stderr);
            return 2;
        }
    }
    for (; optind < argc; optind++)
        if (add_urls(&o, argv[optind]) != 0)
            return 2;
    if (o.n_urls == 0 && add_urls(&o, "http://127.0.0.1:8080") != 0)
        return 2;
    if (n_pids > 0 && (size_t)n_pids != o.n_urls) {
        fprintf(stderr, "driftd-bench: give one --pid per URL (%zu)\n",
                o.n_urls);
        return 2;
    }
    for (size_t i = 0; i < o.n_urls; i++) {
        o.tls |= o.urls[i].tls;
        if (n_pids > 0) {
            o.urls[i].pid = pids[i];
        } else {
            o.urls[i].pid = bench_pid_by_port(o.urls[i].port);
            o.urls[i].pid_from_port = o.urls[i].pid > 0;
        }
    }

    o.value_size = (size_t)value_size;
    o.duration_s = duration > 0 ? duration : 10;
    switch (o.scenario) {
    case BENCH_INGEST:
        o.publishers = publishers > 0 ? (unsigned)publishers : 16;
        o.subscribers = subscribers > 0 ? (unsigned)subscribers : 0;
        o.rooms = rooms > 0 ? (unsigned)rooms : o.publishers;
        if (o.rooms > o.publishers)
            o.rooms = o.publishers;
        o.window = window > 0 ? (unsigned)window : 64;
        o.rate = rate > 0 ? rate : 0;
        o.relay = action == 1;
        o.distinct_keys = true;
        break;
    case BENCH_FANOUT:
        o.publishers = publishers > 0 ? (unsigned)publishers : 1;
        o.subscribers = subscribers >= 0 ? (unsigned)subscribers : 1000;
        o.rooms = 1;
        o.rate = rate >= 0 ? rate : 1000;
        /* with a rate the window only bounds a stall; without one it is
         * how far publishers may run ahead of the slowest subscriber */
        o.window = window > 0 ? (unsigned)window : o.rate > 0 ? 10000 : 256;
        o.relay = action != 2;
        break;
    case BENCH_ROOMS:
        o.rooms = rooms > 0 ? (unsigned)rooms : 100;
        o.publishers = o.rooms;
        o.subscribers = o.rooms * ((unsigned)clients - 1);
        o.window = window > 0 ? (unsigned)window : 1000;
        o.rate = (rate >= 0 ? rate : 10) * o.rooms;
        o.relay = action != 2;
        break;
    case BENCH_CONNECTIONS:
        o.rooms = rooms > 0 ? (unsigned)rooms : 100;
        if (o.rooms > connections)
            o.rooms = (unsigned)connections;
        /* one connection per room also pushes once, at the end */
        o.publishers = o.rooms;
        o.subscribers = (unsigned)connections - o.rooms;
        o.window = 1;
        o.max_per_pub = 1;
        o.relay = true;
        o.duration_s = duration > 0 ? duration : 5;
        break;
    }
    if (o.window == 0)
        o.window = 1;
    if (o.workers > o.publishers + o.subscribers)
        o.workers = o.publishers + o.subscribers; /* none without a share */

    /* Every connection is a descriptor; lws sizes its tables from the
     * limit in force when the context is created (per worker: its
     * share). */
    need_fds = ((unsigned long)o.publishers + o.subscribers + o.workers - 1) /
                   o.workers +
               256;
    if (bench_raise_nofile(need_fds) < need_fds) {
        fprintf(stderr,
                "driftd-bench: %lu connections need about %lu file "
                "descriptors per process, more than RLIMIT_NOFILE allows here "
                "(raise the hard limit, or split the connections "
                "over more --workers)\n",
                (unsigned long)o.publishers + o.subscribers, need_fds);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    if (o.tls && bench_tls_init(o.cacert, err, sizeof(err)) != 0) {
        fprintf(stderr, "driftd-bench: --cacert: %s\n", err);
        return 2;
    }
    res = calloc(1, sizeof(*res));
    if (res == NULL) {
        bench_tls_close();
        return 2;
    }
    rv = bench_run(&o, res);
    bench_tls_close();
    if (rv != 0) {
        free(res);
        return 2;
    }
    if (o.json_out) {
        bench_report_json(res, o.allow_errors, stdout);
        bench_report_table(res, o.allow_errors, stderr);
    } else {
        bench_report_table(res, o.allow_errors, stdout);
    }
    rv = bench_result_failed(res, o.allow_errors) ? 1 : 0;
    free(res);
    return rv;
}
