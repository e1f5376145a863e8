/*
 * proposer.c - group commit, forwarding to the leader, and exactly-once
 * re-sending.
 *
 * Every command proposed on this node goes into `pending` (oldest first) and
 * stays there until this node applies it (fsm.c calls
 * cons__proposer_on_applied). A cursor marks the next command to send.
 *
 * Happy path on the leader: cons_propose arms a uv_idle handle; on the next
 * loop turn the flush packs the commands forwarded by followers (`foreign`)
 * and the pending ones from the cursor into relay batches of up to
 * max_batch_bytes, one raft entry each, with at most max_inflight entries in
 * flight. Each apply completion flushes again, so under load one fsync
 * carries hundreds of commands. (A uv_check-driven proposer stalled on
 * libraft 0.22: see docs/architecture.md.)
 * Happy path on a follower: the same batches go to the forwarder (net's link
 * to the leader); the leader feeds them to cons_propose_batch.
 *
 * Failure modes: queue full -> CONS_EFULL to the caller, nothing queued.
 * Leader or term changed, link dropped, or an entry failed -> the cursor
 * goes back to the oldest pending command and everything is re-sent in
 * order; relay's dedupe table drops what had already been applied, so each
 * command is applied once. A command not seen applied within
 * queue_timeout_ms fails: "not applied" if it never reached a leader
 * (CONS_ENOLEADER, CONS_EUNREACHABLE, CONS_ESTALLED), "outcome unknown"
 * otherwise, named after what happened since it was sent (expired_code).
 * Disk full (raft_apply says RAFT_NOSPACE): the commands of the refused
 * entry that never reached a log fail at once with CONS_ENOSPACE; a leader
 * that takes an entry with its own disk full hands leadership to another
 * voter (maybe_hand_over).
 *
 * Not here: the link itself (net), the FSM (fsm.c).
 *
 * Debug builds assert the invariants: a queue's count and bytes are the
 * sum of its commands, pending never holds more than max_queue_cmds, at
 * most max_inflight entries are in flight, and an entry handed to raft is
 * a whole relay batch (raft_malloc'd, padded to 8 bytes).
 */
#define LOG_MODULE "cons"
#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "log.h"

#define QUEUE_TICK_MS 50

static uint64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int cons__proposer_init(struct cons_node *n)
{
    int rv;

    rv = relay_batch_enc_create(&n->enc);
    if (rv != RELAY_OK)
        return CONS_ENOMEM;
    uv_idle_init(n->loop, &n->flush_idle);
    n->flush_idle.data = n;
    n->pending_handles++;
    uv_timer_init(n->loop, &n->queue_timer);
    n->queue_timer.data = n;
    n->pending_handles++;
    uv_timer_init(n->loop, &n->tick);
    n->tick.data = n;
    n->pending_handles++;
    return CONS_OK;
}

/* ---- queues ------------------------------------------------------------- */

static void pcmd_free(struct cons__pcmd *p)
{
    free(p->data);
    free(p);
}

static void q_push(struct cons__queue *q, struct cons__pcmd *p)
{
    p->next = NULL;
    p->prev = q->tail;
    if (q->tail != NULL)
        q->tail->next = p;
    else
        q->head = p;
    q->tail = p;
    q->count++;
    q->bytes += p->bytes;
}

static void q_unlink(struct cons__queue *q, struct cons__pcmd *p)
{
    assert(q->count > 0 && q->bytes >= p->bytes);
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        q->head = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    else
        q->tail = p->prev;
    q->count--;
    q->bytes -= p->bytes;
}

/* Appends n bytes at *w (advanced); returns where they start. */
static const char *put_bytes(uint8_t **w, const void *src, size_t n)
{
    const char *at = (const char *)*w;

    if (n > 0)
        memcpy(*w, src, n);
    *w += n;
    return at;
}

