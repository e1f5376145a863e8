/*
 * sys.c - what driftd-bench needs from the system besides WebSockets:
 * URLs, a small blocking HTTP/1.1 client for room creation and probes,
 * node pids, RSS and CPU from /proc, the file descriptor limit.
 *
 * HTTP runs before the event loop starts (set-up only), so it is blocking:
 * up to `parallel` requests at once, each on its own connection
 * ("Connection: close"), multiplexed with poll(); a request that fails or
 * answers 5xx is retried a few times (a cluster may be electing).
 *
 * TLS (https:// URLs): the same requests through OpenSSL on the same
 * non-blocking sockets. Each slot polls for what its last SSL call asked
 * for (SSL_ERROR_WANT_READ/WRITE); the handshake happens inside the first
 * SSL_write. The node's certificate must chain to --cacert (else the
 * system's CAs) and name the URL's host (an IP SAN for an address).
 *
 * Node pids: when not given with --pid, the pid of the process that owns
 * the listening socket of the node's port, found by matching the socket
 * inode of /proc/net/tcp{,6} (state 0A, LISTEN) in /proc/PID/fd. That
 * needs the right to read the node's /proc/PID/fd (same user, or root).
 *
 * Not here: keep-alive, chunked bodies beyond what driftd sends, TLS
 * session resumption, client certificates.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "bench.h"

double bench_now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int bench_url_parse(const char *s, struct bench_url *u)
{
    const char *p = s, *colon, *end;
    size_t hl;
    char *e;
    long port;

    memset(u, 0, sizeof(*u));
    if (strncmp(p, "http://", 7) == 0 || strncmp(p, "ws://", 5) == 0) {
        p = strstr(p, "//") + 2;
    } else if (strncmp(p, "https://", 8) == 0 || strncmp(p, "wss://", 6) == 0) {
        p = strstr(p, "//") + 2;
        u->tls = true;
    } else if (strstr(p, "://") != NULL) {
        return -1;
    }
    end = p + strcspn(p, "/?");
    colon = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == ':')
            colon = q;
    if (colon == NULL) {
        hl = (size_t)(end - p);
        port = u->tls ? 443 : 80;
    } else {
        hl = (size_t)(colon - p);
        port = strtol(colon + 1, &e, 10);
        if (e != end || port <= 0 || port > 65535)
            return -1;
    }
    if (hl == 0 || hl >= sizeof(u->host))
        return -1;
    memcpy(u->host, p, hl);
    u->host[hl] = '\0';
    u->port = (int)port;
    snprintf(u->hostport, sizeof(u->hostport), "%s:%d", u->host, u->port);
    return 0;
}

/* ---- TLS for the blocking HTTP client ------------------------------------ */

/* One client context for every https:// request of the process. */
static SSL_CTX *tls_ctx;

int bench_tls_init(const char *cafile, char *err, size_t errlen)
{
    if (tls_ctx != NULL)
        return 0;
    tls_ctx = SSL_CTX_new(TLS_client_method());
    if (tls_ctx == NULL) {
        snprintf(err, errlen, "cannot create an OpenSSL context");
        return -1;
    }
    SSL_CTX_set_min_proto_version(tls_ctx, TLS1_2_VERSION);
    /* driftd answers "Connection: close" and may close without a
     * close_notify: that is the end of the body, not an attack. */
    SSL_CTX_set_options(tls_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_PEER, NULL);
    if ((cafile != NULL ? SSL_CTX_load_verify_locations(tls_ctx, cafile, NULL)
                        : SSL_CTX_set_default_verify_paths(tls_ctx)) != 1) {
        snprintf(err, errlen, "cannot load CA certificates from %s: %s",
                 cafile != NULL ? cafile : "the system's default paths",
                 ERR_reason_error_string(ERR_get_error()));
        bench_tls_close();
        return -1;
    }
    return 0;
}

