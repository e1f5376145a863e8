/*
 * test_relay_state.c - the relay state machine: relay_state_apply and the
 * read side (streams, keys, rooms, statistics, node directory), limits,
 * dedupe, and snapshots.
 *
 * Design: every case builds its own state, feeds commands with explicit
 * times and origins, and asserts exact effects and exact stream contents
 * (values are canonical msgpack made by msgpack-c). A seeded model test
 * drives random commands against a small reference model of rooms/streams/
 * seqs written from docs/protocol.md's action table. Snapshot cases check
 * snapshot -> restore -> snapshot byte identity, determinism across two
 * states fed one log, identical behaviour after a restore, and that every
 * truncated, flipped or random snapshot is refused without touching the
 * state (or, when a flip stays valid, yields a self-consistent state).
 *
 * Where the contract leaves a choice open the tests accept every reading:
 * how room bytes count a key (once per stream or once per entry), whether a
 * relay to a fresh key creates an (empty) stream, and compact with S = 0.
 *
 * Not covered here: batches (test_relay_batch.c), client codecs
 * (test_codec.c), allocation failure injection (no allocator hook).
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

#define NOSEQ UINT64_MAX

/* ---- small utilities ------------------------------------------------------
 */

static void vu64(struct vec *v, uint64_t x)
{
    vput(v, &x, sizeof(x));
}

static bool same_bytes(const void *a, size_t an, const void *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

/* ---- values ---------------------------------------------------------------
 */

struct mv {
    uint8_t b[512];
    size_t n;
};

static struct mv mv_take(msgpack_sbuffer *sb)
{
    struct mv m;

    assert_true(sb->size <= sizeof(m.b));
    memcpy(m.b, sb->data, sb->size);
    m.n = sb->size;
    msgpack_sbuffer_destroy(sb);
    return m;
}

/* msgpack-c writer into a struct mv: no allocation, for hot loops. */
static int mv_write(void *data, const char *buf, size_t len)
{
    struct mv *m = data;

    if (m->n + len > sizeof(m->b))
        return -1;
    memcpy(m->b + m->n, buf, len);
    m->n += len;
    return 0;
}

static struct mv mv_int(int64_t x)
{
    struct mv m;
    msgpack_packer pk;

    m.n = 0;
    msgpack_packer_init(&pk, &m, mv_write);
    if (msgpack_pack_int64(&pk, x) != 0)
        fail_msg("msgpack_pack_int64 failed");
    return m;
}

/* A bin value of `payload` bytes, each `fill`. */
static struct mv mv_bin(size_t payload, uint8_t fill)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    uint8_t body[500];

    assert_true(payload <= sizeof(body));
    memset(body, fill, payload);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(msgpack_pack_bin(&pk, payload), 0);
    assert_int_equal(msgpack_pack_bin_body(&pk, body, payload), 0);
    return mv_take(&sb);
}

/* {"n": x, "l": [true, nil, "s"], "f": 1.5} */
static struct mv mv_map(int64_t x)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "n", 1);
    msgpack_pack_int64(&pk, x);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "l", 1);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_true(&pk);
    msgpack_pack_nil(&pk);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "s", 1);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "f", 1);
    msgpack_pack_double(&pk, 1.5);
    return mv_take(&sb);
}

/*
 * A bin value of exactly `total` bytes, header included (malloc'd). Sizes
 * where the canonical header would change length are refused by the assert.
 */
static uint8_t *bin_total(size_t total, uint8_t fill)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t payload;
    uint8_t *body, *p;

    assert_true(total >= 2);
    if (total <= 257)
        payload = total - 2;
    else if (total <= 65538)
        payload = total - 3;
    else
        payload = total - 5;
    body = malloc(payload + 1);
    assert_non_null(body);
    memset(body, fill, payload);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_bin(&pk, payload);
    msgpack_pack_bin_body(&pk, body, payload);
    free(body);
    assert_int_equal(sb.size, total);
    p = malloc(total);
    assert_non_null(p);
    memcpy(p, sb.data, total);
    msgpack_sbuffer_destroy(&sb);
    return p;
}

/* ---- commands and effects -------------------------------------------------
 */

static struct relay_state *mkstate(const struct relay_limits *lim)
{
    struct relay_state *s = NULL;

    assert_int_equal(relay_state_create(lim, &s), RELAY_OK);
    assert_non_null(s);
    return s;
}

static struct relay_cmd cmd_room(enum relay_cmd_type t, const char *room,
                                 size_t room_len)
{
    struct relay_cmd c;

    memset(&c, 0, sizeof(c));
    c.type = t;
    c.room = room;
    c.room_len = room_len;
    return c;
}

static struct relay_cmd cmd_push(const char *room, const char *key, size_t klen,
                                 enum relay_action a, uint64_t cseq,
                                 const uint8_t *v, size_t vn)
{
    struct relay_cmd c;

    memset(&c, 0, sizeof(c));
    c.type = RELAY_CMD_PUSH;
    c.room = room;
    c.room_len = strlen(room);
    c.key = key;
    c.key_len = klen;
    c.action = a;
    c.compact_seq = cseq;
    c.value = v;
    c.value_len = vn;
    return c;
}

static struct relay_cmd cmd_node(enum relay_cmd_type t, uint32_t id,
                                 const char *raft, const char *http)
{
    struct relay_cmd c;

    memset(&c, 0, sizeof(c));
    c.type = t;
    c.node_id = id;
    c.raft_addr = raft;
    c.raft_addr_len = raft ? strlen(raft) : 0;
    c.http_addr = http;
    c.http_addr_len = http ? strlen(http) : 0;
    return c;
}

/*
 * Applies and requires RELAY_OK from the call itself. The effects struct is
 * pre-filled with junk so that fields the implementation leaves unset show.
 */
static struct relay_effects apply_at(struct relay_state *s,
                                     const struct relay_cmd *c, uint64_t now,
                                     const char *file, int line)
{
    struct relay_effects e;
    int rc;

    memset(&e, 0, sizeof(e));
    e.status = -1;
    e.broadcast = true;
    e.seq = 0xdead;
    e.has_stream_size = true;
    e.stream_size = 0xbeef;
    rc = relay_state_apply(s, c, now, &e);
    if (rc != RELAY_OK) {
        print_error("relay_state_apply returned %d (%s), want RELAY_OK\n", rc,
                    relay_strerror(rc));
        _fail(file, line);
    }
    return e;
}
#define APPLY(s, c, now) apply_at((s), (c), (now), __FILE__, __LINE__)

static struct relay_effects push_at(struct relay_state *s, const char *room,
                                    const char *key, size_t klen,
                                    enum relay_action a, uint64_t cseq,
                                    int64_t val, const char *file, int line)
{
    struct mv v = mv_int(val);
    struct relay_cmd c = cmd_push(room, key, klen, a, cseq, v.b, v.n);

    return apply_at(s, &c, 0, file, line);
}
/* PUSHN(s, room, key, key_len, action, compact_seq, int value) */
#define PUSHN(s, room, ...)                                                    \
    push_at((s), (room), __VA_ARGS__, __FILE__, __LINE__)
#define PUSH(s, room, key, a, cseq, val)                                       \
    push_at((s), (room), K(key), (a), (cseq), (val), __FILE__, __LINE__)
#define APPEND(s, room, key, val) PUSH(s, room, key, RELAY_ACT_APPEND, 0, val)
#define REPLACE(s, room, key, val) PUSH(s, room, key, RELAY_ACT_REPLACE, 0, val)
#define RELAY(s, room, key, val) PUSH(s, room, key, RELAY_ACT_RELAY, 0, val)
#define COMPACT(s, room, key, S, val)                                          \
    PUSH(s, room, key, RELAY_ACT_COMPACT, S, val)

static void check_eff_at(const struct relay_effects *e, int status, bool bcast,
                         uint64_t seq, uint64_t ss, const char *file, int line)
{
    bool has = ss > 1;
    bool ok = e->status == status && e->broadcast == bcast &&
              e->has_stream_size == has && (!has || e->stream_size == ss);

    if (status == RELAY_OK && seq != NOSEQ)
        ok = ok && e->seq == seq;
    if (!ok) {
        print_error("effects: status %d (%s) broadcast %d seq %" PRIu64
                    " has_stream_size %d stream_size %" PRIu64 "\n"
                    "   want: status %d (%s) broadcast %d seq %s%" PRIu64
                    " has_stream_size %d stream_size %" PRIu64 "\n",
                    e->status, relay_strerror(e->status), (int)e->broadcast,
                    e->seq, (int)e->has_stream_size, e->stream_size, status,
                    relay_strerror(status), (int)bcast,
                    seq == NOSEQ ? "(any) " : "", seq == NOSEQ ? 0 : seq,
                    (int)has, ss);
        _fail(file, line);
    }
}
/* A broadcast push given seq sq, leaving ss entries retained on its key. */
#define EXPECT_BCAST(e, sq, ss)                                                \
    do {                                                                       \
        struct relay_effects e_ = (e);                                         \
        check_eff_at(&e_, RELAY_OK, true, (sq), (ss), __FILE__, __LINE__);     \
    } while (0)
/* An accepted compact at S leaving ss entries. */
#define EXPECT_COMPACT(e, S, ss)                                               \
    do {                                                                       \
        struct relay_effects e_ = (e);                                         \
        check_eff_at(&e_, RELAY_OK, false, (S), (ss), __FILE__, __LINE__);     \
    } while (0)
/* A silent outcome: OK for create/delete/node, or a refusal. */
#define EXPECT_STATUS(e, st)                                                   \
    do {                                                                       \
        struct relay_effects e_ = (e);                                         \
        check_eff_at(&e_, (st), false, NOSEQ, 0, __FILE__, __LINE__);          \
    } while (0)

static void create_at(struct relay_state *s, const char *room, const char *file,
                      int line)
{
    struct relay_cmd c = cmd_room(RELAY_CMD_CREATE_ROOM, room, strlen(room));
    struct relay_effects e = apply_at(s, &c, 0, file, line);

    check_eff_at(&e, RELAY_OK, false, NOSEQ, 0, file, line);
}
#define CREATE(s, room) create_at((s), (room), __FILE__, __LINE__)

static struct relay_effects room_cmd_at(struct relay_state *s,
                                        enum relay_cmd_type t, const char *room,
                                        const char *file, int line)
{
    struct relay_cmd c = cmd_room(t, room, strlen(room));

    return apply_at(s, &c, 0, file, line);
}
#define ROOMCMD(s, t, room) room_cmd_at((s), (t), (room), __FILE__, __LINE__)

/* ---- stream expectations --------------------------------------------------
 */

struct ent {
    uint64_t seq;
    int64_t val;
};

static void check_stream_at(const struct relay_state *s, const char *room,
                            const char *key, size_t klen, uint64_t after,
                            const struct ent *want, size_t nwant,
                            const char *file, int line)
{
    const struct relay_entry *e = NULL;
    size_t n = 12345;
    int rc;
    bool ok;

    rc = relay_stream_read(s, room, strlen(room), key, klen, after, &e, &n);
    ok = rc == RELAY_OK && n == nwant;
    for (size_t i = 0; ok && i < n; i++) {
        struct mv v = mv_int(want[i].val);

        ok = e[i].seq == want[i].seq &&
             same_bytes(e[i].value, e[i].value_len, v.b, v.n);
    }
    if (!ok) {
        print_error(
            "stream %s/%.*s after %" PRIu64 ": rc %d, n %zu, want %zu\n", room,
            (int)klen, key, after, rc, rc == RELAY_OK ? n : 0, nwant);
        for (size_t i = 0; rc == RELAY_OK && i < n; i++)
            print_error("  got  [%zu] seq %" PRIu64
                        " value %zu bytes %02x%02x\n",
                        i, e[i].seq, e[i].value_len,
                        e[i].value_len > 0 ? e[i].value[0] : 0,
                        e[i].value_len > 1 ? e[i].value[1] : 0);
        for (size_t i = 0; i < nwant; i++)
            print_error("  want [%zu] seq %" PRIu64 " value %" PRId64 "\n", i,
                        want[i].seq, want[i].val);
        _fail(file, line);
    }
}
#define EXPECT_STREAM_AFTER(s, room, key, after, ...)                          \
    do {                                                                       \
        const struct ent w_[] = {__VA_ARGS__};                                 \
        check_stream_at((s), (room), K(key), (after), w_,                      \
                        sizeof(w_) / sizeof(w_[0]), __FILE__, __LINE__);       \
    } while (0)
#define EXPECT_STREAM(s, room, key, ...)                                       \
    EXPECT_STREAM_AFTER(s, room, key, 0, __VA_ARGS__)
#define EXPECT_EMPTY_AFTER(s, room, key, after)                                \
    check_stream_at((s), (room), K(key), (after), NULL, 0, __FILE__, __LINE__)
#define EXPECT_EMPTY(s, room, key) EXPECT_EMPTY_AFTER(s, room, key, 0)

static size_t stream_len(const struct relay_state *s, const char *room,
                         const char *key, size_t klen)
{
    const struct relay_entry *e;
    size_t n = 0;

    assert_int_equal(
        relay_stream_read(s, room, strlen(room), key, klen, 0, &e, &n),
        RELAY_OK);
    return n;
}

static uint64_t last_seq(const struct relay_state *s, const char *room)
{
    return relay_room_last_seq(s, room, strlen(room));
}

static struct relay_room_info info_of(const struct relay_state *s,
                                      const char *room)
{
    struct relay_room_info ri;

    memset(&ri, 0, sizeof(ri));
    assert_int_equal(relay_room_info(s, room, strlen(room), &ri), RELAY_OK);
    return ri;
}

/* ---- key and room listings ------------------------------------------------
 */

struct item {
    char *p;
    size_t n;
};

struct list {
    struct item *v;
    size_t n;
    size_t cap;
};

static void list_add(struct list *l, const char *p, size_t n)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->v = realloc(l->v, l->cap * sizeof(*l->v));
        assert_non_null(l->v);
    }
    l->v[l->n].p = malloc(n + 1);
    assert_non_null(l->v[l->n].p);
    if (n > 0)
        memcpy(l->v[l->n].p, p, n);
    l->v[l->n].p[n] = '\0';
    l->v[l->n].n = n;
    l->n++;
}

static void list_free(struct list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].p);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

static void on_key(void *arg, const char *key, size_t key_len)
{
    list_add(arg, key, key_len);
}

static struct list keys_of(const struct relay_state *s, const char *room)
{
    struct list l = {0};

    assert_int_equal(relay_room_keys(s, room, strlen(room), on_key, &l),
                     RELAY_OK);
    return l;
}

struct rooms {
    struct list ids;
    struct relay_room_info *ri; /* id fields point into ids */
    size_t cap;
    bool unterminated;
};

static void on_room(void *arg, const struct relay_room_info *ri)
{
    struct rooms *r = arg;

    if (ri->id == NULL || ri->id[ri->id_len] != '\0')
        r->unterminated = true;
    if (r->ids.n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 16;
        r->ri = realloc(r->ri, r->cap * sizeof(*r->ri));
        assert_non_null(r->ri);
    }
    r->ri[r->ids.n] = *ri;
    list_add(&r->ids, ri->id ? ri->id : "", ri->id ? ri->id_len : 0);
    r->ri[r->ids.n - 1].id = r->ids.v[r->ids.n - 1].p;
}

static void rooms_free(struct rooms *r)
{
    list_free(&r->ids);
    free(r->ri);
    memset(r, 0, sizeof(*r));
}

static struct rooms rooms_of(const struct relay_state *s)
{
    struct rooms r;

    memset(&r, 0, sizeof(r));
    relay_rooms_each(s, on_room, &r);
    assert_false(r.unterminated);
    return r;
}

struct nodes {
    size_t n;
    uint32_t id[64];
    char raft[64][RELAY_ADDR_MAX + 1];
    char http[64][RELAY_ADDR_MAX + 1];
};

static void on_node(void *arg, const struct relay_node_info *ni)
{
    struct nodes *ns = arg;

    if (ns->n >= 64)
        return;
    ns->id[ns->n] = ni->id;
    snprintf(ns->raft[ns->n], sizeof(ns->raft[0]), "%s", ni->raft_addr);
    snprintf(ns->http[ns->n], sizeof(ns->http[0]), "%s", ni->http_addr);
    ns->n++;
}

