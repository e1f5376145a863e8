/*
 * fuzz_snapshot.c - libFuzzer target for snapshot restore
 * (relay_state_restore), what a node loads from disk or receives from the
 * leader when it falls behind.
 *
 * Invariants:
 * - a refused snapshot leaves the state as it was (its snapshot bytes do
 *   not change);
 * - a restored state re-encodes to bytes that restore again to the same
 *   bytes (snapshot encoding is a fixed point after one restore);
 * - everything a restored state holds can be served: every retained value
 *   encodes as an init in every format, and the state keeps applying
 *   commands.
 */
#include "codec_internal.h"
#include "fuzz.h"

static const char room0[] = "fuzzroom";

/* A small known state to restore over. */
static struct relay_state *base_state(void)
{
    static const uint8_t val[] = {0x92, 0x01, 0xa1, 'x'}; /* [1, "x"] */
    struct relay_state *s;
    struct relay_effects eff;
    struct relay_cmd cmd = {.type = RELAY_CMD_CREATE_ROOM,
                            .room = room0,
                            .room_len = sizeof(room0) - 1};

    CHECK(relay_state_create(NULL, &s) == RELAY_OK);
    CHECK(relay_state_apply(s, &cmd, 1, &eff) == RELAY_OK);
    cmd.type = RELAY_CMD_PUSH;
    cmd.key = "k";
    cmd.key_len = 1;
    cmd.action = RELAY_ACT_APPEND;
    cmd.value = val;
    cmd.value_len = sizeof(val);
    cmd.origin = (struct relay_origin){.node = 1, .session = 2, .counter = 3};
    CHECK(relay_state_apply(s, &cmd, 2, &eff) == RELAY_OK);
    return s;
}

struct walk {
    const struct relay_state *s;
    size_t rooms;
    const char *room;
    size_t room_len;
};

static void on_key(void *arg, const char *key, size_t key_len)
{
    struct walk *w = arg;
    const struct relay_entry *e;
    size_t n;
    uint8_t *buf;
    size_t len;

    CHECK(relay_stream_read(w->s, w->room, w->room_len, key, key_len, 0, &e,
                            &n) == RELAY_OK);
    for (size_t i = 0; i < n; i++)
        CHECK(i == 0 || e[i].seq > e[i - 1].seq);
    for (int f = 0; f < RELAY_FMT_COUNT; f++) {
        int rc = relay_enc_init((enum relay_fmt)f, 0, key, key_len, e, n, &buf,
                                &len);

        CHECK(rc == RELAY_OK);
        free(buf);
    }
}

static void on_room(void *arg, const struct relay_room_info *ri)
{
    struct walk *w = arg;

    w->rooms++;
    CHECK(ri->id_len > 0 && ri->id_len <= RELAY_ROOM_ID_MAX);
    CHECK(relay_room_exists(w->s, ri->id, ri->id_len));
    w->room = ri->id;
    w->room_len = ri->id_len;
    CHECK(relay_room_keys(w->s, ri->id, ri->id_len, on_key, w) == RELAY_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct relay_state *s = base_state(), *t;
    uint8_t *before, *snap, *snap2;
    size_t before_len, len, len2;
    struct walk w = {0};
    struct relay_effects eff;
    struct relay_cmd cmd = {.type = RELAY_CMD_PUSH,
                            .key = "k",
                            .key_len = 1,
                            .action = RELAY_ACT_APPEND,
                            .value = (const uint8_t *)"\x01",
                            .value_len = 1,
                            .origin = {.node = 1, .session = 2, .counter = 4}};
    int rv;

    CHECK(relay_state_snapshot(s, &before, &before_len) == RELAY_OK);
    rv = relay_state_restore(s, data, size);
    if (rv != RELAY_OK) {
        CHECK(rv == RELAY_EINVAL || rv == RELAY_ENOMEM);
        CHECK(relay_state_snapshot(s, &snap, &len) == RELAY_OK);
        CHECK(same_bytes(before, before_len, snap, len));
        free(snap);
        goto out;
    }

    CHECK(relay_state_snapshot(s, &snap, &len) == RELAY_OK);
    CHECK(relay_state_create(NULL, &t) == RELAY_OK);
    CHECK(relay_state_restore(t, snap, len) == RELAY_OK);
    CHECK(relay_state_snapshot(t, &snap2, &len2) == RELAY_OK);
    CHECK(same_bytes(snap, len, snap2, len2));
    relay_state_destroy(t);
    free(snap2);
    free(snap);

    w.s = s;
    relay_rooms_each(s, on_room, &w);
    CHECK(w.rooms == relay_state_room_count(s));

    /* The restored state keeps working: push into every kind of room. */
    if (w.room != NULL) {
        cmd.room = w.room;
        cmd.room_len = w.room_len;
        CHECK(relay_state_apply(s, &cmd, UINT64_MAX / 2, &eff) == RELAY_OK);
    }
    cmd.type = RELAY_CMD_CREATE_ROOM;
    cmd.room = room0;
    cmd.room_len = sizeof(room0) - 1;
    cmd.origin.counter++;
    CHECK(relay_state_apply(s, &cmd, UINT64_MAX / 2, &eff) == RELAY_OK);
out:
    free(before);
    relay_state_destroy(s);
    return 0;
}
