/*
 * node.c - a consensus node's lifecycle: raft_uv I/O and TCP transport on
 * the node's loop, bootstrap, start, status, and the close cascade.
 *
 * Happy path: init (no I/O) -> start (mkdir data dir, raft_uv_tcp_init,
 * raft_uv_init, raft_init, raft_bootstrap when the dir is empty, raft_start)
 * -> ... -> stop (fail queued commands as cancelled) -> close: raft_close,
 * and in its callback release the raft_uv I/O and transport, then close our
 * own handles; the user's callback fires after the last one.
 *
 * Failure modes: start errors leave errmsg as "context: detail"; close is
 * safe after a failed init or start.
 *
 * Not here: proposing (proposer.c), the FSM (fsm.c), forwarding.
 */
#define LOG_MODULE "cons"
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "internal.h"
#include "log.h"

const char *cons_strerror(int code)
{
    switch (code) {
    case CONS_OK:
        return "ok";
    case CONS_ENOMEM:
        return "out of memory";
    case CONS_EINVAL:
        return "invalid argument";
    case CONS_EIO:
        return "I/O error";
    case CONS_EFULL:
        return "proposal queue full";
    case CONS_ENOTAPPLIED:
        return "not applied";
    case CONS_EUNKNOWN:
        return "leadership lost before commit";
    case CONS_ECLOSING:
        return "node shutting down";
    case CONS_ENOLEADER:
        return "no leader known";
    case CONS_ENOTLEADER:
        return "not the leader";
    case CONS_EBUSY:
        return "another membership change is in progress";
    case CONS_ENOTFOUND:
        return "no such node in the cluster";
    case CONS_EAGAIN:
        return "a new leader is settling in: retry shortly";
    case CONS_EPERM:
        return "command not allowed on a forward link";
    case CONS_EISLEADER:
        return "the node is the leader: transfer leadership first";
    case CONS_ELASTVOTER:
        return "the node is the last voter";
    case CONS_EQUORUM:
        return "the change would leave the cluster without a working majority";
    case CONS_EUNREACHABLE:
        return "leader not reachable";
    case CONS_ESTALLED:
        return "the log did not take it in time";
    case CONS_ELEADERGONE:
        return "contact with the leader lost, no leader known";
    case CONS_ELINKLOST:
        return "link to the leader lost";
    case CONS_ETIMEDOUT:
        return "not seen committed in time";
    case CONS_ECLOSED:
        return "node shut down before commit";
    case CONS_ENOSPACE:
        return "disk full";
    default:
        return "unknown error";
    }
}

bool cons_outcome_unknown(int code)
{
    switch (code) {
    case CONS_EUNKNOWN:
    case CONS_ELEADERGONE:
    case CONS_ELINKLOST:
    case CONS_ETIMEDOUT:
    case CONS_ECLOSED:
        return true;
    default:
        return false;
    }
}

void cons_config_default(struct cons_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->id = 1;
    cfg->raft_addr = "127.0.0.1:9080";
    cfg->data_dir = "driftd-data";
    /* A dead leader is replaced 1x-2x this after its last heartbeat
     * (docs/benchmarks.md, "Failover"); a leader whose loop stalls this
     * long is replaced too (docs/operations.md, "Snapshots"). */
    cfg->election_timeout_ms = 500;
    cfg->heartbeat_timeout_ms = 50;
    cfg->snapshot_threshold = 65536;
    cfg->snapshot_bytes = (size_t)64 << 20;
    cfg->snapshot_trailing = 2048;
    cfg->snapshot_mode = CONS_SNAP_THREAD;
    cfg->max_batch_bytes = 1u << 20;
    cfg->max_queue_cmds = 65536;
    cfg->max_queue_bytes = 64u << 20;
    cfg->queue_timeout_ms = 5000;
    cfg->room_ttl_ms = 24ull * 3600 * 1000;
    relay_limits_default(&cfg->limits);
}

/*
 * One random session per proposer inside this node (enum cons__owner),
 * all distinct, top bit set, low 32 bits zero.
 */
