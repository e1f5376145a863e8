/*
 * iotime.c - how long this node's log appends take (the
 * driftd_raft_append_seconds histogram).
 *
 * libraft gives no hook for it, so raft_uv's append is wrapped and timed
 * from the call to its completion callback (write and fsync). The
 * completion gets only the request, whose data field is libraft's, so the
 * appends in flight wait in a small table of (request, callback, node,
 * start): the process's nodes all run on its one loop thread, so one table
 * serves them, unlocked. An append made while the table is full passes
 * through untimed rather than waiting or allocating.
 *
 * Not here: commit time (proposer.c, on the leader).
 */
#include <stddef.h>

#include "internal.h"

/* raft_uv has a few appends in flight at a time; 64 is plenty. */
#define IOTIME_SLOTS 64

struct pending_append {
    struct raft_io_append *req; /* NULL: free slot */
    raft_io_append_cb cb;
    struct cons_node *node;
    uint64_t start_ns;
};

static struct pending_append slots[IOTIME_SLOTS];

static struct cons_node *node_of_io(struct raft_io *io)
{
    return (struct cons_node *)((char *)io - offsetof(struct cons_node, io));
}

static void timed_cb(struct raft_io_append *req, int status)
{
    for (size_t i = 0; i < IOTIME_SLOTS; i++) {
        struct pending_append p = slots[i];

        if (p.req != req)
            continue;
        slots[i].req = NULL;
        cons_hist_add(&p.node->stats.append,
                      (double)(uv_hrtime() - p.start_ns) / 1e6);
        req->cb = p.cb;
        p.cb(req, status);
        return;
    }
    /* Not ours: cannot happen, as only timed appends get timed_cb. */
}

static int timed_append(struct raft_io *io, struct raft_io_append *req,
                        const struct raft_entry entries[], unsigned n_entries,
                        raft_io_append_cb cb)
{
    struct cons_node *n = node_of_io(io);
    size_t i;
    int rv;

    for (i = 0; i < IOTIME_SLOTS && slots[i].req != NULL; i++)
        ;
    if (i == IOTIME_SLOTS)
        return n->io_append(io, req, entries, n_entries, cb);
    slots[i] = (struct pending_append){
        .req = req, .cb = cb, .node = n, .start_ns = uv_hrtime()};
    rv = n->io_append(io, req, entries, n_entries, timed_cb);
    if (rv != 0)
        slots[i].req = NULL; /* refused: no callback will come */
    return rv;
}

void cons__iotime_wrap_io(struct cons_node *n)
{
    n->io_append = n->io.append;
    n->io.append = timed_append;
}
