/*
 * batch.c - the bytes of one raft entry: a timestamp and a list of commands.
 *
 * Layout (msgpack):
 *   [1, now_ms, [cmd...]]
 *   cmd, types 1-4: [type, node, session, counter, room(bin), key(bin),
 *                    action, compact_seq, value | nil]
 *   cmd, type 5:    [5, node, session, counter, node_id, raft(bin), http(bin)]
 *   cmd, type 6:    [6, node, session, counter, node_id]
 * Values are embedded as the canonical msgpack items they are, so applying
 * never re-encodes them. The bytes are padded with up to 7 nil bytes to a
 * multiple of 8: raft_uv refuses entry buffers of any other length.
 *
 * Decoding validates the whole batch before the first callback: a follower
 * that received garbage must not half-apply an entry.
 */
#include <stdlib.h>
#include <string.h>

#include "codec_internal.h"
#include "relay.h"

#define BATCH_VERSION 1

struct relay_batch_enc {
    struct relay__buf body; /* the commands, without the outer headers */
    msgpack_packer pk;
    size_t count;
};

int relay_batch_enc_create(struct relay_batch_enc **out)
{
    struct relay_batch_enc *b = calloc(1, sizeof(*b));

    *out = NULL;
    if (b == NULL)
        return RELAY_ENOMEM;
    if (relay__buf_init(&b->body, 0, 4096) != RELAY_OK)
        goto err_free;
    relay__buf_packer(&b->body, &b->pk);
    *out = b;
    return RELAY_OK;
err_free:
    free(b);
    return RELAY_ENOMEM;
}

void relay_batch_enc_destroy(struct relay_batch_enc *b)
{
    if (b == NULL)
        return;
    relay__buf_free(&b->body);
    free(b);
}

void relay_batch_reset(struct relay_batch_enc *b)
{
    b->body.len = 0;
    b->body.failed = false;
    b->count = 0;
}

size_t relay_batch_count(const struct relay_batch_enc *b)
{
    return b->count;
}

size_t relay_batch_bytes(const struct relay_batch_enc *b)
{
    return b->body.len;
}

struct rd {
    const uint8_t *p;
    size_t len, pos;
};

static bool rd_value(struct rd *rd, const uint8_t **v, size_t *vlen);

/* A value the decoder would refuse must not get into an entry, where it
 * would make every other command of the entry undecodable. */
static bool value_ok(const uint8_t *v, size_t len)
{
    struct rd rd = {.p = v, .len = len, .pos = 0};
    const uint8_t *item;
    size_t n;

    return len > 0 && rd_value(&rd, &item, &n) && rd.pos == len;
}

static void pack_bin(msgpack_packer *pk, const void *p, size_t n)
{
    msgpack_pack_bin(pk, n);
    msgpack_pack_bin_body(pk, p, n);
}

int relay_batch_add(struct relay_batch_enc *b, const struct relay_cmd *cmd)
{
    msgpack_packer *pk = &b->pk;
    size_t mark = b->body.len;

    if (cmd->type < RELAY_CMD_CREATE_ROOM || cmd->type > RELAY_CMD_CONFIG)
        return RELAY_EINVAL;
    if (cmd->type == RELAY_CMD_PUSH && !value_ok(cmd->value, cmd->value_len))
        return RELAY_EINVAL;
    switch (cmd->type) {
    case RELAY_CMD_NODE_SET:
        msgpack_pack_array(pk, 7);
        break;
    case RELAY_CMD_NODE_FORGET:
        msgpack_pack_array(pk, 5);
        break;
    default:
        msgpack_pack_array(pk, 9);
        break;
    }
    msgpack_pack_uint32(pk, (uint32_t)cmd->type);
    msgpack_pack_uint32(pk, cmd->origin.node);
    msgpack_pack_uint64(pk, cmd->origin.session);
    msgpack_pack_uint64(pk, cmd->origin.counter);
    if (cmd->type == RELAY_CMD_NODE_SET || cmd->type == RELAY_CMD_NODE_FORGET) {
        msgpack_pack_uint32(pk, cmd->node_id);
        if (cmd->type == RELAY_CMD_NODE_SET) {
            pack_bin(pk, cmd->raft_addr, cmd->raft_addr_len);
            pack_bin(pk, cmd->http_addr, cmd->http_addr_len);
        }
    } else {
        pack_bin(pk, cmd->room, cmd->room_len);
        pack_bin(pk, cmd->key, cmd->key_len);
        msgpack_pack_uint32(pk, (uint32_t)cmd->action);
        msgpack_pack_uint64(pk, cmd->compact_seq);
        if (cmd->type == RELAY_CMD_PUSH)
            relay__buf_put(&b->body, cmd->value, cmd->value_len);
        else
            msgpack_pack_nil(pk);
    }
    if (b->body.failed) {
        /* Drop the partial command so the encoder stays usable. */
        b->body.failed = false;
        b->body.len = mark;
        return RELAY_ENOMEM;
    }
    b->count++;
    return RELAY_OK;
}