void bench_tls_close(void)
{
    SSL_CTX_free(tls_ctx);
    tls_ctx = NULL;
}

/* ---- blocking HTTP ------------------------------------------------------- */

#define HTTP_RETRIES 5

struct hslot {
    int fd;       /* -1: free */
    SSL *ssl;     /* https only */
    short want;   /* https: what the last SSL call waits for */
    unsigned idx; /* request index */
    unsigned tries;
    char out[512];
    size_t out_len, out_off;
    char *in;
    size_t in_len, in_cap;
    double deadline;
};

struct hbatch {
    const struct bench_url *u;
    struct addrinfo *ai;
    const char *method;
    /* path of request i */
    void (*path)(void *arg, unsigned i, char *buf, size_t cap);
    /* answer of request i: 0 accepted, 1 retry, -1 give up */
    int (*done)(void *arg, unsigned i, int status, const char *body,
                size_t len);
    void *arg;
    double timeout_s;
    char *err;
    size_t errlen;
    char why[160]; /* the last TLS failure, for the final message */
};

/* An SSL object on fd that verifies the node's name: an IP SAN for an
 * address, a DNS name (and SNI) otherwise. */
static SSL *tls_new(struct hbatch *b, int fd)
{
    struct in6_addr a;
    SSL *ssl;
    bool ip = inet_pton(AF_INET, b->u->host, &a) == 1 ||
              inet_pton(AF_INET6, b->u->host, &a) == 1;

    if (tls_ctx == NULL) {
        snprintf(b->why, sizeof(b->why), "TLS not initialised");
        return NULL;
    }
    ssl = SSL_new(tls_ctx);
    if (ssl == NULL)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1 ||
        (ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), b->u->host)
            : SSL_set1_host(ssl, b->u->host) &&
                  SSL_set_tlsext_host_name(ssl, b->u->host)) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

static int slot_start(struct hbatch *b, struct hslot *s)
{
    char path[256];
    int fd, n;

    b->path(b->arg, s->idx, path, sizeof(path));
    fd =
        socket(b->ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, b->ai->ai_addr, b->ai->ai_addrlen) != 0 &&
        errno != EINPROGRESS)
        goto err_close;
    n = snprintf(s->out, sizeof(s->out),
                 "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\n"
                 "Connection: close\r\n\r\n",
                 b->method, path, b->u->hostport);
    if (n < 0 || (size_t)n >= sizeof(s->out))
        goto err_close;
    if (b->u->tls) {
        s->ssl = tls_new(b, fd);
        if (s->ssl == NULL) {
            errno = ENOMEM;
            goto err_close;
        }
        s->want = POLLOUT; /* the TCP connect first */
    }
    s->fd = fd;
    s->out_len = (size_t)n;
    s->out_off = 0;
    s->in_len = 0;
    s->deadline = bench_now_s() + b->timeout_s;
    return 0;
err_close: {
    int e = errno; /* the caller reports it; close() may change it */

    close(fd);
    errno = e;
    return -1;
}
}

/* Decodes a chunked body in place; returns its length, or -1 while it is
 * incomplete (or malformed). */
static long dechunk(char *b, size_t n)
{
    size_t r = 0, w = 0;

    for (;;) {
        char *e;
        unsigned long len;
        char *crlf = NULL;

        for (size_t i = r; i + 1 < n; i++)
            if (b[i] == '\r' && b[i + 1] == '\n') {
                crlf = b + i;
                break;
            }
        if (crlf == NULL)
            return -1;
        len = strtoul(b + r, &e, 16);
        if (e == b + r)
            return -1;
        r = (size_t)(crlf - b) + 2;
        if (len == 0)
            return (long)w;
        if (r + len + 2 > n)
            return -1;
        memmove(b + w, b + r, len);
        w += len;
        r += len + 2;
    }
}

/* Whole answer present? Returns the status and sets body, or 0 when more
 * is needed (eof: the peer closed, so what we have is all there is). */
