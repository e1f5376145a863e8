/*
 * seeds.c - writes the seed corpora of tests/fuzz/corpus/<target>/.
 *
 * Usage: fuzz_seeds DIR  (make fuzz-seeds runs it on tests/fuzz/corpus)
 *
 * Seeds are valid inputs made by relay's own encoders, so they follow the
 * formats as the code knows them: client frames written as JSON text and
 * converted to CBOR and msgpack, plus the shapes only those formats have
 * (indefinite lengths, tags, byte strings, ext); log batches of every
 * command type; snapshots of a state with rooms, streams, dedupe records
 * and a directory; request paths; forward-link piece sequences. Each file
 * is named seed-<n>; regression inputs kept next to them (crash-*,
 * see docs/fuzzing.md) are never touched.
 */
#include <errno.h>
#include <sys/stat.h>

#include "codec_internal.h"

static const char *root;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_seeds: %s\n", what);
    exit(1);
}

static void put(const char *target, int n, const void *p, size_t len)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", root, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        die("cannot create a corpus folder");
    snprintf(path, sizeof(path), "%s/%s/seed-%02d", root, target, n);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(p, 1, len, f) != len || fclose(f) != 0)
        die("cannot write a seed");
}

/* ---- client frames ------------------------------------------------------ */

static const char *const frames[] = {
    "{\"type\":\"push\",\"action\":{\"type\":\"append\"},\"key\":\"k\","
    "\"value\":{\"a\":[1,2.5,-3,true,null,\"x\"]}}",
    "{\"type\":\"push\",\"action\":{\"type\":\"relay\"},\"key\":\"cursor\","
    "\"value\":[0.1,1e300,-0.0,18446744073709551615,-9223372036854775808]}",
    "{\"type\":\"push\",\"action\":{\"type\":\"replace\"},\"key\":\"\","
    "\"value\":\"\\u00e9\\ud83d\\ude00\\u0000\"}",
    "{\"type\":\"push\",\"action\":{\"type\":\"compact\",\"seq\":3},"
    "\"key\":\"k\\u0000x\",\"value\":{\"state\":{\"n\":1}}}",
    "{\"type\":\"push\",\"action\":{\"type\":\"append\"},\"key\":\"big\","
    "\"value\":123456789012345678901234567890}",
    "{\"type\":\"push\",\"action\":{\"type\":\"append\"},\"key\":\"deep\","
    "\"value\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
    "}",
    "{\"type\":\"get\",\"key\":\"k\",\"seq\":0}",
    "{\"type\":\"get\",\"key\":\"k\",\"seq\":null}",
    "{\"type\":\"get\",\"key\":\"k\"}",
    "{\"type\":\"get\",\"key\":\"k\",\"seq\":5.0}",
    "{\"type\":\"ping\"}",
    "{\"type\":\"ping\",\"nonce\":7}",
    "{\"type\":\"ping\",\"nonce\":{\"t\":[1,\"two\"]}}",
    "{\"type\":\"push\",\"key\":\"k\",\"value\":1}",
    "{\"type\":\"nope\"}",
    "{\"type\":\"push\",\"action\":{\"type\":\"append\"},\"key\":\"k\","
    "\"value\":1,\"value\":{\"dup\":2},\"extra\":[1,2]}",
};

/* CBOR-only shapes: indefinite map with an indefinite text key chunked in
 * two, tag 2 bignum, tag 64 byte string, half float, undefined. */
