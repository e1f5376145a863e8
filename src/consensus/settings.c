/*
 * settings.c - cluster settings: the limits that decide whether a command
 * applies live in the replicated state and change only through the log
 * (RELAY_CMD_CONFIG), so nodes started with different flags still apply
 * the same log the same way.
 *
 * At bootstrap the first leader proposes its own flags for the settings a
 * new cluster takes from them (max_value_len, max_room_bytes, max_rooms);
 * until those are applied a node answers "not ready" (ready.c) and relay
 * uses its compiled-in defaults, the same on every node. Afterwards
 * `driftctl config set NAME VALUE` (POST /admin/config) changes a setting.
 * Every node logs a setting applied from the log that differs from its
 * own flag, which is then ignored.
 *
 * The proposals go under a session of their own (CONS_OWN_CONFIG), whose
 * completion only clears cfg_inflight.
 */
#define LOG_MODULE "cons"
#include <string.h>

#include "internal.h"
#include "log.h"

void cons__settings_check(struct cons_node *n)
{
    struct relay_limits mine;
    struct relay_cmd cmd;
    bool set;

    if (!n->raft_started || n->stopping || n->closing || n->cfg_inflight ||
        raft_state(&n->raft) != RAFT_LEADER || relay_state_configured(n->state))
        return;
    /* Only once the leader has applied what it committed before it knew:
     * the settings may be in the log already. */
    if (raft_last_applied(&n->raft) < raft_commit_index(&n->raft))
        return;
    mine = n->cfg.limits;
    for (size_t i = 0; i < 3; i++) {
        relay_setting_value(n->state, i, &set);
        if (set)
            continue;
        memset(&cmd, 0, sizeof(cmd));
        cmd.type = RELAY_CMD_CONFIG;
        cons__sys_origin(n, CONS_OWN_CONFIG, &cmd.origin);
        cmd.key = relay_setting_name(i);
        cmd.key_len = strlen(cmd.key);
        cmd.compact_seq = relay_limits_setting(&mine, i);
        if (cmd.compact_seq == 0) {
            struct relay_limits def;

            relay_limits_default(&def);
            cmd.compact_seq = relay_limits_setting(&def, i);
        }
        if (cons_propose(n, &cmd) != CONS_OK)
            return;
        n->cfg_inflight++;
        LOG_INFO("event=setting_proposed name=%s value=%llu why=bootstrap",
                 cmd.key, (unsigned long long)cmd.compact_seq);
    }
}

void cons__settings_done(struct cons_node *n)
{
    if (n->cfg_inflight > 0)
        n->cfg_inflight--;
}

void cons__settings_applied(struct cons_node *n, const struct relay_cmd *cmd,
                            int status)
{
    int i = relay_setting_find(cmd->key, cmd->key_len);
    uint64_t mine;

    if (status != RELAY_OK || i < 0)
        return;
    mine = relay_limits_setting(&n->cfg.limits, (size_t)i);
    if (mine != cmd->compact_seq)
        LOG_WARN("event=setting_differs name=%s cluster=%llu flag=%llu "
                 "why=\"the cluster setting applies; this node's flag is "
                 "ignored\"",
                 relay_setting_name((size_t)i),
                 (unsigned long long)cmd->compact_seq,
                 (unsigned long long)mine);
    else
        LOG_INFO("event=setting_applied name=%s value=%llu",
                 relay_setting_name((size_t)i),
                 (unsigned long long)cmd->compact_seq);
}
