/*
 * fsm.c - the raft FSM adapter over relay.
 *
 * apply: one raft entry is one relay batch (see relay_batch_*); each command
 * goes through relay_state_apply and its effects are handed to the node's
 * on_applied callback right away, so subscribers on this node see the
 * broadcast while the state is exactly the state after that command.
 * snapshot/restore: relay's whole-state msgpack bytes, copied into
 * raft_malloc'd buffers that raft releases (fsm version 1 ownership rules).
 *
 * Not here: proposing (proposer.c) and raft wiring (node.c).
 */
#define LOG_MODULE "cons"
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "log.h"

struct apply_ctx {
    struct cons_node *node;
    uint64_t index;
};

static int apply_one(void *arg, const struct relay_cmd *cmd, uint64_t now_ms)
{
    struct apply_ctx *ctx = arg;
    struct cons_node *n = ctx->node;
    struct relay_effects eff;
    int rv;

    rv = relay_state_apply(n->state, cmd, now_ms, &eff);
    if (rv != RELAY_OK)
        return rv;
    if (now_ms > n->last_entry_ms)
        n->last_entry_ms = now_ms;
    if (cmd->origin.node == n->cfg.id)
        cons__proposer_on_applied(n, &cmd->origin);
    /* A re-sent copy of a command applied before: its sender was answered
     * then, and subscribers saw it then. */
    if (eff.status == RELAY_EDUP)
        return 0;
    if (n->on_applied != NULL) {
        struct cons_applied ev = {.cmd = cmd, .eff = &eff, .index = ctx->index};
        n->on_applied(n->cb_arg, &ev);
    }
    return 0;
}

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf,
                     void **result)
{
    struct cons_node *n = fsm->data;
    struct apply_ctx ctx = {.node = n, .index = raft_last_applied(&n->raft) + 1};
    int rv;

    *result = NULL;
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

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                        unsigned *n_bufs)
{
    struct cons_node *n = fsm->data;
    uint8_t *snap;
    size_t len;
    int rv;

    rv = relay_state_snapshot(n->state, &snap, &len);
    if (rv != RELAY_OK)
        return RAFT_NOMEM;
    *bufs = raft_malloc(sizeof(**bufs));
    if (*bufs == NULL)
        goto err_free_snap;
    (*bufs)[0].base = raft_malloc(len > 0 ? len : 1);
    if ((*bufs)[0].base == NULL)
        goto err_free_bufs;
    memcpy((*bufs)[0].base, snap, len);
    (*bufs)[0].len = len;
    *n_bufs = 1;
    free(snap);
    LOG_INFO("event=snapshot bytes=%zu applied=%llu", len,
             (unsigned long long)raft_last_applied(&n->raft));
    return 0;
err_free_bufs:
    raft_free(*bufs);
    *bufs = NULL;
err_free_snap:
    free(snap);
    return RAFT_NOMEM;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct cons_node *n = fsm->data;
    int rv;

    rv = relay_state_restore(n->state, buf->base, buf->len);
    if (rv != RELAY_OK) {
        LOG_ERROR("event=restore_failed bytes=%zu err=%s", buf->len,
                  relay_strerror(rv));
        return rv == RELAY_ENOMEM ? RAFT_NOMEM : RAFT_MALFORMED;
    }
    LOG_INFO("event=restore bytes=%zu rooms=%zu", buf->len,
             relay_state_room_count(n->state));
    raft_free(buf->base); /* ours after a successful restore only */
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