static const uint8_t cbor_special[] = {
    0xbf, /* map (indefinite) */
    0x64, 't',  'y',  'p',  'e',  0x64, 'p',  'u', 's', 'h', /* type push */
    0x63, 'k',  'e',  'y',                                   /* "key": */
    0x7f, 0x61, 'a',  0x61, 'b',  0xff,      /* "ab" in two chunks */
    0x66, 'a',  'c',  't',  'i',  'o',  'n', /* "action": */
    0xa1, 0x64, 't',  'y',  'p',  'e',  0x66, 'a', 'p', 'p',
    'e',  'n',  'd',  0x65, 'v',  'a',  'l',  'u', 'e', /* "value": */
    0x9f,                                               /* [ (indefinite) */
    0xc2, 0x42, 0x01, 0x00,                             /* bignum 256 */
    0xd8, 0x40, 0x43, 1,    2,    3,                    /* tag 64 h'010203' */
    0xf9, 0x3c, 0x00,                                   /* half 1.0 */
    0xf7,                                               /* undefined */
    0xfa, 0x3f, 0xc0, 0x00, 0x00,                       /* single 1.5 */
    0xff, 0xff};

/* msgpack-only shapes: bin key, ext value, non-string map key, float32. */
static const uint8_t msgpack_special[] = {
    0x84, 0xa4, 't',  'y',  'p',  'e',  0xa4, 'p',  'u',  's',
    'h',  0xa3, 'k',  'e',  'y',  0xc4, 0x02, 0xff, 0x00, /* key: bin */
    0xa6, 'a',  'c',  't',  'i',  'o',  'n',  0x81, 0xa4, 't',
    'y',  'p',  'e',  0xa7, 'r',  'e',  'p',  'l',  'a',  'c',
    'e',  0xa5, 'v',  'a',  'l',  'u',  'e',  0x83, /* value: map of 3 */
    0x01, 0xd6, 0x05, 1,    2,    3,    4,          /* 1: fixext4 */
    0x92, 0x01, 0x02, 0xca, 0x3f, 0xc0, 0x00, 0x00, /* [1,2]: 1.5f */
    0xc3, 0xcd, 0x01, 0x00};                        /* true: 256 */

static void seed_codecs(void)
{
    size_t nframes = sizeof(frames) / sizeof(frames[0]);
    int i;

    for (i = 0; i < (int)nframes; i++) {
        struct relay__buf mp, cb;
        char err[256];

        put("fuzz_json", i, frames[i], strlen(frames[i]));
        if (relay__buf_init(&mp, 0, 256) != RELAY_OK ||
            relay__buf_init(&cb, 0, 256) != RELAY_OK)
            die("out of memory");
        if (relay__json_to_mp((const uint8_t *)frames[i], strlen(frames[i]),
                              &mp, err, sizeof(err)) != RELAY_OK)
            die(err);
        put("fuzz_msgpack", i, mp.data, mp.len);
        /* The whole frame as one item: frames are within the depth a
         * value may have plus one, which mp_to_cbor does not bound. */
        if (relay__mp_to_cbor(&cb, mp.data, mp.len) != RELAY_OK)
            die("cbor");
        put("fuzz_cbor", i, cb.data, cb.len);
        relay__buf_free(&mp);
        relay__buf_free(&cb);
    }
    put("fuzz_cbor", i, cbor_special, sizeof(cbor_special));
    put("fuzz_msgpack", i, msgpack_special, sizeof(msgpack_special));
}

/* ---- log batches and snapshots ------------------------------------------ */

static const uint8_t v_map[] = {0x81, 0xa1, 'a', 0x92, 0x01, 0xc3};
static const uint8_t v_str[] = {0xa3, 'h', 'i', '!'};
static const uint8_t v_f64[] = {0xcb, 0x3f, 0xb9, 0x99, 0x99,
                                0x99, 0x99, 0x99, 0x9a};

