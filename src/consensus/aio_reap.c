/*
 * aio_reap.c - takes libraft's io_destroy() off the loop thread.
 *
 * Why: libraft (0.22.1) gives every open log segment a kernel AIO context
 * and destroys it, on the loop thread, when the segment is closed: at every
 * segment switch and at every snapshot. Linux's io_destroy() waits for an
 * RCU grace period, ~40 ms here, during which the node's loop does nothing;
 * and since every node switches segments at about the same log index, the
 * whole cluster pauses. That pause was the p99.9 of push->deliver
 * (docs/benchmarks.md, "Latency: what is left").
 *
 * How: libraft issues the call through libc's syscall(), which it imports
 * from glibc. The executable defines syscall() itself, so the dynamic
 * linker binds libraft's (and every other library's) calls here; this one
 * forwards everything to glibc's syscall() unchanged except io_destroy,
 * which it queues for a reaper thread and reports as done. That is safe
 * for libraft's uses: it destroys a context only once no write is pending
 * on it and never touches the context again, and a context that still
 * exists keeps its own id, so a new io_setup() cannot be handed the same
 * one. Contexts left in the queue at exit are released by the kernel.
 *
 * Bounds: at most AIO_REAP_MAX contexts wait; beyond that (or if the
 * thread could not start) io_destroy runs synchronously, as before.
 * cons__aio_reap_start() must be called once (cons_node_start does) so
 * this object is linked in; until then nothing is deferred.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define LOG_MODULE "cons"
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/syscall.h>

#include "internal.h"
#include "log.h"

#define AIO_REAP_MAX 64

typedef long (*syscall_fn)(long, ...);

static syscall_fn libc_syscall;
static pthread_mutex_t reap_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reap_cv = PTHREAD_COND_INITIALIZER;
static unsigned long reap_q[AIO_REAP_MAX];
static size_t reap_head, reap_len;
static bool reap_running;

/* glibc's syscall(). Resolved on first use: a library's constructor may
 * call syscall() before any of ours runs. Racing threads store the same
 * value. */
static syscall_fn get_libc_syscall(void)
{
    syscall_fn fn = __atomic_load_n(&libc_syscall, __ATOMIC_ACQUIRE);

    if (fn == NULL) {
        fn = (syscall_fn)dlsym(RTLD_NEXT, "syscall");
        __atomic_store_n(&libc_syscall, fn, __ATOMIC_RELEASE);
    }
    return fn;
}

static void *reaper(void *arg)
{
    unsigned long ctx;

    (void)arg;
    pthread_mutex_lock(&reap_mu);
    for (;;) {
        while (reap_len == 0)
            pthread_cond_wait(&reap_cv, &reap_mu);
        ctx = reap_q[reap_head];
        reap_head = (reap_head + 1) % AIO_REAP_MAX;
        reap_len--;
        pthread_mutex_unlock(&reap_mu);
        get_libc_syscall()(SYS_io_destroy, ctx);
        pthread_mutex_lock(&reap_mu);
    }
    return NULL;
}

void cons__aio_reap_start(void)
{
    pthread_attr_t attr;
    pthread_t th;
    bool ok;

    pthread_mutex_lock(&reap_mu);
    if (reap_running || get_libc_syscall() == NULL) {
        pthread_mutex_unlock(&reap_mu);
        return;
    }
    ok = pthread_attr_init(&attr) == 0;
    if (ok) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 64 * 1024);
        ok = pthread_create(&th, &attr, reaper, NULL) == 0;
        pthread_attr_destroy(&attr);
    }
    reap_running = ok;
    pthread_mutex_unlock(&reap_mu);
    if (!ok)
        LOG_WARN("event=aio_reaper_failed: io_destroy stays on the loop");
}

/* Queues ctx for the reaper; false when it must be destroyed here. */
static bool reap_later(unsigned long ctx)
{
    bool queued = false;

    pthread_mutex_lock(&reap_mu);
    if (reap_running && reap_len < AIO_REAP_MAX) {
        reap_q[(reap_head + reap_len) % AIO_REAP_MAX] = ctx;
        reap_len++;
        queued = true;
        pthread_cond_signal(&reap_cv);
    }
    pthread_mutex_unlock(&reap_mu);
    return queued;
}

/*
 * glibc's syscall() reads six argument registers whatever the call; this
 * does the same through va_arg, which on x86-64 and aarch64 reads the
 * saved argument registers, and passes all six on.
 */
long syscall(long number, ...)
{
    syscall_fn fn;
    long a[6];
    va_list ap;
    int i;

    va_start(ap, number);
    for (i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (number == SYS_io_destroy && reap_later((unsigned long)a[0]))
        return 0;
    fn = get_libc_syscall();
    if (fn == NULL) { /* no glibc syscall() to forward to: cannot happen */
        errno = ENOSYS;
        return -1;
    }
    return fn(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
