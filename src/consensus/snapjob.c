/*
 * snapjob.c - snapshots encoded off the loop, by a thread or a forked child.
 *
 * Encoding the whole state on the loop held it for ~1.5 ms per MB (177 ms
 * at 115 MB): every client of the node waited that long at each snapshot.
 * libraft 0.22's fsm "snapshot_async" does not help: its legacy layer calls
 * it right after fsm->snapshot, on the loop. So the state is frozen as it
 * is when raft asks for the snapshot (last_applied == the snapshot's index)
 * and encoded elsewhere, into a pipe, while the node goes on applying:
 *
 *   - thread (the default): relay's view (relay/view.c) freezes the state
 *     at the cost of a walk of its rooms and keys; the state keeps whatever
 *     the view may read until the view is released, after the thread has
 *     ended. A thread, not a child, so that nothing is copied: the fork
 *     itself held the loop for 8-31 ms at 38-200 MB of state (the page
 *     tables), and every page the node wrote afterwards was copied;
 *   - fork: as Redis does, a child sees the state frozen by fork().
 *
 * The bytes must be ready before raft_uv writes them, so fsm_snapshot hands
 * raft a one-buffer placeholder and raft_uv's snapshot_put is wrapped: the
 * put of that placeholder is held back until the pipe has delivered every
 * byte (read on the loop in pipe-sized pieces, tens of µs each), then the
 * buffer is filled in and the put goes on to raft_uv. raft takes no other
 * snapshot meanwhile (its snapshot_taking flag) and holds back an
 * InstallSnapshot from the leader until the put completes, as it does while
 * a slow disk writes one.
 *
 * If the encoder fails (no memory; a child killed), the put fails with
 * RAFT_IOERR: raft records nothing, keeps its log and tries again later
 * (our libraft patch 0005; upstream asserted). Closing cancels the thread
 * (kills the child) and cancels the put before raft_uv's own close runs.
 *
 * Not here: what a snapshot holds (relay/snapshot.c), its header (fsm.c).
 */
#define LOG_MODULE "cons"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "log.h"

/* The encoder's stream: the length of what follows (8 bytes, little-endian),
 * then the snapshot as raft stores it (fsm.c's header, then relay's). */
#define JOB_LEN_BYTES 8
/* A bigger pipe: fewer loop wake-ups per snapshot (the default is 64 KiB;
 * the kernel caps an unprivileged request at fs.pipe-max-size, 1 MiB). */
#define JOB_PIPE_BYTES (256 * 1024)

struct cons__snapjob {
    struct cons_node *node;
    pid_t pid; /* the child (reaped by job_end, or later: snap_zombie) */
    /* or the thread, joined by job_free, and the view it encodes, released
     * there */
    bool threaded;
    pthread_t thread;
    struct relay_view *view;
    uint8_t scratch[8]; /* for reads past the end: there should be none */
    uv_pipe_t pipe;
    bool pipe_open;
    uint8_t len_bytes[JOB_LEN_BYTES];
    size_t len_got;
    uint8_t *buf; /* raft_malloc'd, handed to raft's snapshot buffer */
    size_t len, got;
    bool done; /* every byte arrived */
    uint64_t index;
    uint64_t start_ns, spawned_ns;
    /* The buffer array fsm_snapshot gave raft, and the put raft then made
     * with it, held back (req NULL: not made yet). */
    struct raft_buffer *bufs;
    struct raft_io_snapshot_put *req;
    unsigned trailing;
    const struct raft_snapshot *snapshot;
    raft_io_snapshot_put_cb cb;
    /* raft_uv's close, deferred until the job is gone. */
    raft_io_close_cb close_cb;
};

static struct cons_node *node_of_io(struct raft_io *io)
{
    return (struct cons_node *)((char *)io - offsetof(struct cons_node, io));
}

