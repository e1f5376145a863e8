/*
 * snapfork.c - snapshots encoded off the loop, by a forked child.
 *
 * Encoding the whole state on the loop held it for ~1.5 ms per MB (177 ms
 * at 115 MB): every client of the node waited that long at each snapshot.
 * libraft 0.22's fsm "snapshot_async" does not help: its legacy layer calls
 * it right after fsm->snapshot, on the loop. So, as Redis does, the state
 * is frozen by fork(): the child sees the state exactly as it is when raft
 * asks for the snapshot (last_applied == the snapshot's index), encodes it
 * and writes it to a pipe, while the parent goes on applying. The fork
 * costs copying the page tables (a few ms for hundreds of MB); memory pages
 * are shared until the parent writes to them.
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
 * If the child fails (killed, no memory), the put fails with RAFT_IOERR:
 * raft records nothing, keeps its log and tries again later (our libraft
 * patch 0005; upstream asserted). Closing kills the child and cancels the
 * put before raft_uv's own close runs.
 *
 * Not here: what a snapshot holds (relay/snapshot.c), its header (fsm.c).
 */
#define LOG_MODULE "cons"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "log.h"

/* The child's stream: the length of what follows (8 bytes, little-endian),
 * then the snapshot as raft stores it (fsm.c's header, then relay's). */
#define JOB_LEN_BYTES 8
/* A bigger pipe: fewer loop wake-ups per snapshot (the default is 64 KiB;
 * the kernel caps an unprivileged request at fs.pipe-max-size, 1 MiB). */
#define JOB_PIPE_BYTES (256 * 1024)

struct cons__snapjob {
    struct cons_node *node;
    pid_t pid; /* the child (reaped by job_end, or later: snap_zombie) */
    uv_pipe_t pipe;
    bool pipe_open;
    uint8_t len_bytes[JOB_LEN_BYTES];
    size_t len_got;
    uint8_t *buf; /* raft_malloc'd, handed to raft's snapshot buffer */
    size_t len, got;
    bool done; /* every byte arrived */
    uint64_t index;
    uint64_t start_ns, fork_ns;
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

/* ---- the child ---------------------------------------------------------- */

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

/* Runs in the child only: a copy of the process with only this thread, so
 * it touches nothing but the state and its pipe, and never returns. */
static void child_main(struct cons_node *n, int fd, pid_t parent)
{
    uint8_t len_bytes[JOB_LEN_BYTES], hdr[CONS_SNAP_HDR_LEN];
    uint8_t *snap;
    size_t len;
    uint64_t total;

    /* The parent's handlers (libuv's signal pipe) mean nothing here: a
     * SIGTERM or Ctrl-C ends the child, and so does the parent's death. */
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    /* Listening and client sockets stay the parent's alone: a socket the
     * parent closes meanwhile must really close. */
    if (fd > 3)
        close_range(3, (unsigned)fd - 1, 0);
    close_range((unsigned)fd + 1, ~0U, 0);

    if (relay_state_snapshot(n->state, &snap, &len) != RELAY_OK)
        _exit(2);
    cons__snap_header(hdr, snap, len);
    total = CONS_SNAP_HDR_LEN + len;
    for (int i = 0; i < JOB_LEN_BYTES; i++)
        len_bytes[i] = (uint8_t)(total >> (8 * i));
    if (write_all(fd, len_bytes, sizeof(len_bytes)) != 0 ||
        write_all(fd, hdr, sizeof(hdr)) != 0 || write_all(fd, snap, len) != 0)
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
 * yet is left to the node's tick (cons__snapfork_check); closing waits.
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
        rv = n->io_snapshot_put(&n->io, job->trailing, req, job->snapshot,
                                cb);
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
    if (!job->done)
        kill(job->pid, SIGKILL);
    if (job->close_cb != NULL)
        reap(job->pid, true); /* closing: nothing else to serve */
    else
        reap_later(n, job->pid);
    if (job->close_cb != NULL) {
        finish_put(job, RAFT_CANCELED);
    } else if (job->done) {
        n->stats.snapshot_bytes = job->len - CONS_SNAP_HDR_LEN;
        n->snap_last_len = n->stats.snapshot_bytes;
        LOG_INFO("event=snapshot bytes=%zu applied=%llu mode=fork "
                 "loop_ms=%.1f child_ms=%.1f",
                 job->len - CONS_SNAP_HDR_LEN,
                 (unsigned long long)job->index,
                 (double)(job->fork_ns - job->start_ns) / 1e6,
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
    if (len < CONS_SNAP_HDR_LEN || len > ((uint64_t)1 << 40) ||
        len > SIZE_MAX)
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
        uv_read_stop(s);
        job_end(job);
    }
}

static void free_closed_job(uv_handle_t *h)
{
    free(h->data);
}

int cons__snapfork_start(struct cons_node *n, struct raft_buffer **bufs,
                         unsigned *n_bufs)
{
    struct cons__snapjob *job;
    pid_t pid, parent = getpid();
    int fds[2];

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
    job->start_ns = uv_hrtime();
    pid = fork();
    if (pid == 0)
        child_main(n, fds[1], parent);
    job->fork_ns = uv_hrtime();
    close(fds[1]);
    if (pid < 0) {
        LOG_WARN("event=snapshot_fork_failed err=\"%s\": encoding in place",
                 strerror(errno));
        close(fds[0]);
        goto err_close_handle;
    }
    job->pid = pid;
    if (uv_pipe_open(&job->pipe, fds[0]) != 0) {
        close(fds[0]);
        goto err_end_child;
    }
    /* From here the handle owns fds[0]. */
    if (uv_read_start((uv_stream_t *)&job->pipe, on_alloc, on_read) != 0)
        goto err_end_child;
    job->pipe_open = true;
    job->bufs = *bufs;
    *n_bufs = 1;
    n->snap_job = job;
    return 0;

err_end_child:
    /* The child is running with nothing to read it: end it. */
    kill(pid, SIGKILL);
    reap_later(n, pid);
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

double cons__snapfork_fork_seconds(const struct cons_node *n)
{
    const struct cons__snapjob *job = n->snap_job;

    return job != NULL ? (double)(job->fork_ns - job->start_ns) / 1e9 : 0;
}

/* A child stuck (never scheduled, or deadlocked: a lock some other thread
 * held at the fork, which cannot happen with glibc's malloc but could with
 * another allocator) would hold every later snapshot back, and with them
 * the log's truncation, for as long as the node runs. */
void cons__snapfork_check(struct cons_node *n)
{
    struct cons__snapjob *job = n->snap_job;

    if (n->snap_zombie != 0 && reap(n->snap_zombie, false))
        n->snap_zombie = 0;

    if (job == NULL || job->pid == 0 || job->done ||
        uv_hrtime() - job->start_ns < (uint64_t)CONS_SNAP_CHILD_MAX_MS * 1000000)
        return;
    LOG_WARN("event=snapshot_child_stuck pid=%d index=%llu got=%zu of=%zu: "
             "killed",
             (int)job->pid, (unsigned long long)job->index, job->got, job->len);
    kill(job->pid, SIGKILL); /* the pipe's EOF ends the job as failed */
}

/* raft_uv's snapshot_put, wrapped: the put of the placeholder that
 * cons__snapfork_start handed raft waits for the child's bytes. */
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

void cons__snapfork_wrap_io(struct cons_node *n)
{
    n->io_snapshot_put = n->io.snapshot_put;
    n->io.snapshot_put = held_put;
    n->io_close = n->io.close;
    n->io.close = held_close;
}
