/*
 * test_relay_batch.c - log batches (relay_batch_enc_*, relay_batch_add /
 * count / bytes / finish / reset, relay_batch_decode).
 *
 * Design: commands of every type (values are canonical msgpack made with
 * msgpack-c) go through the encoder and back through the decoder; every
 * field and the timestamp must come back, with pointers borrowed from the
 * batch bytes. The decoder must validate a whole batch before its first
 * callback, so every truncated prefix and every malformed value (nesting
 * bombs, reserved bytes, trailing or missing bytes) is refused with zero
 * callbacks (only a prefix that drops alignment padding may still decode,
 * and then to every command intact). Hostile-input cases swap a same-length
 * placeholder value inside a real batch, so they do not depend on the batch
 * layout. A seeded fuzz loop mutates valid batches and feeds random bytes;
 * whatever decodes is applied to a relay state. Last, batches decoded and
 * applied must give the same state as the same commands applied directly.
 *
 * Not covered here: the state machine itself (test_relay_state.c),
 * allocation failure injection (no allocator hook).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "relay.h"
#include "unit_util.h"

/* A string literal as (pointer, length): embedded NULs count. */
#define K(lit) (lit), (sizeof(lit) - 1)

/* ---- small utilities ------------------------------------------------------
 */

static bool same_bytes(const void *a, size_t an, const void *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

/* One complete msgpack object, nothing after it. */
static bool is_one_value(const uint8_t *p, size_t n)
{
    msgpack_unpacked u;
    size_t off = 0;
    bool ok;

    if (p == NULL || n == 0)
        return false;
    msgpack_unpacked_init(&u);
    ok = msgpack_unpack_next(&u, (const char *)p, n, &off) ==
             MSGPACK_UNPACK_SUCCESS &&
         off == n;
    msgpack_unpacked_destroy(&u);
    return ok;
}

static const uint8_t *find_bytes(const uint8_t *hay, size_t hn,
                                 const uint8_t *needle, size_t nn)
{
    if (nn == 0 || hn < nn)
        return NULL;
    for (size_t i = 0; i + nn <= hn; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, nn) == 0)
            return hay + i;
    return NULL;
}

/* ---- values (msgpack-c into an sbuffer) -----------------------------------
 */

struct val {
    msgpack_sbuffer sb;
    msgpack_packer pk;
};

static msgpack_packer *val_begin(struct val *v)
{
    msgpack_sbuffer_init(&v->sb);
    msgpack_packer_init(&v->pk, &v->sb, msgpack_sbuffer_write);
    return &v->pk;
}

static const uint8_t *vp(const struct val *v)
{
    return (const uint8_t *)v->sb.data;
}

static void val_free(struct val *v)
{
    msgpack_sbuffer_destroy(&v->sb);
}

static void val_bin(struct val *v, size_t n, uint8_t fill)
{
    msgpack_packer *pk = val_begin(v);
    uint8_t *body = malloc(n + 1);

    assert_non_null(body);
    memset(body, fill, n);
    msgpack_pack_bin(pk, n);
    msgpack_pack_bin_body(pk, body, n);
    free(body);
}

/* n nested one-element arrays around nil. */
static void val_deep_array(struct val *v, size_t n)
{
    msgpack_packer *pk = val_begin(v);

    for (size_t i = 0; i < n; i++)
        msgpack_pack_array(pk, 1);
    msgpack_pack_nil(pk);
}

/* n nested one-entry maps {"a": {"a": ... 1}}. */
static void val_deep_map(struct val *v, size_t n)
{
    msgpack_packer *pk = val_begin(v);

    for (size_t i = 0; i < n; i++) {
        msgpack_pack_map(pk, 1);
        msgpack_pack_str(pk, 1);
        msgpack_pack_str_body(pk, "a", 1);
    }
    msgpack_pack_int(pk, 1);
}

enum {
    V_INT,
    V_INT_MIN,
    V_UINT_MAX,
    V_DOUBLE,
    V_TRUE,
    V_NIL,
    V_STR,
    V_EMPTY_ARRAY,
    V_EMPTY_MAP,
    V_NESTED,
    V_BIN0,
    V_BIN300,
    V_DEEP16,
    V_COUNT
};

static void make_values(struct val *v)
{
    msgpack_packer *pk;

    msgpack_pack_int(val_begin(&v[V_INT]), 5);
    msgpack_pack_int64(val_begin(&v[V_INT_MIN]), INT64_MIN);
    msgpack_pack_uint64(val_begin(&v[V_UINT_MAX]), UINT64_MAX);
    msgpack_pack_double(val_begin(&v[V_DOUBLE]), 3.25);
    msgpack_pack_true(val_begin(&v[V_TRUE]));
    msgpack_pack_nil(val_begin(&v[V_NIL]));
    pk = val_begin(&v[V_STR]);
    msgpack_pack_str(pk, 14);
    msgpack_pack_str_body(pk, "hello, \xe4\xb8\x96\xe7\x95\x8c!", 14);
    msgpack_pack_array(val_begin(&v[V_EMPTY_ARRAY]), 0);
    msgpack_pack_map(val_begin(&v[V_EMPTY_MAP]), 0);
    pk = val_begin(&v[V_NESTED]); /* {"a": [1, {"b": nil}], "c": "d"} */
    msgpack_pack_map(pk, 2);
    msgpack_pack_str(pk, 1);
    msgpack_pack_str_body(pk, "a", 1);
    msgpack_pack_array(pk, 2);
    msgpack_pack_int(pk, 1);
    msgpack_pack_map(pk, 1);
    msgpack_pack_str(pk, 1);
    msgpack_pack_str_body(pk, "b", 1);
    msgpack_pack_nil(pk);
    msgpack_pack_str(pk, 1);
    msgpack_pack_str_body(pk, "c", 1);
    msgpack_pack_str(pk, 1);
    msgpack_pack_str_body(pk, "d", 1);
    val_bin(&v[V_BIN0], 0, 0);
    val_bin(&v[V_BIN300], 300, 0x77);
    val_deep_array(&v[V_DEEP16], 16);
    for (int i = 0; i < V_COUNT; i++)
        assert_true(is_one_value(vp(&v[i]), v[i].sb.size));
}

static void free_values(struct val *v)
{
    for (int i = 0; i < V_COUNT; i++)
        val_free(&v[i]);
}

/* ---- commands -------------------------------------------------------------
 */

static struct relay_cmd c_room(enum relay_cmd_type t, const char *room,
                               struct relay_origin o)
{
    struct relay_cmd c;

    memset(&c, 0, sizeof(c));
    c.type = t;
    c.origin = o;
    c.room = room;
    c.room_len = strlen(room);
    return c;
}

static struct relay_cmd c_push(const char *room, const char *key, size_t klen,
                               enum relay_action a, uint64_t cseq,
                               const struct val *v, struct relay_origin o)
{
    struct relay_cmd c;

    memset(&c, 0, sizeof(c));
    c.type = RELAY_CMD_PUSH;
    c.origin = o;
    c.room = room;
    c.room_len = strlen(room);
    c.key = key;
    c.key_len = klen;
    c.action = a;
    c.compact_seq = cseq;
    c.value = vp(v);
    c.value_len = v->sb.size;
    return c;
}

static struct relay_cmd c_node(enum relay_cmd_type t, uint32_t id,
                               const char *raft, const char *http,
                               struct relay_origin o)
{
    struct relay_cmd c;

