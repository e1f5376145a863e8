/*
 * fuzz.h - what every libFuzzer target of tests/fuzz shares: the entry
 * point's prototype and CHECK, which reports a broken invariant with its
 * place and aborts (libFuzzer then saves the input as a crash).
 */
#ifndef DRIFTD_FUZZ_H
#define DRIFTD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,         \
                    __LINE__, #cond);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

static inline int same_bytes(const void *a, size_t an, const void *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

#endif