static void sys_sessions_init(struct cons_node *n)
{
    for (unsigned w = 0; w < CONS_OWN_N; w++) {
        struct cons__sys *s = &n->sys[w];
        bool clash;

        if (cons_random(&s->session, sizeof(s->session)) != CONS_OK)
            s->session = (uint64_t)uv_hrtime() * (2654435761u + 2 * w);
        s->session &= ~(uint64_t)0xffffffffu;
        s->session |= (uint64_t)1 << 63;
        do {
            clash = false;
            for (unsigned v = 0; v < w; v++)
                clash |= n->sys[v].session == s->session;
            if (clash)
                s->session += (uint64_t)1 << 32;
        } while (clash);
        s->counter = 0;
    }
}

void cons__sys_origin(struct cons_node *n, enum cons__owner w,
                      struct relay_origin *o)
{
    o->node = n->cfg.id;
    o->session = n->sys[w].session;
    o->counter = ++n->sys[w].counter;
}

enum cons__owner cons__sys_owner(const struct cons_node *n, uint64_t session)
{
    for (unsigned w = 0; w < CONS_OWN_N; w++)
        if (n->sys[w].session == session)
            return (enum cons__owner)w;
    return CONS_OWN_N;
}

int cons_node_init(struct cons_node **out, uv_loop_t *loop,
                   const struct cons_config *cfg)
{
    uint8_t seed[RELAY_SEED_LEN];
    struct cons_node *n;
    int rv;

    *out = NULL;
    /* Before raft allocates anything (the same allocator as libraft's
     * default, with frees that the snapshot callback holds back). */
    cons__heap_install();
    n = calloc(1, sizeof(*n));
    if (n == NULL)
        return CONS_ENOMEM;
    n->loop = loop;
    n->cfg = *cfg;
    n->max_inflight = 4;
    if (cfg->id == 0 || cfg->raft_addr == NULL || cfg->data_dir == NULL ||
        strlen(cfg->raft_addr) >= sizeof(n->raft_addr) ||
        strlen(cfg->data_dir) >= sizeof(n->data_dir) ||
        (cfg->http_addr != NULL &&
         strlen(cfg->http_addr) >= sizeof(n->http_addr))) {
        rv = CONS_EINVAL;
        goto err_free_node;
    }
    snprintf(n->raft_addr, sizeof(n->raft_addr), "%s", cfg->raft_addr);
    snprintf(n->http_addr, sizeof(n->http_addr), "%s",
             cfg->http_addr != NULL ? cfg->http_addr : "");
    n->cfg.http_addr = n->http_addr;
    sys_sessions_init(n);
    snprintf(n->data_dir, sizeof(n->data_dir), "%s", cfg->data_dir);
    n->cfg.raft_addr = n->raft_addr;
    n->cfg.data_dir = n->data_dir;
    /* The state's hash tables are keyed with a secret of this process,
     * so clients cannot aim collisions at it (see relay.h). */
    if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed)) {
        uint64_t t = uv_hrtime() ^ (uint64_t)(uintptr_t)n;

        memcpy(seed, &t, sizeof(t));
        memcpy(seed + sizeof(t), &n->sys[0].session, sizeof(uint64_t));
    }
    /* Compiled-in limits, the same on every node, until the cluster
     * settings come through the log (settings.c); cfg->limits are only what
     * this node proposes if it is the first leader. */
    if (relay_state_create_seeded(NULL, seed, &n->state) != RELAY_OK) {
        rv = CONS_ENOMEM;
        goto err_free_node;
    }
    rv = cons__proposer_init(n);
    if (rv != CONS_OK)
        goto err_destroy_state;
    cons__fsm_init(n);
    *out = n;
    return CONS_OK;

err_destroy_state:
    relay_state_destroy(n->state);
err_free_node:
    free(n);
    return rv;
}

void cons_node_set_callbacks(struct cons_node *n, cons_applied_cb applied,
                             cons_failed_cb failed, void *arg)
{
    n->on_applied = applied;
    n->on_failed = failed;
    n->cb_arg = arg;
}

void cons_node_set_restored_callback(struct cons_node *n,
                                     cons_restored_cb restored)
{
    n->on_restored = restored;
}

const char *cons_node_errmsg(const struct cons_node *n)
{
    return n->errmsg;
}

const struct relay_state *cons_node_state(const struct cons_node *n)
{
    return n->state;
}

uint32_t cons_node_id(const struct cons_node *n)
{
    return n->cfg.id;
}

static int mkdir_p(const char *path)
{
    char buf[4096];
    size_t len = strlen(path);

    if (len == 0 || len >= sizeof(buf))
        return EINVAL;
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];

            buf[i] = '\0';
            if (mkdir(buf, 0700) != 0 && errno != EEXIST)
                return errno;
            buf[i] = c;
        }
    }
    return 0;
}