    memset(&c, 0, sizeof(c));
    c.type = t;
    c.origin = o;
    c.node_id = id;
    c.raft_addr = raft;
    c.raft_addr_len = raft ? strlen(raft) : 0;
    c.http_addr = http;
    c.http_addr_len = http ? strlen(http) : 0;
    return c;
}

static struct relay_cmd c_noop(void)
{
    struct relay_cmd c;

    memset(&c, 0, sizeof(c));
    c.type = RELAY_CMD_NOOP;
    return c;
}

/* NULL when got carries everything want does; otherwise what differs. */
static const char *cmd_diff(const struct relay_cmd *want,
                            const struct relay_cmd *got)
{
    if (got->type != want->type)
        return "type";
    if (want->type != RELAY_CMD_NOOP &&
        (got->origin.node != want->origin.node ||
         got->origin.session != want->origin.session ||
         got->origin.counter != want->origin.counter))
        return "origin";
    switch (want->type) {
    case RELAY_CMD_CREATE_ROOM:
    case RELAY_CMD_DELETE_ROOM:
        if (!same_bytes(got->room, got->room_len, want->room, want->room_len))
            return "room";
        return NULL;
    case RELAY_CMD_PUSH:
        if (!same_bytes(got->room, got->room_len, want->room, want->room_len))
            return "room";
        if (!same_bytes(got->key, got->key_len, want->key, want->key_len))
            return "key";
        if (got->action != want->action)
            return "action";
        if (want->action == RELAY_ACT_COMPACT &&
            got->compact_seq != want->compact_seq)
            return "compact_seq";
        if (!same_bytes(got->value, got->value_len, want->value,
                        want->value_len))
            return "value";
        return NULL;
    case RELAY_CMD_NOOP:
        return NULL;
    case RELAY_CMD_CONFIG:
        if (!same_bytes(got->key, got->key_len, want->key, want->key_len))
            return "key";
        if (got->compact_seq != want->compact_seq)
            return "value";
        return NULL;
    case RELAY_CMD_NODE_SET:
        if (got->node_id != want->node_id)
            return "node_id";
        if (!same_bytes(got->raft_addr, got->raft_addr_len, want->raft_addr,
                        want->raft_addr_len))
            return "raft_addr";
        if (!same_bytes(got->http_addr, got->http_addr_len, want->http_addr,
                        want->http_addr_len))
            return "http_addr";
        return NULL;
    case RELAY_CMD_NODE_FORGET:
        if (got->node_id != want->node_id)
            return "node_id";
        return NULL;
    }
    return "unknown type";
}

/* ---- decode capture -------------------------------------------------------
 */

#define CAP_MAX 256

struct got {
    struct relay_cmd c;
    uint64_t now;
    char *room;
    char *key;
    uint8_t *value;
    char *raft;
    char *http;
};

struct cap {
    const uint8_t *buf; /* the bytes handed to decode */
    size_t len;
    size_t n; /* callbacks so far */
    size_t stored;
    struct got v[CAP_MAX];
    size_t stop_at; /* 1-based callback that returns ret; 0: never */
    int ret;
    const char *bad; /* first broken rule seen in a callback */
    struct relay_state *apply_to;
    uint64_t first_now;
};

static void *dup_mem(const void *p, size_t n)
{
    uint8_t *d = malloc(n + 1);

    assert_non_null(d);
    if (n > 0)
        memcpy(d, p, n);
    d[n] = 0;
    return d;
}

static bool in_buf(const struct cap *c, const void *p, size_t n)
{
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)c->buf;

    if (n == 0)
        return true;
    return p != NULL && a >= b && n <= c->len && a - b <= c->len - n;
}

static int on_cmd(void *arg, const struct relay_cmd *cmd, uint64_t now_ms)
{
    struct cap *c = arg;
    const char *bad = NULL;

    c->n++;
    if (c->n == 1)
        c->first_now = now_ms;
    else if (now_ms != c->first_now)
        bad = "timestamp differs between commands of one batch";
    if (cmd->type < RELAY_CMD_CREATE_ROOM || cmd->type > RELAY_CMD_NODE_FORGET)
        bad = "command type out of range";
    if (!in_buf(c, cmd->room, cmd->room_len) ||
        !in_buf(c, cmd->key, cmd->key_len) ||
        !in_buf(c, cmd->value, cmd->value_len) ||
        !in_buf(c, cmd->raft_addr, cmd->raft_addr_len) ||
        !in_buf(c, cmd->http_addr, cmd->http_addr_len))
        bad = "a pointer does not borrow from the batch bytes";
    if (cmd->type == RELAY_CMD_PUSH) {
        if (cmd->action > RELAY_ACT_COMPACT)
            bad = "action out of range";
        if (!is_one_value(cmd->value, cmd->value_len))
            bad = "value is not one msgpack value";
    }
    if (cmd->type == RELAY_CMD_NODE_SET &&
        (cmd->raft_addr_len > RELAY_ADDR_MAX ||
         cmd->http_addr_len > RELAY_ADDR_MAX))
        bad = "address longer than RELAY_ADDR_MAX";
    if (bad != NULL && c->bad == NULL)
        c->bad = bad;
    if (c->stored < CAP_MAX && bad == NULL) {
        struct got *g = &c->v[c->stored++];

        g->c = *cmd;
        g->now = now_ms;
        g->room = dup_mem(cmd->room, cmd->room_len);
        g->key = dup_mem(cmd->key, cmd->key_len);
        g->value = dup_mem(cmd->value, cmd->value_len);
        g->raft = dup_mem(cmd->raft_addr, cmd->raft_addr_len);
        g->http = dup_mem(cmd->http_addr, cmd->http_addr_len);
        g->c.room = g->room;
        g->c.key = g->key;
        g->c.value = g->value;
        g->c.raft_addr = g->raft;
        g->c.http_addr = g->http;
    }
    if (c->apply_to != NULL && bad == NULL) {
        struct relay_effects e;

        if (relay_state_apply(c->apply_to, cmd, now_ms, &e) != RELAY_OK &&
            c->bad == NULL)
            c->bad = "relay_state_apply of a decoded command failed";
    }
    if (c->stop_at != 0 && c->n == c->stop_at)
        return c->ret;
    return 0;
}

static void cap_reset(struct cap *c)
{
    for (size_t i = 0; i < c->stored; i++) {
        free(c->v[i].room);
        free(c->v[i].key);
        free(c->v[i].value);
        free(c->v[i].raft);
        free(c->v[i].http);
    }
    c->n = 0;
    c->stored = 0;
    c->bad = NULL;
    c->stop_at = 0;
    c->ret = 0;
    c->apply_to = NULL;
    c->first_now = 0;
}

/* Decodes from an exact-size heap copy so ASan sees any over-read. */
static int decode_copy(const uint8_t *p, size_t n, struct cap *c)
{
    uint8_t *b = malloc(n ? n : 1);
    int rc;

    assert_non_null(b);
    if (n > 0)
        memcpy(b, p, n);
    c->buf = b;
    c->len = n;
    rc = relay_batch_decode(b, n, on_cmd, c);
    free(b);
    c->buf = NULL;
    return rc;
}

/* ---- encoding helpers -----------------------------------------------------
 */

static size_t n_allocs;
static void *last_alloc;