/* ---- snapshots ------------------------------------------------------------
 */

struct blob {
    uint8_t *p;
    size_t n;
};

static struct blob snap_at(const struct relay_state *s, const char *file,
                           int line)
{
    struct blob b = {NULL, 0};
    int rc = relay_state_snapshot(s, &b.p, &b.n);

    if (rc != RELAY_OK || b.p == NULL) {
        print_error("relay_state_snapshot: rc %d\n", rc);
        _fail(file, line);
    }
    return b;
}
#define SNAP(s) snap_at((s), __FILE__, __LINE__)

static void same_blob_at(const struct blob *a, const struct blob *b,
                         const char *what, const char *file, int line)
{
    if (!same_bytes(a->p, a->n, b->p, b->n)) {
        size_t i = 0;

        while (i < a->n && i < b->n && a->p[i] == b->p[i])
            i++;
        print_error("%s: snapshots differ: %zu vs %zu bytes, first "
                    "difference at offset %zu\n",
                    what, a->n, b->n, i);
        _fail(file, line);
    }
}
#define EXPECT_SAME_BLOB(a, b, what)                                           \
    same_blob_at(&(a), &(b), (what), __FILE__, __LINE__)

/* Restores from an exact-size heap copy so ASan sees any over-read. */
static int restore_copy(struct relay_state *s, const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    int rc;

    assert_non_null(c);
    if (n > 0)
        memcpy(c, p, n);
    rc = relay_state_restore(s, c, n);
    free(c);
    return rc;
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

/*
 * Dumps everything the read side shows into `out` while checking the
 * invariants every state must keep: rooms_each agrees with room_info,
 * room_exists and last_seq; ids and keys are distinct; streams are in
 * strictly increasing seq order with no seq above the room's last; values are
 * single msgpack objects; entry and
 * key counts add up; nodes come in strictly ascending id order and lookup
 * agrees.
 */
static void dump_at(const struct relay_state *s, struct vec *out,
                    const char *file, int line)
{
    struct rooms rs = rooms_of(s);
    struct nodes ns;
    const char *why = NULL;

    memset(&ns, 0, sizeof(ns));
    if (rs.ids.n != relay_state_room_count(s))
        why = "room_count differs from rooms_each";
    vu64(out, rs.ids.n);
    for (size_t i = 0; why == NULL && i < rs.ids.n; i++) {
        const struct relay_room_info *ri = &rs.ri[i];
        struct relay_room_info r2;
        struct list keys = {0};
        size_t entries = 0, nonempty = 0;

        memset(&r2, 0, sizeof(r2));
        vu64(out, ri->id_len);
        vput(out, ri->id, ri->id_len);
        vu64(out, ri->keys);
        vu64(out, ri->entries);
        vu64(out, ri->bytes);
        vu64(out, ri->last_seq);
        if (rs.ids.n <= 1000) {
            for (size_t j = 0; j < i; j++)
                if (same_bytes(rs.ri[j].id, rs.ri[j].id_len, ri->id,
                               ri->id_len))
                    why = "two rooms with one id";
        }
        if (!relay_room_exists(s, ri->id, ri->id_len))
            why = "listed room does not exist";
        if (relay_room_last_seq(s, ri->id, ri->id_len) != ri->last_seq)
            why = "last_seq differs from rooms_each";
        if (relay_room_info(s, ri->id, ri->id_len, &r2) != RELAY_OK ||
            r2.keys != ri->keys || r2.entries != ri->entries ||
            r2.bytes != ri->bytes || r2.last_seq != ri->last_seq ||
            !same_bytes(r2.id, r2.id_len, ri->id, ri->id_len))
            why = "room_info differs from rooms_each";
        if (relay_room_keys(s, ri->id, ri->id_len, on_key, &keys) != RELAY_OK)
            why = "room_keys failed";
        vu64(out, keys.n);
        for (size_t k = 0; why == NULL && k < keys.n; k++) {
            const struct relay_entry *e = NULL;
            size_t n = 0;

            if (keys.n <= 2000) {
                for (size_t j = 0; j < k; j++)
                    if (same_bytes(keys.v[j].p, keys.v[j].n, keys.v[k].p,
                                   keys.v[k].n))
                        why = "two streams with one key";
            }
            if (relay_stream_read(s, ri->id, ri->id_len, keys.v[k].p,
                                  keys.v[k].n, 0, &e, &n) != RELAY_OK) {
                why = "stream_read of a listed key failed";
                break;
            }
            vu64(out, keys.v[k].n);
            vput(out, keys.v[k].p, keys.v[k].n);
            vu64(out, n);
            entries += n;
            nonempty += n > 0;
            for (size_t j = 0; j < n; j++) {
                vu64(out, e[j].seq);
                vu64(out, e[j].value_len);
                vput(out, e[j].value, e[j].value_len);
                if (j > 0 && e[j].seq <= e[j - 1].seq)
                    why = "stream not in strictly increasing seq order";
                if (e[j].seq > ri->last_seq)
                    why = "retained seq above the room's last seq";
                if (!is_one_value(e[j].value, e[j].value_len))
                    why = "retained value is not one msgpack value";
            }
            if (n > 1) {
                /* binary search: after = a middle seq gives the suffix */
                size_t mid = n / 2;
                const struct relay_entry *e2 = NULL;
                size_t n2 = 0;

                if (relay_stream_read(s, ri->id, ri->id_len, keys.v[k].p,
                                      keys.v[k].n, e[mid].seq, &e2,
                                      &n2) != RELAY_OK ||
                    n2 != n - mid - 1)
                    why = "stream_read with after gives the wrong suffix";
            }
        }
        if (why == NULL && entries != ri->entries)
            why = "room_info.entries differs from the streams";
        if (why == NULL && ri->keys != keys.n && ri->keys != nonempty)
            why = "room_info.keys differs from room_keys";
        list_free(&keys);
    }
    relay_nodes_each(s, on_node, &ns);
    vu64(out, ns.n);
    for (size_t i = 0; why == NULL && i < ns.n; i++) {
        struct relay_node_info ni;

        vu64(out, ns.id[i]);
        vput(out, ns.raft[i], strlen(ns.raft[i]) + 1);
        vput(out, ns.http[i], strlen(ns.http[i]) + 1);
        if (ns.id[i] == 0)
            why = "node id 0 in the directory";
        if (i > 0 && ns.id[i] <= ns.id[i - 1])
            why = "nodes not in strictly ascending id order";
        if (!relay_node_lookup(s, ns.id[i], &ni) ||
            strcmp(ni.raft_addr, ns.raft[i]) != 0 ||
            strcmp(ni.http_addr, ns.http[i]) != 0)
            why = "node_lookup differs from nodes_each";
    }
    rooms_free(&rs);
    if (why != NULL) {
        print_error("state invariant broken: %s\n", why);
        _fail(file, line);
    }
}
#define DUMP(s, out) dump_at((s), (out), __FILE__, __LINE__)

static void expect_same_view_at(const struct relay_state *a,
                                const struct relay_state *b, const char *file,
                                int line)
{
    struct vec va = {0}, vb = {0};

    dump_at(a, &va, file, line);
    dump_at(b, &vb, file, line);
    if (!same_bytes(va.p, va.n, vb.p, vb.n)) {
        print_error("the two states read differently\n");
        _fail(file, line);
    }
    free(va.p);
    free(vb.p);
}
#define EXPECT_SAME_VIEW(a, b) expect_same_view_at((a), (b), __FILE__, __LINE__)

/* ---- a deterministic random log -------------------------------------------
 */

static const char *const gen_rooms[] = {"room-0", "room-1", "room-2",
                                        "room-3", "room-4", "room-5"};
#define GEN_ROOMS (sizeof(gen_rooms) / sizeof(gen_rooms[0]))

static const struct item gen_keys[] = {
    {(char *)"", 0},
    {(char *)"a", 1},
    {(char *)"a\0", 2},
    {(char *)"b\0c", 3},
    {(char *)"\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87", 8},
    {(char *)"\xf0\x9f\x94\x91", 4},
    {(char *)"counter", 7},
};
#define GEN_KEYS (sizeof(gen_keys) / sizeof(gen_keys[0]))

/* Limits small enough that every refusal happens in a few thousand ops. */
static void gen_limits(struct relay_limits *lim)
{
    memset(lim, 0, sizeof(*lim));
    lim->max_value_len = 300;
    lim->max_room_bytes = 6000;
    lim->max_rooms = 4;
    lim->max_dedupe = 6;
    lim->dedupe_ttl_ms = 20000;
}

struct gen {
    uint64_t rng;
    uint64_t now;
    bool monotonic; /* no backward clock steps */
    uint64_t counter_base;
    uint64_t counters[4][6];
    struct mv val;
    char raft[32];
    char http[32];
};

static void gen_init(struct gen *g, uint64_t seed, uint64_t counter_base)
{
    memset(g, 0, sizeof(*g));
    g->rng = seed * 0x9e3779b97f4a7c15ull + 1;
    g->now = 1000;
    g->counter_base = counter_base;
}

/*
 * Next command of the log. Reads `s` only to aim compacts near the room's
 * last seq; the command is then applied to every state alike.
 */
static struct relay_cmd gen_next(struct gen *g, const struct relay_state *s)
{
    struct relay_cmd c;
    uint64_t r = xorshift(&g->rng) % 100;
    const char *room = gen_rooms[xorshift(&g->rng) % GEN_ROOMS];

    memset(&c, 0, sizeof(c));
    g->now += xorshift(&g->rng) % 3000;
    if (xorshift(&g->rng) % 30 == 0 && !g->monotonic)
        g->now -= g->now < 5000 ? g->now : 5000; /* a new leader's clock */
    if (r < 5) {
        c = cmd_room(RELAY_CMD_CREATE_ROOM, room, strlen(room));
    } else if (r < 7) {
        c = cmd_room(RELAY_CMD_DELETE_ROOM, room, strlen(room));
    } else if (r < 10) {
        uint32_t id = 1 + (uint32_t)(xorshift(&g->rng) % 5);

        snprintf(g->raft, sizeof(g->raft), "10.0.0.%u:%u", id,
                 (unsigned)(xorshift(&g->rng) % 60000));
        snprintf(g->http, sizeof(g->http), "node%u.example:%u", id,
                 (unsigned)(xorshift(&g->rng) % 60000));
        c = cmd_node(RELAY_CMD_NODE_SET, id, g->raft, g->http);
    } else if (r < 11) {
        c = cmd_node(RELAY_CMD_NODE_FORGET,
                     1 + (uint32_t)(xorshift(&g->rng) % 6), NULL, NULL);
    } else if (r < 12) {
        c.type = RELAY_CMD_NOOP;
    } else {
        const struct item *k = &gen_keys[xorshift(&g->rng) % GEN_KEYS];
        uint64_t a = xorshift(&g->rng) % 100;
        uint64_t v = xorshift(&g->rng) % 10;
        enum relay_action act;
        uint64_t cseq = 0;

        if (v < 6)
            g->val = mv_int((int64_t)(xorshift(&g->rng) % 100000) - 50000);
        else if (v < 8)
            g->val = mv_map((int64_t)xorshift(&g->rng));
        else
            g->val = mv_bin((size_t)(xorshift(&g->rng) % 400),
                            (uint8_t)xorshift(&g->rng));
        if (a < 15) {
            act = RELAY_ACT_RELAY;
        } else if (a < 35) {
            act = RELAY_ACT_REPLACE;
        } else if (a < 80) {
            act = RELAY_ACT_APPEND;
        } else {
            uint64_t last = relay_room_last_seq(s, room, strlen(room));

            act = RELAY_ACT_COMPACT;
            /* mostly valid (1..last), sometimes in the future */
            cseq = last - (last ? xorshift(&g->rng) % last : 0) +
                   (xorshift(&g->rng) % 8 == 0 ? 1 + xorshift(&g->rng) % 3 : 0);
            if (cseq == 0)
                cseq = 1;
        }
        c = cmd_push(room, k->p, k->n, act, cseq, g->val.b, g->val.n);
    }
    if (xorshift(&g->rng) % 10 < 6) {
        uint32_t node = 1 + (uint32_t)(xorshift(&g->rng) % 3);
        uint64_t sess = 1 + xorshift(&g->rng) % 5;
        uint64_t *ctr = &g->counters[node][sess];
        uint64_t m = xorshift(&g->rng) % 20;

        /* mostly the next counter, sometimes a re-send or a gap */
        if (m < 17 || *ctr == 0)
            (*ctr)++;
        else if (m >= 19)
            *ctr += 2 + xorshift(&g->rng) % 3;
        c.origin.node = node;
        c.origin.session = sess;
        c.origin.counter = g->counter_base + *ctr;
    }
    return c;
}

static bool same_eff(const struct relay_effects *a,
                     const struct relay_effects *b)
{
    return a->status == b->status && a->broadcast == b->broadcast &&
           (a->status != RELAY_OK || a->seq == b->seq) &&
           a->has_stream_size == b->has_stream_size &&
           (!a->has_stream_size || a->stream_size == b->stream_size);
}

/* Feeds n generated commands to every state; effects must agree. */
static void drive_at(struct relay_state **ss, size_t nstates, struct gen *g,
                     int n, const char *file, int line)
{
    for (int i = 0; i < n; i++) {
        struct relay_cmd c = gen_next(g, ss[0]);
        struct relay_effects e0 = apply_at(ss[0], &c, g->now, file, line);

        for (size_t k = 1; k < nstates; k++) {
            struct relay_effects ek = apply_at(ss[k], &c, g->now, file, line);

            if (!same_eff(&e0, &ek)) {
                print_error("op %d (type %d action %d): state %zu gives "
                            "status %d seq %" PRIu64 ", state 0 status %d "
                            "seq %" PRIu64 "\n",
                            i, (int)c.type, (int)c.action, k, ek.status, ek.seq,
                            e0.status, e0.seq);
                _fail(file, line);
            }
        }
    }
}
#define DRIVE(ss, nstates, g, n)                                               \
    drive_at((ss), (nstates), (g), (n), __FILE__, __LINE__)

/*
 * A state with everything in it: rooms, streams, directory, dedupe. With
 * monotonic, the log clock never steps back (tests that need a restorable
 * snapshot whatever the backward-time handling).
 */
static struct relay_state *rich_state_clock(uint64_t seed, int n,
                                            bool monotonic)
{
    struct relay_limits lim;
    struct relay_state *s;
    struct gen g;

    gen_limits(&lim);
    s = mkstate(&lim);
    gen_init(&g, seed, 0);
    g.monotonic = monotonic;
    DRIVE(&s, 1, &g, n);
    return s;
}

static struct relay_state *rich_state(uint64_t seed, int n)
{
    return rich_state_clock(seed, n, false);
}

/* ==== tests ================================================================
 */

static void test_strerror(void **state)
{
    const int extra[] = {-1, 10, 11, 255, 12345, -2147483647 - 1};

    (void)state;
    for (int code = 0; code <= 9; code++) {
        const char *t = relay_strerror(code);

        assert_non_null(t);
        assert_true(strlen(t) > 0);
    }
    for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
        const char *t = relay_strerror(extra[i]);

        assert_non_null(t);
        assert_true(strlen(t) > 0);
    }
    /* distinct codes read differently */
    for (int a = 0; a <= 9; a++)
        for (int b = a + 1; b <= 9; b++)
            assert_string_not_equal(relay_strerror(a), relay_strerror(b));
}

static void test_limits_default(void **state)
{
    struct relay_limits lim;

    (void)state;
    memset(&lim, 0xff, sizeof(lim));
    relay_limits_default(&lim);
    assert_int_equal(lim.max_key_len, 1024);
    assert_int_equal(lim.max_value_len, 1024 * 1024);
    assert_int_equal(lim.max_room_bytes, 64 * 1024 * 1024);
    assert_int_equal(lim.max_rooms, 100000);
    assert_int_equal(lim.max_dedupe, 65536);
    assert_int_equal(lim.dedupe_ttl_ms, 3600 * 1000);
}