/* Copies cmd and everything it points to. */
static struct cons__pcmd *pcmd_copy(const struct relay_cmd *cmd, uint64_t now)
{
    struct cons__pcmd *p;
    size_t bytes = cmd->room_len + cmd->key_len + cmd->value_len +
                   cmd->raft_addr_len + cmd->http_addr_len;
    uint8_t *w;

    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->data = malloc(bytes > 0 ? bytes : 1);
    if (p->data == NULL)
        goto err_free;
    p->cmd = *cmd;
    w = p->data;
    p->cmd.room = put_bytes(&w, cmd->room, cmd->room_len);
    p->cmd.key = put_bytes(&w, cmd->key, cmd->key_len);
    p->cmd.value =
        cmd->value_len > 0
            ? (const uint8_t *)put_bytes(&w, cmd->value, cmd->value_len)
            : NULL;
    p->cmd.raft_addr = put_bytes(&w, cmd->raft_addr, cmd->raft_addr_len);
    p->cmd.http_addr = put_bytes(&w, cmd->http_addr, cmd->http_addr_len);
    p->bytes = bytes;
    p->enq_ms = now;
    return p;
err_free:
    free(p);
    return NULL;
}

/*
 * A command of one of this node's own proposers was applied (code CONS_OK)
 * or failed: only its owner hears of it. Returns false for a client's
 * command.
 */
static bool sys_done(struct cons_node *n, const struct relay_origin *o,
                     int code)
{
    switch (cons__sys_owner(n, o->session)) {
    case CONS_OWN_DIR:
        cons__dir_done(n);
        return true;
    case CONS_OWN_READ:
        cons__reads_on_marker(n, o->counter, code);
        return true;
    case CONS_OWN_CONFIG:
        cons__settings_done(n);
        return true;
    case CONS_OWN_EXPIRY:
        /* Nothing waits: the next scan proposes again if still idle. */
        if (code != CONS_OK)
            LOG_INFO("event=room_expire_failed err=%s", cons_strerror(code));
        return true;
    case CONS_OWN_MEMBERS:
        if (code != CONS_OK)
            LOG_WARN("event=directory_forget_failed err=%s",
                     cons_strerror(code));
        return true;
    case CONS_OWN_N:
        break;
    }
    return false;
}

static void report_failed(struct cons_node *n, const struct relay_origin *o,
                          int code)
{
    if (sys_done(n, o, code))
        return;
    if (n->on_failed != NULL)
        n->on_failed(n->cb_arg, o, code);
}

static bool is_leader(struct cons_node *n)
{
    return n->raft_started && raft_state(&n->raft) == RAFT_LEADER;
}

static uint32_t known_leader(struct cons_node *n)
{
    raft_id id = 0;
    const char *addr = NULL;

    if (!n->raft_started)
        return 0;
    raft_leader(&n->raft, &id, &addr);
    return (uint32_t)id;
}

/* ---- proposing ---------------------------------------------------------- */

int cons_propose(struct cons_node *n, const struct relay_cmd *cmd)
{
    struct cons__pcmd *p;
    size_t bytes;

    if (n->stopping || n->closing)
        return CONS_ECLOSING;
    if (cmd->room_len > RELAY_ROOM_ID_MAX)
        return CONS_EINVAL;
    bytes = cmd->room_len + cmd->key_len + cmd->value_len;
    if (n->pending.count >= n->cfg.max_queue_cmds ||
        n->pending.bytes + bytes > n->cfg.max_queue_bytes)
        return CONS_EFULL;
    p = pcmd_copy(cmd, uv_now(n->loop));
    if (p == NULL)
        return CONS_ENOMEM;
    q_push(&n->pending, p);
    assert(n->pending.count <= n->cfg.max_queue_cmds);
    if (n->cursor == NULL)
        n->cursor = p;
    cons__proposer_kick(n);
    return CONS_OK;
}

bool cons__cmd_forwardable(const struct relay_cmd *cmd, uint32_t node)
{
    if (node == 0 || cmd->origin.node != node)
        return false;
    switch (cmd->type) {
    case RELAY_CMD_CREATE_ROOM:
    case RELAY_CMD_PUSH:
    case RELAY_CMD_NOOP:   /* its read markers (read.c) */
    case RELAY_CMD_CONFIG: /* an operator's change through its admin API */
        return true;
    case RELAY_CMD_NODE_SET:
        return cmd->node_id == node; /* its own directory entry only */
    default:
        return false;
    }
}

struct batch_ctx {
    struct cons_node *node;
    uint32_t from;
    int err;
    struct cons__queue tmp;
};

