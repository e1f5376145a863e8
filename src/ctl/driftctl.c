/*
 * driftctl.c - the admin CLI of a driftd cluster: command line, dispatch,
 * and the small helpers every command shares.
 *
 *   driftctl [--server URL] [--token TOKEN] [--json] COMMAND [ARGS]
 *
 * Options may stand anywhere on the line ("--" ends them). The server is
 * --server, else $DRIFTCTL_SERVER, else http://127.0.0.1:8080; the token is
 * --token, else $DRIFTCTL_TOKEN. Exit codes: 0 done, 1 refused or failed
 * (one line "driftctl: reason" on stderr), 2 usage error.
 *
 * It speaks only the HTTP API (docs/admin-api.md); it keeps no state and
 * never retries a change on its own after a timeout.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <curl/curl.h>

#include "ctl.h"

#define DRIFTCTL_VERSION "0.1.0"
#define DEFAULT_SERVER "http://127.0.0.1:8080"
#define MAX_ARGS 8

/* clang-format off */
static void usage(FILE *f)
{
    fprintf(f,
"usage: driftctl [--server URL] [--token TOKEN] [--json] COMMAND [ARGS]\n"
"\n"
"Administers a driftd cluster through any of its nodes.\n"
"\n"
"Commands:\n"
"  status                        nodes, roles, leader, term, commit/applied\n"
"                                index, replication lag\n"
"  add ID RAFT_HOST:PORT [--standby]\n"
"                                add a node started with --join (a voter\n"
"                                unless --standby)\n"
"  promote ID                    standby -> voter\n"
"  demote ID [--force]           voter -> standby\n"
"  remove ID [--force]           remove a node (leadership is moved away\n"
"                                first if it is the leader)\n"
"  transfer [ID]                 move leadership to ID, or to the most\n"
"                                up-to-date voter\n"
"  rooms                         rooms: keys, retained entries and bytes,\n"
"                                last seq\n"
"  room ID                       one room: its keys, stream sizes, last\n"
"                                seq, subscribers on this node\n"
"  config                        the cluster settings (limits decided by\n"
"                                the log: max_value_len, max_room_bytes,\n"
"                                max_rooms, max_key_len, max_dedupe,\n"
"                                dedupe_ttl_ms)\n"
"  config set NAME VALUE         change one, on every node, through the log\n"
"  log-level [LEVEL]             the log level (and format) of the node at\n"
"                                --server, or set it: error, warn, info,\n"
"                                debug (that node only, until it restarts)\n"
"  keygen [FILE]                 a new cluster key for --cluster-key-file:\n"
"                                to FILE (created, mode 600) or stdout\n"
"\n"
"Options:\n"
"  --server URL   a node's HTTP address (default $DRIFTCTL_SERVER, else\n"
"                 " DEFAULT_SERVER ")\n"
"  --token TOKEN  the nodes' --admin-token (default $DRIFTCTL_TOKEN)\n"
"  --token-file PATH  the token from a file's first line (not visible in\n"
"                 ps; default $DRIFTCTL_TOKEN_FILE)\n"
"  --cacert PATH  CA bundle (PEM) for a node with --tls-cert (default\n"
"                 $DRIFTCTL_CACERT, else the system's CAs)\n"
"  --json         print JSON instead of tables\n"
"  --force        remove / demote even if quorum would be at risk\n"
"  --help, --version\n"
"\n"
"Exit codes: 0 done, 1 refused or failed (reason on stderr), 2 usage.\n");
}
/* clang-format on */