static void test_create_room(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_effects e;
    struct relay_room_info ri;

    (void)state;
    assert_int_equal(relay_state_room_count(s), 0);
    assert_false(relay_room_exists(s, K("r1")));
    CREATE(s, "r1");
    assert_true(relay_room_exists(s, K("r1")));
    assert_false(relay_room_exists(s, K("r")));
    assert_false(relay_room_exists(s, K("r12")));
    assert_int_equal(relay_state_room_count(s), 1);
    assert_int_equal(last_seq(s, "r1"), 0);
    ri = info_of(s, "r1");
    assert_int_equal(ri.id_len, 2);
    assert_string_equal(ri.id, "r1");
    assert_int_equal(ri.keys, 0);
    assert_int_equal(ri.entries, 0);
    assert_int_equal(ri.bytes, 0);
    assert_int_equal(ri.last_seq, 0);

    /* a duplicate is a refusal in the effects, and leaves the room alone */
    assert_int_equal(APPEND(s, "r1", "k", 1).seq, 1);
    e = ROOMCMD(s, RELAY_CMD_CREATE_ROOM, "r1");
    EXPECT_STATUS(e, RELAY_EEXIST);
    assert_int_equal(relay_state_room_count(s), 1);
    assert_int_equal(last_seq(s, "r1"), 1);
    EXPECT_STREAM(s, "r1", "k", {1, 1});

    CREATE(s, "r2");
    assert_int_equal(relay_state_room_count(s), 2);
    relay_state_destroy(s);
}

static void test_unknown_room(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_effects e;
    const struct relay_entry *ent = NULL;
    size_t n = 77;
    struct relay_room_info ri;
    struct list keys = {0};

    (void)state;
    CREATE(s, "here");
    e = APPEND(s, "nowhere", "k", 1);
    EXPECT_STATUS(e, RELAY_ENOROOM);
    e = RELAY(s, "nowhere", "k", 1);
    EXPECT_STATUS(e, RELAY_ENOROOM);
    e = COMPACT(s, "nowhere", "k", 0, 1);
    EXPECT_STATUS(e, RELAY_ENOROOM);
    e = ROOMCMD(s, RELAY_CMD_DELETE_ROOM, "nowhere");
    EXPECT_STATUS(e, RELAY_ENOROOM);
    assert_false(relay_room_exists(s, K("nowhere")));
    assert_int_equal(relay_state_room_count(s), 1);
    assert_int_equal(last_seq(s, "nowhere"), 0);
    assert_int_equal(relay_stream_read(s, K("nowhere"), K("k"), 0, &ent, &n),
                     RELAY_ENOROOM);
    assert_int_equal(relay_room_keys(s, K("nowhere"), on_key, &keys),
                     RELAY_ENOROOM);
    assert_int_equal(keys.n, 0);
    assert_int_equal(relay_room_info(s, K("nowhere"), &ri), RELAY_ENOROOM);
    /* nothing leaked into the existing room */
    assert_int_equal(last_seq(s, "here"), 0);
    assert_int_equal(APPEND(s, "here", "k", 5).seq, 1);
    relay_state_destroy(s);
}

static void test_delete_room(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_effects e;
    struct list keys;

    (void)state;
    CREATE(s, "a");
    CREATE(s, "b");
    APPEND(s, "a", "k", 1);
    APPEND(s, "a", "k", 2);
    APPEND(s, "b", "k", 3);
    e = ROOMCMD(s, RELAY_CMD_DELETE_ROOM, "a");
    EXPECT_STATUS(e, RELAY_OK);
    assert_false(relay_room_exists(s, K("a")));
    assert_int_equal(relay_state_room_count(s), 1);
    e = APPEND(s, "a", "k", 4);
    EXPECT_STATUS(e, RELAY_ENOROOM);
    e = ROOMCMD(s, RELAY_CMD_DELETE_ROOM, "a");
    EXPECT_STATUS(e, RELAY_ENOROOM);
    /* the other room is untouched */
    EXPECT_STREAM(s, "b", "k", {1, 3});
    assert_int_equal(last_seq(s, "b"), 1);

    /* a room created again under a deleted id starts empty, seq from 1 */
    CREATE(s, "a");
    assert_int_equal(last_seq(s, "a"), 0);
    EXPECT_EMPTY(s, "a", "k");
    keys = keys_of(s, "a");
    assert_int_equal(keys.n, 0);
    list_free(&keys);
    e = APPEND(s, "a", "k", 9);
    EXPECT_BCAST(e, 1, 1);
    EXPECT_STREAM(s, "a", "k", {1, 9});
    relay_state_destroy(s);
}

static void test_max_rooms(void **state)
{
    struct relay_limits lim;
    struct relay_state *s;
    struct relay_effects e;

    (void)state;
    memset(&lim, 0, sizeof(lim));
    lim.max_rooms = 3;
    s = mkstate(&lim);
    CREATE(s, "r1");
    CREATE(s, "r2");
    CREATE(s, "r3");
    e = ROOMCMD(s, RELAY_CMD_CREATE_ROOM, "r4");
    EXPECT_STATUS(e, RELAY_EFULL);
    assert_false(relay_room_exists(s, K("r4")));
    assert_int_equal(relay_state_room_count(s), 3);
    /* a duplicate of an existing room is still EEXIST when full */
    e = ROOMCMD(s, RELAY_CMD_CREATE_ROOM, "r1");
    EXPECT_STATUS(e, RELAY_EEXIST);
    assert_false(e.broadcast);
    e = ROOMCMD(s, RELAY_CMD_DELETE_ROOM, "r2");
    EXPECT_STATUS(e, RELAY_OK);
    CREATE(s, "r4");
    assert_int_equal(relay_state_room_count(s), 3);
    e = ROOMCMD(s, RELAY_CMD_CREATE_ROOM, "r5");
    EXPECT_STATUS(e, RELAY_EFULL);
    relay_state_destroy(s);
}

static void test_room_id_length(void **state)
{
    struct relay_state *s = mkstate(NULL);
    char id[RELAY_ROOM_ID_MAX + 2];
    struct relay_cmd c;
    struct relay_effects e;

    (void)state;
    memset(id, 'x', sizeof(id));
    id[RELAY_ROOM_ID_MAX] = '\0';
    CREATE(s, id); /* exactly RELAY_ROOM_ID_MAX bytes */
    assert_true(relay_room_exists(s, id, RELAY_ROOM_ID_MAX));
    id[RELAY_ROOM_ID_MAX] = 'y';
    id[RELAY_ROOM_ID_MAX + 1] = '\0';
    c = cmd_room(RELAY_CMD_CREATE_ROOM, id, RELAY_ROOM_ID_MAX + 1);
    e = APPLY(s, &c, 0);
    assert_int_not_equal(e.status, RELAY_OK);
    assert_false(e.broadcast);
    assert_false(relay_room_exists(s, id, RELAY_ROOM_ID_MAX + 1));
    assert_int_equal(relay_state_room_count(s), 1);
    relay_state_destroy(s);
}

/* One seq counter per room, shared by its keys; what takes a seq. */
static void test_seq_counter(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_effects e;

    (void)state;
    CREATE(s, "r");
    CREATE(s, "q");
    e = APPEND(s, "r", "a", 1);
    EXPECT_BCAST(e, 1, 1);
    e = RELAY(s, "r", "b", 2);
    EXPECT_BCAST(e, 2, 0);
    e = APPEND(s, "r", "a", 3);
    EXPECT_BCAST(e, 3, 2);
    e = REPLACE(s, "r", "c", 4);
    EXPECT_BCAST(e, 4, 1);
    e = COMPACT(s, "r", "a", 3, 5); /* no seq of its own */
    EXPECT_COMPACT(e, 3, 1);
    assert_int_equal(last_seq(s, "r"), 4);
    e = APPEND(s, "r", "a", 6);
    EXPECT_BCAST(e, 5, 2);
    e = APPEND(s, "elsewhere", "a", 0); /* refused: no seq anywhere */
    EXPECT_STATUS(e, RELAY_ENOROOM);
    e = COMPACT(s, "r", "a", 99, 0); /* refused */
    EXPECT_STATUS(e, RELAY_ESEQ);
    e = APPEND(s, "r", "c", 7);
    EXPECT_BCAST(e, 6, 2);
    /* another room has its own counter */
    e = APPEND(s, "q", "a", 8);
    EXPECT_BCAST(e, 1, 1);
    e = RELAY(s, "q", "a", 9);
    EXPECT_BCAST(e, 2, 0);
    assert_int_equal(last_seq(s, "r"), 6);
    assert_int_equal(last_seq(s, "q"), 2);

    EXPECT_STREAM(s, "r", "a", {3, 5}, {5, 6});
    EXPECT_EMPTY(s, "r", "b");
    EXPECT_STREAM(s, "r", "c", {4, 4}, {6, 7});
    EXPECT_STREAM(s, "q", "a", {1, 8});
    relay_state_destroy(s);
}

static void test_relay_not_retained(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_effects e;
    struct relay_room_info ri;
    size_t bytes;

    (void)state;
    CREATE(s, "r");
    APPEND(s, "r", "k", 1);
    APPEND(s, "r", "k", 2);
    bytes = info_of(s, "r").bytes;
    e = RELAY(s, "r", "k", 3);
    /* broadcast with a seq; the sender hears the 2 entries still kept, as
     * after any push in the reference */
    EXPECT_BCAST(e, 3, 2);
    EXPECT_STREAM(s, "r", "k", {1, 1}, {2, 2});
    ri = info_of(s, "r");
    assert_int_equal(ri.entries, 2);
    assert_int_equal(ri.last_seq, 3);
    assert_int_equal(ri.keys, 1);
    assert_int_equal(ri.bytes, bytes); /* a relay costs no room bytes */
    /* relay to a fresh key retains nothing either */
    e = RELAY(s, "r", "fresh", 4);
    EXPECT_BCAST(e, 4, 0);
    EXPECT_EMPTY(s, "r", "fresh");
    ri = info_of(s, "r");
    assert_int_equal(ri.entries, 2);
    assert_int_equal(ri.keys, 1); /* keys with a retained stream */
    relay_state_destroy(s);
}

static void test_replace_and_append(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_effects e;

    (void)state;
    CREATE(s, "r");
    e = REPLACE(s, "r", "k", 10);
    EXPECT_BCAST(e, 1, 1);
    EXPECT_STREAM(s, "r", "k", {1, 10});
    e = REPLACE(s, "r", "k", 11);
    EXPECT_BCAST(e, 2, 1);
    EXPECT_STREAM(s, "r", "k", {2, 11});
    e = APPEND(s, "r", "k", 12);
    EXPECT_BCAST(e, 3, 2);
    e = APPEND(s, "r", "k", 13);
    EXPECT_BCAST(e, 4, 3);
    EXPECT_STREAM(s, "r", "k", {2, 11}, {3, 12}, {4, 13});
    /* replace after append drops everything */
    e = REPLACE(s, "r", "k", 14);
    EXPECT_BCAST(e, 5, 1);
    EXPECT_STREAM(s, "r", "k", {5, 14});
    e = APPEND(s, "r", "k", 15);
    EXPECT_BCAST(e, 6, 2);
    EXPECT_STREAM(s, "r", "k", {5, 14}, {6, 15});
    /* append to a fresh key starts its stream */
    e = APPEND(s, "r", "j", 16);
    EXPECT_BCAST(e, 7, 1);
    EXPECT_STREAM(s, "r", "j", {7, 16});
    relay_state_destroy(s);
}

/* stream_size goes to the sender exactly when more than one entry is kept. */
static void test_stream_size(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_effects e;

    (void)state;
    CREATE(s, "r");
    for (uint64_t i = 1; i <= 20; i++) {
        e = APPEND(s, "r", "k", (int64_t)i);
        EXPECT_BCAST(e, i, i);
        assert_int_equal(stream_len(s, "r", K("k")), i);
    }
    e = COMPACT(s, "r", "k", 10, 0); /* 11..20 stay: 11 entries */
    EXPECT_COMPACT(e, 10, 11);
    e = COMPACT(s, "r", "k", 20, 0); /* all folded: 1 entry */
    EXPECT_COMPACT(e, 20, 1);
    e = APPEND(s, "r", "k", 21);
    EXPECT_BCAST(e, 21, 2);
    e = REPLACE(s, "r", "k", 22);
    EXPECT_BCAST(e, 22, 1);
    e = RELAY(s, "r", "k", 23);
    EXPECT_BCAST(e, 23, 1);         /* one entry: no stream_size */
    e = COMPACT(s, "r", "k", 5, 0); /* older than the one entry: 2 */
    EXPECT_COMPACT(e, 5, 2);
    relay_state_destroy(s);
}

static void test_compact_basic(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_effects e;

    (void)state;
    CREATE(s, "r");
    APPEND(s, "r", "k", 1);     /* 1 */
    APPEND(s, "r", "k", 2);     /* 2 */
    RELAY(s, "r", "x", 3);      /* 3 */
    APPEND(s, "r", "k", 4);     /* 4 */
    APPEND(s, "r", "k", 5);     /* 5 */
    APPEND(s, "r", "other", 6); /* 6 */
    APPEND(s, "r", "k", 7);     /* 7 */
    EXPECT_STREAM(s, "r", "k", {1, 1}, {2, 2}, {4, 4}, {5, 5}, {7, 7});

    e = COMPACT(s, "r", "k", 4, 100);
    EXPECT_COMPACT(e, 4, 3);
    EXPECT_STREAM(s, "r", "k", {4, 100}, {5, 5}, {7, 7});
    /* S equal to a retained entry's seq: that entry goes too */
    e = COMPACT(s, "r", "k", 5, 200);
    EXPECT_COMPACT(e, 5, 2);
    EXPECT_STREAM(s, "r", "k", {5, 200}, {7, 7});
    /* S falling in a gap (3 was a relay, 6 another key's) */
    e = COMPACT(s, "r", "k", 6, 300);
    EXPECT_COMPACT(e, 6, 2);
    EXPECT_STREAM(s, "r", "k", {6, 300}, {7, 7});
    e = COMPACT(s, "r", "k", 7, 400);
    EXPECT_COMPACT(e, 7, 1);
    EXPECT_STREAM(s, "r", "k", {7, 400});
    assert_int_equal(last_seq(s, "r"), 7);
    /* the other key is untouched */
    EXPECT_STREAM(s, "r", "other", {6, 6});
    e = APPEND(s, "r", "k", 8);
    EXPECT_BCAST(e, 8, 2);
    /* a compact below a kept entry slots in front of it */
    e = COMPACT(s, "r", "k", 6, 500);
    EXPECT_COMPACT(e, 6, 3);
    EXPECT_STREAM(s, "r", "k", {6, 500}, {7, 400}, {8, 8});
    relay_state_destroy(s);
}

static void test_compact_empty_stream(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_effects e;
    struct list keys;
    struct relay_room_info ri;

    (void)state;
    CREATE(s, "r");
    APPEND(s, "r", "a", 1);
    APPEND(s, "r", "a", 2);
    APPEND(s, "r", "a", 3);
    /* a key that never existed, S equal to the room's last seq */
    e = COMPACT(s, "r", "new", 3, 9);
    EXPECT_COMPACT(e, 3, 1);
    EXPECT_STREAM(s, "r", "new", {3, 9});
    e = COMPACT(s, "r", "new2", 1, 8);
    EXPECT_COMPACT(e, 1, 1);
    EXPECT_STREAM(s, "r", "new2", {1, 8});
    assert_int_equal(last_seq(s, "r"), 3);
    keys = keys_of(s, "r");
    assert_int_equal(keys.n, 3);
    assert_true(same_bytes(keys.v[0].p, keys.v[0].n, K("a")));
    assert_true(same_bytes(keys.v[1].p, keys.v[1].n, K("new")));
    assert_true(same_bytes(keys.v[2].p, keys.v[2].n, K("new2")));
    list_free(&keys);
    ri = info_of(s, "r");
    assert_int_equal(ri.keys, 3);
    assert_int_equal(ri.entries, 5);
    /* the next broadcast continues the counter */
    e = APPEND(s, "r", "new", 10);
    EXPECT_BCAST(e, 4, 2);
    EXPECT_STREAM(s, "r", "new", {3, 9}, {4, 10});

    /* S = 0 is below every seq (seqs start at 1), also on a room with no
     * seq yet: refused like any S outside 1..last, nothing retained */
    CREATE(s, "fresh");
    e = COMPACT(s, "fresh", "k", 0, 1);
    EXPECT_STATUS(e, RELAY_ESEQ);
    assert_false(e.broadcast);
    assert_int_equal(last_seq(s, "fresh"), 0);
    EXPECT_EMPTY(s, "fresh", "k");
    e = COMPACT(s, "fresh", "k", 1, 1);
    EXPECT_STATUS(e, RELAY_ESEQ);
    relay_state_destroy(s);
}

