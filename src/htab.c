/*
 * htab.c - the seeded hash table (include/htab.h).
 *
 * Design: an array of 2^k bucket heads, chains through the nodes embedded
 * in their owners, doubled at load factor 1. The hash is SipHash-2-4
 * (Aumasson & Bernstein, "SipHash: a fast short-input PRF", 2012) keyed
 * with the table's seed: without the seed, a set of colliding keys cannot
 * be computed, so chains stay short whatever keys clients choose.
 *
 * Not here: iteration (see the header), deletion of nodes, any notion of
 * what the keys are.
 */
#include <stdlib.h>
#include <string.h>

#include "htab.h"

/* ---- SipHash-2-4, 64-bit output ------------------------------------------ */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

#define SIPROUND                                                               \
    do {                                                                       \
        v0 += v1;                                                              \
        v1 = ROTL(v1, 13);                                                     \
        v1 ^= v0;                                                              \
        v0 = ROTL(v0, 32);                                                     \
        v2 += v3;                                                              \
        v3 = ROTL(v3, 16);                                                     \
        v3 ^= v2;                                                              \
        v0 += v3;                                                              \
        v3 = ROTL(v3, 21);                                                     \
        v3 ^= v0;                                                              \
        v2 += v1;                                                              \
        v1 = ROTL(v1, 17);                                                     \
        v1 ^= v2;                                                              \
        v2 = ROTL(v2, 32);                                                     \
    } while (0)

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

uint64_t htab_siphash(const uint8_t seed[HTAB_SEED_LEN], const void *data,
                      size_t len)
{
    const uint8_t *in = data;
    uint64_t k0 = load_le64(seed), k1 = load_le64(seed + 8);
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0;
    uint64_t v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0;
    uint64_t v3 = 0x7465646279746573ULL ^ k1;
    uint64_t b = (uint64_t)len << 56, m;
    size_t left = len & 7, i;
    const uint8_t *end = in + (len - left);

    for (; in != end; in += 8) {
        m = load_le64(in);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    for (i = 0; i < left; i++)
        b |= (uint64_t)in[i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- the table ---------------------------------------------------------- */

void htab_init(struct htab *t, const uint8_t *seed)
{
    memset(t, 0, sizeof(*t));
    if (seed != NULL)
        memcpy(t->seed, seed, HTAB_SEED_LEN);
}

void htab_close(struct htab *t)
{
    free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = 0;
    t->count = 0;
}

static size_t bucket(const struct htab *t, uint64_t h)
{
    return (size_t)(h & (t->nbuckets - 1));
}

int htab_reserve(struct htab *t, size_t count)
{
    size_t nb = t->nbuckets == 0 ? 16 : t->nbuckets, i;
    struct htab_node **b, *n, *next;

    if (count <= t->nbuckets)
        return HTAB_OK;
    while (nb < count) {
        if (nb > SIZE_MAX / 2 / sizeof(*b))
            return HTAB_ENOMEM;
        nb *= 2;
    }
    b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return HTAB_ENOMEM;
    for (i = 0; i < t->nbuckets; i++) {
        for (n = t->buckets[i]; n != NULL; n = next) {
            next = n->next;
            n->next = b[n->hash & (nb - 1)];
            b[n->hash & (nb - 1)] = n;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
    return HTAB_OK;
}

int htab_insert(struct htab *t, struct htab_node *n, const void *key,
                size_t key_len)
{
    size_t i;

    /* Load factor 1. A failed grow with buckets present only lengthens
     * the chains. */
    if (htab_reserve(t, t->count + 1) != HTAB_OK && t->nbuckets == 0)
        return HTAB_ENOMEM;
    n->key = key;
    n->key_len = key_len;
    n->hash = htab_siphash(t->seed, key, key_len);
    i = bucket(t, n->hash);
    n->next = t->buckets[i];
    t->buckets[i] = n;
    t->count++;
    return HTAB_OK;
}

struct htab_node *htab_find(const struct htab *t, const void *key,
                            size_t key_len)
{
    struct htab_node *n;
    uint64_t h;

    if (t->count == 0)
        return NULL;
    h = htab_siphash(t->seed, key, key_len);
    for (n = t->buckets[bucket(t, h)]; n != NULL; n = n->next)
        if (n->hash == h && n->key_len == key_len &&
            (key_len == 0 || memcmp(n->key, key, key_len) == 0))
            return n;
    return NULL;
}

void htab_remove(struct htab *t, struct htab_node *n)
{
    struct htab_node **pp;

    if (t->nbuckets == 0)
        return;
    for (pp = &t->buckets[bucket(t, n->hash)]; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == n) {
            *pp = n->next;
            n->next = NULL;
            t->count--;
            return;
        }
    }
}

size_t htab_max_chain(const struct htab *t)
{
    size_t max = 0;

    for (size_t i = 0; i < t->nbuckets; i++) {
        size_t len = 0;

        for (const struct htab_node *n = t->buckets[i]; n != NULL; n = n->next)
            len++;
        if (len > max)
            max = len;
    }
    return max;
}