void ctl_fail(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fputs("driftctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("driftctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'driftctl --help'.\n", stderr);
    return CTL_EUSAGE;
}

long long ctl_jint(const json_t *obj, const char *key, long long dflt)
{
    const json_t *v = json_object_get(obj, key);

    return json_is_integer(v) ? (long long)json_integer_value(v) : dflt;
}

const char *ctl_jstr(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

int ctl_print_json(const json_t *root)
{
    char *text = json_dumps(root, JSON_COMPACT | JSON_ENCODE_ANY);

    if (text == NULL) {
        ctl_fail("out of memory");
        return CTL_EFAIL;
    }
    puts(text);
    free(text);
    return CTL_OK;
}

/* A node id: decimal, 1 .. 2^32-1. */
static bool parse_id(const char *s, uint32_t *out)
{
    unsigned long long v = 0;

    if (*s == '\0' || strlen(s) > 10)
        return false;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (unsigned long long)(*p - '0');
    }
    if (v == 0 || v > UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

/* HOST:PORT (HOST may be [v6]), port 1..65535. */
static bool addr_ok(const char *s)
{
    const char *colon = strrchr(s, ':');
    unsigned long port = 0;

    if (colon == NULL || colon == s || colon[1] == '\0' ||
        strlen(colon + 1) > 5)
        return false;
    for (const char *p = colon + 1; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return false;
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (s[0] == '[' && colon[-1] != ']')
        return false;
    for (const char *p = s; p < colon; p++)
        if ((unsigned char)*p <= ' ' || *p == '/')
            return false;
    return port >= 1 && port <= 65535;
}

struct args {
    const char *server;
    const char *token;
    const char *token_file;
    const char *cacert;
    bool json, standby, force;
    int npos;
    const char *pos[MAX_ARGS];
};

/* "--name VALUE" or "--name=VALUE": CTL_OK with *val set, or a usage
 * error; *i is moved past a separate value. 1 when arg is not --name. */
static int opt_value(int argc, char **argv, int *i, const char *name,
                     const char **val)
{
    const char *a = argv[*i];
    size_t n = strlen(name);

    if (strncmp(a, name, n) != 0)
        return 1;
    if (a[n] == '=') {
        *val = a + n + 1;
        return CTL_OK;
    }
    if (a[n] != '\0')
        return 1;
    if (*i + 1 >= argc)
        return usage_error("%s needs a value", name);
    *val = argv[++*i];
    return CTL_OK;
}

static int parse_args(int argc, char **argv, struct args *a)
{
    bool dashdash = false;
    int rv;

    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];

        if (dashdash || s[0] != '-' || s[1] == '\0') {
            if (a->npos == MAX_ARGS)
                return usage_error("too many arguments");
            a->pos[a->npos++] = s;
            continue;
        }
        if (strcmp(s, "--") == 0) {
            dashdash = true;
        } else if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            usage(stdout);
            return -1;
        } else if (strcmp(s, "--version") == 0) {
            printf("driftctl %s\n", DRIFTCTL_VERSION);
            return -1;
        } else if (strcmp(s, "--json") == 0) {
            a->json = true;
        } else if (strcmp(s, "--standby") == 0) {
            a->standby = true;
        } else if (strcmp(s, "--force") == 0) {
            a->force = true;
        } else if ((rv = opt_value(argc, argv, &i, "--server", &a->server)) !=
                   1) {
            if (rv != CTL_OK)
                return rv;
            if (a->server[0] == '\0')
                return usage_error("--server needs a URL");
        } else if ((rv = opt_value(argc, argv, &i, "--token", &a->token)) !=
                   1) {
            if (rv != CTL_OK)
                return rv;
        } else if ((rv = opt_value(argc, argv, &i, "--token-file",
                                   &a->token_file)) != 1) {
            if (rv != CTL_OK)
                return rv;
        } else if ((rv = opt_value(argc, argv, &i, "--cacert",
                                   &a->cacert)) != 1) {
            if (rv != CTL_OK)
                return rv;
        } else if (s[1] != '-' ||
                   (a->npos == 1 && strcmp(a->pos[0], "room") == 0)) {
            /* Not an option: room ids are random base64url and may start
             * with '-' (or, rarely, "--"). driftctl's options are all long
             * ones, so a single-dash word is an argument, and so is any
             * unknown word where `room` expects its id. */
            if (a->npos == MAX_ARGS)
                return usage_error("too many arguments");
            a->pos[a->npos++] = s;
        } else {
            return usage_error("unknown option %s", s);
        }
    }
    return CTL_OK;
}

/* Checks the argument count of cmd: between min and max after it. */
static int want_args(const struct args *a, int min, int max,
                     const char *synopsis)
{
    int n = a->npos - 1;

    if (n < min || n > max)
        return usage_error("%s: %s arguments; usage: driftctl %s", a->pos[0],
                           n < min ? "missing" : "too many", synopsis);
    return CTL_OK;
}

static int run(struct ctl *c, const struct args *a)
{
    const char *cmd = a->pos[0];
    uint32_t id = 0;

    if (strcmp(cmd, "status") == 0)
        return ctl_cmd_status(c);
    if (strcmp(cmd, "rooms") == 0)
        return ctl_cmd_rooms(c);
    if (strcmp(cmd, "room") == 0)
        return ctl_cmd_room(c, a->pos[1]);
    if (strcmp(cmd, "config") == 0)
        return a->npos == 1 ? ctl_cmd_config(c, NULL, NULL)
                            : ctl_cmd_config(c, a->pos[2], a->pos[3]);
    if (strcmp(cmd, "log-level") == 0)
        return ctl_cmd_log_level(c, a->npos > 1 ? a->pos[1] : NULL);
    if (a->npos > 1)
        parse_id(a->pos[1], &id); /* checked in check_args */
    if (strcmp(cmd, "add") == 0)
        return ctl_cmd_add(c, id, a->pos[2], a->standby);
    if (strcmp(cmd, "promote") == 0)
        return ctl_cmd_role(c, id, true, false);
    if (strcmp(cmd, "demote") == 0)
        return ctl_cmd_role(c, id, false, a->force);
    if (strcmp(cmd, "remove") == 0)
        return ctl_cmd_remove(c, id, a->force);
    return ctl_cmd_transfer(c, id);
}

/* Usage checks of the command line, before any network. */
static int check_args(const struct args *a)
{
    static const struct {
        const char *name;
        int min, max;
        bool standby, force, id;
        const char *synopsis;
    } cmds[] = {
        {"status", 0, 0, false, false, false, "status"},
        {"rooms", 0, 0, false, false, false, "rooms"},
        {"room", 1, 1, false, false, false, "room ID"},
        {"add", 2, 2, true, false, true, "add ID RAFT_HOST:PORT [--standby]"},
        {"promote", 1, 1, false, false, true, "promote ID"},
        {"demote", 1, 1, false, true, true, "demote ID [--force]"},
        {"remove", 1, 1, false, true, true, "remove ID [--force]"},
        {"transfer", 0, 1, false, false, true, "transfer [ID]"},
        {"keygen", 0, 1, false, false, false, "keygen [FILE]"},
        {"config", 0, 3, false, false, false, "config [set NAME VALUE]"},
        {"log-level", 0, 1, false, false, false, "log-level [LEVEL]"},
    };
    uint32_t id;
    int rv;

    if (a->npos == 0)
        return usage_error("no command given");
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        if (strcmp(a->pos[0], cmds[i].name) != 0)
            continue;
        rv = want_args(a, cmds[i].min, cmds[i].max, cmds[i].synopsis);
        if (rv != CTL_OK)
            return rv;
        if (a->standby && !cmds[i].standby)
            return usage_error("--standby: only for add");
        if (a->force && !cmds[i].force)
            return usage_error("--force: only for remove and demote");
        if (cmds[i].id && a->npos > 1 && !parse_id(a->pos[1], &id))
            return usage_error("bad node id '%s': want a number >= 1",
                               a->pos[1]);
        if (strcmp(a->pos[0], "add") == 0 && !addr_ok(a->pos[2]))
            return usage_error("bad raft address '%s': want HOST:PORT",
                               a->pos[2]);
        if (strcmp(a->pos[0], "room") == 0 && a->pos[1][0] == '\0')
            return usage_error("room: empty room id");
        if (strcmp(a->pos[0], "config") == 0 && a->npos != 1 &&
            (a->npos != 4 || strcmp(a->pos[1], "set") != 0))
            return usage_error("usage: driftctl config [set NAME VALUE]");
        return CTL_OK;
    }
    return usage_error("unknown command '%s'", a->pos[0]);
}