static void test_compact_older_than_all(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_effects e;

    (void)state;
    CREATE(s, "r");
    for (int i = 1; i <= 4; i++)
        RELAY(s, "r", "k", i);
    APPEND(s, "r", "k", 5);
    APPEND(s, "r", "k", 6);
    APPEND(s, "r", "k", 7);
    e = COMPACT(s, "r", "k", 3, 30);
    EXPECT_COMPACT(e, 3, 4);
    EXPECT_STREAM(s, "r", "k", {3, 30}, {5, 5}, {6, 6}, {7, 7});
    e = COMPACT(s, "r", "k", 1, 10);
    EXPECT_COMPACT(e, 1, 5);
    EXPECT_STREAM(s, "r", "k", {1, 10}, {3, 30}, {5, 5}, {6, 6}, {7, 7});
    e = COMPACT(s, "r", "k", 3, 33);
    EXPECT_COMPACT(e, 3, 4);
    EXPECT_STREAM(s, "r", "k", {3, 33}, {5, 5}, {6, 6}, {7, 7});
    assert_int_equal(last_seq(s, "r"), 7);
    relay_state_destroy(s);
}

static void test_compact_future_seq(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_effects e;
    struct blob before, after;
    struct list keys;

    (void)state;
    CREATE(s, "r");
    APPEND(s, "r", "k", 1);
    APPEND(s, "r", "k", 2);
    RELAY(s, "r", "k", 3);
    before = SNAP(s);
    e = COMPACT(s, "r", "k", 4, 9);
    EXPECT_STATUS(e, RELAY_ESEQ);
    e = COMPACT(s, "r", "k", UINT64_MAX, 9);
    EXPECT_STATUS(e, RELAY_ESEQ);
    e = COMPACT(s, "r", "newkey", 4, 9);
    EXPECT_STATUS(e, RELAY_ESEQ);
    after = SNAP(s);
    EXPECT_SAME_BLOB(before, after, "after ESEQ");
    EXPECT_STREAM(s, "r", "k", {1, 1}, {2, 2});
    keys = keys_of(s, "r");
    assert_int_equal(keys.n, 1);
    list_free(&keys);
    /* S = last seq is fine, even when the last seq was a relay */
    e = COMPACT(s, "r", "k", 3, 9);
    EXPECT_COMPACT(e, 3, 1);
    EXPECT_STREAM(s, "r", "k", {3, 9});
    free(before.p);
    free(after.p);
    relay_state_destroy(s);
}

static void test_relay_between_appends(void **state)
{
    struct relay_state *s = mkstate(NULL);

    (void)state;
    CREATE(s, "r");
    APPEND(s, "r", "k", 1); /* 1 */
    RELAY(s, "r", "k", 2);  /* 2 */
    RELAY(s, "r", "k", 3);  /* 3 */
    APPEND(s, "r", "k", 4); /* 4 */
    RELAY(s, "r", "o", 5);  /* 5 */
    APPEND(s, "r", "k", 6); /* 6 */
    EXPECT_STREAM_AFTER(s, "r", "k", 0, {1, 1}, {4, 4}, {6, 6});
    EXPECT_STREAM_AFTER(s, "r", "k", 1, {4, 4}, {6, 6});
    EXPECT_STREAM_AFTER(s, "r", "k", 2, {4, 4}, {6, 6});
    EXPECT_STREAM_AFTER(s, "r", "k", 3, {4, 4}, {6, 6});
    EXPECT_STREAM_AFTER(s, "r", "k", 4, {6, 6});
    EXPECT_STREAM_AFTER(s, "r", "k", 5, {6, 6});
    EXPECT_EMPTY_AFTER(s, "r", "k", 6);
    EXPECT_EMPTY_AFTER(s, "r", "k", 7);
    EXPECT_EMPTY_AFTER(s, "r", "k", UINT64_MAX);
    relay_state_destroy(s);
}

/* Long stream with gaps: every `after` from 0 to past the end. */
static void test_stream_read_after(void **state)
{
    struct relay_state *s = mkstate(NULL);
    uint64_t rng = 42;
    struct ent *want = calloc(4000, sizeof(*want));
    size_t nwant = 0;
    uint64_t last = 0;

    (void)state;
    assert_non_null(want);
    CREATE(s, "r");
    for (int i = 0; i < 4000; i++) {
        uint64_t r = xorshift(&rng) % 10;
        int64_t v = (int64_t)(xorshift(&rng) % 1000);

        if (r < 6) {
            APPEND(s, "r", "k", v);
            want[nwant].seq = ++last;
            want[nwant].val = v;
            nwant++;
        } else if (r < 8) {
            RELAY(s, "r", "k", v);
            last++;
        } else {
            APPEND(s, "r", "other", v);
            last++;
        }
        if (i == 2000) {
            /* fold the first half: the stream starts at an older S */
            uint64_t S = want[nwant / 2].seq;
            size_t keep = 0;

            COMPACT(s, "r", "k", S, -1);
            for (size_t j = 0; j < nwant; j++)
                if (want[j].seq > S)
                    want[1 + keep++] = want[j];
            want[0].seq = S;
            want[0].val = -1;
            nwant = keep + 1;
        }
    }
    assert_int_equal(last_seq(s, "r"), last);
    for (uint64_t after = 0; after <= last + 1; after++) {
        size_t first = 0;
        const struct relay_entry *e = NULL;
        size_t n = 0;

        while (first < nwant && want[first].seq <= after)
            first++;
        if (after % 97 == 0 || after + 2 >= last) {
            check_stream_at(s, "r", K("k"), after, want + first, nwant - first,
                            __FILE__, __LINE__);
            continue;
        }
        assert_int_equal(relay_stream_read(s, K("r"), K("k"), after, &e, &n),
                         RELAY_OK);
        if (n != nwant - first ||
            (n > 0 && (e[0].seq != want[first].seq ||
                       e[n - 1].seq != want[nwant - 1].seq)))
            fail_msg("after %" PRIu64 ": n %zu want %zu", after, n,
                     nwant - first);
    }
    free(want);
    relay_state_destroy(s);
}

static void test_unknown_key(void **state)
{
    struct relay_state *s = mkstate(NULL);
    const struct relay_entry *e = NULL;
    size_t n = 99;

    (void)state;
    CREATE(s, "r");
    assert_int_equal(relay_stream_read(s, K("r"), K("nope"), 0, &e, &n),
                     RELAY_OK);
    assert_int_equal(n, 0);
    APPEND(s, "r", "k", 1);
    n = 99;
    assert_int_equal(relay_stream_read(s, K("r"), K("nope"), 0, &e, &n),
                     RELAY_OK);
    assert_int_equal(n, 0);
    n = 99;
    assert_int_equal(relay_stream_read(s, K("r"), K("k\0"), 0, &e, &n),
                     RELAY_OK);
    assert_int_equal(n, 0);
    n = 99;
    assert_int_equal(relay_stream_read(s, K("r"), K(""), 0, &e, &n), RELAY_OK);
    assert_int_equal(n, 0);
    relay_state_destroy(s);
}

/* Keys are byte strings: empty, UTF-8, and with NULs (key_len matters). */
static void test_special_keys(void **state)
{
    static const struct item keys[] = {
        {(char *)"", 0},
        {(char *)"a", 1},
        {(char *)"a\0", 2},
        {(char *)"a\0b", 3},
        {(char *)"a\0c", 3},
        {(char *)"\0", 1},
        {(char *)"\0\0", 2},
        {(char *)"\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87", 8}, /* ключ */
        {(char *)"\xf0\x9f\x94\x91", 4},                 /* key emoji */
        {(char *)"\xe4\xb8\xad\xe6\x96\x87 key", 10},    /* 中文 key */
    };
    const size_t nk = sizeof(keys) / sizeof(keys[0]);
    struct relay_state *s = mkstate(NULL);
    struct list got;
    struct relay_room_info ri;

    (void)state;
    CREATE(s, "r");
    for (size_t i = 0; i < nk; i++) {
        struct relay_effects e = PUSHN(s, "r", keys[i].p, keys[i].n,
                                       RELAY_ACT_APPEND, 0, (int64_t)i);

        EXPECT_BCAST(e, i + 1, 1);
    }
    for (size_t i = 0; i < nk; i++) {
        struct relay_effects e = PUSHN(s, "r", keys[i].p, keys[i].n,
                                       RELAY_ACT_APPEND, 0, (int64_t)(100 + i));

        EXPECT_BCAST(e, nk + i + 1, 2);
    }
    for (size_t i = 0; i < nk; i++) {
        struct ent w[2] = {{i + 1, (int64_t)i},
                           {nk + i + 1, (int64_t)(100 + i)}};

        check_stream_at(s, "r", keys[i].p, keys[i].n, 0, w, 2, __FILE__,
                        __LINE__);
    }
    got = keys_of(s, "r");
    assert_int_equal(got.n, nk);
    for (size_t i = 0; i < nk; i++) {
        assert_int_equal(got.v[i].n, keys[i].n);
        assert_true(same_bytes(got.v[i].p, got.v[i].n, keys[i].p, keys[i].n));
    }
    list_free(&got);
    ri = info_of(s, "r");
    assert_int_equal(ri.keys, nk);
    assert_int_equal(ri.entries, 2 * nk);
    /* replace on one NUL key leaves its neighbours alone */
    PUSHN(s, "r", K("a\0b"), RELAY_ACT_REPLACE, 0, 7);
    EXPECT_STREAM(s, "r", "a\0b", {2 * nk + 1, 7});
    EXPECT_STREAM(s, "r", "a\0c", {5, 4}, {nk + 5, 104});
    EXPECT_STREAM(s, "r", "a", {2, 1}, {nk + 2, 101});
    relay_state_destroy(s);
}

/* Key creation order, over many keys, whatever the later traffic. */
static void test_room_keys_order(void **state)
{
    const size_t nkeys = 2000;
    struct relay_state *s = mkstate(NULL);
    size_t *perm = calloc(nkeys, sizeof(*perm));
    uint64_t rng = 7;
    struct list got;
    char key[32];

    (void)state;
    assert_non_null(perm);
    for (size_t i = 0; i < nkeys; i++)
        perm[i] = i;
    for (size_t i = nkeys - 1; i > 0; i--) {
        size_t j = (size_t)(xorshift(&rng) % (i + 1));
        size_t t = perm[i];

        perm[i] = perm[j];
        perm[j] = t;
    }
    CREATE(s, "r");
    for (size_t i = 0; i < nkeys; i++) {
        int n = snprintf(key, sizeof(key), "key-%zu", perm[i]);
        enum relay_action a = i % 3 == 0   ? RELAY_ACT_REPLACE
                              : i % 3 == 1 ? RELAY_ACT_APPEND
                                           : RELAY_ACT_COMPACT;

        PUSHN(s, "r", key, (size_t)n, a, a == RELAY_ACT_COMPACT ? 1 : 0, 1);
        /* traffic on an older key must not move it */
        if (i > 0) {
            n = snprintf(key, sizeof(key), "key-%zu", perm[xorshift(&rng) % i]);
            PUSHN(s, "r", key, (size_t)n, RELAY_ACT_REPLACE, 0, 2);
        }
    }
    got = keys_of(s, "r");
    assert_int_equal(got.n, nkeys);
    for (size_t i = 0; i < nkeys; i++) {
        int n = snprintf(key, sizeof(key), "key-%zu", perm[i]);

        if (!same_bytes(got.v[i].p, got.v[i].n, key, (size_t)n))
            fail_msg("key %zu: got %s want %s", i, got.v[i].p, key);
    }
    list_free(&got);
    assert_int_equal(info_of(s, "r").keys, nkeys);
    free(perm);
    relay_state_destroy(s);
}

static void test_many_rooms(void **state)
{
    const int nrooms = 5000;
    struct relay_state *s = mkstate(NULL);
    struct relay_state *t;
    struct rooms rs;
    char id[32];
    struct blob a, b;

    (void)state;
    for (int i = 0; i < nrooms; i++) {
        snprintf(id, sizeof(id), "room-%05d", (i * 7919) % nrooms);
        CREATE(s, id);
    }
    assert_int_equal(relay_state_room_count(s), (size_t)nrooms);
    for (int i = 0; i < nrooms; i++) {
        struct relay_effects e;

        snprintf(id, sizeof(id), "room-%05d", i);
        e = push_at(s, id, K("k"), RELAY_ACT_APPEND, 0, i, __FILE__, __LINE__);
        EXPECT_BCAST(e, 1, 1);
        if (i % 2) {
            e = push_at(s, id, K("k"), RELAY_ACT_APPEND, 0, -i, __FILE__,
                        __LINE__);
            EXPECT_BCAST(e, 2, 2);
        }
    }
    for (int i = 0; i < nrooms; i++) {
        snprintf(id, sizeof(id), "room-%05d", i);
        assert_true(relay_room_exists(s, id, strlen(id)));
        assert_int_equal(last_seq(s, id), i % 2 ? 2 : 1);
    }
    rs = rooms_of(s);
    assert_int_equal(rs.ids.n, (size_t)nrooms);
    for (int i = 0; i < nrooms; i++) {
        int want = (i * 7919) % nrooms;

        snprintf(id, sizeof(id), "room-%05d", want);
        assert_string_equal(rs.ids.v[i].p, id);
        assert_int_equal(rs.ri[i].last_seq, want % 2 ? 2 : 1);
        assert_int_equal(rs.ri[i].entries, want % 2 ? 2 : 1);
        assert_int_equal(rs.ri[i].keys, 1);
    }
    rooms_free(&rs);
    /* delete every third room */
    for (int i = 0; i < nrooms; i += 3) {
        struct relay_effects e;

        snprintf(id, sizeof(id), "room-%05d", i);
        e = room_cmd_at(s, RELAY_CMD_DELETE_ROOM, id, __FILE__, __LINE__);
        EXPECT_STATUS(e, RELAY_OK);
    }
    assert_int_equal(relay_state_room_count(s), (size_t)(nrooms - 1667));
    for (int i = 0; i < nrooms; i++) {
        snprintf(id, sizeof(id), "room-%05d", i);
        assert_int_equal(relay_room_exists(s, id, strlen(id)), i % 3 != 0);
        assert_int_equal(last_seq(s, id), i % 3 == 0 ? 0 : i % 2 ? 2 : 1);
    }
    rs = rooms_of(s);
    {
        size_t j = 0;

        for (int i = 0; i < nrooms; i++) {
            int want = (i * 7919) % nrooms;

            if (want % 3 == 0)
                continue;
            snprintf(id, sizeof(id), "room-%05d", want);
            assert_true(j < rs.ids.n);
            assert_string_equal(rs.ids.v[j].p, id);
            j++;
        }
        assert_int_equal(j, rs.ids.n);
    }
    rooms_free(&rs);
    /* and it all survives a snapshot */
    a = SNAP(s);
    t = mkstate(NULL);
    assert_int_equal(restore_copy(t, a.p, a.n), RELAY_OK);
    b = SNAP(t);
    EXPECT_SAME_BLOB(a, b, "5000 rooms");
    EXPECT_SAME_VIEW(s, t);
    free(a.p);
    free(b.p);
    relay_state_destroy(t);
    relay_state_destroy(s);
}

