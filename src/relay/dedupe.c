/*
 * dedupe.c - the dedupe table: for each origin session (node id, session
 * id) the highest command counter applied, so a command re-sent after a
 * leader change or a lost link is applied exactly once (EDUP otherwise).
 *
 * A seeded hash table finds a session; a list in least-recently-applied
 * order bounds the table (max_dedupe evicts from its head) and expires
 * sessions idle past dedupe_ttl_ms of log time, also from its head. Log time
 * alone decides, so every node forgets the same sessions at the same entry.
 *
 * Not here: where origins come from (net's sessions, consensus's system
 * commands) and the FSM's reporting of an own command that arrives as a
 * duplicate (consensus/fsm.c).
 */
#include <stdlib.h>

#include "state_internal.h"

/* The table key of an origin session: fixed width and byte order, so it
 * does not depend on struct padding. */
static void dd_key(uint8_t key[12], uint32_t node, uint64_t session)
{
    for (int i = 0; i < 4; i++)
        key[i] = (uint8_t)(node >> (8 * i));
    for (int i = 0; i < 8; i++)
        key[4 + i] = (uint8_t)(session >> (8 * i));
}

struct relay__dd *relay__dd_find(const struct relay_state *s, uint32_t node,
                                 uint64_t session)
{
    struct htab_node *n;
    uint8_t key[12];

    dd_key(key, node, session);
    n = htab_find(&s->dedupe, key, sizeof(key));
    return n != NULL ? HTAB_ENTRY(n, struct relay__dd, hnode) : NULL;
}

bool relay_state_origin_applied(const struct relay_state *s,
                                const struct relay_origin *o)
{
    const struct relay__dd *d = relay__dd_find(s, o->node, o->session);

    return d != NULL && o->counter <= d->counter;
}

bool relay__dd_reserve(struct relay_state *s)
{
    return htab_reserve(&s->dedupe, s->n_dd + 1) == HTAB_OK;
}

static void dd_lru_unlink(struct relay_state *s, struct relay__dd *d)
{
    if (d->lprev != NULL)
        d->lprev->lnext = d->lnext;
    else
        s->lhead = d->lnext;
    if (d->lnext != NULL)
        d->lnext->lprev = d->lprev;
    else
        s->ltail = d->lprev;
    d->lprev = d->lnext = NULL;
}

static void dd_lru_append(struct relay_state *s, struct relay__dd *d)
{
    d->lprev = s->ltail;
    d->lnext = NULL;
    if (s->ltail != NULL)
        s->ltail->lnext = d;
    else
        s->lhead = d;
    s->ltail = d;
}

static void dd_remove(struct relay_state *s, struct relay__dd *d)
{
    htab_remove(&s->dedupe, &d->hnode);
    dd_lru_unlink(s, d);
    s->n_dd--;
    free(d);
}

/* Links a new record at the most-recent end (relay__dd_reserve done, so this
 * cannot fail). */
void relay__dd_link(struct relay_state *s, struct relay__dd *d)
{
    dd_key(d->key, d->node, d->session);
    htab_insert(&s->dedupe, &d->hnode, d->key, sizeof(d->key));
    dd_lru_append(s, d);
    s->n_dd++;
}

/* Forgets sessions idle for longer than the TTL at log time now_ms. */
static void dd_expire(struct relay_state *s, uint64_t now_ms)
{
    while (s->lhead != NULL && now_ms > s->lhead->last_ms &&
           now_ms - s->lhead->last_ms > s->lim.dedupe_ttl_ms)
        dd_remove(s, s->lhead);
}

/*
 * Records that origin o was applied (or refused) at now_ms. spare is a
 * pre-allocated record used when the session is new (set to NULL when used).
 */
void relay__dd_record(struct relay_state *s, const struct relay_origin *o,
                      uint64_t now_ms, struct relay__dd **spare)
{
    struct relay__dd *d = relay__dd_find(s, o->node, o->session);

    if (d == NULL) {
        d = *spare;
        *spare = NULL;
        d->node = o->node;
        d->session = o->session;
        relay__dd_link(s, d);
    } else {
        dd_lru_unlink(s, d);
        dd_lru_append(s, d);
    }
    d->counter = o->counter;
    /* Log time can step back when leadership moves between nodes with
     * skewed clocks; clamping keeps the list ordered by time, so expiry
     * from the head stays exact. */
    if (d->lprev != NULL && d->lprev->last_ms > now_ms)
        now_ms = d->lprev->last_ms;
    d->last_ms = now_ms;
    while (s->n_dd > s->lim.max_dedupe)
        dd_remove(s, s->lhead);
}

int relay__dd_admit(struct relay_state *s, const struct relay_origin *o,
                    uint64_t now_ms, struct relay__dd **spare)
{
    struct relay__dd *d;

    *spare = NULL;
    dd_expire(s, now_ms);
    d = relay__dd_find(s, o->node, o->session);
    if (d != NULL && o->counter <= d->counter)
        return RELAY_EDUP;
    if (d == NULL) {
        /* Allocated up front so recording cannot fail after applying. */
        if (!relay__dd_reserve(s))
            return RELAY_ENOMEM;
        *spare = calloc(1, sizeof(**spare));
        if (*spare == NULL)
            return RELAY_ENOMEM;
    }
    return RELAY_OK;
}

void relay__dd_clear(struct relay_state *s)
{
    struct relay__dd *d = s->lhead;

    while (d != NULL) {
        struct relay__dd *next = d->lnext;

        free(d);
        d = next;
    }
    htab_close(&s->dedupe);
    s->n_dd = 0;
    s->lhead = s->ltail = NULL;
}
