/*
 * test_htab.c - the seeded hash table (htab.h) and relay's use of it.
 *
 * Design: SipHash-2-4 against the reference vectors of its paper; the
 * table's insert/find/remove/reserve; a key set crafted to collide under
 * the unseeded FNV-1a that relay used before (every key in one bucket of
 * any table up to 4096 buckets) must spread out under the seeded table and
 * work as rooms and stream keys of a relay state; and two states with
 * different seeds fed the same commands must give byte-identical snapshots,
 * also after restoring each other's.
 *
 * Not covered here: net's tables (the same module, exercised by the
 * black-box tests).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "htab.h"
#include "relay.h"
#include "unit_util.h"

/* ---- SipHash ------------------------------------------------------------- */

/* SipHash-2-4 reference: key 00..0f, message 00..(n-1), from the paper's
 * appendix and the reference implementation's vectors.h. */
static void test_siphash_vectors(void **state)
{
    static const uint64_t want[] = {
        0x726fdb47dd0e0e31ULL, /* n = 0 */
        0x74f839c593dc67fdULL, /* n = 1 */
        0x0d6c8009d9a94f5aULL, /* n = 2 */
        0x85676696d7fb7e2dULL, /* n = 3 */
        0xcf2794e0277187b7ULL, /* n = 4 */
        0x18765564cd99a68dULL, /* n = 5 */
        0xcbc9466e58fee3ceULL, /* n = 6 */
        0xab0200f58b01d137ULL, /* n = 7 */
        0x93f5f5799a932462ULL, /* n = 8 */
        0x9e0082df0ba9e4b0ULL, /* n = 9 */
    };
    uint8_t key[16], msg[16];

    (void)state;
    for (int i = 0; i < 16; i++)
        key[i] = msg[i] = (uint8_t)i;
    for (size_t n = 0; n < sizeof(want) / sizeof(want[0]); n++)
        assert_true(htab_siphash(key, msg, n) == want[n]);
    /* 15 bytes: the paper's example (Appendix A). */
    assert_true(htab_siphash(key, msg, 15) == 0xa129ca6149be45e5ULL);
}

/* ---- the table ----------------------------------------------------------- */

struct item {
    char key[24];
    size_t len;
    struct htab_node node;
};

static void test_table_basics(void **state)
{
    static const uint8_t seed[HTAB_SEED_LEN] = {9, 8, 7, 6, 5, 4, 3, 2,
                                                1, 0, 1, 2, 3, 4, 5, 6};
    struct item *items = calloc(1000, sizeof(*items));
    struct htab t;

    (void)state;
    assert_non_null(items);
    htab_init(&t, seed);
    assert_null(htab_find(&t, "x", 1));
    assert_int_equal(htab_reserve(&t, 100), HTAB_OK);
    assert_true(t.nbuckets >= 100);
    for (int i = 0; i < 1000; i++) {
        items[i].len =
            (size_t)snprintf(items[i].key, sizeof(items[i].key), "key-%d", i);
        assert_int_equal(
            htab_insert(&t, &items[i].node, items[i].key, items[i].len),
            HTAB_OK);
    }
    assert_int_equal(t.count, 1000);
    /* the empty key is a key like any other */
    {
        struct item empty = {.len = 0};

        assert_null(htab_find(&t, "", 0));
        assert_int_equal(htab_insert(&t, &empty.node, empty.key, 0), HTAB_OK);
        assert_ptr_equal(htab_find(&t, "", 0), &empty.node);
        htab_remove(&t, &empty.node);
        assert_null(htab_find(&t, "", 0));
    }
    for (int i = 0; i < 1000; i++) {
        struct htab_node *n = htab_find(&t, items[i].key, items[i].len);

        assert_ptr_equal(n, &items[i].node);
        assert_ptr_equal(HTAB_ENTRY(n, struct item, node), &items[i]);
    }
    for (int i = 0; i < 1000; i += 2)
        htab_remove(&t, &items[i].node);
    assert_int_equal(t.count, 500);
    for (int i = 0; i < 1000; i++) {
        struct htab_node *n = htab_find(&t, items[i].key, items[i].len);

        if (i % 2 == 0)
            assert_null(n);
        else
            assert_ptr_equal(n, &items[i].node);
    }
    /* removing what is not there changes nothing */
    htab_remove(&t, &items[0].node);
    assert_int_equal(t.count, 500);
    htab_close(&t);
    assert_int_equal(t.count, 0);
    assert_null(htab_find(&t, items[1].key, items[1].len));
    free(items);
}