static void test_rooms_each_and_info(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct rooms rs;
    struct relay_room_info ri;
    struct mv v1 = mv_int(5), big = mv_bin(100, 0xab);
    struct relay_cmd c;

    (void)state;
    rs = rooms_of(s); /* no rooms: no call */
    assert_int_equal(rs.ids.n, 0);
    rooms_free(&rs);

    CREATE(s, "r1");
    CREATE(s, "r2");
    CREATE(s, "r3");
    APPEND(s, "r1", "k", 5); /* 1 + 1 bytes */
    c = cmd_push("r1", K("key"), RELAY_ACT_REPLACE, 0, big.b, big.n);
    APPLY(s, &c, 0);         /* 3 + 102 bytes */
    RELAY(s, "r1", "zz", 1); /* nothing */
    APPEND(s, "r2", "k", 1);
    ROOMCMD(s, RELAY_CMD_DELETE_ROOM, "r2");
    CREATE(s, "r4");
    CREATE(s, "r2");

    rs = rooms_of(s);
    assert_int_equal(rs.ids.n, 4);
    assert_string_equal(rs.ids.v[0].p, "r1");
    assert_string_equal(rs.ids.v[1].p, "r3");
    assert_string_equal(rs.ids.v[2].p, "r4");
    assert_string_equal(rs.ids.v[3].p, "r2");
    assert_int_equal(rs.ri[0].id_len, 2);
    assert_int_equal(rs.ri[0].keys, 2);
    assert_int_equal(rs.ri[0].entries, 2);
    assert_int_equal(rs.ri[0].bytes, 1 + v1.n + 3 + big.n);
    assert_int_equal(rs.ri[0].last_seq, 3);
    for (size_t i = 1; i < 4; i++) {
        assert_int_equal(rs.ri[i].keys, 0);
        assert_int_equal(rs.ri[i].entries, 0);
        assert_int_equal(rs.ri[i].bytes, 0);
        assert_int_equal(rs.ri[i].last_seq, 0);
    }
    rooms_free(&rs);

    ri = info_of(s, "r1");
    assert_string_equal(ri.id, "r1");
    assert_int_equal(ri.id_len, 2);
    assert_int_equal(ri.keys, 2);
    assert_int_equal(ri.entries, 2);
    assert_int_equal(ri.bytes, 2 + 105);
    assert_int_equal(ri.last_seq, 3);

    /* bytes follow compaction and replacement */
    APPEND(s, "r1", "k", 6); /* seq 4 */
    APPEND(s, "r1", "k", 7); /* seq 5 */
    ri = info_of(s, "r1");
    assert_int_equal(ri.entries, 4);
    /* a key's bytes count once per stream, not per entry: "k" and its
     * three one-byte values (4), "key" and its value (105) */
    assert_int_equal(ri.bytes, 4 + 105);
    COMPACT(s, "r1", "k", 5, 8);
    ri = info_of(s, "r1");
    assert_int_equal(ri.entries, 2);
    assert_int_equal(ri.bytes, 2 + 105);
    REPLACE(s, "r1", "key", 1);
    ri = info_of(s, "r1");
    assert_int_equal(ri.bytes, 2 + 4);
    assert_int_equal(ri.last_seq, 6);
    EXPECT_SAME_VIEW(s, s);
    relay_state_destroy(s);
}

static void test_limit_key_len(void **state)
{
    struct relay_limits lim;
    struct relay_state *s;
    struct relay_effects e;
    char key[1100];
    struct mv v = mv_int(1);
    const enum relay_action acts[] = {RELAY_ACT_RELAY, RELAY_ACT_REPLACE,
                                      RELAY_ACT_APPEND, RELAY_ACT_COMPACT};

    (void)state;
    memset(key, 'k', sizeof(key));
    memset(&lim, 0, sizeof(lim));
    lim.max_key_len = 8;
    s = mkstate(&lim);
    CREATE(s, "r");
    APPEND(s, "r", "x", 0); /* seq 1, so compact S=1 is valid */
    for (size_t i = 0; i < 4; i++) {
        struct relay_cmd c = cmd_push("r", key, 9, acts[i], 1, v.b, v.n);

        e = APPLY(s, &c, 0);
        EXPECT_STATUS(e, RELAY_ETOOBIG);
        c.key_len = 8;
        e = APPLY(s, &c, 0);
        assert_int_equal(e.status, RELAY_OK);
    }
    assert_int_equal(last_seq(s, "r"), 4); /* 1 + relay, replace, append */
    relay_state_destroy(s);

    /* zero means the default, 1 KiB */
    memset(&lim, 0, sizeof(lim));
    lim.max_value_len = 1000;
    s = mkstate(&lim);
    CREATE(s, "r");
    {
        struct relay_cmd c =
            cmd_push("r", key, 1025, RELAY_ACT_APPEND, 0, v.b, v.n);

        e = APPLY(s, &c, 0);
        EXPECT_STATUS(e, RELAY_ETOOBIG);
        c.key_len = 1024;
        e = APPLY(s, &c, 0);
        EXPECT_BCAST(e, 1, 1);
    }
    relay_state_destroy(s);
}

static void test_limit_value_len(void **state)
{
    struct relay_limits lim;
    struct relay_state *s;
    struct relay_effects e;
    uint8_t *v50 = bin_total(50, 1), *v51 = bin_total(51, 2);
    const enum relay_action acts[] = {RELAY_ACT_RELAY, RELAY_ACT_REPLACE,
                                      RELAY_ACT_APPEND, RELAY_ACT_COMPACT};

    (void)state;
    memset(&lim, 0, sizeof(lim));
    lim.max_value_len = 50;
    s = mkstate(&lim);
    CREATE(s, "r");
    APPEND(s, "r", "x", 0);
    for (size_t i = 0; i < 4; i++) {
        struct relay_cmd c = cmd_push("r", K("k"), acts[i], 1, v51, 51);

        e = APPLY(s, &c, 0);
        EXPECT_STATUS(e, RELAY_ETOOBIG);
        c.value = v50;
        c.value_len = 50;
        e = APPLY(s, &c, 0);
        assert_int_equal(e.status, RELAY_OK);
    }
    assert_int_equal(last_seq(s, "r"), 4);
    relay_state_destroy(s);
    free(v50);
    free(v51);

    /* zero means the default, 1 MiB */
    {
        uint8_t *ok = bin_total(1024 * 1024, 3);
        uint8_t *big = bin_total(1024 * 1024 + 1, 4);
        struct relay_cmd c =
            cmd_push("r", K("k"), RELAY_ACT_APPEND, 0, big, 1024 * 1024 + 1);

        s = mkstate(NULL);
        CREATE(s, "r");
        e = APPLY(s, &c, 0);
        EXPECT_STATUS(e, RELAY_ETOOBIG);
        c.value = ok;
        c.value_len = 1024 * 1024;
        e = APPLY(s, &c, 0);
        EXPECT_BCAST(e, 1, 1);
        {
            const struct relay_entry *ent;
            size_t n;

            assert_int_equal(relay_stream_read(s, K("r"), K("k"), 0, &ent, &n),
                             RELAY_OK);
            assert_int_equal(n, 1);
            assert_true(
                same_bytes(ent[0].value, ent[0].value_len, ok, 1024 * 1024));
        }
        relay_state_destroy(s);
        free(ok);
        free(big);
    }
}

static struct relay_effects push_bin_at(struct relay_state *s, const char *room,
                                        const char *key, enum relay_action a,
                                        uint64_t cseq, size_t total,
                                        const char *file, int line)
{
    uint8_t *v = bin_total(total, (uint8_t)total);
    struct relay_cmd c = cmd_push(room, key, strlen(key), a, cseq, v, total);
    struct relay_effects e = apply_at(s, &c, 0, file, line);

    free(v);
    return e;
}
#define PUSHBIN(s, room, key, a, cseq, total)                                  \
    push_bin_at((s), (room), (key), (a), (cseq), (total), __FILE__, __LINE__)

/* Retained bytes per room: each stream's key once plus its values. */
static void test_limit_room_bytes(void **state)
{
    struct relay_limits lim;
    struct relay_state *s;
    struct relay_effects e;
    struct blob before, after;

    (void)state;
    memset(&lim, 0, sizeof(lim));
    lim.max_room_bytes = 100;
    s = mkstate(&lim);
    CREATE(s, "r");
    e = PUSHBIN(s, "r", "k", RELAY_ACT_APPEND, 0, 40); /* 41 */
    EXPECT_BCAST(e, 1, 1);
    e = PUSHBIN(s, "r", "k", RELAY_ACT_APPEND, 0, 40); /* 81 */
    EXPECT_BCAST(e, 2, 2);
    before = SNAP(s);
    e = PUSHBIN(s, "r", "k", RELAY_ACT_APPEND, 0, 40); /* 121 */
    EXPECT_STATUS(e, RELAY_ETOOBIG);
    after = SNAP(s);
    EXPECT_SAME_BLOB(before, after, "ETOOBIG append");
    free(before.p);
    free(after.p);
    assert_int_equal(stream_len(s, "r", K("k")), 2);
    assert_int_equal(last_seq(s, "r"), 2);
    e = PUSHBIN(s, "r", "j", RELAY_ACT_APPEND, 0, 10); /* 92 */
    EXPECT_BCAST(e, 3, 1);
    e = PUSHBIN(s, "r", "j", RELAY_ACT_APPEND, 0, 10); /* 102 */
    EXPECT_STATUS(e, RELAY_ETOOBIG);
    e = PUSHBIN(s, "r", "new", RELAY_ACT_REPLACE, 0, 10); /* 105 */
    EXPECT_STATUS(e, RELAY_ETOOBIG);
    assert_true(info_of(s, "r").bytes <= 100);
    /* relay retains nothing, so a full room still relays */
    e = PUSHBIN(s, "r", "k", RELAY_ACT_RELAY, 0, 90);
    EXPECT_BCAST(e, 4, 2); /* k keeps its 2 entries */
    /* replace frees the old entries before counting */
    e = PUSHBIN(s, "r", "k", RELAY_ACT_REPLACE, 0, 40); /* 41 + 11 */
    EXPECT_BCAST(e, 5, 1);
    assert_int_equal(info_of(s, "r").bytes, 52);
    e = PUSHBIN(s, "r", "k", RELAY_ACT_APPEND, 0, 40); /* 92 */
    EXPECT_BCAST(e, 6, 2);
    e = PUSHBIN(s, "r", "j", RELAY_ACT_APPEND, 0, 10);
    EXPECT_STATUS(e, RELAY_ETOOBIG);
    /* so does compact */
    e = PUSHBIN(s, "r", "k", RELAY_ACT_COMPACT, 6, 20); /* 21 + 11 */
    EXPECT_COMPACT(e, 6, 1);
    assert_int_equal(info_of(s, "r").bytes, 32);
    e = PUSHBIN(s, "r", "j", RELAY_ACT_APPEND, 0, 10); /* now it fits */
    EXPECT_BCAST(e, 7, 2);
    assert_int_equal(last_seq(s, "r"), 7);

    /* exact fit, and the limit is per room */
    CREATE(s, "x");
    e = PUSHBIN(s, "x", "e", RELAY_ACT_APPEND, 0, 99); /* 100 */
    EXPECT_BCAST(e, 1, 1);
    assert_int_equal(info_of(s, "x").bytes, 100);
    e = PUSHBIN(s, "x", "e", RELAY_ACT_APPEND, 0, 2);
    EXPECT_STATUS(e, RELAY_ETOOBIG);
    e = PUSHBIN(s, "x", "e", RELAY_ACT_REPLACE, 0, 99);
    EXPECT_BCAST(e, 2, 1);
    before = SNAP(s);
    e = PUSHBIN(s, "x", "e", RELAY_ACT_REPLACE, 0, 100); /* 101 */
    EXPECT_STATUS(e, RELAY_ETOOBIG);
    e = PUSHBIN(s, "x", "f", RELAY_ACT_COMPACT, 2, 2); /* 100 + 3 */
    EXPECT_STATUS(e, RELAY_ETOOBIG);
    e = PUSHBIN(s, "x", "e", RELAY_ACT_COMPACT, 1, 2); /* 100 + 2 */
    EXPECT_STATUS(e, RELAY_ETOOBIG);
    after = SNAP(s);
    EXPECT_SAME_BLOB(before, after, "ETOOBIG replace/compact");
    free(before.p);
    free(after.p);
    e = PUSHBIN(s, "x", "e", RELAY_ACT_COMPACT, 2, 99); /* folds to 100 */
    EXPECT_COMPACT(e, 2, 1);
    assert_int_equal(info_of(s, "x").bytes, 100);
    relay_state_destroy(s);
}

/* Nothing that is refused takes a seq. */
static void test_refusals_take_no_seq(void **state)
{
    struct relay_limits lim;
    struct relay_state *s;
    struct relay_effects e;
    struct relay_cmd c;
    struct mv v = mv_int(1);
    char key[20];

    (void)state;
    memset(key, 'k', sizeof(key));
    memset(&lim, 0, sizeof(lim));
    lim.max_key_len = 10;
    lim.max_value_len = 20;
    lim.max_room_bytes = 30;
    s = mkstate(&lim);
    CREATE(s, "r");
    e = APPEND(s, "r", "a", 1);
    EXPECT_BCAST(e, 1, 1);
    c = cmd_push("r", key, 11, RELAY_ACT_APPEND, 0, v.b, v.n);
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_ETOOBIG);
    EXPECT_STATUS(PUSHBIN(s, "r", "a", RELAY_ACT_RELAY, 0, 21), RELAY_ETOOBIG);
    /* 2 + 20 (or 2 + 21) bytes fit in 30; the next append does not */
    e = PUSHBIN(s, "r", "a", RELAY_ACT_APPEND, 0, 20);
    EXPECT_BCAST(e, 2, 2);
    assert_int_equal(last_seq(s, "r"), 2);
    EXPECT_STATUS(PUSHBIN(s, "r", "a", RELAY_ACT_APPEND, 0, 20), RELAY_ETOOBIG);
    EXPECT_STATUS(COMPACT(s, "r", "a", 3, 1), RELAY_ESEQ);
    EXPECT_STATUS(APPEND(s, "none", "a", 1), RELAY_ENOROOM);
    assert_int_equal(last_seq(s, "r"), 2);
    e = RELAY(s, "r", "a", 1);
    EXPECT_BCAST(e, 3, 2);
    e = REPLACE(s, "r", "a", 1);
    EXPECT_BCAST(e, 4, 1);
    relay_state_destroy(s);
}

static void test_noop(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_cmd c;
    struct relay_effects e;
    struct blob a, b;

    (void)state;
    CREATE(s, "r");
    APPEND(s, "r", "k", 1);
    a = SNAP(s);
    memset(&c, 0, sizeof(c));
    c.type = RELAY_CMD_NOOP;
    e = APPLY(s, &c, 5);
    EXPECT_STATUS(e, RELAY_OK);
    b = SNAP(s);
    EXPECT_SAME_BLOB(a, b, "noop");
    assert_int_equal(APPEND(s, "r", "k", 2).seq, 2);
    free(a.p);
    free(b.p);
    relay_state_destroy(s);
}

/* ---- dedupe ---------------------------------------------------------------
 */

static struct relay_effects opush_at(struct relay_state *s, const char *room,
                                     uint32_t node, uint64_t session,
                                     uint64_t counter, uint64_t now,
                                     const char *file, int line)
{
    struct mv v = mv_int((int64_t)counter);
    struct relay_cmd c = cmd_push(room, K("k"), RELAY_ACT_APPEND, 0, v.b, v.n);

    c.origin.node = node;
    c.origin.session = session;
    c.origin.counter = counter;
    return apply_at(s, &c, now, file, line);
}
/* An append from (node, session, counter) at time now. */
#define OPUSH(s, room, node, sess, ctr, now)                                   \
    opush_at((s), (room), (node), (sess), (ctr), (now), __FILE__, __LINE__)
static void applied_at(const struct relay_effects *e, const char *file,
                       int line)
{
    if (e->status != RELAY_OK || !e->broadcast) {
        print_error("status %d (%s) broadcast %d, want an applied push\n",
                    e->status, relay_strerror(e->status), (int)e->broadcast);
        _fail(file, line);
    }
}
#define EXPECT_APPLIED(e) applied_at(&(e), __FILE__, __LINE__)

