/*
 * cons_harness.h - real consensus nodes (src/consensus) on libraft's
 * in-memory fixture, for the test_cons_* tests: deterministic time,
 * network and disk, no loop turns, no sockets. Include after <cmocka.h>.
 *
 * Each fixture server's FSM is a cons_node's own (fsm.c), so the fixture
 * applies entries through relay exactly as raft_uv would. What the fixture
 * cannot do is own the node's embedded struct raft: libraft fires a
 * raft_apply's callback only from its own loop hooks (the fixture's step,
 * raft_uv's prepare/check handles), never for a raft on a stub raft_io.
 * So the test binaries link with --wrap for the libraft calls consensus
 * makes (CMakeLists.txt, test_cons_*): a call on a node's n->raft goes to
 * its fixture server's struct raft instead, and the server's configuration
 * is mirrored into n->raft for the code that reads it as a field. Nothing
 * in src/ changes for this.
 *
 * The node's uv loop never runs while a test steps (uv_now stays put, so
 * no queue timeout fires by accident): h_pump() runs a node's queue timer
 * and flush when they would run, and carries forwarded batches to their
 * leader, as net's link would, with the link's failure modes (queue
 * dropped on a leader change or a refusal, then cons_forward_reset).
 */
#ifndef DRIFTD_CONS_HARNESS_H
#define DRIFTD_CONS_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <raft.h>
#include <raft/fixture.h>
#include <uv.h>

#include "internal.h"
#include "log.h"

#define H_MAX_NODES 5
#define H_MAX_EVENTS 512
#define H_MAX_LINK 64

/* One on_applied or on_failed report. */
struct h_event {
    struct relay_origin origin;
    enum relay_cmd_type type;
    int status; /* relay status (applied) or CONS_* code (failed) */
    uint64_t seq;
};

struct h_batch {
    uint8_t *p;
    size_t len;
    uint32_t to;
};

struct h_node {
    struct cons_node *n;
    unsigned i; /* fixture index; raft id i + 1 */
    struct h_event applied[H_MAX_EVENTS];
    size_t n_applied;
    struct h_event failed[H_MAX_EVENTS];
    size_t n_failed;
    /* The forward link: batches taken by fw.send, not yet delivered. */
    struct h_batch link[H_MAX_LINK];
    size_t n_link;
    size_t n_sent;    /* batches fw.send took, ever */
    bool link_frozen; /* batches are taken but not delivered */
};

struct h {
    struct raft_fixture f;
    bool f_open;
    uv_loop_t loop;
    struct h_node nodes[H_MAX_NODES];
    unsigned n;
};

/* The harness of the running test: the --wrap functions below need it. */
static struct h *h_cur;

/* ---- libraft calls on a node's raft go to its fixture server ------------ */

static struct raft *h_map(struct raft *r)
{
    if (h_cur == NULL)
        return r;
    for (unsigned i = 0; i < h_cur->n; i++) {
        struct cons_node *n = h_cur->nodes[i].n;

        if (n != NULL && r == &n->raft) {
            struct raft *fx;

            if (!h_cur->f_open)
                fail_msg("node %u's raft used after the fixture closed", i);
            fx = raft_fixture_get(&h_cur->f, i);
            /* Read as a field (membership.c, proposer.c): mirrored,
             * borrowed from the fixture's raft. */
            n->raft.configuration = fx->configuration;
            return fx;
        }
    }
    return r;
}

/*
 * Each call consensus makes: __wrap_NAME, with the parameters params,
 * calls libraft's own (__real_NAME) with args, where the raft r has been
 * mapped. H_WRAP_VOID for the calls that return nothing.
 */
#define H_WRAP(type, name, params, args)                                       \
    type __real_##name params;                                                 \
    type __wrap_##name params;                                                 \
    type __wrap_##name params                                                  \
    {                                                                          \
        return __real_##name args;                                             \
    }
#define H_WRAP_VOID(name, params, args)                                        \
    void __real_##name params;                                                 \
    void __wrap_##name params;                                                 \
    void __wrap_##name params                                                  \
    {                                                                          \
        __real_##name args;                                                    \
    }
#define H_R h_map((struct raft *)r)

H_WRAP(enum raft_state, raft_state, (struct raft * r), (H_R))
H_WRAP(raft_index, raft_last_applied, (struct raft * r), (H_R))
H_WRAP(raft_index, raft_last_index, (struct raft * r), (H_R))
H_WRAP(raft_index, raft_commit_index, (const struct raft *r), (H_R))
H_WRAP(raft_term, raft_current_term, (const struct raft *r), (H_R))
H_WRAP(const char *, raft_errmsg, (struct raft * r), (H_R))
H_WRAP(int, raft_match_index,
       (const struct raft *r, raft_id id, raft_index *index), (H_R, id, index))
H_WRAP_VOID(raft_leader, (struct raft * r, raft_id *id, const char **address),
            (H_R, id, address))
H_WRAP_VOID(raft_set_snapshot_threshold, (struct raft * r, unsigned n),
            (H_R, n))
