/*
 * state.c - the replicated state as a whole: its lifecycle, relay's error
 * texts and relay_state_apply(), which every command of the log goes
 * through on every node.
 *
 * apply is a dispatch: a command with an origin first passes the dedupe
 * gate (dedupe.c), which drops one applied before (EDUP) and allocates its
 * record up front; then the command's own file (rooms.c, nodes.c,
 * settings.c) applies it or refuses it through eff->status; last the origin
 * is recorded, which cannot fail, so a command is applied and recorded
 * together or not at all.
 *
 * The data structures and the determinism rules every file follows are in
 * state_internal.h. Not here: the commands themselves, snapshots
 * (snapshot.c), reads (rooms.c, nodes.c, settings.c).
 */
#include <stdlib.h>
#include <string.h>

#include "state_internal.h"

/* ---- small helpers ------------------------------------------------------- */

/* A NUL-terminated copy of n bytes (which may hold NULs). */
char *relay__dup_bytes(const char *p, size_t n)
{
    char *c = malloc(n + 1);

    if (c == NULL)
        return NULL;
    if (n > 0)
        memcpy(c, p, n);
    c[n] = '\0';
    return c;
}

/* ---- errors -------------------------------------------------------------- */

const char *relay_strerror(int code)
{
    switch (code) {
    case RELAY_OK:
        return "ok";
    case RELAY_ENOMEM:
        return "out of memory";
    case RELAY_EINVAL:
        return "invalid input";
    case RELAY_ENOROOM:
        return "room not found";
    case RELAY_EEXIST:
        return "room already exists";
    case RELAY_ETOOBIG:
        return "size limit exceeded";
    case RELAY_EFULL:
        return "too many rooms";
    case RELAY_ESEQ:
        return "compact seq must be between 1 and the room's last seq";
    case RELAY_EDUP:
        return "duplicate command (already applied)";
    case RELAY_EDEPTH:
        return "value nested too deeply";
    case RELAY_EACTIVE:
        return "room was active since the delete was decided";
    case RELAY_ECANCELED:
        return "cancelled";
    default:
        return "unknown error";
    }
}

/* ---- lifecycle ----------------------------------------------------------- */

static void state_clear(struct relay_state *s)
{
    relay__rooms_clear(s);
    relay__dd_clear(s);
    relay__nodes_clear(s);
}

int relay_state_create_seeded(const struct relay_limits *lim,
                              const uint8_t *seed, struct relay_state **out)
{
    struct relay_state *s = calloc(1, sizeof(*s));

    *out = NULL;
    if (s == NULL)
        return RELAY_ENOMEM;
    relay__limits_fill(&s->lim, lim);
    if (seed != NULL)
        memcpy(s->seed, seed, sizeof(s->seed));
    htab_init(&s->rooms, s->seed);
    htab_init(&s->dedupe, s->seed);
    *out = s;
    return RELAY_OK;
}

int relay_state_create(const struct relay_limits *lim, struct relay_state **out)
{
    return relay_state_create_seeded(lim, NULL, out);
}

void relay_state_destroy(struct relay_state *s)
{
    if (s == NULL)
        return;
    state_clear(s);
    relay__pin_close(s);
    free(s);
}

/* ---- apply --------------------------------------------------------------- */

int relay_state_apply(struct relay_state *s, const struct relay_cmd *cmd,
                      uint64_t now_ms, struct relay_effects *eff)
{
    struct relay__dd *spare = NULL;
    bool dedupe = cmd->origin.node != 0;
    int rv;

    memset(eff, 0, sizeof(*eff));
    if (dedupe) {
        rv = relay__dd_admit(s, &cmd->origin, now_ms, &spare);
        if (rv == RELAY_EDUP) {
            eff->status = RELAY_EDUP;
            return RELAY_OK;
        }
        if (rv != RELAY_OK)
            return rv;
    }

    switch (cmd->type) {
    case RELAY_CMD_CREATE_ROOM:
        rv = relay__apply_create(s, cmd, now_ms, eff);
        break;
    case RELAY_CMD_PUSH:
        rv = relay__apply_push(s, cmd, now_ms, eff);
        break;
    case RELAY_CMD_DELETE_ROOM:
        rv = relay__apply_delete(s, cmd, eff);
        break;
    case RELAY_CMD_NOOP:
        rv = RELAY_OK;
        break;
    case RELAY_CMD_CONFIG:
        rv = relay__apply_config(s, cmd, eff);
        break;
    case RELAY_CMD_NODE_SET:
    case RELAY_CMD_NODE_FORGET:
        rv = relay__apply_node(s, cmd, eff);
        break;
    default:
        eff->status = RELAY_EINVAL;
        rv = RELAY_OK;
        break;
    }
    if (rv == RELAY_OK && dedupe)
        relay__dd_record(s, &cmd->origin, now_ms, &spare);
    free(spare);
    return rv;
}