static int queue_foreign(void *arg, const struct relay_cmd *cmd,
                         uint64_t now_ms)
{
    struct batch_ctx *ctx = arg;
    struct cons__pcmd *p;

    (void)now_ms; /* the leader stamps its own time on the entry */
    if (!cons__cmd_forwardable(cmd, ctx->from)) {
        ctx->err = CONS_EPERM;
        return -1;
    }
    p = pcmd_copy(cmd, uv_now(ctx->node->loop));
    if (p == NULL) {
        ctx->err = CONS_ENOMEM;
        return -1;
    }
    q_push(&ctx->tmp, p);
    return 0;
}

int cons_propose_batch(struct cons_node *n, uint32_t from, const uint8_t *batch,
                       size_t len)
{
    struct batch_ctx ctx = {.node = n, .from = from};
    int rv;

    if (n->stopping || n->closing)
        return CONS_ECLOSING;
    if (!is_leader(n))
        return CONS_ENOTLEADER;
    /* The whole batch or nothing, so a session's order is kept: the
     * follower re-sends it all once the link is back. */
    if (n->foreign.count >= n->cfg.max_queue_cmds ||
        n->foreign.bytes + len > n->cfg.max_queue_bytes)
        return CONS_EFULL;
    rv = relay_batch_decode(batch, len, queue_foreign, &ctx);
    if (rv != 0) {
        while (ctx.tmp.head != NULL) {
            struct cons__pcmd *p = ctx.tmp.head;

            q_unlink(&ctx.tmp, p);
            pcmd_free(p);
        }
        return ctx.err != 0 ? ctx.err : CONS_EINVAL;
    }
    while (ctx.tmp.head != NULL) {
        struct cons__pcmd *p = ctx.tmp.head;

        q_unlink(&ctx.tmp, p);
        q_push(&n->foreign, p);
    }
    cons__proposer_kick(n);
    return CONS_OK;
}

void cons_node_set_forwarder(struct cons_node *n,
                             const struct cons_forwarder *fw)
{
    n->fw = *fw;
}

void cons_forward_reset(struct cons_node *n)
{
    for (struct cons__pcmd *p = n->pending.head; p != NULL; p = p->next)
        if (p->sent && !p->sent_here)
            p->lost_link = true;
    n->cursor = n->pending.head;
    cons__proposer_kick(n);
}

void cons_forward_kick(struct cons_node *n)
{
    cons__proposer_kick(n);
}

void cons__proposer_kick(struct cons_node *n)
{
    if (n->closing)
        return;
    if (!n->flush_armed &&
        (n->cursor != NULL || n->foreign.head != NULL || n->read_local)) {
        uv_idle_start(&n->flush_idle, cons__on_flush_idle);
        n->flush_armed = true;
    }
    if (n->pending.head != NULL &&
        !uv_is_active((uv_handle_t *)&n->queue_timer))
        uv_timer_start(&n->queue_timer, cons__on_queue_timer, QUEUE_TICK_MS,
                       QUEUE_TICK_MS);
}

bool cons__proposer_on_applied(struct cons_node *n,
                               const struct relay_origin *o)
{
    struct cons__pcmd *p;

    /* Our commands reach the log in the order we sent them, so the applied
     * one is normally the oldest pending; a re-sent copy is already gone. */
    for (p = n->pending.head; p != NULL; p = p->next) {
        if (p->cmd.origin.session == o->session &&
            p->cmd.origin.counter == o->counter)
            break;
    }
    if (p == NULL)
        return false;
    if (n->cursor == p)
        n->cursor = p->next;
    q_unlink(&n->pending, p);
    pcmd_free(p);
    sys_done(n, o, CONS_OK);
    return true;
}

/*
 * A snapshot install brings in commands this node proposed but never
 * applied itself. Those the restored dedupe table records as applied are
 * answered now, as duplicates (applied once, their effects unknown here);
 * without this their sessions would wait for a re-send that, with no
 * leader change, never comes, and then hear "outcome unknown".
 */
void cons__proposer_on_restored(struct cons_node *n)
{
    struct relay_effects eff;
    struct cons__pcmd *p, *next;
    struct relay_origin o;

    memset(&eff, 0, sizeof(eff));
    eff.status = RELAY_EDUP;
    for (p = n->pending.head; p != NULL; p = next) {
        next = p->next;
        if (!relay_state_origin_applied(n->state, &p->cmd.origin))
            continue;
        o = p->cmd.origin;
        if (n->on_applied != NULL &&
            cons__sys_owner(n, o.session) == CONS_OWN_N) {
            struct cons_applied ev = {
                .cmd = &p->cmd,
                .eff = &eff,
                .index = raft_last_applied(&n->raft),
            };
            n->on_applied(n->cb_arg, &ev);
        }
        cons__proposer_on_applied(n, &o);
    }
}

