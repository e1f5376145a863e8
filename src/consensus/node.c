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
        return "outcome unknown (leadership lost before commit)";
    case CONS_ECLOSING:
        return "node shutting down";
    case CONS_ENOLEADER:
        return "no leader elected in time";
    case CONS_ENOTLEADER:
        return "not the leader";
    case CONS_EBUSY:
        return "another membership change is in progress";
    case CONS_ENOTFOUND:
        return "no such node in the cluster";
    case CONS_EAGAIN:
        return "a new leader is settling in: retry shortly";
    case CONS_EQUORUM:
        return "the change would leave the cluster without a working majority";
    default:
        return "unknown error";
    }
}

void cons_config_default(struct cons_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->id = 1;
    cfg->raft_addr = "127.0.0.1:9080";
    cfg->data_dir = "driftd-data";
    cfg->election_timeout_ms = 1000;
    cfg->heartbeat_timeout_ms = 100;
    cfg->snapshot_threshold = 65536;
    cfg->snapshot_bytes = (size_t)64 << 20;
    cfg->snapshot_trailing = 2048;
    cfg->max_batch_bytes = 1u << 20;
    cfg->max_queue_cmds = 65536;
    cfg->max_queue_bytes = 64u << 20;
    cfg->queue_timeout_ms = 5000;
    cfg->room_ttl_ms = 24ull * 3600 * 1000;
    relay_limits_default(&cfg->limits);
}

int cons_node_init(struct cons_node **out, uv_loop_t *loop,
                   const struct cons_config *cfg)
{
    uint8_t seed[RELAY_SEED_LEN];
    struct cons_node *n;
    int rv;

    *out = NULL;
    n = calloc(1, sizeof(*n));
    if (n == NULL)
        return CONS_ENOMEM;
    n->loop = loop;
    n->cfg = *cfg;
    n->max_inflight = 4;
    if (cfg->id == 0 || cfg->raft_addr == NULL || cfg->data_dir == NULL ||
        strlen(cfg->raft_addr) >= sizeof(n->raft_addr) ||
        strlen(cfg->data_dir) >= sizeof(n->data_dir)) {
        free(n);
        return CONS_EINVAL;
    }
    if (cfg->http_addr != NULL &&
        strlen(cfg->http_addr) >= sizeof(n->http_addr)) {
        free(n);
        return CONS_EINVAL;
    }
    snprintf(n->raft_addr, sizeof(n->raft_addr), "%s", cfg->raft_addr);
    snprintf(n->http_addr, sizeof(n->http_addr), "%s",
             cfg->http_addr != NULL ? cfg->http_addr : "");
    n->cfg.http_addr = n->http_addr;
    /* Low 32 bits zero: never one of net's (nonce << 32 | counter) ids. */
    if (getrandom(&n->sys_session, sizeof(n->sys_session), 0) !=
        (ssize_t)sizeof(n->sys_session))
        n->sys_session = (uint64_t)uv_hrtime();
    n->sys_session &= ~(uint64_t)0xffffffffu;
    n->sys_session |= (uint64_t)1 << 63;
    snprintf(n->data_dir, sizeof(n->data_dir), "%s", cfg->data_dir);
    n->cfg.raft_addr = n->raft_addr;
    n->cfg.data_dir = n->data_dir;
    /* The state's hash tables are keyed with a secret of this process,
     * so clients cannot aim collisions at it (see relay.h). */
    if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed)) {
        uint64_t t = uv_hrtime() ^ (uint64_t)(uintptr_t)n;

        memcpy(seed, &t, sizeof(t));
        memcpy(seed + sizeof(t), &n->sys_session, sizeof(n->sys_session));
    }
    rv = relay_state_create_seeded(&cfg->limits, seed, &n->state);
    if (rv != RELAY_OK) {
        free(n);
        return CONS_ENOMEM;
    }
    rv = cons__proposer_init(n);
    if (rv != CONS_OK) {
        relay_state_destroy(n->state);
        free(n);
        return rv;
    }
    cons__fsm_init(n);
    *out = n;
    return CONS_OK;
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

/*
 * TCP_NODELAY on the raft links. raft_uv_tcp leaves Nagle on; a small
 * AppendEntries (or its result) sent while an earlier segment is unacked
 * then waits for the peer's delayed ACK, ~40 ms on Linux, which was the
 * recurring p99 of push->deliver (docs/benchmarks.md). raft batches by
 * itself, so nothing is gained from Nagle. libraft has no option for it, so
 * the transport's listen and connect are wrapped: every stream they hand to
 * raft_uv gets uv_tcp_nodelay() first.
 *
 * raft_uv_init takes over transport.data, so the node is found from the
 * embedded transport; the connect callback only sees raft_uv's request,
 * so raft_uv's callback is kept in a static: it is the same libraft
 * function for every node and every request.
 */
