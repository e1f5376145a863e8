/*
 * read.c - linearizable reads: a read is answered only after this node has
 * applied everything that was committed, anywhere in the cluster, before
 * the read arrived.
 *
 * The read goes through the log: a marker (a NOOP command of this node's
 * own read session) is proposed like any command, on the leader directly
 * or over the forward link. By the time this node applies its marker it
 * has applied every entry committed before the marker was appended, and
 * the marker was appended after the read arrived, so the state then holds
 * every push acknowledged before the read. (A read index without a log
 * entry would need libraft to confirm leadership with a heartbeat round,
 * which it does not expose.)
 *
 * Batching: one marker covers every read that arrived before it was
 * proposed; reads arriving while it is out wait for the next, so a
 * stream of reads costs one small command per commit round, carried in
 * the same group-commit entry as the pushes. At most CONS_MAX_READS wait.
 *
 * One exception: the leader of a one-voter cluster answers from its state
 * on the next loop turn. No other node can have acknowledged anything, and
 * everything it acknowledged was applied first, so the state is current;
 * this also keeps reads working while its disk is full and no marker could
 * be appended.
 *
 * Failure modes: a marker that fails (no leader, link lost, timeout) fails
 * the reads it covered with the same code; the caller answers "retry".
 */
#define LOG_MODULE "cons"
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "log.h"

#define CONS_MAX_READS 65536

void cons_node_set_read_callback(struct cons_node *n, cons_read_cb cb)
{
    n->on_read = cb;
}

static bool sole_voter_leader(struct cons_node *n)
{
    const struct raft_configuration *conf = &n->raft.configuration;
    unsigned voters = 0;

    if (!n->raft_started || raft_state(&n->raft) != RAFT_LEADER)
        return false;
    for (unsigned i = 0; i < conf->n; i++)
        if (conf->servers[i].role == RAFT_VOTER)
            voters++;
    return voters == 1;
}

static int propose_marker(struct cons_node *n)
{
    struct relay_cmd cmd;
    int rv;

    if (sole_voter_leader(n)) {
        /* Answered by cons__reads_local on the next loop turn. */
        n->read_marker_out = true;
        n->read_local = true;
        n->reads_covered = n->reads_count;
        cons__proposer_kick(n);
        return CONS_OK;
    }
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = RELAY_CMD_NOOP;
    cons__sys_origin(n, CONS_OWN_READ, &cmd.origin);
    rv = cons_propose(n, &cmd);
    if (rv != CONS_OK) {
        n->sys[CONS_OWN_READ].counter--; /* not proposed: number unused */
        return rv;
    }
    n->read_marker_out = true;
    /* Every read waiting now is covered by this marker. */
    n->reads_covered = n->reads_count;
    return CONS_OK;
}

/* Answers the first `count` waiting reads with status. */
static void answer(struct cons_node *n, size_t count, int status)
{
    for (size_t i = 0; i < count; i++) {
        uint64_t token = n->reads[(n->reads_head + i) % CONS_MAX_READS];

        if (n->on_read != NULL)
            n->on_read(n->cb_arg, token, status);
    }
    n->reads_head = (n->reads_head + count) % CONS_MAX_READS;
    n->reads_count -= count;
    n->reads_covered = 0;
    n->read_marker_out = false;
}

int cons_read_index(struct cons_node *n, uint64_t token)
{
    if (n->stopping || n->closing)
        return CONS_ECLOSING;
    if (n->reads == NULL) {
        n->reads = malloc(CONS_MAX_READS * sizeof(*n->reads));
        if (n->reads == NULL)
            return CONS_ENOMEM;
    }
    if (n->reads_count >= CONS_MAX_READS)
        return CONS_EFULL;
    n->reads[(n->reads_head + n->reads_count) % CONS_MAX_READS] = token;
    n->reads_count++;
    if (!n->read_marker_out) {
        int rv = propose_marker(n);

        if (rv != CONS_OK) {
            n->reads_count--;
            return rv;
        }
    }
    return CONS_OK;
}

void cons__reads_on_marker(struct cons_node *n, uint64_t counter, int status)
{
    int rv;

    if (!n->read_marker_out || n->read_local ||
        counter != n->sys[CONS_OWN_READ].counter)
        return; /* a re-sent copy of an older marker */
    answer(n, n->reads_covered, status);
    if (n->reads_count == 0 || n->stopping)
        return;
    rv = propose_marker(n);
    if (rv != CONS_OK)
        answer(n, n->reads_count, rv);
}

void cons__reads_local(struct cons_node *n)
{
    int rv;

    if (!n->read_local)
        return;
    n->read_local = false;
    answer(n, n->reads_covered, CONS_OK);
    if (n->reads_count == 0 || n->stopping)
        return;
    rv = propose_marker(n);
    if (rv != CONS_OK)
        answer(n, n->reads_count, rv);
}

void cons__reads_fail_all(struct cons_node *n, int code)
{
    answer(n, n->reads_count, code);
}

void cons__reads_free(struct cons_node *n)
{
    free(n->reads);
    n->reads = NULL;
    n->reads_count = 0;
}
