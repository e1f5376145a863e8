/*
 * test_cons_proposer.c - the proposer (src/consensus/proposer.c) and the
 * FSM's dedupe (fsm.c, relay) in a three-node cluster on libraft's fixture
 * (cons_harness.h): a command proposed on a node is applied once and
 * reported once to whoever proposed it, also when it has to be re-sent
 * after a leader change, and a failure reaches only its own proposer.
 *
 * Sessions: client sessions as net makes them (nonce << 32 | n); the
 * node's own proposers take theirs from cons__sys_origin.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cons_harness.h"

#define SA ((uint64_t)0x1234 << 32 | 1)
#define SB ((uint64_t)0x1234 << 32 | 2)
#define STEP_MS 20000

static int setup(void **state)
{
    *state = h_new(3);
    return 0;
}

static int teardown(void **state)
{
    h_free(*state);
    return 0;
}

/* Proposes on node i, under session s: the room, then n pushes (counters
 * 2 .. n + 1). */
static void propose_room_and_pushes(struct h *h, unsigned i, uint64_t s,
                                    const char *room, unsigned n)
{
    struct cons_node *node = h->nodes[i].n;
    struct relay_cmd c;

    h_cmd_room(&c, i + 1, s, 1, room);
    assert_int_equal(cons_propose(node, &c), CONS_OK);
    for (unsigned k = 0; k < n; k++) {
        h_cmd_push(&c, i + 1, s, k + 2, room);
        assert_int_equal(cons_propose(node, &c), CONS_OK);
    }
}

/* Every node's queue is empty and every node applied the whole log. */
static bool all_settled(struct h *h, void *arg)
{
    raft_index last = raft_last_index(raft_fixture_get(&h->f, 0));

    (void)arg;
    for (unsigned i = 0; i < h->n; i++) {
        struct cons_node *n = h->nodes[i].n;
        struct raft *r = raft_fixture_get(&h->f, i);

        if (n->pending.count > 0 || n->foreign.count > 0 ||
            raft_last_applied(r) != raft_last_index(r) ||
            raft_last_index(r) < last)
            return false;
    }
    return true;
}

static bool has_no_leader(struct h *h, void *arg)
{
    (void)arg;
    return h->f.leader_id == 0;
}

/* A node other than node 1 leads, and node 1 knows it does not. */
static bool other_leads(struct h *h, void *arg)
{
    (void)arg;
    return h->f.leader_id > 1 &&
           raft_state(raft_fixture_get(&h->f, 0)) != RAFT_LEADER;
}

/* Node i heard each of session s's counters 1 .. n exactly once, in
 * order, each applied (not a duplicate). */
static void assert_each_once(const struct h_node *hn, uint64_t s, unsigned n)
{
    uint64_t next = 1;

    for (unsigned c = 1; c <= n; c++)
        assert_int_equal(h_applied_count(hn, s, c), 1);
    for (size_t k = 0; k < hn->n_applied; k++) {
        if (hn->applied[k].origin.session != s)
            continue;
        assert_int_equal(hn->applied[k].origin.counter, next);
        assert_int_equal(hn->applied[k].status, RELAY_OK);
        next++;
    }
}

/* Pumps and steps until everything settled, then: node i heard each of
 * session s's commands (the room and n pushes) once, and every node's
 * room holds the n pushes once. */
static void settle_and_check(struct h *h, unsigned i, uint64_t s,
                             const char *room, unsigned n)
{
    assert_true(h_until(h, all_settled, NULL, STEP_MS));
    assert_each_once(&h->nodes[i], s, n + 1);
    for (unsigned k = 0; k < h->n; k++)
        assert_int_equal(h_last_seq(&h->nodes[k], room), n);
}

/* ---- tests --------------------------------------------------------------- */

/* On the leader: ten pushes are applied once each, in order, on every
 * node, and the proposer hears of each once. */
static void test_leader_applies_each_once_in_order(void **state)
{
    struct h *h = *state;

    propose_room_and_pushes(h, 0, SA, "r1", 10);
    settle_and_check(h, 0, SA, "r1", 10);
    assert_int_equal(h->nodes[0].n_failed, 0);
}

/* On a follower: the commands travel over the link to the leader, and
 * the follower hears of each once when it applies it. */
static void test_follower_forwards_each_once(void **state)
{
    struct h *h = *state;

    propose_room_and_pushes(h, 1, SA, "r1", 10);
    settle_and_check(h, 1, SA, "r1", 10);
    assert_true(h->nodes[1].n_sent >= 1);
}

/* The batches a follower sent were lost with its leader (the link went
 * down with them): after the election the follower sends them again, to
 * the new leader, and each is applied once. */
static void test_lost_forward_resent_to_new_leader(void **state)
{
    struct h *h = *state;
    size_t sent;

    h->nodes[1].link_frozen = true;
    propose_room_and_pushes(h, 1, SA, "r1", 5);
    h_pump(h);
    sent = h->nodes[1].n_sent;
    assert_true(sent >= 1);

    raft_fixture_depose(&h->f);
    assert_true(h_until(h, has_no_leader, NULL, STEP_MS));
    raft_fixture_elect(&h->f, 2);
    h->nodes[1].link_frozen = false;
    settle_and_check(h, 1, SA, "r1", 5);
    assert_true(h->nodes[1].n_sent > sent);
}

/* The follower's commands were committed by the old leader (with the
 * third node) while the follower heard nothing; after the election it
 * sends them again. Both copies are in the log: each command is applied
 * once on every node, and the follower hears of each once. */
