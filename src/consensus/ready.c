/*
 * ready.c - when this node's applied state may answer reads, and whether
 * its disk still has room for the log.
 *
 * A node that restarts loads its snapshot and log but applies the entries
 * after the snapshot only once it learns how far they are committed; before
 * that, rooms that exist are missing from its state. So a node is "ready"
 * only when a leader is known and the node has applied its sync index for
 * that leader's term:
 * - on a follower, the leader_commit of the first AppendEntries (entries or
 *   heartbeat) it accepted from the current leader in the current term:
 *   everything committed when the node first heard from this leader;
 * - on the leader, its last log index when it took office: a new leader
 *   commits those entries with its first entry of the term (libraft appends
 *   a barrier at once when it has uncommitted ones), Raft thesis 6.4.
 * Lagging behind later on (normal replication delay) does not make a node
 * unready; losing the leader, or a new term or leader, does until the new
 * sync index is applied.
 *
 * The follower's sync index comes from the messages themselves: the raft
 * I/O's start() is wrapped so that every received message passes through
 * on_recv, which lets raft handle it and then notes leader_commit if raft
 * accepted the sender as leader of its current term. libraft has no API
 * for it: raft_commit_index() on a follower is capped by what the message
 * proved its log holds, so right after a restart it still reads the old
 * value while the leader is already known.
 *
 * The same wrapper shortens libraft's tick (RAFT_TICK_MS) and tells the
 * proposer of a new leader as soon as raft knows it.
 *
 * Disk space: raft_uv keeps open segments prepared ahead and reports the
 * space they hold as io.capacity (KiB); below its capacity threshold
 * (4 MiB) the leader refuses new entries with RAFT_NOSPACE, and a follower
 * soon cannot store what it is sent. Creating a segment is retried on a
 * timer, so writes resume by themselves once space returns.
 *
 * Not here: what net answers while not ready (net/http.c, net/ws.c).
 */
#define LOG_MODULE "cons"
#include <stddef.h>

#include "internal.h"
#include "log.h"

/* libraft's default capacity threshold (raft.c: 4 MiB, one open segment). */
#define CAPACITY_MIN_KIB 4096u
/* libraft asks for a tick every heartbeat and checks its timers only then,
 * so an election timer fired up to a heartbeat late, and two followers
 * whose (randomised) timers fell into the same heartbeat interval became
 * candidates on the same tick and split the vote: another 1x-2x election
 * timeout. Finer ticks fire each timer within this much of its time;
 * heartbeats still go out every --heartbeat (libraft sends one when that
 * much has passed since the last message, whatever the tick). */
#define RAFT_TICK_MS 5u

static struct cons_node *node_of_io(struct raft_io *io)
{
    return (struct cons_node *)((char *)io - offsetof(struct cons_node, io));
}

static uint32_t leader_of(struct cons_node *n)
{
    raft_id id = 0;
    const char *addr = NULL;

    raft_leader(&n->raft, &id, &addr);
    return (uint32_t)id;
}

/* Records the sync index of the current term once it can be known. */
static void observe(struct cons_node *n, uint32_t from, uint64_t term,
                    uint64_t leader_commit, bool from_leader)
{
    uint64_t cur = raft_current_term(&n->raft);
    uint32_t leader = leader_of(n);

    if (leader == 0 || (n->sync_term == cur && n->sync_leader == leader))
        return;
    if (leader == n->cfg.id && raft_state(&n->raft) == RAFT_LEADER) {
        n->sync_index = raft_last_index(&n->raft);
    } else if (from_leader && from == leader && term == cur) {
        n->sync_index = leader_commit;
    } else {
        return;
    }
    n->sync_term = cur;
    n->sync_leader = leader;
    LOG_INFO("event=sync_point leader=%u term=%llu index=%llu applied=%llu",
             leader, (unsigned long long)cur, (unsigned long long)n->sync_index,
             (unsigned long long)raft_last_applied(&n->raft));
}

static void on_tick(struct raft_io *io)
{
    struct cons_node *n = node_of_io(io);

    n->raft_tick_cb(io);
    if (!n->closing) {
        observe(n, 0, 0, 0, false);
        cons__proposer_check_leader(n);
    }
}

static void on_recv(struct raft_io *io, struct raft_message *msg)
{
    struct cons_node *n = node_of_io(io);
    bool append = msg->type == RAFT_APPEND_ENTRIES;
    uint32_t from = (uint32_t)msg->server_id;
    uint64_t term = append ? msg->append_entries.term : 0;
    uint64_t commit = append ? msg->append_entries.leader_commit : 0;

    /* raft may take over or release msg's contents: read them first. */
    n->raft_recv_cb(io, msg);
    if (!n->closing) {
        observe(n, from, term, commit, append);
        /* A new leader is known from its first message (or a won vote):
         * the forward link and the re-send of what is pending start now,
         * not at the proposer's next timer turn (up to 50 ms later, part
         * of every failover). Cheap when nothing changed. */
        cons__proposer_check_leader(n);
    }
}

static int wrapped_start(struct raft_io *io, unsigned msecs,
                         raft_io_tick_cb tick, raft_io_recv_cb recv)
{
    struct cons_node *n = node_of_io(io);

    n->raft_tick_cb = tick;
    n->raft_recv_cb = recv;
    return n->io_start(io, msecs < RAFT_TICK_MS ? msecs : RAFT_TICK_MS, on_tick,
                       on_recv);
}

void cons__ready_wrap_io(struct cons_node *n)
{
    n->io_start = n->io.start;
    n->io.start = wrapped_start;
}

const char *cons_node_not_ready(struct cons_node *n)
{
    uint32_t leader;

    if (!n->raft_started)
        return "starting";
    if (n->closing || n->stopping)
        return "shutting down";
    leader = leader_of(n);
    if (leader == 0)
        return "no leader known";
    /* A single voter wins its election without a message or a tick. */
    observe(n, 0, 0, 0, false);
    if (n->sync_term != raft_current_term(&n->raft) || n->sync_leader != leader)
        return "waiting to hear from the leader";
    if (raft_last_applied(&n->raft) < n->sync_index)
        return "catching up with the leader";
    if (!relay_state_configured(n->state))
        return "cluster settings not applied yet";
    return NULL;
}

bool cons_node_is_ready(struct cons_node *n)
{
    return cons_node_not_ready(n) == NULL;
}

bool cons__disk_is_full(const struct cons_node *n)
{
    return n->raft_started && n->io.capacity < CAPACITY_MIN_KIB;
}

const char *cons_node_disk_fault(const struct cons_node *n)
{
    if (!cons__disk_is_full(n))
        return NULL;
    return "disk full: less than 4 MiB left for the log";
}
