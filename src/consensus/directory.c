/*
 * directory.c - keeping this node's entry in the replicated node directory
 * current, and the membership view for status reports.
 *
 * Every node owns its own directory entry (id -> raft and HTTP address). A
 * tick (and every leader change) compares the applied directory with this
 * node's configuration; when they differ and a leader is known, the node
 * proposes NODE_SET like any command, under a session of its own, one at a
 * time. A node restarted with new addresses thus corrects its entry as soon
 * as it can reach a leader, and followers find the leader's HTTP endpoint
 * for their forward link there.
 *
 * Not here: raft membership changes (the admin API), forwarding (net).
 */
#define LOG_MODULE "cons"
#include <string.h>

#include "internal.h"
#include "log.h"

#define TICK_MS 200

static bool entry_current(const struct cons_node *n)
{
    struct relay_node_info ni;

    if (!relay_node_lookup(n->state, n->cfg.id, &ni))
        return false;
    return strcmp(ni.raft_addr, n->raft_addr) == 0 &&
           strcmp(ni.http_addr, n->http_addr) == 0;
}

void cons__dir_check(struct cons_node *n)
{
    struct relay_cmd cmd;
    raft_id leader = 0;
    const char *addr = NULL;
    int rv;

    if (!n->raft_started || n->stopping || n->closing || n->dir_inflight ||
        n->http_addr[0] == '\0')
        return;
    raft_leader(&n->raft, &leader, &addr);
    if (leader == 0 || entry_current(n))
        return;
    /* Only once this node has applied what the leader committed before it
     * could tell; otherwise the entry may already be there. */
    if (raft_last_applied(&n->raft) < raft_commit_index(&n->raft))
        return;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = RELAY_CMD_NODE_SET;
    cons__sys_origin(n, CONS_OWN_DIR, &cmd.origin);
    cmd.node_id = n->cfg.id;
    cmd.raft_addr = n->raft_addr;
    cmd.raft_addr_len = strlen(n->raft_addr);
    cmd.http_addr = n->http_addr;
    cmd.http_addr_len = strlen(n->http_addr);
    rv = cons_propose(n, &cmd);
    if (rv != CONS_OK) {
        LOG_WARN("event=directory_propose_failed err=%s", cons_strerror(rv));
        return;
    }
    n->dir_inflight = true;
    LOG_INFO("event=directory_publish id=%u raft=%s http=%s", n->cfg.id,
             n->raft_addr, n->http_addr);
}

/* The NODE_SET was applied or failed: check again on the next tick. */
void cons__dir_done(struct cons_node *n)
{
    n->dir_inflight = false;
}

static void on_tick(uv_timer_t *t)
{
    struct cons_node *n = t->data;

    cons__proposer_check_leader(n);
    cons__dir_check(n);
    cons__settings_check(n);
    cons__expiry_check(n);
    cons__snapjob_check(n);
}

void cons__dir_start(struct cons_node *n)
{
    uv_timer_start(&n->tick, on_tick, 0, TICK_MS);
}

const char *cons_node_http_addr(const struct cons_node *n, uint32_t id)
{
    struct relay_node_info ni;

    if (!relay_node_lookup(n->state, id, &ni) || ni.http_addr[0] == '\0')
        return NULL;
    return ni.http_addr;
}

void cons_node_members(const struct cons_node *n, cons_member_cb cb, void *arg)
{
    struct raft *r = (struct raft *)&n->raft;
    bool leader;

    if (!n->raft_started)
        return;
    leader = raft_state(r) == RAFT_LEADER;
    for (unsigned i = 0; i < r->configuration.n; i++) {
        const struct raft_server *srv = &r->configuration.servers[i];
        struct cons_member m = {
            .id = (uint32_t)srv->id,
            .raft_addr = srv->address,
            .http_addr = cons_node_http_addr(n, (uint32_t)srv->id),
        };
        raft_index match = 0;

        switch (srv->role) {
        case RAFT_VOTER:
            m.role = "voter";
            break;
        case RAFT_STANDBY:
            m.role = "standby";
            break;
        default:
            m.role = "spare";
            break;
        }
        if (leader && raft_match_index(r, srv->id, &match) == 0) {
            m.has_match = true;
            m.match_index = srv->id == r->id ? raft_last_index(r) : match;
        }
        cb(arg, &m);
    }
}
