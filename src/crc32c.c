/*
 * crc32c.c - CRC-32C, reflected polynomial 0x82F63B78 (RFC 3720, iSCSI).
 *
 * Design: the hardware path (x86-64 SSE4.2, chosen once at run time) takes
 * 8 bytes per instruction; the portable path takes one byte per table
 * lookup, which is slow (~400 MB/s) but only used on CPUs without SSE4.2.
 * Snapshots are checksummed on the loop, so the fast path matters: a 100 MB
 * state costs ~5 ms more to snapshot with it.
 */
#include "crc32c.h"

#include <string.h>

/* Filled on first use; callers are the loop thread (and tests). */
static uint32_t table[256];
static int table_ready;

static void table_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[i] = c;
    }
    table_ready = 1;
}

static uint32_t crc_soft(uint32_t crc, const uint8_t *p, size_t len)
{
    if (!table_ready)
        table_init();
    while (len-- > 0)
        crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2"))) static uint32_t
crc_hw(uint32_t crc, const uint8_t *p, size_t len)
{
    uint64_t c = crc;

    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, sizeof(w));
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        len -= 8;
    }
    crc = (uint32_t)c;
    while (len-- > 0)
        crc = __builtin_ia32_crc32qi(crc, *p++);
    return crc;
}

static int have_hw(void)
{
    static int known, yes;

    if (!known) {
        __builtin_cpu_init();
        yes = __builtin_cpu_supports("sse4.2");
        known = 1;
    }
    return yes;
}
#endif

uint32_t crc32c_portable(uint32_t crc, const void *p, size_t len)
{
    return ~crc_soft(~crc, p, len);
}

uint32_t crc32c(uint32_t crc, const void *p, size_t len)
{
    crc = ~crc;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (have_hw())
        return ~crc_hw(crc, p, len);
#endif
    return ~crc_soft(crc, p, len);
}