static void raft_trace(struct raft_tracer *t, int type, const void *info)
{
    const struct raft_tracer_info *ti = info;

    (void)t;
    if (type != RAFT_TRACER_DIAGNOSTIC || ti == NULL || ti->version < 1)
        return;
    if (ti->diagnostic.level <= 2 && log_threshold >= LOG_LVL_WARN)
        log_emit(LOG_LVL_WARN, "raft", ti->diagnostic.file, ti->diagnostic.line,
                 "%s", ti->diagnostic.message);
    else if (log_threshold >= LOG_LVL_DEBUG)
        log_emit(LOG_LVL_DEBUG, "raft", ti->diagnostic.file,
                 ti->diagnostic.line, "%s", ti->diagnostic.message);
}

static struct raft_tracer tracer = {
    .impl = NULL,
    .version = 2,
    .emit = raft_trace,
};

/*
 * Why raft_start failed. libraft does not carry the transport's or the
 * I/O backend's message into its own (a raft port in use left "raft start: "
 * with nothing after it): the first non-empty of the three, else the code.
 */
static const char *start_reason(struct cons_node *n, int rv)
{
    if (n->restore_err[0] != '\0')
        return n->restore_err;
    if (raft_errmsg(&n->raft)[0] != '\0')
        return raft_errmsg(&n->raft);
    if (n->transport.errmsg[0] != '\0')
        return n->transport.errmsg;
    if (n->io.errmsg[0] != '\0')
        return n->io.errmsg;
    return raft_strerror(rv);
}

/*
 * The snapshot raft_start restores: the one with the highest index (then
 * the newest), as libraft picks it. Named in the error when it is damaged.
 */
static void newest_snapshot(const struct cons_node *n, char *out, size_t cap)
{
    unsigned long long term, index, ts, best_i = 0, best_ts = 0;
    struct dirent *e;
    DIR *d;
    int used;

    out[0] = '\0';
    d = opendir(n->data_dir);
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (sscanf(e->d_name, "snapshot-%llu-%llu-%llu%n", &term, &index, &ts,
                   &used) != 3 ||
            e->d_name[used] != '\0')
            continue;
        if (index > best_i || (index == best_i && ts >= best_ts)) {
            best_i = index;
            best_ts = ts;
            snprintf(out, cap, "%.*s", (int)(cap - 1), e->d_name);
        }
    }
    closedir(d);
}

static int bootstrap(struct cons_node *n)
{
    struct raft_configuration conf;
    int rv;

    raft_configuration_init(&conf);
    if (n->cfg.n_bootstrap == 0) {
        rv = raft_configuration_add(&conf, n->cfg.id, n->raft_addr, RAFT_VOTER);
    } else {
        rv = 0;
        for (size_t i = 0; i < n->cfg.n_bootstrap && rv == 0; i++)
            rv = raft_configuration_add(&conf, n->cfg.bootstrap[i].id,
                                        n->cfg.bootstrap[i].raft_addr,
                                        RAFT_VOTER);
    }
    if (rv == 0)
        rv = raft_bootstrap(&n->raft, &conf);
    raft_configuration_close(&conf);
    if (rv == RAFT_CANTBOOTSTRAP)
        return 0; /* data dir already holds a cluster: resume it */
    if (rv != 0) {
        snprintf(n->errmsg, sizeof(n->errmsg), "bootstrap: %s",
                 raft_strerror(rv));
        return CONS_EIO;
    }
    LOG_INFO("event=bootstrapped voters=%zu",
             n->cfg.n_bootstrap == 0 ? (size_t)1 : n->cfg.n_bootstrap);
    return 0;
}