/* Every command type, as the log carries them. */
static size_t make_cmds(struct relay_cmd *c)
{
    size_t n = 0;

    c[n++] = (struct relay_cmd){.type = RELAY_CMD_CREATE_ROOM,
                                .origin = {1, 10, 1},
                                .room = "roomA",
                                .room_len = 5};
    c[n++] = (struct relay_cmd){.type = RELAY_CMD_CREATE_ROOM,
                                .origin = {2, 20, 1},
                                .room = "roomB",
                                .room_len = 5};
    c[n++] = (struct relay_cmd){.type = RELAY_CMD_PUSH,
                                .origin = {1, 11, 1},
                                .room = "roomA",
                                .room_len = 5,
                                .key = "k",
                                .key_len = 1,
                                .action = RELAY_ACT_APPEND,
                                .value = v_map,
                                .value_len = sizeof(v_map)};
    c[n++] = (struct relay_cmd){.type = RELAY_CMD_PUSH,
                                .origin = {1, 11, 2},
                                .room = "roomA",
                                .room_len = 5,
                                .key = "k",
                                .key_len = 1,
                                .action = RELAY_ACT_APPEND,
                                .value = v_str,
                                .value_len = sizeof(v_str)};
    c[n++] = (struct relay_cmd){.type = RELAY_CMD_PUSH,
                                .origin = {2, 21, 1},
                                .room = "roomA",
                                .room_len = 5,
                                .key = "k\0z",
                                .key_len = 3,
                                .action = RELAY_ACT_REPLACE,
                                .value = v_f64,
                                .value_len = sizeof(v_f64)};
    c[n++] = (struct relay_cmd){.type = RELAY_CMD_PUSH,
                                .origin = {1, 11, 3},
                                .room = "roomA",
                                .room_len = 5,
                                .key = "k",
                                .key_len = 1,
                                .action = RELAY_ACT_COMPACT,
                                .compact_seq = 2,
                                .value = v_str,
                                .value_len = sizeof(v_str)};
    c[n++] = (struct relay_cmd){.type = RELAY_CMD_PUSH,
                                .origin = {0, 0, 0},
                                .room = "roomB",
                                .room_len = 5,
                                .key = "r",
                                .key_len = 1,
                                .action = RELAY_ACT_RELAY,
                                .value = v_map,
                                .value_len = sizeof(v_map)};
    c[n++] = (struct relay_cmd){.type = RELAY_CMD_NODE_SET,
                                .origin = {1, 12, 1},
                                .node_id = 1,
                                .raft_addr = "127.0.0.1:9001",
                                .raft_addr_len = 14,
                                .http_addr = "127.0.0.1:8080",
                                .http_addr_len = 14};
    c[n++] = (struct relay_cmd){.type = RELAY_CMD_NODE_SET,
                                .origin = {1, 12, 2},
                                .node_id = 3,
                                .raft_addr = "[::1]:9003",
                                .raft_addr_len = 10,
                                .http_addr = "",
                                .http_addr_len = 0};
    c[n++] = (struct relay_cmd){.type = RELAY_CMD_NOOP, .origin = {1, 12, 3}};
    c[n++] = (struct relay_cmd){
        .type = RELAY_CMD_NODE_FORGET, .origin = {1, 12, 4}, .node_id = 3};
    c[n++] = (struct relay_cmd){.type = RELAY_CMD_DELETE_ROOM,
                                .origin = {2, 20, 2},
                                .room = "roomB",
                                .room_len = 5};
    return n;
}

static void batch_bytes(const struct relay_cmd *c, size_t n, uint64_t now,
                        uint8_t **out, size_t *len)
{
    struct relay_batch_enc *enc;

    if (relay_batch_enc_create(&enc) != RELAY_OK)
        die("out of memory");
    for (size_t i = 0; i < n; i++)
        if (relay_batch_add(enc, &c[i]) != RELAY_OK)
            die("batch add");
    if (relay_batch_finish(enc, now, malloc, out, len) != RELAY_OK)
        die("batch finish");
    relay_batch_enc_destroy(enc);
}

static void seed_batches(void)
{
    struct relay_cmd c[16];
    size_t n = make_cmds(c), len;
    uint8_t *b;

    batch_bytes(c, n, 1700000000000ULL, &b, &len);
    put("fuzz_batch", 0, b, len);
    free(b);
    batch_bytes(c, 0, 5, &b, &len);
    put("fuzz_batch", 1, b, len);
    free(b);
    for (size_t i = 0; i < n; i++) {
        batch_bytes(c + i, 1, i, &b, &len);
        put("fuzz_batch", 2 + (int)i, b, len);
        free(b);
    }
}

