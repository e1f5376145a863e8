/*
 * test_relay_view.c - a view encodes the state as it was when taken, while
 * the state goes on applying commands (src/relay/view.c).
 *
 * Consensus encodes snapshots from a view on a thread of its own while the
 * loop applies the log; a view that saw a later change, or a state that
 * freed what the view reads, would write a snapshot of no index at all (or
 * crash). Each test drives a state through every kind of change a view must
 * survive (appends that grow arrays, compact, replace, room deletes and
 * creates, new keys, dedupe churn, the directory and settings, a restore)
 * and checks:
 *   - the view's bytes equal relay_state_snapshot() taken with the view;
 *   - the state itself ends byte-identical to a twin fed the same commands
 *     with no view out (copy-on-write changes nothing it shows);
 *   - with an encoder thread running during the changes, the same (under
 *     AddressSanitizer, a read of freed memory also fails the test);
 *   - one view at a time, cancel, and release with nothing leaked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

static const uint8_t seed[RELAY_SEED_LEN] = {9, 8, 7, 6, 5, 4, 3, 2, 1};

/* One command to both states; the twin has no view out. */
struct pair {
    struct relay_state *s, *twin;
    uint64_t now;
    uint64_t counter;
};

static void apply2(struct pair *p, const struct relay_cmd *c)
{
    struct relay_effects e1, e2;

    p->now++;
    assert_int_equal(relay_state_apply(p->s, c, p->now, &e1), RELAY_OK);
    assert_int_equal(relay_state_apply(p->twin, c, p->now, &e2), RELAY_OK);
    assert_int_equal(e1.status, e2.status);
    assert_int_equal(e1.seq, e2.seq);
}

static void room(struct pair *p, enum relay_cmd_type t, const char *id)
{
    struct relay_cmd c = {.type = t, .room = id, .room_len = strlen(id)};

    apply2(p, &c);
}

/* A push with a value of 1..30 bytes (a msgpack fixstr) and a dedupe origin
 * of one of 50 sessions, so the LRU churns. */
static void push(struct pair *p, const char *id, const char *key,
                 enum relay_action act, uint64_t cseq, unsigned v)
{
    uint8_t val[64];
    size_t n = 1 + v % 30;
    struct relay_cmd c = {.type = RELAY_CMD_PUSH,
                          .room = id,
                          .room_len = strlen(id),
                          .key = key,
                          .key_len = strlen(key),
                          .action = act,
                          .compact_seq = cseq,
                          .value = val,
                          .value_len = n + 1};

    val[0] = (uint8_t)(0xa0 | n);
    memset(val + 1, 'a' + (int)(v % 26), n);
    p->counter++;
    c.origin = (struct relay_origin){1 + (uint32_t)(v % 3), v % 50, p->counter};
    apply2(p, &c);
}

static void node_set(struct pair *p, uint32_t id, const char *raft)
{
    struct relay_cmd c = {.type = RELAY_CMD_NODE_SET,
                          .node_id = id,
                          .raft_addr = raft,
                          .raft_addr_len = strlen(raft),
                          .http_addr = raft,
                          .http_addr_len = strlen(raft)};

    apply2(p, &c);
}

static void config(struct pair *p, const char *name, uint64_t v)
{
    struct relay_cmd c = {.type = RELAY_CMD_CONFIG,
                          .key = name,
                          .key_len = strlen(name),
                          .compact_seq = v};

    apply2(p, &c);
}

static const char *rooms[] = {"r0", "r1", "r2", "r3", "r4", "r5"};
static const char *keys[] = {"a", "b", "c", "d"};

static void setup_pair(struct pair *p)
{
    memset(p, 0, sizeof(*p));
    p->now = 1700000000000;
    assert_int_equal(relay_state_create_seeded(NULL, seed, &p->s), RELAY_OK);
    assert_int_equal(relay_state_create_seeded(NULL, seed, &p->twin), RELAY_OK);
    node_set(p, 1, "127.0.0.1:1");
    node_set(p, 2, "127.0.0.1:2");
    for (size_t i = 0; i < 6; i++)
        room(p, RELAY_CMD_CREATE_ROOM, rooms[i]);
    for (unsigned i = 0; i < 600; i++)
        push(p, rooms[i % 6], keys[i % 4], RELAY_ACT_APPEND, 0, i);
}

/* Round `round` of changes: every kind a view has to survive. */
static void churn(struct pair *p, unsigned round)
{
    char id[16];

    /* appends past every array's capacity (they move when not shared) */
    for (unsigned i = 0; i < 300; i++)
        push(p, rooms[i % 6], keys[(i + round) % 4], RELAY_ACT_APPEND, 0,
             i + round);
    /* compact and replace rewrite arrays in place when not shared */
    push(p, "r1", "a", RELAY_ACT_COMPACT, 20 + round, round);
    push(p, "r2", "b", RELAY_ACT_REPLACE, 0, round);
    push(p, "r2", "b", RELAY_ACT_APPEND, 0, round + 1);
    push(p, "r3", "c", RELAY_ACT_RELAY, 0, round);
    /* a new key, a new room, a deleted room, one created again */
    snprintf(id, sizeof(id), "k%u", round);
    push(p, "r4", id, RELAY_ACT_APPEND, 0, round);
    snprintf(id, sizeof(id), "new%u", round);
    room(p, RELAY_CMD_CREATE_ROOM, id);
    push(p, id, "x", RELAY_ACT_APPEND, 0, round);
    room(p, RELAY_CMD_DELETE_ROOM, "r5");
    room(p, RELAY_CMD_CREATE_ROOM, "r5");
    push(p, "r5", "a", RELAY_ACT_APPEND, 0, round);
    /* directory and settings */
    node_set(p, 3 + round % 2, round % 2 ? "10.0.0.1:7" : "10.0.0.2:7");
    config(p, "max_rooms", 1000 + round);
}

