/*
 * members.c - driftctl add, promote, demote, remove and transfer.
 *
 * Every change goes to the node given with --server and follows 421
 * answers to the leader (ctl_post_leader). The server refuses to remove or
 * demote the leader itself, so for that driftctl first moves leadership
 * away (POST /admin/transfer {} on the leader, then polls the old leader
 * until it names another one) and sends the change to the new leader.
 *
 * Before removing or demoting a voter without --force, driftctl also asks
 * every remaining voter directly (GET /cluster/status, short timeouts) and
 * refuses unless a majority of them answer and agree on one leader: the
 * server checks its replication state, this checks what the operator's
 * network sees, e.g. a voter that is up but cut off from the leader.
 *
 * It does not retry a change that failed or timed out (a timed-out change
 * may still complete); it only retries the change after a transfer it
 * made itself, while the new leader settles (busy, unavailable, quorum).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

/* Waiting for a new leader after a transfer. */
#define TRANSFER_WAIT_MS 15000
/* Re-sending a change to a leader that just took over. */
#define SETTLE_WAIT_MS 5000
#define POLL_MS 100

/* The member id in status's "nodes", or NULL. */
static const json_t *find_node(const json_t *st, uint32_t id)
{
    const json_t *nodes = json_object_get(st, "nodes");
    size_t i;
    json_t *node;

    json_array_foreach(nodes, i, node)
    {
        if (ctl_jint(node, "id", 0) == (long long)id)
            return node;
    }
    return NULL;
}

static bool node_is(const json_t *node, const char *role)
{
    const char *r = ctl_jstr(node, "role");

    return r != NULL && strcmp(r, role) == 0;
}

static size_t count_voters(const json_t *st)
{
    const json_t *nodes = json_object_get(st, "nodes");
    size_t i, n = 0;
    json_t *node;

    json_array_foreach(nodes, i, node)
    {
        n += node_is(node, "voter");
    }
    return n;
}

/*
 * Asks each voter but id for its status; CTL_OK when a majority of them
 * answer and name the same leader. verb: "remove" / "demote" for messages.
 */
static int check_quorum(struct ctl *c, const json_t *st, uint32_t id,
                        const char *verb)
{
    const json_t *nodes = json_object_get(st, "nodes");
    size_t i, n_voters = 0, n_leaders = 0, best = 0, need;
    uint32_t *leaders;
    json_t *node;
    int rv = CTL_OK;

    leaders = calloc(json_array_size(nodes) + 1, sizeof(*leaders));
    if (leaders == NULL) {
        ctl_fail("out of memory");
        return CTL_EFAIL;
    }
    json_array_foreach(nodes, i, node)
    {
        const char *http = ctl_jstr(node, "http");
        struct ctl_resp r;
        char base[512], url[1024];
        long long lid;

        if (!node_is(node, "voter") || ctl_jint(node, "id", 0) == (long long)id)
            continue;
        n_voters++;
        if (ctl_jint(node, "id", 0) == ctl_jint(st, "id", -1))
            snprintf(base, sizeof(base), "%s", c->server); /* the asked */
        else if (http != NULL)
            ctl_base_of(c, http, base, sizeof(base));
        else
            continue; /* its address is not known: counts as silent */
        snprintf(url, sizeof(url), "%s/cluster/status", base);
        if (ctl_request(c, "GET", url, NULL, CTL_PROBE_CONNECT_MS, CTL_PROBE_MS,
                        &r) != CTL_OK)
            continue;
        lid = r.status == 200
                  ? ctl_jint(json_object_get(r.json, "leader"), "id", 0)
                  : 0;
        ctl_resp_close(&r);
        if (lid > 0)
            leaders[n_leaders++] = (uint32_t)lid;
    }
    for (i = 0; i < n_leaders; i++) {
        size_t same = 0;

        for (size_t j = 0; j < n_leaders; j++)
            same += leaders[j] == leaders[i];
        if (same > best)
            best = same;
    }
    free(leaders);
    need = n_voters / 2 + 1;
    if (best < need) {
        ctl_fail("cannot %s node %u: quorum would be lost (only %zu of the "
                 "%zu remaining voters answer and agree on a leader, %zu "
                 "needed); use --force to override",
                 verb, id, best, n_voters, need);
        rv = CTL_EFAIL;
    }
    return rv;
}

/*
 * Moves leadership to `to` (0: the server picks the most up-to-date
 * voter), starting at base. On CTL_OK *from is the old leader, *now the new
 * one and now_base its base URL.
 */