static void *counting_alloc(size_t n)
{
    n_allocs++;
    last_alloc = malloc(n ? n : 1);
    return last_alloc;
}

static struct relay_batch_enc *mkenc(void)
{
    struct relay_batch_enc *b = NULL;

    assert_int_equal(relay_batch_enc_create(&b), RELAY_OK);
    assert_non_null(b);
    return b;
}

struct blob {
    uint8_t *p;
    size_t n;
};

static struct blob finish_at(struct relay_batch_enc *b, uint64_t now,
                             const char *file, int line)
{
    struct blob out = {NULL, 0};
    size_t before = n_allocs;
    int rc = relay_batch_finish(b, now, counting_alloc, &out.p, &out.n);

    if (rc != RELAY_OK || out.p == NULL || out.n == 0) {
        print_error("relay_batch_finish: rc %d, %zu bytes\n", rc, out.n);
        _fail(file, line);
    }
    if (n_allocs != before + 1 || out.p != last_alloc) {
        print_error("relay_batch_finish: output not from the given alloc\n");
        _fail(file, line);
    }
    return out;
}
#define FINISH(b, now) finish_at((b), (now), __FILE__, __LINE__)

static void add_all_at(struct relay_batch_enc *b, const struct relay_cmd *cmds,
                       size_t n, const char *file, int line)
{
    for (size_t i = 0; i < n; i++) {
        size_t count = relay_batch_count(b), bytes = relay_batch_bytes(b);
        int rc = relay_batch_add(b, &cmds[i]);

        if (rc != RELAY_OK) {
            print_error("relay_batch_add of command %zu (type %d): rc %d\n", i,
                        (int)cmds[i].type, rc);
            _fail(file, line);
        }
        if (relay_batch_count(b) != count + 1 ||
            relay_batch_bytes(b) <= bytes) {
            print_error("after add %zu: count %zu (was %zu), bytes %zu (was "
                        "%zu)\n",
                        i, relay_batch_count(b), count, relay_batch_bytes(b),
                        bytes);
            _fail(file, line);
        }
    }
}
#define ADD_ALL(b, cmds, n) add_all_at((b), (cmds), (n), __FILE__, __LINE__)

static void expect_decoded_at(const struct blob *batch,
                              const struct relay_cmd *want, size_t n,
                              uint64_t now, const char *file, int line)
{
    struct cap *c = calloc(1, sizeof(*c));
    int rc;

    assert_non_null(c);
    rc = decode_copy(batch->p, batch->n, c);
    if (rc != RELAY_OK || c->n != n || c->bad != NULL) {
        print_error("decode: rc %d, %zu callbacks (want %zu)%s%s\n", rc, c->n,
                    n, c->bad ? ": " : "", c->bad ? c->bad : "");
        _fail(file, line);
    }
    for (size_t i = 0; i < n && i < c->stored; i++) {
        const char *d = cmd_diff(&want[i], &c->v[i].c);

        if (d != NULL || c->v[i].now != now) {
            print_error("command %zu (type %d): %s differs; now %" PRIu64
                        " want %" PRIu64 "\n",
                        i, (int)want[i].type, d ? d : "nothing", c->v[i].now,
                        now);
            _fail(file, line);
        }
    }
    cap_reset(c);
    free(c);
}
#define EXPECT_DECODED(batch, want, n, now)                                    \
    expect_decoded_at(&(batch), (want), (n), (now), __FILE__, __LINE__)

/* Must be refused with zero callbacks. */
static void expect_refused_at(const uint8_t *p, size_t n, const char *what,
                              const char *file, int line)
{
    struct cap *c = calloc(1, sizeof(*c));
    int rc;

    assert_non_null(c);
    rc = decode_copy(p, n, c);
    if (rc != RELAY_EINVAL || c->n != 0) {
        print_error("%s (%zu bytes): rc %d with %zu callbacks, want "
                    "RELAY_EINVAL and none\n",
                    what, n, rc, c->n);
        _fail(file, line);
    }
    cap_reset(c);
    free(c);
}
#define EXPECT_REFUSED(p, n, what)                                             \
    expect_refused_at((p), (n), (what), __FILE__, __LINE__)

/* ---- a table of commands of every type ------------------------------------
 */

struct table {
    struct val v[V_COUNT];
    struct val big;
    char long_key[1024];
    char long_addr[RELAY_ADDR_MAX + 1];
    struct relay_cmd c[32];
    size_t n;
};

static void table_build(struct table *t)
{
    const struct relay_origin o0 = {0, 0, 0};
    const struct relay_origin o1 = {1, 42, 1};
    const struct relay_origin omax = {UINT32_MAX, UINT64_MAX, UINT64_MAX};
    size_t n = 0;

    memset(t, 0, sizeof(*t));
    make_values(t->v);
    val_bin(&t->big, 200000, 0x3c);
    memset(t->long_key, 'k', sizeof(t->long_key));
    memset(t->long_addr, 'a', RELAY_ADDR_MAX);
    t->long_addr[RELAY_ADDR_MAX] = '\0';

    t->c[n++] = c_room(RELAY_CMD_CREATE_ROOM, "room-abc", o1);
    t->c[n++] = c_push("room-abc", K("k"), RELAY_ACT_RELAY, 0, &t->v[V_INT],
                       (struct relay_origin){1, 42, 2});
    t->c[n++] = c_push("room-abc", K(""), RELAY_ACT_REPLACE, 0, &t->v[V_NESTED],
                       (struct relay_origin){1, 42, 3});
    t->c[n++] = c_push("room-abc", K("a\0b"), RELAY_ACT_APPEND, 0, &t->v[V_STR],
                       (struct relay_origin){2, 7, 1});
    t->c[n++] =
        c_push("room-abc", K("\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87"),
               RELAY_ACT_COMPACT, 12345678901234ull, &t->v[V_EMPTY_ARRAY], o0);
    t->c[n++] = c_push("room-abc", K("big"), RELAY_ACT_APPEND, 0, &t->big, o0);
    t->c[n++] = c_push("room-abc", t->long_key, sizeof(t->long_key),
                       RELAY_ACT_COMPACT, UINT64_MAX, &t->v[V_UINT_MAX], omax);
    t->c[n++] =
        c_push("r", K("\0"), RELAY_ACT_COMPACT, 0, &t->v[V_INT_MIN], o0);
    t->c[n++] = c_push("r", K("x"), RELAY_ACT_APPEND, 0, &t->v[V_DOUBLE], o0);
    t->c[n++] = c_push("r", K("x"), RELAY_ACT_APPEND, 0, &t->v[V_TRUE], o0);
    t->c[n++] = c_push("r", K("x"), RELAY_ACT_APPEND, 0, &t->v[V_NIL], o0);
    t->c[n++] =
        c_push("r", K("x"), RELAY_ACT_APPEND, 0, &t->v[V_EMPTY_MAP], o0);
    t->c[n++] = c_push("r", K("x"), RELAY_ACT_APPEND, 0, &t->v[V_BIN0], o0);
    t->c[n++] = c_push("r", K("x"), RELAY_ACT_REPLACE, 0, &t->v[V_BIN300], o0);
    t->c[n++] = c_push("r", K("x"), RELAY_ACT_RELAY, 0, &t->v[V_DEEP16], o0);
    t->c[n++] = c_room(RELAY_CMD_DELETE_ROOM, "room-abc", o0);
    t->c[n++] = c_noop();
    t->c[n++] = c_node(RELAY_CMD_NODE_SET, 3, "10.0.0.3:9000", "10.0.0.3:8080",
                       (struct relay_origin){5, 1, 1});
    t->c[n++] =
        c_node(RELAY_CMD_NODE_SET, UINT32_MAX, t->long_addr, t->long_addr, o0);
    t->c[n++] = c_node(RELAY_CMD_NODE_FORGET, 3, NULL, NULL, o0);
    t->n = n;
}