/* ---- flushing ----------------------------------------------------------- */

static void send_carrier(struct cons_node *n);

/* Commands this node put into its own log as leader may now never commit. */
static void mark_lost_lead(struct cons_node *n)
{
    for (struct cons__pcmd *p = n->pending.head; p != NULL; p = p->next)
        if (p->sent_here)
            p->lost_lead = true;
}

/* One entry's raft_apply -> applied time into the commit histogram. */
static void count_commit(struct cons_node *n, uint64_t start_ns)
{
    uint64_t now = uv_hrtime();

    cons_hist_add(&n->stats.commit,
                  now > start_ns ? (double)(now - start_ns) / 1e6 : 0);
}

static void on_applied_entry(struct raft_apply *req, int status, void *result)
{
    struct cons__inflight *f = req->data;
    struct cons_node *n = f->node;
    bool carrier = f->carrier;

    (void)result;
    assert(n->n_inflight > 0);
    n->n_inflight--;
    if (status == 0)
        count_commit(n, f->start_ns);
    free(f);
    if (status != 0 && !n->closing) {
        /* Leadership lost or I/O failed with the entry in our log: a later
         * leader may or may not commit it. Re-send everything unapplied;
         * dedupe drops the copies that did commit. */
        LOG_WARN("event=entry_failed status=%s", raft_strerror(status));
        mark_lost_lead(n);
        n->cursor = n->pending.head;
    }
    /* Followers learn a commit index only from the leader's next message;
     * when nothing else is about to be sent, an empty entry carries it now
     * instead of at the next heartbeat, so their subscribers and forwarded
     * writers are not held back by up to a heartbeat interval. */
    if (status == 0 && !carrier && !n->closing && n->n_inflight == 0 &&
        n->cursor == NULL && n->foreign.head == NULL &&
        n->raft.configuration.n > 1)
        send_carrier(n);
    cons__proposer_kick(n);
}

/* Packs foreign commands, then pending ones from the cursor, into the
 * encoder. Returns how many pending commands were taken (via *n_local) and
 * foreign ones (via *n_foreign). */
static void pack(struct cons_node *n, bool take_foreign, size_t *n_foreign,
                 size_t *n_local)
{
    struct cons__pcmd *p;
    size_t count = 0;

    *n_foreign = 0;
    *n_local = 0;
    relay_batch_reset(n->enc);
    if (take_foreign) {
        for (p = n->foreign.head; p != NULL; p = p->next) {
            if (count > 0 && relay_batch_bytes(n->enc) + p->bytes + 64 >
                                 n->cfg.max_batch_bytes)
                return;
            if (relay_batch_add(n->enc, &p->cmd) != RELAY_OK)
                return;
            count++;
            (*n_foreign)++;
        }
    }
    for (p = n->cursor; p != NULL; p = p->next) {
        /* Always take one command, even one bigger than the bound. */
        if (count > 0 &&
            relay_batch_bytes(n->enc) + p->bytes + 64 > n->cfg.max_batch_bytes)
            return;
        if (relay_batch_add(n->enc, &p->cmd) != RELAY_OK)
            return;
        count++;
        (*n_local)++;
    }
}

/* The packed commands went out: into this node's log (here) or onto the
 * link to the leader. */
static void advance(struct cons_node *n, size_t n_foreign, size_t n_local,
                    bool here)
{
    assert(n_foreign <= n->foreign.count && n_local <= n->pending.count);
    for (size_t i = 0; i < n_foreign; i++) {
        struct cons__pcmd *p = n->foreign.head;

        q_unlink(&n->foreign, p);
        pcmd_free(p);
    }
    for (size_t i = 0; i < n_local && n->cursor != NULL; i++) {
        n->cursor->sent = true;
        if (here)
            n->cursor->sent_here = true;
        n->cursor = n->cursor->next;
    }
}

static unsigned voter_count(const struct cons_node *n)
{
    unsigned v = 0;

    for (unsigned i = 0; i < n->raft.configuration.n; i++)
        if (n->raft.configuration.servers[i].role == RAFT_VOTER)
            v++;
    return v;
}

