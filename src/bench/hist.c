/*
 * hist.c - latency histograms with log-linear buckets (the HdrHistogram
 * layout, 6 bits of sub-bucket precision) over nanoseconds.
 *
 * Values below 128 ns get one bucket each; for larger values the top 7
 * significant bits select one of 64 buckets per power of two. Adding a
 * sample is a count-leading-zeros and an increment: no allocation, so
 * millions of samples per second cost nothing that shows in a profile.
 *
 * Histograms of several worker processes (--workers) are merged by adding
 * their buckets: the merged percentiles are those of all the samples, with
 * the same precision.
 *
 * Not here: coordinated omission correction (the rate-driven scenarios
 * report how far the publishers fell behind their schedule instead).
 */
#include <string.h>

#include "bench.h"

void bench_hist_reset(struct bench_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

static unsigned bucket_of(uint64_t v)
{
    unsigned msb, shift;

    if (v < 128)
        return (unsigned)v;
    msb = 63u - (unsigned)__builtin_clzll(v);
    shift = msb - 6; /* v >> shift is in [64, 127] */
    return 128u + (shift - 1u) * 64u + (unsigned)((v >> shift) - 64u);
}

/* The highest value that falls into bucket b. */
static uint64_t bucket_top(unsigned b)
{
    unsigned shift;
    uint64_t sub;

    if (b < 128)
        return b;
    shift = (b - 128u) / 64u + 1u;
    sub = (b - 128u) % 64u + 64u;
    return ((sub + 1u) << shift) - 1u;
}

void bench_hist_add(struct bench_hist *h, uint64_t ns)
{
    h->buckets[bucket_of(ns)]++;
    h->count++;
    h->sum += (double)ns;
    if (ns < h->min)
        h->min = ns;
    if (ns > h->max)
        h->max = ns;
}

void bench_hist_merge(struct bench_hist *into, const struct bench_hist *h)
{
    if (h->count == 0)
        return;
    for (unsigned b = 0; b < BENCH_HIST_BUCKETS; b++)
        into->buckets[b] += h->buckets[b];
    into->count += h->count;
    into->sum += h->sum;
    if (h->min < into->min)
        into->min = h->min;
    if (h->max > into->max)
        into->max = h->max;
}

uint64_t bench_hist_quantile(const struct bench_hist *h, double q)
{
    uint64_t rank, seen = 0;
    unsigned b;

    if (h->count == 0)
        return 0;
    if (q >= 1.0)
        return h->max;
    /* The smallest value with at least q of the samples at or below it. */
    rank = (uint64_t)(q * (double)h->count + 0.5);
    if (rank < 1)
        rank = 1;
    for (b = 0; b < BENCH_HIST_BUCKETS; b++) {
        seen += h->buckets[b];
        if (seen >= rank) {
            uint64_t top = bucket_top(b);

            return top > h->max ? h->max : top;
        }
    }
    return h->max;
}

double bench_hist_mean(const struct bench_hist *h)
{
    return h->count == 0 ? 0.0 : h->sum / (double)h->count;
}
