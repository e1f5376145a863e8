/*
 * test_cons_membership.c - the refusals of src/consensus/membership.c, on
 * real consensus nodes over libraft's fixture (cons_harness.h): each is
 * answered synchronously with its own code, starts nothing (no callback,
 * the configuration unchanged), and leaves the node free for the next
 * change. A change that passes them completes once through its callback.
 *
 * The last voter of a cluster is always its leader (a standby or spare
 * cannot lead), so removing or demoting it is refused as the leader's
 * removal (CONS_EISLEADER), before the last-voter count is reached.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cons_harness.h"

#define STEP_MS 20000

struct answer {
    unsigned calls;
    int status;
    char msg[256];
};

static void on_change(void *arg, int status, const char *msg)
{
    struct answer *a = arg;

    a->calls++;
    a->status = status;
    snprintf(a->msg, sizeof(a->msg), "%s", msg);
}

/* Callbacks may still come after a failed assertion left a test: their
 * answers outlive it. */
static struct answer ans[3];

static bool answered(struct h *h, void *arg)
{
    (void)h;
    return ((struct answer *)arg)->calls > 0;
}

static int setup(void **state)
{
    memset(ans, 0, sizeof(ans));
    *state = h_new(3);
    return 0;
}

static int teardown(void **state)
{
    h_free(*state);
    return 0;
}

static struct cons_node *node(struct h *h, unsigned id)
{
    return h->nodes[id - 1].n;
}

/* The leader's configuration: how many members, and id's role (-1: not
 * a member). */
static int role_of(struct h *h, unsigned id)
{
    const struct raft_configuration *c =
        &raft_fixture_get(&h->f, 0)->configuration;

    for (unsigned i = 0; i < c->n; i++)
        if (c->servers[i].id == id)
            return c->servers[i].role;
    return -1;
}

/* A refusal: the code, nothing started, no callback (even after a while),
 * errmsg containing why. */
static void assert_refused(struct h *h, int rv, int code, struct answer *a,
                           const char *why)
{
    struct cons_node *leader = node(h, 1);

    assert_int_equal(rv, code);
    assert_null(leader->change);
    assert_non_null(strstr(cons_node_errmsg(leader), why));
    h_until(h, NULL, NULL, 1000);
    assert_int_equal(a->calls, 0);
}

/* A change that passes the refusals completes, once, with CONS_OK. */
static void assert_done(struct h *h, int rv, struct answer *a)
{
    assert_int_equal(rv, CONS_OK);
    assert_true(h_until(h, answered, a, STEP_MS));
    h_until(h, NULL, NULL, 1000);
    assert_int_equal(a->calls, 1);
    assert_int_equal(a->status, CONS_OK);
    assert_null(node(h, 1)->change);
}

/* ---- tests --------------------------------------------------------------- */

/* Removing or demoting node id is refused with code, for why. */
static void assert_cannot_leave(struct h *h, unsigned id, int code,
                                const char *why)
{
    struct cons_node *leader = node(h, 1);

    assert_refused(h, cons_member_remove(leader, id, true, on_change, &ans[0]),
                   code, &ans[0], why);
    assert_refused(h,
                   cons_member_assign(leader, id, CONS_ROLE_STANDBY, true,
                                      on_change, &ans[0]),
                   code, &ans[0], why);
}

static void test_remove_unknown_node_refused(void **state)
{
    struct h *h = *state;

    assert_cannot_leave(h, 9, CONS_ENOTFOUND, "node 9 is not a member");
    assert_refused(h, cons_leader_transfer(node(h, 1), 9, on_change, &ans[0]),
                   CONS_ENOTFOUND, &ans[0], "node 9 is not a member");
}

static void test_remove_leader_refused(void **state)
{
    struct h *h = *state;

    assert_cannot_leave(h, 1, CONS_EISLEADER, "node 1 is the leader");
    assert_int_equal(role_of(h, 1), RAFT_VOTER);
}

/* Nodes 2 and 3 demoted to standbys (each a change that completes); the
 * leader is then the last voter, and cannot be removed or demoted. */
static void test_remove_last_voter_refused(void **state)
{
    struct h *h = *state;
    struct answer *a = &ans[0], *b = &ans[1], *c = &ans[2];

    assert_done(h,
                cons_member_assign(node(h, 1), 3, CONS_ROLE_STANDBY, false,
                                   on_change, a),
                a);
    assert_done(h,
                cons_member_assign(node(h, 1), 2, CONS_ROLE_STANDBY, false,
                                   on_change, b),
                b);
    assert_int_equal(role_of(h, 2), RAFT_STANDBY);
    assert_int_equal(role_of(h, 3), RAFT_STANDBY);
    assert_refused(h, cons_member_remove(node(h, 1), 1, true, on_change, c),
                   CONS_EISLEADER, c, "is the leader");
    assert_int_equal(role_of(h, 1), RAFT_VOTER);
}

