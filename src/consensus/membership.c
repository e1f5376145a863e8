/*
 * membership.c - adding, promoting, demoting and removing members, and
 * leadership transfer, on top of raft_add / raft_assign / raft_remove /
 * raft_transfer.
 *
 * One change at a time: the request lives in n->change until raft answers.
 * An add is two raft changes (add as spare, then assign the role; raft
 * promotes a voter only once it has caught up). A removal ends by
 * forgetting the node's directory entry.
 *
 * Refusals checked here, before raft sees anything: not leader, a change
 * in progress, unknown id, removing or demoting the leader itself (transfer
 * first) or the last voter, and, unless forced, a change after which fewer
 * voters are up to date than a majority of the new configuration. "Up to
 * date" is the leader's match index within MATCH_SLACK entries of its last
 * index: a voter that stopped answering falls behind as soon as anything is
 * written.
 *
 * The callback fires exactly once, also when the node closes with the
 * change in flight (status CONS_ECLOSING): it must then touch nothing but
 * its own arg, whose owner may be gone.
 */
#define LOG_MODULE "cons"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "log.h"

#define MATCH_SLACK 64

enum change_kind { CH_ADD, CH_ADD_ROLE, CH_ASSIGN, CH_REMOVE, CH_TRANSFER };

struct cons__change {
    struct raft_change req;
    struct raft_transfer treq;
    struct cons_node *node;
    enum change_kind kind;
    uint32_t id;
    int raft_role;
    unsigned tries; /* leadership transfers made (on_transfer) */
    cons_change_cb cb;
    void *arg;
};

/*
 * libraft gives a transfer one election timeout: the target must catch up
 * with the leader's last entry and win its election in that time. Under
 * steady writes on a busy machine the log keeps moving and one try can miss
 * (seen in blackbox/membership, "remove the leader", with other builds
 * running). A few tries make `driftctl transfer` and the removal of a leader
 * dependable; each one is logged.
 */
#define CONS_TRANSFER_TRIES 3

