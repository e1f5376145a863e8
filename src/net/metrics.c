/*
 * metrics.c - GET /metrics: this node's counters and gauges in the
 * Prometheus text exposition format, version 0.0.4.
 *
 * Design in a few lines:
 * - Counters are plain uint64_t increments where events happen (net's
 *   struct net_metrics, consensus' struct cons_stats): one loop thread, no
 *   locks, no allocation per message.
 * - Gauges are read at scrape time from their owners: connections by a walk
 *   over srv->conns (O(connections)), relay totals by relay_rooms_each
 *   (O(rooms): relay keeps per-room totals, not global ones), raft from
 *   cons_node_status / cons_node_members, the process from /proc/self.
 * - One scrape builds its text into one growing buffer; the answer is that
 *   buffer. docs/benchmarks.md has what a scrape costs.
 *
 * Not here: per-room or per-session series (their label sets would be
 * unbounded).
 */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

void net__metrics_latency(struct net_server *s, uint64_t start_ns)
{
    uint64_t now = uv_hrtime();

    cons_hist_add(&s->metrics.ack,
                  now > start_ns ? (double)(now - start_ns) / 1e6 : 0);
}

/* ---- the text buffer ---------------------------------------------------- */

struct out {
    char *buf;
    size_t len, cap;
    bool failed; /* out of memory: the scrape answers 503 */
};

static void put(struct out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (o->failed)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = true;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)n;
        char *b = realloc(o->buf, cap);

        if (b == NULL) {
            o->failed = true;
            return;
        }
        o->buf = b;
        o->cap = cap;
    }
}