static void test_dedupe_basic(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_effects e;

    (void)state;
    CREATE(s, "r");
    /* node 0: never deduplicated, whatever the counter */
    e = OPUSH(s, "r", 0, 1, 1, 0);
    EXPECT_BCAST(e, 1, 1);
    e = OPUSH(s, "r", 0, 1, 1, 0);
    EXPECT_BCAST(e, 2, 2);
    e = OPUSH(s, "r", 0, 1, 0, 0);
    EXPECT_BCAST(e, 3, 3);

    e = OPUSH(s, "r", 1, 1, 5, 0);
    EXPECT_BCAST(e, 4, 4);
    e = OPUSH(s, "r", 1, 1, 5, 0);
    EXPECT_STATUS(e, RELAY_EDUP);
    e = OPUSH(s, "r", 1, 1, 3, 0);
    EXPECT_STATUS(e, RELAY_EDUP);
    /* sessions and nodes are independent */
    e = OPUSH(s, "r", 1, 2, 1, 0);
    EXPECT_BCAST(e, 5, 5);
    e = OPUSH(s, "r", 2, 1, 1, 0);
    EXPECT_BCAST(e, 6, 6);
    e = OPUSH(s, "r", 2, 1, 5, 0);
    EXPECT_BCAST(e, 7, 7);
    /* gaps are fine; then everything up to the highest is a duplicate */
    e = OPUSH(s, "r", 1, 1, 6, 0);
    EXPECT_BCAST(e, 8, 8);
    e = OPUSH(s, "r", 1, 1, 10, 0);
    EXPECT_BCAST(e, 9, 9);
    e = OPUSH(s, "r", 1, 1, 7, 0);
    EXPECT_STATUS(e, RELAY_EDUP);
    e = OPUSH(s, "r", 1, 1, 10, 0);
    EXPECT_STATUS(e, RELAY_EDUP);
    e = OPUSH(s, "r", 1, 1, UINT64_MAX, 0);
    EXPECT_BCAST(e, 10, 10);
    e = OPUSH(s, "r", 1, 1, UINT64_MAX, 0);
    EXPECT_STATUS(e, RELAY_EDUP);
    /* EDUP took no seq and retained nothing */
    assert_int_equal(last_seq(s, "r"), 10);
    assert_int_equal(stream_len(s, "r", K("k")), 10);
    e = OPUSH(s, "r", 0, 0, 0, 0);
    EXPECT_BCAST(e, 11, 11);
    relay_state_destroy(s);
}

/* relay_state_origin_applied answers from the dedupe table, also after a
 * snapshot round trip (consensus asks it after installing one). */
static void test_dedupe_origin_applied(void **state)
{
    struct relay_state *s = mkstate(NULL), *t = mkstate(NULL);
    struct relay_effects e;
    struct blob b;

    (void)state;
    CREATE(s, "r");
    e = OPUSH(s, "r", 2, 7, 5, 0);
    EXPECT_APPLIED(e);
    for (int pass = 0; pass < 2; pass++) {
        struct relay_state *x = pass == 0 ? s : t;

        assert_true(
            relay_state_origin_applied(x, &(struct relay_origin){2, 7, 5}));
        assert_true(
            relay_state_origin_applied(x, &(struct relay_origin){2, 7, 1}));
        assert_false(
            relay_state_origin_applied(x, &(struct relay_origin){2, 7, 6}));
        assert_false(
            relay_state_origin_applied(x, &(struct relay_origin){2, 8, 1}));
        assert_false(
            relay_state_origin_applied(x, &(struct relay_origin){3, 7, 1}));
        if (pass == 0) {
            b = SNAP(s);
            assert_int_equal(restore_copy(t, b.p, b.n), RELAY_OK);
            free(b.p);
        }
    }
    relay_state_destroy(s);
    relay_state_destroy(t);
}

/* A refused command still records its counter: a re-send is EDUP. */
static void test_dedupe_refusal_records(void **state)
{
    struct relay_limits lim;
    struct relay_state *s;
    struct relay_effects e;
    struct relay_cmd c;
    struct mv v = mv_int(1);

    (void)state;
    memset(&lim, 0, sizeof(lim));
    lim.max_key_len = 4;
    s = mkstate(&lim);
    /* ENOROOM */
    e = OPUSH(s, "r", 3, 1, 1, 0);
    EXPECT_STATUS(e, RELAY_ENOROOM);
    CREATE(s, "r");
    e = OPUSH(s, "r", 3, 1, 1, 0);
    EXPECT_STATUS(e, RELAY_EDUP);
    e = OPUSH(s, "r", 3, 1, 2, 0);
    EXPECT_BCAST(e, 1, 1);
    /* ESEQ */
    c = cmd_push("r", K("k"), RELAY_ACT_COMPACT, 99, v.b, v.n);
    c.origin = (struct relay_origin){3, 1, 3};
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_ESEQ);
    c.compact_seq = 1;
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_EDUP);
    EXPECT_STREAM(s, "r", "k", {1, 2});
    /* ETOOBIG */
    c = cmd_push("r", K("kkkkk"), RELAY_ACT_APPEND, 0, v.b, v.n);
    c.origin = (struct relay_origin){3, 1, 4};
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_ETOOBIG);
    c.key_len = 1;
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_EDUP);
    /* EEXIST */
    c = cmd_room(RELAY_CMD_CREATE_ROOM, K("r"));
    c.origin = (struct relay_origin){3, 1, 5};
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_EEXIST);
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_EDUP);
    assert_int_equal(last_seq(s, "r"), 1);
    /* a create applied under an origin is deduplicated too */
    c = cmd_room(RELAY_CMD_CREATE_ROOM, K("q"));
    c.origin = (struct relay_origin){3, 2, 1};
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_OK);
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_EDUP);
    relay_state_destroy(s);
}

/* max_dedupe: the least recently used session is forgotten first. */
static void test_dedupe_lru(void **state)
{
    struct relay_limits lim;
    struct relay_state *s;
    struct relay_effects e;

    (void)state;
    memset(&lim, 0, sizeof(lim));
    lim.max_dedupe = 2;
    s = mkstate(&lim);
    CREATE(s, "r");
    e = OPUSH(s, "r", 1, 1, 1, 1); /* A */
    EXPECT_APPLIED(e);
    e = OPUSH(s, "r", 1, 2, 1, 2); /* B */
    EXPECT_APPLIED(e);
    e = OPUSH(s, "r", 1, 1, 2, 3); /* A used again: B is now the oldest */
    EXPECT_APPLIED(e);
    e = OPUSH(s, "r", 2, 1, 1, 4); /* C: evicts B */
    EXPECT_APPLIED(e);
    e = OPUSH(s, "r", 2, 1, 1, 5); /* C remembered */
    EXPECT_STATUS(e, RELAY_EDUP);
    e = OPUSH(s, "r", 1, 1, 2, 6); /* A remembered */
    EXPECT_STATUS(e, RELAY_EDUP);
    /* B was forgotten: its old counter applies again (documented) */
    e = OPUSH(s, "r", 1, 2, 1, 7);
    EXPECT_APPLIED(e);
    assert_int_equal(last_seq(s, "r"), 5);
    relay_state_destroy(s);

    /* a larger table under pressure: exactly the newest max stay */
    memset(&lim, 0, sizeof(lim));
    lim.max_dedupe = 100;
    s = mkstate(&lim);
    CREATE(s, "r");
    for (uint64_t sess = 1; sess <= 1000; sess++) {
        e = OPUSH(s, "r", 9, sess, 1, sess);
        EXPECT_APPLIED(e);
    }
    for (uint64_t sess = 1000; sess > 900; sess--) {
        e = OPUSH(s, "r", 9, sess, 1, 2000);
        EXPECT_STATUS(e, RELAY_EDUP);
    }
    e = OPUSH(s, "r", 9, 1, 1, 2001);
    EXPECT_APPLIED(e);
    relay_state_destroy(s);
}

/* dedupe_ttl_ms: a session idle longer than the ttl is forgotten. */
static void test_dedupe_ttl(void **state)
{
    struct relay_limits lim;
    struct relay_state *s;
    struct relay_effects e;

    (void)state;
    memset(&lim, 0, sizeof(lim));
    lim.dedupe_ttl_ms = 1000;
    s = mkstate(&lim);
    CREATE(s, "r");
    e = OPUSH(s, "r", 1, 1, 1, 1000);
    EXPECT_APPLIED(e);
    e = OPUSH(s, "r", 1, 1, 1, 1500); /* idle 500 */
    EXPECT_STATUS(e, RELAY_EDUP);
    /* another command's time passes the ttl */
    e = OPUSH(s, "r", 0, 0, 0, 3000);
    EXPECT_APPLIED(e);
    e = OPUSH(s, "r", 1, 1, 1, 3000);
    EXPECT_APPLIED(e);

    /* the session's own later command passes the ttl */
    e = OPUSH(s, "r", 1, 7, 5, 10000);
    EXPECT_APPLIED(e);
    e = OPUSH(s, "r", 1, 7, 5, 20000);
    EXPECT_APPLIED(e);

    /* idle is measured from the last apply, not the first */
    e = OPUSH(s, "r", 2, 1, 1, 30000);
    EXPECT_APPLIED(e);
    e = OPUSH(s, "r", 2, 1, 2, 30800);
    EXPECT_APPLIED(e);
    e = OPUSH(s, "r", 2, 1, 3, 31600);
    EXPECT_APPLIED(e);
    e = OPUSH(s, "r", 2, 1, 4, 32400);
    EXPECT_APPLIED(e);
    e = OPUSH(s, "r", 0, 0, 0, 32900);
    EXPECT_APPLIED(e);
    e = OPUSH(s, "r", 2, 1, 4, 33300); /* idle 900 */
    EXPECT_STATUS(e, RELAY_EDUP);
    e = OPUSH(s, "r", 2, 1, 2, 33300);
    EXPECT_STATUS(e, RELAY_EDUP);
    relay_state_destroy(s);
}

/* Log times come from successive leaders and may step backwards. */
static void test_dedupe_time_backwards(void **state)
{
    struct relay_limits lim;
    struct relay_state *s;
    struct relay_effects e;

    (void)state;
    memset(&lim, 0, sizeof(lim));
    lim.dedupe_ttl_ms = 1000;
    s = mkstate(&lim);
    CREATE(s, "r");
    e = OPUSH(s, "r", 1, 1, 1, 10000);
    EXPECT_APPLIED(e);
    e = OPUSH(s, "r", 0, 0, 0, 5000); /* older clock */
    EXPECT_APPLIED(e);
    e = OPUSH(s, "r", 1, 1, 1, 5000);
    EXPECT_STATUS(e, RELAY_EDUP);
    e = OPUSH(s, "r", 1, 1, 1, 10500);
    EXPECT_STATUS(e, RELAY_EDUP);
    relay_state_destroy(s);

    /* a ttl at the top of the range must not overflow into "expired" */
    memset(&lim, 0, sizeof(lim));
    lim.dedupe_ttl_ms = UINT64_MAX;
    s = mkstate(&lim);
    CREATE(s, "r");
    e = OPUSH(s, "r", 1, 1, 1, 5);
    EXPECT_APPLIED(e);
    e = OPUSH(s, "r", 0, 0, 0, UINT64_MAX - 1);
    EXPECT_APPLIED(e);
    e = OPUSH(s, "r", 1, 1, 1, UINT64_MAX - 1);
    EXPECT_STATUS(e, RELAY_EDUP);
    relay_state_destroy(s);

    /* and now_ms at the top of the range with the default ttl */
    s = mkstate(NULL);
    CREATE(s, "r");
    e = OPUSH(s, "r", 1, 1, 1, UINT64_MAX);
    EXPECT_APPLIED(e);
    e = OPUSH(s, "r", 1, 1, 1, UINT64_MAX);
    EXPECT_STATUS(e, RELAY_EDUP);
    relay_state_destroy(s);
}

/* ---- node directory -------------------------------------------------------
 */

static void test_node_directory(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_node_info ni;
    struct nodes ns;
    struct relay_cmd c;

    (void)state;
    memset(&ns, 0, sizeof(ns));
    relay_nodes_each(s, on_node, &ns);
    assert_int_equal(ns.n, 0);
    assert_false(relay_node_lookup(s, 1, &ni));

    c = cmd_node(RELAY_CMD_NODE_SET, 5, "10.0.0.5:9000", "10.0.0.5:8080");
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_OK);
    c = cmd_node(RELAY_CMD_NODE_SET, 1, "10.0.0.1:9000", "10.0.0.1:8080");
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_OK);
    c = cmd_node(RELAY_CMD_NODE_SET, 3, "h3:1", "h3:2");
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_OK);
    c = cmd_node(RELAY_CMD_NODE_SET, UINT32_MAX, "max:1", "max:2");
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_OK);

    memset(&ns, 0, sizeof(ns));
    relay_nodes_each(s, on_node, &ns);
    assert_int_equal(ns.n, 4);
    assert_int_equal(ns.id[0], 1);
    assert_int_equal(ns.id[1], 3);
    assert_int_equal(ns.id[2], 5);
    assert_int_equal(ns.id[3], UINT32_MAX);
    assert_string_equal(ns.raft[0], "10.0.0.1:9000");
    assert_string_equal(ns.http[0], "10.0.0.1:8080");
    assert_string_equal(ns.raft[2], "10.0.0.5:9000");

    assert_true(relay_node_lookup(s, 3, &ni));
    assert_int_equal(ni.id, 3);
    assert_string_equal(ni.raft_addr, "h3:1");
    assert_string_equal(ni.http_addr, "h3:2");
    assert_false(relay_node_lookup(s, 2, &ni));
    assert_false(relay_node_lookup(s, 0, &ni));

    /* update: a restarted node with new addresses */
    c = cmd_node(RELAY_CMD_NODE_SET, 3, "new-host:19000", "new-host:18080");
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_OK);
    assert_true(relay_node_lookup(s, 3, &ni));
    assert_string_equal(ni.raft_addr, "new-host:19000");
    assert_string_equal(ni.http_addr, "new-host:18080");
    memset(&ns, 0, sizeof(ns));
    relay_nodes_each(s, on_node, &ns);
    assert_int_equal(ns.n, 4);

    /* forget */
    c = cmd_node(RELAY_CMD_NODE_FORGET, 3, NULL, NULL);
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_OK);
    assert_false(relay_node_lookup(s, 3, &ni));
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_ENOROOM);
    c = cmd_node(RELAY_CMD_NODE_FORGET, 42, NULL, NULL);
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_ENOROOM);
    memset(&ns, 0, sizeof(ns));
    relay_nodes_each(s, on_node, &ns);
    assert_int_equal(ns.n, 3);
    assert_int_equal(ns.id[0], 1);
    assert_int_equal(ns.id[1], 5);
    assert_int_equal(ns.id[2], UINT32_MAX);
    /* and back */
    c = cmd_node(RELAY_CMD_NODE_SET, 3, "h3:1", "h3:2");
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_OK);
    assert_true(relay_node_lookup(s, 3, &ni));
    /* directory commands take no room seq and touch no room */
    assert_int_equal(relay_state_room_count(s), 0);
    relay_state_destroy(s);
}

static void test_node_directory_invalid(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_node_info ni;
    struct relay_cmd c;
    struct relay_effects e;
    char addr[RELAY_ADDR_MAX + 2];
    struct blob a, b;

    (void)state;
    memset(addr, 'a', sizeof(addr));
    addr[RELAY_ADDR_MAX] = '\0'; /* exactly the maximum */
    c = cmd_node(RELAY_CMD_NODE_SET, 7, addr, addr);
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_OK);
    assert_true(relay_node_lookup(s, 7, &ni));
    assert_int_equal(strlen(ni.raft_addr), RELAY_ADDR_MAX);
    assert_int_equal(strlen(ni.http_addr), RELAY_ADDR_MAX);

    a = SNAP(s);
    addr[RELAY_ADDR_MAX] = 'b';
    addr[RELAY_ADDR_MAX + 1] = '\0'; /* one byte over */
    c = cmd_node(RELAY_CMD_NODE_SET, 8, addr, "h:1");
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_EINVAL);
    c = cmd_node(RELAY_CMD_NODE_SET, 8, "h:1", addr);
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_EINVAL);
    c = cmd_node(RELAY_CMD_NODE_SET, 7, addr, addr); /* update too */
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_EINVAL);
    c = cmd_node(RELAY_CMD_NODE_SET, 0, "h:1", "h:2");
    EXPECT_STATUS(APPLY(s, &c, 0), RELAY_EINVAL);
    /* id 0 is invalid before it is unknown */
    c = cmd_node(RELAY_CMD_NODE_FORGET, 0, NULL, NULL);
    e = APPLY(s, &c, 0);
    EXPECT_STATUS(e, RELAY_EINVAL);
    assert_false(e.broadcast);
    b = SNAP(s);
    EXPECT_SAME_BLOB(a, b, "refused node commands");
    assert_false(relay_node_lookup(s, 8, &ni));
    assert_false(relay_node_lookup(s, 0, &ni));
    assert_true(relay_node_lookup(s, 7, &ni));
    assert_int_equal(strlen(ni.raft_addr), RELAY_ADDR_MAX);
    free(a.p);
    free(b.p);
    relay_state_destroy(s);
}