/*
 * A cluster key: 32 bytes from the kernel's CSPRNG as 64 hex digits, the
 * format driftd's --cluster-key-file reads. A file is created, never
 * overwritten, readable by its owner only.
 */
static int cmd_keygen(const char *path)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char key[32];
    char hex[2 * sizeof(key) + 2];
    size_t got = 0;
    int fd = STDOUT_FILENO;

    while (got < sizeof(key)) {
        ssize_t n = getrandom(key + got, sizeof(key) - got, 0);

        if (n < 0 && errno != EINTR) {
            ctl_fail("keygen: no randomness: %s", strerror(errno));
            return CTL_EFAIL;
        }
        if (n > 0)
            got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof(key); i++) {
        hex[2 * i] = digits[key[i] >> 4];
        hex[2 * i + 1] = digits[key[i] & 15];
    }
    hex[2 * sizeof(key)] = '\n';
    hex[2 * sizeof(key) + 1] = '\0';
    if (path != NULL) {
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
            ctl_fail("keygen: %s: %s", path, strerror(errno));
            return CTL_EFAIL;
        }
    }
    if (write(fd, hex, strlen(hex)) != (ssize_t)strlen(hex) ||
        (path != NULL && close(fd) != 0)) {
        ctl_fail("keygen: cannot write the key");
        return CTL_EFAIL;
    }
    return CTL_OK;
}