static int move_leadership(struct ctl *c, const char *base, uint32_t to,
                           uint32_t *from, uint32_t *now, char *now_base,
                           size_t size)
{
    char old_base[512], body[64];
    struct ctl_resp r;
    int64_t deadline;
    uint32_t self = 0, leader = 0;

    if (to != 0)
        snprintf(body, sizeof(body), "{\"id\":%u}", to);
    else
        snprintf(body, sizeof(body), "{}");
    if (ctl_post_leader(c, base, "/admin/transfer", body, &r, old_base,
                        sizeof(old_base)) != CTL_OK)
        return CTL_EFAIL;
    if (r.status != 200) {
        ctl_report(c, "transfer", &r);
        ctl_resp_close(&r);
        return CTL_EFAIL;
    }
    ctl_resp_close(&r);
    /* The node that answered 200 was the leader and no longer is: wait
     * until it names its successor (and knows its address). */
    deadline = ctl_now_ms() + TRANSFER_WAIT_MS;
    for (;;) {
        if (ctl_leader_of(c, old_base, &self, &leader, now_base, size) ==
                CTL_OK &&
            leader != 0 && leader != self && now_base[0] != '\0' &&
            (to == 0 || leader == to))
            break;
        if (ctl_now_ms() >= deadline) {
            if (leader != 0 && to != 0 && leader != to)
                ctl_fail("leadership moved to node %u, not to node %u", leader,
                         to);
            else
                ctl_fail("%s gave up leadership but names no new leader "
                         "after %d s",
                         old_base, TRANSFER_WAIT_MS / 1000);
            return CTL_EFAIL;
        }
        ctl_sleep_ms(POLL_MS);
    }
    *from = self;
    *now = leader;
    return CTL_OK;
}

/* Says at once that leadership moved: it stays moved even if the change
 * that needed it then fails. (--json reports it with the outcome.) */
static void announce_move(const struct ctl *c, uint32_t from, uint32_t to)
{
    if (!c->json) {
        printf("leadership moved from node %u to node %u\n", from, to);
        fflush(stdout);
    }
}

/* Prints the outcome of a change that answered 200. */
static int print_done(struct ctl *c, struct ctl_resp *r, const char *dflt,
                      uint32_t moved_from, uint32_t moved_to)
{
    const char *msg = ctl_jstr(r->json, "message");

    if (c->json) {
        json_t *out = json_is_object(r->json) ? json_incref(r->json)
                                              : json_pack("{s:b}", "ok", 1);
        int rv;

        if (out == NULL) {
            ctl_fail("out of memory");
            return CTL_EFAIL;
        }
        if (msg == NULL)
            json_object_set_new(out, "message", json_string(dflt));
        if (moved_to != 0)
            json_object_set_new(out, "transfer",
                                json_pack("{s:I,s:I}", "from",
                                          (json_int_t)moved_from, "to",
                                          (json_int_t)moved_to));
        rv = ctl_print_json(out);
        json_decref(out);
        return rv;
    }
    printf("%s\n", msg != NULL ? msg : dflt);
    return CTL_OK;
}

/*
 * Sends a change of member id (path, body) to the leader. voter_change:
 * it removes or demotes a voter, so check quorum (unless force) and move
 * leadership away first when id is the leader.
 */
static int change_member(struct ctl *c, uint32_t id, const char *path,
                         const char *body, bool voter_change, bool force,
                         const char *verb, const char *done_msg)
{
    struct ctl_resp st, r;
    const json_t *node;
    char base[512];
    uint32_t from = 0, to = 0;
    bool moved = false;
    int64_t deadline;
    int rv;

    snprintf(base, sizeof(base), "%s", c->server);
    if (voter_change) {
        if (ctl_get(c, c->server, "/admin/status", &st) != CTL_OK)
            return CTL_EFAIL;
        node = find_node(st.json, id);
        /* A node this node does not list is left to the leader to judge
         * (this view may be a moment old). */
        if (node != NULL && node_is(node, "voter") &&
            count_voters(st.json) == 1) {
            ctl_fail("node %u is the last voter: a cluster needs one", id);
            ctl_resp_close(&st);
            return CTL_EFAIL;
        }
        if (node != NULL && node_is(node, "voter") && !force &&
            check_quorum(c, st.json, id, verb) != CTL_OK) {
            ctl_resp_close(&st);
            return CTL_EFAIL;
        }
        if (node != NULL && node_is(node, "voter") &&
            ctl_jint(json_object_get(st.json, "leader"), "id", 0) ==
                (long long)id) {
            if (move_leadership(c, c->server, 0, &from, &to, base,
                                sizeof(base)) != CTL_OK) {
                ctl_resp_close(&st);
                return CTL_EFAIL;
            }
            announce_move(c, from, to);
            moved = true;
        }
        ctl_resp_close(&st);
    }
    deadline = ctl_now_ms() + SETTLE_WAIT_MS;
    for (;;) {
        const char *code;

        if (ctl_post_leader(c, base, path, body, &r, NULL, 0) != CTL_OK)
            return CTL_EFAIL;
        code = ctl_jstr(r.json, "code");
        if (r.status == 200)
            break;
        if (voter_change && !moved && code != NULL &&
            strcmp(code, "is_leader") == 0) {
            /* It became the leader since we looked. */
            char next[512];

            ctl_resp_close(&r);
            if (move_leadership(c, base, 0, &from, &to, next, sizeof(next)) !=
                CTL_OK)
                return CTL_EFAIL;
            snprintf(base, sizeof(base), "%s", next);
            announce_move(c, from, to);
            moved = true;
            deadline = ctl_now_ms() + SETTLE_WAIT_MS;
            continue;
        }
        /* A new leader (ours or one elected after a failure) answers
         * "settling" until its followers' progress is known. */
        if (ctl_now_ms() < deadline && code != NULL &&
            strcmp(code, "settling") == 0) {
            ctl_resp_close(&r);
            ctl_sleep_ms(POLL_MS);
            continue;
        }
        /* A leader we just made may still be settling in: until its first
         * heartbeats are answered it knows no follower's match index, so
         * its quorum check refuses (ours passed before the transfer). */
        if (moved && ctl_now_ms() < deadline && code != NULL &&
            (strcmp(code, "busy") == 0 || strcmp(code, "unavailable") == 0 ||
             strcmp(code, "is_leader") == 0 || strcmp(code, "quorum") == 0)) {
            ctl_resp_close(&r);
            ctl_sleep_ms(POLL_MS);
            continue;
        }
        ctl_report(c, verb, &r);
        ctl_resp_close(&r);
        return CTL_EFAIL;
    }
    rv = print_done(c, &r, done_msg, from, to);
    ctl_resp_close(&r);
    return rv;
}