H_WRAP_VOID(raft_set_snapshot_trailing, (struct raft * r, unsigned n), (H_R, n))
H_WRAP(int, raft_apply,
       (struct raft * r, struct raft_apply *req,
        const struct raft_buffer bufs[], const unsigned n, raft_apply_cb cb),
       (H_R, req, bufs, n, cb))
H_WRAP(int, raft_add,
       (struct raft * r, struct raft_change *req, raft_id id,
        const char *address, raft_change_cb cb),
       (H_R, req, id, address, cb))
H_WRAP(int, raft_assign,
       (struct raft * r, struct raft_change *req, raft_id id, int role,
        raft_change_cb cb),
       (H_R, req, id, role, cb))
H_WRAP(int, raft_remove,
       (struct raft * r, struct raft_change *req, raft_id id,
        raft_change_cb cb),
       (H_R, req, id, cb))
H_WRAP(int, raft_transfer,
       (struct raft * r, struct raft_transfer *req, raft_id id,
        raft_transfer_cb cb),
       (H_R, req, id, cb))

/* ---- the node's callbacks --------------------------------------------- */

static void h_on_applied(void *arg, const struct cons_applied *ev)
{
    struct h_node *hn = arg;
    struct h_event *e;

    assert_true(hn->n_applied < H_MAX_EVENTS);
    e = &hn->applied[hn->n_applied++];
    e->origin = ev->cmd->origin;
    e->type = ev->cmd->type;
    e->status = ev->eff->status;
    e->seq = ev->eff->seq;
}

static void h_on_failed(void *arg, const struct relay_origin *o, int code)
{
    struct h_node *hn = arg;
    struct h_event *e;

    assert_true(hn->n_failed < H_MAX_EVENTS);
    e = &hn->failed[hn->n_failed++];
    memset(e, 0, sizeof(*e));
    e->origin = *o;
    e->status = code;
}

static void h_link_drop(struct h_node *hn)
{
    for (size_t k = 0; k < hn->n_link; k++)
        free(hn->link[k].p);
    hn->n_link = 0;
}

static int h_fw_send(void *arg, uint32_t leader, const uint8_t *batch,
                     size_t len)
{
    struct h_node *hn = arg;
    struct h_batch *b;

    if (hn->n_link == H_MAX_LINK)
        return -1;
    b = &hn->link[hn->n_link++];
    b->p = malloc(len);
    assert_non_null(b->p);
    memcpy(b->p, batch, len);
    b->len = len;
    b->to = leader;
    hn->n_sent++;
    return 0;
}

/* As net's link: a link to another node than the new leader is dropped
 * with whatever it still held. */
static void h_fw_leader_changed(void *arg, uint32_t leader)
{
    struct h_node *hn = arg;

    if (hn->n_link > 0 && hn->link[0].to != leader)
        h_link_drop(hn);
}

/* ---- set-up ------------------------------------------------------------- */

/* A cluster of n voters, node 1 elected. */
static inline struct h *h_new(unsigned n)
{
    struct h *h = calloc(1, sizeof(*h));
    struct raft_configuration conf;

    assert_non_null(h);
    assert_true(n <= H_MAX_NODES);
    /* The nodes' own log lines: on request too (H_LOG=1). */
    log_threshold = getenv("H_LOG") != NULL ? LOG_LVL_DEBUG : LOG_LVL_ERROR;
    assert_int_equal(uv_loop_init(&h->loop), 0);
    assert_int_equal(raft_fixture_initialize(&h->f), 0);
    h->f_open = true;
    h_cur = h;
    for (unsigned i = 0; i < n; i++) {
        struct h_node *hn = &h->nodes[i];
        struct cons_config cfg;
        struct cons_forwarder fw = {.send = h_fw_send,
                                    .leader_changed = h_fw_leader_changed,
                                    .arg = hn};
        char addr[32];

        cons_config_default(&cfg);
        cfg.id = i + 1;
        snprintf(addr, sizeof(addr), "127.0.0.1:%u", 9081 + i);
        cfg.raft_addr = addr;
        cfg.data_dir = "unused";
        /* The settling window after an election is three of the node's
         * heartbeats of uv_now, which stands still here: none. */
        cfg.heartbeat_timeout_ms = 0;
        hn->i = i;
        assert_int_equal(cons_node_init(&hn->n, &h->loop, &cfg), CONS_OK);
        cons_node_set_callbacks(hn->n, h_on_applied, h_on_failed, hn);
        cons_node_set_forwarder(hn->n, &fw);
        assert_int_equal(raft_fixture_grow(&h->f, &hn->n->fsm), 0);
        /* The fixture's raft narrates every step on stderr: only on
         * request (H_TRACE=1). */
        if (getenv("H_TRACE") == NULL)
            raft_fixture_get(&h->f, i)->tracer = NULL;
        h->n++;
    }
    assert_int_equal(raft_fixture_configuration(&h->f, n, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&h->f, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&h->f), 0);
    for (unsigned i = 0; i < n; i++) {
        struct cons_node *node = h->nodes[i].n;

        node->raft_started = true;
        /* What raft_uv reports as the room its log has left (KiB): the
         * node's own raft_io is never initialised here, and at 0 the node
         * would take its disk for full (ready.c) and hand leadership on. */
        node->io.capacity = UINT16_MAX;
    }
    raft_fixture_elect(&h->f, 0);
    return h;
}

