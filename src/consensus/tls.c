/*
 * tls.c - mutual TLS under raft's connections: a pump between a TCP socket
 * and one end of a socketpair, whose other end is what the handshake of
 * transport.c and then raft_uv read and write in plain text.
 *
 * libraft only knows uv streams, so encryption cannot go inside it; here it
 * goes beside it. OpenSSL runs on two memory BIOs: bytes read from TCP go
 * into net_in and SSL_read turns them into plain text for the socketpair;
 * plain text read from the socketpair goes through SSL_write into net_out,
 * whose bytes are written to TCP. Both ends are peers: the server requires
 * a client certificate, the client checks the server's against the
 * expected address; both chain to --peer-ca.
 *
 * Happy path: start -> TLS handshake (client: ClientHello at once) -> once
 * done, read the plain end too -> pump both ways until either side ends.
 * Failure modes: a failed handshake or a TLS error closes both ends (the
 * plain end's reader then sees EOF: transport.c's handshake fails, or
 * raft_uv drops the connection and reconnects later). Backpressure: while
 * more than PUMP_MAX_QUEUED bytes wait to be written on one side, the other
 * side is not read; so each direction holds at most that much in memory.
 *
 * Not here: who may connect (transport.c's key proof still runs inside).
 */
#define LOG_MODULE "cons"
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "log.h"

#define PUMP_MAX_QUEUED ((size_t)4 << 20)
#define PUMP_READ_CHUNK 65536

struct cons__pump {
    struct cons__tp *tp;
    struct cons__pump *prev, *next;
    SSL *ssl;
    BIO *net_in, *net_out;
    uv_tcp_t *tcp;   /* raft_malloc'd by transport.c; ours to free */
    uv_pipe_t plain; /* our end of the socketpair */
    bool tcp_open, plain_open;
    bool handshake_done, closing, server;
    size_t net_queued, plain_queued; /* bytes in uv_write on each side */
    bool tcp_paused, plain_paused;
    char remote[64];
};

struct pump_write {
    uv_write_t req;
    struct cons__pump *p;
    size_t len;
    char data[];
};

static void pump_close(struct cons__pump *p, const char *why);

static void ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();

    if (e == 0)
        snprintf(buf, len, "connection closed");
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
}

/* ---- contexts ----------------------------------------------------------- */

static SSL_CTX *make_ctx(bool server, const char *cert, const char *key,
                         const char *ca, char *err, size_t errlen)
{
    SSL_CTX *ctx =
        SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    char why[200];

    if (ctx == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        ssl_reason(why, sizeof(why));
        snprintf(err, errlen, "--peer-cert %.100s: %s", cert, why);
        goto err_free;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ssl_reason(why, sizeof(why));
        snprintf(err, errlen, "--peer-key %.100s: %s", key, why);
        goto err_free;
    }
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
        ssl_reason(why, sizeof(why));
        snprintf(err, errlen, "--peer-ca %.100s: %s", ca, why);
        goto err_free;
    }
    /* Peers on both ends: no certificate, no connection. */
    SSL_CTX_set_verify(
        ctx, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        NULL);
    return ctx;
err_free:
    SSL_CTX_free(ctx);
    return NULL;
}

int cons__tls_setup(struct cons__tp *tp, const char *cert, const char *key,
                    const char *ca, char *err, size_t errlen)
{
    tp->tls_server = make_ctx(true, cert, key, ca, err, errlen);
    if (tp->tls_server == NULL)
        return CONS_EINVAL;
    tp->tls_client = make_ctx(false, cert, key, ca, err, errlen);
    if (tp->tls_client == NULL)
        goto err_free_server;
    return CONS_OK;
err_free_server:
    SSL_CTX_free(tp->tls_server);
    tp->tls_server = NULL;
    return CONS_EINVAL;
}

void cons__tls_free(struct cons__tp *tp)
{
    SSL_CTX_free(tp->tls_server);
    SSL_CTX_free(tp->tls_client);
    tp->tls_server = NULL;
    tp->tls_client = NULL;
}

/* ---- writing ------------------------------------------------------------ */

static void on_written(uv_write_t *req, int status);