int ctl_cmd_add(struct ctl *c, uint32_t id, const char *raft, bool standby)
{
    const char *role = standby ? "standby" : "voter";
    json_t *body = json_pack("{s:I,s:s,s:s}", "id", (json_int_t)id, "raft",
                             raft, "role", role);
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    char done[64];
    int rv;

    json_decref(body);
    if (text == NULL) {
        ctl_fail("out of memory");
        return CTL_EFAIL;
    }
    snprintf(done, sizeof(done), "node %u added as %s", id, role);
    rv =
        change_member(c, id, "/admin/members", text, false, false, "add", done);
    free(text);
    return rv;
}

int ctl_cmd_role(struct ctl *c, uint32_t id, bool voter, bool force)
{
    char path[64], body[64], done[64];

    snprintf(path, sizeof(path), "/admin/members/%u/role", id);
    snprintf(body, sizeof(body), "{\"role\":\"%s\",\"force\":%s}",
             voter ? "voter" : "standby", force ? "true" : "false");
    snprintf(done, sizeof(done), "node %u is now %s", id,
             voter ? "voter" : "standby");
    return change_member(c, id, path, body, !voter, force,
                         voter ? "promote" : "demote", done);
}

int ctl_cmd_remove(struct ctl *c, uint32_t id, bool force)
{
    char path[64], body[64], done[64];

    snprintf(path, sizeof(path), "/admin/members/%u/remove", id);
    snprintf(body, sizeof(body), "{\"force\":%s}", force ? "true" : "false");
    snprintf(done, sizeof(done), "node %u removed", id);
    return change_member(c, id, path, body, true, force, "remove", done);
}

int ctl_cmd_transfer(struct ctl *c, uint32_t id)
{
    struct ctl_resp st;
    char base[512];
    uint32_t from = 0, to = 0;
    long long leader;

    if (ctl_get(c, c->server, "/admin/status", &st) != CTL_OK)
        return CTL_EFAIL;
    leader = ctl_jint(json_object_get(st.json, "leader"), "id", 0);
    ctl_resp_close(&st);
    if (id != 0 && leader == (long long)id) {
        if (c->json) {
            json_t *out =
                json_pack("{s:b,s:s,s:{s:I}}", "ok", 1, "message",
                          "already the leader", "leader", "id", (json_int_t)id);
            int rv = out != NULL ? ctl_print_json(out) : CTL_EFAIL;

            json_decref(out);
            return rv;
        }
        printf("node %u is already the leader\n", id);
        return CTL_OK;
    }
    if (move_leadership(c, c->server, id, &from, &to, base, sizeof(base)) !=
        CTL_OK)
        return CTL_EFAIL;
    if (c->json) {
        json_t *out = json_pack(
            "{s:b,s:I,s:{s:I,s:s}}", "ok", 1, "from", (json_int_t)from,
            "leader", "id", (json_int_t)to, "http",
            strstr(base, "://") != NULL ? strstr(base, "://") + 3 : base);
        int rv = out != NULL ? ctl_print_json(out) : CTL_EFAIL;

        json_decref(out);
        return rv;
    }
    printf("leadership moved from node %u to node %u\n", from, to);
    return CTL_OK;
}