/*
 * Addresses are lengths plus bytes in the command, NUL-terminated strings in
 * the directory. So a NODE_SET with a NUL byte inside either address is
 * refused (EINVAL) and leaves the directory as it was: accepted, its
 * address would read shorter than it was given and differently after a
 * snapshot.
 */
static void test_node_addr_with_nul(void **state)
{
    static const struct {
        const char *raft;
        size_t rl;
        const char *http;
        size_t hl;
    } cases[] = {
        {K("\0x"), K("h:1")},
        {K("r:1"), K("\0")},
        {K("a\0b"), K("c\0d")},
        {K("\0"), K("\0")},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct relay_state *s = mkstate(NULL);
        struct relay_cmd c = cmd_node(RELAY_CMD_NODE_SET, 6, NULL, NULL);
        struct relay_node_info ni;
        struct relay_effects e;
        struct blob a, b;

        a = SNAP(s);
        c.raft_addr = cases[i].raft;
        c.raft_addr_len = cases[i].rl;
        c.http_addr = cases[i].http;
        c.http_addr_len = cases[i].hl;
        e = APPLY(s, &c, 0);
        EXPECT_STATUS(e, RELAY_EINVAL);
        assert_false(e.broadcast);
        assert_false(relay_node_lookup(s, 6, &ni));
        b = SNAP(s);
        EXPECT_SAME_BLOB(a, b, "node address with NUL");
        free(a.p);
        free(b.p);
        relay_state_destroy(s);
    }
}

/* ---- model test -----------------------------------------------------------
 */

#define M_ROOMS 4
#define M_KEYS 6

static const char *const m_rooms[M_ROOMS] = {"alpha", "beta", "gamma", "delta"};
static const struct item m_keys[M_KEYS] = {
    {(char *)"", 0},
    {(char *)"a", 1},
    {(char *)"a\0", 2},
    {(char *)"b\0c", 3},
    {(char *)"\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87", 8},
    {(char *)"\xf0\x9f\x94\x91", 4},
};

struct m_stream {
    struct ent *e;
    size_t n;
    size_t cap;
    bool exists;
};

struct m_room {
    bool exists;
    uint64_t last;
    uint64_t created;
    struct m_stream st[M_KEYS];
    int order[M_KEYS];
    size_t norder;
};

static void m_room_reset(struct m_room *r)
{
    for (int k = 0; k < M_KEYS; k++)
        free(r->st[k].e);
    memset(r, 0, sizeof(*r));
}

static void m_stream_insert(struct m_stream *st, size_t at, struct ent x)
{
    if (st->n == st->cap) {
        st->cap = st->cap ? 2 * st->cap : 8;
        st->e = realloc(st->e, st->cap * sizeof(*st->e));
        assert_non_null(st->e);
    }
    memmove(st->e + at + 1, st->e + at, (st->n - at) * sizeof(*st->e));
    st->e[at] = x;
    st->n++;
}

static void m_touch_key(struct m_room *r, int k)
{
    if (!r->st[k].exists) {
        r->st[k].exists = true;
        r->order[r->norder++] = k;
    }
}

static void m_check_stream_at(const struct relay_state *s, int ri,
                              const struct m_room *r, int k, uint64_t after,
                              int line)
{
    const struct m_stream *st = &r->st[k];
    size_t first = 0;

    while (first < st->n && st->e[first].seq <= after)
        first++;
    check_stream_at(s, m_rooms[ri], m_keys[k].p, m_keys[k].n, after,
                    st->e ? st->e + first : NULL, st->n - first, __FILE__,
                    line);
}

static void m_full_check(const struct relay_state *s, const struct m_room *m,
                         int line)
{
    struct rooms rs = rooms_of(s);
    size_t nexist = 0;
    int order[M_ROOMS];

    for (int i = 0; i < M_ROOMS; i++)
        if (m[i].exists)
            order[nexist++] = i;
    /* creation order */
    for (size_t i = 1; i < nexist; i++)
        for (size_t j = i;
             j > 0 && m[order[j]].created < m[order[j - 1]].created; j--) {
            int t = order[j];

            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    if (relay_state_room_count(s) != nexist || rs.ids.n != nexist) {
        print_error("room count %zu / rooms_each %zu, model %zu\n",
                    relay_state_room_count(s), rs.ids.n, nexist);
        _fail(__FILE__, line);
    }
    for (size_t i = 0; i < nexist; i++) {
        const struct m_room *r = &m[order[i]];
        const struct relay_room_info *ri = &rs.ri[i];
        struct list keys = {0};
        size_t entries = 0, bytes = 0, j = 0;

        if (strcmp(rs.ids.v[i].p, m_rooms[order[i]]) != 0) {
            print_error("room %zu: %s, model %s\n", i, rs.ids.v[i].p,
                        m_rooms[order[i]]);
            _fail(__FILE__, line);
        }
        for (size_t o = 0; o < r->norder; o++) {
            const struct m_stream *st = &r->st[r->order[o]];
            size_t kl = m_keys[r->order[o]].n;

            entries += st->n;
            bytes += kl; /* a key counts once per stream */
            for (size_t e = 0; e < st->n; e++)
                bytes += mv_int(st->e[e].val).n;
        }
        /* relay to key "r" retains nothing and creates no stream: it adds
         * no key and no bytes */
        if (ri->last_seq != r->last || ri->entries != entries ||
            ri->keys != r->norder || ri->bytes != bytes) {
            print_error("room %s info: last %" PRIu64 " entries %zu keys %zu "
                        "bytes %zu; model last %" PRIu64 " entries %zu keys "
                        "%zu bytes %zu\n",
                        m_rooms[order[i]], ri->last_seq, ri->entries, ri->keys,
                        ri->bytes, r->last, entries, r->norder, bytes);
            _fail(__FILE__, line);
        }
        assert_int_equal(relay_room_keys(s, m_rooms[order[i]],
                                         strlen(m_rooms[order[i]]), on_key,
                                         &keys),
                         RELAY_OK);
        for (size_t o = 0; o < keys.n; o++) {
            const struct item *mk;

            mk = j < r->norder ? &m_keys[r->order[j]] : NULL;
            if (mk == NULL ||
                !same_bytes(keys.v[o].p, keys.v[o].n, mk->p, mk->n)) {
                print_error("room %s key %zu (len %zu) out of order\n",
                            m_rooms[order[i]], o, keys.v[o].n);
                _fail(__FILE__, line);
            }
            j++;
        }
        if (j != r->norder) {
            print_error("room %s: %zu keys listed, model %zu\n",
                        m_rooms[order[i]], j, r->norder);
            _fail(__FILE__, line);
        }
        list_free(&keys);
        for (int k = 0; k < M_KEYS; k++)
            m_check_stream_at(s, order[i], r, k, 0, line);
    }
    for (int i = 0; i < M_ROOMS; i++) {
        if (!m[i].exists) {
            const struct relay_entry *e;
            size_t n;

            assert_false(relay_room_exists(s, m_rooms[i], strlen(m_rooms[i])));
            assert_int_equal(relay_stream_read(s, m_rooms[i],
                                               strlen(m_rooms[i]), K("a"), 0,
                                               &e, &n),
                             RELAY_ENOROOM);
        }
    }
    rooms_free(&rs);
}

/* Random commands against a reference model of docs/protocol.md's table. */
static void test_model_random(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_state *t;
    struct m_room m[M_ROOMS];
    uint64_t rng = 0x5eed;
    uint64_t clock = 0;
    struct blob a, b;

    (void)state;
    memset(m, 0, sizeof(m));
    for (int op = 0; op < 20000; op++) {
        uint64_t r = xorshift(&rng) % 100;
        int ri = (int)(xorshift(&rng) % M_ROOMS);
        struct m_room *mr = &m[ri];
        const char *id = m_rooms[ri];
        struct relay_effects e;

        if (r < 3) {
            e = ROOMCMD(s, RELAY_CMD_CREATE_ROOM, id);
            if (mr->exists) {
                EXPECT_STATUS(e, RELAY_EEXIST);
            } else {
                EXPECT_STATUS(e, RELAY_OK);
                mr->exists = true;
                mr->created = ++clock;
            }
        } else if (r < 4) {
            e = ROOMCMD(s, RELAY_CMD_DELETE_ROOM, id);
            if (mr->exists) {
                EXPECT_STATUS(e, RELAY_OK);
                m_room_reset(mr);
            } else {
                EXPECT_STATUS(e, RELAY_ENOROOM);
            }
        } else {
            uint64_t a_ = xorshift(&rng) % 100;
            int k = (int)(xorshift(&rng) % M_KEYS);
            int64_t v = (int64_t)(xorshift(&rng) % 2000000) - 1000000;
            enum relay_action act = a_ < 15   ? RELAY_ACT_RELAY
                                    : a_ < 30 ? RELAY_ACT_REPLACE
                                    : a_ < 75 ? RELAY_ACT_APPEND
                                              : RELAY_ACT_COMPACT;
            uint64_t S = 0;
            const char *kp = m_keys[k].p;
            size_t kn = m_keys[k].n;

            if (act == RELAY_ACT_COMPACT)
                S = 1 + xorshift(&rng) % (mr->last + 2);
            if (act == RELAY_ACT_RELAY && !mr->st[k].exists) {
                k = -1;
                kp = "r";
                kn = 1;
            }
            e = PUSHN(s, id, kp, kn, act, S, v);
            if (!mr->exists) {
                EXPECT_STATUS(e, RELAY_ENOROOM);
                continue;
            }
            switch (act) {
            case RELAY_ACT_RELAY:
                /* stream_size reports what the key retains, if anything */
                EXPECT_BCAST(e, mr->last + 1, k >= 0 ? mr->st[k].n : 0);
                mr->last++;
                break;
            case RELAY_ACT_REPLACE:
                mr->last++;
                m_touch_key(mr, k);
                mr->st[k].n = 0;
                m_stream_insert(&mr->st[k], 0, (struct ent){mr->last, v});
                EXPECT_BCAST(e, mr->last, 1);
                break;
            case RELAY_ACT_APPEND:
                mr->last++;
                m_touch_key(mr, k);
                m_stream_insert(&mr->st[k], mr->st[k].n,
                                (struct ent){mr->last, v});
                EXPECT_BCAST(e, mr->last, mr->st[k].n);
                break;
            case RELAY_ACT_COMPACT:
                if (S > mr->last) {
                    EXPECT_STATUS(e, RELAY_ESEQ);
                } else {
                    struct m_stream *st = &mr->st[k];
                    size_t drop = 0;

                    m_touch_key(mr, k);
                    while (drop < st->n && st->e[drop].seq <= S)
                        drop++;
                    if (drop > 0) {
                        memmove(st->e, st->e + drop,
                                (st->n - drop) * sizeof(*st->e));
                        st->n -= drop;
                    }
                    m_stream_insert(st, 0, (struct ent){S, v});
                    EXPECT_COMPACT(e, S, st->n);
                }
                break;
            }
            if (k >= 0) {
                m_check_stream_at(s, ri, mr, k, 0, __LINE__);
                m_check_stream_at(s, ri, mr, k, xorshift(&rng) % (mr->last + 2),
                                  __LINE__);
            }
            assert_int_equal(last_seq(s, id), mr->last);
        }
        if (op % 97 == 0)
            m_full_check(s, m, __LINE__);
    }
    m_full_check(s, m, __LINE__);
    /* the restored copy reads the same */
    a = SNAP(s);
    t = mkstate(NULL);
    assert_int_equal(restore_copy(t, a.p, a.n), RELAY_OK);
    m_full_check(t, m, __LINE__);
    b = SNAP(t);
    EXPECT_SAME_BLOB(a, b, "model state");
    free(a.p);
    free(b.p);
    relay_state_destroy(t);
    for (int i = 0; i < M_ROOMS; i++)
        m_room_reset(&m[i]);
    relay_state_destroy(s);
}

/* ---- snapshots ------------------------------------------------------------
 */

static void test_snapshot_empty(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_state *t;
    struct blob a, b, c;

    (void)state;
    a = SNAP(s);
    t = rich_state(3, 500);
    assert_true(relay_state_room_count(t) > 0);
    /* restore replaces the content: a rich state becomes empty */
    assert_int_equal(restore_copy(t, a.p, a.n), RELAY_OK);
    b = SNAP(t);
    EXPECT_SAME_BLOB(a, b, "empty restore");
    assert_int_equal(relay_state_room_count(t), 0);
    EXPECT_SAME_VIEW(s, t);
    /* and works afterwards */
    CREATE(t, "r");
    assert_int_equal(APPEND(t, "r", "k", 1).seq, 1);
    c = SNAP(t);
    assert_int_equal(restore_copy(s, c.p, c.n), RELAY_OK);
    EXPECT_STREAM(s, "r", "k", {1, 1});
    free(a.p);
    free(b.p);
    free(c.p);
    relay_state_destroy(t);
    relay_state_destroy(s);
}

static void test_snapshot_roundtrip(void **state)
{
    struct relay_limits lim;
    struct relay_state *s = rich_state(1, 3000);
    struct relay_state *t, *u;
    struct blob a, b, c, d;

    (void)state;
    gen_limits(&lim);
    a = SNAP(s);
    t = mkstate(&lim);
    assert_int_equal(restore_copy(t, a.p, a.n), RELAY_OK);
    b = SNAP(t);
    EXPECT_SAME_BLOB(a, b, "restore once");
    u = mkstate(&lim);
    assert_int_equal(restore_copy(u, b.p, b.n), RELAY_OK);
    c = SNAP(u);
    EXPECT_SAME_BLOB(a, c, "restore twice");
    EXPECT_SAME_VIEW(s, t);
    EXPECT_SAME_VIEW(s, u);
    /* restoring a state's own snapshot into itself is a no-op */
    assert_int_equal(restore_copy(s, a.p, a.n), RELAY_OK);
    d = SNAP(s);
    EXPECT_SAME_BLOB(a, d, "self restore");
    /* snapshotting does not change anything */
    free(d.p);
    d = SNAP(s);
    EXPECT_SAME_BLOB(a, d, "second snapshot");
    free(a.p);
    free(b.p);
    free(c.p);
    free(d.p);
    relay_state_destroy(u);
    relay_state_destroy(t);
    relay_state_destroy(s);
}

static void test_snapshot_deterministic(void **state)
{
    struct relay_limits lim;
    struct relay_state *ss[2];
    struct gen g;

    (void)state;
    gen_limits(&lim);
    ss[0] = mkstate(&lim);
    ss[1] = mkstate(&lim);
    gen_init(&g, 2, 0);
    for (int round = 0; round < 8; round++) {
        struct blob a, b;

        DRIVE(ss, 2, &g, 500);
        a = SNAP(ss[0]);
        b = SNAP(ss[1]);
        EXPECT_SAME_BLOB(a, b, "two states, one log");
        free(a.p);
        free(b.p);
    }
    EXPECT_SAME_VIEW(ss[0], ss[1]);
    relay_state_destroy(ss[0]);
    relay_state_destroy(ss[1]);
}

/* A restored state decides everything the way the original does. */
static void test_snapshot_restored_behaves(void **state)
{
    struct relay_limits lim;
    struct relay_state *ss[2];
    struct gen g;
    struct blob a, b;
    int rc;

    (void)state;
    gen_limits(&lim);
    for (int variant = 0; variant < 3; variant++) {
        ss[0] = rich_state(10 + (uint64_t)variant, 2000);
        a = SNAP(ss[0]);
        ss[1] = mkstate(&lim);
        rc = restore_copy(ss[1], a.p, a.n);
        if (rc != RELAY_OK)
            fail_msg("variant %d: the snapshot of a state built by the "
                     "log does not restore (rc %d)",
                     variant, rc);
        free(a.p);
        /* variant 0: the same sessions' counters restart (mostly EDUP);
         * 1: they continue; 2: a later time (ttl expiries) */
        gen_init(&g, 100 + (uint64_t)variant, variant == 1 ? 50 : 0);
        if (variant == 2)
            g.now = 10000000;
        DRIVE(ss, 2, &g, 2000);
        a = SNAP(ss[0]);
        b = SNAP(ss[1]);
        EXPECT_SAME_BLOB(a, b, "after further commands");
        EXPECT_SAME_VIEW(ss[0], ss[1]);
        free(a.p);
        free(b.p);
        relay_state_destroy(ss[0]);
        relay_state_destroy(ss[1]);
    }
}

/* Directed: the dedupe table and directory survive a snapshot. */
static void test_snapshot_keeps_dedupe_and_nodes(void **state)
{
    struct relay_limits lim;
    struct relay_state *s, *t;
    struct relay_cmd c;
    struct relay_node_info ni;
    struct blob a;
    struct relay_effects e;

    (void)state;
    memset(&lim, 0, sizeof(lim));
    lim.max_dedupe = 2;
    lim.dedupe_ttl_ms = 1000;
    s = mkstate(&lim);
    CREATE(s, "r");
    EXPECT_BCAST(OPUSH(s, "r", 1, 1, 1, 100), 1, 1); /* A */
    EXPECT_BCAST(OPUSH(s, "r", 1, 2, 1, 200), 2, 2); /* B */
    EXPECT_BCAST(OPUSH(s, "r", 1, 1, 2, 300), 3, 3); /* A again: B is LRU */
    c = cmd_node(RELAY_CMD_NODE_SET, 4, "r4:1", "h4:1");
    APPLY(s, &c, 300);
    a = SNAP(s);
    t = mkstate(&lim);
    assert_int_equal(restore_copy(t, a.p, a.n), RELAY_OK);
    free(a.p);
    for (int i = 0; i < 2; i++) {
        struct relay_state *x = i ? t : s;

        assert_true(relay_node_lookup(x, 4, &ni));
        assert_string_equal(ni.raft_addr, "r4:1");
        e = OPUSH(x, "r", 1, 1, 2, 400);
        EXPECT_STATUS(e, RELAY_EDUP);
        e = OPUSH(x, "r", 2, 1, 1, 500); /* C evicts the LRU, B */
        EXPECT_BCAST(e, 4, 4);
        e = OPUSH(x, "r", 1, 1, 2, 600);
        EXPECT_STATUS(e, RELAY_EDUP);
        e = OPUSH(x, "r", 1, 2, 1, 700); /* B forgotten */
        EXPECT_BCAST(e, 5, 5);
        e = OPUSH(x, "r", 0, 0, 0, 5000); /* all idle past the ttl */
        EXPECT_BCAST(e, 6, 6);
        e = OPUSH(x, "r", 2, 1, 1, 5000);
        EXPECT_BCAST(e, 7, 7);
    }
    EXPECT_SAME_VIEW(s, t);
    relay_state_destroy(t);
    relay_state_destroy(s);
}

/*
 * Log time comes from whichever node led when the entry was proposed, so it
 * may step backwards; every snapshot the state produces must restore.
 */
static void test_snapshot_time_backwards(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_state *t = mkstate(NULL);
    struct blob a, b;
    struct relay_effects e;

    (void)state;
    CREATE(s, "r");
    e = OPUSH(s, "r", 1, 1, 1, 10000); /* leader 1's clock */
    EXPECT_BCAST(e, 1, 1);
    e = OPUSH(s, "r", 2, 1, 1, 5000); /* leader 2's clock is behind */
    EXPECT_BCAST(e, 2, 2);
    a = SNAP(s);
    assert_int_equal(restore_copy(t, a.p, a.n), RELAY_OK);
    b = SNAP(t);
    EXPECT_SAME_BLOB(a, b, "time backwards");
    /* both sessions are still remembered on the restored copy */
    e = OPUSH(t, "r", 1, 1, 1, 6000);
    EXPECT_STATUS(e, RELAY_EDUP);
    e = OPUSH(t, "r", 2, 1, 1, 6000);
    EXPECT_STATUS(e, RELAY_EDUP);
    free(a.p);
    free(b.p);
    relay_state_destroy(t);
    relay_state_destroy(s);
}

/* Every proper prefix is refused, and the target state stays as it was. */
static void test_snapshot_truncated(void **state)
{
    struct relay_state *s = rich_state_clock(4, 1500, true);
    struct relay_state *t = rich_state_clock(5, 60, true);
    struct blob a, before, after;

    (void)state;
    a = SNAP(s);
    before = SNAP(t);
    print_message("snapshot of %zu bytes\n", a.n);
    for (size_t len = 0; len < a.n; len++) {
        int rc = restore_copy(t, a.p, len);

        if (rc != RELAY_EINVAL)
            fail_msg("prefix of %zu/%zu bytes: rc %d, want RELAY_EINVAL", len,
                     a.n, rc);
        after = SNAP(t);
        if (!same_bytes(before.p, before.n, after.p, after.n))
            fail_msg("prefix of %zu/%zu bytes changed the state", len, a.n);
        free(after.p);
    }
    /* trailing bytes after a valid snapshot are malformed too */
    {
        uint8_t *x = malloc(a.n + 1);

        assert_non_null(x);
        memcpy(x, a.p, a.n);
        x[a.n] = 0xc0;
        assert_int_equal(restore_copy(t, x, a.n + 1), RELAY_EINVAL);
        after = SNAP(t);
        EXPECT_SAME_BLOB(before, after, "trailing byte");
        free(after.p);
        free(x);
    }
    /* the full thing still works */
    assert_int_equal(restore_copy(t, a.p, a.n), RELAY_OK);
    after = SNAP(t);
    EXPECT_SAME_BLOB(a, after, "full snapshot");
    free(after.p);
    free(a.p);
    free(before.p);
    relay_state_destroy(t);
    relay_state_destroy(s);
}

/*
 * Flipped bytes and random garbage: refused with the state untouched, or
 * accepted into a state that keeps every invariant and snapshots to bytes
 * that restore to the same state.
 */
static void test_snapshot_fuzz(void **state)
{
    struct relay_limits lim;
    struct relay_state *s = rich_state_clock(6, 400, true);
    struct relay_state *t = rich_state_clock(7, 50, true);
    struct relay_state *u;
    struct blob a, base;
    uint64_t rng = 1;
    int accepted = 0, refused = 0;
    uint8_t *buf;

    (void)state;
    gen_limits(&lim);
    u = mkstate(&lim);
    a = SNAP(s);
    base = SNAP(t);
    buf = malloc(a.n + 64);
    assert_non_null(buf);
    /* the unmodified snapshots restore */
    assert_int_equal(restore_copy(u, a.p, a.n), RELAY_OK);
    assert_int_equal(restore_copy(t, base.p, base.n), RELAY_OK);
    for (int it = 0; it < 3000; it++) {
        size_t n = a.n;
        int rc;
        struct blob after;

        memcpy(buf, a.p, a.n);
        if (it % 10 == 9) {
            /* random garbage, sometimes with a plausible first byte */
            n = (size_t)(xorshift(&rng) % 300);
            for (size_t i = 0; i < n; i++)
                buf[i] = (uint8_t)xorshift(&rng);
            if (n > 0 && xorshift(&rng) % 2)
                buf[0] = (uint8_t)(0x90 | (xorshift(&rng) % 16));
        } else {
            int flips = 1 + (int)(xorshift(&rng) % 3);

            for (int f = 0; f < flips; f++) {
                size_t at = (size_t)(xorshift(&rng) % a.n);

                switch (xorshift(&rng) % 4) {
                case 0:
                    buf[at] ^= (uint8_t)(1u << (xorshift(&rng) % 8));
                    break;
                case 1:
                    buf[at] = (uint8_t)xorshift(&rng);
                    break;
                case 2:
                    buf[at] = (uint8_t)(buf[at] + 1);
                    break;
                default:
                    buf[at] = (uint8_t)(buf[at] - 1);
                    break;
                }
            }
        }
        rc = restore_copy(t, buf, n);
        if (rc == RELAY_EINVAL) {
            refused++;
            after = SNAP(t);
            if (!same_bytes(base.p, base.n, after.p, after.n))
                fail_msg("iteration %d: refused restore changed the state", it);
            free(after.p);
            continue;
        }
        if (rc != RELAY_OK)
            fail_msg("iteration %d: restore rc %d", it, rc);
        accepted++;
        {
            struct vec v = {0};
            struct blob b, c;

            DUMP(t, &v);
            free(v.p);
            b = SNAP(t);
            assert_int_equal(restore_copy(u, b.p, b.n), RELAY_OK);
            c = SNAP(u);
            if (!same_bytes(b.p, b.n, c.p, c.n))
                fail_msg("iteration %d: accepted snapshot does not "
                         "round-trip",
                         it);
            EXPECT_SAME_VIEW(t, u);
            /* and it keeps working */
            {
                struct gen g;
                struct relay_state *pair[2] = {t, u};

                gen_init(&g, (uint64_t)it, 0);
                DRIVE(pair, 2, &g, 20);
            }
            free(b.p);
            free(c.p);
        }
        assert_int_equal(restore_copy(t, base.p, base.n), RELAY_OK);
    }
    print_message("snapshot fuzz: %d accepted, %d refused\n", accepted,
                  refused);
    assert_true(refused > 0);
    free(buf);
    free(a.p);
    free(base.p);
    relay_state_destroy(u);
    relay_state_destroy(t);
    relay_state_destroy(s);
}

/* null (msgpack nil) is a value like any other: retained, counted, read
 * back and kept by a snapshot. */
static void test_null_value(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_state *t = mkstate(NULL);
    struct relay_cmd c = cmd_room(RELAY_CMD_CREATE_ROOM, "r", 1);
    const uint8_t nil[] = {0xc0};
    struct relay_cmd p = cmd_push("r", "k", 1, RELAY_ACT_APPEND, 0, nil, 1);
    const struct relay_entry *ent;
    struct relay_effects e;
    uint8_t *buf;
    size_t len, n;

    (void)state;
    e = apply_at(s, &c, 1, __FILE__, __LINE__);
    EXPECT_STATUS(e, RELAY_OK);
    e = apply_at(s, &p, 2, __FILE__, __LINE__);
    EXPECT_BCAST(e, 1, 1);
    e = apply_at(s, &p, 3, __FILE__, __LINE__);
    EXPECT_BCAST(e, 2, 2);
    p.action = RELAY_ACT_RELAY;
    e = apply_at(s, &p, 4, __FILE__, __LINE__);
    EXPECT_BCAST(e, 3, 2);
    assert_int_equal(relay_stream_read(s, "r", 1, "k", 1, 0, &ent, &n),
                     RELAY_OK);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ent[i].value_len, 1);
        assert_int_equal(ent[i].value[0], 0xc0);
    }
    assert_int_equal(relay_state_snapshot(s, &buf, &len), RELAY_OK);
    assert_int_equal(relay_state_restore(t, buf, len), RELAY_OK);
    free(buf);
    assert_int_equal(relay_stream_read(t, "r", 1, "k", 1, 1, &ent, &n),
                     RELAY_OK);
    assert_int_equal(n, 1);
    assert_true(ent[0].seq == 2);
    assert_int_equal(ent[0].value[0], 0xc0);
    relay_state_destroy(t);
    relay_state_destroy(s);
}