static int queue_write(struct cons__pump *p, uv_stream_t *to, const void *data,
                       size_t len)
{
    struct pump_write *w = malloc(sizeof(*w) + len);
    uv_buf_t b;

    if (w == NULL)
        return UV_ENOMEM;
    w->p = p;
    w->len = len;
    memcpy(w->data, data, len);
    b = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, to, &b, 1, on_written) != 0) {
        free(w);
        return UV_EIO;
    }
    if (to == (uv_stream_t *)p->tcp)
        p->net_queued += len;
    else
        p->plain_queued += len;
    return 0;
}

/* What OpenSSL wants to send goes to TCP. */
static int flush_net(struct cons__pump *p)
{
    char buf[PUMP_READ_CHUNK];
    int n;

    while ((n = BIO_read(p->net_out, buf, sizeof(buf))) > 0)
        if (queue_write(p, (uv_stream_t *)p->tcp, buf, (size_t)n) != 0)
            return -1;
    return 0;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    buf->base = malloc(PUMP_READ_CHUNK);
    buf->len = buf->base != NULL ? PUMP_READ_CHUNK : 0;
}

static void on_net_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_plain_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void resume_reads(struct cons__pump *p)
{
    if (p->closing)
        return;
    if (p->tcp_paused && p->plain_queued <= PUMP_MAX_QUEUED / 2) {
        p->tcp_paused = false;
        uv_read_start((uv_stream_t *)p->tcp, alloc_cb, on_net_read);
    }
    if (p->plain_paused && p->handshake_done &&
        p->net_queued <= PUMP_MAX_QUEUED / 2) {
        p->plain_paused = false;
        uv_read_start((uv_stream_t *)&p->plain, alloc_cb, on_plain_read);
    }
}

static void on_written(uv_write_t *req, int status)
{
    struct pump_write *w = (struct pump_write *)req;
    struct cons__pump *p = w->p;

    if (req->handle == (uv_stream_t *)p->tcp)
        p->net_queued -= w->len;
    else
        p->plain_queued -= w->len;
    free(w);
    if (status != 0) {
        pump_close(p, uv_strerror(status));
        return;
    }
    resume_reads(p);
}

/* ---- the two directions ------------------------------------------------- */

/* TLS records in net_in -> plain text to the socketpair. */
static void drain_tls(struct cons__pump *p)
{
    char buf[PUMP_READ_CHUNK], why[200];
    int n, e;

    if (!p->handshake_done) {
        n = SSL_do_handshake(p->ssl);
        if (n != 1) {
            e = SSL_get_error(p->ssl, n);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                if (flush_net(p) != 0)
                    pump_close(p, "write failed");
                return;
            }
            ssl_reason(why, sizeof(why));
            if (flush_net(p) == 0) /* the alert, best effort */
                LOG_WARN_RL("event=raft_tls_refused remote=%s side=%s "
                            "why=\"%s\"",
                            p->remote, p->server ? "server" : "client", why);
            pump_close(p, NULL);
            return;
        }
        p->handshake_done = true;
        LOG_DEBUG("event=raft_tls_up remote=%s version=%s", p->remote,
                  SSL_get_version(p->ssl));
        uv_read_start((uv_stream_t *)&p->plain, alloc_cb, on_plain_read);
    }
    for (;;) {
        n = SSL_read(p->ssl, buf, sizeof(buf));
        if (n <= 0) {
            e = SSL_get_error(p->ssl, n);
            if (e == SSL_ERROR_WANT_READ)
                break;
            ssl_reason(why, sizeof(why));
            pump_close(p, e == SSL_ERROR_ZERO_RETURN ? NULL : why);
            return;
        }
        if (queue_write(p, (uv_stream_t *)&p->plain, buf, (size_t)n) != 0) {
            pump_close(p, "write failed");
            return;
        }
    }
    if (flush_net(p) != 0) {
        pump_close(p, "write failed");
        return;
    }
    if (p->plain_queued > PUMP_MAX_QUEUED && !p->tcp_paused) {
        p->tcp_paused = true;
        uv_read_stop((uv_stream_t *)p->tcp);
    }
}

static void on_net_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct cons__pump *p = s->data;

    if (nread > 0 && !p->closing) {
        BIO_write(p->net_in, buf->base, (int)nread);
        drain_tls(p);
    } else if (nread < 0) {
        pump_close(p, nread == UV_EOF ? NULL : uv_strerror((int)nread));
    }
    free(buf->base);
}

