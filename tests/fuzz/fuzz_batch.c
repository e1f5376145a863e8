/*
 * fuzz_batch.c - libFuzzer target for the log-entry batch decoder
 * (relay_batch_decode), the bytes every node applies from the raft log.
 *
 * Invariants:
 * - a refused batch calls back zero times (validated before applying);
 * - every decoded command re-encodes (relay_batch_add), the re-encoded
 *   batch decodes to the same commands and timestamp, and encoding is a
 *   fixed point: the second re-encoding gives the first one's bytes;
 * - applying the commands to a state never fails for anything but memory,
 *   two states whose hash tables have different seeds give the same effects
 *   and snapshot bytes, and the state survives snapshot -> restore ->
 *   snapshot byte for byte.
 */
#include "codec_internal.h"
#include "fuzz.h"

struct cmds {
    struct relay_cmd *c;
    size_t n, cap;
    uint64_t now_ms;
    size_t calls;
};

static int collect(void *arg, const struct relay_cmd *cmd, uint64_t now_ms)
{
    struct cmds *cs = arg;

    cs->calls++;
    if (cs->n == cs->cap) {
        size_t cap = cs->cap == 0 ? 16 : cs->cap * 2;
        struct relay_cmd *c = realloc(cs->c, cap * sizeof(*c));

        CHECK(c != NULL);
        cs->c = c;
        cs->cap = cap;
    }
    cs->c[cs->n++] = *cmd;
    cs->now_ms = now_ms;
    return 0;
}

static void check_same_cmd(const struct relay_cmd *a, const struct relay_cmd *b)
{
    CHECK(a->type == b->type);
    CHECK(a->origin.node == b->origin.node);
    CHECK(a->origin.session == b->origin.session);
    CHECK(a->origin.counter == b->origin.counter);
    if (a->type == RELAY_CMD_NODE_SET || a->type == RELAY_CMD_NODE_FORGET) {
        CHECK(a->node_id == b->node_id);
        CHECK(same_bytes(a->raft_addr, a->raft_addr_len, b->raft_addr,
                         b->raft_addr_len));
        CHECK(same_bytes(a->http_addr, a->http_addr_len, b->http_addr,
                         b->http_addr_len));
        return;
    }
    CHECK(same_bytes(a->room, a->room_len, b->room, b->room_len));
    CHECK(same_bytes(a->key, a->key_len, b->key, b->key_len));
    CHECK(a->action == b->action);
    CHECK(a->compact_seq == b->compact_seq);
    CHECK(same_bytes(a->value, a->value_len, b->value, b->value_len));
}

/* Encodes cs into a fresh batch; *out malloc'd. */
static void encode(const struct cmds *cs, uint8_t **out, size_t *len)
{
    struct relay_batch_enc *enc;

    CHECK(relay_batch_enc_create(&enc) == RELAY_OK);
    for (size_t i = 0; i < cs->n; i++)
        CHECK(relay_batch_add(enc, &cs->c[i]) == RELAY_OK);
    CHECK(relay_batch_count(enc) == cs->n);
    CHECK(relay_batch_finish(enc, cs->now_ms, malloc, out, len) == RELAY_OK);
    CHECK(*len % 8 == 0);
    relay_batch_enc_destroy(enc);
}

/* A pushed value reaches subscribers of every format. */
static void check_sendable(const struct relay_cmd *cmd)
{
    uint8_t *buf;
    size_t len;

    if (cmd->type != RELAY_CMD_PUSH)
        return;
    for (int f = 0; f < RELAY_FMT_COUNT; f++) {
        CHECK(relay_enc_push((enum relay_fmt)f, 0, cmd->key, cmd->key_len,
                             cmd->value, cmd->value_len, 1, &buf,
                             &len) == RELAY_OK);
        free(buf);
    }
}

static void apply_and_snapshot(const struct cmds *cs)
{
    struct relay_limits lim = {.max_key_len = 64,
                               .max_value_len = 4096,
                               .max_room_bytes = 16384,
                               .max_rooms = 8,
                               .max_dedupe = 8,
                               .dedupe_ttl_ms = 1000};
    static const uint8_t seed[RELAY_SEED_LEN] = {
        0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    struct relay_state *s, *r, *o;
    struct relay_effects eff, eff2;
    uint8_t *snap, *snap2;
    size_t len, len2;

    /* s and o differ only in their hash seeds: nothing may show it. */
    CHECK(relay_state_create(&lim, &s) == RELAY_OK);
    CHECK(relay_state_create_seeded(&lim, seed, &o) == RELAY_OK);
    for (size_t i = 0; i < cs->n; i++) {
        CHECK(relay_state_apply(s, &cs->c[i], cs->now_ms + i, &eff) ==
              RELAY_OK);
        CHECK(relay_state_apply(o, &cs->c[i], cs->now_ms + i, &eff2) ==
              RELAY_OK);
        CHECK(eff.status == eff2.status && eff.broadcast == eff2.broadcast &&
              eff.seq == eff2.seq &&
              eff.has_stream_size == eff2.has_stream_size &&
              eff.stream_size == eff2.stream_size);
    }
    CHECK(relay_state_room_count(s) <= lim.max_rooms);
    CHECK(relay_state_snapshot(s, &snap, &len) == RELAY_OK);
    CHECK(relay_state_snapshot(o, &snap2, &len2) == RELAY_OK);
    CHECK(same_bytes(snap, len, snap2, len2));
    free(snap2);
    relay_state_destroy(o);
    CHECK(relay_state_create(&lim, &r) == RELAY_OK);
    CHECK(relay_state_restore(r, snap, len) == RELAY_OK);
    CHECK(relay_state_snapshot(r, &snap2, &len2) == RELAY_OK);
    CHECK(same_bytes(snap, len, snap2, len2));
    free(snap);
    free(snap2);
    relay_state_destroy(r);
    relay_state_destroy(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cmds a = {0}, b = {0}, c = {0};
    uint8_t *enc1, *enc2;
    size_t len1, len2;
    int rv;

    rv = relay_batch_decode(data, size, collect, &a);
    if (rv != RELAY_OK) {
        CHECK(rv == RELAY_EINVAL);
        CHECK(a.calls == 0);
        free(a.c);
        return 0;
    }

    encode(&a, &enc1, &len1);
    CHECK(relay_batch_decode(enc1, len1, collect, &b) == RELAY_OK);
    CHECK(b.n == a.n);
    if (a.n > 0)
        CHECK(b.now_ms == a.now_ms);
    for (size_t i = 0; i < a.n; i++) {
        check_same_cmd(&a.c[i], &b.c[i]);
        check_sendable(&a.c[i]);
    }
    encode(&b, &enc2, &len2);
    CHECK(same_bytes(enc1, len1, enc2, len2));
    CHECK(relay_batch_decode(enc2, len2, collect, &c) == RELAY_OK);

    apply_and_snapshot(&a);

    free(enc1);
    free(enc2);
    free(a.c);
    free(b.c);
    free(c.c);
    return 0;
}
