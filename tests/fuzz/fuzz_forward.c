/*
 * fuzz_forward.c - libFuzzer target for the leader's side of the forward
 * link: what it makes of the WebSocket messages a follower sends.
 *
 * The input is a sequence of pieces as lws would hand them to RECEIVE,
 * each [flags:1][rest:4 LE][len:2 LE][bytes:len]: flags bit 0 "final
 * piece of the message", bit 1 "binary frame"; rest is what the frame
 * header still announces, which a hostile peer chooses freely. Pieces go
 * through net__fwd_rx_feed with a small bound; every complete message goes
 * where cons_propose_batch sends it: relay_batch_decode, each command
 * queued and later re-encoded into the leader's own entry.
 *
 * Invariants: a message is exactly the concatenation of its pieces; nothing
 * over the bound is ever handed out, and an announced overrun is refused
 * before it arrives; every command the decoder accepts re-encodes
 * (relay_batch_add), since a command that did not would stall the leader's
 * queue of forwarded commands for good.
 */
#include "fuzz.h"
#include "internal.h"

#define MAX_MESSAGE 4096

struct requeue {
    struct relay_batch_enc *enc;
    size_t n;
};

static int requeue(void *arg, const struct relay_cmd *cmd, uint64_t now_ms)
{
    struct requeue *q = arg;

    (void)now_ms;
    CHECK(relay_batch_add(q->enc, cmd) == RELAY_OK);
    q->n++;
    return 0;
}

static void on_message(const uint8_t *msg, size_t len)
{
    struct requeue q = {0};
    uint8_t *out;
    size_t out_len;

    CHECK(relay_batch_enc_create(&q.enc) == RELAY_OK);
    if (relay_batch_decode(msg, len, requeue, &q) == RELAY_OK) {
        CHECK(relay_batch_count(q.enc) == q.n);
        CHECK(relay_batch_finish(q.enc, 1, malloc, &out, &out_len) == RELAY_OK);
        CHECK(relay_batch_decode(out, out_len, NULL, NULL) == RELAY_OK ||
              q.n == 0);
        free(out);
    }
    relay_batch_enc_destroy(q.enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct net_conn *c = calloc(1, sizeof(*c));
    uint8_t *shadow = malloc(MAX_MESSAGE);
    size_t shadow_len = 0, pos = 0;
    bool in_message = false;

    CHECK(c != NULL && shadow != NULL);
    while (size - pos >= 7) {
        uint8_t flags = data[pos];
        size_t rest = (size_t)data[pos + 1] | (size_t)data[pos + 2] << 8 |
                      (size_t)data[pos + 3] << 16 | (size_t)data[pos + 4] << 24;
        size_t len = (size_t)data[pos + 5] | (size_t)data[pos + 6] << 8;
        const uint8_t *msg = NULL;
        size_t msg_len = 0;
        uint8_t *piece;
        int rv;

        pos += 7;
        if (len > size - pos)
            len = size - pos;
        /* An exact-size copy: ASan sees any read past the piece. */
        piece = malloc(len > 0 ? len : 1);
        CHECK(piece != NULL);
        memcpy(piece, data + pos, len);
        pos += len;
        if (!in_message)
            shadow_len = 0;
        rv = net__fwd_rx_feed(c, piece, len, flags & 2, flags & 1, rest,
                              MAX_MESSAGE, &msg, &msg_len);
        if (rv == NET_FWD_RX_MORE || rv == NET_FWD_RX_MESSAGE) {
            CHECK(shadow_len + len <= MAX_MESSAGE);
            memcpy(shadow + shadow_len, piece, len);
            shadow_len += len;
        }
        if (rv == NET_FWD_RX_MORE) {
            in_message = true;
            CHECK(c->rx_len == shadow_len);
            free(piece);
            continue;
        }
        if (rv != NET_FWD_RX_MESSAGE) {
            /* The link is closed: nothing more is read from it. */
            CHECK(rv == NET_FWD_RX_TEXT || rv == NET_FWD_RX_TOO_BIG);
            CHECK(rv != NET_FWD_RX_TEXT || !in_message);
            free(piece);
            break;
        }
        in_message = false;
        CHECK(msg_len <= MAX_MESSAGE);
        CHECK(same_bytes(msg, msg_len, shadow, shadow_len));
        on_message(msg, msg_len);
        if (msg == c->rx)
            c->rx_len = 0;
        free(piece);
    }
    free(c->rx);
    free(c);
    free(shadow);
    return 0;
}