static void table_free(struct table *t)
{
    free_values(t->v);
    val_free(&t->big);
}

/* A small batch with one command of each type, for the hostile cases. */
static size_t small_table(struct val *v, struct relay_cmd *c)
{
    size_t n = 0;

    c[n++] =
        c_room(RELAY_CMD_CREATE_ROOM, "room-1", (struct relay_origin){1, 2, 3});
    c[n++] = c_push("room-1", K("key"), RELAY_ACT_APPEND, 0, &v[V_NESTED],
                    (struct relay_origin){1, 2, 4});
    c[n++] = c_push("room-1", K(""), RELAY_ACT_COMPACT, 1, &v[V_INT],
                    (struct relay_origin){0, 0, 0});
    c[n++] = c_push("room-1", K("k\0"), RELAY_ACT_RELAY, 0, &v[V_STR],
                    (struct relay_origin){0, 0, 0});
    c[n++] = c_noop();
    c[n++] = c_node(RELAY_CMD_NODE_SET, 2, "h:1", "h:2",
                    (struct relay_origin){0, 0, 0});
    c[n++] = c_node(RELAY_CMD_NODE_FORGET, 2, NULL, NULL,
                    (struct relay_origin){0, 0, 0});
    c[n++] =
        c_room(RELAY_CMD_DELETE_ROOM, "room-1", (struct relay_origin){0, 0, 0});
    return n;
}

/* ==== tests ================================================================
 */

static void test_roundtrip_every_type(void **state)
{
    struct table *t = malloc(sizeof(*t));
    struct relay_batch_enc *b = mkenc();
    struct blob out;
    const uint64_t now = 1700000000123ull;

    (void)state;
    assert_non_null(t);
    table_build(t);
    assert_int_equal(relay_batch_count(b), 0);
    ADD_ALL(b, t->c, t->n);
    assert_int_equal(relay_batch_count(b), t->n);
    /* the big value alone is 200000 bytes */
    assert_true(relay_batch_bytes(b) >= 200000);
    out = FINISH(b, now);
    assert_true(out.n >= 200000);
    EXPECT_DECODED(out, t->c, t->n, now);
    free(out.p);
    relay_batch_enc_destroy(b);
    table_free(t);
    free(t);
}

static void test_one_command_each(void **state)
{
    struct table *t = malloc(sizeof(*t));
    struct relay_batch_enc *b = mkenc();

    (void)state;
    assert_non_null(t);
    table_build(t);
    for (size_t i = 0; i < t->n; i++) {
        struct blob out;

        ADD_ALL(b, &t->c[i], 1);
        out = FINISH(b, i);
        EXPECT_DECODED(out, &t->c[i], 1, i);
        free(out.p);
    }
    relay_batch_enc_destroy(b);
    table_free(t);
    free(t);
}

static void test_timestamps(void **state)
{
    const uint64_t stamps[] = {0,
                               1,
                               127,
                               128,
                               65535,
                               4294967295ull,
                               4294967296ull,
                               UINT64_MAX - 1,
                               UINT64_MAX};
    struct relay_batch_enc *b = mkenc();
    struct relay_cmd c = c_noop();

    (void)state;
    for (size_t i = 0; i < sizeof(stamps) / sizeof(stamps[0]); i++) {
        struct blob out;

        ADD_ALL(b, &c, 1);
        ADD_ALL(b, &c, 1);
        out = FINISH(b, stamps[i]);
        {
            const struct relay_cmd two[2] = {c, c};

            EXPECT_DECODED(out, two, 2, stamps[i]);
        }
        free(out.p);
    }
    relay_batch_enc_destroy(b);
}

/* An empty batch encodes (the leader's commit carriers are empty batches)
 * and decodes to no commands. */
static void test_empty_batch(void **state)
{
    struct relay_batch_enc *b = mkenc();
    uint8_t *out = NULL;
    size_t len = 0;
    struct blob bl;

    (void)state;
    assert_int_equal(relay_batch_finish(b, 99, counting_alloc, &out, &len),
                     RELAY_OK);
    assert_non_null(out);
    assert_int_equal(len % 8, 0);
    bl = (struct blob){out, len};
    EXPECT_DECODED(bl, NULL, 0, 99);
    free(out);
    /* no bytes at all is never a batch */
    EXPECT_REFUSED(NULL, 0, "zero bytes");
    relay_batch_enc_destroy(b);
}

/* relay_batch_add copies: the caller's buffers may go right after. */
static void test_encoder_copies(void **state)
{
    struct relay_batch_enc *b = mkenc();
    struct val v;
    char *room = strdup("room-copy");
    char *key = strdup("key-copy");
    char *raft = strdup("raft:1");
    char *http = strdup("http:1");
    uint8_t *value;
    struct relay_cmd c;
    struct relay_cmd want[2];
    struct val wv;
    struct blob out;

    (void)state;
    assert_non_null(room);
    assert_non_null(key);
    assert_non_null(raft);
    assert_non_null(http);
    val_bin(&v, 1000, 0x11);
    value = malloc(v.sb.size);
    assert_non_null(value);
    memcpy(value, v.sb.data, v.sb.size);
    c = c_push(room, key, strlen(key), RELAY_ACT_APPEND, 0, &v,
               (struct relay_origin){9, 9, 9});
    c.value = value;
    ADD_ALL(b, &c, 1);
    c = c_node(RELAY_CMD_NODE_SET, 4, raft, http,
               (struct relay_origin){0, 0, 0});
    ADD_ALL(b, &c, 1);
    /* scribble over and release everything the commands pointed to */
    memset(room, 'X', strlen(room));
    memset(key, 'Y', strlen(key));
    memset(raft, 'Z', strlen(raft));
    memset(http, 'W', strlen(http));
    memset(value, 0xc1, v.sb.size);
    free(room);
    free(key);
    free(raft);
    free(http);
    free(value);

    val_bin(&wv, 1000, 0x11);
    want[0] = c_push("room-copy", K("key-copy"), RELAY_ACT_APPEND, 0, &wv,
                     (struct relay_origin){9, 9, 9});
    want[1] = c_node(RELAY_CMD_NODE_SET, 4, "raft:1", "http:1",
                     (struct relay_origin){0, 0, 0});
    out = FINISH(b, 5);
    EXPECT_DECODED(out, want, 2, 5);
    free(out.p);
    val_free(&v);
    val_free(&wv);
    relay_batch_enc_destroy(b);
}

