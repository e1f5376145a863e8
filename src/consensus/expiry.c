/*
 * expiry.c - idle rooms expire: the leader decides, the log applies.
 *
 * A room's last activity is the log time of its creation or of its last
 * applied push (relay keeps it, so every node agrees). The leader scans the
 * rooms now and then and proposes a conditional DELETE_ROOM for each room
 * idle longer than room_ttl_ms, naming the activity time it saw: if a push
 * lands in between, the delete is refused when applied (RELAY_EACTIVE), so
 * expiry never removes a room in use. Every node then drops the room and
 * net closes its sessions there.
 *
 * Bounded work: one scan per SCAN_MS (or a tenth of the TTL when shorter),
 * at most MAX_PER_SCAN deletes proposed per scan.
 */
#define LOG_MODULE "cons"
#include <string.h>
#include <time.h>

#include "internal.h"
#include "log.h"

#define SCAN_MS 10000
#define MIN_SCAN_MS 100
#define MAX_PER_SCAN 256

struct scan {
    struct cons_node *node;
    uint64_t now_ms;
    size_t proposed;
};

static void consider(void *arg, const struct relay_room_info *ri)
{
    struct scan *sc = arg;
    struct cons_node *n = sc->node;
    struct relay_cmd cmd;

    if (sc->proposed >= MAX_PER_SCAN || ri->last_ms == 0 ||
        sc->now_ms < ri->last_ms ||
        sc->now_ms - ri->last_ms < n->cfg.room_ttl_ms)
        return;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = RELAY_CMD_DELETE_ROOM;
    cons__sys_origin(n, CONS_OWN_EXPIRY, &cmd.origin);
    cmd.room = ri->id;
    cmd.room_len = ri->id_len;
    cmd.compact_seq = ri->last_ms; /* only if still idle since then */
    if (cons_propose(n, &cmd) == CONS_OK) {
        sc->proposed++;
        LOG_INFO("event=room_expire room=%.*s idle_ms=%llu", (int)ri->id_len,
                 ri->id, (unsigned long long)(sc->now_ms - ri->last_ms));
    }
}

void cons__expiry_check(struct cons_node *n)
{
    struct timespec ts;
    struct scan sc = {.node = n};
    uint64_t now = uv_now(n->loop), every;

    if (n->cfg.room_ttl_ms == 0 || !n->raft_started || n->stopping ||
        n->closing || now < n->next_expiry_scan ||
        raft_state(&n->raft) != RAFT_LEADER)
        return;
    every = n->cfg.room_ttl_ms / 10;
    every = every < MIN_SCAN_MS ? MIN_SCAN_MS
            : every > SCAN_MS   ? SCAN_MS
                                : every;
    n->next_expiry_scan = now + every;
    /* Log time is the leader's wall clock (proposer.c), so compare with it. */
    clock_gettime(CLOCK_REALTIME, &ts);
    sc.now_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    relay_rooms_each(n->state, consider, &sc);
}
