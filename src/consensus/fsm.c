/*
 * fsm.c - the raft FSM adapter over relay.
 *
 * apply: one raft entry is one relay batch (see relay_batch_*); each command
 * goes through relay_state_apply and its effects are handed to the node's
 * on_applied callback right away, so subscribers on this node see the
 * broadcast while the state is exactly the state after that command.
 * snapshot/restore: relay's whole-state msgpack bytes behind an 8-byte
 * header ("DRS1" and the bytes' CRC-32C), copied into raft_malloc'd buffers
 * that raft releases (fsm version 1 ownership rules). libraft checksums its
 * snapshot metadata but not the data: without ours a flipped bit on disk
 * would become a silently different state. Snapshots from before the header
 * (they start with a msgpack array, never 'D') are still read.
 *
 * Not here: proposing (proposer.c) and raft wiring (node.c).
 */
#define LOG_MODULE "cons"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"
#include "internal.h"
#include "log.h"

#define SNAP_HDR_MAGIC "DRS1"

struct apply_ctx {
    struct cons_node *node;
    uint64_t index;
};

static int apply_one(void *arg, const struct relay_cmd *cmd, uint64_t now_ms)
{
    struct apply_ctx *ctx = arg;
    struct cons_node *n = ctx->node;
    struct relay_effects eff;
    bool pending_here = false;
    int rv;

    rv = relay_state_apply(n->state, cmd, now_ms, &eff);
    if (rv != RELAY_OK)
        return rv;
    n->stats.commands_applied++;
    if (now_ms > n->last_entry_ms)
        n->last_entry_ms = now_ms;
    if (cmd->origin.node == n->cfg.id)
        pending_here = cons__proposer_on_applied(n, &cmd->origin);
    if (cmd->type == RELAY_CMD_CONFIG && eff.status != RELAY_EDUP)
        cons__settings_applied(n, cmd, eff.status);
    /* A re-sent copy of a command applied before: its sender was answered
     * then, and subscribers saw it then. Unless this node never applied the
     * original itself because it arrived folded into a snapshot: then the
     * sender still waits, and hears RELAY_EDUP (applied, once). */
    if (eff.status == RELAY_EDUP && !pending_here)
        return 0;
    if (n->on_applied != NULL) {
        struct cons_applied ev = {
            .cmd = cmd, .eff = &eff, .index = ctx->index, .stamp_ms = now_ms};
        n->on_applied(n->cb_arg, &ev);
    }
    return 0;
}

/*
 * Snapshots by size as well as by count. libraft only counts entries, but
 * our entries are group-committed batches of 1 byte to max_batch_bytes, and
 * raft keeps every entry since the last snapshot in memory: a count alone
 * bounds neither memory nor the replay time after a restart. Past
 * cfg.snapshot_bytes of applied log the threshold is lowered to what has
 * been applied since the last snapshot, so raft takes one right after this
 * entry; fsm_snapshot puts the configured threshold back. A high count
 * threshold then keeps snapshots (and the segment switch each one causes,
 * see node.c) rare at low rates, where they would cost latency most.
 *
 * Each snapshot encodes the whole state, so with a big state a fixed byte
 * bound makes snapshots cost more than the log they replace: at 1.1 GB of
 * state a snapshot (10 s of CPU) every 64 MiB of log (every ~15 s under
 * full ingest) kept both cores busy with encoders, and the starved nodes
 * held elections (tests/blackbox/tools/elections-under-load.mjs). So no
 * snapshot is taken before the log since the last one is as big as that
 * snapshot was (snapshot_due), as Redis rewrites its AOF only once it has
 * doubled: encoding costs at most about a byte per byte of log, and memory
 * and replay after a restart stay within about twice the state. A state
 * under CONS_SNAP_SPACED_BYTES costs milliseconds to encode: its snapshots
 * keep following --snapshot-threshold, which keeps a lagging follower's
 * catch-up by snapshot (and the tests of it) as configured.
 */
static uint64_t snapshot_due(const struct cons_node *n)
{
    return n->snap_last_len > n->cfg.snapshot_bytes ? n->snap_last_len
                                                     : n->cfg.snapshot_bytes;
}

/*
 * The entries kept after a snapshot (for followers slightly behind) are
 * bounded by bytes too: snapshot_trailing entries of up to max_batch_bytes
 * each would be 2 GiB at the defaults (1 MiB relay pushes did that). Before
 * each snapshot the trailing count becomes what CONS_TRAILING_BYTES holds
 * at the mean entry size since the last one, at least CONS_TRAILING_MIN.
 */
static void fit_trailing(struct cons_node *n)
{
    uint64_t mean, fit;
    unsigned want;

    if (n->snap_entries == 0)
        return;
    mean = n->snap_bytes / n->snap_entries;
    fit = mean > 0 ? CONS_TRAILING_BYTES / mean : n->cfg.snapshot_trailing;
    want = fit < n->cfg.snapshot_trailing ? (unsigned)fit
                                          : n->cfg.snapshot_trailing;
    if (want < CONS_TRAILING_MIN &&
        n->cfg.snapshot_trailing >= CONS_TRAILING_MIN)
        want = CONS_TRAILING_MIN;
    if (want != n->snap_trailing) {
        n->snap_trailing = want;
        raft_set_snapshot_trailing(&n->raft, want);
    }
}

