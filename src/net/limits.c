/*
 * limits.c - what one client address, and one connection, may take of a
 * node: connections per address, room creations per address, messages and
 * bytes per second per WebSocket session, and deadlines for requests and
 * messages that never finish (slowloris).
 *
 * Per address: one entry per peer IP in a seeded table, created with its
 * first connection. It counts the address' connections and holds its room
 * creation token bucket; it is freed once the address has no connection
 * and its bucket is full again (the sweep), so the table is bounded by the
 * connections plus the addresses that recently created rooms, and at most
 * NET_MAX_IPS entries (past that, a new address is refused: it cannot be
 * accounted for).
 *
 * Per session: a token bucket of messages and one of bytes; a session over
 * either gets an error naming the limit and is closed with 1008.
 *
 * The sweep (every NET_SWEEP_MS): connections that have not sent a whole
 * first request within cfg.header_timeout_ms are cut (lws only frees its
 * header table when the request completes, so a few hundred trickling
 * connections would starve everyone else); a WebSocket message whose
 * fragments do not complete within cfg.message_timeout_ms is refused with
 * 1008 (its reassembly buffer could otherwise be held forever).
 *
 * Not here: the global connection bound and descriptor reserve (server.c).
 */
#define LOG_MODULE "net"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "log.h"

struct net_ip {
    struct htab_node node;
    struct net_ip *prev, *next; /* s->ip_list, for the sweep */
    char ip[64];
    size_t ip_len;
    size_t conns;
    double room_tokens; /* room creations available now */
    uint64_t room_ms;   /* when room_tokens was last brought up to date */
};

static void ip_free(struct net_server *s, struct net_ip *e)
{
    htab_remove(&s->ips, &e->node);
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        s->ip_list = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    s->n_ips--;
    free(e);
}

static void refill(const struct net_server *s, struct net_ip *e, uint64_t now)
{
    double cap = (double)s->cfg.room_burst;

    e->room_tokens += (double)(now - e->room_ms) * s->cfg.room_rate / 1000.0;
    if (e->room_tokens > cap)
        e->room_tokens = cap;
    e->room_ms = now;
}

int net__ip_attach(struct net_server *s, struct net_conn *c)
{
    char ip[64];
    struct htab_node *n;
    struct net_ip *e;
    size_t len;

    if (lws_get_peer_simple(c->wsi, ip, sizeof(ip)) == NULL)
        snprintf(ip, sizeof(ip), "?");
    len = strlen(ip);
    n = htab_find(&s->ips, ip, len);
    if (n != NULL) {
        e = HTAB_ENTRY(n, struct net_ip, node);
    } else {
        if (s->n_ips >= NET_MAX_IPS || htab_reserve(&s->ips, s->n_ips + 1))
            return NET_ENOMEM;
        e = calloc(1, sizeof(*e));
        if (e == NULL)
            return NET_ENOMEM;
        memcpy(e->ip, ip, len + 1);
        e->ip_len = len;
        e->room_tokens = (double)s->cfg.room_burst;
        e->room_ms = uv_now(s->loop);
        htab_insert(&s->ips, &e->node, e->ip, e->ip_len);
        e->next = s->ip_list;
        if (e->next != NULL)
            e->next->prev = e;
        s->ip_list = e;
        s->n_ips++;
    }
    if (s->cfg.max_conns_per_ip > 0 && e->conns >= s->cfg.max_conns_per_ip) {
        LOG_WARN_RL("event=accept_refused remote=%s why=\"connections per "
                    "address\" limit=%zu",
                    e->ip, s->cfg.max_conns_per_ip);
        if (e->conns == 0)
            ip_free(s, e);
        return NET_EBUSY;
    }
    e->conns++;
    c->ip = e;
    return NET_OK;
}

void net__ip_detach(struct net_conn *c)
{
    struct net_ip *e = c->ip;

    if (e == NULL)
        return;
    c->ip = NULL;
    e->conns--;
    /* A full bucket says nothing: the sweep frees such entries. */
}

const char *net__ip_of(const struct net_conn *c)
{
    return c->ip != NULL ? c->ip->ip : "?";
}