static void expect_same(const uint8_t *a, size_t la, const uint8_t *b,
                        size_t lb, const char *what)
{
    if (la != lb)
        fail_msg("%s: %zu bytes against %zu", what, la, lb);
    if (memcmp(a, b, la) != 0)
        fail_msg("%s: the bytes differ", what);
}

static void expect_twins(struct pair *p)
{
    uint8_t *a, *b;
    size_t la, lb;

    assert_int_equal(relay_state_snapshot(p->s, &a, &la), RELAY_OK);
    assert_int_equal(relay_state_snapshot(p->twin, &b, &lb), RELAY_OK);
    expect_same(a, la, b, lb, "the state against its twin");
    free(a);
    free(b);
}

/* Encodes v, which must give `want` (freed here), releases it, and checks
 * the state against its twin. */
static void end_view(struct pair *p, struct relay_view *v, uint8_t *want,
                     size_t lw, const char *what)
{
    uint8_t *got;
    size_t lg;

    assert_int_equal(relay_view_encode(v, &got, &lg), RELAY_OK);
    expect_same(got, lg, want, lw, what);
    relay_view_release(p->s, v);
    expect_twins(p);
    free(want);
    free(got);
}

static void close_pair(struct pair *p)
{
    relay_state_destroy(p->s);
    relay_state_destroy(p->twin);
}

/* The view's bytes are the snapshot of its moment, the state's the
 * twin's, through several views in a row. */
static void test_view_is_its_moment(void **state)
{
    struct pair p;

    (void)state;
    setup_pair(&p);
    for (unsigned round = 0; round < 4; round++) {
        struct relay_view *v;
        uint8_t *want;
        size_t lw;

        assert_int_equal(relay_state_snapshot(p.s, &want, &lw), RELAY_OK);
        assert_int_equal(relay_view_take(p.s, &v), RELAY_OK);
        churn(&p, round);
        churn(&p, round + 100);
        end_view(&p, v, want, lw, "the view against its moment");
    }
    close_pair(&p);
}

/* A snapshot restored while a view is out: the view still reads the old
 * rooms, the state is the restored one. */
static void test_restore_under_view(void **state)
{
    struct pair p;
    struct relay_view *v;
    uint8_t *want, *other;
    size_t lw, lo;

    (void)state;
    setup_pair(&p);
    churn(&p, 7); /* the content to restore */
    assert_int_equal(relay_state_snapshot(p.s, &other, &lo), RELAY_OK);
    churn(&p, 8);
    assert_int_equal(relay_state_snapshot(p.s, &want, &lw), RELAY_OK);
    assert_int_equal(relay_view_take(p.s, &v), RELAY_OK);
    assert_int_equal(relay_state_restore(p.s, other, lo), RELAY_OK);
    assert_int_equal(relay_state_restore(p.twin, other, lo), RELAY_OK);
    churn(&p, 9);
    end_view(&p, v, want, lw, "the view across a restore");
    free(other);
    close_pair(&p);
}

struct enc {
    struct relay_view *v;
    uint8_t *buf;
    size_t len;
    int rv;
};

static void *encode_main(void *arg)
{
    struct enc *e = arg;

    e->rv = relay_view_encode(e->v, &e->buf, &e->len);
    return NULL;
}

/* The encoder on a thread of its own while the changes are applied, as
 * consensus runs it. */
static void test_encoder_thread(void **state)
{
    struct pair p;

    (void)state;
    setup_pair(&p);
    for (unsigned round = 0; round < 20; round++) {
        struct enc e = {0};
        pthread_t t;
        uint8_t *want;
        size_t lw;

        assert_int_equal(relay_state_snapshot(p.s, &want, &lw), RELAY_OK);
        assert_int_equal(relay_view_take(p.s, &e.v), RELAY_OK);
        assert_int_equal(pthread_create(&t, NULL, encode_main, &e), 0);
        churn(&p, round);
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_int_equal(e.rv, RELAY_OK);
        expect_same(e.buf, e.len, want, lw, "the threaded view");
        relay_view_release(p.s, e.v);
        free(want);
        free(e.buf);
    }
    expect_twins(&p);
    close_pair(&p);
}

/* One view at a time; a cancelled one encodes nothing; a released state
 * takes views again. */
static void test_one_view_and_cancel(void **state)
{
    struct pair p;
    struct relay_view *v, *w;
    uint8_t *buf = (uint8_t *)&p;
    size_t len = 1;

    (void)state;
    setup_pair(&p);
    assert_int_equal(relay_view_take(p.s, &v), RELAY_OK);
    assert_int_equal(relay_view_take(p.s, &w), RELAY_EINVAL);
    assert_null(w);
    relay_view_cancel(v);
    assert_int_equal(relay_view_encode(v, &buf, &len), RELAY_ECANCELED);
    assert_null(buf);
    assert_int_equal(len, 0);
    churn(&p, 1);
    relay_view_release(p.s, v);
    assert_int_equal(relay_view_take(p.s, &w), RELAY_OK);
    relay_view_release(p.s, w);
    expect_twins(&p);
    close_pair(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_view_is_its_moment),
        cmocka_unit_test(test_restore_under_view),
        cmocka_unit_test(test_encoder_thread),
        cmocka_unit_test(test_one_view_and_cancel),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
