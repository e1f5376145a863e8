/*
 * subs.c - the subscription index: which local WebSocket sessions want a
 * broadcast of (room, key).
 *
 * Design:
 * - srv->rooms holds an entry only for rooms with at least one local WS
 *   session; the entry goes when its last session detaches. Inside, keys
 *   map to an array of struct net_sub; each session keeps the array of its
 *   own subs. A sub records its index in both arrays, so removing one is a
 *   swap with the last element, O(1), and a broadcast is two hash lookups
 *   plus a walk over exactly the subscribers: never O(rooms) or O(keys).
 * - Debug sessions are not subscribed to keys: they sit in the room's
 *   debug array and receive every broadcast of the room once.
 * - The tables are htab.h's, keyed with the server's random seed, because
 *   keys and room ids come from clients.
 *
 * Not here: deciding what is sent (ws.c) or whether a room exists in the
 * replicated state (relay, via consensus).
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- rooms, keys, subscriptions ----------------------------------------- */

/*
 * Returns arr with room for one more element beyond n (capacity *cap,
 * doubled when full), or NULL when out of memory (arr is then unchanged).
 */
static void *grow_array(void *arr, size_t n, size_t *cap, size_t elem)
{
    size_t nc;
    void *p;

    if (n < *cap)
        return arr;
    nc = *cap == 0 ? 4 : *cap * 2;
    p = realloc(arr, nc * elem);
    if (p != NULL)
        *cap = nc;
    return p;
}

struct net_room *net__room_find(struct net_server *s, const char *id,
                                size_t id_len)
{
    struct htab_node *n = htab_find(&s->rooms, id, id_len);

    return n == NULL ? NULL
                     : (struct net_room *)((char *)n -
                                           offsetof(struct net_room, node));
}

struct net_key *net__key_find(struct net_room *r, const char *key,
                              size_t key_len)
{
    struct htab_node *n = htab_find(&r->keys, key, key_len);

    return n == NULL
               ? NULL
               : (struct net_key *)((char *)n - offsetof(struct net_key, node));
}

static void room_free(struct net_server *s, struct net_room *r)
{
    htab_remove(&s->rooms, &r->node);
    htab_close(&r->keys);
    free(r->debug);
    free(r);
}

int net__room_attach(struct net_server *s, struct net_conn *c)
{
    struct net_room *r = net__room_find(s, c->room_id, c->room_len);
    bool created = false;
    void *p;

    if (r == NULL) {
        r = calloc(1, sizeof(*r));
        if (r == NULL)
            return NET_ENOMEM;
        memcpy(r->id, c->room_id, c->room_len);
        r->id_len = c->room_len;
        htab_init(&r->keys, s->seed);
        if (htab_insert(&s->rooms, &r->node, r->id, r->id_len) != HTAB_OK)
            goto err_free_room;
        created = true;
    }
    if (c->debug) {
        p = grow_array(r->debug, r->n_debug, &r->cap_debug, sizeof(*r->debug));
        if (p == NULL)
            goto err_room;
        r->debug = p;
        c->debug_idx = r->n_debug;
        r->debug[r->n_debug++] = c;
    }
    r->n_conns++;
    c->room = r;
    return NET_OK;
err_room:
    if (created)
        room_free(s, r);
    return NET_ENOMEM;
err_free_room:
    free(r); /* not in the table */
    return NET_ENOMEM;
}

static void key_free(struct net_room *r, struct net_key *k)
{
    htab_remove(&r->keys, &k->node);
    free(k->subs);
    free(k->key);
    free(k);
}

/* Removes sub from both arrays by swapping in the last element. */
static void sub_remove(struct net_room *r, struct net_sub *sub)
{
    struct net_key *k = sub->key;
    struct net_conn *c = sub->conn;

    k->subs[sub->key_idx] = k->subs[--k->n];
    k->subs[sub->key_idx]->key_idx = sub->key_idx;
    c->subs[sub->conn_idx] = c->subs[--c->n_subs];
    c->subs[sub->conn_idx]->conn_idx = sub->conn_idx;
    c->sub_key_bytes -= k->key_len;
    free(sub);
    if (k->n == 0)
        key_free(r, k);
}

void net__room_detach(struct net_server *s, struct net_conn *c)
{
    struct net_room *r = c->room;

    if (r == NULL)
        return;
    while (c->n_subs > 0)
        sub_remove(r, c->subs[c->n_subs - 1]);
    free(c->subs);
    c->subs = NULL;
    c->cap_subs = 0;
    if (c->debug && r->n_debug > 0 && r->debug[c->debug_idx] == c) {
        r->debug[c->debug_idx] = r->debug[--r->n_debug];
        r->debug[c->debug_idx]->debug_idx = c->debug_idx;
    }
    c->room = NULL;
    if (--r->n_conns == 0)
        room_free(s, r);
}

int net__sub_add(struct net_server *s, struct net_conn *c, const char *key,
                 size_t key_len)
{
    struct net_room *r = c->room;
    struct net_key *k;
    struct net_sub *sub;
    bool created = false;
    size_t i;
    void *p;

    (void)s;
    if (r == NULL)
        return NET_EINVAL;
    k = net__key_find(r, key, key_len);
    if (k != NULL) {
        /* A session subscribes to few keys; the scan is over its own. */
        for (i = 0; i < c->n_subs; i++)
            if (c->subs[i]->key == k)
                return NET_OK;
    }
    if (c->n_subs >= NET_MAX_SUBS ||
        key_len > NET_MAX_SUB_KEY_BYTES - c->sub_key_bytes)
        return NET_EINVAL;
    if (k == NULL) {
        k = calloc(1, sizeof(*k));
        if (k == NULL)
            return NET_ENOMEM;
        k->key = malloc(key_len + 1);
        if (k->key == NULL)
            goto err_free_key;
        memcpy(k->key, key, key_len);
        k->key[key_len] = '\0';
        k->key_len = key_len;
        k->room = r;
        if (htab_insert(&r->keys, &k->node, k->key, k->key_len) != HTAB_OK)
            goto err_free_key_str;
        created = true;
    }
    p = grow_array(k->subs, k->n, &k->cap, sizeof(*k->subs));
    if (p == NULL)
        goto err_drop_key;
    k->subs = p;
    p = grow_array(c->subs, c->n_subs, &c->cap_subs, sizeof(*c->subs));
    if (p == NULL)
        goto err_drop_key;
    c->subs = p;
    sub = malloc(sizeof(*sub));
    if (sub == NULL)
        goto err_drop_key;
    sub->conn = c;
    sub->key = k;
    sub->key_idx = k->n;
    sub->conn_idx = c->n_subs;
    k->subs[k->n++] = sub;
    c->subs[c->n_subs++] = sub;
    c->sub_key_bytes += key_len;
    return NET_OK;

err_drop_key:
    if (created)
        key_free(r, k);
    return NET_ENOMEM;
err_free_key_str:
    free(k->key);
err_free_key:
    free(k);
    return NET_ENOMEM;
}