/* While one change runs, every other is refused with CONS_EBUSY by
 * driftd itself (libraft would refuse some too, with its own words); the
 * running one still completes once, and the next change is taken. */
static void test_change_while_pending_refused(void **state)
{
    struct h *h = *state;
    struct cons_node *leader = node(h, 1);
    struct answer *a = &ans[0], *b = &ans[1], *t = &ans[2];

    assert_int_equal(cons_member_remove(leader, 3, false, on_change, a),
                     CONS_OK);
    assert_non_null(leader->change);
    assert_int_equal(cons_member_remove(leader, 2, true, on_change, b),
                     CONS_EBUSY);
    assert_string_equal(cons_node_errmsg(leader),
                        "another membership change is in progress");
    assert_int_equal(
        cons_member_assign(leader, 2, CONS_ROLE_STANDBY, true, on_change, b),
        CONS_EBUSY);
    assert_int_equal(cons_member_add(leader, 4, "127.0.0.1:9999",
                                     CONS_ROLE_STANDBY, on_change, b),
                     CONS_EBUSY);
    assert_int_equal(cons_leader_transfer(leader, 2, on_change, b), CONS_EBUSY);
    assert_done(h, CONS_OK, a);
    assert_int_equal(b->calls, 0);
    assert_int_equal(role_of(h, 3), -1);

    /* A leadership transfer in flight blocks changes the same way. */
    assert_int_equal(cons_leader_transfer(leader, 2, on_change, t), CONS_OK);
    assert_int_equal(
        cons_member_assign(leader, 2, CONS_ROLE_STANDBY, true, on_change, b),
        CONS_EBUSY);
    assert_string_equal(cons_node_errmsg(leader),
                        "another membership change is in progress");
    assert_true(h_until(h, answered, t, STEP_MS));
    assert_int_equal(t->status, CONS_OK);
    assert_int_equal(b->calls, 0);
}

static void test_follower_refuses_changes(void **state)
{
    struct h *h = *state;
    struct answer *a = &ans[0];

    assert_int_equal(cons_member_remove(node(h, 2), 3, true, on_change, a),
                     CONS_ENOTLEADER);
    assert_string_equal(cons_node_errmsg(node(h, 2)),
                        "this node is not the leader");
    assert_null(node(h, 2)->change);
    h_until(h, NULL, NULL, 1000);
    assert_int_equal(a->calls, 0);
    assert_int_equal(role_of(h, 3), RAFT_VOTER);
}

/* Node 3 is cut off and falls behind by more than the slack: removing
 * node 2 would leave one up-to-date voter of two, and is refused. */
static void test_remove_without_quorum_refused(void **state)
{
    struct h *h = *state;
    struct cons_node *leader = node(h, 1);
    struct answer *a = &ans[0], *b = &ans[1];
    struct relay_cmd cmd;

    raft_fixture_saturate(&h->f, 0, 2);
    raft_fixture_saturate(&h->f, 2, 0);
    leader->cfg.max_batch_bytes = 1; /* one command per entry */
    h_cmd_room(&cmd, 1, 7, 1, "r");
    assert_int_equal(cons_propose(leader, &cmd), CONS_OK);
    for (unsigned k = 2; k <= 100; k++) {
        h_cmd_push(&cmd, 1, 7, k, "r");
        assert_int_equal(cons_propose(leader, &cmd), CONS_OK);
    }
    assert_true(h_until(h, NULL, NULL, STEP_MS) == false);
    assert_int_equal(leader->pending.count, 0);

    assert_refused(h, cons_member_remove(leader, 2, false, on_change, a),
                   CONS_EQUORUM, a, "only 1 of the 2 remaining voters");
    assert_int_equal(role_of(h, 2), RAFT_VOTER);

    /* Node 3 back and caught up: the same removal is taken. */
    raft_fixture_desaturate(&h->f, 0, 2);
    raft_fixture_desaturate(&h->f, 2, 0);
    h_until(h, NULL, NULL, 2000);
    assert_done(h, cons_member_remove(leader, 2, false, on_change, b), b);
    assert_int_equal(role_of(h, 2), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_remove_unknown_node_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_remove_leader_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_remove_last_voter_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_change_while_pending_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_follower_refuses_changes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_remove_without_quorum_refused,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