int cons_node_start(struct cons_node *n)
{
    unsigned seed;
    int rv;

    rv = mkdir_p(n->data_dir);
    if (rv != 0) {
        snprintf(n->errmsg, sizeof(n->errmsg), "data dir %.180s: %s",
                 n->data_dir, strerror(rv));
        return CONS_EIO;
    }
    /* Our own transport (transport.c): peers prove they hold the cluster
     * key before libraft sees a byte of theirs. */
    cons__tp_init(&n->tp, &n->transport, n->loop,
                  n->cfg.has_key ? n->cfg.key : NULL);
    n->transport_inited = true;
    if (n->cfg.peer_cert != NULL) {
        char err[200];

        rv = cons__tls_setup(&n->tp, n->cfg.peer_cert, n->cfg.peer_key,
                             n->cfg.peer_ca, err, sizeof(err));
        if (rv != CONS_OK) {
            snprintf(n->errmsg, sizeof(n->errmsg), "raft TLS: %s", err);
            return rv;
        }
    }
    /* libraft 0.22 refuses to init this unless the version is set. */
    n->io.version = 2;
    n->io.data = n;
    rv = raft_uv_init(&n->io, n->loop, n->data_dir, &n->transport);
    if (rv != 0) {
        snprintf(n->errmsg, sizeof(n->errmsg), "raft io %.100s: %.120s",
                 n->data_dir, n->io.errmsg);
        return CONS_EIO;
    }
    n->io_inited = true;
    cons__ready_wrap_io(n);
    cons__iotime_wrap_io(n);
    cons__snapjob_wrap_io(n);
    /* Creating a log segment that failed (disk full) is retried on this
     * period: writes resume this soon after space returns (libraft: 5 s). */
    raft_uv_set_disk_retry(&n->io, 1000);
    /* 16 MiB log segments instead of libraft's 8: fewer segment switches,
     * each of which costs a ~40 ms io_destroy() (on libuv's thread pool with
     * deploy/patches/raft/0004, on the loop before) and file renames in the
     * thread pool.
     * 16 MiB is as far as libraft 0.22.1 goes: it reports its reserved
     * capacity as an unsigned short of KiB (prepared segments plus the
     * spare of open ones, ~3 segments), and at 32 MiB that wraps below its
     * 4 MiB threshold, after which every proposal is refused with "Not
     * enough disk space". */
    raft_uv_set_segment_size(&n->io, CONS_SEGMENT_SIZE);
    /* libraft's auto-recovery moves a damaged last closed segment (and the
     * open ones after it) aside and starts without their entries: entries
     * this node stored, and may have acknowledged to a leader that counted
     * them towards a majority. A node that silently forgets them can make a
     * committed push vanish; it refuses to start instead (a torn tail of an
     * open segment, never acknowledged, is still cut off: patched libraft,
     * deploy/patches/raft/). */
    raft_uv_set_auto_recovery(&n->io, false);
    raft_uv_set_tracer(&n->io, &tracer);
    rv = raft_init(&n->raft, &n->io, &n->fsm, n->cfg.id, n->raft_addr);
    if (rv != 0) {
        snprintf(n->errmsg, sizeof(n->errmsg), "raft init: %s",
                 raft_errmsg(&n->raft));
        return CONS_EIO;
    }
    n->raft_inited = true;
    n->raft.data = n;
    n->raft.tracer = &tracer;
    raft_set_election_timeout(&n->raft, n->cfg.election_timeout_ms);
    raft_set_heartbeat_timeout(&n->raft, n->cfg.heartbeat_timeout_ms);
    raft_set_snapshot_threshold(&n->raft, n->cfg.snapshot_threshold);
    raft_set_snapshot_trailing(&n->raft, n->cfg.snapshot_trailing);
    n->snap_trailing = n->cfg.snapshot_trailing;
    raft_set_pre_vote(&n->raft, true);
    if (getrandom(&seed, sizeof(seed), 0) == (ssize_t)sizeof(seed))
        raft_seed(&n->raft, seed);
    if (!n->cfg.join) {
        rv = bootstrap(n);
        if (rv != 0)
            return rv;
    }
    rv = raft_start(&n->raft);
    if (rv != 0 && n->restore_err[0] != '\0') {
        char snap[128];

        newest_snapshot(n, snap, sizeof(snap));
        snprintf(n->errmsg, sizeof(n->errmsg),
                 "raft start: %.100s/%.60s: %.160s; the node's data is "
                 "damaged: docs/operations.md, \"Damaged data\"",
                 n->data_dir, snap[0] != '\0' ? snap : "snapshot",
                 n->restore_err);
        return CONS_EIO;
    }
    if (rv != 0) {
        snprintf(n->errmsg, sizeof(n->errmsg), "raft start: %.300s%s",
                 start_reason(n, rv),
                 rv == RAFT_CORRUPT ? "; the node's data is damaged: "
                                      "docs/operations.md, \"Damaged data\""
                                    : "");
        return CONS_EIO;
    }
    n->raft_started = true;
    cons__dir_start(n);
    LOG_INFO("event=started id=%u raft=%s data=%s applied=%llu last=%llu",
             n->cfg.id, n->raft_addr, n->data_dir,
             (unsigned long long)raft_last_applied(&n->raft),
             (unsigned long long)raft_last_index(&n->raft));
    return CONS_OK;
}