/* HELP and TYPE of one metric family. */
static void head(struct out *o, const char *name, const char *type,
                 const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(struct out *o, const char *name, const char *type,
                const char *help, unsigned long long v)
{
    head(o, name, type, help);
    put(o, "%s %llu\n", name, v);
}

/* A histogram from non-cumulative buckets by cons_lat_bounds_ms (the last
 * one over them), in seconds. */
static void histogram(struct out *o, const char *name, const char *help,
                      const struct cons_hist *h)
{
    uint64_t cum = 0;
    size_t i;

    head(o, name, "histogram", help);
    for (i = 0; i < CONS_LAT_BUCKETS; i++) {
        cum += h->buckets[i];
        put(o, "%s_bucket{le=\"%g\"} %llu\n", name, cons_lat_bounds_ms[i] / 1e3,
            (unsigned long long)cum);
    }
    cum += h->buckets[CONS_LAT_BUCKETS];
    put(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    put(o, "%s_sum %.9g\n", name, h->seconds);
    put(o, "%s_count %llu\n", name, (unsigned long long)h->count);
}

/* ---- families ----------------------------------------------------------- */

static const char *const fmt_names[RELAY_FMT_COUNT] = {"json", "cbor",
                                                       "msgpack"};
static const char *const tr_names[NET_TR_COUNT] = {"ws", "http"};
static const char *const act_names[4] = {"relay", "replace", "append",
                                         "compact"};
static const char *const err_names[NET_ERR_COUNT] = {
    "decode",  "rate_limit",  "not_ready", "room_not_found",
    "too_big", "not_applied", "refused",   "other"};

static void put_connections(struct out *o, struct net_server *s)
{
    size_t ws[RELAY_FMT_COUNT] = {0}, http = 0, fwd = 0, slow_queued = 0;
    const struct net_conn *c;
    size_t i;

    for (c = s->conns; c != NULL; c = c->next) {
        if (c->kind == NET_CONN_FWD)
            fwd++;
        else if (c->kind == NET_CONN_WS &&
                 (unsigned)c->fmt_out < RELAY_FMT_COUNT)
            ws[c->fmt_out]++;
        else
            http++;
        slow_queued += c->out_bytes;
    }
    head(o, "driftd_connections", "gauge",
         "Open client connections by kind (ws, http, forward) and format.");
    for (i = 0; i < RELAY_FMT_COUNT; i++)
        put(o, "driftd_connections{kind=\"ws\",format=\"%s\"} %zu\n",
            fmt_names[i], ws[i]);
    put(o, "driftd_connections{kind=\"http\",format=\"json\"} %zu\n", http);
    put(o, "driftd_connections{kind=\"forward\",format=\"batch\"} %zu\n", fwd);
    one(o, "driftd_outbound_queued_bytes", "gauge",
        "Bytes queued to WebSocket sessions, not yet written.", slow_queued);
    one(o, "driftd_ws_sessions_accepted_total", "counter",
        "WebSocket sessions established.", s->metrics.ws_accepted);
    one(o, "driftd_http_requests_total", "counter", "HTTP requests received.",
        s->metrics.http_requests);
}

struct room_sums {
    size_t rooms, keys, entries, bytes;
};

static void sum_room(void *arg, const struct relay_room_info *ri)
{
    struct room_sums *t = arg;

    t->rooms++;
    t->keys += ri->keys;
    t->entries += ri->entries;
    t->bytes += ri->bytes;
}

static void put_relay(struct out *o, struct net_server *s)
{
    struct room_sums t = {0};

    relay_rooms_each(cons_node_state(s->cons), sum_room, &t);
    one(o, "driftd_rooms", "gauge", "Rooms in the applied state.", t.rooms);
    one(o, "driftd_keys", "gauge", "Keys with a retained stream.", t.keys);
    one(o, "driftd_retained_entries", "gauge",
        "Entries retained over all streams.", t.entries);
    one(o, "driftd_retained_bytes", "gauge",
        "Retained key and value bytes (the room limit's measure).", t.bytes);
    one(o, "driftd_local_rooms", "gauge",
        "Rooms with WebSocket sessions on this node.", s->rooms.count);
}

static void put_traffic(struct out *o, struct net_server *s)
{
    const struct net_metrics *m = &s->metrics;
    size_t t, a;

    head(o, "driftd_pushes_total", "counter",
         "Pushes received from clients of this node, by action and "
         "transport.");
    for (t = 0; t < NET_TR_COUNT; t++)
        for (a = 0; a < 4; a++)
            put(o, "driftd_pushes_total{action=\"%s\",transport=\"%s\"} %llu\n",
                act_names[a], tr_names[t], (unsigned long long)m->pushes[t][a]);
    one(o, "driftd_deliveries_total", "counter",
        "Push frames queued to subscribed sessions.", m->deliveries);
    head(o, "driftd_stream_size_total", "counter",
         "stream_size answers sent, by transport.");
    for (t = 0; t < NET_TR_COUNT; t++)
        put(o, "driftd_stream_size_total{transport=\"%s\"} %llu\n", tr_names[t],
            (unsigned long long)m->stream_size[t]);
    head(o, "driftd_errors_total", "counter",
         "Errors answered to clients, by kind.");
    for (t = 0; t < NET_ERR_COUNT; t++)
        put(o, "driftd_errors_total{kind=\"%s\"} %llu\n", err_names[t],
            (unsigned long long)m->errors[t]);
    one(o, "driftd_slow_consumer_closes_total", "counter",
        "Sessions closed because their outbound queue was over budget.",
        m->slow_closes);

    histogram(o, "driftd_push_ack_seconds",
              "Push proposal to its apply on the origin node (the client's "
              "ack).",
              &m->ack);
    histogram(o, "driftd_push_deliver_seconds",
              "The leader's time stamp of the entry holding a push to its "
              "frames queued to this node's subscribers (clocks of different "
              "machines add their skew; millisecond resolution).",
              &m->deliver);
    histogram(o, "driftd_loop_lag_seconds",
              "Each turn of the event loop: its time outside the wait for "
              "events, i.e. how long an event arriving meanwhile waited for "
              "the loop.",
              &m->loop_lag);
    head(o, "driftd_loop_lag_max_seconds", "gauge",
         "The longest loop lag seen since the start.");
    put(o, "driftd_loop_lag_max_seconds %.6f\n", m->loop_lag_max_ms / 1e3);
}

static void put_forward(struct out *o, struct net_server *s)
{
    const struct net_fwd_link *l = &s->fwd;

    one(o, "driftd_forward_link_up", "gauge",
        "1 while this follower's link to the leader is established.",
        l->state == NET_FWD_UP);
    one(o, "driftd_forward_queue_batches", "gauge",
        "Batches waiting for the link to the leader.", l->q_len);
    one(o, "driftd_forward_queue_bytes", "gauge",
        "Bytes waiting for the link to the leader.", l->q_bytes);
    one(o, "driftd_forward_resets_total", "counter",
        "Times the link to the leader dropped and unapplied commands were "
        "re-sent.",
        s->metrics.fwd_resets);
    one(o, "driftd_forward_batches_total", "counter",
        "Batches written on the link to the leader.", s->metrics.fwd_batches);
}

static void put_member(void *arg, const struct cons_member *m)
{
    struct out *o = arg;

    if (m->has_match)
        put(o, "driftd_raft_peer_match_index{peer=\"%u\"} %llu\n", m->id,
            (unsigned long long)m->match_index);
}

static void put_raft(struct out *o, struct net_server *s)
{
    static const char *const roles[] = {"starting", "unavailable", "follower",
                                        "candidate", "leader"};
    const struct cons_stats *cs = cons_node_stats(s->cons);
    struct cons_status st;
    size_t i;

    cons_node_status(s->cons, &st);
    one(o, "driftd_raft_node_id", "gauge", "This node's raft id.", st.id);
    head(o, "driftd_raft_role", "gauge", "1 for this node's current role.");
    for (i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
        put(o, "driftd_raft_role{role=\"%s\"} %d\n", roles[i],
            st.role != NULL && strcmp(st.role, roles[i]) == 0);
    one(o, "driftd_raft_term", "gauge", "Current raft term.", st.term);
    one(o, "driftd_raft_leader_id", "gauge", "Known leader's id (0: none).",
        st.leader_id);
    one(o, "driftd_raft_commit_index", "gauge", "Raft commit index.",
        st.commit_index);
    one(o, "driftd_raft_applied_index", "gauge", "Last applied index.",
        st.applied_index);
    one(o, "driftd_raft_last_index", "gauge", "Last index in the log.",
        st.last_index);
    one(o, "driftd_raft_proposer_queued", "gauge",
        "Commands waiting in the proposer (own and forwarded).", st.queued);
    head(o, "driftd_raft_peer_match_index", "gauge",
         "Match index of each member (on the leader only).");
    cons_node_members(s->cons, put_member, o);
    one(o, "driftd_raft_elections_total", "counter",
        "Term changes seen while running (each is an election).",
        cs->terms_seen);
    one(o, "driftd_raft_leader_changes_total", "counter",
        "Times a different node became the known leader.", cs->leader_changes);
    one(o, "driftd_raft_entries_applied_total", "counter",
        "Log entries applied.", cs->entries_applied);
    one(o, "driftd_raft_commands_applied_total", "counter",
        "Commands applied (entries hold batches of them).",
        cs->commands_applied);
    one(o, "driftd_snapshots_total", "counter", "Snapshots taken.",
        cs->snapshots);
    one(o, "driftd_snapshot_restores_total", "counter",
        "Snapshots installed (at start-up or sent by the leader).",
        cs->restores);
    one(o, "driftd_snapshot_last_bytes", "gauge", "Size of the last snapshot.",
        cs->snapshot_bytes);
    histogram(o, "driftd_raft_entry_commit_seconds",
              "Leader: an entry from raft_apply to its apply here (local "
              "append, replication to a majority, commit).",
              &cs->commit);
    histogram(o, "driftd_raft_append_seconds",
              "One append of entries to this node's log: write and fsync.",
              &cs->append);
    head(o, "driftd_snapshot_last_seconds", "gauge",
         "How long taking the last snapshot held the loop.");
    put(o, "driftd_snapshot_last_seconds %.6f\n", cs->snapshot_seconds);
}

/* /proc/self: CPU seconds, RSS, open and allowed descriptors. Reads of
 * procfs do not touch a disk. */
static void put_process(struct out *o)
{
    unsigned long long ut = 0, st = 0, pages = 0, rss = 0;
    long tck = sysconf(_SC_CLK_TCK), psz = sysconf(_SC_PAGESIZE);
    char buf[1024], *p;
    size_t fds = 0;
    struct dirent *de;
    FILE *f;
    DIR *d;

    f = fopen("/proc/self/stat", "r");
    if (f != NULL) {
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);

        buf[n] = '\0';
        fclose(f);
        /* Fields after the command name, which may hold spaces: from the
         * last ')'. utime and stime are fields 14 and 15 (proc(5)). */
        p = strrchr(buf, ')');
        if (p == NULL ||
            sscanf(p + 2,
                   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                   &st) != 2)
            ut = st = 0;
    }
    f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        if (fscanf(f, "%llu %llu", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    d = opendir("/proc/self/fd");
    if (d != NULL) {
        while ((de = readdir(d)) != NULL)
            if (de->d_name[0] != '.')
                fds++;
        closedir(d);
        if (fds > 0)
            fds--; /* the directory's own descriptor */
    }
    head(o, "driftd_process_cpu_seconds_total", "counter",
         "User and system CPU time of the process.");
    put(o, "driftd_process_cpu_seconds_total %.2f\n",
        tck > 0 ? (double)(ut + st) / (double)tck : 0.0);
    one(o, "driftd_process_resident_memory_bytes", "gauge",
        "Resident set size.", rss * (unsigned long long)(psz > 0 ? psz : 4096));
    one(o, "driftd_process_open_fds", "gauge", "Open file descriptors.", fds);
}

char *net__metrics_text(struct net_server *s, size_t *len)
{
    struct out o = {0};

    o.cap = 16384;
    o.buf = malloc(o.cap);
    if (o.buf == NULL)
        return NULL;
    put_connections(&o, s);
    put_relay(&o, s);
    put_traffic(&o, s);
    put_forward(&o, s);
    put_raft(&o, s);
    put_process(&o);
    if (o.failed) {
        free(o.buf);
        return NULL;
    }
    *len = o.len;
    return o.buf;
}
