/*
 * htab.h - the one hash table of driftd: intrusive, chained, keyed with
 * SipHash-2-4 under a 16-byte seed.
 *
 * Room ids, stream keys and session ids are chosen by clients. With an
 * unkeyed hash a client can pick a key set that lands in one bucket and turn
 * every lookup into a walk of it; with a secret random seed per process it
 * cannot aim. Every table over client-chosen keys uses this one (relay's
 * rooms, keys and dedupe records; net's rooms, keys and session owners).
 *
 * The table only finds things. It has no iteration on purpose: bucket order
 * depends on the seed, and anything that must be the same on every node
 * (snapshots, listings) walks its own insertion-ordered list instead.
 *
 * Pure: libc only, no I/O, no randomness (the seed is the caller's). Nodes
 * are embedded in the caller's structs; the table never allocates or frees
 * them, only its bucket array.
 */
#ifndef DRIFTD_HTAB_H
#define DRIFTD_HTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTAB_SEED_LEN 16

enum {
    HTAB_OK = 0,
    HTAB_ENOMEM = 1,
};

/* Embed one per table an object is in. Fields are the table's. */
struct htab_node {
    struct htab_node *next;
    const void *key; /* borrowed from the owner, stable while linked */
    size_t key_len;
    uint64_t hash;
};

struct htab {
    struct htab_node **buckets; /* malloc'd; NULL until the first insert */
    size_t nbuckets;            /* 0 or a power of two */
    size_t count;
    uint8_t seed[HTAB_SEED_LEN];
};

/* SipHash-2-4 of [data, data+len) under seed, 64-bit output. */
uint64_t htab_siphash(const uint8_t seed[HTAB_SEED_LEN], const void *data,
                      size_t len);

/* An empty table; seed (16 bytes, copied) may be NULL for all zeros,
 * which is for tests and tools only: then a client can aim collisions. */
void htab_init(struct htab *t, const uint8_t *seed);
/* Frees the bucket array (not the nodes); t is empty and reusable. */
void htab_close(struct htab *t);

/* Grows the bucket array so that `count` entries fit without growing
 * again. HTAB_OK or HTAB_ENOMEM (t unchanged). */
int htab_reserve(struct htab *t, size_t count);

/*
 * Links n under key (borrowed: it must stay valid and unchanged while n is
 * linked; normally it points into n's owner). The caller makes sure the key
 * is not in the table yet. Grows the table at load factor 1; if that fails
 * the chains just get longer, so after htab_reserve(t, t->count + 1)
 * insertion cannot fail. HTAB_ENOMEM only when the table has no buckets at
 * all and none could be allocated (nothing linked).
 */
int htab_insert(struct htab *t, struct htab_node *n, const void *key,
                size_t key_len);

/* The node linked under key, or NULL. */
struct htab_node *htab_find(const struct htab *t, const void *key,
                            size_t key_len);

/* Unlinks n (a no-op when n is not in t). */
void htab_remove(struct htab *t, struct htab_node *n);

/* The longest chain (tests: a crafted key set must not pile up). */
size_t htab_max_chain(const struct htab *t);

/* The owner of node pointer p: HTAB_ENTRY(p, struct room, node). */
#define HTAB_ENTRY(p, type, member)                                            \
    ((type *)(void *)((char *)(p)-offsetof(type, member)))

#endif
