/*
 * nodes.c - the node directory: each node's raft and HTTP address, kept in
 * the replicated state so any node can find the leader's HTTP (forward)
 * endpoint and tell clients where the nodes are, and a node restarted with
 * a new address corrects its own entry through the log.
 *
 * A small array sorted by id (a cluster has a handful of nodes): lookups
 * are a binary search, and walks (the listing, snapshot.c) go in id order,
 * the same on every node. Addresses arrive as lengths plus bytes and are
 * stored as C strings, so a NUL inside one is refused.
 *
 * Not here: who proposes the entries (consensus/directory.c) or checks that
 * an address is reachable.
 */
#include <stdlib.h>
#include <string.h>

#include "state_internal.h"

static size_t node_pos(const struct relay_state *s, uint32_t id)
{
    size_t lo = 0, hi = s->n_nodes;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (s->nodes[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool relay_node_lookup(const struct relay_state *s, uint32_t id,
                       struct relay_node_info *out)
{
    size_t i = node_pos(s, id);

    if (i == s->n_nodes || s->nodes[i].id != id)
        return false;
    out->id = id;
    out->raft_addr = s->nodes[i].raft;
    out->http_addr = s->nodes[i].http;
    return true;
}

void relay_nodes_each(const struct relay_state *s, relay_node_cb cb, void *arg)
{
    for (size_t i = 0; i < s->n_nodes; i++) {
        struct relay_node_info ni = {.id = s->nodes[i].id,
                                     .raft_addr = s->nodes[i].raft,
                                     .http_addr = s->nodes[i].http};
        cb(arg, &ni);
    }
}

/* Inserts or updates a node; RELAY_ENOMEM leaves the directory unchanged. */
int relay__node_set(struct relay_state *s, uint32_t id, const char *raft,
                    size_t raft_len, const char *http, size_t http_len)
{
    size_t i = node_pos(s, id);
    char *r = relay__dup_bytes(raft, raft_len);
    char *h = relay__dup_bytes(http, http_len);

    if (r == NULL || h == NULL)
        goto err;
    if (i < s->n_nodes && s->nodes[i].id == id) {
        free(s->nodes[i].raft);
        free(s->nodes[i].http);
    } else {
        struct relay__dnode *nn =
            realloc(s->nodes, (s->n_nodes + 1) * sizeof(*nn));

        if (nn == NULL)
            goto err;
        s->nodes = nn;
        memmove(&s->nodes[i + 1], &s->nodes[i], (s->n_nodes - i) * sizeof(*nn));
        s->n_nodes++;
        s->nodes[i].id = id;
    }
    s->nodes[i].raft = r;
    s->nodes[i].http = h;
    return RELAY_OK;
err:
    free(r);
    free(h);
    return RELAY_ENOMEM;
}

static int node_forget(struct relay_state *s, uint32_t id)
{
    size_t i = node_pos(s, id);

    if (i == s->n_nodes || s->nodes[i].id != id)
        return RELAY_ENOROOM;
    free(s->nodes[i].raft);
    free(s->nodes[i].http);
    memmove(&s->nodes[i], &s->nodes[i + 1],
            (s->n_nodes - i - 1) * sizeof(*s->nodes));
    s->n_nodes--;
    return RELAY_OK;
}

int relay__apply_node(struct relay_state *s, const struct relay_cmd *cmd,
                      struct relay_effects *eff)
{
    if (cmd->node_id == 0) {
        eff->status = RELAY_EINVAL;
        return RELAY_OK;
    }
    if (cmd->type == RELAY_CMD_NODE_FORGET) {
        eff->status = node_forget(s, cmd->node_id);
        return RELAY_OK;
    }
    /* Addresses are C strings everywhere after this: no NULs inside. */
    if (cmd->raft_addr_len == 0 || cmd->raft_addr_len > RELAY_ADDR_MAX ||
        cmd->http_addr_len > RELAY_ADDR_MAX ||
        memchr(cmd->raft_addr, '\0', cmd->raft_addr_len) != NULL ||
        (cmd->http_addr_len > 0 &&
         memchr(cmd->http_addr, '\0', cmd->http_addr_len) != NULL)) {
        eff->status = RELAY_EINVAL;
        return RELAY_OK;
    }
    return relay__node_set(s, cmd->node_id, cmd->raft_addr, cmd->raft_addr_len,
                           cmd->http_addr, cmd->http_addr_len);
}

void relay__nodes_clear(struct relay_state *s)
{
    for (size_t i = 0; i < s->n_nodes; i++) {
        free(s->nodes[i].raft);
        free(s->nodes[i].http);
    }
    free(s->nodes);
    s->nodes = NULL;
    s->n_nodes = 0;
}