/* The encoder is reusable after finish and after reset. */
static void test_reuse(void **state)
{
    struct val v[V_COUNT];
    struct relay_cmd c[16];
    size_t n;
    struct relay_batch_enc *b = mkenc();
    size_t fresh_bytes = relay_batch_bytes(b);
    struct blob out;

    (void)state;
    make_values(v);
    n = small_table(v, c);
    ADD_ALL(b, c, 3);
    out = FINISH(b, 1);
    assert_int_equal(relay_batch_count(b), 0);
    assert_int_equal(relay_batch_bytes(b), fresh_bytes);
    EXPECT_DECODED(out, c, 3, 1);
    free(out.p);
    /* the next batch holds only what was added after finish */
    ADD_ALL(b, c + 3, n - 3);
    out = FINISH(b, 2);
    EXPECT_DECODED(out, c + 3, n - 3, 2);
    free(out.p);
    /* reset drops what was added */
    ADD_ALL(b, c, n);
    relay_batch_reset(b);
    assert_int_equal(relay_batch_count(b), 0);
    assert_int_equal(relay_batch_bytes(b), fresh_bytes);
    relay_batch_reset(b); /* twice is fine */
    ADD_ALL(b, c + 1, 1);
    out = FINISH(b, 3);
    EXPECT_DECODED(out, c + 1, 1, 3);
    free(out.p);
    /* many rounds on one encoder */
    for (int round = 0; round < 50; round++) {
        size_t k = 1 + (size_t)round % n;

        ADD_ALL(b, c, k);
        if (round % 7 == 3) {
            relay_batch_reset(b);
            continue;
        }
        out = FINISH(b, (uint64_t)round);
        EXPECT_DECODED(out, c, k, (uint64_t)round);
        free(out.p);
    }
    free_values(v);
    relay_batch_enc_destroy(b);
}

/* A callback's non-zero result stops the decode and is returned. */
static void test_cb_stops(void **state)
{
    struct val v[V_COUNT];
    struct relay_cmd c[16];
    size_t n;
    struct relay_batch_enc *b = mkenc();
    struct blob out;
    struct cap *cp = calloc(1, sizeof(*cp));
    const int rets[] = {42, -1, 1, RELAY_ENOMEM, 1000000};

    (void)state;
    assert_non_null(cp);
    make_values(v);
    n = small_table(v, c);
    ADD_ALL(b, c, n);
    out = FINISH(b, 77);
    for (size_t stop = 1; stop <= n; stop++) {
        int ret = rets[stop % (sizeof(rets) / sizeof(rets[0]))];
        int rc;

        cap_reset(cp);
        cp->stop_at = stop;
        cp->ret = ret;
        rc = decode_copy(out.p, out.n, cp);
        assert_int_equal(rc, ret);
        assert_int_equal(cp->n, stop);
        assert_null(cp->bad);
        for (size_t i = 0; i < stop; i++)
            assert_null(cmd_diff(&c[i], &cp->v[i].c));
    }
    cap_reset(cp);
    free(cp);
    free(out.p);
    free_values(v);
    relay_batch_enc_destroy(b);
}

/*
 * A prefix of a batch is refused with zero callbacks, except one that only
 * drops alignment padding (batch.c pads with up to 7 nil bytes for
 * raft_uv): that one must still decode every command intact.
 */
static void check_prefix_at(const struct blob *full, size_t len,
                            const struct relay_cmd *cmds, size_t n,
                            uint64_t now, const char *file, int line)
{
    struct cap *c = calloc(1, sizeof(*c));
    int rc;
    bool pad_only = full->n - len <= 7;

    assert_non_null(c);
    for (size_t i = len; pad_only && i < full->n; i++)
        pad_only = full->p[i] == 0xc0;
    rc = decode_copy(full->p, len, c);
    if (rc == RELAY_OK && pad_only) {
        cap_reset(c);
        free(c);
        expect_decoded_at(full, cmds, n, now, file, line);
        return;
    }
    if (rc != RELAY_EINVAL || c->n != 0) {
        print_error("prefix %zu/%zu: rc %d with %zu callbacks, want "
                    "RELAY_EINVAL and none\n",
                    len, full->n, rc, c->n);
        _fail(file, line);
    }
    cap_reset(c);
    free(c);
}
#define CHECK_PREFIX(full, len, cmds, n, now)                                  \
    check_prefix_at(&(full), (len), (cmds), (n), (now), __FILE__, __LINE__)

/* Every proper prefix (beyond padding) is malformed, zero callbacks. */
static void test_truncated(void **state)
{
    struct table *t = malloc(sizeof(*t));
    struct val v[V_COUNT];
    struct relay_cmd c[16];
    size_t n;
    struct relay_batch_enc *b = mkenc();
    struct blob out;

    (void)state;
    assert_non_null(t);
    make_values(v);
    n = small_table(v, c);
    ADD_ALL(b, c, n);
    out = FINISH(b, 123456789);
    for (size_t len = 0; len < out.n; len++)
        CHECK_PREFIX(out, len, c, n, 123456789);
    /* trailing bytes other than padding are malformed, and so is padding
     * of 8 bytes or more */
    {
        uint8_t *x = malloc(out.n + 8);

        assert_non_null(x);
        memcpy(x, out.p, out.n);
        x[out.n] = 0x00;
        EXPECT_REFUSED(x, out.n + 1, "trailing zero byte");
        x[out.n] = 0x01;
        EXPECT_REFUSED(x, out.n + 1, "trailing fixint");
        memset(x + out.n, 0xc0, 8);
        EXPECT_REFUSED(x, out.n + 8, "8 trailing nils");
        free(x);
    }
    EXPECT_DECODED(out, c, n, 123456789);
    free(out.p);

    /* the big table, prefixes up to and around the big value */
    table_build(t);
    ADD_ALL(b, t->c, t->n);
    out = FINISH(b, 1);
    for (size_t len = 0; len < out.n; len += len < 4096 ? 1 : 997)
        CHECK_PREFIX(out, len, t->c, t->n, 1);
    for (size_t len = out.n > 4096 ? out.n - 4096 : 0; len < out.n; len++)
        CHECK_PREFIX(out, len, t->c, t->n, 1);
    free(out.p);
    table_free(t);
    free(t);
    free_values(v);
    relay_batch_enc_destroy(b);
}

/*
 * Builds a valid batch around a placeholder bin value of exactly
 * hostile_len bytes, then swaps the hostile bytes in. The placeholder is a
 * byte pattern that cannot occur elsewhere in the batch.
 */
static struct blob batch_with_value(const uint8_t *hostile, size_t hostile_len,
                                    bool *patched)
{
    struct val v[V_COUNT];
    struct relay_cmd c[16];
    size_t n;
    struct relay_batch_enc *b = mkenc();
    struct val ph;
    size_t payload;
    struct blob out;
    uint8_t *hit;

    assert_true(hostile_len > 300 && hostile_len < 65000);
    make_values(v);
    n = small_table(v, c);
    payload = hostile_len - 3; /* bin16 header */
    {
        msgpack_packer *pk = val_begin(&ph);
        uint8_t *body = malloc(payload);

        assert_non_null(body);
        for (size_t i = 0; i < payload; i++)
            body[i] = (uint8_t)(0xa5 ^ (i * 7));
        msgpack_pack_bin(pk, payload);
        msgpack_pack_bin_body(pk, body, payload);
        free(body);
    }
    assert_int_equal(ph.sb.size, hostile_len);
    c[n++] = c_push("room-1", K("hostile"), RELAY_ACT_APPEND, 0, &ph,
                    (struct relay_origin){0, 0, 0});
    c[n++] = c_push("room-1", K("after"), RELAY_ACT_APPEND, 0, &v[V_INT],
                    (struct relay_origin){0, 0, 0});
    ADD_ALL(b, c, n);
    out = FINISH(b, 1);
    hit = (uint8_t *)find_bytes(out.p, out.n, vp(&ph), ph.sb.size);
    *patched = hit != NULL;
    if (hit != NULL)
        memcpy(hit, hostile, hostile_len);
    val_free(&ph);
    free_values(v);
    relay_batch_enc_destroy(b);
    return out;
}

