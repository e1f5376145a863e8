/*
 * test_raft_membership.c - libraft's membership bookkeeping, as driftd
 * builds it (deploy/patches/raft/), on libraft's own in-memory fixture:
 * deterministic time and network, no disk, no driftd code.
 *
 * Design: libraft 0.22.1 recorded a configuration entry that a follower
 * received in the middle of an AppendEntries batch under the index of the
 * batch's first entry. The follower then never took that configuration as
 * committed (its snapshots recorded the older one, which it used after a
 * restart) and kept a change "in progress" for good (once leader, it refused
 * every membership change). Here a follower cut off from the leader misses
 * three commands, a configuration change and three more commands, which all
 * reach it in one batch when the link comes back (the leader sends up to 10
 * entries per message); the follower must then hold the change as committed,
 * none as uncommitted, record it in its next snapshot, and accept a
 * membership change once leader. docs/reliability.md, findings 1 and 2.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <raft.h>
#include <raft/fixture.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_SERVERS 3
#define STEP_MS 10000

/* ---- a state machine that only counts ------------------------------------ */

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf,
                     void **result)
{
    (void)buf;
    (*(uint64_t *)fsm->data)++;
    *result = NULL;
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                        unsigned *n_bufs)
{
    *bufs = raft_malloc(sizeof **bufs);
    if (*bufs == NULL)
        return RAFT_NOMEM;
    (*bufs)[0].len = sizeof(uint64_t);
    (*bufs)[0].base = raft_malloc(sizeof(uint64_t));
    if ((*bufs)[0].base == NULL) {
        raft_free(*bufs);
        return RAFT_NOMEM;
    }
    memcpy((*bufs)[0].base, fsm->data, sizeof(uint64_t));
    *n_bufs = 1;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    memcpy(fsm->data, buf->base, sizeof(uint64_t));
    raft_free(buf->base);
    return 0;
}

/* Requests stay referenced by raft until they complete: they live here. */
struct fx {
    struct raft_fixture f;
    struct raft_fsm fsms[N_SERVERS];
    uint64_t counts[N_SERVERS];
    struct raft_apply applies[16];
    unsigned n_applies;
    struct raft_change changes[4];
    unsigned n_changes;
};

static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof *x);
    struct raft_configuration conf;
    unsigned i;

    assert_non_null(x);
    assert_int_equal(raft_fixture_initialize(&x->f), 0);
    for (i = 0; i < N_SERVERS; i++) {
        x->fsms[i].version = 1;
        x->fsms[i].data = &x->counts[i];
        x->fsms[i].apply = fsm_apply;
        x->fsms[i].snapshot = fsm_snapshot;
        x->fsms[i].restore = fsm_restore;
        assert_int_equal(raft_fixture_grow(&x->f, &x->fsms[i]), 0);
    }
    assert_int_equal(raft_fixture_configuration(&x->f, N_SERVERS, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&x->f, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&x->f), 0);
    raft_fixture_elect(&x->f, 0);
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    struct fx *x = *state;

    raft_fixture_close(&x->f);
    free(x);
    return 0;
}

/* ---- helpers ---------------------------------------------------------------
 */

/* Submits one command on server i (the leader); the fixture applies it. */
static void submit(struct fx *x, unsigned i)
{
    struct raft *r = raft_fixture_get(&x->f, i);
    struct raft_apply *req;
    struct raft_buffer buf;

    assert_true(x->n_applies < sizeof x->applies / sizeof x->applies[0]);
    req = &x->applies[x->n_applies++];
    buf.len = 8;
    buf.base = raft_malloc(buf.len);
    assert_non_null(buf.base);
    memset(buf.base, 'c', buf.len);
    /* On success raft owns buf. */
    assert_int_equal(raft_apply(r, req, &buf, 1, NULL), 0);
}

/* Adds server id as a spare through leader i and waits until it is
 * committed there; returns the configuration entry's index. */
static raft_index add_spare(struct fx *x, unsigned i, raft_id id)
{
    struct raft *r = raft_fixture_get(&x->f, i);
    struct raft_change *req;
    char address[16];
    raft_index index;

    assert_true(x->n_changes < sizeof x->changes / sizeof x->changes[0]);
    req = &x->changes[x->n_changes++];
    snprintf(address, sizeof address, "%llu", (unsigned long long)id);
    assert_int_equal(raft_add(r, req, id, address, NULL), 0);
    index = raft_last_index(r);
    assert_true(raft_fixture_step_until_applied(&x->f, i, index, STEP_MS));
    return index;
}

/* ---- tests -----------------------------------------------------------------
 */

static void test_mid_batch_configuration_is_committed(void **state)
{
    struct fx *x = *state;
    struct raft *follower = raft_fixture_get(&x->f, 2);
    struct raft *leader = raft_fixture_get(&x->f, 0);
    raft_index conf_index, last, first_missed;
    int k;

    /* Server 2 stops hearing from the leader (and the leader from it). */
    first_missed = raft_last_index(leader) + 1;
    raft_fixture_saturate(&x->f, 0, 2);
    raft_fixture_saturate(&x->f, 2, 0);
    for (k = 0; k < 3; k++)
        submit(x, 0);
    conf_index = add_spare(x, 0, 4);
    for (k = 0; k < 3; k++)
        submit(x, 0);
    last = raft_last_index(leader);
    assert_true(raft_fixture_step_until_applied(&x->f, 0, last, STEP_MS));
    assert_true(conf_index > first_missed);
    assert_true(last - first_missed + 1 <= 10);

    raft_fixture_desaturate(&x->f, 0, 2);
    raft_fixture_desaturate(&x->f, 2, 0);
    assert_true(raft_fixture_step_until_applied(&x->f, 2, last, STEP_MS));

    /* The configuration entry is committed there, and nothing is pending. */
    assert_int_equal(follower->configuration_committed_index, conf_index);
    assert_int_equal(follower->configuration_uncommitted_index, 0);
    assert_int_equal(follower->configuration_committed.n, N_SERVERS + 1);

    /* Its next snapshot records that configuration. */
    raft_set_snapshot_threshold(follower, 1);
    submit(x, 0);
    assert_true(raft_fixture_step_until_applied(
        &x->f, 2, raft_last_index(leader), STEP_MS));
    raft_fixture_step_until_elapsed(&x->f, 1000);
    assert_int_equal(follower->configuration_last_snapshot_index, conf_index);

    /* As leader, it accepts a membership change. */
    raft_fixture_depose(&x->f);
    raft_fixture_step_until_has_no_leader(&x->f, STEP_MS);
    raft_fixture_elect(&x->f, 2);
    add_spare(x, 2, 5);
    assert_int_equal(follower->configuration.n, N_SERVERS + 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_mid_batch_configuration_is_committed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
