/*
 * run.c - the engine of driftd-bench: rooms, connections, publishing at a
 * rate or as fast as acknowledgements allow, the loss/order check, the
 * measured window and the orderly close.
 *
 * A run is a set of rooms (created with POST /new before the loop runs).
 * Each room has publishers (connections that push) and subscribers; every
 * connection subscribes with `get` to the keys it must see: a publisher to
 * its own key (so its own push coming back as a broadcast is its
 * acknowledgement), a subscriber to every key of its room. Connections are
 * spread round-robin over the node URLs.
 *
 * Phases: CONNECT (connect and subscribe everyone, at most
 * connect_concurrency handshakes at once; failed handshakes are retried a
 * few times, a room may not have reached a follower yet) -> WARMUP ->
 * MEASURE (counters are snapshotted at both ends; histograms record only
 * here) -> DRAIN (publishers stop; wait until every push is acknowledged
 * or refused and every subscriber has everything) -> CLOSE (close frames,
 * then the lws context is destroyed) -> DONE.
 *
 * The check, per connection: seqs strictly increase; per publisher, the
 * counters carried in the values strictly increase (a repeat is a
 * duplicate, a step back a reorder); after the drain a connection has
 * received exactly as many pushes as its room's publishers had
 * acknowledged. Since a connection only ever sees what was broadcast, equal
 * counts of strictly increasing counters mean nothing was lost.
 *
 * Failure modes: the server closes a connection (1008: we were too slow)
 * or a handshake keeps failing: counted, the run fails, the others carry
 * on so the report still says what happened. `error` answers are counted
 * apart from acks. A second SIGINT skips the drain.
 *
 * lws on our libuv loop (foreign loop): lws 4.1 finishes destroying its
 * context only when lws_context_destroy() is called again after its own
 * idle and timer handles have closed, so the close polls with a timer, as
 * the server does (src/net/server.c).
 *
 * Receiving: lws 4.1's client parses WebSocket frames one byte per call
 * (lws_ws_client_rx_sm was 47% of the tool's CPU in fan-out, `perf
 * record -g`), so by default every plain (ws://) connection is an lws *raw*
 * client connection: run.c writes the upgrade request, checks the 101 answer
 * (Sec-WebSocket-Accept included) and parses the server's frames itself,
 * straight out of each read lws hands over (unmasked, so no copy unless a
 * frame straddles two reads; in the standard fan-out a read holds ~32
 * frames, what the window lets the server queue per subscriber). It writes
 * masked frames as before. --lws-rx keeps the lws WebSocket client (the path
 * before; for comparison), and so do TLS connections (lws 4.1 did not get raw
 * client connections over TLS going).
 *
 * Workers (--workers N, N > 1): one thread at ~90% of a core decoding and
 * checking ~1.2M frames/s was the bound of the fan-out figure, not the
 * cluster. The connections are then split into N contiguous shares, one
 * per worker process, each with its own loop and lws context and its own
 * check of its connections; the parent creates the rooms, forks, and only
 * coordinates: it moves every worker through the phases together, reads
 * the CPU figures (its own plus every worker's, from /proc) and merges the
 * workers' results (counts, histograms, the check) into one. Processes
 * rather than threads: lws 4.1 keeps process-wide state (log level, the
 * OpenSSL global init) and every lws context sizes its tables from the
 * process' RLIMIT_NOFILE, so separate processes also split the descriptor
 * limit (the hard limit here is 20,000); and nothing of the engine had to
 * become thread-safe. What workers share lives in one anonymous MAP_SHARED
 * region made before the fork (struct shared): the phase, per room its
 * acknowledged and live push counts and every worker's slowest member
 * (the closed-loop fan-out bound spans workers), and per worker its flags,
 * progress counters and result.
 *
 * Not here: reconnecting after the set-up phase, the report (report.c).
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libwebsockets.h>
#include <uv.h>

#include "bench.h"

#define TICK_MS 1
#define CLOSE_TICK_MS 5
#define CLOSE_WS_WAIT_S 3.0
#define CONNECT_RETRIES 10
#define SUB_RX_BUFFER 4096
#define PUB_RX_BUFFER 65536
#define MAX_STATIC_HANDLES 16
#define MAX_LWS_LOG_LINES 20
#define WORKER_EXIT_WAIT_S 30.0

enum phase {
    PH_CONNECT,
    PH_WARMUP,
    PH_MEASURE,
    PH_DRAIN,
    PH_CLOSE,
    PH_DONE,
};

static const char *phase_names[] = {"connect", "warmup", "measure",
                                    "drain",   "close",  "done"};

enum cstate {
    CS_WAITING, /* not started, or waiting for a retry */
    CS_CONNECTING,
    CS_OPEN,   /* established */
    CS_CLOSED, /* closed after it was open */
    CS_FAILED, /* never got open */
};

struct room {
    char id[BENCH_ROOM_ID_MAX];
    unsigned n_pubs;
    unsigned *pubs; /* global publisher ids */
    uint64_t acked; /* pushes of its publishers seen acknowledged */
    /* Closed-loop fan-out (shared key, no rate): publishers may run at
     * most `window` pushes ahead of the slowest member connection. */
    uint64_t live;     /* pushes sent and not refused */
    uint64_t min_recv; /* fewest pushes any member has received */
    uint32_t *ring;    /* members by received count, modulo ring_mask+1 */
    uint64_t ring_mask;
    unsigned members;
};

/* ---- what worker processes share (--workers) ----------------------------- */

struct shared_room {
    _Atomic uint64_t acked; /* pushes of its publishers acknowledged */
    _Atomic uint64_t live;  /* closed loop: pushes sent and not refused */
};

struct shared_worker {
    _Atomic int connected; /* its connect phase is over */
    _Atomic int resolved;  /* drain: its publishers have nothing in flight */
    _Atomic int drained;   /* drain: its connections have everything */
    _Atomic int done;      /* res below is complete */
    _Atomic int setup_failed;
    double t_first_connect, t_connected, t_fail;
    /* progress (the parent's progress line): copied at every tick, the
     * histogram once per progress period; a torn read shows in one line */
    struct bench_counts c;
    uint64_t n_ready, n_open, closes;
    struct bench_hist int_h;
    struct bench_result res;
};

struct shared {
    _Atomic int phase; /* enum phase, set by the parent only */
    unsigned n_workers;
    size_t size;
    struct shared_worker *w;    /* n_workers */
    struct shared_room *rooms;  /* one per room */
    _Atomic uint64_t *min_recv; /* room x worker: its slowest member's
                                   count; UINT64_MAX: no member there */
};

struct conn {
    struct run *run;
    struct lws *wsi;
    struct room *room;
    unsigned idx;
    unsigned url;
    enum cstate state;
    bool is_pub;
    bool ready;    /* every get answered with its init */
    bool excluded; /* became ready too late: not checked */
    bool closing;  /* we decided to close it */
    bool want_writable;
    bool member; /* counted in its room's ring */
    unsigned retries;
    double retry_at;
    double t_connect;
    uint32_t pub_id; /* global publisher id when is_pub */
    unsigned gets_sent;
    unsigned inits_pending;
    int close_code; /* from the peer's close frame */

    uint64_t last_seq;
    uint64_t received;  /* pushes of watched publishers */
    uint64_t *last_ctr; /* per publisher of the room (local index) */

    /* publisher */
    uint64_t sent, acked, refused, due;

    /* reassembly of fragmented messages; raw: the handshake answer, then
     * a frame cut by the end of a read */
    uint8_t *rx;
    size_t rx_len, rx_cap;
    bool rx_binary;

    /* raw connections (see the top): the upgrade, fragments, a ping */
    bool raw;
    bool hs_sent;
    char ws_key[32];
    uint8_t *frag;
    size_t frag_len, frag_cap;
    bool frag_on, frag_binary;
    bool pong_due;
    uint8_t pong[125];
    size_t pong_len;
};

struct run {
    const struct bench_opts *o;
    struct bench_result *res;
    uv_loop_t loop;
    struct lws_context *ctx;
    struct lws_protocols protocols[3];
    uv_timer_t tick, progress, close_timer;
    uv_signal_t sigint, sigterm;
    int open_handles;
    uv_handle_t *lws_handles[MAX_STATIC_HANDLES];
    size_t n_lws_handles;

    enum phase phase;
    double t_phase; /* when the current phase began */
    double t_first_connect, t_all_ready, t_pub_start;
    double t_measure_start, t_measure_end;
    bool interrupted_twice;
    unsigned ticks;

    struct room *rooms;
    size_t n_rooms;
    struct conn *conns;
    size_t n_conns;
    struct conn **pubs;  /* by global publisher id */
    unsigned *pub_local; /* global id -> index within its room */
    struct room **pub_room;
    size_t n_pubs;
    char **keys; /* "k", or "p<id>" per publisher */

    size_t next_connect, connecting, n_ready, n_failed, n_open;
    struct bench_counts c, c_measure0, c_prog;
    double cpu0_s; /* the tool's CPU seconds at the window's start */
    double kid_cpu0_s[BENCH_MAX_WORKERS];
    uint64_t busy0, total0;
    bool have_jiffies;
    double node_cpu0[BENCH_MAX_URLS];
    struct bench_hist *ack_h, *del_h, *int_h;
    double t_prog;

    uint8_t *wbuf; /* LWS_PRE + one frame, or a batch of frames */
    size_t wcap;
    uint8_t *fbuf; /* one frame's payload, when coalescing */
    char *vbuf;
    bool flow_room; /* closed-loop fan-out: see struct room */
    uint64_t rng;   /* masking keys of our own frames */
    unsigned lws_log_lines;
    bool progress_tty;

    /* --workers: the shared region (NULL: one process does everything);
     * in a worker, its index and its share [lo, hi) of conns; in the
     * parent, the workers' pids */
    struct shared *sh;
    bool is_worker;
    unsigned worker;
    size_t lo, hi;
    pid_t *kids;
    unsigned n_kids;
    double t_fail; /* when first_failure was set */
};

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