/* ---- keys that collide under the old hash -------------------------------- */

/* The unseeded FNV-1a relay used for room ids, stream keys and origins. */
static uint64_t old_fnv1a(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 14695981039346656037ULL;

    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ULL;
    }
    return h;
}

#define N_COLLIDE 1000
#define COLLIDE_MASK 0xfffULL /* one bucket of every table up to 4096 */

/*
 * N_COLLIDE URL-safe ids whose old hashes agree in the low 12 bits: what a
 * client could have sent to put every room (or key) of a node in one chain.
 * Brute force over a counter; about 4096 tries per id.
 */
static char (*colliding_ids(void))[16]
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char(*ids)[16] = calloc(N_COLLIDE, sizeof(*ids));
    uint64_t target = old_fnv1a("attack-0", 8) & COLLIDE_MASK;
    size_t found = 0;

    assert_non_null(ids);
    for (uint64_t ctr = 0; found < N_COLLIDE; ctr++) {
        char id[16] = "attack-";
        uint64_t v = ctr;

        for (int i = 7; i < 15; i++, v >>= 6)
            id[i] = b64[v & 63];
        if ((old_fnv1a(id, 15) & COLLIDE_MASK) == target)
            memcpy(ids[found++], id, 16);
    }
    return ids;
}

static void test_colliding_keys_spread(void **state)
{
    static const uint8_t seed[HTAB_SEED_LEN] = {
        0x5a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    char(*ids)[16] = colliding_ids();
    struct item *items = calloc(N_COLLIDE, sizeof(*items));
    uint64_t first = old_fnv1a(ids[0], 15) & COLLIDE_MASK;
    struct htab t;

    (void)state;
    assert_non_null(items);
    for (int i = 0; i < N_COLLIDE; i++)
        assert_true((old_fnv1a(ids[i], 15) & COLLIDE_MASK) == first);
    htab_init(&t, seed);
    for (int i = 0; i < N_COLLIDE; i++) {
        memcpy(items[i].key, ids[i], 15);
        items[i].len = 15;
        assert_int_equal(htab_insert(&t, &items[i].node, items[i].key, 15),
                         HTAB_OK);
    }
    /* 1000 keys in 1024 buckets: a fair hash gives chains of a few; the
     * old one gave one chain of 1000. */
    print_message("max chain: %zu of %zu keys, %zu buckets\n",
                  htab_max_chain(&t), t.count, t.nbuckets);
    assert_true(htab_max_chain(&t) <= 12);
    for (int i = 0; i < N_COLLIDE; i++)
        assert_ptr_equal(htab_find(&t, ids[i], 15), &items[i].node);
    htab_close(&t);
    free(items);
    free(ids);
}

/* ---- relay with seeds ------------------------------------------------------
 */

static const uint8_t seed_a[RELAY_SEED_LEN] = {1, 2,  3,  4,  5,  6,  7,  8,
                                               9, 10, 11, 12, 13, 14, 15, 16};
static const uint8_t seed_b[RELAY_SEED_LEN] = {
    0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88,
    0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00};

static void apply_ok(struct relay_state *s, const struct relay_cmd *c,
                     uint64_t now, int want_status)
{
    struct relay_effects e;

    assert_int_equal(relay_state_apply(s, c, now, &e), RELAY_OK);
    assert_int_equal(e.status, want_status);
}

/* The same commands to both states: rooms with colliding ids, keys with
 * colliding names, many origins, deletes and compacts. */
static void feed(struct relay_state *s, char (*ids)[16])
{
    static const uint8_t val[] = {0x92, 0x01, 0xa2, 'h', 'i'};
    struct relay_cmd c;
    uint64_t now = 1000;

    for (int i = 0; i < N_COLLIDE; i++) {
        memset(&c, 0, sizeof(c));
        c.type = RELAY_CMD_CREATE_ROOM;
        c.room = ids[i];
        c.room_len = 15;
        c.origin = (struct relay_origin){.node = 1 + (uint32_t)(i % 3),
                                         .session = (uint64_t)i,
                                         .counter = 1};
        apply_ok(s, &c, now++, RELAY_OK);
    }
    /* one room holds every colliding id as a stream key, too */
    for (int i = 0; i < N_COLLIDE; i++) {
        memset(&c, 0, sizeof(c));
        c.type = RELAY_CMD_PUSH;
        c.room = ids[i % 7];
        c.room_len = 15;
        c.key = ids[i];
        c.key_len = 15;
        c.action = i % 5 == 0 ? RELAY_ACT_REPLACE : RELAY_ACT_APPEND;
        c.value = val;
        c.value_len = sizeof(val);
        c.origin = (struct relay_origin){.node = 7,
                                         .session = (uint64_t)(i % 50),
                                         .counter = (uint64_t)(i / 50 + 1)};
        apply_ok(s, &c, now++, RELAY_OK);
    }
    /* a replayed command: refused by dedupe */
    apply_ok(s, &c, now++, RELAY_EDUP);
    for (int i = 0; i < N_COLLIDE; i += 3) {
        memset(&c, 0, sizeof(c));
        c.type = RELAY_CMD_DELETE_ROOM;
        c.room = ids[i + 10 < N_COLLIDE ? i + 10 : i];
        c.room_len = 15;
        apply_ok(s, &c, now++, RELAY_OK);
    }
}

static void test_seeds_give_same_snapshots(void **state)
{
    char(*ids)[16] = colliding_ids();
    struct relay_state *a, *b, *c;
    uint8_t *sa, *sb, *sc;
    size_t la, lb, lc;

    (void)state;
    assert_int_equal(relay_state_create_seeded(NULL, seed_a, &a), RELAY_OK);
    assert_int_equal(relay_state_create_seeded(NULL, seed_b, &b), RELAY_OK);
    assert_int_equal(relay_state_create(NULL, &c), RELAY_OK);
    feed(a, ids);
    feed(b, ids);
    feed(c, ids);
    assert_int_equal(relay_state_snapshot(a, &sa, &la), RELAY_OK);
    assert_int_equal(relay_state_snapshot(b, &sb, &lb), RELAY_OK);
    assert_int_equal(relay_state_snapshot(c, &sc, &lc), RELAY_OK);
    assert_int_equal(la, lb);
    assert_memory_equal(sa, sb, la);
    assert_int_equal(la, lc);
    assert_memory_equal(sa, sc, la);
    /* every room is there and findable in both */
    for (int i = 0; i < N_COLLIDE; i++)
        assert_int_equal(relay_room_exists(a, ids[i], 15),
                         relay_room_exists(b, ids[i], 15));
    assert_int_equal(relay_state_room_count(a), relay_state_room_count(b));
    free(sb);
    free(sc);

    /* b restores a's snapshot (its own seed stays) and writes it back */
    assert_int_equal(relay_state_restore(b, sa, la), RELAY_OK);
    assert_int_equal(relay_state_snapshot(b, &sb, &lb), RELAY_OK);
    assert_int_equal(la, lb);
    assert_memory_equal(sa, sb, la);
    /* and the restored tables find everything */
    for (int i = 0; i < N_COLLIDE; i++) {
        const struct relay_entry *e;
        size_t n;

        assert_int_equal(relay_room_exists(a, ids[i], 15),
                         relay_room_exists(b, ids[i], 15));
        if (i < 7 && relay_room_exists(a, ids[i], 15)) {
            assert_int_equal(
                relay_stream_read(b, ids[i], 15, ids[i], 15, 0, &e, &n),
                RELAY_OK);
            assert_true(n >= 1);
        }
    }
    free(sa);
    free(sb);
    relay_state_destroy(a);
    relay_state_destroy(b);
    relay_state_destroy(c);
    free(ids);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash_vectors),
        cmocka_unit_test(test_table_basics),
        cmocka_unit_test(test_colliding_keys_spread),
        cmocka_unit_test(test_seeds_give_same_snapshots),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