/* An expiry decided by the leader names the last activity it saw: the
 * delete applies only if the room was not used since. */
static void test_delete_room_if_idle(void **state)
{
    struct relay_state *s = mkstate(NULL);
    struct relay_cmd c = cmd_room(RELAY_CMD_CREATE_ROOM, "r", 1);
    struct relay_room_info ri;
    struct relay_effects e;
    const uint8_t v[] = {0x01};
    struct relay_cmd p = cmd_push("r", "k", 1, RELAY_ACT_RELAY, 0, v, 1);

    (void)state;
    e = apply_at(s, &c, 1000, __FILE__, __LINE__);
    EXPECT_STATUS(e, RELAY_OK);
    assert_int_equal(relay_room_info(s, "r", 1, &ri), RELAY_OK);
    assert_int_equal(ri.last_ms, 1000);
    /* a relay push is activity too, though nothing is retained */
    e = apply_at(s, &p, 5000, __FILE__, __LINE__);
    assert_int_equal(e.status, RELAY_OK);
    assert_true(e.broadcast);
    assert_int_equal(relay_room_info(s, "r", 1, &ri), RELAY_OK);
    assert_int_equal(ri.last_ms, 5000);
    /* decided on the old activity time: refused, the room stays */
    c = cmd_room(RELAY_CMD_DELETE_ROOM, "r", 1);
    c.compact_seq = 1000;
    e = apply_at(s, &c, 9000, __FILE__, __LINE__);
    EXPECT_STATUS(e, RELAY_EACTIVE);
    assert_true(relay_room_exists(s, "r", 1));
    /* the activity time survives a snapshot */
    {
        struct relay_state *t = mkstate(NULL);
        uint8_t *buf;
        size_t len;

        assert_int_equal(relay_state_snapshot(s, &buf, &len), RELAY_OK);
        assert_int_equal(relay_state_restore(t, buf, len), RELAY_OK);
        assert_int_equal(relay_room_info(t, "r", 1, &ri), RELAY_OK);
        assert_int_equal(ri.last_ms, 5000);
        free(buf);
        relay_state_destroy(t);
    }
    /* decided on the current one: deleted */
    c.compact_seq = 5000;
    e = apply_at(s, &c, 9000, __FILE__, __LINE__);
    EXPECT_STATUS(e, RELAY_OK);
    assert_false(relay_room_exists(s, "r", 1));
    assert_string_equal(relay_strerror(RELAY_EACTIVE),
                        "room was active since the delete was decided");
    relay_state_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_limits_default),
        cmocka_unit_test(test_create_room),
        cmocka_unit_test(test_unknown_room),
        cmocka_unit_test(test_delete_room),
        cmocka_unit_test(test_delete_room_if_idle),
        cmocka_unit_test(test_max_rooms),
        cmocka_unit_test(test_room_id_length),
        cmocka_unit_test(test_seq_counter),
        cmocka_unit_test(test_relay_not_retained),
        cmocka_unit_test(test_null_value),
        cmocka_unit_test(test_replace_and_append),
        cmocka_unit_test(test_stream_size),
        cmocka_unit_test(test_compact_basic),
        cmocka_unit_test(test_compact_empty_stream),
        cmocka_unit_test(test_compact_older_than_all),
        cmocka_unit_test(test_compact_future_seq),
        cmocka_unit_test(test_relay_between_appends),
        cmocka_unit_test(test_stream_read_after),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_special_keys),
        cmocka_unit_test(test_room_keys_order),
        cmocka_unit_test(test_many_rooms),
        cmocka_unit_test(test_rooms_each_and_info),
        cmocka_unit_test(test_limit_key_len),
        cmocka_unit_test(test_limit_value_len),
        cmocka_unit_test(test_limit_room_bytes),
        cmocka_unit_test(test_refusals_take_no_seq),
        cmocka_unit_test(test_noop),
        cmocka_unit_test(test_dedupe_basic),
        cmocka_unit_test(test_dedupe_refusal_records),
        cmocka_unit_test(test_dedupe_lru),
        cmocka_unit_test(test_dedupe_ttl),
        cmocka_unit_test(test_dedupe_time_backwards),
        cmocka_unit_test(test_node_directory),
        cmocka_unit_test(test_node_directory_invalid),
        cmocka_unit_test(test_node_addr_with_nul),
        cmocka_unit_test(test_model_random),
        cmocka_unit_test(test_snapshot_empty),
        cmocka_unit_test(test_dedupe_origin_applied),
        cmocka_unit_test(test_snapshot_roundtrip),
        cmocka_unit_test(test_snapshot_deterministic),
        cmocka_unit_test(test_snapshot_restored_behaves),
        cmocka_unit_test(test_snapshot_keeps_dedupe_and_nodes),
        cmocka_unit_test(test_snapshot_time_backwards),
        cmocka_unit_test(test_snapshot_truncated),
        cmocka_unit_test(test_snapshot_fuzz),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