/* ---- the encoders ------------------------------------------------------- */

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, p, len);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* The stream either encoder writes: length, fsm.c's header, the state. */
static int emit(int fd, const uint8_t *snap, size_t len)
{
    uint8_t len_bytes[JOB_LEN_BYTES], hdr[CONS_SNAP_HDR_LEN];
    uint64_t total = CONS_SNAP_HDR_LEN + len;

    cons__snap_header(hdr, snap, len);
    for (int i = 0; i < JOB_LEN_BYTES; i++)
        len_bytes[i] = (uint8_t)(total >> (8 * i));
    if (write_all(fd, len_bytes, sizeof(len_bytes)) != 0 ||
        write_all(fd, hdr, sizeof(hdr)) != 0 || write_all(fd, snap, len) != 0)
        return -1;
    return 0;
}

struct encoder_arg {
    struct relay_view *view;
    int fd; /* the pipe's write end, the thread's to close */
    unsigned delay_ms;
};

/* Test hook: the encoder thread waits this long (DRIFTD_TEST_SNAPSHOT_DELAY_MS)
 * after its view was taken, so that tests can change the state under a
 * view through the node's own paths (tests/blackbox/snapshots.test.mjs). */
static unsigned test_delay_ms(void)
{
    const char *v = getenv("DRIFTD_TEST_SNAPSHOT_DELAY_MS");
    long ms = v != NULL ? strtol(v, NULL, 10) : 0;

    return ms > 0 && ms < 600000 ? (unsigned)ms : 0;
}

/* The encoder thread: touches only its view and its pipe. Closing the pipe
 * is its last act, so the loop that sees the EOF joins it at once. A
 * failure is a pipe closed early; a cancelled view or a closed read end
 * (EPIPE: SIGPIPE is ignored by the process) ends it too. */
static void *encoder_main(void *p)
{
    struct encoder_arg *arg = p;
    uint8_t *snap;
    size_t len;

    /* Named for top -H and the tests. */
    pthread_setname_np(pthread_self(), "driftd-snap");
    (void)setpriority(PRIO_PROCESS, (id_t)gettid(), CONS_SNAP_NICE);
    for (unsigned t = 0; t < arg->delay_ms && !relay_view_cancelled(arg->view);
         t += 10)
        usleep(10000);
    if (relay_view_encode(arg->view, &snap, &len) == RELAY_OK) {
        (void)emit(arg->fd, snap, len);
        free(snap);
    }
    close(arg->fd);
    free(arg);
    return NULL;
}

/* Runs in the child only: a copy of the process with only this thread, so
 * it touches nothing but the state and its pipe, and never returns. */
static void child_main(struct cons_node *n, int fd, pid_t parent)
{
    uint8_t *snap;
    size_t len;

    /* The parent's handlers (libuv's signal pipe) mean nothing here: a
     * SIGTERM or Ctrl-C ends the child, and so does the parent's death. */
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    (void)setpriority(PRIO_PROCESS, 0, CONS_SNAP_NICE);
    if (getppid() != parent)
        _exit(1);
    /* Listening and client sockets stay the parent's alone: a socket the
     * parent closes meanwhile must really close. */
    if (fd > 3)
        close_range(3, (unsigned)fd - 1, 0);
    close_range((unsigned)fd + 1, ~0U, 0);

    if (relay_state_snapshot(n->state, &snap, &len) != RELAY_OK)
        _exit(2);
    if (emit(fd, snap, len) != 0)
        _exit(3);
    _exit(0);
}

/* ---- the parent --------------------------------------------------------- */

/* Collects a child's exit status; false: it has not exited yet (block:
 * wait for it). Whether a snapshot worked is decided by its bytes, not by
 * this status, which is only logged. */
