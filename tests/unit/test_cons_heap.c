/*
 * test_cons_heap.c - libraft's allocator with held-back frees
 * (src/consensus/heap.c).
 *
 * At the end of a snapshot the loop collects what raft frees and has
 * libuv's pool free it. Checked: a collected free is not done while it is
 * collected, and is done once the pool's work has run; collection belongs to
 * the thread that asked for it (a free on another thread meanwhile is done at
 * once); outside a collection frees are done at once. Under
 * AddressSanitizer "done" is read from the allocator's own poisoning, so a
 * free done too early or never fails the test (LeakSanitizer too);
 * elsewhere only the paths run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "internal.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define FREED(p) (__asan_address_is_poisoned(p) != 0)
#define CHECKED true
#else
#define FREED(p) ((void)(p), false)
#define CHECKED false
#endif

static void *free_on_thread(void *p)
{
    raft_free(p);
    return NULL;
}

static void test_collected_frees_wait_for_the_pool(void **state)
{
    uv_loop_t loop;
    struct cons__heap_list *l, *was;
    char *a, *b, *c, *d;
    pthread_t t;

    (void)state;
    cons__heap_install();
    assert_int_equal(uv_loop_init(&loop), 0);
    a = raft_malloc(64);
    b = raft_calloc(1, 4096);
    c = raft_malloc(32);
    d = raft_malloc(32);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_non_null(d);
    memset(a, 'a', 64);

    l = cons__heap_list_new();
    assert_non_null(l);
    was = cons__heap_collect(l);
    assert_null(was);
    raft_free(a);
    raft_free(b);
    raft_free(NULL);
    /* another thread's free is its own business: done at once */
    assert_int_equal(pthread_create(&t, NULL, free_on_thread, c), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_ptr_equal(cons__heap_collect(was), l);
    if (CHECKED) {
        assert_false(FREED(a));
        assert_false(FREED(b));
        assert_true(FREED(c));
    }
    assert_int_equal(a[63], 'a'); /* still the node's memory */

    /* The pool may run the frees as soon as they are queued: only after
     * uv_run has seen the work done are they certain. */
    cons__heap_free_later(&loop, l);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    if (CHECKED) {
        assert_true(FREED(a));
        assert_true(FREED(b));
    }

    /* outside a collection: at once */
    raft_free(d);
    if (CHECKED)
        assert_true(FREED(d));
    /* an empty list, and none at all */
    cons__heap_free_later(&loop, cons__heap_list_new());
    cons__heap_free_later(&loop, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_collected_frees_wait_for_the_pool),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
