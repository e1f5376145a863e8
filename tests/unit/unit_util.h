/*
 * unit_util.h - small helpers shared by the cmocka tests: a growable byte
 * vector and a seeded xorshift generator (fuzz loops stay reproducible).
 * Include after <cmocka.h>.
 */
#ifndef DRIFTD_UNIT_UTIL_H
#define DRIFTD_UNIT_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Bytes with a NUL kept after the end, so text can be read as a string. */
struct vec {
    uint8_t *p;
    size_t n;
    size_t cap;
};

static inline void vput(struct vec *v, const void *p, size_t n)
{
    if (v->n + n + 1 > v->cap) {
        size_t cap = v->cap ? v->cap : 64;

        while (cap < v->n + n + 1)
            cap *= 2;
        v->p = realloc(v->p, cap);
        assert_non_null(v->p);
        v->cap = cap;
    }
    if (n > 0)
        memcpy(v->p + v->n, p, n);
    v->n += n;
    v->p[v->n] = 0;
}

static inline uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

#endif