static void expect_hostile_refused_at(const uint8_t *p, size_t n,
                                      const char *what, const char *file,
                                      int line)
{
    bool patched;
    struct blob out = batch_with_value(p, n, &patched);

    if (!patched) {
        print_error("%s: the placeholder value is not in the batch bytes\n",
                    what);
        _fail(file, line);
    }
    expect_refused_at(out.p, out.n, what, file, line);
    free(out.p);
}
#define EXPECT_HOSTILE_REFUSED(p, n, what)                                     \
    expect_hostile_refused_at((p), (n), (what), __FILE__, __LINE__)

/* Values nested past RELAY_MAX_DEPTH are malformed; a bomb never crashes. */
static void test_deep_values(void **state)
{
    struct val deep;
    uint8_t bytes[1001];

    (void)state;
    /* 1000 arrays: 1000 x 0x91 then nil, 1001 bytes */
    memset(bytes, 0x91, 1000);
    bytes[1000] = 0xc0;
    EXPECT_HOSTILE_REFUSED(bytes, 1001, "1000 nested arrays");
    /* 1000 maps {"a": ...}: 0x81 0xa1 'a' x 1000 then 1 */
    {
        uint8_t *m = malloc(3001);

        assert_non_null(m);
        for (size_t i = 0; i < 1000; i++) {
            m[3 * i] = 0x81;
            m[3 * i + 1] = 0xa1;
            m[3 * i + 2] = 'a';
        }
        m[3000] = 0x01;
        EXPECT_HOSTILE_REFUSED(m, 3001, "1000 nested maps");
        free(m);
    }
    /* 40 arrays then padding inside the innermost: still too deep */
    {
        uint8_t m[400];

        /* 39 fixarrays, then an array16 of 358 nils: 40 levels, 400 bytes
         * (msgpack-c's own unpacker stops at 32 levels, so no sanity
         * check through it here) */
        memset(m, 0x91, 39);
        m[39] = 0xdc;
        m[40] = 0x01;
        m[41] = 0x66;
        memset(m + 42, 0xc0, 400 - 42);
        EXPECT_HOSTILE_REFUSED(m, sizeof(m), "40 nested arrays");
    }
    /* 16 levels is fine (the same construction, so the harness is sound) */
    {
        uint8_t m[400];
        bool patched;
        struct blob out;
        struct cap *cp = calloc(1, sizeof(*cp));

        assert_non_null(cp);
        memset(m, 0x91, 15);
        m[15] = 0xdc; /* array16 of 382 nils: 16 levels */
        m[16] = 0x01;
        m[17] = 0x7e;
        memset(m + 18, 0xc0, 400 - 18);
        assert_true(is_one_value(m, sizeof(m)));
        out = batch_with_value(m, sizeof(m), &patched);
        assert_true(patched);
        assert_int_equal(decode_copy(out.p, out.n, cp), RELAY_OK);
        assert_null(cp->bad);
        assert_int_equal(cp->n, 10);
        assert_true(
            same_bytes(cp->v[8].value, cp->v[8].c.value_len, m, sizeof(m)));
        cap_reset(cp);
        free(cp);
        free(out.p);
    }
    /* straight through the encoder: add may refuse; if it takes the value,
     * the batch must not decode */
    {
        const size_t depths[] = {33, 40, 1000, 100000};

        for (size_t i = 0; i < sizeof(depths) / sizeof(depths[0]); i++) {
            struct relay_batch_enc *b = mkenc();
            struct relay_cmd c;
            int rc;

            val_deep_array(&deep, depths[i]);
            c = c_push("r", K("k"), RELAY_ACT_APPEND, 0, &deep,
                       (struct relay_origin){0, 0, 0});
            rc = relay_batch_add(b, &c);
            if (rc == RELAY_OK) {
                struct blob out = FINISH(b, 1);
                char what[64];

                snprintf(what, sizeof(what), "%zu nested arrays via add",
                         depths[i]);
                EXPECT_REFUSED(out.p, out.n, what);
                free(out.p);
            } else {
                assert_true(rc == RELAY_EINVAL || rc == RELAY_EDEPTH);
                assert_int_equal(relay_batch_count(b), 0);
            }
            val_free(&deep);
            val_deep_map(&deep, depths[i] > 1000 ? 1000 : depths[i]);
            c.value = vp(&deep);
            c.value_len = deep.sb.size;
            rc = relay_batch_add(b, &c);
            if (rc == RELAY_OK) {
                struct blob out = FINISH(b, 1);

                EXPECT_REFUSED(out.p, out.n, "nested maps via add");
                free(out.p);
            }
            val_free(&deep);
            relay_batch_enc_destroy(b);
        }
    }
}

/*
 * A value at depth d, mixing arrays and maps: level i is [x] for even i and
 * {"k": x} for odd i.
 */
static void val_deep_mixed(struct val *v, size_t d)
{
    msgpack_packer *pk = val_begin(v);

    for (size_t i = 0; i < d; i++) {
        if (i % 2 == 0) {
            msgpack_pack_array(pk, 1);
        } else {
            msgpack_pack_map(pk, 1);
            msgpack_pack_str(pk, 1);
            msgpack_pack_str_body(pk, "k", 1);
        }
    }
    msgpack_pack_int(pk, 7);
}

static int batch_of_value(const struct val *v, struct blob *out)
{
    struct relay_batch_enc *b = mkenc();
    struct relay_cmd c = c_push("r", K("k"), RELAY_ACT_APPEND, 0, v,
                                (struct relay_origin){0, 0, 0});
    struct cap *cp = calloc(1, sizeof(*cp));
    int rc = relay_batch_add(b, &c);

    assert_non_null(cp);
    if (rc == RELAY_OK) {
        *out = FINISH(b, 1);
        rc = decode_copy(out->p, out->n, cp);
        if (rc == RELAY_OK)
            assert_int_equal(cp->n, 1);
        else
            assert_int_equal(cp->n, 0);
        free(out->p);
    }
    cap_reset(cp);
    free(cp);
    relay_batch_enc_destroy(b);
    return rc;
}

/*
 * RELAY_MAX_DEPTH levels are a value, one more is not; and whatever the
 * client codec accepts, a batch carries (else one client's value would make
 * a whole raft entry undecodable on every node).
 */