static int parse_answer(struct hslot *s, bool eof, const char **body,
                        size_t *blen)
{
    char *hend, *cl;
    int status;
    size_t hl, want;

    if (s->in_len == 0)
        return eof ? -1 : 0;
    s->in[s->in_len] = '\0';
    hend = strstr(s->in, "\r\n\r\n");
    if (hend == NULL)
        return eof ? -1 : 0;
    if (sscanf(s->in, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    hl = (size_t)(hend + 4 - s->in);
    *body = hend + 4;
    *blen = s->in_len - hl;
    cl = strcasestr(s->in, "\r\ntransfer-encoding: chunked");
    if (cl != NULL && cl < hend) {
        /* decoding moves bytes: only once the whole body is there */
        char *copy = malloc(*blen + 1);
        long n;

        if (copy == NULL)
            return -1;
        memcpy(copy, *body, *blen);
        n = dechunk(copy, *blen);
        if (n >= 0) {
            memcpy(hend + 4, copy, (size_t)n);
            *blen = (size_t)n;
        }
        free(copy);
        if (n >= 0)
            return status;
        return eof ? -1 : 0;
    }
    cl = strcasestr(s->in, "\r\ncontent-length:");
    if (cl != NULL && cl < hend) {
        want = (size_t)strtoul(cl + 17, NULL, 10);
        if (*blen >= want) {
            *blen = want;
            return status;
        }
        return eof ? -1 : 0;
    }
    return eof ? status : 0;
}

static void slot_close(struct hslot *s)
{
    /* no close_notify: the node closes first ("Connection: close") */
    SSL_free(s->ssl);
    s->ssl = NULL;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

/* Room for at least one more byte (and the NUL parse_answer adds). */
static int slot_grow(struct hslot *s)
{
    char *g;

    if (s->in_len < s->in_cap)
        return 0;
    g = realloc(s->in, s->in_cap * 2 + 1);
    if (g == NULL)
        return -1;
    s->in = g;
    s->in_cap *= 2;
    return 0;
}

/* The outcome of an SSL call that returned r <= 0: 0 to wait (s->want
 * says for what), 1 for a clean end of the stream, -1 for a failure
 * (its reason in b->why). */
static int tls_wait(struct hbatch *b, struct hslot *s, int r)
{
    unsigned long e;

    switch (SSL_get_error(s->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        s->want = POLLIN;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        s->want = POLLOUT;
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        return 1;
    default:
        e = ERR_get_error();
        if (SSL_get_verify_result(s->ssl) != X509_V_OK)
            snprintf(
                b->why, sizeof(b->why), "TLS: certificate: %s",
                X509_verify_cert_error_string(SSL_get_verify_result(s->ssl)));
        else if (e != 0)
            snprintf(b->why, sizeof(b->why), "TLS: %s",
                     ERR_reason_error_string(e));
        else
            snprintf(b->why, sizeof(b->why), "TLS: %s",
                     errno != 0 ? strerror(errno) : "connection closed");
        ERR_clear_error();
        return -1;
    }
}

/* One step of an https request: write what is left of the request (the
 * first write also runs the handshake), then read all that is readable:
 * SSL may hold a decrypted record that poll() would not report. Returns
 * -1 on failure, else 0 with *eof set at the end of the answer. */
static int tls_step(struct hbatch *b, struct hslot *s, bool *eof)
{
    int r, w;

    while (s->out_off < s->out_len) {
        ERR_clear_error();
        r = SSL_write(s->ssl, s->out + s->out_off,
                      (int)(s->out_len - s->out_off));
        if (r <= 0)
            return tls_wait(b, s, r) == 0 ? 0 : -1;
        s->out_off += (size_t)r;
    }
    for (;;) {
        if (slot_grow(s) != 0)
            return -1;
        ERR_clear_error();
        r = SSL_read(s->ssl, s->in + s->in_len, (int)(s->in_cap - s->in_len));
        if (r > 0) {
            s->in_len += (size_t)r;
            continue;
        }
        w = tls_wait(b, s, r);
        if (w == 1)
            *eof = true;
        return w < 0 ? -1 : 0;
    }
}

static int http_batch(struct hbatch *b, unsigned n, unsigned parallel)
{
    struct addrinfo hints, *ai = NULL;
    struct hslot *slots;
    struct pollfd *pfd;
    unsigned next = 0, finished = 0, active = 0, *retry, n_retry = 0;
    char port[16];
    int rv = -1;

    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%d", b->u->port);
    if (getaddrinfo(b->u->host, port, &hints, &ai) != 0 || ai == NULL) {
        snprintf(b->err, b->errlen, "%s: cannot resolve", b->u->hostport);
        return -1;
    }
    b->ai = ai;
    if (parallel == 0)
        parallel = 1;
    if (parallel > n)
        parallel = n;
    slots = calloc(parallel, sizeof(*slots));
    pfd = calloc(parallel, sizeof(*pfd));
    retry = calloc(n, sizeof(*retry));
    if (slots == NULL || pfd == NULL || retry == NULL) {
        snprintf(b->err, b->errlen, "out of memory");
        goto out;
    }
    for (unsigned i = 0; i < parallel; i++) {
        slots[i].fd = -1;
        slots[i].in_cap = 8192;
        slots[i].in = malloc(slots[i].in_cap + 1);
        if (slots[i].in == NULL) {
            snprintf(b->err, b->errlen, "out of memory");
            goto out;
        }
    }
    /* tries per request live in retry[] only while it waits */
    while (finished < n) {
        double now = bench_now_s();
        int pr;

        for (unsigned i = 0; i < parallel; i++) {
            struct hslot *s = &slots[i];

            if (s->fd >= 0)
                continue;
            if (n_retry > 0) {
                s->idx = retry[--n_retry] & 0xffffffu;
                s->tries = retry[n_retry] >> 24;
                usleep(20000); /* a retried request: give the node time */
            } else if (next < n) {
                s->idx = next++;
                s->tries = 0;
            } else {
                continue;
            }
            if (slot_start(b, s) != 0) {
                snprintf(b->err, b->errlen, "%s: connect: %s", b->u->hostport,
                         strerror(errno));
                goto out;
            }
            active++;
        }
        for (unsigned i = 0; i < parallel; i++) {
            pfd[i].fd = slots[i].fd;
            if (slots[i].ssl != NULL)
                pfd[i].events = slots[i].want;
            else
                pfd[i].events =
                    slots[i].out_off < slots[i].out_len ? POLLOUT : POLLIN;
            pfd[i].revents = 0;
        }
        pr = poll(pfd, parallel, 100);
        if (pr < 0 && errno != EINTR) {
            snprintf(b->err, b->errlen, "poll: %s", strerror(errno));
            goto out;
        }
        now = bench_now_s();
        for (unsigned i = 0; i < parallel; i++) {
            struct hslot *s = &slots[i];
            const char *body = NULL;
            size_t blen = 0;
            int status = 0, d;
            bool eof = false, failed = false;

            if (s->fd < 0)
                continue;
            if (s->ssl != NULL) {
                if ((pfd[i].revents & (s->want | POLLHUP | POLLERR)) &&
                    tls_step(b, s, &eof) != 0)
                    failed = true;
            } else if (pfd[i].revents & POLLOUT) {
                ssize_t w = send(s->fd, s->out + s->out_off,
                                 s->out_len - s->out_off, MSG_NOSIGNAL);

                if (w < 0 && errno != EAGAIN)
                    failed = true;
                else if (w > 0)
                    s->out_off += (size_t)w;
            } else if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                ssize_t r;

                if (slot_grow(s) != 0) {
                    snprintf(b->err, b->errlen, "out of memory");
                    goto out;
                }
                r = recv(s->fd, s->in + s->in_len, s->in_cap - s->in_len, 0);
                if (r < 0 && errno != EAGAIN)
                    failed = true;
                else if (r == 0)
                    eof = true;
                else if (r > 0)
                    s->in_len += (size_t)r;
            }
            if (!failed) {
                status = parse_answer(s, eof, &body, &blen);
                if (status < 0)
                    failed = true;
            }
            if (!failed && status == 0) {
                if (now < s->deadline)
                    continue;
                failed = true;
            }
            slot_close(s);
            active--;
            if (failed || status >= 500)
                d = 1;
            else
                d = b->done(b->arg, s->idx, status, body, blen);
            if (d == 1 && s->tries + 1 < HTTP_RETRIES) {
                retry[n_retry++] = s->idx | ((s->tries + 1) << 24);
                continue;
            }
            if (d != 0) {
                snprintf(b->err, b->errlen,
                         "%s %s: %s (status %d) after %u tries%s%s", b->method,
                         b->u->hostport, failed ? "no valid answer" : "refused",
                         status, s->tries + 1, b->why[0] != '\0' ? "; " : "",
                         b->why);
                goto out;
            }
            finished++;
        }
    }
    rv = 0;
out:
    if (slots != NULL)
        for (unsigned i = 0; i < parallel; i++) {
            slot_close(&slots[i]);
            free(slots[i].in);
        }
    free(slots);
    free(pfd);
    free(retry);
    freeaddrinfo(ai);
    return rv;
}

struct new_rooms {
    char *ids;
};

static void new_path(void *arg, unsigned i, char *buf, size_t cap)
{
    (void)arg;
    (void)i;
    snprintf(buf, cap, "/new");
}

static int new_done(void *arg, unsigned i, int status, const char *body,
                    size_t len)
{
    struct new_rooms *nr = arg;
    json_t *j, *room;
    const char *id;
    int rv = -1;

    if (status != 200)
        return 1;
    j = json_loadb(body, len, 0, NULL);
    if (j == NULL)
        return -1;
    room = json_object_get(j, "room");
    id = json_string_value(room);
    if (id != NULL && strlen(id) < BENCH_ROOM_ID_MAX &&
        strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                   "0123456789-_") == strlen(id)) {
        memcpy(nr->ids + (size_t)i * BENCH_ROOM_ID_MAX, id, strlen(id) + 1);
        rv = 0;
    }
    json_decref(j);
    return rv;
}

int bench_http_new_rooms(const struct bench_url *u, unsigned n,
                         unsigned parallel, char *ids, double timeout_s,
                         char *err, size_t errlen)
{
    struct new_rooms nr = {ids};
    struct hbatch b = {.u = u,
                       .method = "POST",
                       .path = new_path,
                       .done = new_done,
                       .arg = &nr,
                       .timeout_s = timeout_s,
                       .err = err,
                       .errlen = errlen};

    if (n == 0)
        return 0;
    return http_batch(&b, n, parallel);
}

struct one_get {
    const char *path;
    int status;
};

static void get_path(void *arg, unsigned i, char *buf, size_t cap)
{
    struct one_get *g = arg;

    (void)i;
    snprintf(buf, cap, "%s", g->path);
}

static int get_done(void *arg, unsigned i, int status, const char *body,
                    size_t len)
{
    struct one_get *g = arg;

    (void)i;
    (void)body;
    (void)len;
    g->status = status;
    return 0;
}

int bench_http_status(const struct bench_url *u, const char *path,
                      double timeout_s)
{
    struct one_get g = {path, -1};
    char err[256];
    struct hbatch b = {.u = u,
                       .method = "GET",
                       .path = get_path,
                       .done = get_done,
                       .arg = &g,
                       .timeout_s = timeout_s,
                       .err = err,
                       .errlen = sizeof(err)};

    if (http_batch(&b, 1, 1) != 0)
        return g.status > 0 ? g.status : -1;
    return g.status;
}

/* ---- /proc --------------------------------------------------------------- */

static unsigned long listen_inode(const char *file, int port)
{
    FILE *f = fopen(file, "r");
    char line[512];
    unsigned long inode = 0;

    if (f == NULL)
        return 0;
    if (fgets(line, sizeof(line), f) == NULL) { /* header */
        fclose(f);
        return 0;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        char local[128];
        unsigned st, lport;
        unsigned long ino;
        char *colon;

        /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
        if (sscanf(line, " %*s %127s %*s %x %*s %*s %*s %*u %*u %lu", local,
                   &st, &ino) != 3)
            continue;
        colon = strrchr(local, ':');
        if (colon == NULL || sscanf(colon + 1, "%x", &lport) != 1)
            continue;
        if (st == 0x0a && (int)lport == port && ino != 0) {
            inode = ino;
            break;
        }
    }
    fclose(f);
    return inode;
}

int bench_pid_by_port(int port)
{
    unsigned long inode = listen_inode("/proc/net/tcp", port);
    char want[64], path[600], link[64];
    DIR *proc;
    struct dirent *de;
    int found = 0;

    if (inode == 0)
        inode = listen_inode("/proc/net/tcp6", port);
    if (inode == 0)
        return 0;
    snprintf(want, sizeof(want), "socket:[%lu]", inode);
    proc = opendir("/proc");
    if (proc == NULL)
        return 0;
    while (found == 0 && (de = readdir(proc)) != NULL) {
        DIR *fds;
        struct dirent *fe;

        if (de->d_name[0] < '1' || de->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/fd", de->d_name);
        fds = opendir(path);
        if (fds == NULL)
            continue;
        while ((fe = readdir(fds)) != NULL) {
            ssize_t n;

            if (fe->d_name[0] == '.')
                continue;
            snprintf(path, sizeof(path), "/proc/%s/fd/%s", de->d_name,
                     fe->d_name);
            n = readlink(path, link, sizeof(link) - 1);
            if (n <= 0)
                continue;
            link[n] = '\0';
            if (strcmp(link, want) == 0) {
                found = atoi(de->d_name);
                break;
            }
        }
        closedir(fds);
    }
    closedir(proc);
    return found;
}

long bench_rss_kib(int pid)
{
    char path[64], line[256];
    FILE *f;
    long kib = -1;

    if (pid <= 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

double bench_proc_cpu_s(int pid)
{
    char path[64], buf[1024], *p;
    unsigned long ut, st;
    FILE *f;
    size_t n;

    if (pid <= 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* after "pid (comm) ": state is field 3, utime 14, stime 15 */
    p = strrchr(buf, ')');
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
               &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

struct bench_cpu bench_self_cpu(void)
{
    struct rusage ru;
    struct bench_cpu c = {0, 0};

    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        c.user_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
        c.sys_s = (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    }
    return c;
}

bool bench_machine_jiffies(uint64_t *busy, uint64_t *total, unsigned *cpus)
{
    FILE *f = fopen("/proc/stat", "r");
    char line[512];
    unsigned long long v[8] = {0};
    unsigned n = 0;
    bool ok = false;

    if (f == NULL)
        return false;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "cpu ", 4) == 0 &&
            sscanf(line + 4, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
                   &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
            /* user nice system idle iowait irq softirq steal */
            *total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
            *busy = *total - v[3] - v[4];
            ok = true;
        } else if (strncmp(line, "cpu", 3) == 0 && line[3] >= '0' &&
                   line[3] <= '9') {
            n++;
        }
    }
    fclose(f);
    *cpus = n;
    return ok;
}

unsigned long bench_raise_nofile(unsigned long want)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    /* Past the hard limit only with CAP_SYS_RESOURCE (root): try, then
     * settle for the hard limit. */
    if (want > rl.rlim_max) {
        struct rlimit up = {want, want};

        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            return want;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}