static void on_plain_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct cons__pump *p = s->data;

    if (nread > 0 && !p->closing) {
        if (SSL_write(p->ssl, buf->base, (int)nread) != (int)nread ||
            flush_net(p) != 0) {
            pump_close(p, "TLS write failed");
        } else if (p->net_queued > PUMP_MAX_QUEUED && !p->plain_paused) {
            p->plain_paused = true;
            uv_read_stop(s);
        }
    } else if (nread < 0) {
        /* Our side is done (raft or the handshake closed its end). */
        if (!p->closing && p->handshake_done) {
            SSL_shutdown(p->ssl);
            flush_net(p);
        }
        pump_close(p, NULL);
    }
    free(buf->base);
}

/* ---- lifecycle ---------------------------------------------------------- */

static void pump_maybe_free(struct cons__pump *p)
{
    struct cons__tp *tp = p->tp;

    if (p->tcp_open || p->plain_open)
        return;
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        tp->pumps = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    SSL_free(p->ssl); /* frees both BIOs */
    free(p);
    cons__tp_maybe_closed(tp);
}

static void on_tcp_closed(uv_handle_t *h)
{
    struct cons__pump *p = h->data;

    raft_free(h);
    p->tcp = NULL;
    p->tcp_open = false;
    pump_maybe_free(p);
}

static void on_plain_closed(uv_handle_t *h)
{
    struct cons__pump *p = h->data;

    p->plain_open = false;
    pump_maybe_free(p);
}

static void pump_close(struct cons__pump *p, const char *why)
{
    if (p->closing)
        return;
    p->closing = true;
    if (why != NULL)
        LOG_DEBUG("event=raft_tls_closed remote=%s why=\"%s\"", p->remote, why);
    /* Pending writes finish as cancelled before the close callbacks. */
    uv_close((uv_handle_t *)p->tcp, on_tcp_closed);
    uv_close((uv_handle_t *)&p->plain, on_plain_closed);
}

void cons__tls_close_all(struct cons__tp *tp)
{
    for (struct cons__pump *p = tp->pumps; p != NULL; p = p->next)
        pump_close(p, "transport closing");
}

int cons__tls_start(struct cons__tp *tp, uv_tcp_t *tcp, bool server,
                    const char *host, const char *remote, uv_pipe_t **out)
{
    struct cons__pump *p;
    uv_pipe_t *mine = NULL;
    int fds[2];

    *out = NULL;
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return CONS_ENOMEM;
    p->ssl = SSL_new(server ? tp->tls_server : tp->tls_client);
    p->net_in = BIO_new(BIO_s_mem());
    p->net_out = BIO_new(BIO_s_mem());
    mine = raft_malloc(sizeof(*mine));
    if (p->ssl == NULL || p->net_in == NULL || p->net_out == NULL ||
        mine == NULL)
        goto err_free;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
        goto err_free;
    SSL_set_bio(p->ssl, p->net_in, p->net_out); /* the SSL owns them now */
    if (!server) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(p->ssl);

        /* The certificate must name the address we dialled. */
        if (X509_VERIFY_PARAM_set1_ip_asc(vp, host) != 1) {
            SSL_set1_host(p->ssl, host);
            SSL_set_tlsext_host_name(p->ssl, host);
        }
        SSL_set_connect_state(p->ssl);
    } else {
        SSL_set_accept_state(p->ssl);
    }
    p->tp = tp;
    p->server = server;
    snprintf(p->remote, sizeof(p->remote), "%s", remote);
    p->tcp = tcp;
    tcp->data = p;
    p->tcp_open = true;
    uv_pipe_init(tp->loop, &p->plain, 0);
    uv_pipe_open(&p->plain, fds[0]);
    p->plain.data = p;
    p->plain_open = true;
    uv_pipe_init(tp->loop, mine, 0);
    uv_pipe_open(mine, fds[1]);
    p->next = tp->pumps;
    if (p->next != NULL)
        p->next->prev = p;
    tp->pumps = p;
    uv_read_start((uv_stream_t *)tcp, alloc_cb, on_net_read);
    if (!server)
        drain_tls(p); /* ClientHello */
    *out = mine;
    return CONS_OK;
err_free:
    /* Not attached to the SSL yet: each is freed on its own. */
    SSL_free(p->ssl);
    BIO_free(p->net_in);
    BIO_free(p->net_out);
    raft_free(mine);
    free(p);
    return CONS_ENOMEM;
}