static void test_depth_limit_agrees_with_codec(void **state)
{
    (void)state;
    for (size_t d = 1; d <= RELAY_MAX_DEPTH + 8; d++) {
        struct val v;
        struct blob out;
        struct relay_msg m;
        char err[256];
        msgpack_sbuffer sb;
        msgpack_packer pk;
        int brc, crc;

        val_deep_mixed(&v, d);
        brc = batch_of_value(&v, &out);
        if (d <= RELAY_MAX_DEPTH && brc != RELAY_OK)
            fail_msg("depth %zu: batch rc %d, want RELAY_OK", d, brc);
        if (d > RELAY_MAX_DEPTH && brc == RELAY_OK)
            fail_msg("depth %zu: batch accepted, RELAY_MAX_DEPTH is %d", d,
                     RELAY_MAX_DEPTH);
        /* {"type":"push","key":"k","value":v,"action":{"type":"append"}} */
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 4);
        msgpack_pack_str(&pk, 4);
        msgpack_pack_str_body(&pk, "type", 4);
        msgpack_pack_str(&pk, 4);
        msgpack_pack_str_body(&pk, "push", 4);
        msgpack_pack_str(&pk, 3);
        msgpack_pack_str_body(&pk, "key", 3);
        msgpack_pack_str(&pk, 1);
        msgpack_pack_str_body(&pk, "k", 1);
        msgpack_pack_str(&pk, 5);
        msgpack_pack_str_body(&pk, "value", 5);
        msgpack_sbuffer_write(&sb, v.sb.data, v.sb.size);
        msgpack_pack_str(&pk, 6);
        msgpack_pack_str_body(&pk, "action", 6);
        msgpack_pack_map(&pk, 1);
        msgpack_pack_str(&pk, 4);
        msgpack_pack_str_body(&pk, "type", 4);
        msgpack_pack_str(&pk, 6);
        msgpack_pack_str_body(&pk, "append", 6);
        crc = relay_msg_decode(RELAY_FMT_MSGPACK, (const uint8_t *)sb.data,
                               sb.size, 0, &m, err, sizeof(err));
        if (crc == RELAY_OK) {
            struct val canon;

            /* the codec's canonical bytes must go through a batch too */
            msgpack_sbuffer_init(&canon.sb);
            msgpack_sbuffer_write(&canon.sb, (const char *)m.value,
                                  m.value_len);
            brc = batch_of_value(&canon, &out);
            if (brc != RELAY_OK)
                fail_msg("depth %zu: the codec accepts the value, a batch "
                         "refuses it (rc %d)",
                         d, brc);
            val_free(&canon);
        }
        relay_msg_free(&m);
        msgpack_sbuffer_destroy(&sb);
        val_free(&v);
    }
}

/* Value bytes that are not exactly one msgpack value. */
static void test_malformed_values(void **state)
{
    uint8_t m[500];

    (void)state;
    /* a reserved byte */
    memset(m, 0xc0, sizeof(m));
    m[0] = 0xc1;
    EXPECT_HOSTILE_REFUSED(m, sizeof(m), "reserved byte 0xc1");
    /* many values where one is expected */
    memset(m, 0x01, sizeof(m));
    EXPECT_HOSTILE_REFUSED(m, sizeof(m), "500 values");
    /* a value that claims more than it has */
    memset(m, 0xc0, sizeof(m));
    m[0] = 0xdc; /* array16 of 65535 */
    m[1] = 0xff;
    m[2] = 0xff;
    EXPECT_HOSTILE_REFUSED(m, sizeof(m), "array longer than its bytes");
    m[0] = 0xc6; /* bin32 of 4 GiB */
    m[1] = m[2] = m[3] = m[4] = 0xff;
    EXPECT_HOSTILE_REFUSED(m, sizeof(m), "bin32 longer than its bytes");
    m[0] = 0xdf; /* map32 of 2^32-1 pairs */
    EXPECT_HOSTILE_REFUSED(m, sizeof(m), "map32 longer than its bytes");
    /* a string header cut short */
    memset(m, 0x61, sizeof(m));
    m[0] = 0xda; /* str16 of 600 bytes, 497 present */
    m[1] = 0x02;
    m[2] = 0x58;
    EXPECT_HOSTILE_REFUSED(m, sizeof(m), "str16 longer than its bytes");
}

/* The largest value the default limits allow goes through intact. */
static void test_big_value(void **state)
{
    struct relay_batch_enc *b = mkenc();
    struct val big;
    struct relay_cmd c;
    struct blob out;

    (void)state;
    val_bin(&big, 1024 * 1024 - 5, 0xee); /* 1 MiB with its header */
    assert_int_equal(big.sb.size, 1024 * 1024);
    c = c_push("r", K("k"), RELAY_ACT_REPLACE, 0, &big,
               (struct relay_origin){3, 3, 3});
    ADD_ALL(b, &c, 1);
    ADD_ALL(b, &c, 1);
    assert_true(relay_batch_bytes(b) >= 2 * 1024 * 1024);
    out = FINISH(b, 8);
    {
        const struct relay_cmd two[2] = {c, c};

        EXPECT_DECODED(out, two, 2, 8);
    }
    free(out.p);
    val_free(&big);
    relay_batch_enc_destroy(b);
}

/*
 * Mutated batches: refused with zero callbacks, or decoded into sane
 * commands (pointers inside the bytes, types in range, values well formed)
 * that a relay state applies without failing.
 */
static void test_fuzz_mutations(void **state)
{
    struct val v[V_COUNT];
    struct relay_cmd c[16];
    size_t n;
    struct relay_batch_enc *b = mkenc();
    struct blob seeds[3];
    struct cap *cp = calloc(1, sizeof(*cp));
    struct relay_state *s = NULL;
    uint64_t rng = 1;
    int ok = 0, refused = 0;
    uint8_t *buf;
    size_t cap = 0;

    (void)state;
    assert_non_null(cp);
    assert_int_equal(relay_state_create(NULL, &s), RELAY_OK);
    make_values(v);
    n = small_table(v, c);
    ADD_ALL(b, c, n);
    seeds[0] = FINISH(b, 1000);
    ADD_ALL(b, c + 1, 1);
    seeds[1] = FINISH(b, 0);
    ADD_ALL(b, c, 2);
    ADD_ALL(b, c + 5, 2);
    seeds[2] = FINISH(b, UINT64_MAX);
    for (int i = 0; i < 3; i++)
        cap = seeds[i].n > cap ? seeds[i].n : cap;
    buf = malloc(cap + 16);
    assert_non_null(buf);
    for (int it = 0; it < 5000; it++) {
        const struct blob *sd = &seeds[it % 3];
        size_t len = sd->n;
        int edits = 1 + (int)(xorshift(&rng) % 4);
        int rc;

        memcpy(buf, sd->p, sd->n);
        for (int e = 0; e < edits && len > 0; e++) {
            size_t at = (size_t)(xorshift(&rng) % len);

            switch (xorshift(&rng) % 6) {
            case 0:
                buf[at] = (uint8_t)xorshift(&rng);
                break;
            case 1:
                buf[at] ^= (uint8_t)(1u << (xorshift(&rng) % 8));
                break;
            case 2:
                buf[at] = (uint8_t)(buf[at] + 1);
                break;
            case 3:
                buf[at] = (uint8_t)(buf[at] - 1);
                break;
            case 4: /* delete a byte */
                memmove(buf + at, buf + at + 1, len - at - 1);
                len--;
                break;
            default: /* insert a byte */
                if (len < cap + 16) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = (uint8_t)xorshift(&rng);
                    len++;
                }
                break;
            }
        }
        cap_reset(cp);
        cp->apply_to = s;
        rc = decode_copy(buf, len, cp);
        if (rc == RELAY_EINVAL) {
            refused++;
            if (cp->n != 0)
                fail_msg("iteration %d: refused after %zu callbacks", it,
                         cp->n);
        } else if (rc == RELAY_OK) {
            ok++;
            if (cp->bad != NULL)
                fail_msg("iteration %d: %s", it, cp->bad);
        } else {
            fail_msg("iteration %d: rc %d", it, rc);
        }
    }
    print_message("batch fuzz: %d decoded, %d refused\n", ok, refused);
    assert_true(refused > 0);
    cap_reset(cp);
    free(cp);
    free(buf);
    for (int i = 0; i < 3; i++)
        free(seeds[i].p);
    free_values(v);
    relay_state_destroy(s);
    relay_batch_enc_destroy(b);
}