int relay_batch_finish(struct relay_batch_enc *b, uint64_t now_ms,
                       void *(*alloc)(size_t), uint8_t **out, size_t *len)
{
    uint8_t head[32];
    struct relay__buf hb = {.data = head, .len = 0, .cap = sizeof(head)};
    msgpack_packer pk;
    uint8_t *p;
    size_t total, pad;

    *out = NULL;
    *len = 0;
    /* The header is at most 1 + 1 + 9 + 5 bytes: never grows hb. */
    relay__buf_packer(&hb, &pk);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint32(&pk, BATCH_VERSION);
    msgpack_pack_uint64(&pk, now_ms);
    msgpack_pack_array(&pk, b->count);
    total = hb.len + b->body.len;
    pad = (8 - total % 8) % 8;
    p = alloc(total + pad);
    if (p == NULL)
        return RELAY_ENOMEM;
    memcpy(p, head, hb.len);
    if (b->body.len > 0)
        memcpy(p + hb.len, b->body.data, b->body.len);
    memset(p + total, 0xc0, pad); /* msgpack nil */
    *out = p;
    *len = total + pad;
    relay_batch_reset(b);
    return RELAY_OK;
}

/* ---- decoding ------------------------------------------------------------- */

static bool rd_kind(struct rd *rd, enum relay__mp_kind kind,
                    struct relay__mp_tok *t)
{
    return relay__mp_next(rd->p, rd->len, &rd->pos, t) == RELAY__MP_OK &&
           t->kind == kind;
}

static bool rd_uint(struct rd *rd, uint64_t max, uint64_t *u)
{
    struct relay__mp_tok t;

    if (!rd_kind(rd, RELAY__MP_UINT, &t) || t.u > max)
        return false;
    *u = t.u;
    return true;
}

static bool rd_bin(struct rd *rd, const char **p, size_t *n)
{
    struct relay__mp_tok t;

    if (!rd_kind(rd, RELAY__MP_BIN, &t))
        return false;
    *p = (const char *)t.ptr;
    *n = t.n;
    return true;
}

/* Reads one value item, nested at most RELAY_MAX_DEPTH levels. */
static bool rd_value(struct rd *rd, const uint8_t **v, size_t *vlen)
{
    size_t start = rd->pos;

    if (relay__mp_skip_value(rd->p, rd->len, &rd->pos) != RELAY__MP_OK)
        return false;
    *v = rd->p + start;
    *vlen = rd->pos - start;
    return true;
}

static bool rd_cmd(struct rd *rd, struct relay_cmd *cmd)
{
    struct relay__mp_tok t;
    uint64_t type, node, u;

    memset(cmd, 0, sizeof(*cmd));
    if (!rd_kind(rd, RELAY__MP_ARRAY, &t) ||
        !rd_uint(rd, RELAY_CMD_CONFIG, &type) ||
        type < RELAY_CMD_CREATE_ROOM || !rd_uint(rd, UINT32_MAX, &node) ||
        !rd_uint(rd, UINT64_MAX, &cmd->origin.session) ||
        !rd_uint(rd, UINT64_MAX, &cmd->origin.counter))
        return false;
    cmd->type = (enum relay_cmd_type)type;
    cmd->origin.node = (uint32_t)node;
    if (type == RELAY_CMD_NODE_SET || type == RELAY_CMD_NODE_FORGET) {
        if (t.n != (type == RELAY_CMD_NODE_SET ? 7u : 5u) ||
            !rd_uint(rd, UINT32_MAX, &u))
            return false;
        cmd->node_id = (uint32_t)u;
        if (type == RELAY_CMD_NODE_FORGET)
            return true;
        return rd_bin(rd, &cmd->raft_addr, &cmd->raft_addr_len) &&
               rd_bin(rd, &cmd->http_addr, &cmd->http_addr_len);
    }
    if (t.n != 9 || !rd_bin(rd, &cmd->room, &cmd->room_len) ||
        !rd_bin(rd, &cmd->key, &cmd->key_len) ||
        !rd_uint(rd, RELAY_ACT_COMPACT, &u) ||
        !rd_uint(rd, UINT64_MAX, &cmd->compact_seq))
        return false;
    cmd->action = (enum relay_action)u;
    if (type == RELAY_CMD_PUSH)
        return rd_value(rd, &cmd->value, &cmd->value_len);
    return rd_kind(rd, RELAY__MP_NIL, &t);
}

/* One pass over the batch; cb NULL only validates. */
static int batch_walk(const uint8_t *buf, size_t len, relay_batch_cb cb,
                      void *arg)
{
    struct rd rd = {.p = buf, .len = len, .pos = 0};
    struct relay__mp_tok t;
    struct relay_cmd cmd;
    uint64_t version, now_ms;
    uint32_t n;

    if (!rd_kind(&rd, RELAY__MP_ARRAY, &t) || t.n != 3 ||
        !rd_uint(&rd, UINT32_MAX, &version) || version != BATCH_VERSION ||
        !rd_uint(&rd, UINT64_MAX, &now_ms) ||
        !rd_kind(&rd, RELAY__MP_ARRAY, &t))
        return RELAY_EINVAL;
    n = t.n;
    for (uint32_t i = 0; i < n; i++) {
        if (!rd_cmd(&rd, &cmd))
            return RELAY_EINVAL;
        if (cb != NULL) {
            int rv = cb(arg, &cmd, now_ms);

            if (rv != 0)
                return rv;
        }
    }
    /* Only the alignment padding may follow. */
    if (len - rd.pos >= 8)
        return RELAY_EINVAL;
    for (size_t i = rd.pos; i < len; i++)
        if (buf[i] != 0xc0)
            return RELAY_EINVAL;
    return RELAY_OK;
}

int relay_batch_decode(const uint8_t *buf, size_t len, relay_batch_cb cb,
                       void *arg)
{
    int rv = batch_walk(buf, len, NULL, NULL);

    if (rv != RELAY_OK)
        return rv;
    return batch_walk(buf, len, cb, arg);
}