static int refuse(struct cons_node *n, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int refuse(struct cons_node *n, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(n->errmsg, sizeof(n->errmsg), fmt, ap);
    va_end(ap);
    return code;
}

static const struct raft_server *find_server(const struct cons_node *n,
                                             uint32_t id)
{
    const struct raft_configuration *c = &n->raft.configuration;

    for (unsigned i = 0; i < c->n; i++)
        if (c->servers[i].id == id)
            return &c->servers[i];
    return NULL;
}

static const struct raft_server *find_address(const struct cons_node *n,
                                              const char *addr)
{
    const struct raft_configuration *c = &n->raft.configuration;

    for (unsigned i = 0; i < c->n; i++)
        if (strcmp(c->servers[i].address, addr) == 0)
            return &c->servers[i];
    return NULL;
}

/*
 * libraft fills its errmsg on some refusals only (raft_add's duplicate id or
 * address leaves it as it was: often a stale line from loading the log at
 * start). Cleared before each call, so that raft_reason() can fall back on
 * raft_strerror() when the call left it empty.
 */
static void raft_reason_clear(struct cons_node *n)
{
    n->raft.errmsg[0] = '\0';
}

static const char *raft_reason(struct cons_node *n, int rv)
{
    const char *m = raft_errmsg(&n->raft);

    return m != NULL && m[0] != '\0' ? m : raft_strerror(rv);
}

/* Common preconditions of every change. */
static int check_leader(struct cons_node *n)
{
    if (!n->raft_started || n->stopping || n->closing)
        return refuse(n, CONS_ECLOSING, "node is not running");
    if (raft_state(&n->raft) != RAFT_LEADER)
        return refuse(n, CONS_ENOTLEADER, "this node is not the leader");
    if (n->change != NULL)
        return refuse(n, CONS_EBUSY,
                      "another membership change is in progress");
    return CONS_OK;
}

static bool up_to_date(struct cons_node *n, uint32_t id)
{
    raft_index match = 0;

    if (id == n->cfg.id)
        return true;
    if (raft_match_index(&n->raft, id, &match) != 0)
        return false;
    return match + MATCH_SLACK >= raft_last_index(&n->raft);
}

/*
 * Would the voters left after making `id` a non-voter (or removing it)
 * still have an up-to-date majority?
 */
static int check_quorum_without(struct cons_node *n, uint32_t id, bool force)
{
    const struct raft_configuration *c = &n->raft.configuration;
    unsigned voters = 0, live = 0;

    /* A new leader learns its followers' match indexes from their first
     * answers: judge only after a few heartbeat rounds. */
    cons__proposer_check_leader(n);
    if (!force && uv_now(n->loop) - n->leader_since <
                      3 * (uint64_t)n->cfg.heartbeat_timeout_ms)
        return refuse(n, CONS_EAGAIN,
                      "leadership just changed; the new leader is still "
                      "learning the followers' progress, retry shortly");

    for (unsigned i = 0; i < c->n; i++) {
        if (c->servers[i].role != RAFT_VOTER || c->servers[i].id == id)
            continue;
        voters++;
        if (up_to_date(n, (uint32_t)c->servers[i].id))
            live++;
    }
    if (voters == 0)
        return refuse(n, CONS_ELASTVOTER, "node %u is the last voter", id);
    if (!force && live < voters / 2 + 1)
        return refuse(n, CONS_EQUORUM,
                      "only %u of the %u remaining voters are up to date "
                      "(a majority is %u); use --force to do it anyway",
                      live, voters, voters / 2 + 1);
    return CONS_OK;
}

static struct cons__change *change_new(struct cons_node *n,
                                       enum change_kind kind, uint32_t id,
                                       cons_change_cb cb, void *arg)
{
    struct cons__change *ch = calloc(1, sizeof(*ch));

    if (ch == NULL)
        return NULL;
    ch->node = n;
    ch->kind = kind;
    ch->id = id;
    ch->cb = cb;
    ch->arg = arg;
    ch->req.data = ch;
    ch->treq.data = ch;
    /* The libraft call that starts it comes next (raft_reason). */
    raft_reason_clear(n);
    return ch;
}

/* Ends the change: frees it, then tells the caller (if still there). */
static void change_finish(struct cons__change *ch, int status, const char *msg)
{
    struct cons_node *n = ch->node;
    cons_change_cb cb = ch->cb;
    void *arg = ch->arg;

    n->change = NULL;
    free(ch);
    if (status == CONS_OK)
        LOG_INFO("event=membership_done %s", msg);
    else
        LOG_WARN("event=membership_failed %s", msg);
    if (cb != NULL)
        cb(arg, status, msg);
}

static int map_raft_err(int rv)
{
    switch (rv) {
    case RAFT_NOTLEADER:
    case RAFT_LEADERSHIPLOST:
        return CONS_ENOTLEADER;
    case RAFT_NOMEM:
        return CONS_ENOMEM;
    case RAFT_BADID:
    case RAFT_NOTFOUND:
        return CONS_ENOTFOUND;
    case RAFT_CANTCHANGE:
        return CONS_EBUSY;
    default:
        return CONS_EINVAL;
    }
}

static void forget_directory_entry(struct cons_node *n, uint32_t id)
{
    struct relay_cmd cmd;

    memset(&cmd, 0, sizeof(cmd));
    cmd.type = RELAY_CMD_NODE_FORGET;
    cons__sys_origin(n, CONS_OWN_MEMBERS, &cmd.origin);
    cmd.node_id = id;
    if (cons_propose(n, &cmd) != CONS_OK)
        LOG_WARN("event=directory_forget_failed id=%u", id);
}

static void on_change(struct raft_change *req, int status)
{
    struct cons__change *ch = req->data;
    struct cons_node *n = ch->node;
    char msg[256];
    int rv;

    if (n->closing) {
        change_finish(ch, CONS_ECLOSING, "node closing");
        return;
    }
    if (status != 0) {
        snprintf(msg, sizeof(msg), "node %u: %s", ch->id,
                 raft_strerror(status));
        change_finish(ch, map_raft_err(status), msg);
        return;
    }
    switch (ch->kind) {
    case CH_ADD:
        /* Added as a spare; now the role, which for a voter waits for
         * the new node to catch up. */
        ch->kind = CH_ADD_ROLE;
        raft_reason_clear(n);
        rv = raft_assign(&n->raft, &ch->req, ch->id, ch->raft_role, on_change);
        if (rv != 0) {
            snprintf(msg, sizeof(msg),
                     "node %u added as spare, role not set: %s", ch->id,
                     raft_reason(n, rv));
            change_finish(ch, map_raft_err(rv), msg);
        }
        return;
    case CH_ADD_ROLE:
    case CH_ASSIGN:
        snprintf(msg, sizeof(msg), "node %u is now %s", ch->id,
                 ch->raft_role == RAFT_VOTER ? "voter" : "standby");
        change_finish(ch, CONS_OK, msg);
        return;
    case CH_REMOVE:
        forget_directory_entry(n, ch->id);
        snprintf(msg, sizeof(msg), "node %u removed", ch->id);
        change_finish(ch, CONS_OK, msg);
        return;
    case CH_TRANSFER:
        break;
    }
}

/*
 * Ends the start of a change, described by fmt (what it does): on a raft
 * refusal (rv != 0) frees it and returns the mapped code with "what:
 * raft's reason"; else installs it.
 */
static int change_begin(struct cons_node *n, struct cons__change *ch, int rv,
                        const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int change_begin(struct cons_node *n, struct cons__change *ch, int rv,
                        const char *fmt, ...)
{
    char what[160];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (rv != 0) {
        free(ch);
        return refuse(n, map_raft_err(rv), "%s: %s", what, raft_reason(n, rv));
    }
    n->change = ch;
    LOG_INFO("event=membership_start %s", what);
    return CONS_OK;
}

int cons_member_add(struct cons_node *n, uint32_t id, const char *raft_addr,
                    enum cons_role role, cons_change_cb cb, void *arg)
{
    const struct raft_server *srv;
    struct cons__change *ch;
    int rv;

    rv = check_leader(n);
    if (rv != CONS_OK)
        return rv;
    if (id == 0 || raft_addr == NULL || raft_addr[0] == '\0' ||
        strlen(raft_addr) > RELAY_ADDR_MAX)
        return refuse(n, CONS_EINVAL, "need an id >= 1 and a raft address");
    if (find_server(n, id) != NULL)
        return refuse(n, CONS_EINVAL, "node %u is already a member", id);
    srv = find_address(n, raft_addr);
    if (srv != NULL)
        return refuse(n, CONS_EINVAL,
                      "raft address %.100s is already member node %llu's",
                      raft_addr, (unsigned long long)srv->id);
    ch = change_new(n, CH_ADD, id, cb, arg);
    if (ch == NULL)
        return refuse(n, CONS_ENOMEM, "out of memory");
    ch->raft_role = role == CONS_ROLE_VOTER ? RAFT_VOTER : RAFT_STANDBY;
    rv = raft_add(&n->raft, &ch->req, id, raft_addr, on_change);
    return change_begin(n, ch, rv, "add node %u at %.100s as %s", id, raft_addr,
                        role == CONS_ROLE_VOTER ? "voter" : "standby");
}

/* The refusals every change of member id starts with: this node must lead,
 * and id must be a member (*srv). */
static int find_member(struct cons_node *n, uint32_t id,
                       const struct raft_server **srv)
{
    int rv = check_leader(n);

    if (rv != CONS_OK)
        return rv;
    *srv = find_server(n, id);
    if (*srv == NULL)
        return refuse(n, CONS_ENOTFOUND, "node %u is not a member", id);
    return CONS_OK;
}

/* Node id stops being a voter (demoted or removed): never the leader itself
 * (it moves leadership first), and unless forced, a working majority of up
 * to date voters must remain when it was one. */
static int check_voter_leaving(struct cons_node *n, uint32_t id, bool voter,
                               bool force)
{
    if (id == n->cfg.id)
        return refuse(n, CONS_EISLEADER,
                      "node %u is the leader: transfer leadership first", id);
    return voter ? check_quorum_without(n, id, force) : CONS_OK;
}

int cons_member_assign(struct cons_node *n, uint32_t id, enum cons_role role,
                       bool force, cons_change_cb cb, void *arg)
{
    const struct raft_server *srv;
    struct cons__change *ch;
    int raft_role = role == CONS_ROLE_VOTER ? RAFT_VOTER : RAFT_STANDBY;
    int rv;

    rv = find_member(n, id, &srv);
    if (rv != CONS_OK)
        return rv;
    if (srv->role == raft_role)
        return refuse(n, CONS_EINVAL, "node %u is already %s", id,
                      role == CONS_ROLE_VOTER ? "a voter" : "a standby");
    if (raft_role != RAFT_VOTER) {
        rv = check_voter_leaving(n, id, true, force);
        if (rv != CONS_OK)
            return rv;
    }
    ch = change_new(n, CH_ASSIGN, id, cb, arg);
    if (ch == NULL)
        return refuse(n, CONS_ENOMEM, "out of memory");
    ch->raft_role = raft_role;
    rv = raft_assign(&n->raft, &ch->req, id, raft_role, on_change);
    return change_begin(n, ch, rv, "make node %u %s", id,
                        role == CONS_ROLE_VOTER ? "a voter" : "a standby");
}

int cons_member_remove(struct cons_node *n, uint32_t id, bool force,
                       cons_change_cb cb, void *arg)
{
    const struct raft_server *srv;
    struct cons__change *ch;
    int rv;

    rv = find_member(n, id, &srv);
    if (rv != CONS_OK)
        return rv;
    rv = check_voter_leaving(n, id, srv->role == RAFT_VOTER, force);
    if (rv != CONS_OK)
        return rv;
    ch = change_new(n, CH_REMOVE, id, cb, arg);
    if (ch == NULL)
        return refuse(n, CONS_ENOMEM, "out of memory");
    rv = raft_remove(&n->raft, &ch->req, id, on_change);
    return change_begin(n, ch, rv, "remove node %u", id);
}

static void on_transfer(struct raft_transfer *req)
{
    struct cons__change *ch = req->data;
    struct cons_node *n = ch->node;
    raft_id leader = 0;
    const char *addr = NULL;
    char msg[128];

    if (n->closing) {
        change_finish(ch, CONS_ECLOSING, "node closing");
        return;
    }
    if (raft_state(&n->raft) == RAFT_LEADER) {
        if (++ch->tries < CONS_TRANSFER_TRIES) {
            raft_reason_clear(n);
            if (raft_transfer(&n->raft, &ch->treq, ch->id, on_transfer) == 0) {
                LOG_INFO("event=transfer_retry to=%u try=%u", ch->id,
                         ch->tries + 1);
                return;
            }
        }
        snprintf(msg, sizeof(msg),
                 "leadership transfer did not complete (%u tries)", ch->tries);
        change_finish(ch, CONS_EINVAL, msg);
        return;
    }
    raft_leader(&n->raft, &leader, &addr);
    snprintf(msg, sizeof(msg), "leadership moved to node %llu",
             (unsigned long long)leader);
    change_finish(ch, CONS_OK, msg);
}

int cons_leader_transfer(struct cons_node *n, uint32_t id, cons_change_cb cb,
                         void *arg)
{
    const struct raft_server *srv = NULL;
    struct cons__change *ch;
    int rv;

    /* id 0: no member to check, libraft picks the voter. */
    rv = id != 0 ? find_member(n, id, &srv) : check_leader(n);
    if (rv != CONS_OK)
        return rv;
    if (srv != NULL && srv->role != RAFT_VOTER)
        return refuse(n, CONS_EINVAL, "node %u is not a voter", id);
    if (id == n->cfg.id)
        return refuse(n, CONS_EINVAL, "node %u is already the leader", id);
    ch = change_new(n, CH_TRANSFER, id, cb, arg);
    if (ch == NULL)
        return refuse(n, CONS_ENOMEM, "out of memory");
    rv = raft_transfer(&n->raft, &ch->treq, id, on_transfer);
    return change_begin(n, ch, rv, "transfer leadership to node %u", id);
}

void cons__membership_free(struct cons_node *n)
{
    /* raft closed without answering. */
    if (n->change != NULL)
        change_finish(n->change, CONS_ECLOSING, "node closing");
}
