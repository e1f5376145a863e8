/*
 * heap.c - libraft's allocator, with frees that can be held back and done
 * on another thread.
 *
 * When a snapshot is written, libraft frees its buffer and drops the
 * entries it covers from its in-memory log, one free per entry, on the
 * loop: 8-22 ms measured around the call at 38-127 MB of state, and with a
 * state of 1.1 GB a snapshot covers about as much log (~66,000 entries of
 * ~17 KB). Around such a call the loop thread collects what libraft frees
 * (cons__heap_collect) and hands the list to libuv's pool
 * (cons__heap_free_later).
 *
 * Collection is per thread (a thread-local list), so raft_uv's own work on
 * the pool frees as before. A list that cannot grow frees at once.
 *
 * Not here: when to collect (snapjob.c, around raft's snapshot callback).
 */
#include <stdlib.h>

#include "internal.h"

struct cons__heap_list {
    void **p;
    size_t n, cap;
    uv_work_t work;
};

static _Thread_local struct cons__heap_list *collecting;

static void *heap_malloc(void *data, size_t size)
{
    (void)data;
    return malloc(size);
}

static void heap_free(void *data, void *ptr)
{
    struct cons__heap_list *l = collecting;

    (void)data;
    if (ptr == NULL)
        return;
    if (l != NULL && l->n == l->cap) {
        size_t cap = l->cap < 1024 ? 1024 : l->cap * 2;
        void **p = realloc(l->p, cap * sizeof(*p));

        if (p != NULL) {
            l->p = p;
            l->cap = cap;
        }
    }
    if (l != NULL && l->n < l->cap) {
        l->p[l->n++] = ptr;
        return;
    }
    free(ptr);
}

static void *heap_calloc(void *data, size_t nmemb, size_t size)
{
    (void)data;
    return calloc(nmemb, size);
}

static void *heap_realloc(void *data, void *ptr, size_t size)
{
    (void)data;
    return realloc(ptr, size);
}

static void *heap_aligned_alloc(void *data, size_t alignment, size_t size)
{
    (void)data;
    return aligned_alloc(alignment, size);
}

static void heap_aligned_free(void *data, size_t alignment, void *ptr)
{
    (void)data;
    (void)alignment;
    free(ptr);
}

static struct raft_heap heap = {
    .malloc = heap_malloc,
    .free = heap_free,
    .calloc = heap_calloc,
    .realloc = heap_realloc,
    .aligned_alloc = heap_aligned_alloc,
    .aligned_free = heap_aligned_free,
};

void cons__heap_install(void)
{
    raft_heap_set(&heap);
}

struct cons__heap_list *cons__heap_collect(struct cons__heap_list *l)
{
    struct cons__heap_list *was = collecting;

    collecting = l;
    return was;
}

struct cons__heap_list *cons__heap_list_new(void)
{
    return calloc(1, sizeof(struct cons__heap_list));
}

static void free_work(uv_work_t *w)
{
    struct cons__heap_list *l = w->data;

    for (size_t i = 0; i < l->n; i++)
        free(l->p[i]);
    l->n = 0;
}

static void free_done(uv_work_t *w, int status)
{
    struct cons__heap_list *l = w->data;

    (void)status;
    free(l->p);
    free(l);
}

void cons__heap_free_later(uv_loop_t *loop, struct cons__heap_list *l)
{
    if (l == NULL)
        return;
    l->work.data = l;
    if (l->n > 0 && uv_queue_work(loop, &l->work, free_work, free_done) == 0)
        return;
    free_work(&l->work);
    free_done(&l->work, 0);
}