static inline void h_free(struct h *h)
{
    /* The fixture first: closing its rafts answers the requests still in
     * flight, whose callbacks touch the nodes. */
    raft_fixture_close(&h->f);
    h->f_open = false;
    for (unsigned i = 0; i < h->n; i++) {
        h->nodes[i].n->raft.configuration.servers = NULL;
        h->nodes[i].n->raft.configuration.n = 0;
        cons_node_close(h->nodes[i].n, NULL, NULL);
        h_link_drop(&h->nodes[i]);
    }
    assert_int_equal(uv_run(&h->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&h->loop), 0);
    h_cur = NULL;
    free(h);
}

/* ---- stepping ------------------------------------------------------------ */

/* Runs what a loop turn would: each node's queue timer when it runs and
 * its flush when armed, then each
 * link's batches to the node they were sent to (cons_propose_batch; a
 * refusal drops the link's queue and resets, as net does). */
static inline void h_pump(struct h *h)
{
    for (unsigned i = 0; i < h->n; i++) {
        struct cons_node *n = h->nodes[i].n;

        /* The queue timer notices leader changes (no command expires:
         * uv_now stands still). */
        if (uv_is_active((uv_handle_t *)&n->queue_timer))
            cons__on_queue_timer(&n->queue_timer);
        if (n->flush_armed)
            cons__on_flush_idle(&n->flush_idle);
    }
    for (unsigned i = 0; i < h->n; i++) {
        struct h_node *hn = &h->nodes[i];
        size_t k;

        if (hn->link_frozen)
            continue;
        for (k = 0; k < hn->n_link; k++) {
            struct h_batch *b = &hn->link[k];
            int rv;

            assert_true(b->to >= 1 && b->to <= h->n);
            rv = cons_propose_batch(h->nodes[b->to - 1].n, hn->i + 1, b->p,
                                    b->len);
            if (rv != CONS_OK)
                break;
            free(b->p);
        }
        if (k < hn->n_link) {
            for (; k < hn->n_link; k++)
                free(hn->link[k].p);
            hn->n_link = 0;
            cons_forward_reset(hn->n);
            continue;
        }
        hn->n_link = 0;
    }
}

/* Pumps and steps the fixture until pred holds (true) or max_ms of
 * fixture time went by (false). */
static inline bool h_until(struct h *h, bool (*pred)(struct h *h, void *arg),
                           void *arg, unsigned max_ms)
{
    raft_time end = raft_fixture_time(&h->f) + max_ms;

    for (;;) {
        h_pump(h);
        if (pred != NULL && pred(h, arg))
            return true;
        if (raft_fixture_time(&h->f) > end)
            return false;
        raft_fixture_step(&h->f);
    }
}

/* ---- commands ------------------------------------------------------------ */

static inline void h_cmd_room(struct relay_cmd *c, uint32_t node,
                              uint64_t session, uint64_t counter,
                              const char *room)
{
    memset(c, 0, sizeof(*c));
    c->type = RELAY_CMD_CREATE_ROOM;
    c->origin = (struct relay_origin){node, session, counter};
    c->room = room;
    c->room_len = strlen(room);
}

/* A relay push of the msgpack integer counter % 128 on key "k". */
static inline void h_cmd_push(struct relay_cmd *c, uint32_t node,
                              uint64_t session, uint64_t counter,
                              const char *room)
{
    static uint8_t values[128];

    for (unsigned v = 0; v < 128; v++)
        values[v] = (uint8_t)v; /* positive fixints */
    memset(c, 0, sizeof(*c));
    c->type = RELAY_CMD_PUSH;
    c->origin = (struct relay_origin){node, session, counter};
    c->room = room;
    c->room_len = strlen(room);
    c->key = "k";
    c->key_len = 1;
    c->action = RELAY_ACT_APPEND;
    c->value = &values[counter % 128];
    c->value_len = 1;
}

/* How often node hn heard on_applied for (session, counter). */
static inline size_t h_applied_count(const struct h_node *hn, uint64_t session,
                                     uint64_t counter)
{
    size_t c = 0;

    for (size_t k = 0; k < hn->n_applied; k++)
        if (hn->applied[k].origin.session == session &&
            hn->applied[k].origin.counter == counter)
            c++;
    return c;
}

static inline uint64_t h_last_seq(const struct h_node *hn, const char *room)
{
    struct relay_room_info ri;

    if (relay_room_info(cons_node_state(hn->n), room, strlen(room), &ri) !=
        RELAY_OK)
        return 0;
    return ri.last_seq;
}

#endif
