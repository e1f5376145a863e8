/*
 * key.c - the cluster key: loading it, and the HMAC-SHA256 proofs that the
 * raft transport (transport.c) and net's forward links build on it.
 *
 * A cluster key is 32 random bytes, stored as 64 hex digits in a file that
 * only its owner may read (driftctl keygen writes one). Every node of a
 * cluster loads the same file. A proof is HMAC-SHA256(key, label || parts):
 * the label names the protocol step ("driftd raft client", ...), so a proof
 * made for one step is never valid for another (no reflection), and the
 * parts carry both sides' fresh nonces and node ids, so a recorded proof is
 * never valid again.
 *
 * Not here: the handshakes themselves, TLS.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/core_names.h>
#include <openssl/params.h>

#include "consensus.h"

static int hex_val(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool cons_hex_decode(const char *hex, size_t len, uint8_t *out, size_t n)
{
    if (len != 2 * n)
        return false;
    for (size_t i = 0; i < n; i++) {
        int hi = hex_val((unsigned char)hex[2 * i]);
        int lo = hex_val((unsigned char)hex[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

void cons_hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int cons_key_load(const char *path, uint8_t key[CONS_KEY_LEN], char *err,
                  size_t errlen)
{
    char buf[256];
    struct stat st;
    ssize_t got;
    size_t start = 0, end;
    int fd;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%.200s: %s", path, strerror(errno));
        return CONS_EINVAL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%.200s: not a regular file", path);
        goto err_close;
    }
    /* Like ssh with its private keys: a key others can read is no secret. */
    if ((st.st_mode & 0007) != 0) {
        snprintf(err, errlen,
                 "%.200s: readable by other users; chmod 600 it (and make "
                 "a new key if others may have read it)",
                 path);
        goto err_close;
    }
    got = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (got < 0) {
        snprintf(err, errlen, "%.200s: %s", path, strerror(errno));
        return CONS_EINVAL;
    }
    end = (size_t)got;
    while (start < end && (buf[start] == ' ' || buf[start] == '\n' ||
                           buf[start] == '\r' || buf[start] == '\t'))
        start++;
    while (end > start && (buf[end - 1] == ' ' || buf[end - 1] == '\n' ||
                           buf[end - 1] == '\r' || buf[end - 1] == '\t'))
        end--;
    if (!cons_hex_decode(buf + start, end - start, key, CONS_KEY_LEN)) {
        snprintf(err, errlen,
                 "%.200s: want %d hex digits (make one with driftctl keygen)",
                 path, 2 * CONS_KEY_LEN);
        OPENSSL_cleanse(buf, sizeof(buf));
        return CONS_EINVAL;
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return CONS_OK;
err_close:
    close(fd);
    return CONS_EINVAL;
}

int cons_random(void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return CONS_EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    return CONS_OK;
}

int cons_auth_mac(const uint8_t key[CONS_KEY_LEN], const char *label,
                  const struct cons_auth_part *parts, size_t n_parts,
                  uint8_t out[CONS_MAC_LEN])
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[2];
    size_t outlen = 0;
    int ok = 0;

    if (mac == NULL)
        return CONS_ENOMEM;
    ctx = EVP_MAC_CTX_new(mac);
    if (ctx == NULL)
        goto out;
    params[0] = OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (!EVP_MAC_init(ctx, key, CONS_KEY_LEN, params))
        goto out;
    /* The label's NUL separates it from the parts. */
    if (!EVP_MAC_update(ctx, (const unsigned char *)label, strlen(label) + 1))
        goto out;
    for (size_t i = 0; i < n_parts; i++)
        if (parts[i].len > 0 &&
            !EVP_MAC_update(ctx, parts[i].data, parts[i].len))
            goto out;
    ok = EVP_MAC_final(ctx, out, &outlen, CONS_MAC_LEN) &&
         outlen == CONS_MAC_LEN;
out:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return ok ? CONS_OK : CONS_ENOMEM;
}

bool cons_auth_equal(const uint8_t *a, const uint8_t *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) == 0;
}

void cons_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

uint64_t cons_get_u64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

bool cons_addr_split(const char *addr, char *host, size_t host_sz, int *port)
{
    const char *colon, *h = addr;
    size_t hlen;
    char *end;
    long p;

    if (addr[0] == '[') {
        const char *rb = strchr(addr, ']');

        if (rb == NULL || rb[1] != ':')
            return false;
        h = addr + 1;
        hlen = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL)
            return false;
        hlen = (size_t)(colon - addr);
    }
    if (hlen == 0 || hlen >= host_sz)
        return false;
    errno = 0;
    p = strtol(colon + 1, &end, 10);
    if (errno != 0 || end == colon + 1 || *end != '\0' || p <= 0 || p > 65535)
        return false;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (int)p;
    return true;
}

bool cons_host_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;

    if (strcmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}