static void test_committed_then_resent_applied_once(void **state)
{
    struct h *h = *state;
    struct raft *leader = raft_fixture_get(&h->f, 0);
    size_t sent;

    raft_fixture_saturate(&h->f, 0, 1); /* leader -> node 2: nothing */
    propose_room_and_pushes(h, 1, SA, "r1", 5);
    h_pump(h);
    sent = h->nodes[1].n_sent;
    h_pump(h); /* the leader takes them into its log */
    assert_int_equal(h->nodes[0].n->n_inflight > 0, true);
    assert_true(raft_fixture_step_until_applied(
        &h->f, 2, raft_last_index(leader), STEP_MS));
    assert_true(h_last_seq(&h->nodes[2], "r1") == 5);
    assert_int_equal(h->nodes[1].n->pending.count, 6);

    raft_fixture_depose(&h->f);
    assert_true(h_until(h, has_no_leader, NULL, STEP_MS));
    raft_fixture_elect(&h->f, 2);
    raft_fixture_desaturate(&h->f, 0, 1);
    settle_and_check(h, 1, SA, "r1", 5);
    assert_true(h->nodes[1].n_sent > sent); /* it did send them again */
}

/* The leader took the commands into its own log only, then lost the
 * lead: they are not committed, and it forwards them to the new leader,
 * where each is applied once. */
static void test_leader_change_resends_own_uncommitted(void **state)
{
    struct h *h = *state;

    raft_fixture_saturate(&h->f, 0, 1);
    raft_fixture_saturate(&h->f, 0, 2);
    raft_fixture_saturate(&h->f, 1, 0);
    raft_fixture_saturate(&h->f, 2, 0);
    propose_room_and_pushes(h, 0, SA, "r1", 5);
    h_pump(h);
    assert_true(h->nodes[0].n->n_inflight > 0);
    /* Nodes 2 and 3 elect one of them; node 1 steps down. */
    assert_true(h_until(h, other_leads, NULL, STEP_MS));
    raft_fixture_desaturate(&h->f, 0, 1);
    raft_fixture_desaturate(&h->f, 0, 2);
    raft_fixture_desaturate(&h->f, 1, 0);
    raft_fixture_desaturate(&h->f, 2, 0);
    settle_and_check(h, 0, SA, "r1", 5);
    assert_true(h->nodes[0].n_sent >= 1);
    assert_int_equal(h->nodes[0].n_failed, 0);
}

/* Proposes node n's directory entry as its directory upkeep does
 * (directory.c), under that proposer's session, which it returns. */
static uint64_t propose_dir_entry(struct cons_node *n, const char *raft_addr)
{
    struct relay_cmd c;

    memset(&c, 0, sizeof(c));
    c.type = RELAY_CMD_NODE_SET;
    cons__sys_origin(n, CONS_OWN_DIR, &c.origin);
    c.node_id = n->cfg.id;
    c.raft_addr = raft_addr;
    c.raft_addr_len = strlen(raft_addr);
    assert_int_equal(cons_propose(n, &c), CONS_OK);
    n->dir_inflight = true;
    return c.origin.session;
}

/* A node's own proposer (here the directory entry) hears of its command
 * through its owner hook, never through the clients' failure callback;
 * two client sessions each hear of their own commands. */
static void test_completion_per_owner_and_session(void **state)
{
    struct h *h = *state;
    struct h_node *hn = &h->nodes[0];
    struct cons_node *n = hn->n;
    struct relay_cmd c;
    uint64_t dir_session;

    h_cmd_room(&c, 1, SA, 1, "ra");
    assert_int_equal(cons_propose(n, &c), CONS_OK);
    h_cmd_room(&c, 1, SB, 1, "rb");
    assert_int_equal(cons_propose(n, &c), CONS_OK);
    dir_session = propose_dir_entry(n, "127.0.0.1:9081");
    assert_true(h_until(h, all_settled, NULL, STEP_MS));
    assert_false(n->dir_inflight); /* the owner heard: applied */
    assert_int_equal(h_applied_count(hn, SA, 1), 1);
    assert_int_equal(h_applied_count(hn, SB, 1), 1);

    /* Now nothing commits: the leader hears no follower. Stopping fails
     * what waits, each to its own proposer. */
    raft_fixture_saturate(&h->f, 0, 1);
    raft_fixture_saturate(&h->f, 0, 2);
    h_cmd_push(&c, 1, SA, 2, "ra");
    assert_int_equal(cons_propose(n, &c), CONS_OK);
    h_cmd_push(&c, 1, SB, 2, "rb");
    assert_int_equal(cons_propose(n, &c), CONS_OK);
    assert_true(propose_dir_entry(n, "127.0.0.1:9091") == dir_session);
    h_pump(h);
    cons_node_stop(n);

    assert_false(n->dir_inflight); /* the owner heard: failed */
    assert_int_equal(hn->n_failed, 2);
    for (size_t k = 0; k < hn->n_failed; k++) {
        assert_true(hn->failed[k].origin.session != dir_session);
        assert_int_equal(hn->failed[k].origin.counter, 2);
        assert_int_equal(hn->failed[k].status, CONS_ECLOSED);
    }
    assert_true(hn->failed[0].origin.session == SA);
    assert_true(hn->failed[1].origin.session == SB);
    assert_int_equal(n->pending.count, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_leader_applies_each_once_in_order,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_follower_forwards_each_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_lost_forward_resent_to_new_leader,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_committed_then_resent_applied_once,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_leader_change_resends_own_uncommitted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_completion_per_owner_and_session,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