static void fail(struct run *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void fail(struct run *r, const char *fmt, ...)
{
    va_list ap;

    if (r->res->first_failure[0] != '\0')
        return;
    va_start(ap, fmt);
    vsnprintf(r->res->first_failure, sizeof(r->res->first_failure), fmt, ap);
    va_end(ap);
    r->t_fail = bench_now_s();
    if (!r->o->quiet) {
        if (r->progress_tty)
            fputc('\n', stderr);
        fprintf(stderr, "driftd-bench: FAILURE: %s\n", r->res->first_failure);
    }
}

/* Room counts that span workers: in the shared region when there is one. */
static struct shared_room *sroom(const struct run *r, const struct room *rm)
{
    return &r->sh->rooms[rm - r->rooms];
}

static uint64_t room_acked(const struct run *r, const struct room *rm)
{
    return r->sh != NULL ? atomic_load(&sroom(r, rm)->acked) : rm->acked;
}

static uint64_t room_live(const struct run *r, const struct room *rm)
{
    return r->sh != NULL ? atomic_load(&sroom(r, rm)->live) : rm->live;
}

/* The fewest pushes any member of the room has received, over all
 * workers. */
static uint64_t room_min(const struct run *r, const struct room *rm)
{
    uint64_t m = UINT64_MAX;
    size_t base;

    if (r->sh == NULL)
        return rm->min_recv;
    base = (size_t)(rm - r->rooms) * r->sh->n_workers;
    for (unsigned w = 0; w < r->sh->n_workers; w++) {
        uint64_t v = atomic_load(&r->sh->min_recv[base + w]);

        if (v < m)
            m = v;
    }
    return m == UINT64_MAX ? room_live(r, rm) : m;
}

static const char *conn_key(const struct run *r, const struct conn *c,
                            unsigned i)
{
    /* Publishers watch their own key; subscribers every key of the room. */
    if (!r->o->distinct_keys)
        return r->keys[0];
    if (c->is_pub)
        return r->keys[c->pub_id];
    return r->keys[c->room->pubs[i]];
}

static unsigned conn_n_keys(const struct run *r, const struct conn *c)
{
    if (!r->o->distinct_keys || c->is_pub)
        return 1;
    return c->room->n_pubs;
}

/* How many pushes a connection must have once everything is acked. */
static uint64_t conn_expected(const struct run *r, const struct conn *c)
{
    if (r->o->distinct_keys && c->is_pub)
        return c->acked;
    if (r->o->distinct_keys && c->room->n_pubs == 0)
        return 0;
    return room_acked(r, c->room);
}

static bool publishing(const struct run *r)
{
    if (r->phase == PH_MEASURE)
        return true;
    /* connections: the one liveness push per room waits for the RSS
     * reading at the start of the measured window */
    return r->phase == PH_WARMUP && r->o->scenario != BENCH_CONNECTIONS;
}

static bool can_send(const struct run *r, const struct conn *c)
{
    uint64_t resolved = c->acked + c->refused;
    uint64_t inflight = c->sent > resolved ? c->sent - resolved : 0;

    if (!c->is_pub || c->state != CS_OPEN || c->closing || !publishing(r))
        return false;
    if (inflight >= r->o->window)
        return false;
    if (r->o->max_per_pub != 0 && c->sent >= r->o->max_per_pub)
        return false;
    if (r->o->rate > 0 && c->sent >= c->due)
        return false;
    if (r->flow_room) {
        uint64_t live = room_live(r, c->room), min = room_min(r, c->room);

        if (live > min && live - min >= r->o->window)
            return false;
    }
    return true;
}

static void ask_writable(struct conn *c)
{
    if (c->wsi != NULL && !c->want_writable) {
        c->want_writable = true;
        lws_callback_on_writable(c->wsi);
    }
}

/* ---- closed-loop fan-out ------------------------------------------------- */

/* Workers: this worker's slowest member of rm, for the others to see. */
static void publish_min(struct run *r, const struct room *rm)
{
    if (r->sh != NULL)
        atomic_store(
            &r->sh->min_recv[(size_t)(rm - r->rooms) * r->sh->n_workers +
                             r->worker],
            rm->members == 0 ? UINT64_MAX : rm->min_recv);
}

static void room_advance(struct run *r, struct room *rm)
{
    uint64_t before = rm->min_recv, live = room_live(r, rm);

    if (rm->members == 0)
        rm->min_recv = live;
    while (rm->min_recv < live && rm->ring[rm->min_recv & rm->ring_mask] == 0)
        rm->min_recv++;
    if (rm->min_recv != before)
        publish_min(r, rm);
    if (rm->min_recv != before && publishing(r))
        for (unsigned i = 0; i < rm->n_pubs; i++) {
            struct conn *p = r->pubs[rm->pubs[i]];

            if (can_send(r, p))
                ask_writable(p);
        }
}

static void member_add(struct run *r, struct conn *c)
{
    if (!r->flow_room || c->member)
        return;
    c->member = true;
    c->room->members++;
    c->room->ring[c->received & c->room->ring_mask]++;
    publish_min(r, c->room);
}

static void member_remove(struct run *r, struct conn *c)
{
    if (!c->member)
        return;
    c->member = false;
    c->room->members--;
    c->room->ring[c->received & c->room->ring_mask]--;
    room_advance(r, c->room);
}

/* c->received has just gone up by one. */
static void member_received(struct run *r, struct conn *c)
{
    struct room *rm = c->room;
    uint64_t x = c->received - 1;

    rm->ring[x & rm->ring_mask]--;
    rm->ring[c->received & rm->ring_mask]++;
    if (x == rm->min_recv)
        room_advance(r, rm);
}

/* ---- connecting ---------------------------------------------------------- */

static void conn_failed(struct run *r, struct conn *c, const char *why)
{
    c->wsi = NULL;
    if (c->state == CS_CONNECTING && r->connecting > 0)
        r->connecting--;
    if (r->phase == PH_CONNECT && c->retries < CONNECT_RETRIES) {
        c->retries++;
        c->state = CS_WAITING;
        c->retry_at = bench_now_s() + 0.05 * c->retries;
        if (r->o->verbose)
            fprintf(stderr, "driftd-bench: conn %u: %s (retry %u)\n", c->idx,
                    why, c->retries);
        return;
    }
    c->state = CS_FAILED;
    r->n_failed++;
    r->res->connect_failures++;
    fail(r, "connection %u to %s: %s", c->idx, r->o->urls[c->url].hostport,
         why);
}

static void conn_start(struct run *r, struct conn *c)
{
    const struct bench_url *u = &r->o->urls[c->url];
    struct lws_client_connect_info ci;
    char path[BENCH_ROOM_ID_MAX + 64];
    struct lws *wsi;

    snprintf(path, sizeof(path), "/room/%s/connect%s", c->room->id,
             r->o->msgpack ? "?msgpack=true" : "");
    memset(&ci, 0, sizeof(ci));
    ci.context = r->ctx;
    ci.address = u->host;
    ci.port = u->port;
    ci.path = path;
    ci.host = u->hostport;
    ci.origin = u->hostport;
    ci.ietf_version_or_minus_one = -1;
    /* No subprotocol offered (DriftDB clients send none); the local
     * protocol only selects our callback and buffer sizes. */
    ci.local_protocol_name = c->is_pub ? "bench-pub" : "bench-sub";
    /* raw over TLS did not connect with lws 4.1 ("connection destroyed
     * while connecting"): wss stays with lws' WebSocket client */
    c->raw = !r->o->lws_rx && !u->tls;
    if (c->raw) {
        ci.method = "RAW"; /* we speak WebSocket ourselves (see the top) */
        c->hs_sent = false;
        c->rx_len = 0;
        c->frag_on = false;
        c->frag_len = 0;
        c->pong_due = false;
    }
    /* wss: the node's certificate must chain to --cacert and name u->host */
    if (u->tls)
        ci.ssl_connection = LCCSCF_USE_SSL;
    ci.opaque_user_data = c;
    ci.pwsi = &c->wsi;
    c->state = CS_CONNECTING;
    c->t_connect = bench_now_s();
    c->gets_sent = 0;
    c->want_writable = false;
    r->connecting++;
    if (r->t_first_connect == 0)
        r->t_first_connect = c->t_connect;
    wsi = lws_client_connect_via_info(&ci);
    if (wsi == NULL && c->state == CS_CONNECTING)
        conn_failed(r, c, "lws could not start the connection");
}

static void conn_ready(struct run *r, struct conn *c)
{
    c->ready = true;
    if (r->phase != PH_CONNECT) {
        /* too late to have seen everything from the start */
        c->excluded = true;
        return;
    }
    r->n_ready++;
    member_add(r, c);
    bench_hist_add(&r->res->connect,
                   (uint64_t)((bench_now_s() - c->t_connect) * 1e9));
}

static void pump_connects(struct run *r)
{
    double now = bench_now_s();
    unsigned max = r->o->connect_concurrency;

    if (r->sh != NULL) /* the handshakes in flight are split too */
        max = (max + r->sh->n_workers - 1) / r->sh->n_workers;
    while (r->connecting < max && r->next_connect < r->hi)
        conn_start(r, &r->conns[r->next_connect++]);
    if (r->connecting < max) {
        /* retries: a scan, but only while some are waiting */
        for (size_t i = r->lo; i < r->next_connect && r->connecting < max;
             i++) {
            struct conn *c = &r->conns[i];

            if (c->state == CS_WAITING && c->retry_at <= now)
                conn_start(r, c);
        }
    }
}

/* ---- receiving ----------------------------------------------------------- */

/*
 * After an ack: write again now? Closed loop, a publisher refills its
 * window once half of it came back, so that one send carries many pushes
 * and one poll-for-writable serves them (an ack at a time would cost a
 * syscall or two per push on both sides). With a rate the tick paces.
 */
static bool refill_now(const struct run *r, const struct conn *c)
{
    uint64_t resolved = c->acked + c->refused;
    uint64_t inflight = c->sent > resolved ? c->sent - resolved : 0;

    if (!can_send(r, c))
        return false;
    return r->o->rate > 0 || inflight <= r->o->window / 2;
}

static void on_push(struct run *r, struct conn *c, const struct bench_msg *m)
{
    struct bench_stamp st;
    unsigned local;
    uint64_t prev, lat, t = now_ns();
    bool measuring = r->phase == PH_MEASURE;

    if (!bench_wire_parse_value(m->value, m->value_len, &st) ||
        st.pub >= r->n_pubs || r->pub_room[st.pub] != c->room) {
        r->res->bad_frames++;
        fail(r, "connection %u received a push that is not ours", c->idx);
        return;
    }
    if (m->has_seq) {
        if (m->seq <= c->last_seq) {
            r->res->reordered++;
            fail(r, "connection %u: seq %llu after %llu", c->idx,
                 (unsigned long long)m->seq, (unsigned long long)c->last_seq);
        } else {
            c->last_seq = m->seq;
        }
    }
    local = r->pub_local[st.pub];
    prev = c->last_ctr[local];
    if (st.ctr <= prev) {
        if (st.ctr == prev)
            r->res->duplicated++;
        else
            r->res->reordered++;
        fail(r, "connection %u: push %u.%llu after %u.%llu (%s)", c->idx,
             st.pub, (unsigned long long)st.ctr, st.pub,
             (unsigned long long)prev,
             st.ctr == prev ? "duplicate" : "out of order");
        return;
    }
    c->last_ctr[local] = st.ctr;
    c->received++;
    if (c->member)
        member_received(r, c);
    lat = t > st.t_ns ? t - st.t_ns : 0;
    if (c->is_pub && st.pub == c->pub_id) {
        c->acked++;
        c->room->acked++;
        if (r->sh != NULL)
            atomic_fetch_add(&sroom(r, c->room)->acked, 1);
        r->c.acked++;
        if (measuring)
            bench_hist_add(r->ack_h, lat);
        if (r->o->scenario == BENCH_INGEST)
            bench_hist_add(r->int_h, lat);
        if (refill_now(r, c))
            ask_writable(c);
    } else {
        r->c.deliveries++;
        if (measuring)
            bench_hist_add(r->del_h, lat);
        if (r->o->scenario != BENCH_INGEST)
            bench_hist_add(r->int_h, lat);
    }
}

static void on_message(struct run *r, struct conn *c, const uint8_t *p,
                       size_t n, bool binary)
{
    struct bench_msg m;
    int rv;

    r->c.frames_in++;
    r->c.bytes_in += n;
    rv = binary ? bench_wire_decode_msgpack(p, n, &m)
                : bench_wire_decode_json(p, n, &m);
    if (rv != 0) {
        r->res->bad_frames++;
        fail(r, "connection %u: undecodable %s frame of %zu bytes", c->idx,
             binary ? "binary" : "text", n);
        return;
    }
    switch (m.type) {
    case BENCH_MSG_PUSH:
        on_push(r, c, &m);
        return;
    case BENCH_MSG_INIT:
        if (c->inits_pending > 0 && --c->inits_pending == 0 && !c->ready)
            conn_ready(r, c);
        return;
    case BENCH_MSG_STREAM_SIZE:
        r->c.stream_sizes++;
        return;
    case BENCH_MSG_ERROR:
        r->c.errors++;
        if (c->is_pub) {
            c->refused++;
            if (room_live(r, c->room) > room_min(r, c->room)) {
                c->room->live--; /* nobody will receive it */
                if (r->sh != NULL)
                    atomic_fetch_sub(&sroom(r, c->room)->live, 1);
            }
        }
        if (!r->o->allow_errors)
            fail(r, "connection %u: error from the server: %.*s", c->idx,
                 (int)(m.text_len > 160 ? 160 : m.text_len),
                 m.text != NULL ? m.text : "");
        if (r->o->verbose || r->c.errors <= 3)
            fprintf(stderr, "driftd-bench: conn %u: error from server: %.*s\n",
                    c->idx, (int)(m.text_len > 200 ? 200 : m.text_len),
                    m.text != NULL ? m.text : "");
        if (c->is_pub && refill_now(r, c))
            ask_writable(c);
        return;
    default:
        return;
    }
}

static int on_receive(struct run *r, struct conn *c, const uint8_t *in,
                      size_t len)
{
    bool final = lws_is_final_fragment(c->wsi) != 0;

    if (c->rx_len == 0 && final) {
        /* whole message in one piece: no copy */
        on_message(r, c, in, len, lws_frame_is_binary(c->wsi) != 0);
        return 0;
    }
    if (c->rx_len == 0)
        c->rx_binary = lws_frame_is_binary(c->wsi) != 0;
    if (c->rx_len + len > c->rx_cap) {
        size_t cap = c->rx_cap ? c->rx_cap : 4096;
        uint8_t *g;

        while (cap < c->rx_len + len)
            cap *= 2;
        if (cap > (size_t)256 << 20)
            return -1; /* no message of ours is that big */
        g = realloc(c->rx, cap);
        if (g == NULL)
            return -1;
        c->rx = g;
        c->rx_cap = cap;
    }
    memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += len;
    if (final) {
        on_message(r, c, c->rx, c->rx_len, c->rx_binary);
        c->rx_len = 0;
        if (c->rx_cap > 65536) {
            free(c->rx);
            c->rx = NULL;
            c->rx_cap = 0;
        }
    }
    return 0;
}

/* ---- writing ------------------------------------------------------------- */

static size_t put_frame(struct run *r, uint8_t *out, const uint8_t *p,
                        size_t n);

/* One message of len bytes at r->wbuf + LWS_PRE, as one frame. */
static int write_frame(struct run *r, struct conn *c, size_t len)
{
    int n;

    if (c->raw) { /* we frame (and mask) it */
        memcpy(r->fbuf, r->wbuf + LWS_PRE, len);
        len = put_frame(r, r->wbuf + LWS_PRE, r->fbuf, len);
        n = lws_write(c->wsi, r->wbuf + LWS_PRE, len, LWS_WRITE_RAW);
        return n < 0 ? -1 : 0;
    }
    n = lws_write(c->wsi, r->wbuf + LWS_PRE, len,
                  r->o->msgpack ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
    return n < 0 ? -1 : 0;
}

static size_t build_push(struct run *r, struct conn *c, uint8_t *out,
                         size_t cap)
{
    struct bench_stamp st = {c->pub_id, c->sent + 1, now_ns()};
    size_t vlen =
        bench_wire_value(r->vbuf, r->o->value_size + 64, &st, r->o->value_size);

    return bench_wire_push(out, cap, r->o->msgpack, conn_key(r, c, 0), r->vbuf,
                           vlen, r->o->relay);
}

static void pushed(struct run *r, struct conn *c)
{
    c->sent++;
    c->room->live++;
    if (r->sh != NULL)
        atomic_fetch_add(&sroom(r, c->room)->live, 1);
    r->c.sent++;
}

static uint32_t next_mask(struct run *r)
{
    /* xorshift64*: masks need not be secret against our own server */
    r->rng ^= r->rng >> 12;
    r->rng ^= r->rng << 25;
    r->rng ^= r->rng >> 27;
    return (uint32_t)((r->rng * 0x2545F4914F6CDD1Dull) >> 32);
}

/* A masked client frame (RFC 6455 section 5.2) around payload p; b0: FIN
 * and the opcode. */
static size_t put_frame_op(struct run *r, uint8_t *out, uint8_t b0,
                           const uint8_t *p, size_t n)
{
    uint32_t m = next_mask(r);
    uint8_t key[4] = {(uint8_t)(m >> 24), (uint8_t)(m >> 16), (uint8_t)(m >> 8),
                      (uint8_t)m};
    size_t h = 0;

    out[h++] = b0;
    if (n < 126) {
        out[h++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        out[h++] = 0x80 | 126;
        out[h++] = (uint8_t)(n >> 8);
        out[h++] = (uint8_t)n;
    } else {
        out[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    memcpy(out + h, key, 4);
    h += 4;
    for (size_t i = 0; i < n; i++)
        out[h + i] = p[i] ^ key[i & 3];
    return h + n;
}

static size_t put_frame(struct run *r, uint8_t *out, const uint8_t *p, size_t n)
{
    return put_frame_op(r, out, r->o->msgpack ? 0x82 : 0x81, p, n);
}

/*
 * Coalesced pushes: as many frames as the window allows, built here and
 * handed to lws as raw bytes in one write (one send() for many pushes, as
 * a pipelining client does), instead of one lws_write and one syscall each.
 */
static int write_batch(struct run *r, struct conn *c)
{
    uint8_t *out = r->wbuf + LWS_PRE;
    size_t off = 0, len;

    while (off + r->o->value_size + 256 <= r->wcap && can_send(r, c)) {
        len = build_push(r, c, r->fbuf, r->o->value_size + 256);
        if (len == 0)
            return -1;
        off += put_frame(r, out + off, r->fbuf, len);
        pushed(r, c);
    }
    if (off > 0 && lws_write(c->wsi, out, off,
                             c->raw ? LWS_WRITE_RAW : LWS_WRITE_HTTP) < 0)
        return -1;
    if (can_send(r, c))
        ask_writable(c);
    return 0;
}

static int on_writeable(struct run *r, struct conn *c)
{
    size_t len;

    c->want_writable = false;
    if (c->closing) {
        if (c->raw) { /* our close frame, then the socket */
            static const uint8_t why[] = {0x03, 0xe8, 'b', 'e', 'n', 'c',
                                          'h',  ' ',  'd', 'o', 'n', 'e'};

            len = put_frame_op(r, r->wbuf + LWS_PRE, 0x88, why, sizeof(why));
            lws_write(c->wsi, r->wbuf + LWS_PRE, len, LWS_WRITE_RAW);
            return -1;
        }
        lws_close_reason(c->wsi, LWS_CLOSE_STATUS_NORMAL,
                         (unsigned char *)"bench done", 10);
        return -1;
    }
    if (c->pong_due) { /* raw: a ping's answer goes first */
        c->pong_due = false;
        len = put_frame_op(r, r->wbuf + LWS_PRE, 0x8a, c->pong, c->pong_len);
        if (lws_write(c->wsi, r->wbuf + LWS_PRE, len, LWS_WRITE_RAW) < 0)
            return -1;
    }
    while (c->gets_sent < conn_n_keys(r, c)) {
        len = bench_wire_get(r->wbuf + LWS_PRE, r->wcap, r->o->msgpack,
                             conn_key(r, c, c->gets_sent));
        if (len == 0 || write_frame(r, c, len) != 0)
            return -1;
        c->gets_sent++;
        if (lws_partial_buffered(c->wsi)) {
            ask_writable(c);
            return 0;
        }
    }
    if (r->o->coalesce)
        return write_batch(r, c);
    while (can_send(r, c)) {
        len = build_push(r, c, r->wbuf + LWS_PRE, r->wcap);
        if (len == 0 || write_frame(r, c, len) != 0)
            return -1;
        pushed(r, c);
        if (lws_partial_buffered(c->wsi)) {
            if (can_send(r, c))
                ask_writable(c);
            break;
        }
    }
    return 0;
}

/* ---- raw connections: our own WebSocket client -------------------------- */

/* Appends n bytes to a growing buffer; -1 past any message of ours. */
static int buf_add(uint8_t **b, size_t *len, size_t *cap, const uint8_t *p,
                   size_t n)
{
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 4096;
        uint8_t *g;

        while (c < *len + n)
            c *= 2;
        if (c > (size_t)256 << 20)
            return -1;
        g = realloc(*b, c);
        if (g == NULL)
            return -1;
        *b = g;
        *cap = c;
    }
    memcpy(*b + *len, p, n);
    *len += n;
    return 0;
}

static int raw_send_upgrade(struct run *r, struct conn *c)
{
    const struct bench_url *u = &r->o->urls[c->url];
    uint8_t nonce[16];
    char *req = (char *)r->wbuf + LWS_PRE;
    int n;

    for (size_t i = 0; i < sizeof(nonce); i += 4) {
        uint32_t m = next_mask(r);

        memcpy(nonce + i, &m, 4);
    }
    lws_b64_encode_string((const char *)nonce, sizeof(nonce), c->ws_key,
                          sizeof(c->ws_key));
    n = snprintf(req, r->wcap,
                 "GET /room/%s/connect%s HTTP/1.1\r\nHost: %s\r\n"
                 "Origin: %s\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n",
                 c->room->id, r->o->msgpack ? "?msgpack=true" : "", u->hostport,
                 u->hostport, c->ws_key);
    if (n <= 0 || (size_t)n >= r->wcap)
        return -1;
    c->hs_sent = true;
    return lws_write(c->wsi, (uint8_t *)req, (size_t)n, LWS_WRITE_RAW) < 0 ? -1
                                                                           : 0;
}

static void conn_established(struct run *r, struct conn *c, struct lws *wsi)
{
    if (r->connecting > 0)
        r->connecting--;
    c->state = CS_OPEN;
    c->wsi = wsi;
    r->n_open++;
    c->inits_pending = conn_n_keys(r, c);
    if (c->inits_pending == 0)
        conn_ready(r, c);
    else
        ask_writable(c);
}

/* The answer to the upgrade, in c->rx: 101 and the accept value RFC 6455
 * derives from our key. Returns the length of its head, 0 while it is
 * incomplete, -1 (c failed) when it is not an upgrade. */
static long raw_upgraded(struct run *r, struct conn *c)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char kg[96], want[40], why[96];
    unsigned char md[20];
    const char *h = (const char *)c->rx, *end = NULL, *a;
    size_t n = c->rx_len;

    for (size_t i = 3; i < n; i++)
        if (memcmp(h + i - 3, "\r\n\r\n", 4) == 0) {
            end = h + i + 1;
            break;
        }
    if (end == NULL)
        return n > 16384 ? (conn_failed(r, c, "upgrade: no end of head"), -1)
                         : 0;
    if (n < 12 || memcmp(h, "HTTP/1.1 101", 12) != 0) {
        size_t l = 0; /* the status line (c->rx holds no NUL) */

        while (h + l < end && h[l] != '\r')
            l++;
        snprintf(why, sizeof(why), "upgrade refused: %.*s",
                 (int)(l > 60 ? 60 : l), h);
        conn_failed(r, c, why);
        return -1;
    }
    snprintf(kg, sizeof(kg), "%s%s", c->ws_key, guid);
    lws_SHA1((const unsigned char *)kg, strlen(kg), md);
    lws_b64_encode_string((const char *)md, sizeof(md), want, sizeof(want));
    a = NULL;
    for (const char *l = h; l < end && a == NULL; l++)
        if ((l == h || l[-1] == '\n') &&
            strncasecmp(l, "Sec-WebSocket-Accept:", 21) == 0)
            a = l + 21;
    while (a != NULL && *a == ' ')
        a++;
    if (a == NULL || strncmp(a, want, strlen(want)) != 0) {
        conn_failed(r, c, "upgrade: wrong Sec-WebSocket-Accept");
        return -1;
    }
    return (long)(end - h);
}

static int raw_bad(struct run *r, struct conn *c, const char *what)
{
    r->res->bad_frames++;
    fail(r, "connection %u: %s", c->idx, what);
    return -1;
}

/* One whole frame from the server (unmasked). -1: close the connection. */
static int raw_frame(struct run *r, struct conn *c, uint8_t b0,
                     const uint8_t *p, size_t n)
{
    bool fin = (b0 & 0x80) != 0;

    switch (b0 & 0x0f) {
    case 0x0: /* continuation */
        if (!c->frag_on)
            return raw_bad(r, c, "continuation frame out of a message");
        if (buf_add(&c->frag, &c->frag_len, &c->frag_cap, p, n) != 0)
            return -1;
        if (fin) {
            c->frag_on = false;
            on_message(r, c, c->frag, c->frag_len, c->frag_binary);
            c->frag_len = 0;
        }
        return 0;
    case 0x1:
    case 0x2:
        if (c->frag_on)
            return raw_bad(r, c, "new message inside a fragmented one");
        if (fin) {
            on_message(r, c, p, n, (b0 & 0x0f) == 0x2);
            return 0;
        }
        c->frag_on = true;
        c->frag_binary = (b0 & 0x0f) == 0x2;
        c->frag_len = 0;
        return buf_add(&c->frag, &c->frag_len, &c->frag_cap, p, n);
    case 0x8: /* close: as the server's close with lws (below) */
        c->close_code = n >= 2 ? p[0] << 8 | p[1] : 1005;
        return -1;
    case 0x9: /* ping: answered at the next write */
        c->pong_len = n > sizeof(c->pong) ? sizeof(c->pong) : n;
        memcpy(c->pong, p, c->pong_len);
        c->pong_due = true;
        ask_writable(c);
        return 0;
    case 0xa:
        return 0;
    default:
        return raw_bad(r, c, "frame with an unknown opcode");
    }
}

/* Every whole frame in p[0..n); returns the bytes used (a frame cut by the
 * end stays), or -1 to close. */
static long raw_frames(struct run *r, struct conn *c, const uint8_t *p,
                       size_t n)
{
    size_t off = 0;

    while (n - off >= 2) {
        const uint8_t *f = p + off;
        uint64_t len = f[1] & 0x7f;
        size_t h = 2;

        if (f[1] & 0x80)
            return raw_bad(r, c, "masked frame from the server");
        if (len == 126) {
            if (n - off < 4)
                break;
            len = (uint64_t)f[2] << 8 | f[3];
            h = 4;
        } else if (len == 127) {
            if (n - off < 10)
                break;
            len = 0;
            for (int i = 2; i < 10; i++)
                len = len << 8 | f[i];
            h = 10;
        }
        if (len > (uint64_t)256 << 20)
            return raw_bad(r, c, "frame larger than 256 MiB");
        if (n - off - h < len)
            break;
        if (raw_frame(r, c, f[0], f + h, (size_t)len) != 0)
            return -1;
        if (c->wsi == NULL)
            return -1;
        off += h + (size_t)len;
    }
    return (long)off;
}

/*
 * A read of a raw connection: the upgrade's answer first, then frames,
 * parsed in place; only the tail of a frame cut by the end of the read is
 * kept (in c->rx) for the next one.
 */
static int raw_rx(struct run *r, struct conn *c, const uint8_t *in, size_t len)
{
    const uint8_t *p = in;
    size_t n = len;
    long used;

    if (c->state == CS_CONNECTING) {
        long head;

        if (buf_add(&c->rx, &c->rx_len, &c->rx_cap, in, len) != 0)
            return -1;
        head = raw_upgraded(r, c);
        if (head <= 0)
            return head < 0 ? -1 : 0;
        memmove(c->rx, c->rx + head, c->rx_len - (size_t)head);
        c->rx_len -= (size_t)head;
        conn_established(r, c, c->wsi);
        if (c->rx_len == 0)
            return 0;
        p = c->rx;
        n = c->rx_len;
    } else if (c->rx_len > 0) {
        if (buf_add(&c->rx, &c->rx_len, &c->rx_cap, in, len) != 0)
            return -1;
        p = c->rx;
        n = c->rx_len;
    }
    used = raw_frames(r, c, p, n);
    if (used < 0)
        return -1;
    if (p == c->rx) {
        memmove(c->rx, c->rx + used, n - (size_t)used);
        c->rx_len = n - (size_t)used;
    } else if ((size_t)used < n && buf_add(&c->rx, &c->rx_len, &c->rx_cap,
                                           p + used, n - (size_t)used) != 0) {
        return -1;
    }
    return 0;
}

/* ---- the lws callback ---------------------------------------------------- */

static void conn_closed(struct run *r, struct conn *c)
{
    if (c->state == CS_OPEN && r->n_open > 0)
        r->n_open--;
    c->state = CS_CLOSED;
    c->wsi = NULL;
    member_remove(r, c);
    if (!c->ready && r->phase == PH_CONNECT)
        r->n_failed++; /* will never subscribe */
    if (!c->closing && r->phase < PH_CLOSE) {
        r->res->unexpected_closes++;
        if (c->close_code == LWS_CLOSE_STATUS_POLICY_VIOLATION)
            r->res->slow_consumer++;
        fail(r, "connection %u to %s closed by the server (code %d%s)", c->idx,
             r->o->urls[c->url].hostport, c->close_code,
             c->close_code == 1008 ? ": slow consumer" : "");
    }
}

static int on_lws_event(struct lws *wsi, enum lws_callback_reasons reason,
                        void *user, void *in, size_t len)
{
    struct conn *c = lws_get_opaque_user_data(wsi);
    struct run *r = c != NULL ? c->run : NULL;

    (void)user;
    if (c == NULL)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
        char why[160];

        snprintf(why, sizeof(why), "connect: %s",
                 in != NULL && len > 0 ? (const char *)in : "failed");
        if (c->state == CS_CONNECTING)
            conn_failed(r, c, why);
        return 0;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        conn_established(r, c, wsi);
        return 0;
    case LWS_CALLBACK_RAW_CONNECTED: /* TCP (and TLS) up: the upgrade next */
        c->wsi = wsi;
        ask_writable(c);
        return 0;
    case LWS_CALLBACK_RAW_RX:
        return raw_rx(r, c, in, len);
    case LWS_CALLBACK_RAW_WRITEABLE:
        if (c->state == CS_CONNECTING) {
            c->want_writable = false;
            return c->hs_sent ? 0 : raw_send_upgrade(r, c);
        }
        return on_writeable(r, c);
    case LWS_CALLBACK_RAW_CLOSE:
        if (c->state == CS_CONNECTING) {
            conn_failed(r, c, "closed before the upgrade");
            return 0;
        }
        if (c->state == CS_OPEN)
            conn_closed(r, c);
        return 0;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        return on_receive(r, c, in, len);
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return on_writeable(r, c);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (in != NULL && len >= 2)
            c->close_code =
                ((const uint8_t *)in)[0] << 8 | ((const uint8_t *)in)[1];
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
        conn_closed(r, c);
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        if (c->wsi == wsi)
            c->wsi = NULL;
        if (c->state == CS_CONNECTING) /* died without telling us */
            conn_failed(r, c, "connection destroyed while connecting");
        return 0;
    default:
        return 0;
    }
}

static void on_lws_log(int level, const char *line)
{
    static unsigned lines;

    (void)level;
    if (++lines <= MAX_LWS_LOG_LINES)
        fprintf(stderr, "driftd-bench: lws: %s", line);
    else if (lines == MAX_LWS_LOG_LINES + 1)
        fprintf(stderr, "driftd-bench: lws: (further lws messages dropped)\n");
}

/* ---- phases -------------------------------------------------------------- */

static void read_node_rss(struct run *r, bool after)
{
    for (size_t i = 0; i < r->res->n_nodes; i++) {
        struct bench_node_stats *n = &r->res->nodes[i];

        if (after)
            n->rss_after_kib = bench_rss_kib(n->pid);
        else
            n->rss_before_kib = bench_rss_kib(n->pid);
    }
}

static void start_close(struct run *r);

/* The tool's CPU seconds: this process, plus every worker's (/proc). */
static double tool_cpu_s(const struct run *r)
{
    struct bench_cpu cpu = bench_self_cpu();
    double s = cpu.user_s + cpu.sys_s;

    for (unsigned i = 0; i < r->n_kids; i++) {
        double k = bench_proc_cpu_s(r->kids[i]);

        if (k > 0)
            s += k;
    }
    return s;
}

/* Each worker's CPU seconds: at the window's start (res NULL), or since
 * then into res. */
static void kids_cpu(struct run *r, struct bench_result *res)
{
    for (unsigned i = 0; i < r->n_kids; i++) {
        double k = bench_proc_cpu_s(r->kids[i]);

        if (res == NULL)
            r->kid_cpu0_s[i] = k;
        else
            res->worker_cpu_s[i] =
                k >= 0 && r->kid_cpu0_s[i] >= 0 ? k - r->kid_cpu0_s[i] : -1;
    }
}

/* The CPU, node and machine figures at both ends of the measured window:
 * taken by the one process, or by the parent of the workers. */
static void window_open(struct run *r, double now)
{
    r->t_measure_start = now;
    r->cpu0_s = tool_cpu_s(r);
    kids_cpu(r, NULL);
    r->have_jiffies =
        bench_machine_jiffies(&r->busy0, &r->total0, &r->res->n_cpus);
    for (size_t i = 0; i < r->res->n_nodes; i++)
        r->node_cpu0[i] = bench_proc_cpu_s(r->res->nodes[i].pid);
    if (r->o->scenario == BENCH_CONNECTIONS)
        read_node_rss(r, true);
}

static void window_close(struct run *r, double now)
{
    uint64_t busy, total;
    unsigned n;

    r->t_measure_end = now;
    if (r->t_measure_start == 0) /* interrupted before measuring */
        r->t_measure_start = now;
    r->res->bench_cpu_s = tool_cpu_s(r) - r->cpu0_s;
    kids_cpu(r, r->res);
    if (r->have_jiffies && bench_machine_jiffies(&busy, &total, &n) &&
        total > r->total0)
        r->res->machine_busy_pct =
            100.0 * (double)(busy - r->busy0) / (double)(total - r->total0);
    for (size_t i = 0; i < r->res->n_nodes; i++) {
        double c1 = bench_proc_cpu_s(r->res->nodes[i].pid);

        r->res->nodes[i].cpu_s =
            c1 >= 0 && r->node_cpu0[i] >= 0 ? c1 - r->node_cpu0[i] : -1;
    }
    if (r->o->scenario != BENCH_CONNECTIONS)
        read_node_rss(r, true);
}

static bool owned(const struct run *r, const struct conn *c)
{
    return c->idx >= r->lo && c->idx < r->hi;
}

static void set_phase(struct run *r, enum phase p)
{
    double now = bench_now_s();

    r->phase = p;
    r->t_phase = now;
    switch (p) {
    case PH_WARMUP:
        r->t_all_ready = now;
        r->t_pub_start = now;
        break;
    case PH_MEASURE:
        r->c_measure0 = r->c;
        if (!r->is_worker)
            window_open(r, now);
        if (r->o->scenario == BENCH_CONNECTIONS)
            r->t_pub_start = now;
        break;
    case PH_DRAIN: {
        if (!r->is_worker)
            window_close(r, now);
        else if (r->t_measure_start == 0)
            r->t_measure_start = now;
        r->res->window.sent = r->c.sent - r->c_measure0.sent;
        r->res->window.acked = r->c.acked - r->c_measure0.acked;
        r->res->window.errors = r->c.errors - r->c_measure0.errors;
        r->res->window.deliveries = r->c.deliveries - r->c_measure0.deliveries;
        r->res->window.frames_in = r->c.frames_in - r->c_measure0.frames_in;
        r->res->window.bytes_in = r->c.bytes_in - r->c_measure0.bytes_in;
        r->res->window.stream_sizes =
            r->c.stream_sizes - r->c_measure0.stream_sizes;
        /* how far rate-driven publishers fell behind their schedule */
        for (size_t i = 0; i < r->n_pubs; i++) {
            struct conn *c = r->pubs[i];

            if (r->o->rate > 0 && owned(r, c) && c->due > c->sent)
                r->res->behind += c->due - c->sent;
        }
        break;
    }
    case PH_CLOSE:
        start_close(r);
        break;
    default:
        break;
    }
}

/* Its publishers have nothing unresolved in flight (drain). */
static bool pubs_resolved(const struct run *r)
{
    for (size_t i = 0; i < r->n_pubs; i++) {
        const struct conn *c = r->pubs[i];

        if (c->state == CS_OPEN && !c->excluded && c->ready &&
            c->sent > c->acked + c->refused)
            return false;
    }
    return true;
}

static bool drained(const struct run *r)
{
    for (size_t i = r->lo; i < r->hi; i++) {
        const struct conn *c = &r->conns[i];

        if (c->state != CS_OPEN || c->excluded || !c->ready)
            continue;
        if (c->is_pub && c->sent > c->acked + c->refused)
            return false;
        if (c->received < conn_expected(r, c))
            return false;
    }
    return true;
}

static void update_due(struct run *r)
{
    double el;
    double per;

    if (r->o->rate <= 0 || r->n_pubs == 0 || !publishing(r))
        return;
    el = bench_now_s() - r->t_pub_start;
    per = r->o->rate / (double)r->n_pubs;
    for (size_t i = 0; i < r->n_pubs; i++) {
        struct conn *c = r->pubs[i];
        /* staggered so that publishers do not all fire on the same tick */
        double d = el * per + (double)i / (double)r->n_pubs;

        c->due = d > 0 ? (uint64_t)d : 0;
    }
}

/* A worker's connect phase is over: the parent starts the warm-up once
 * every worker's is. */
static void worker_connected(struct run *r, double now)
{
    struct shared_worker *me = &r->sh->w[r->worker];

    me->t_first_connect = r->t_first_connect;
    me->t_connected = now;
    atomic_store(&me->connected, 1);
}

/* A worker follows the phase its parent sets and shows its progress.
 * Returns false when the tick has nothing more to do. */
static bool worker_follow(struct run *r, double now)
{
    struct shared_worker *me = &r->sh->w[r->worker];
    int want = atomic_load(&r->sh->phase);

    me->c = r->c;
    me->n_ready = r->n_ready;
    me->n_open = r->n_open;
    me->closes = r->res->unexpected_closes;
    if (want > (int)r->phase &&
        (atomic_load(&me->connected) || want >= PH_DRAIN)) {
        bool from_connect = r->phase == PH_CONNECT;

        if (want == PH_CLOSE && r->phase < PH_DRAIN)
            set_phase(r, PH_DRAIN); /* the window's counts */
        set_phase(r, (enum phase)want);
        if (from_connect && r->phase == PH_MEASURE)
            r->t_all_ready = r->t_pub_start = now;
        if (r->phase == PH_CLOSE)
            return false;
    }
    if (r->phase == PH_DRAIN && r->ticks % 10 == 0) {
        /* Everything acknowledged is final once every worker's
         * publishers are resolved; then the counts can be checked. */
        bool all = true;

        if (!atomic_load(&me->resolved) && pubs_resolved(r))
            atomic_store(&me->resolved, 1);
        for (unsigned w = 0; w < r->sh->n_workers && all; w++)
            all = atomic_load(&r->sh->w[w].resolved) != 0;
        if (all && !atomic_load(&me->drained) && drained(r))
            atomic_store(&me->drained, 1);
    }
    return r->phase != PH_DRAIN;
}

static void on_tick(uv_timer_t *t)
{
    struct run *r = t->data;
    double now = bench_now_s();
    const struct bench_opts *o = r->o;
    size_t n_own = r->hi - r->lo;

    r->ticks++;
    if (r->is_worker && !worker_follow(r, now))
        return;
    switch (r->phase) {
    case PH_CONNECT:
        if (r->is_worker && atomic_load(&r->sh->w[r->worker].connected))
            break; /* waiting for the other workers */
        pump_connects(r);
        if (r->n_ready + r->n_failed >= n_own) {
            r->res->conns_ready = (unsigned)r->n_ready;
            r->res->connect_s = now - r->t_first_connect;
            if (r->is_worker) {
                worker_connected(r, now);
                break;
            }
            set_phase(r, o->warmup_s > 0 ? PH_WARMUP : PH_MEASURE);
            if (r->phase == PH_MEASURE)
                r->t_all_ready = r->t_pub_start = now;
        } else if (now - r->t_phase > o->connect_timeout_s) {
            size_t missing = n_own - r->n_ready - r->n_failed;

            r->res->connect_failures += missing;
            fail(r, "%zu connections not subscribed after %.0f s", missing,
                 o->connect_timeout_s);
            r->res->conns_ready = (unsigned)r->n_ready;
            r->res->connect_s = now - r->t_first_connect;
            if (r->is_worker)
                worker_connected(r, now);
            else
                set_phase(r, PH_WARMUP);
        }
        break;
    case PH_WARMUP:
        if (!r->is_worker && now - r->t_phase >= o->warmup_s)
            set_phase(r, PH_MEASURE);
        break;
    case PH_MEASURE:
        if (!r->is_worker && now - r->t_phase >= o->duration_s)
            set_phase(r, PH_DRAIN);
        break;
    case PH_DRAIN:
        if (r->ticks % 10 == 0 && drained(r)) {
            r->res->drained = true;
            set_phase(r, PH_CLOSE);
        } else if (now - r->t_phase >= o->drain_s) {
            fail(r, "not everything arrived within the %.0f s drain",
                 o->drain_s);
            set_phase(r, PH_CLOSE);
        }
        return;
    default:
        return;
    }
    if (publishing(r)) {
        update_due(r);
        for (size_t i = 0; i < r->n_pubs; i++)
            if (can_send(r, r->pubs[i]))
                ask_writable(r->pubs[i]);
    }
}

static void fmt_ms(char *buf, size_t cap, uint64_t ns)
{
    if (ns >= 1000000000ull)
        snprintf(buf, cap, "%.2fs", (double)ns / 1e9);
    else if (ns >= 10000000ull)
        snprintf(buf, cap, "%.0fms", (double)ns / 1e6);
    else
        snprintf(buf, cap, "%.2fms", (double)ns / 1e6);
}

/* The progress line, from r->c, r->int_h and the connection counts (in the
 * parent of workers: their sums). */
static void print_progress(struct run *r, double now)
{
    double dt = now - r->t_prog;
    char p50[16], p99[16], pmax[16];
    double el;

    if (dt <= 0)
        return;
    fmt_ms(p50, sizeof(p50), bench_hist_quantile(r->int_h, 0.5));
    fmt_ms(p99, sizeof(p99), bench_hist_quantile(r->int_h, 0.99));
    fmt_ms(pmax, sizeof(pmax), r->int_h->max);
    el = now - r->t_phase;
    if (!r->o->quiet) {
        fprintf(stderr,
                "%s[%-7s %5.1fs] conns %zu/%zu open %zu | sent %.0f/s "
                "acked %.0f/s deliv %.0f/s | lat p50 %s p99 %s max %s | "
                "err %llu closed %llu%s",
                r->progress_tty ? "\r\033[K" : "", phase_names[r->phase], el,
                r->n_ready, r->n_conns, r->n_open,
                (double)(r->c.sent - r->c_prog.sent) / dt,
                (double)(r->c.acked - r->c_prog.acked) / dt,
                (double)(r->c.deliveries - r->c_prog.deliveries) / dt, p50, p99,
                pmax, (unsigned long long)r->c.errors,
                (unsigned long long)r->res->unexpected_closes,
                r->progress_tty ? "" : "\n");
        fflush(stderr);
    }
    r->c_prog = r->c;
    r->t_prog = now;
    bench_hist_reset(r->int_h);
}

static void on_progress(uv_timer_t *t)
{
    struct run *r = t->data;

    if (r->is_worker) {
        /* the parent prints: it merges every worker's last interval */
        r->sh->w[r->worker].int_h = *r->int_h;
        bench_hist_reset(r->int_h);
        return;
    }
    print_progress(r, bench_now_s());
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct run *r = s->data;

    (void)signum;
    r->res->interrupted = true;
    if (r->phase < PH_DRAIN) {
        if (!r->o->quiet)
            fprintf(stderr, "\ndriftd-bench: interrupted: draining "
                            "(again to skip)\n");
        set_phase(r, PH_DRAIN);
    } else if (r->phase == PH_DRAIN) {
        set_phase(r, PH_CLOSE);
    }
}

/* ---- closing ------------------------------------------------------------- */

static void collect_handle(uv_handle_t *h, void *arg)
{
    struct run *r = arg;

    if ((h->type == UV_IDLE || h->type == UV_TIMER) &&
        h->data == (void *)r->ctx && r->n_lws_handles < MAX_STATIC_HANDLES)
        r->lws_handles[r->n_lws_handles++] = h;
}

struct probe {
    struct run *r;
    size_t alive;
};

static void probe_handle(uv_handle_t *h, void *arg)
{
    struct probe *p = arg;

    for (size_t i = 0; i < p->r->n_lws_handles; i++)
        if (p->r->lws_handles[i] == h)
            p->alive++;
}

static void on_handle_closed(uv_handle_t *h)
{
    struct run *r = h->data;

    r->open_handles--;
}

static void close_own_handles(struct run *r)
{
    uv_close((uv_handle_t *)&r->tick, on_handle_closed);
    uv_close((uv_handle_t *)&r->progress, on_handle_closed);
    uv_close((uv_handle_t *)&r->close_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->sigint, on_handle_closed);
    uv_close((uv_handle_t *)&r->sigterm, on_handle_closed);
}

static void on_close_tick(uv_timer_t *t)
{
    struct run *r = t->data;
    struct probe pr = {r, 0};
    double now = bench_now_s();

    if (r->phase == PH_CLOSE) {
        if (r->n_open > 0 && now - r->t_phase < CLOSE_WS_WAIT_S)
            return;
        r->phase = PH_DONE;
        r->t_phase = now;
        lws_context_destroy(r->ctx);
        return;
    }
    if (r->ctx != NULL) {
        uv_walk(&r->loop, probe_handle, &pr);
        if (pr.alive == 0)
            lws_context_destroy(r->ctx); /* finishes; NULLs r->ctx */
        if (r->ctx != NULL) {
            if (now - r->t_phase > 10.0) {
                fprintf(stderr, "driftd-bench: lws context not destroyed "
                                "after 10 s; leaving\n");
                uv_stop(&r->loop);
            }
            return;
        }
    }
    uv_timer_stop(t);
    close_own_handles(r);
}

static void start_close(struct run *r)
{
    uv_timer_stop(&r->tick);
    uv_timer_stop(&r->progress);
    if (!r->o->quiet && r->progress_tty)
        fputc('\n', stderr);
    for (size_t i = 0; i < r->n_conns; i++) {
        struct conn *c = &r->conns[i];

        c->closing = true;
        if (c->wsi != NULL && c->state == CS_OPEN) {
            c->want_writable = false;
            ask_writable(c);
        }
    }
    uv_timer_start(&r->close_timer, on_close_tick, CLOSE_TICK_MS,
                   CLOSE_TICK_MS);
}

/* ---- set-up -------------------------------------------------------------- */

static int build(struct run *r)
{
    const struct bench_opts *o = r->o;
    unsigned n_rooms = o->rooms, g = 0, ci = 0;
    size_t n_conns;

    r->n_rooms = n_rooms;
    r->n_pubs = o->publishers;
    n_conns = (size_t)o->publishers + o->subscribers;
    r->n_conns = n_conns;
    r->lo = 0;
    r->hi = n_conns;
    r->rooms = calloc(n_rooms, sizeof(*r->rooms));
    r->conns = calloc(n_conns ? n_conns : 1, sizeof(*r->conns));
    r->pubs = calloc(r->n_pubs ? r->n_pubs : 1, sizeof(*r->pubs));
    r->pub_local = calloc(r->n_pubs ? r->n_pubs : 1, sizeof(*r->pub_local));
    r->pub_room = calloc(r->n_pubs ? r->n_pubs : 1, sizeof(*r->pub_room));
    r->keys = calloc(r->n_pubs + 1, sizeof(*r->keys));
    if (r->rooms == NULL || r->conns == NULL || r->pubs == NULL ||
        r->pub_local == NULL || r->pub_room == NULL || r->keys == NULL)
        return -1;
    /* publishers round-robin over rooms */
    for (unsigned i = 0; i < n_rooms; i++) {
        struct room *rm = &r->rooms[i];

        rm->n_pubs = o->publishers / n_rooms + (i < o->publishers % n_rooms);
        rm->pubs = calloc(rm->n_pubs ? rm->n_pubs : 1, sizeof(*rm->pubs));
        if (rm->pubs == NULL)
            return -1;
        rm->n_pubs = 0;
    }
    for (g = 0; g < o->publishers; g++) {
        struct room *rm = &r->rooms[g % n_rooms];

        r->pub_local[g] = rm->n_pubs;
        r->pub_room[g] = rm;
        rm->pubs[rm->n_pubs++] = g;
    }
    r->keys[0] = strdup("k");
    if (r->keys[0] == NULL)
        return -1;
    if (o->distinct_keys)
        for (g = 0; g < o->publishers; g++) {
            char k[24];

            snprintf(k, sizeof(k), "p%u", g);
            free(r->keys[g]);
            r->keys[g] = strdup(k);
            if (r->keys[g] == NULL)
                return -1;
        }
    /* connections: room by room, its publishers first, then its share of
     * the subscribers; nodes round-robin over the whole list */
    for (unsigned i = 0; i < n_rooms; i++) {
        struct room *rm = &r->rooms[i];
        unsigned subs =
            o->subscribers / n_rooms + (i < o->subscribers % n_rooms);

        for (unsigned k = 0; k < rm->n_pubs + subs; k++) {
            struct conn *c = &r->conns[ci];

            c->run = r;
            c->idx = ci;
            c->url = (unsigned)(ci % o->n_urls);
            c->room = rm;
            c->is_pub = k < rm->n_pubs;
            if (c->is_pub) {
                c->pub_id = rm->pubs[k];
                r->pubs[c->pub_id] = c;
            }
            c->last_ctr =
                calloc(rm->n_pubs ? rm->n_pubs : 1, sizeof(*c->last_ctr));
            if (c->last_ctr == NULL)
                return -1;
            r->res->nodes[c->url].conns++;
            ci++;
        }
    }
    /* one frame, or up to 64 KiB of coalesced frames */
    r->wcap = o->value_size + 256 + (o->coalesce ? 65536 : 0);
    r->wbuf = malloc(LWS_PRE + r->wcap);
    r->fbuf = malloc(o->value_size + 256);
    r->vbuf = malloc(o->value_size + 64);
    if (getrandom(&r->rng, sizeof(r->rng), 0) != sizeof(r->rng) || r->rng == 0)
        r->rng = now_ns() | 1;
    r->flow_room = o->rate <= 0 && !o->distinct_keys;
    if (r->flow_room)
        for (unsigned i = 0; i < n_rooms; i++) {
            uint64_t size = 64;

            while (size < 2 * (uint64_t)o->window + 64)
                size *= 2;
            r->rooms[i].ring = calloc(size, sizeof(*r->rooms[i].ring));
            r->rooms[i].ring_mask = size - 1;
            if (r->rooms[i].ring == NULL)
                return -1;
        }
    r->ack_h = malloc(sizeof(*r->ack_h));
    r->del_h = malloc(sizeof(*r->del_h));
    r->int_h = malloc(sizeof(*r->int_h));
    if (r->wbuf == NULL || r->vbuf == NULL || r->fbuf == NULL ||
        r->ack_h == NULL || r->del_h == NULL || r->int_h == NULL)
        return -1;
    bench_hist_reset(r->ack_h);
    bench_hist_reset(r->del_h);
    bench_hist_reset(r->int_h);
    return 0;
}

static void release(struct run *r)
{
    if (r->rooms != NULL)
        for (size_t i = 0; i < r->n_rooms; i++) {
            free(r->rooms[i].pubs);
            free(r->rooms[i].ring);
        }
    if (r->conns != NULL)
        for (size_t i = 0; i < r->n_conns; i++) {
            free(r->conns[i].last_ctr);
            free(r->conns[i].rx);
            free(r->conns[i].frag);
        }
    if (r->keys != NULL)
        for (size_t i = 0; i <= r->n_pubs; i++)
            free(r->keys[i]);
    free(r->keys);
    free(r->rooms);
    free(r->conns);
    free(r->pubs);
    free(r->pub_local);
    free(r->pub_room);
    free(r->wbuf);
    free(r->fbuf);
    free(r->vbuf);
    free(r->ack_h);
    free(r->del_h);
    free(r->int_h);
}

/* Rooms are created on the first node; every node must know them before
 * clients connect to it (a follower applies the creation a little later):
 * the last room created must be visible everywhere. */
static int create_rooms(struct run *r)
{
    const struct bench_opts *o = r->o;
    char *ids, err[256], path[BENCH_ROOM_ID_MAX + 16];
    double deadline;

    ids = calloc(r->n_rooms, BENCH_ROOM_ID_MAX);
    if (ids == NULL)
        return -1;
    if (bench_http_new_rooms(&o->urls[0], (unsigned)r->n_rooms, 32, ids, 10.0,
                             err, sizeof(err)) != 0) {
        fprintf(stderr, "driftd-bench: creating rooms: %s\n", err);
        free(ids);
        return -1;
    }
    for (size_t i = 0; i < r->n_rooms; i++)
        memcpy(r->rooms[i].id, ids + i * BENCH_ROOM_ID_MAX, BENCH_ROOM_ID_MAX);
    free(ids);
    deadline = bench_now_s() + 10.0;
    for (size_t u = 1; u < o->n_urls; u++) {
        snprintf(path, sizeof(path), "/room/%s", r->rooms[r->n_rooms - 1].id);
        while (bench_http_status(&o->urls[u], path, 2.0) != 200) {
            if (bench_now_s() > deadline) {
                fprintf(stderr, "driftd-bench: room %s not visible on %s\n",
                        r->rooms[r->n_rooms - 1].id, o->urls[u].hostport);
                return -1;
            }
            usleep(20000);
        }
    }
    return 0;
}

static int start_loop(struct run *r)
{
    struct lws_context_creation_info info;
    void *loops[1];

    if (uv_loop_init(&r->loop) != 0)
        return -1;
    lws_set_log_level(LLL_ERR | LLL_WARN, on_lws_log);
    r->protocols[0].name = "bench-sub";
    r->protocols[0].callback = on_lws_event;
    r->protocols[0].rx_buffer_size = SUB_RX_BUFFER;
    r->protocols[1].name = "bench-pub";
    r->protocols[1].callback = on_lws_event;
    r->protocols[1].rx_buffer_size = PUB_RX_BUFFER;
    memset(&info, 0, sizeof(info));
    loops[0] = &r->loop;
    info.options = LWS_SERVER_OPTION_LIBUV;
    if (r->o->tls) {
        /* the client SSL context of the default vhost, made here once */
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.client_ssl_ca_filepath = r->o->cacert;
    }
    info.foreign_loops = loops;
    info.pcontext = &r->ctx;
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = r->protocols;
    info.pt_serv_buf_size = 32768;
    r->ctx = lws_create_context(&info);
    if (r->ctx == NULL) {
        fprintf(stderr, "driftd-bench: cannot create the lws context "
                        "(libwebsockets-evlib-uv missing?)\n");
        uv_loop_close(&r->loop);
        return -1;
    }
    uv_walk(&r->loop, collect_handle, r);
    uv_timer_init(&r->loop, &r->tick);
    uv_timer_init(&r->loop, &r->progress);
    uv_timer_init(&r->loop, &r->close_timer);
    uv_signal_init(&r->loop, &r->sigint);
    uv_signal_init(&r->loop, &r->sigterm);
    r->tick.data = r->progress.data = r->close_timer.data = r;
    r->sigint.data = r->sigterm.data = r;
    r->open_handles = 5;
    if (r->is_worker)
        return 0; /* signals go to the parent, which leads the phases */
    uv_signal_start(&r->sigint, on_signal, SIGINT);
    uv_signal_start(&r->sigterm, on_signal, SIGTERM);
    return 0;
}

/* After the drain: what is still missing is lost. */
static void finish(struct run *r)
{
    struct bench_result *res = r->res;

    res->measured_s = r->t_measure_end - r->t_measure_start;
    res->total = r->c;
    res->ack = *r->ack_h;
    res->deliver = *r->del_h;
    res->conns_target = (unsigned)(r->hi - r->lo);
    res->rooms = (unsigned)r->n_rooms;
    for (size_t i = r->lo; i < r->hi; i++) {
        const struct conn *c = &r->conns[i];
        uint64_t want;

        if (c->is_pub && c->sent > c->acked + c->refused)
            res->unacked += c->sent - c->acked - c->refused;
        /* closed or failed connections already failed the run */
        if (c->state != CS_OPEN && c->state != CS_CLOSED)
            continue;
        if (c->excluded || !c->ready || (c->state == CS_CLOSED && !c->closing))
            continue;
        want = conn_expected(r, c);
        if (c->received < want)
            res->lost += want - c->received;
    }
    if (res->lost > 0)
        fail(r, "%llu pushes acknowledged but not delivered",
             (unsigned long long)res->lost);
    if (res->unacked > 0)
        fail(r, "%llu pushes neither acknowledged nor refused",
             (unsigned long long)res->unacked);
}

bool bench_result_failed(const struct bench_result *r, bool allow_errors)
{
    return r->lost || r->reordered || r->duplicated || r->unacked ||
           r->unexpected_closes || r->connect_failures || r->bad_frames ||
           (!allow_errors && r->total.errors > 0) ||
           (r->total.sent > 0 && r->total.acked == 0) || !r->drained;
}

static void result_init(const struct bench_opts *o, struct bench_result *res)
{
    res->o = o;
    bench_hist_reset(&res->ack);
    bench_hist_reset(&res->deliver);
    bench_hist_reset(&res->connect);
    res->n_nodes = o->n_urls;
    res->machine_busy_pct = -1;
    for (size_t i = 0; i < o->n_urls; i++) {
        res->nodes[i].pid = o->urls[i].pid;
        res->nodes[i].rss_before_kib = -1;
        res->nodes[i].rss_after_kib = -1;
        res->nodes[i].cpu_s = -1;
    }
}

/* The loop from the connect phase to the end, then the check. */
static int run_loop(struct run *r)
{
    if (start_loop(r) != 0)
        return -1;
    r->phase = PH_CONNECT;
    r->t_phase = r->t_prog = bench_now_s();
    uv_timer_start(&r->tick, on_tick, 0, TICK_MS);
    if (r->o->progress_s > 0)
        uv_timer_start(&r->progress, on_progress,
                       (uint64_t)(r->o->progress_s * 1000),
                       (uint64_t)(r->o->progress_s * 1000));
    uv_run(&r->loop, UV_RUN_DEFAULT);
    /* uv_stop() on a stuck lws context leaves handles: close what is ours */
    if (r->open_handles > 0) {
        if (r->ctx == NULL || r->phase != PH_DONE)
            close_own_handles(r);
        uv_run(&r->loop, UV_RUN_DEFAULT);
    }
    if (uv_loop_close(&r->loop) != 0)
        fprintf(stderr, "driftd-bench: event loop still has handles\n");
    finish(r);
    return 0;
}

/* ---- workers (--workers) ------------------------------------------------- */

static struct shared *shared_map(unsigned n_workers, size_t n_rooms)
{
    /* cache-line aligned parts: the workers write their own slots */
    size_t off_w = (sizeof(struct shared) + 63) & ~(size_t)63;
    size_t off_rooms =
        (off_w + n_workers * sizeof(struct shared_worker) + 63) & ~(size_t)63;
    size_t off_min = off_rooms + n_rooms * sizeof(struct shared_room);
    size_t size = off_min + n_rooms * n_workers * sizeof(_Atomic uint64_t);
    uint8_t *base;
    struct shared *sh;

    base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                -1, 0);
    if (base == MAP_FAILED)
        return NULL;
    /* fresh anonymous pages are zero: every flag and count starts at 0 */
    sh = (struct shared *)base;
    sh->size = size;
    sh->n_workers = n_workers;
    sh->w = (struct shared_worker *)(base + off_w);
    sh->rooms = (struct shared_room *)(base + off_rooms);
    sh->min_recv = (_Atomic uint64_t *)(base + off_min);
    for (size_t i = 0; i < n_rooms * n_workers; i++)
        atomic_init(&sh->min_recv[i], UINT64_MAX);
    atomic_init(&sh->phase, PH_CONNECT);
    return sh;
}

/* The child: its share of the connections, to the end of the run; the
 * result goes to its slot of the shared region. Never returns. */
static void worker_main(struct run *r, unsigned w, pid_t parent)
{
    struct shared_worker *me = &r->sh->w[w];
    size_t n = r->n_conns, k = r->sh->n_workers;
    int rv;

    /* nothing must outlive a parent killed without a chance to clean up */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(2);
    signal(SIGINT, SIG_IGN); /* ^C reaches the whole group: parent leads */
    r->is_worker = true;
    r->worker = w;
    r->lo = n * w / k;
    r->hi = n * (w + 1) / k;
    r->next_connect = r->lo;
    r->res = &me->res;
    r->progress_tty = false;
    rv = run_loop(r);
    me->t_fail = r->t_fail;
    if (rv != 0)
        atomic_store(&me->setup_failed, 1);
    else
        atomic_store(&me->done, 1);
    release(r);
    free(r);
    /* _exit: the parent's stdio buffers and atexit handlers (OpenSSL's
     * among them) are not this process' to run */
    fflush(stderr);
    _exit(rv != 0 ? 2 : 0);
}

static volatile sig_atomic_t parent_signals;

static void on_parent_signal(int signum)
{
    (void)signum;
    parent_signals++;
}

static void add_counts(struct bench_counts *a, const struct bench_counts *b)
{
    a->sent += b->sent;
    a->acked += b->acked;
    a->errors += b->errors;
    a->deliveries += b->deliveries;
    a->frames_in += b->frames_in;
    a->bytes_in += b->bytes_in;
    a->stream_sizes += b->stream_sizes;
}

/* The parent's phase change: the window figures, then the workers. */
static void parent_phase(struct run *r, enum phase p)
{
    double now = bench_now_s();

    if (p == PH_MEASURE)
        window_open(r, now);
    else if (p >= PH_DRAIN && r->phase < PH_DRAIN) /* or straight to close */
        window_close(r, now);
    r->phase = p;
    r->t_phase = now;
    atomic_store(&r->sh->phase, (int)p);
}

/* The parent's progress line: the workers' sums. */
static void parent_progress(struct run *r, double now)
{
    struct bench_counts c;
    uint64_t closes = 0;

    memset(&c, 0, sizeof(c));
    r->n_ready = r->n_open = 0;
    bench_hist_reset(r->int_h);
    for (unsigned w = 0; w < r->sh->n_workers; w++) {
        const struct shared_worker *x = &r->sh->w[w];

        add_counts(&c, &x->c);
        r->n_ready += x->n_ready;
        r->n_open += x->n_open;
        closes += x->closes;
        bench_hist_merge(r->int_h, &x->int_h);
    }
    r->c = c;
    r->res->unexpected_closes = closes;
    print_progress(r, now);
}

/* Leads the workers through the phases until they all exited. Returns
 * -1 when one could not set itself up. */
static int coordinate(struct run *r)
{
    const struct bench_opts *o = r->o;
    struct shared *sh = r->sh;
    unsigned k = sh->n_workers, n_exited = 0;
    bool *exited = calloc(k, sizeof(*exited)), setup_failed = false;
    bool drained = false, died = false;
    unsigned handled = 0;
    double next_progress, t_close = 0;
    struct timespec nap = {0, 1000000};
    int rv = 0;

    if (exited == NULL)
        return -1;
    r->phase = PH_CONNECT;
    r->t_phase = r->t_prog = bench_now_s();
    next_progress = r->t_phase + o->progress_s;
    while (n_exited < k) {
        double now;

        nanosleep(&nap, NULL);
        now = bench_now_s();
        for (unsigned w = 0; w < k; w++) {
            int st;

            if (exited[w] || waitpid(r->kids[w], &st, WNOHANG) != r->kids[w])
                continue;
            exited[w] = true;
            n_exited++;
            if (atomic_load(&sh->w[w].done))
                continue;
            if (atomic_load(&sh->w[w].setup_failed)) {
                setup_failed = true;
            } else {
                died = true;
                if (WIFSIGNALED(st))
                    fail(r, "worker %u (pid %d) died: signal %d", w,
                         (int)r->kids[w], WTERMSIG(st));
                else
                    fail(r, "worker %u (pid %d) exited with status %d", w,
                         (int)r->kids[w], WEXITSTATUS(st));
            }
            if (r->phase < PH_CLOSE) /* the others stop too */
                parent_phase(r, PH_CLOSE);
        }
        if ((unsigned)parent_signals != handled) {
            handled = (unsigned)parent_signals;
            r->res->interrupted = true;
            if (r->phase < PH_DRAIN) {
                if (!o->quiet)
                    fprintf(stderr, "\ndriftd-bench: interrupted: draining "
                                    "(again to skip)\n");
                parent_phase(r, PH_DRAIN);
            } else if (r->phase == PH_DRAIN) {
                parent_phase(r, PH_CLOSE);
            }
        }
        switch (r->phase) {
        case PH_CONNECT: {
            bool all = true;

            for (unsigned w = 0; w < k && all; w++)
                all = atomic_load(&sh->w[w].connected) != 0;
            if (all)
                parent_phase(r, o->warmup_s > 0 ? PH_WARMUP : PH_MEASURE);
            break;
        }
        case PH_WARMUP:
            if (now - r->t_phase >= o->warmup_s)
                parent_phase(r, PH_MEASURE);
            break;
        case PH_MEASURE:
            if (now - r->t_phase >= o->duration_s)
                parent_phase(r, PH_DRAIN);
            break;
        case PH_DRAIN: {
            bool all = true;

            for (unsigned w = 0; w < k && all; w++)
                all = atomic_load(&sh->w[w].drained) != 0;
            if (all) {
                drained = true;
                parent_phase(r, PH_CLOSE);
            } else if (now - r->t_phase >= o->drain_s) {
                fail(r, "not everything arrived within the %.0f s drain",
                     o->drain_s);
                parent_phase(r, PH_CLOSE);
            }
            break;
        }
        case PH_CLOSE:
            if (t_close == 0)
                t_close = now;
            if (now - t_close > WORKER_EXIT_WAIT_S) {
                fprintf(stderr,
                        "driftd-bench: workers still running %.0f s "
                        "after the end; killing them\n",
                        WORKER_EXIT_WAIT_S);
                for (unsigned w = 0; w < k; w++)
                    if (!exited[w])
                        kill(r->kids[w], SIGKILL);
                t_close = now; /* and reap them next round */
            }
            break;
        default:
            break;
        }
        if (o->progress_s > 0 && now >= next_progress && r->phase < PH_CLOSE) {
            parent_progress(r, now);
            next_progress = now + o->progress_s;
        }
    }
    if (!o->quiet && r->progress_tty && o->progress_s > 0)
        fputc('\n', stderr);
    r->res->drained = drained && !died;
    free(exited);
    if (setup_failed)
        rv = -1;
    return rv;
}

/* The workers' results into the parent's: sums, merged histograms, the
 * connect time from the first connect anywhere to the last worker done,
 * and the failure that came first. */
static void merge_results(struct run *r)
{
    struct bench_result *res = r->res;
    double first = 0, last = 0,
           t_fail = r->res->first_failure[0] ? r->t_fail : 0;

    res->measured_s = r->t_measure_end - r->t_measure_start;
    res->conns_target = (unsigned)r->n_conns;
    res->rooms = (unsigned)r->n_rooms;
    res->conns_ready = 0;
    memset(&res->window, 0, sizeof(res->window));
    memset(&res->total, 0, sizeof(res->total));
    res->unexpected_closes = 0;
    for (unsigned w = 0; w < r->sh->n_workers; w++) {
        const struct shared_worker *x = &r->sh->w[w];
        const struct bench_result *y = &x->res;

        add_counts(&res->window, &y->window);
        add_counts(&res->total, &y->total);
        bench_hist_merge(&res->ack, &y->ack);
        bench_hist_merge(&res->deliver, &y->deliver);
        bench_hist_merge(&res->connect, &y->connect);
        res->conns_ready += y->conns_ready;
        res->lost += y->lost;
        res->reordered += y->reordered;
        res->duplicated += y->duplicated;
        res->unacked += y->unacked;
        res->unexpected_closes += y->unexpected_closes;
        res->slow_consumer += y->slow_consumer;
        res->connect_failures += y->connect_failures;
        res->bad_frames += y->bad_frames;
        res->behind += y->behind;
        if (x->t_first_connect > 0 &&
            (first == 0 || x->t_first_connect < first))
            first = x->t_first_connect;
        if (x->t_connected > last)
            last = x->t_connected;
        if (y->first_failure[0] != '\0' &&
            (t_fail == 0 || x->t_fail < t_fail)) {
            memcpy(res->first_failure, y->first_failure,
                   sizeof(res->first_failure));
            t_fail = x->t_fail;
        }
    }
    res->connect_s = first > 0 && last > first ? last - first : 0;
}

static int run_workers(struct run *r)
{
    const struct bench_opts *o = r->o;
    unsigned k = o->workers;
    struct sigaction sa, old_int, old_term;
    pid_t parent = getpid();
    int rv = 0;

    r->sh = shared_map(k, r->n_rooms);
    r->kids = calloc(k, sizeof(*r->kids));
    if (r->sh == NULL || r->kids == NULL) {
        fprintf(stderr,
                "driftd-bench: cannot map the workers' shared "
                "memory: %s\n",
                strerror(errno));
        return -1;
    }
    for (unsigned w = 0; w < k; w++)
        result_init(o, &r->sh->w[w].res);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_parent_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    fflush(NULL); /* or the children would write it again */
    for (unsigned w = 0; w < k; w++) {
        pid_t pid = fork();

        if (pid == 0)
            worker_main(r, w, parent);
        if (pid < 0) {
            fprintf(stderr, "driftd-bench: fork: %s\n", strerror(errno));
            atomic_store(&r->sh->phase, PH_CLOSE);
            break;
        }
        r->kids[r->n_kids++] = pid;
    }
    if (r->n_kids < k) {
        for (unsigned w = 0; w < r->n_kids; w++)
            waitpid(r->kids[w], NULL, 0);
        rv = -1;
    } else {
        rv = coordinate(r);
        merge_results(r);
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    munmap(r->sh, r->sh->size);
    r->sh = NULL;
    free(r->kids);
    r->kids = NULL;
    return rv;
}

int bench_run(const struct bench_opts *o, struct bench_result *res)
{
    struct run *r;
    int rv = -1;

    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -1;
    r->o = o;
    r->res = res;
    result_init(o, res);
    r->progress_tty = isatty(STDERR_FILENO) != 0;
    if (build(r) != 0) {
        fprintf(stderr, "driftd-bench: out of memory\n");
        goto out;
    }
    if (create_rooms(r) != 0)
        goto out;
    read_node_rss(r, false);
    if (o->workers > 1)
        rv = run_workers(r);
    else
        rv = run_loop(r);
out:
    release(r);
    free(r);
    return rv;
}
