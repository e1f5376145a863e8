/*
 * handover.c - a leader asked to stop hands leadership to another voter
 * first, so a planned restart costs the cluster no election timeout.
 *
 * Happy path: cons_node_hand_over() on the leader asks libraft for a
 * transfer to the most up-to-date voter (raft_transfer with id 0: libraft
 * picks the voter with the highest match index, waits until it has the
 * last entry, then sends it TimeoutNow, and it starts an election at once
 * that the others take even though they know a leader). New entries are
 * refused meanwhile (raft_apply: not leader), so the target catches up;
 * the proposer keeps the refused commands and, once the new leader is
 * known, forwards them to it like any follower. libraft calls back when a
 * new leader is known, and the caller's callback fires: moved.
 *
 * Failure modes: libraft gives a transfer up after one election timeout
 * (the target did not catch up, or ignored TimeoutNow while still writing
 * the last entry) and calls back while this node still leads: tried again,
 * HANDOVER_TRIES in all, then the callback fires: not moved. When every node
 * stops at once, no new leader is ever known and libraft never calls back:
 * the caller bounds the wait with its own timer and cancels
 * (cons_node_hand_over_cancel), then stops as without a hand-over. Nothing
 * is started when this node is not the leader, is the only voter, or a
 * transfer is already under way (a membership change, a full disk).
 *
 * Not here: the bound and the stop that follows (src/main.c).
 */
#define LOG_MODULE "cons"

#include "internal.h"
#include "log.h"

#define HANDOVER_TRIES 2

static unsigned other_voters(const struct cons_node *n)
{
    unsigned v = 0;

    for (unsigned i = 0; i < n->raft.configuration.n; i++)
        if (n->raft.configuration.servers[i].role == RAFT_VOTER &&
            n->raft.configuration.servers[i].id != n->cfg.id)
            v++;
    return v;
}

static void finish(struct cons_node *n, bool moved)
{
    cons_handover_cb cb = n->handover_cb;

    n->handover_cb = NULL;
    if (cb != NULL)
        cb(n->handover_arg, moved);
}

static int start_transfer(struct cons_node *n);

static void on_transfer(struct raft_transfer *req)
{
    struct cons_node *n = req->data;
    raft_id leader = 0;
    const char *addr = NULL;

    n->handover_pending = false;
    /* Called back from raft_close too: the caller has moved on. */
    if (n->closing || n->handover_cb == NULL)
        return;
    if (raft_state(&n->raft) == RAFT_LEADER) {
        if (++n->handover_tries < HANDOVER_TRIES && start_transfer(n) == 0)
            return;
        LOG_WARN("event=handover_failed tries=%u", n->handover_tries);
        finish(n, false);
        return;
    }
    raft_leader(&n->raft, &leader, &addr);
    LOG_INFO("event=handover_done leader=%llu", (unsigned long long)leader);
    finish(n, true);
}

static int start_transfer(struct cons_node *n)
{
    int rv;

    n->handover.data = n;
    rv = raft_transfer(&n->raft, &n->handover, 0, on_transfer);
    if (rv != 0) {
        LOG_INFO("event=handover_not_started err=\"%s\"", raft_strerror(rv));
        return rv;
    }
    n->handover_pending = true;
    LOG_INFO("event=handover to=%llu try=%u",
             (unsigned long long)raft_transferee(&n->raft),
             n->handover_tries + 1);
    return 0;
}

int cons_node_hand_over(struct cons_node *n, cons_handover_cb cb, void *arg)
{
    if (n == NULL || !n->raft_started || n->stopping || n->closing ||
        n->handover_cb != NULL || n->handover_pending)
        return CONS_ECLOSING;
    if (raft_state(&n->raft) != RAFT_LEADER)
        return CONS_ENOTLEADER;
    if (other_voters(n) == 0)
        return CONS_ELASTVOTER;
    n->handover_tries = 0;
    if (start_transfer(n) != 0)
        return CONS_EBUSY;
    n->handover_cb = cb;
    n->handover_arg = arg;
    return CONS_OK;
}

void cons_node_hand_over_cancel(struct cons_node *n)
{
    /* libraft keeps the request until it calls back (at the latest from
     * raft_close); it lives in n, which outlives raft. */
    if (n != NULL)
        n->handover_cb = NULL;
}