static void on_nospace_transfer(struct raft_transfer *req)
{
    struct cons_node *n = req->data;
    raft_id leader = 0;
    const char *addr = NULL;

    n->nospace_transferring = false;
    if (n->closing)
        return;
    n->nospace_handed_at = uv_now(n->loop);
    raft_leader(&n->raft, &leader, &addr);
    LOG_WARN("event=disk_full_transfer_done leader=%llu",
             (unsigned long long)leader);
}

/*
 * A leader whose own disk is full cannot store entries; libraft refuses
 * them only when a majority of voters is short of space, and otherwise
 * takes them, commits them on the followers and keeps what it could not
 * write in memory. So a leader that just took an entry with its disk full
 * hands leadership to another voter (libraft picks the most up-to-date
 * one). Called only after an entry was taken: when most voters are full,
 * raft_apply refuses instead and moving leadership would not help; an
 * idle cluster is left alone. A transfer that failed is tried again an
 * election timeout after it ended: libraft 0.22.1 sends TimeoutNow when the
 * target has received the last entry, and the target ignores it while that
 * entry is still being written, which under a steady stream of writes
 * happens often.
 */

static void maybe_hand_over(struct cons_node *n)
{
    uint64_t now = uv_now(n->loop);
    int rv;

    if (n->nospace_transferring || n->change != NULL || n->closing ||
        !is_leader(n) || !cons__disk_is_full(n) || voter_count(n) < 2 ||
        (n->nospace_handed_at != 0 &&
         now - n->nospace_handed_at < n->cfg.election_timeout_ms))
        return;
    n->nospace_handed_at = now;
    n->nospace_transfer.data = n;
    rv = raft_transfer(&n->raft, &n->nospace_transfer, 0, on_nospace_transfer);
    if (rv != 0) {
        LOG_WARN("event=disk_full_transfer_failed err=\"%s\"",
                 raft_strerror(rv));
        return;
    }
    n->nospace_transferring = true;
    LOG_WARN("event=disk_full_transfer data=%s", n->data_dir);
}

/*
 * raft_apply said RAFT_NOSPACE: the entry never reached the log. Its
 * commands that never reached any log are certainly not applied: they fail
 * now rather than wait for the timeout. Those sent before (re-sent after a
 * leader change) stay: an earlier copy may commit. Forwarded ones are
 * dropped; their node hears nothing and answers "outcome unknown" after
 * its timeout (or re-sends to the next leader).
 */
static void refuse_nospace(struct cons_node *n, size_t n_foreign,
                           size_t n_local)
{
    uint64_t now = uv_now(n->loop);
    struct cons__pcmd *p = n->cursor, *next;
    size_t failed = 0;

    for (size_t i = 0; i < n_foreign && n->foreign.head != NULL; i++) {
        struct cons__pcmd *f = n->foreign.head;

        q_unlink(&n->foreign, f);
        pcmd_free(f);
    }
    for (size_t i = 0; i < n_local && p != NULL; i++, p = next) {
        next = p->next;
        if (p->sent)
            continue;
        if (n->cursor == p)
            n->cursor = next;
        q_unlink(&n->pending, p);
        report_failed(n, &p->cmd.origin, CONS_ENOSPACE);
        pcmd_free(p);
        failed++;
    }
    if (now - n->nospace_logged >= 1000 || n->nospace_logged == 0) {
        n->nospace_logged = now;
        LOG_WARN("event=disk_full refused=%zu dropped_forwarded=%zu "
                 "capacity_kib=%u data=%s",
                 failed, n_foreign, (unsigned)n->io.capacity, n->data_dir);
    }
}