static bool reap(pid_t pid, bool block)
{
    int status = 0;
    pid_t r;

    do
        r = waitpid(pid, &status, block ? 0 : WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return false;
    if (r == pid && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        if (WIFSIGNALED(status))
            LOG_WARN("event=snapshot_child_failed pid=%d signal=%d", (int)pid,
                     WTERMSIG(status));
        else
            LOG_WARN("event=snapshot_child_failed pid=%d status=%d", (int)pid,
                     WEXITSTATUS(status));
    }
    return true; /* reaped, or not ours to wait for (ECHILD) */
}

/*
 * A child is not waited for on the loop: when its last byte (or its EOF)
 * arrives it may still be tearing down its copy of the node's memory, and
 * a waitpid() then held the loop for as long (hundreds of ms for a GB,
 * seen as a loop stall at each snapshot's end). One that has not exited
 * yet is left to the node's tick (cons__snapjob_check); closing waits.
 */
static void reap_later(struct cons_node *n, pid_t pid)
{
    if (n->snap_zombie != 0)
        reap(n->snap_zombie, true); /* the one before: long gone by now */
    n->snap_zombie = reap(pid, false) ? 0 : pid;
}

static void job_free(struct cons__snapjob *job)
{
    struct cons_node *n = job->node;
    raft_io_close_cb close_cb = job->close_cb;

    /* The pipe's read end is closed by now, so a thread still writing
     * fails (EPIPE) and one still encoding was cancelled by job_end: the
     * join is short. After it nothing reads the view. */
    if (job->threaded) {
        pthread_join(job->thread, NULL);
        relay_view_release(n->state, job->view);
    }
    raft_free(job->buf); /* NULL once handed to raft */
    n->snap_job = NULL;
    free(job);
    if (close_cb != NULL)
        n->io_close(&n->io, close_cb);
}

static void on_pipe_closed(uv_handle_t *h)
{
    job_free(h->data);
}

/*
 * The put handed on to raft_uv, relayed: raft's callback frees the
 * snapshot's buffer (munmapping hundreds of MB held the loop for 2-10 ms)
 * and drops the log entries the snapshot covers (the callback took 6-12 ms
 * at 38-127 MB of state; at 1.1 GB a snapshot covers ~66,000 entries).
 * The relay collects what the callback frees (heap.c) and has libuv's pool
 * free it.
 */
struct put_relay {
    struct raft_io_snapshot_put req; /* the one raft_uv sees */
    struct raft_io_snapshot_put *raft_req;
    raft_io_snapshot_put_cb raft_cb;
    uv_loop_t *loop;
};

static void put_written(struct raft_io_snapshot_put *req, int status)
{
    struct put_relay *r =
        (struct put_relay *)((char *)req - offsetof(struct put_relay, req));
    struct raft_io_snapshot_put *raft_req = r->raft_req;
    raft_io_snapshot_put_cb cb = r->raft_cb;
    struct cons__heap_list *dead = cons__heap_list_new(); /* NULL: at once */
    struct cons__heap_list *was;

    raft_req->cb = cb;
    was = cons__heap_collect(dead);
    cb(raft_req, status);
    cons__heap_collect(was);
    cons__heap_free_later(r->loop, dead);
    free(r);
}

/* raft_uv's put of the bytes, through a relay when one can be had. */
static int put_relayed(struct cons_node *n, struct cons__snapjob *job,
                       struct raft_io_snapshot_put *req,
                       raft_io_snapshot_put_cb cb)
{
    struct put_relay *r = calloc(1, sizeof(*r));
    int rv;

    if (r == NULL)
        return n->io_snapshot_put(&n->io, job->trailing, req, job->snapshot,
                                  cb);
    r->raft_req = req;
    r->raft_cb = cb;
    r->loop = n->loop;
    rv = n->io_snapshot_put(&n->io, job->trailing, &r->req, job->snapshot,
                            put_written);
    if (rv != 0)
        free(r);
    return rv;
}

/* Hands the held-back put on: to raft_uv with the bytes, or back to raft as
 * failed (RAFT_IOERR) or cancelled (closing). */
static void finish_put(struct cons__snapjob *job, int status)
{
    struct cons_node *n = job->node;
    struct raft_io_snapshot_put *req = job->req;
    raft_io_snapshot_put_cb cb = job->cb;
    int rv = status;

    if (req == NULL)
        return;
    job->req = NULL;
    if (rv == 0) {
        job->bufs[0].base = job->buf;
        job->bufs[0].len = job->len;
        job->buf = NULL; /* raft's now: it frees the buffers it was given */
        rv = put_relayed(n, job, req, cb);
        if (rv == 0)
            return;
        LOG_WARN("event=snapshot_put_refused index=%llu err=%d",
                 (unsigned long long)job->index, rv);
    }
    req->cb = cb;
    cb(req, rv);
}

/* The pipe is done with (all bytes, EOF too early, a read error, or the
 * node closing): reap, hand the put on, let the job go. */
static void job_end(struct cons__snapjob *job)
{
    uint64_t now = uv_hrtime();
    struct cons_node *n = job->node;

    /* Not every byte came: a child still alive would block on a pipe
     * nobody reads, and its bytes are of no use now. */
    if (job->threaded) {
        if (!job->done)
            relay_view_cancel(job->view);
    } else {
        if (!job->done)
            kill(job->pid, SIGKILL);
        if (job->close_cb != NULL)
            reap(job->pid, true); /* closing: nothing else to serve */
        else
            reap_later(n, job->pid);
    }
    if (job->close_cb != NULL) {
        finish_put(job, RAFT_CANCELED);
    } else if (job->done) {
        n->stats.snapshot_bytes = job->len - CONS_SNAP_HDR_LEN;
        n->snap_last_len = n->stats.snapshot_bytes;
        LOG_INFO("event=snapshot bytes=%zu applied=%llu mode=%s "
                 "loop_ms=%.1f encoder_ms=%.1f",
                 job->len - CONS_SNAP_HDR_LEN, (unsigned long long)job->index,
                 job->threaded ? "thread" : "fork",
                 (double)(job->spawned_ns - job->start_ns) / 1e6,
                 (double)(now - job->start_ns) / 1e6);
        finish_put(job, 0);
    } else {
        LOG_WARN("event=snapshot_failed index=%llu got=%zu of=%zu: the "
                 "encoder did not deliver; raft keeps its log and tries "
                 "again later",
                 (unsigned long long)job->index, job->got, job->len);
        n->snap_retry_at = uv_now(n->loop) + CONS_SNAP_RETRY_MS;
        finish_put(job, RAFT_IOERR);
    }
    if (job->pipe_open) {
        job->pipe_open = false;
        uv_close((uv_handle_t *)&job->pipe, on_pipe_closed);
    } else {
        job_free(job);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct cons__snapjob *job = h->data;

    (void)suggested;
    if (job->done) {
        *buf = uv_buf_init((char *)job->scratch, sizeof(job->scratch));
        return;
    }
    if (job->len_got < JOB_LEN_BYTES) {
        *buf = uv_buf_init((char *)job->len_bytes + job->len_got,
                           (unsigned)(JOB_LEN_BYTES - job->len_got));
        return;
    }
    *buf = uv_buf_init((char *)job->buf + job->got,
                       (unsigned)(job->len - job->got < JOB_PIPE_BYTES
                                      ? job->len - job->got
                                      : JOB_PIPE_BYTES));
}

/* The length came: the buffer raft will own. A length below the header's
 * or beyond any state this process could hold is the child gone wrong. */
static int got_length(struct cons__snapjob *job)
{
    uint64_t len = 0;

    for (int i = 0; i < JOB_LEN_BYTES; i++)
        len |= (uint64_t)job->len_bytes[i] << (8 * i);
    if (len < CONS_SNAP_HDR_LEN || len > ((uint64_t)1 << 40) || len > SIZE_MAX)
        return -1;
    job->len = (size_t)len;
    job->buf = raft_malloc(job->len);
    return job->buf != NULL ? 0 : -1;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct cons__snapjob *job = s->data;

    (void)buf;
    if (nread == 0)
        return;
    if (nread < 0) {
        uv_read_stop(s);
        job_end(job);
        return;
    }
    if (job->done) {
        /* Bytes past the announced length: the encoder went wrong. */
        job->done = false;
        uv_read_stop(s);
        job_end(job);
        return;
    }
    if (job->len_got < JOB_LEN_BYTES) {
        job->len_got += (size_t)nread;
        if (job->len_got == JOB_LEN_BYTES && got_length(job) != 0) {
            uv_read_stop(s);
            job_end(job);
        }
        return;
    }
    job->got += (size_t)nread;
    if (job->got == job->len) {
        job->done = true;
        /* A thread closes the pipe as its last act: its EOF ends the job
         * and the join is then immediate. A child is reaped later. */
        if (job->threaded)
            return;
        uv_read_stop(s);
        job_end(job);
    }
}

static void free_closed_job(uv_handle_t *h)
{
    free(h->data);
}

/* The encoder thread of a view of the state as it is now; it owns fd. */
static int spawn_thread(struct cons__snapjob *job, int fd)
{
    struct cons_node *n = job->node;
    struct encoder_arg *arg = malloc(sizeof(*arg));
    sigset_t all, old;
    int rv;

    if (arg == NULL)
        goto err_close;
    if (relay_view_take(n->state, &job->view) != RELAY_OK)
        goto err_free_arg;
    arg->view = job->view;
    arg->fd = fd;
    arg->delay_ms = test_delay_ms();
    /* Signals stay the loop thread's (libuv's handlers). */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rv = pthread_create(&job->thread, NULL, encoder_main, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rv != 0) {
        LOG_WARN("event=snapshot_thread_failed err=\"%s\": encoding in place",
                 strerror(rv));
        goto err_release;
    }
    job->threaded = true;
    return 0;
err_release:
    relay_view_release(n->state, job->view);
    job->view = NULL;
err_free_arg:
    free(arg);
err_close:
    close(fd);
    return -1;
}

/* A child with a copy of the process; fd is closed here. */
static int spawn_child(struct cons__snapjob *job, int fd)
{
    pid_t pid, parent = getpid();

    pid = fork();
    if (pid == 0)
        child_main(job->node, fd, parent);
    close(fd);
    if (pid < 0) {
        LOG_WARN("event=snapshot_fork_failed err=\"%s\": encoding in place",
                 strerror(errno));
        return -1;
    }
    job->pid = pid;
    return 0;
}

int cons__snapjob_start(struct cons_node *n, struct raft_buffer **bufs,
                        unsigned *n_bufs)
{
    struct cons__snapjob *job;
    int fds[2], rv;

    if (n->snap_job != NULL)
        return -1; /* cannot happen: raft takes one snapshot at a time */
    job = calloc(1, sizeof(*job));
    if (job == NULL)
        return -1;
    job->node = n;
    job->index = raft_last_applied(&n->raft);
    *bufs = raft_malloc(sizeof(**bufs));
    if (*bufs == NULL)
        goto err_free_job;
    (*bufs)[0].base = NULL;
    (*bufs)[0].len = 0;
    if (pipe2(fds, O_CLOEXEC) != 0)
        goto err_free_bufs;
    (void)fcntl(fds[0], F_SETPIPE_SZ, JOB_PIPE_BYTES);
    if (uv_pipe_init(n->loop, &job->pipe, 0) != 0)
        goto err_close_fds;
    job->pipe.data = job;
    if (uv_pipe_open(&job->pipe, fds[0]) != 0) {
        close(fds[0]);
        fds[0] = -1;
        goto err_close_write;
    }
    /* From here the handle owns fds[0]; the reads start with the loop's
     * next turn, once the encoder runs. */
    if (uv_read_start((uv_stream_t *)&job->pipe, on_alloc, on_read) != 0)
        goto err_close_write;
    job->start_ns = uv_hrtime();
    rv = n->cfg.snapshot_mode == CONS_SNAP_FORK ? spawn_child(job, fds[1])
                                                : spawn_thread(job, fds[1]);
    job->spawned_ns = uv_hrtime();
    if (rv != 0)
        goto err_close_handle; /* fds[1] closed */
    job->pipe_open = true;
    job->bufs = *bufs;
    *n_bufs = 1;
    n->snap_job = job;
    return 0;

err_close_write:
    close(fds[1]);
err_close_handle:
    raft_free(*bufs);
    *bufs = NULL;
    uv_close((uv_handle_t *)&job->pipe, free_closed_job);
    return -1;
err_close_fds:
    close(fds[0]);
    close(fds[1]);
err_free_bufs:
    raft_free(*bufs);
    *bufs = NULL;
err_free_job:
    free(job);
    return -1;
}

/* A child stuck (never scheduled, or deadlocked: a lock some other thread
 * held at the fork, which cannot happen with glibc's malloc but could with
 * another allocator) would hold every later snapshot back, and with them
 * the log's truncation, for as long as the node runs. */
void cons__snapjob_check(struct cons_node *n)
{
    struct cons__snapjob *job = n->snap_job;

    if (n->snap_zombie != 0 && reap(n->snap_zombie, false))
        n->snap_zombie = 0;

    if (job == NULL || (job->pid == 0 && !job->threaded) || job->done ||
        uv_hrtime() - job->start_ns <
            (uint64_t)CONS_SNAP_CHILD_MAX_MS * 1000000)
        return;
    if (job->threaded) {
        /* A thread cannot be killed: cancelled, it stops at its next
         * stream, closes its pipe, and the EOF fails the job. */
        LOG_WARN("event=snapshot_encoder_stuck index=%llu got=%zu of=%zu: "
                 "cancelled",
                 (unsigned long long)job->index, job->got, job->len);
        relay_view_cancel(job->view);
        return;
    }
    LOG_WARN("event=snapshot_child_stuck pid=%d index=%llu got=%zu of=%zu: "
             "killed",
             (int)job->pid, (unsigned long long)job->index, job->got, job->len);
    kill(job->pid, SIGKILL); /* the pipe's EOF ends the job as failed */
}

/* raft_uv's snapshot_put, wrapped: the put of the placeholder that
 * cons__snapjob_start handed raft waits for the child's bytes. */
static int held_put(struct raft_io *io, unsigned trailing,
                    struct raft_io_snapshot_put *req,
                    const struct raft_snapshot *snapshot,
                    raft_io_snapshot_put_cb cb)
{
    struct cons_node *n = node_of_io(io);
    struct cons__snapjob *job = n->snap_job;

    if (job == NULL || job->req != NULL || snapshot->bufs != job->bufs)
        return n->io_snapshot_put(io, trailing, req, snapshot, cb);
    job->req = req;
    job->trailing = trailing;
    job->snapshot = snapshot;
    job->cb = cb;
    return 0;
}

/* raft_uv's close, wrapped: a job in flight ends first (child killed, put
 * cancelled), since raft_uv knows nothing of the held-back put. */
static void held_close(struct raft_io *io, raft_io_close_cb cb)
{
    struct cons_node *n = node_of_io(io);
    struct cons__snapjob *job = n->snap_job;

    if (n->snap_zombie != 0) {
        reap(n->snap_zombie, true);
        n->snap_zombie = 0;
    }
    if (job == NULL || job->close_cb != NULL) {
        n->io_close(io, cb);
        return;
    }
    job->close_cb = cb;
    if (job->pipe_open && !uv_is_closing((uv_handle_t *)&job->pipe)) {
        uv_read_stop((uv_stream_t *)&job->pipe);
        job_end(job);
    }
    /* else: the pipe is closing; on_pipe_closed runs the close. */
}

void cons__snapjob_wrap_io(struct cons_node *n)
{
    n->io_snapshot_put = n->io.snapshot_put;
    n->io.snapshot_put = held_put;
    n->io_close = n->io.close;
    n->io.close = held_close;
}