static void test_fuzz_garbage(void **state)
{
    struct cap *cp = calloc(1, sizeof(*cp));
    struct relay_state *s = NULL;
    uint8_t buf[300];
    int ok = 0;

    (void)state;
    assert_non_null(cp);
    assert_int_equal(relay_state_create(NULL, &s), RELAY_OK);
    srand(1);
    for (int it = 0; it < 5000; it++) {
        size_t len = (size_t)rand() % sizeof(buf);
        int rc;

        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rand();
        /* look a little like msgpack containers now and then */
        if (len > 0 && it % 3 == 0)
            buf[0] = (uint8_t)(0x90 | (rand() % 16));
        if (len > 1 && it % 6 == 0)
            buf[1] = (uint8_t)(0xcf - rand() % 4);
        if (len > 4 && it % 9 == 0) {
            buf[0] = 0xdd; /* array32 of 2^32-1 */
            memset(buf + 1, 0xff, 4);
        }
        cap_reset(cp);
        cp->apply_to = s;
        rc = decode_copy(buf, len, cp);
        if (rc == RELAY_EINVAL) {
            if (cp->n != 0)
                fail_msg("iteration %d: refused after %zu callbacks", it,
                         cp->n);
        } else if (rc == RELAY_OK) {
            ok++;
            if (cp->bad != NULL)
                fail_msg("iteration %d: %s", it, cp->bad);
        } else {
            fail_msg("iteration %d: rc %d", it, rc);
        }
    }
    print_message("garbage: %d decoded\n", ok);
    cap_reset(cp);
    free(cp);
    relay_state_destroy(s);
}

/* ---- batches feed the state machine exactly like direct applies ---------- */

static const char *const rooms[] = {"room-a", "room-b", "room-c"};
static const struct {
    const char *p;
    size_t n;
} keys[] = {{K("")}, {K("a")}, {K("a\0")}, {K("\xf0\x9f\x94\x91")}};

struct gen_out {
    struct relay_cmd c;
    struct val v;
    bool has_v;
    char raft[32];
};

static void gen_cmd(uint64_t *rng, struct gen_out *g, uint64_t *ctr)
{
    uint64_t r = xorshift(rng) % 100;
    const char *room = rooms[xorshift(rng) % 3];

    g->has_v = false;
    if (r < 6) {
        g->c =
            c_room(RELAY_CMD_CREATE_ROOM, room, (struct relay_origin){0, 0, 0});
    } else if (r < 8) {
        g->c =
            c_room(RELAY_CMD_DELETE_ROOM, room, (struct relay_origin){0, 0, 0});
    } else if (r < 11) {
        uint32_t id = 1 + (uint32_t)(xorshift(rng) % 4);

        snprintf(g->raft, sizeof(g->raft), "10.1.1.%u:%u", id,
                 (unsigned)(xorshift(rng) % 1000));
        g->c = c_node(RELAY_CMD_NODE_SET, id, g->raft, g->raft,
                      (struct relay_origin){0, 0, 0});
    } else if (r < 13) {
        g->c = c_node(RELAY_CMD_NODE_FORGET, 1 + (uint32_t)(xorshift(rng) % 4),
                      NULL, NULL, (struct relay_origin){0, 0, 0});
    } else if (r < 14) {
        g->c = c_noop();
    } else {
        uint64_t k = xorshift(rng) % 4;
        enum relay_action a = (enum relay_action)(xorshift(rng) % 4);

        msgpack_pack_int64(val_begin(&g->v),
                           (int64_t)(xorshift(rng) % 1000) - 500);
        g->has_v = true;
        g->c = c_push(room, keys[k].p, keys[k].n, a,
                      a == RELAY_ACT_COMPACT ? 1 + xorshift(rng) % 30 : 0,
                      &g->v, (struct relay_origin){0, 0, 0});
    }
    if (xorshift(rng) % 2 && g->c.type != RELAY_CMD_NOOP) {
        uint64_t sess = 1 + xorshift(rng) % 3;

        if (xorshift(rng) % 8 != 0)
            ctr[sess]++;
        g->c.origin = (struct relay_origin){7, sess, ctr[sess]};
    }
}

static void test_batches_apply_like_direct(void **state)
{
    struct relay_state *direct = NULL, *viabatch = NULL;
    struct relay_batch_enc *b = mkenc();
    struct cap *cp = calloc(1, sizeof(*cp));
    struct gen_out *pend = calloc(64, sizeof(*pend));
    uint64_t rng = 99, ctr[4] = {0}, now = 5000;
    uint8_t *sa, *sb;
    size_t la, lb;

    (void)state;
    assert_non_null(cp);
    assert_non_null(pend);
    assert_int_equal(relay_state_create(NULL, &direct), RELAY_OK);
    assert_int_equal(relay_state_create(NULL, &viabatch), RELAY_OK);
    for (int round = 0; round < 300; round++) {
        size_t k = 1 + (size_t)(xorshift(&rng) % 20);
        struct blob out;

        now += xorshift(&rng) % 2000;
        for (size_t i = 0; i < k; i++) {
            struct relay_effects e;

            gen_cmd(&rng, &pend[i], ctr);
            assert_int_equal(relay_state_apply(direct, &pend[i].c, now, &e),
                             RELAY_OK);
            ADD_ALL(b, &pend[i].c, 1);
        }
        out = FINISH(b, now);
        cap_reset(cp);
        cp->apply_to = viabatch;
        assert_int_equal(decode_copy(out.p, out.n, cp), RELAY_OK);
        assert_int_equal(cp->n, k);
        assert_null(cp->bad);
        for (size_t i = 0; i < k; i++) {
            assert_null(cmd_diff(&pend[i].c, &cp->v[i].c));
            if (pend[i].has_v)
                val_free(&pend[i].v);
        }
        free(out.p);
    }
    assert_int_equal(relay_state_snapshot(direct, &sa, &la), RELAY_OK);
    assert_int_equal(relay_state_snapshot(viabatch, &sb, &lb), RELAY_OK);
    assert_true(same_bytes(sa, la, sb, lb));
    assert_true(relay_state_room_count(direct) > 0);
    free(sa);
    free(sb);
    cap_reset(cp);
    free(cp);
    free(pend);
    relay_state_destroy(direct);
    relay_state_destroy(viabatch);
    relay_batch_enc_destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_type),
        cmocka_unit_test(test_one_command_each),
        cmocka_unit_test(test_timestamps),
        cmocka_unit_test(test_empty_batch),
        cmocka_unit_test(test_encoder_copies),
        cmocka_unit_test(test_reuse),
        cmocka_unit_test(test_cb_stops),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_deep_values),
        cmocka_unit_test(test_depth_limit_agrees_with_codec),
        cmocka_unit_test(test_malformed_values),
        cmocka_unit_test(test_big_value),
        cmocka_unit_test(test_fuzz_mutations),
        cmocka_unit_test(test_fuzz_garbage),
        cmocka_unit_test(test_batches_apply_like_direct),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