static void count_for_snapshot(struct cons_node *n, size_t len)
{
    n->snap_bytes += len;
    n->snap_entries++;
    /* Checked as the count approaches either snapshot trigger. */
    if ((n->snap_entries & 63) == 0)
        fit_trailing(n);
    if (n->snap_forced || n->cfg.snapshot_bytes == 0 ||
        n->snap_bytes < snapshot_due(n))
        return;
    fit_trailing(n);
    raft_set_snapshot_threshold(&n->raft, n->snap_entries);
    n->snap_forced = true;
}

static void snapshot_taken(struct cons_node *n)
{
    n->snap_bytes = 0;
    n->snap_entries = 0;
    if (n->snap_forced)
        raft_set_snapshot_threshold(&n->raft, n->cfg.snapshot_threshold);
    n->snap_forced = false;
}

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf,
                     void **result)
{
    struct cons_node *n = fsm->data;
    struct apply_ctx ctx = {.node = n,
                            .index = raft_last_applied(&n->raft) + 1};
    int rv;

    *result = NULL;
    count_for_snapshot(n, buf->len);
    n->stats.entries_applied++;
    rv = relay_batch_decode(buf->base, buf->len, apply_one, &ctx);
    if (rv == RELAY_EINVAL) {
        /* Every node sees the same bytes, so skipping is deterministic;
         * returning non-zero would wedge the node on this entry forever. */
        LOG_ERROR("event=bad_entry index=%llu len=%zu: skipped",
                  (unsigned long long)ctx.index, buf->len);
        return 0;
    }
    if (rv != RELAY_OK) {
        LOG_ERROR("event=apply_failed index=%llu err=%s",
                  (unsigned long long)ctx.index, relay_strerror(rv));
        return RAFT_NOMEM;
    }
    return 0;
}

/*
 * libraft 0.22.1 crashes when an InstallSnapshot from the leader arrives
 * while this node's own snapshot is still being written: legacy.c's
 * takeSnapshotCb clears snapshot_pending before reading it and starts the
 * held-back install with NULL (seen in blackbox/cluster, a node restarted
 * behind the leader's log: it applied its own log, began a snapshot, and
 * was sent one). A leader sends a snapshot to a follower right after that
 * follower gets in touch with it, so a follower takes none of its own until
 * it has followed the same leader for three election timeouts; refusing
 * costs nothing (raft asks again at its next step) and the log it keeps
 * meanwhile is a few seconds' worth. A leader is never sent a snapshot.
 */
static bool snapshot_deferred(struct cons_node *n)
{
    uint64_t now = uv_now(n->loop);
    const char *addr;
    raft_id leader;

    if (raft_state(&n->raft) == RAFT_LEADER)
        return false;
    raft_leader(&n->raft, &leader, &addr);
    if (leader != n->snap_guard_leader) {
        LOG_DEBUG("event=snapshot_deferred leader=%llu",
                  (unsigned long long)leader);
        n->snap_guard_leader = leader;
        n->snap_guard_since = now;
    }
    return leader == 0 ||
           now - n->snap_guard_since < 3 * (uint64_t)n->cfg.election_timeout_ms;
}

void cons__snap_header(uint8_t hdr[CONS_SNAP_HDR_LEN], const uint8_t *payload,
                       size_t len)
{
    uint32_t crc = crc32c(0, payload, len);

    memcpy(hdr, SNAP_HDR_MAGIC, 4);
    hdr[4] = (uint8_t)crc;
    hdr[5] = (uint8_t)(crc >> 8);
    hdr[6] = (uint8_t)(crc >> 16);
    hdr[7] = (uint8_t)(crc >> 24);
}

/* The state encoded here, on the loop: with --snapshot-mode inline, or when
 * no child could be forked. */
