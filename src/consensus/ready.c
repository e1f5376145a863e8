/*
 * ready.c - whether this node's disk still has room for the log.
 *
 * Disk space: raft_uv keeps open segments prepared ahead and reports the
 * space they hold as io.capacity (KiB); below its capacity threshold
 * (4 MiB) the leader refuses new entries with RAFT_NOSPACE, and a follower
 * soon cannot store what it is sent. Creating a segment is retried on a
 * timer, so writes resume by themselves once space returns.
 *
 * Not here: what the proposer does about it (proposer.c).
 */
#define LOG_MODULE "cons"
#include <stddef.h>

#include "internal.h"

/* libraft's default capacity threshold (raft.c: 4 MiB, one open segment). */
#define CAPACITY_MIN_KIB 4096u

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