void cons_node_no_dial(struct cons_node *n)
{
    /* Fewer sockets opened while the node's other parts close theirs (a
     * raft connection opened during shutdown has been seen to get an fd
     * number that libwebsockets then closed a second time; docs/
     * reliability.md). Peers that dial us are still answered. */
    if (n != NULL)
        n->tp.no_dial = true;
}

void cons_node_stop(struct cons_node *n)
{
    if (n->stopping)
        return;
    n->stopping = true;
    cons_node_no_dial(n);
    cons__proposer_fail_all(n, CONS_ECLOSING);
    cons__reads_fail_all(n, CONS_ECLOSING);
}

/* One of the things the close cascade waits for is gone. */
static void node_unref(struct cons_node *n)
{
    if (--n->pending_handles > 0)
        return;
    cons__membership_free(n);
    cons__reads_free(n);
    relay_batch_enc_destroy(n->enc);
    relay_state_destroy(n->state);
    if (n->close_cb != NULL)
        n->close_cb(n->close_arg);
    free(n);
}

void cons__handle_closed(uv_handle_t *h)
{
    node_unref(h->data);
}

static void on_transport_closed(struct raft_uv_transport *t)
{
    struct cons_node *n =
        (struct cons_node *)((char *)t - offsetof(struct cons_node, transport));

    node_unref(n);
}

static void close_own_handles(struct cons_node *n)
{
    if (n->io_inited)
        raft_uv_close(&n->io);
    /* raft_uv closes the transport when raft ran; otherwise we do. */
    if (n->transport_inited && !n->tp.closing) {
        n->pending_handles++;
        n->transport.close(&n->transport, on_transport_closed);
    }
    cons__proposer_close(n);
}

static void on_raft_closed(struct raft *r)
{
    close_own_handles(r->data);
}

void cons_node_close(struct cons_node *n, cons_close_cb cb, void *arg)
{
    if (n == NULL) {
        if (cb != NULL)
            cb(arg);
        return;
    }
    /* Callers are gone by now (net closes first): report nothing more,
     * not even the failures cons_node_stop hands out. */
    n->on_applied = NULL;
    n->on_failed = NULL;
    n->on_restored = NULL;
    n->on_read = NULL;
    cons_node_stop(n);
    n->closing = true;
    n->close_cb = cb;
    n->close_arg = arg;
    if (n->raft_inited) {
        raft_close(&n->raft, on_raft_closed);
        return;
    }
    close_own_handles(n);
}

const double cons_lat_bounds_ms[CONS_LAT_BUCKETS] = {
    0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};

void cons_hist_add(struct cons_hist *h, double ms)
{
    size_t i;

    if (!(ms > 0))
        ms = 0;
    for (i = 0; i < CONS_LAT_BUCKETS && ms > cons_lat_bounds_ms[i]; i++)
        ;
    h->buckets[i]++;
    h->count++;
    h->seconds += ms / 1e3;
}

const struct cons_stats *cons_node_stats(const struct cons_node *n)
{
    return &n->stats;
}

void cons_node_status(const struct cons_node *n, struct cons_status *st)
{
    struct raft *r = (struct raft *)&n->raft;
    raft_id leader = 0;
    const char *addr = NULL;

    memset(st, 0, sizeof(*st));
    st->id = n->cfg.id;
    st->queued = n->pending.count + n->foreign.count;
    if (!n->raft_started) {
        st->role = "starting";
        return;
    }
    st->role = raft_state_name(raft_state(r));
    raft_leader(r, &leader, &addr);
    st->leader_id = (uint32_t)leader;
    st->term = raft_current_term(r);
    st->commit_index = raft_commit_index(r);
    st->applied_index = raft_last_applied(r);
    st->last_index = raft_last_index(r);
    st->config_index = r->configuration_uncommitted_index != 0
                           ? r->configuration_uncommitted_index
                           : r->configuration_committed_index;
}
