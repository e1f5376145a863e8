/*
 * test_snapshot_golden.c - relay snapshots stay byte-identical across
 * refactors of src/relay.
 *
 * A snapshot is written by one build and read by another (a node restarted
 * on a newer binary, a follower receiving a leader's snapshot during a
 * rolling upgrade), and followers compare nothing but bytes. So the golden
 * bytes below were produced by src/relay/state.c before it was split into
 * one file per concern (issue #12), from the command list in build_state():
 * every section of the layout (rooms with binary ids and keys, all four
 * actions, dedupe sessions with an expiry and a clock step back, the node
 * directory, cluster settings).
 *
 * Checked: the same commands give the same bytes today; the golden bytes
 * restore and re-encode to themselves, into a state with another seed.
 *
 * Not covered here: snapshot version 1 (test_relay_state.c reads one) and
 * malformed snapshots (test_relay_state.c, tests/fuzz/fuzz_snapshot.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

/* The bytes relay_state_snapshot() gave for build_state() before the split
 * (commit 81a5ee4's src/relay/state.c). */
static const uint8_t golden[] = {
#include "snapshot_golden.inc"
};

#define S(lit) (lit), (sizeof(lit) - 1)

static void apply(struct relay_state *s, const struct relay_cmd *c,
                  uint64_t now, int want)
{
    struct relay_effects e;

    assert_int_equal(relay_state_apply(s, c, now, &e), RELAY_OK);
    assert_int_equal(e.status, want);
}

static void node_set(struct relay_state *s, uint32_t id, const char *raft,
                     const char *http, uint64_t now)
{
    struct relay_cmd c = {.type = RELAY_CMD_NODE_SET,
                          .node_id = id,
                          .raft_addr = raft,
                          .raft_addr_len = strlen(raft),
                          .http_addr = http,
                          .http_addr_len = strlen(http)};

    apply(s, &c, now, RELAY_OK);
}

static void config(struct relay_state *s, const char *name, uint64_t v,
                   uint64_t now)
{
    struct relay_cmd c = {.type = RELAY_CMD_CONFIG,
                          .key = name,
                          .key_len = strlen(name),
                          .compact_seq = v};

    apply(s, &c, now, RELAY_OK);
}

/* Values are canonical msgpack: 7, "hi", [1, 2], {"a": nil}, bin 3 bytes,
 * -1000, 1.5 (float64). */
#define V_INT "\x07"
#define V_STR "\xa2hi"
#define V_ARR "\x92\x01\x02"
#define V_MAP "\x81\xa1\x61\xc0"
#define V_BIN "\xc4\x03\x00\xff\x10"
#define V_NEG "\xd1\xfc\x18"
#define V_F64 "\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00"

#define HOUR ((uint64_t)3600 * 1000)
#define KEY "\xf0\x9f\x94\x91"

/* The room commands of build_state(), in log order: dt is added to its
 * log time t; origin node 0 means no dedupe. */
static const struct step {
    struct relay_cmd c;
    uint64_t dt;
    int want;
} steps[] = {
#define ROOM(kind, id, dt)                                                     \
    {                                                                          \
        {.type = RELAY_CMD_##kind, .room = id, .room_len = sizeof(id) - 1},    \
            dt, RELAY_OK                                                       \
    }
#define PUSH(id, k, act, cseq, val, node, session, n, dt, want)                \
    {                                                                          \
        {.type = RELAY_CMD_PUSH,                                               \
         .origin = {node, session, n},                                         \
         .room = id,                                                           \
         .room_len = sizeof(id) - 1,                                           \
         .key = k,                                                             \
         .key_len = sizeof(k) - 1,                                             \
         .action = RELAY_ACT_##act,                                            \
         .compact_seq = cseq,                                                  \
         .value = (const uint8_t *)val,                                        \
         .value_len = sizeof(val) - 1},                                        \
            dt, want                                                           \
    }
    ROOM(CREATE_ROOM, "room-a", 2),
    ROOM(CREATE_ROOM, "b\0x", 3),
    ROOM(CREATE_ROOM, "gone", 4),
    ROOM(CREATE_ROOM, "z", 5),
    /* an origin that the dedupe table forgets after an hour of log time */
    PUSH("gone", "k", APPEND, 0, V_INT, 3, 9, 1, 6, RELAY_OK),
    ROOM(DELETE_ROOM, "gone", 7),
    PUSH("room-a", "k", APPEND, 0, V_INT, 1, 1, 1, 10, RELAY_OK),
    PUSH("room-a", "k", APPEND, 0, V_STR, 1, 1, 2, 11, RELAY_OK),
    PUSH("room-a", "", REPLACE, 0, V_ARR, 2, 5, 1, 12, RELAY_OK),
    PUSH("room-a", "k\0y", APPEND, 0, V_MAP, 1, 1, 3, 13, RELAY_OK),
    PUSH("room-a", "k", APPEND, 0, V_BIN, 1, 2, 1, 14, RELAY_OK),
    /* a duplicate changes nothing */
    PUSH("room-a", "k", APPEND, 0, V_BIN, 1, 2, 1, 15, RELAY_EDUP),
    /* relay retains nothing but takes a seq */
    PUSH("room-a", "r", RELAY, 0, V_INT, 2, 5, 2, 16, RELAY_OK),
    PUSH("room-a", "k", COMPACT, 4, V_NEG, 2, 5, 3, 17, RELAY_OK),
    PUSH("room-a", "", REPLACE, 0, V_F64, 2, 6, 1, 18, RELAY_OK),
    /* an hour later: session (3, 9) expires, the others stay; the clock
     * then steps back (a new leader behind the old one) and is clamped in
     * the LRU */
    PUSH("b\0x", KEY, APPEND, 0, V_STR, 1, 3, 1, HOUR + 10, RELAY_OK),
    PUSH("b\0x", KEY, APPEND, 0, V_ARR, 2, 7, 1, HOUR + 8, RELAY_OK),
    PUSH("z", "q", COMPACT, 1, V_INT, 0, 0, 0, HOUR + 11, RELAY_ESEQ),
    PUSH("z", "q", APPEND, 0, V_INT, 0, 0, 0, HOUR + 11, RELAY_OK),
    PUSH("b\0x", KEY, COMPACT, 1, V_MAP, 1, 3, 2, HOUR + 12, RELAY_OK),
#undef ROOM
#undef PUSH
};

static struct relay_state *build_state(const uint8_t seed[RELAY_SEED_LEN])
{
    struct relay_state *s;
    struct relay_cmd c = {.type = RELAY_CMD_NODE_FORGET, .node_id = 3};
    const uint64_t t = 1700000000000;

    assert_int_equal(relay_state_create_seeded(NULL, seed, &s), RELAY_OK);
    config(s, "max_value_len", 4096, t);
    config(s, "max_rooms", 50, t);
    node_set(s, 2, "10.0.0.2:7001", "10.0.0.2:8080", t);
    node_set(s, 3, "10.0.0.3:7001", "", t);
    node_set(s, 1, "127.0.0.1:9001", "127.0.0.1:8080", t);
    apply(s, &c, t, RELAY_OK); /* forget node 3 */
    node_set(s, 2, "[::1]:7002", "[::1]:8082", t + 1);

    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++)
        apply(s, &steps[i].c, t + steps[i].dt, steps[i].want);
    return s;
}