/* Leader: one raft entry. Returns false when nothing more can go now. */
static bool flush_to_log(struct cons_node *n)
{
    struct cons__inflight *f;
    struct raft_buffer buf;
    uint8_t *base;
    size_t n_foreign, n_local;
    uint64_t now;
    int rv;

    pack(n, true, &n_foreign, &n_local);
    if (n_foreign + n_local == 0)
        return false;
    f = calloc(1, sizeof(*f));
    if (f == NULL)
        return false;
    now = wall_ms();
    if (now < n->last_entry_ms)
        now = n->last_entry_ms; /* keep log time monotonic */
    rv = relay_batch_finish(n->enc, now, raft_malloc, &base, &buf.len);
    if (rv != RELAY_OK) {
        free(f);
        return false;
    }
    buf.base = base;
    assert(buf.base != NULL && buf.len > 0 && buf.len % 8 == 0);
    assert(n->n_inflight < n->max_inflight);
    f->node = n;
    f->req.data = f;
    f->start_ns = uv_hrtime();
    rv = raft_apply(&n->raft, &f->req, &buf, 1, on_applied_entry);
    if (rv != 0) {
        /* raft.h: the buffer becomes raft's only when raft_apply returns
         * 0; on any error it is still ours. */
        raft_free(buf.base);
        free(f);
        if (rv == RAFT_NOSPACE) {
            refuse_nospace(n, n_foreign, n_local);
            return false;
        }
        /* A transfer under way (a hand-over at stop, a membership
         * transfer) refuses every entry until it ends: expected, and the
         * commands go to the new leader then. */
        if (rv == RAFT_NOTLEADER && raft_transferee(&n->raft) != 0)
            LOG_DEBUG("event=propose_refused cmds=%zu err=%s transfer=%llu",
                      n_foreign + n_local, raft_strerror(rv),
                      (unsigned long long)raft_transferee(&n->raft));
        else
            LOG_WARN("event=propose_refused cmds=%zu err=%s",
                     n_foreign + n_local, raft_strerror(rv));
        return false; /* the queue timer retries */
    }
    n->n_inflight++;
    advance(n, n_foreign, n_local, true);
    maybe_hand_over(n);
    return true;
}

static void send_carrier(struct cons_node *n)
{
    struct cons__inflight *f;
    struct raft_buffer buf;
    uint8_t *base;
    int rv;

    if (raft_state(&n->raft) != RAFT_LEADER)
        return;
    f = calloc(1, sizeof(*f));
    if (f == NULL)
        return;
    relay_batch_reset(n->enc);
    rv = relay_batch_finish(n->enc, n->last_entry_ms, raft_malloc, &base,
                            &buf.len);
    if (rv != RELAY_OK) {
        free(f);
        return;
    }
    buf.base = base;
    assert(buf.base != NULL && buf.len > 0 && buf.len % 8 == 0);
    f->node = n;
    f->carrier = true;
    f->req.data = f;
    f->start_ns = uv_hrtime();
    rv = raft_apply(&n->raft, &f->req, &buf, 1, on_applied_entry);
    if (rv != 0) {
        raft_free(buf.base); /* still ours on any error (raft.h) */
        free(f);
        return;
    }
    n->n_inflight++;
}

/* Follower: one batch on the link. */
static bool flush_to_leader(struct cons_node *n, uint32_t leader)
{
    size_t n_foreign, n_local;
    uint8_t *buf;
    size_t len;
    int rv;

    if (n->fw.send == NULL)
        return false;
    pack(n, false, &n_foreign, &n_local);
    if (n_local == 0)
        return false;
    rv = relay_batch_finish(n->enc, wall_ms(), malloc, &buf, &len);
    if (rv != RELAY_OK)
        return false;
    rv = n->fw.send(n->fw.arg, leader, buf, len);
    free(buf);
    if (rv != 0)
        return false; /* link busy or down: kick or timer retries */
    advance(n, 0, n_local, false);
    return true;
}

void cons__on_flush_idle(uv_idle_t *h)
{
    struct cons_node *n = h->data;
    uint32_t leader;

    uv_idle_stop(h);
    n->flush_armed = false;
    if (n->closing)
        return;
    cons__reads_local(n);
    cons__proposer_check_leader(n);
    if (is_leader(n)) {
        while ((n->cursor != NULL || n->foreign.head != NULL) &&
               n->n_inflight < n->max_inflight)
            if (!flush_to_log(n))
                break;
        return;
    }
    leader = known_leader(n);
    if (leader == 0)
        return; /* queue_timer retries once a leader is known */
    while (n->cursor != NULL)
        if (!flush_to_leader(n, leader))
            break;
}

/*
 * A leader's own commands (expiry deletes, membership's directory
 * cleanups) are not for a forward link: the new leader refuses them there
 * (cons__cmd_forwardable). Their owners decide again on whichever node
 * leads, so the ones still pending when this node lost the lead end here:
 * not applied if they never reached the log, unknown if they may have.
 */
