/*
 * settings.c - cluster settings: the limits that decide whether a command
 * applies (value, key and room sizes, room count, the dedupe table's size
 * and TTL). They live in the replicated state and change only through the
 * log (RELAY_CMD_CONFIG), so nodes started with different flags still apply
 * the same log the same way; a state nobody configured uses relay's
 * compiled-in defaults, the same on every node.
 *
 * Each setting has a name, an index (the order of relay_setting_name, also
 * the order in snapshots) and the range a RELAY_CMD_CONFIG may set; set_mask
 * records which ones the log has set.
 *
 * Not here: proposing the bootstrap values from the first leader's flags
 * and `driftctl config set` (consensus/settings.c).
 */
#include <string.h>

#include "state_internal.h"

void relay_limits_default(struct relay_limits *lim)
{
    lim->max_key_len = 1024;
    lim->max_value_len = 1024 * 1024;
    lim->max_room_bytes = 64 * 1024 * 1024;
    lim->max_rooms = 100000;
    lim->max_dedupe = 65536;
    lim->dedupe_ttl_ms = 3600 * 1000;
}

static const struct {
    const char *name;
    uint64_t min, max;
} settings[RELAY_SETTINGS_N] = {
    {"max_value_len", 1024, (uint64_t)64 << 20},
    {"max_room_bytes", 1024, (uint64_t)1 << 40},
    {"max_rooms", 1, 100000000},
    {"max_key_len", 1, 65536},
    {"max_dedupe", 16, 100000000},
    {"dedupe_ttl_ms", 1000, (uint64_t)30 * 24 * 3600 * 1000},
};
/* Set at bootstrap from the first leader's flags. */
#define SETTINGS_BOOTSTRAP 0x7u

const char *relay_setting_name(size_t i)
{
    return i < RELAY_SETTINGS_N ? settings[i].name : NULL;
}

int relay_setting_find(const char *name, size_t len)
{
    for (size_t i = 0; i < RELAY_SETTINGS_N; i++)
        if (strlen(settings[i].name) == len &&
            memcmp(settings[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

void relay_setting_range(size_t i, uint64_t *min, uint64_t *max)
{
    *min = settings[i].min;
    *max = settings[i].max;
}

uint64_t relay_limits_setting(const struct relay_limits *lim, size_t i)
{
    switch (i) {
    case 0:
        return lim->max_value_len;
    case 1:
        return lim->max_room_bytes;
    case 2:
        return lim->max_rooms;
    case 3:
        return lim->max_key_len;
    case 4:
        return lim->max_dedupe;
    default:
        return lim->dedupe_ttl_ms;
    }
}

void relay__limits_set(struct relay_limits *lim, size_t i, uint64_t v)
{
    switch (i) {
    case 0:
        lim->max_value_len = (size_t)v;
        break;
    case 1:
        lim->max_room_bytes = (size_t)v;
        break;
    case 2:
        lim->max_rooms = (size_t)v;
        break;
    case 3:
        lim->max_key_len = (size_t)v;
        break;
    case 4:
        lim->max_dedupe = (size_t)v;
        break;
    default:
        lim->dedupe_ttl_ms = v;
        break;
    }
}

uint64_t relay_setting_value(const struct relay_state *s, size_t i, bool *set)
{
    *set = (s->set_mask >> i & 1u) != 0;
    return relay_limits_setting(&s->lim, i);
}

bool relay_state_configured(const struct relay_state *s)
{
    return (s->set_mask & SETTINGS_BOOTSTRAP) == SETTINGS_BOOTSTRAP;
}

int relay__apply_config(struct relay_state *s, const struct relay_cmd *cmd,
                        struct relay_effects *eff)
{
    int i = relay_setting_find(cmd->key, cmd->key_len);

    if (i < 0 || cmd->compact_seq < settings[i].min ||
        cmd->compact_seq > settings[i].max) {
        eff->status = RELAY_EINVAL;
        return RELAY_OK;
    }
    relay__limits_set(&s->lim, (size_t)i, cmd->compact_seq);
    s->set_mask |= 1u << i;
    return RELAY_OK;
}

void relay__limits_fill(struct relay_limits *dst,
                        const struct relay_limits *src)
{
    struct relay_limits def;

    relay_limits_default(&def);
    *dst = def;
    if (src == NULL)
        return;
    if (src->max_key_len != 0)
        dst->max_key_len = src->max_key_len;
    if (src->max_value_len != 0)
        dst->max_value_len = src->max_value_len;
    if (src->max_room_bytes != 0)
        dst->max_room_bytes = src->max_room_bytes;
    if (src->max_rooms != 0)
        dst->max_rooms = src->max_rooms;
    if (src->max_dedupe != 0)
        dst->max_dedupe = src->max_dedupe;
    if (src->dedupe_ttl_ms != 0)
        dst->dedupe_ttl_ms = src->dedupe_ttl_ms;
}