bool net__ip_take_room(struct net_server *s, struct net_conn *c)
{
    struct net_ip *e = c->ip;

    if (e == NULL || s->cfg.room_rate <= 0)
        return true;
    refill(s, e, uv_now(s->loop));
    if (e->room_tokens < 1.0) {
        LOG_INFO_RL("event=room_rate_limited remote=%s", e->ip);
        return false;
    }
    e->room_tokens -= 1.0;
    return true;
}

/* ---- per session ---------------------------------------------------------- */

bool net__rate_take(struct net_server *s, struct net_conn *c, size_t bytes,
                    const char **which)
{
    uint64_t now = uv_now(s->loop);
    double dt;

    if (c->rate_ms == 0) {
        c->msg_tokens = (double)s->cfg.msg_rate * NET_RATE_BURST_S;
        c->byte_tokens = (double)s->cfg.byte_rate * NET_RATE_BURST_S;
        c->rate_ms = now;
    }
    dt = (double)(now - c->rate_ms) / 1000.0;
    c->rate_ms = now;
    if (s->cfg.msg_rate > 0) {
        c->msg_tokens += dt * (double)s->cfg.msg_rate;
        if (c->msg_tokens > (double)s->cfg.msg_rate * NET_RATE_BURST_S)
            c->msg_tokens = (double)s->cfg.msg_rate * NET_RATE_BURST_S;
        if (c->msg_tokens < 1.0) {
            *which = "messages per second";
            return false;
        }
        c->msg_tokens -= 1.0;
    }
    if (s->cfg.byte_rate > 0) {
        c->byte_tokens += dt * (double)s->cfg.byte_rate;
        if (c->byte_tokens > (double)s->cfg.byte_rate * NET_RATE_BURST_S)
            c->byte_tokens = (double)s->cfg.byte_rate * NET_RATE_BURST_S;
        if (c->byte_tokens < (double)bytes) {
            *which = "bytes per second";
            return false;
        }
        c->byte_tokens -= (double)bytes;
    }
    return true;
}

/* ---- the sweep ------------------------------------------------------------ */

static void on_sweep(uv_timer_t *t)
{
    struct net_server *s = t->data;
    uint64_t now = uv_now(s->loop);
    struct net_ip *e, *next;

    if (s->stopping)
        return;
    for (struct net_conn *c = s->conns; c != NULL; c = c->next) {
        if (c->kind == NET_CONN_HTTP && !c->requested &&
            now - c->opened_ms > s->cfg.header_timeout_ms && !c->cut) {
            c->cut = true;
            LOG_INFO_RL("event=request_timeout remote=%s why=\"no whole "
                        "request within %u ms\"",
                        net__ip_of(c), s->cfg.header_timeout_ms);
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK,
                            LWS_TO_KILL_ASYNC);
        } else if ((c->kind == NET_CONN_WS || c->kind == NET_CONN_FWD) &&
                   c->rx_active && !c->closing &&
                   now - c->rx_started_ms > s->cfg.message_timeout_ms) {
            LOG_INFO_RL("event=message_timeout remote=%s bytes=%zu",
                        net__ip_of(c), c->rx_len);
            net__ws_close(c, LWS_CLOSE_STATUS_POLICY_VIOLATION,
                          "message not finished in time");
        }
    }
    net__ws_run_closes(s);
    for (e = s->ip_list; e != NULL; e = next) {
        next = e->next;
        if (e->conns > 0)
            continue;
        refill(s, e, now);
        if (e->room_tokens >= (double)s->cfg.room_burst)
            ip_free(s, e);
    }
}

void net__limits_init(struct net_server *s)
{
    htab_init(&s->ips, s->seed);
    uv_timer_init(s->loop, &s->sweep);
    s->sweep.data = s;
}

void net__limits_start(struct net_server *s)
{
    uv_timer_start(&s->sweep, on_sweep, NET_SWEEP_MS, NET_SWEEP_MS);
}

void net__limits_stop(struct net_server *s)
{
    uv_timer_stop(&s->sweep);
}

void net__limits_release(struct net_server *s)
{
    while (s->ip_list != NULL)
        ip_free(s, s->ip_list);
    htab_close(&s->ips);
}