static void drop_unforwardable(struct cons_node *n)
{
    struct cons__pcmd *p, *next;

    for (p = n->pending.head; p != NULL; p = next) {
        next = p->next;
        if (cons__cmd_forwardable(&p->cmd, n->cfg.id))
            continue;
        q_unlink(&n->pending, p);
        report_failed(n, &p->cmd.origin,
                      p->sent ? CONS_EUNKNOWN : CONS_ENOTAPPLIED);
        pcmd_free(p);
    }
}

/* Notices leader/term changes: re-send everything unapplied to the new
 * leader, drop forwarded commands we can no longer propose, tell net. */
void cons__proposer_check_leader(struct cons_node *n)
{
    uint32_t leader = known_leader(n);
    uint64_t term = n->raft_started ? raft_current_term(&n->raft) : 0;

    if (leader == n->seen_leader && term == n->seen_term)
        return;
    if (n->seen_leader == n->cfg.id && leader != n->cfg.id)
        mark_lost_lead(n);
    if (leader != n->seen_leader)
        LOG_INFO("event=leader_changed leader=%u term=%llu", leader,
                 (unsigned long long)term);
    if (term > n->seen_term && n->seen_term != 0)
        n->stats.terms_seen++;
    if (leader != n->seen_leader && leader != 0)
        n->stats.leader_changes++;
    n->seen_leader = leader;
    n->seen_term = term;
    n->leader_since = uv_now(n->loop);
    if (!is_leader(n)) {
        /* Their origin nodes see the same change and re-send. */
        while (n->foreign.head != NULL) {
            struct cons__pcmd *p = n->foreign.head;

            q_unlink(&n->foreign, p);
            pcmd_free(p);
        }
        drop_unforwardable(n);
    }
    n->cursor = n->pending.head;
    if (n->fw.leader_changed != NULL)
        n->fw.leader_changed(n->fw.arg, leader);
    cons__proposer_kick(n);
}

/*
 * The cause of a command that waited queue_timeout_ms, as precisely as this
 * node knows it. Never reached a leader's log: not applied. Reached one:
 * outcome unknown, after what happened since.
 */
static int expired_code(struct cons_node *n, const struct cons__pcmd *p)
{
    uint32_t leader = known_leader(n);

    if (!p->sent) {
        if (leader == 0)
            return CONS_ENOLEADER;
        if (leader == n->cfg.id)
            return cons__disk_is_full(n) ? CONS_ENOSPACE : CONS_ESTALLED;
        return CONS_EUNREACHABLE;
    }
    if (p->lost_lead)
        return CONS_EUNKNOWN;
    if (leader == 0)
        return CONS_ELEADERGONE;
    if (p->lost_link)
        return CONS_ELINKLOST;
    return CONS_ETIMEDOUT;
}

void cons__on_queue_timer(uv_timer_t *t)
{
    struct cons_node *n = t->data;
    uint64_t now = uv_now(n->loop);

    cons__proposer_check_leader(n);
    /* Expire what waited too long for a leader or its commit. */
    while (n->pending.head != NULL &&
           now - n->pending.head->enq_ms >= n->cfg.queue_timeout_ms) {
        struct cons__pcmd *p = n->pending.head;

        if (n->cursor == p)
            n->cursor = p->next;
        q_unlink(&n->pending, p);
        report_failed(n, &p->cmd.origin, expired_code(n, p));
        pcmd_free(p);
    }
    if (n->pending.head == NULL && n->foreign.head == NULL) {
        uv_timer_stop(t);
        return;
    }
    cons__proposer_kick(n);
}

void cons__proposer_fail_all(struct cons_node *n, int code)
{
    while (n->pending.head != NULL) {
        struct cons__pcmd *p = n->pending.head;

        q_unlink(&n->pending, p);
        report_failed(n, &p->cmd.origin,
                      p->sent && code == CONS_ECLOSING ? CONS_ECLOSED : code);
        pcmd_free(p);
    }
    n->cursor = NULL;
    while (n->foreign.head != NULL) {
        struct cons__pcmd *p = n->foreign.head;

        q_unlink(&n->foreign, p);
        pcmd_free(p);
    }
}

void cons__proposer_close(struct cons_node *n)
{
    uv_close((uv_handle_t *)&n->flush_idle, cons__handle_closed);
    uv_close((uv_handle_t *)&n->queue_timer, cons__handle_closed);
    uv_close((uv_handle_t *)&n->tick, cons__handle_closed);
}