static raft_uv_connect_cb raft_connect_cb;

static void set_nodelay(struct uv_stream_s *stream)
{
    int rv;

    if (stream == NULL || stream->type != UV_TCP)
        return;
    rv = uv_tcp_nodelay((uv_tcp_t *)stream, 1);
    if (rv != 0)
        LOG_WARN("event=nodelay_failed err=\"%s\"", uv_strerror(rv));
}

static struct cons_node *node_of_transport(struct raft_uv_transport *t)
{
    return (struct cons_node *)((char *)t -
                                offsetof(struct cons_node, transport));
}

static void nodelay_accept_cb(struct raft_uv_transport *t, raft_id id,
                              const char *address, struct uv_stream_s *stream)
{
    set_nodelay(stream);
    node_of_transport(t)->raft_accept_cb(t, id, address, stream);
}

static int nodelay_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct cons_node *n = node_of_transport(t);

    n->raft_accept_cb = cb;
    return n->tcp_listen(t, nodelay_accept_cb);
}

static void nodelay_connect_cb(struct raft_uv_connect *req,
                               struct uv_stream_s *stream, int status)
{
    if (status == 0)
        set_nodelay(stream);
    raft_connect_cb(req, stream, status);
}

static int nodelay_connect(struct raft_uv_transport *t,
                           struct raft_uv_connect *req, raft_id id,
                           const char *address, raft_uv_connect_cb cb)
{
    raft_connect_cb = cb;
    return node_of_transport(t)->tcp_connect(t, req, id, address,
                                             nodelay_connect_cb);
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
    cons__aio_reap_start();
    /* libraft 0.22 refuses to init these unless the version is set. */
    n->transport.version = 1;
    n->transport.data = n;
    rv = raft_uv_tcp_init(&n->transport, n->loop);
    if (rv != 0) {
        snprintf(n->errmsg, sizeof(n->errmsg), "raft transport: %s",
                 raft_strerror(rv));
        return CONS_EIO;
    }
    n->transport_inited = true;
    n->tcp_listen = n->transport.listen;
    n->tcp_connect = n->transport.connect;
    n->transport.listen = nodelay_listen;
    n->transport.connect = nodelay_connect;
    n->io.version = 2;
    n->io.data = n;
    rv = raft_uv_init(&n->io, n->loop, n->data_dir, &n->transport);
    if (rv != 0) {
        snprintf(n->errmsg, sizeof(n->errmsg), "raft io %.100s: %.120s",
                 n->data_dir, n->io.errmsg);
        return CONS_EIO;
    }
    n->io_inited = true;
    /* 16 MiB log segments instead of libraft's 8: fewer segment switches,
     * each of which costs a ~40 ms io_destroy() (on the reaper thread since
     * aio_reap.c, on the loop before) and file renames in the thread pool.
     * 16 MiB is as far as libraft 0.22.1 goes: it reports its reserved
     * capacity as an unsigned short of KiB (prepared segments plus the
     * spare of open ones, ~3 segments), and at 32 MiB that wraps below its
     * 4 MiB threshold, after which every proposal is refused with "Not
     * enough disk space". */
    raft_uv_set_segment_size(&n->io, CONS_SEGMENT_SIZE);
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
    raft_set_pre_vote(&n->raft, true);
    if (getrandom(&seed, sizeof(seed), 0) == (ssize_t)sizeof(seed))
        raft_seed(&n->raft, seed);
    if (!n->cfg.join) {
        rv = bootstrap(n);
        if (rv != 0)
            return rv;
    }
    rv = raft_start(&n->raft);
    if (rv != 0) {
        snprintf(n->errmsg, sizeof(n->errmsg), "raft start: %s",
                 raft_errmsg(&n->raft));
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

void cons_node_stop(struct cons_node *n)
{
    if (n->stopping)
        return;
    n->stopping = true;
    cons__proposer_fail_all(n, CONS_ECLOSING);
}

void cons__handle_closed(uv_handle_t *h)
{
    struct cons_node *n = h->data;

    if (--n->pending_handles > 0)
        return;
    cons__membership_free(n);
    relay_batch_enc_destroy(n->enc);
    relay_state_destroy(n->state);
    if (n->close_cb != NULL)
        n->close_cb(n->close_arg);
    free(n);
}

static void close_own_handles(struct cons_node *n)
{
    if (n->io_inited)
        raft_uv_close(&n->io);
    if (n->transport_inited)
        raft_uv_tcp_close(&n->transport);
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

bool cons_node_is_ready(const struct cons_node *n)
{
    raft_id id = 0;
    const char *addr = NULL;

    if (!n->raft_started || n->closing)
        return false;
    raft_leader((struct raft *)&n->raft, &id, &addr);
    return id != 0;
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
}