static const uint8_t seed_a[RELAY_SEED_LEN] = {1, 2,  3,  4,  5,  6,  7,  8,
                                               9, 10, 11, 12, 13, 14, 15, 16};
static const uint8_t seed_b[RELAY_SEED_LEN] = {0xff, 0xee, 0xdd, 0xcc,
                                               0xbb, 0xaa, 0x99, 0x88};

static void expect_golden(const uint8_t *buf, size_t len, const char *what)
{
    if (len != sizeof(golden))
        fail_msg("%s: %zu bytes, golden %zu", what, len, sizeof(golden));
    for (size_t i = 0; i < len; i++)
        if (buf[i] != golden[i])
            fail_msg("%s: byte %zu is 0x%02x, golden 0x%02x", what, i, buf[i],
                     golden[i]);
}

/* The commands give the golden bytes, whatever the seed. */
static void test_golden_from_commands(void **state)
{
    const uint8_t *seeds[] = {seed_a, seed_b};

    (void)state;
    for (size_t i = 0; i < 2; i++) {
        struct relay_state *s = build_state(seeds[i]);
        uint8_t *buf;
        size_t len;

        assert_int_equal(relay_state_snapshot(s, &buf, &len), RELAY_OK);
        expect_golden(buf, len, "snapshot of build_state()");
        free(buf);
        relay_state_destroy(s);
    }
}

/* The golden bytes restore, read as the commands left them, and re-encode
 * to themselves. */
static void test_golden_restores(void **state)
{
    struct relay_state *s;
    struct relay_room_info ri;
    struct relay_node_info ni;
    struct relay_origin dup = {1, 2, 1}, fresh = {1, 2, 2}, gone = {3, 9, 1};
    const struct relay_entry *e;
    uint8_t *buf;
    size_t n, len;
    bool set;

    (void)state;
    assert_int_equal(relay_state_create_seeded(NULL, seed_b, &s), RELAY_OK);
    assert_int_equal(relay_state_restore(s, golden, sizeof(golden)), RELAY_OK);
    assert_int_equal(relay_state_snapshot(s, &buf, &len), RELAY_OK);
    expect_golden(buf, len, "re-encoded golden snapshot");
    free(buf);

    assert_int_equal(relay_state_room_count(s), 3);
    assert_int_equal(relay_room_info(s, S("room-a"), &ri), RELAY_OK);
    assert_int_equal(ri.keys, 3);
    assert_int_equal(ri.entries, 4);
    assert_int_equal(ri.last_seq, 7);
    assert_int_equal(relay_stream_read(s, S("room-a"), S("k"), 0, &e, &n),
                     RELAY_OK);
    assert_int_equal(n, 2); /* compacted at 4, then seq 5 */
    assert_int_equal(e[0].seq, 4);
    assert_int_equal(e[1].seq, 5);
    assert_int_equal(relay_stream_read(s, S("b\0x"), S(KEY), 0, &e, &n),
                     RELAY_OK);
    assert_int_equal(n, 2);
    assert_int_equal(e[0].seq, 1);
    assert_int_equal(e[1].seq, 2);
    assert_false(relay_room_exists(s, S("gone")));
    assert_true(relay_state_origin_applied(s, &dup));
    assert_false(relay_state_origin_applied(s, &fresh));
    assert_false(relay_state_origin_applied(s, &gone));
    assert_true(relay_node_lookup(s, 2, &ni));
    assert_string_equal(ni.raft_addr, "[::1]:7002");
    assert_false(relay_node_lookup(s, 3, &ni));
    assert_int_equal(relay_setting_value(s, 2, &set), 50); /* max_rooms */
    assert_true(set);
    assert_int_equal(relay_setting_value(s, 1, &set), 64 * 1024 * 1024);
    assert_false(set);
    relay_state_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_from_commands),
        cmocka_unit_test(test_golden_restores),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