static void seed_snapshots(void)
{
    struct relay_cmd c[16];
    size_t n = make_cmds(c), len;
    struct relay_state *s;
    struct relay_effects eff;
    uint8_t *b;

    if (relay_state_create(NULL, &s) != RELAY_OK)
        die("out of memory");
    if (relay_state_snapshot(s, &b, &len) != RELAY_OK)
        die("snapshot");
    put("fuzz_snapshot", 0, b, len);
    free(b);
    for (size_t i = 0; i < n; i++) {
        if (relay_state_apply(s, &c[i], 1000 + i, &eff) != RELAY_OK)
            die("apply");
        /* After creation, pushes, the directory, and the delete. */
        if (i == 1 || i == 5 || i == 8 || i == n - 1) {
            if (relay_state_snapshot(s, &b, &len) != RELAY_OK)
                die("snapshot");
            put("fuzz_snapshot", (int)i, b, len);
            free(b);
        }
    }
    relay_state_destroy(s);
}

/* ---- request paths and forward-link pieces ------------------------------ */

static const char *const paths[] = {
    "/new",
    "/new/",
    "/healthz",
    "/cluster/status",
    "/_driftd/forward",
    "/admin/members/2/remove",
    "/room/abcDEF012-_",
    "/room/abcDEF012-_/",
    "/room/abcDEF012-_/connect",
    "/room/abcDEF012-_/send",
    "/room/0123456789012345678901234567890123456789012345678901234567890123",
    "/room//send",
    "/room/a b",
    "/",
};

/* One piece: [flags][rest LE32][len LE16][bytes]. */
static void piece(struct relay__buf *o, uint8_t flags, uint32_t rest,
                  const uint8_t *p, size_t len)
{
    const uint8_t hdr[7] = {flags,
                            (uint8_t)rest,
                            (uint8_t)(rest >> 8),
                            (uint8_t)(rest >> 16),
                            (uint8_t)(rest >> 24),
                            (uint8_t)len,
                            (uint8_t)(len >> 8)};

    relay__buf_put(o, hdr, sizeof(hdr));
    relay__buf_put(o, p, len);
}

static void seed_paths_and_links(void)
{
    struct relay_cmd c[16];
    size_t n = make_cmds(c), len;
    struct relay__buf o;
    uint8_t *b;
    int i;

    for (i = 0; i < (int)(sizeof(paths) / sizeof(paths[0])); i++)
        put("fuzz_http", i, paths[i], strlen(paths[i]));

    batch_bytes(c, n, 42, &b, &len);
    for (i = 0; i < 5; i++) {
        size_t half = len / 2;

        if (relay__buf_init(&o, 0, 2 * len + 64) != RELAY_OK)
            die("out of memory");
        switch (i) {
        case 0: /* one message in one piece */
            piece(&o, 3, 0, b, len);
            break;
        case 1: /* two pieces of one frame, then the same again */
            piece(&o, 2, (uint32_t)(len - half), b, half);
            piece(&o, 1, 0, b + half, len - half);
            piece(&o, 3, 0, b, len);
            break;
        case 2: /* three pieces, fragments of two frames */
            piece(&o, 2, 0, b, 8);
            piece(&o, 0, (uint32_t)(len - half), b + 8, half - 8);
            piece(&o, 1, 0, b + half, len - half);
            break;
        case 3: /* a text message */
            piece(&o, 1, 0, (const uint8_t *)"hello", 5);
            break;
        case 4: /* a frame that announces more than the bound */
            piece(&o, 2, 1u << 20, b, 8);
            piece(&o, 1, 0, b + 8, len - 8);
            break;
        }
        put("fuzz_forward", i, o.data, o.len);
        relay__buf_free(&o);
    }
    free(b);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_seeds DIR\n");
        return 2;
    }
    root = argv[1];
    if (mkdir(root, 0755) != 0 && errno != EEXIST)
        die("cannot create the corpus folder");
    seed_codecs();
    seed_batches();
    seed_snapshots();
    seed_paths_and_links();
    return 0;
}