/* The token from a file: its first line. */
static int read_token_file(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        ctl_fail("--token-file %s: %s", path, strerror(errno));
        return CTL_EUSAGE;
    }
    if (fgets(buf, (int)size, f) == NULL)
        buf[0] = '\0';
    fclose(f);
    buf[strcspn(buf, "\r\n")] = '\0';
    if (buf[0] == '\0') {
        ctl_fail("--token-file %s: empty", path);
        return CTL_EUSAGE;
    }
    return CTL_OK;
}

int main(int argc, char **argv)
{
    struct args a = {0};
    struct ctl c;
    const char *env;
    char token_buf[512];
    int rv;

    rv = parse_args(argc, argv, &a);
    if (rv < 0)
        return CTL_OK; /* --help / --version */
    if (rv != CTL_OK)
        return rv;
    rv = check_args(&a);
    if (rv != CTL_OK)
        return rv;
    if (strcmp(a.pos[0], "keygen") == 0)
        return cmd_keygen(a.npos > 1 ? a.pos[1] : NULL);
    if (a.token_file == NULL && a.token == NULL) {
        env = getenv("DRIFTCTL_TOKEN_FILE");
        if (env != NULL && env[0] != '\0')
            a.token_file = env;
    }
    if (a.token_file != NULL) {
        rv = read_token_file(a.token_file, token_buf, sizeof(token_buf));
        if (rv != CTL_OK)
            return rv;
        a.token = token_buf;
    }
    if (a.server == NULL) {
        env = getenv("DRIFTCTL_SERVER");
        a.server = env != NULL && env[0] != '\0' ? env : DEFAULT_SERVER;
    }
    if (a.token == NULL) {
        env = getenv("DRIFTCTL_TOKEN");
        if (env != NULL && env[0] != '\0')
            a.token = env;
    } else if (a.token[0] == '\0') {
        a.token = NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        ctl_fail("cannot initialise libcurl");
        return CTL_EFAIL;
    }
    if (a.cacert == NULL) {
        env = getenv("DRIFTCTL_CACERT");
        if (env != NULL && env[0] != '\0')
            a.cacert = env;
    }
    rv = ctl_init(&c, a.server, a.token, a.json);
    c.cacert = a.cacert;
    if (rv == CTL_OK)
        rv = run(&c, &a);
    ctl_close(&c);
    curl_global_cleanup();
    if (fflush(stdout) != 0 && rv == CTL_OK) {
        ctl_fail("cannot write the output");
        rv = CTL_EFAIL;
    }
    return rv;
}