static int snapshot_inline(struct cons_node *n, struct raft_buffer *bufs[],
                           unsigned *n_bufs)
{
    uint8_t *snap;
    size_t len;

    if (relay_state_snapshot(n->state, &snap, &len) != RELAY_OK)
        return RAFT_NOMEM;
    *bufs = raft_malloc(sizeof(**bufs));
    if (*bufs == NULL)
        goto err_free_snap;
    (*bufs)[0].base = raft_malloc(CONS_SNAP_HDR_LEN + len);
    if ((*bufs)[0].base == NULL)
        goto err_free_bufs;
    cons__snap_header((*bufs)[0].base, snap, len);
    memcpy((uint8_t *)(*bufs)[0].base + CONS_SNAP_HDR_LEN, snap, len);
    (*bufs)[0].len = CONS_SNAP_HDR_LEN + len;
    *n_bufs = 1;
    free(snap);
    n->stats.snapshot_bytes = len;
    n->snap_last_len = len;
    return 0;
err_free_bufs:
    raft_free(*bufs);
    *bufs = NULL;
err_free_snap:
    free(snap);
    return RAFT_NOMEM;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                        unsigned *n_bufs)
{
    struct cons_node *n = fsm->data;
    uint64_t t0 = uv_hrtime();
    bool forked = false;
    int rv;

    if (snapshot_deferred(n) || uv_now(n->loop) < n->snap_retry_at)
        return RAFT_BUSY;
    /* raft's own count threshold, too, waits for log as big as the last
     * snapshot (see snapshot_due), once snapshots cost enough to matter;
     * asked again at its next step. */
    if (n->snap_last_len >= CONS_SNAP_SPACED_BYTES &&
        n->snap_bytes < n->snap_last_len)
        return RAFT_BUSY;
    if (n->cfg.snapshot_mode != CONS_SNAP_INLINE)
        forked = cons__snapjob_start(n, bufs, n_bufs) == 0;
    if (!forked) {
        rv = snapshot_inline(n, bufs, n_bufs);
        if (rv != 0)
            return rv;
    }
    snapshot_taken(n);
    n->stats.snapshots++;
    /* How long this node's loop stalled for it: the view or the fork, or
     * the whole encoding. The encoder's bytes are logged as they come in
     * (snapjob.c). */
    n->stats.snapshot_seconds = (double)(uv_hrtime() - t0) / 1e9;
    if (forked)
        LOG_DEBUG("event=snapshot_started applied=%llu loop_ms=%.1f",
                  (unsigned long long)raft_last_applied(&n->raft),
                  n->stats.snapshot_seconds * 1e3);
    else
        LOG_INFO("event=snapshot bytes=%llu applied=%llu mode=inline "
                 "loop_ms=%.1f",
                 (unsigned long long)n->stats.snapshot_bytes,
                 (unsigned long long)raft_last_applied(&n->raft),
                 n->stats.snapshot_seconds * 1e3);
    return 0;
}

/*
 * The state bytes of a snapshot, checked. A mismatch is refused whoever
 * sent the snapshot: at start-up raft_start fails and the node says which
 * file (start_reason in node.c); an InstallSnapshot from the leader fails
 * and is sent again.
 */
static int snapshot_payload(struct cons_node *n, const struct raft_buffer *buf,
                            const uint8_t **p, size_t *len)
{
    const uint8_t *b = buf->base;
    uint32_t want, got;

    *p = b;
    *len = buf->len;
    if (buf->len < 4 || memcmp(b, SNAP_HDR_MAGIC, 4) != 0)
        return 0; /* written before the header existed */
    if (buf->len < CONS_SNAP_HDR_LEN) {
        snprintf(n->restore_err, sizeof(n->restore_err),
                 "snapshot of %zu bytes is cut short", buf->len);
        return -1;
    }
    want = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 |
           (uint32_t)b[7] << 24;
    got = crc32c(0, b + CONS_SNAP_HDR_LEN, buf->len - CONS_SNAP_HDR_LEN);
    if (got != want) {
        snprintf(n->restore_err, sizeof(n->restore_err),
                 "snapshot checksum mismatch (stored %08x, computed %08x "
                 "over %zu bytes)",
                 want, got, buf->len - CONS_SNAP_HDR_LEN);
        return -1;
    }
    *p = b + CONS_SNAP_HDR_LEN;
    *len = buf->len - CONS_SNAP_HDR_LEN;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct cons_node *n = fsm->data;
    const uint8_t *p;
    size_t len;
    int rv;

    n->restore_err[0] = '\0';
    if (snapshot_payload(n, buf, &p, &len) != 0) {
        LOG_ERROR("event=restore_failed bytes=%zu err=\"%s\"", buf->len,
                  n->restore_err);
        return RAFT_CORRUPT;
    }
    rv = relay_state_restore(n->state, p, len);
    if (rv != RELAY_OK) {
        snprintf(n->restore_err, sizeof(n->restore_err),
                 "snapshot of %zu bytes does not decode: %s", len,
                 relay_strerror(rv));
        LOG_ERROR("event=restore_failed bytes=%zu err=%s", buf->len,
                  relay_strerror(rv));
        return rv == RELAY_ENOMEM ? RAFT_NOMEM : RAFT_CORRUPT;
    }
    LOG_INFO("event=restore bytes=%zu rooms=%zu", buf->len,
             relay_state_room_count(n->state));
    n->snap_last_len = len;
    raft_free(buf->base); /* ours after a successful restore only */
    snapshot_taken(n);
    n->stats.restores++;
    /* At start-up (raft_start loading the snapshot) nothing is pending and
     * nobody is connected yet: both are no-ops then. */
    cons__proposer_on_restored(n);
    if (n->on_restored != NULL)
        n->on_restored(n->cb_arg);
    return 0;
}

void cons__fsm_init(struct cons_node *n)
{
    memset(&n->fsm, 0, sizeof(n->fsm));
    n->fsm.version = 1;
    n->fsm.data = n;
    n->fsm.apply = fsm_apply;
    n->fsm.snapshot = fsm_snapshot;
    n->fsm.restore = fsm_restore;
}
