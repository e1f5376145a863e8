/*
 * report.c - the results of a run as a table (for people) or JSON (for
 * scripts), and `driftd-bench report`, which reads saved JSON results and
 * prints the median, min and max of each figure per label.
 *
 * The JSON layout is the contract with scripts/bench.sh, the black-box test
 * and docs/benchmarks.md: add fields freely, do not rename them. Latencies
 * are in milliseconds, rates per second, memory in bytes per connection.
 *
 * Not here: how the figures are measured (run.c).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bench.h"

static double per_s(uint64_t n, double s)
{
    return s > 0 ? (double)n / s : 0;
}

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static double conn_bytes(const struct bench_node_stats *n)
{
    if (n->conns == 0 || n->rss_before_kib < 0 || n->rss_after_kib < 0)
        return -1;
    return (double)(n->rss_after_kib - n->rss_before_kib) * 1024.0 /
           (double)n->conns;
}

static double connect_rate(const struct bench_result *r)
{
    return r->connect_s > 0 ? (double)r->conns_ready / r->connect_s : 0;
}

static const char *action_name(const struct bench_opts *o)
{
    return o->relay ? "relay" : "append";
}

/* ---- table --------------------------------------------------------------- */

static void lat_row(FILE *f, const char *name, const struct bench_hist *h)
{
    if (h->count == 0) {
        fprintf(f, "    %-14s %10s\n", name, "-");
        return;
    }
    fprintf(f, "    %-14s %10llu %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f\n", name,
            (unsigned long long)h->count, bench_hist_mean(h) / 1e6,
            ms(bench_hist_quantile(h, 0.5)), ms(bench_hist_quantile(h, 0.9)),
            ms(bench_hist_quantile(h, 0.99)), ms(bench_hist_quantile(h, 0.999)),
            ms(h->max));
}

void bench_report_table(const struct bench_result *r, bool allow_errors,
                        FILE *f)
{
    const struct bench_opts *o = r->o;
    double s = r->measured_s;
    bool failed = bench_result_failed(r, allow_errors);

    fprintf(f,
            "\ndriftd-bench %s%s%s: %u room(s), %u publisher(s), %u "
            "subscriber(s), %s, %zu B values, %s, %zu node(s)\n",
            o->scenario_name, o->label ? " " : "", o->label ? o->label : "",
            r->rooms, o->publishers, o->subscribers, action_name(o),
            o->value_size, o->msgpack ? "msgpack" : "json", o->n_urls);
    if (o->tls)
        fprintf(f, "  over TLS (wss, https)\n");
    if (o->scenario == BENCH_CONNECTIONS)
        fprintf(f, "  idle; one push per room once connected");
    else if (o->rate > 0)
        fprintf(f, "  rate %.0f pushes/s in total, window %u per publisher",
                o->rate, o->window);
    else if (!o->distinct_keys)
        fprintf(f,
                "  closed loop: at most %u pushes ahead of the slowest "
                "subscriber",
                o->window);
    else
        fprintf(f, "  as fast as acknowledged, window %u per publisher",
                o->window);
    fprintf(f, "; measured %.1f s after %.1f s warm-up\n", s, o->warmup_s);
    fprintf(f, "  connections  %u/%u subscribed in %.2f s (%.0f/s)\n",
            r->conns_ready, r->conns_target, r->connect_s, connect_rate(r));
    fprintf(f,
            "  pushes       sent %llu (%.0f/s), acked %llu (%.0f/s), "
            "errors %llu%s\n",
            (unsigned long long)r->window.sent, per_s(r->window.sent, s),
            (unsigned long long)r->window.acked, per_s(r->window.acked, s),
            (unsigned long long)r->window.errors,
            r->behind ? " (publishers fell behind their rate)" : "");
    fprintf(f, "  deliveries   %llu (%.0f/s)\n",
            (unsigned long long)r->window.deliveries,
            per_s(r->window.deliveries, s));
    fprintf(f, "  latency ms   %10s %8s %8s %8s %8s %8s %8s\n", "count", "mean",
            "p50", "p90", "p99", "p99.9", "max");
    lat_row(f, "push->ack", &r->ack);
    lat_row(f, "push->deliver", &r->deliver);
    lat_row(f, "connect", &r->connect);
    fprintf(f, "  cpu          bench %.0f%%",
            s > 0 ? 100 * r->bench_cpu_s / s : 0);
    if (o->workers > 1)
        fprintf(f, " (%u workers)", o->workers);
    if (r->machine_busy_pct >= 0)
        fprintf(f, ", machine %.0f%% busy of %u CPUs", r->machine_busy_pct,
                r->n_cpus);
    for (size_t i = 0; i < r->n_nodes; i++)
        if (r->nodes[i].cpu_s >= 0)
            fprintf(f, ", node %zu %.0f%%", i + 1,
                    s > 0 ? 100 * r->nodes[i].cpu_s / s : 0);
    fputc('\n', f);
    for (size_t i = 0; i < r->n_nodes; i++) {
        const struct bench_node_stats *n = &r->nodes[i];
        double b = conn_bytes(n);

        if (n->pid <= 0) {
            fprintf(f, "  node %zu       %s: pid unknown (no RSS)\n", i + 1,
                    o->urls[i].hostport);
            continue;
        }
        fprintf(f,
                "  node %zu       %s pid %d: rss %.1f -> %.1f MiB, %u "
                "conns",
                i + 1, o->urls[i].hostport, n->pid, n->rss_before_kib / 1024.0,
                n->rss_after_kib / 1024.0, n->conns);
        if (b >= 0 && o->scenario == BENCH_CONNECTIONS)
            fprintf(f, ", %.1f KiB/conn", b / 1024.0);
        fputc('\n', f);
    }
    if (!failed) {
        fprintf(f, "  check        OK: every acknowledged push reached every "
                   "subscriber once, in order\n");
        return;
    }
    fprintf(f,
            "  check        FAILED: lost %llu, reordered %llu, duplicated "
            "%llu, unacked %llu, closed %llu (slow consumer %llu), "
            "connect failures %llu, bad frames %llu, errors %llu%s\n",
            (unsigned long long)r->lost, (unsigned long long)r->reordered,
            (unsigned long long)r->duplicated, (unsigned long long)r->unacked,
            (unsigned long long)r->unexpected_closes,
            (unsigned long long)r->slow_consumer,
            (unsigned long long)r->connect_failures,
            (unsigned long long)r->bad_frames,
            (unsigned long long)r->total.errors,
            r->drained ? "" : ", drain incomplete");
    if (r->first_failure[0] != '\0')
        fprintf(f, "               first: %s\n", r->first_failure);
}

/* ---- JSON ---------------------------------------------------------------- */

static json_t *lat_json(const struct bench_hist *h)
{
    if (h->count == 0)
        return json_pack("{s:I}", "count", (json_int_t)0);
    return json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "count",
                     (json_int_t)h->count, "mean", bench_hist_mean(h) / 1e6,
                     "min", ms(h->min), "p50", ms(bench_hist_quantile(h, 0.5)),
                     "p90", ms(bench_hist_quantile(h, 0.9)), "p99",
                     ms(bench_hist_quantile(h, 0.99)), "p999",
                     ms(bench_hist_quantile(h, 0.999)), "max", ms(h->max));
}

static json_t *counts_json(const struct bench_counts *c)
{
    return json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "sent", (json_int_t)c->sent, "acked",
        (json_int_t)c->acked, "errors", (json_int_t)c->errors, "deliveries",
        (json_int_t)c->deliveries, "frames_in", (json_int_t)c->frames_in,
        "bytes_in", (json_int_t)c->bytes_in, "stream_sizes",
        (json_int_t)c->stream_sizes);
}

void bench_report_json(const struct bench_result *r, bool allow_errors, FILE *f)
{
    const struct bench_opts *o = r->o;
    double s = r->measured_s, node_cpu = 0, max_b = -1, sum_b = 0;
    size_t n_b = 0;
    bool have_node_cpu = false;
    json_t *root, *urls, *nodes, *params;

    urls = json_array();
    nodes = json_array();
    for (size_t i = 0; i < r->n_nodes; i++) {
        const struct bench_node_stats *n = &r->nodes[i];
        double b = conn_bytes(n);
        json_t *j;

        json_array_append_new(urls, json_string(o->urls[i].hostport));
        j = json_pack("{s:s,s:i,s:b,s:i}", "url", o->urls[i].hostport, "pid",
                      n->pid, "pid_from_port", o->urls[i].pid_from_port,
                      "connections", (int)n->conns);
        if (n->rss_before_kib >= 0)
            json_object_set_new(j, "rss_before_kib",
                                json_integer(n->rss_before_kib));
        if (n->rss_after_kib >= 0)
            json_object_set_new(j, "rss_after_kib",
                                json_integer(n->rss_after_kib));
        /* Memory per connection means something only when connections
         * are all that was added: the connections scenario. */
        if (b >= 0 && o->scenario == BENCH_CONNECTIONS) {
            json_object_set_new(j, "bytes_per_conn", json_real(b));
            if (b > max_b)
                max_b = b;
            sum_b += b;
            n_b++;
        }
        if (n->cpu_s >= 0) {
            json_object_set_new(j, "cpu_s", json_real(n->cpu_s));
            json_object_set_new(j, "cpu_pct",
                                json_real(s > 0 ? 100 * n->cpu_s / s : 0));
            node_cpu += n->cpu_s;
            have_node_cpu = true;
        }
        json_array_append_new(nodes, j);
    }
    params = json_pack("{s:o,s:i,s:i,s:i,s:i,s:f,s:I,s:s,s:b,s:f,s:f,s:I}",
                       "urls", urls, "rooms", (int)r->rooms, "publishers",
                       (int)o->publishers, "subscribers", (int)o->subscribers,
                       "window", (int)o->window, "rate", o->rate, "value_size",
                       (json_int_t)o->value_size, "action", action_name(o),
                       "distinct_keys", o->distinct_keys, "duration_s",
                       o->duration_s, "warmup_s", o->warmup_s,
                       "max_per_publisher", (json_int_t)o->max_per_pub);
    root =
        json_pack("{s:s,s:s,s:s,s:b,s:s,s:o,s:f}", "label",
                  o->label ? o->label : o->scenario_name, "scenario",
                  o->scenario_name, "format", o->msgpack ? "msgpack" : "json",
                  "ok", !bench_result_failed(r, allow_errors), "failure",
                  r->first_failure, "params", params, "measured_s", s);
    json_object_set_new(root, "tls", json_boolean(o->tls));
    /* processes of the tool; cpu.bench_* is the sum over them */
    json_object_set_new(root, "workers", json_integer(o->workers));
    json_object_set_new(root, "connections",
                        json_pack("{s:i,s:i,s:f,s:f,s:o}", "target",
                                  (int)r->conns_target, "ready",
                                  (int)r->conns_ready, "connect_s",
                                  r->connect_s, "connect_rate", connect_rate(r),
                                  "connect_latency_ms", lat_json(&r->connect)));
    json_object_set_new(root, "pushes",
                        json_pack("{s:I,s:I,s:I,s:f,s:f,s:I}", "sent",
                                  (json_int_t)r->window.sent, "acked",
                                  (json_int_t)r->window.acked, "errors",
                                  (json_int_t)r->window.errors, "sent_per_s",
                                  per_s(r->window.sent, s), "acked_per_s",
                                  per_s(r->window.acked, s), "behind_schedule",
                                  (json_int_t)r->behind));
    json_object_set_new(root, "deliveries",
                        json_pack("{s:I,s:f}", "count",
                                  (json_int_t)r->window.deliveries, "per_s",
                                  per_s(r->window.deliveries, s)));
    json_object_set_new(root, "ack_latency_ms", lat_json(&r->ack));
    json_object_set_new(root, "deliver_latency_ms", lat_json(&r->deliver));
    json_object_set_new(root, "window", counts_json(&r->window));
    json_object_set_new(root, "totals", counts_json(&r->total));
    json_object_set_new(
        root, "check",
        json_pack("{s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:b,s:b}", "ok",
                  !bench_result_failed(r, allow_errors), "lost",
                  (json_int_t)r->lost, "reordered", (json_int_t)r->reordered,
                  "duplicated", (json_int_t)r->duplicated, "unacked",
                  (json_int_t)r->unacked, "errors", (json_int_t)r->total.errors,
                  "unexpected_closes", (json_int_t)r->unexpected_closes,
                  "slow_consumer_closes", (json_int_t)r->slow_consumer,
                  "connect_failures", (json_int_t)r->connect_failures,
                  "bad_frames", (json_int_t)r->bad_frames, "drained",
                  r->drained, "interrupted", r->interrupted));
    json_object_set_new(root, "cpu",
                        json_pack("{s:f,s:f}", "bench_s", r->bench_cpu_s,
                                  "bench_pct",
                                  s > 0 ? 100 * r->bench_cpu_s / s : 0));
    if (o->workers > 1) {
        /* bench_s is the parent's CPU plus these */
        json_t *w = json_array();

        for (unsigned i = 0; i < o->workers && i < BENCH_MAX_WORKERS; i++)
            json_array_append_new(w, json_real(r->worker_cpu_s[i]));
        json_object_set_new(json_object_get(root, "cpu"), "bench_workers_s", w);
    }
    if (r->machine_busy_pct >= 0) {
        json_t *cpu = json_object_get(root, "cpu");

        json_object_set_new(cpu, "machine_busy_pct",
                            json_real(r->machine_busy_pct));
        json_object_set_new(cpu, "machine_cpus", json_integer(r->n_cpus));
    }
    if (have_node_cpu) {
        json_t *cpu = json_object_get(root, "cpu");

        json_object_set_new(cpu, "nodes_s", json_real(node_cpu));
        json_object_set_new(cpu, "nodes_pct",
                            json_real(s > 0 ? 100 * node_cpu / s : 0));
    }
    json_object_set_new(root, "nodes", nodes);
    if (n_b > 0)
        json_object_set_new(root, "memory",
                            json_pack("{s:f,s:f}", "bytes_per_conn_max", max_b,
                                      "bytes_per_conn_mean",
                                      sum_b / (double)n_b));
    json_dumpf(root, f,
               JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    fputc('\n', f);
    json_decref(root);
}

/* ---- `driftd-bench report` ----------------------------------------------- */

struct metric {
    const char *name;
    const char *path[3];
};

static const struct metric metrics[] = {
    {"acked pushes/s", {"pushes", "acked_per_s"}},
    {"deliveries/s", {"deliveries", "per_s"}},
    {"push->ack p50 ms", {"ack_latency_ms", "p50"}},
    {"push->ack p99 ms", {"ack_latency_ms", "p99"}},
    {"push->ack p99.9 ms", {"ack_latency_ms", "p999"}},
    {"push->ack max ms", {"ack_latency_ms", "max"}},
    {"push->deliver p50 ms", {"deliver_latency_ms", "p50"}},
    {"push->deliver p99 ms", {"deliver_latency_ms", "p99"}},
    {"push->deliver p99.9 ms", {"deliver_latency_ms", "p999"}},
    {"push->deliver max ms", {"deliver_latency_ms", "max"}},
    {"connections", {"connections", "ready"}},
    {"connects/s", {"connections", "connect_rate"}},
    {"connect p50 ms", {"connections", "connect_latency_ms", "p50"}},
    {"connect p99 ms", {"connections", "connect_latency_ms", "p99"}},
    {"node bytes/conn (max node)", {"memory", "bytes_per_conn_max"}},
    {"bench CPU %", {"cpu", "bench_pct"}},
    {"nodes CPU % (sum)", {"cpu", "nodes_pct"}},
    {"machine busy %", {"cpu", "machine_busy_pct"}},
};

#define N_METRICS (sizeof(metrics) / sizeof(metrics[0]))

static bool metric_value(json_t *run, const struct metric *m, double *out)
{
    json_t *j = run;

    for (int i = 0; i < 3 && m->path[i] != NULL; i++)
        j = json_object_get(j, m->path[i]);
    if (!json_is_number(j))
        return false;
    *out = json_number_value(j);
    return true;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static void fmt_num(char *buf, size_t cap, double v)
{
    if (fabs(v) >= 1000)
        snprintf(buf, cap, "%.0f", v);
    else if (fabs(v) >= 10)
        snprintf(buf, cap, "%.1f", v);
    else
        snprintf(buf, cap, "%.3f", v);
}

static void report_group(json_t *runs, const char *label, bool as_json,
                         json_t *out)
{
    size_t n = json_array_size(runs), ok = 0;
    json_t *first = json_array_get(runs, 0), *g = NULL;
    double *vals = calloc(n, sizeof(*vals));

    if (vals == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        if (json_is_true(json_object_get(json_array_get(runs, i), "ok")))
            ok++;
    if (as_json) {
        g = json_pack("{s:s,s:O,s:i,s:i}", "label", label, "params",
                      json_object_get(first, "params"), "runs", (int)n, "ok",
                      (int)ok);
    } else {
        json_t *p = json_object_get(first, "params");

        printf("\n### %s\n\n", label);
        printf("`%s`: %d room(s), %d publisher(s), %d subscriber(s), %s, "
               "%d B values, %s, ",
               json_string_value(json_object_get(first, "scenario")),
               (int)json_integer_value(json_object_get(p, "rooms")),
               (int)json_integer_value(json_object_get(p, "publishers")),
               (int)json_integer_value(json_object_get(p, "subscribers")),
               json_string_value(json_object_get(p, "action")),
               (int)json_integer_value(json_object_get(p, "value_size")),
               json_string_value(json_object_get(first, "format")));
        if (json_number_value(json_object_get(p, "rate")) > 0)
            printf("rate %.0f/s, ",
                   json_number_value(json_object_get(p, "rate")));
        printf("window %d, ",
               (int)json_integer_value(json_object_get(p, "window")));
        if (json_integer_value(json_object_get(first, "workers")) > 1)
            printf("%d tool workers, ",
                   (int)json_integer_value(json_object_get(first, "workers")));
        printf("%.0f s measured\n\n",
               json_number_value(json_object_get(p, "duration_s")));
        printf("runs: %zu, check passed: %zu\n\n", n, ok);
        printf("| figure | median | min | max |\n|---|---:|---:|---:|\n");
    }
    for (size_t m = 0; m < N_METRICS; m++) {
        size_t k = 0;

        for (size_t i = 0; i < n; i++)
            if (metric_value(json_array_get(runs, i), &metrics[m], &vals[k]))
                k++;
        if (k == 0)
            continue;
        qsort(vals, k, sizeof(*vals), cmp_double);
        if (vals[0] == 0 && vals[k - 1] == 0)
            continue; /* e.g. deliveries of a run without subscribers */
        {
            double med =
                k % 2 ? vals[k / 2] : (vals[k / 2 - 1] + vals[k / 2]) / 2;

            if (as_json) {
                json_object_set_new(g, metrics[m].name,
                                    json_pack("{s:f,s:f,s:f,s:i}", "median",
                                              med, "min", vals[0], "max",
                                              vals[k - 1], "n", (int)k));
            } else {
                char a[32], b[32], c[32];

                fmt_num(a, sizeof(a), med);
                fmt_num(b, sizeof(b), vals[0]);
                fmt_num(c, sizeof(c), vals[k - 1]);
                printf("| %s | %s | %s | %s |\n", metrics[m].name, a, b, c);
            }
        }
    }
    if (as_json)
        json_array_append_new(out, g);
    free(vals);
}

/* --median FIGURE: one number, the median over every run given. */
static int print_median(json_t *groups, json_t *order, const char *figure)
{
    const struct metric *m = NULL;
    double vals[1024];
    size_t k = 0;

    for (size_t i = 0; i < N_METRICS; i++)
        if (strcmp(metrics[i].name, figure) == 0)
            m = &metrics[i];
    if (m == NULL) {
        fprintf(stderr, "driftd-bench report: no figure \"%s\"\n", figure);
        return 2;
    }
    for (size_t g = 0; g < json_array_size(order); g++) {
        json_t *runs = json_object_get(
            groups, json_string_value(json_array_get(order, g)));

        for (size_t i = 0; i < json_array_size(runs) && k < 1024; i++)
            if (metric_value(json_array_get(runs, i), m, &vals[k]))
                k++;
    }
    if (k == 0)
        return 1;
    qsort(vals, k, sizeof(*vals), cmp_double);
    printf("%.3f\n", k % 2 ? vals[k / 2] : (vals[k / 2 - 1] + vals[k / 2]) / 2);
    return 0;
}

int bench_report_main(int argc, char **argv)
{
    json_t *groups = json_object(), *order = json_array(), *out = NULL;
    bool as_json = false;
    const char *median = NULL;
    int rv = 0;

    for (int i = 1; i < argc; i++) {
        FILE *f;
        json_error_t err;
        json_t *run;

        if (strcmp(argv[i], "--json") == 0) {
            as_json = true;
            continue;
        }
        if (strcmp(argv[i], "--median") == 0 && i + 1 < argc) {
            median = argv[++i];
            continue;
        }
        f = fopen(argv[i], "r");
        if (f == NULL) {
            fprintf(stderr, "driftd-bench report: %s: cannot open\n", argv[i]);
            rv = 2;
            continue;
        }
        /* one result per file, or several one after the other */
        while ((run = json_loadf(f, JSON_DISABLE_EOF_CHECK, &err)) != NULL) {
            const char *label =
                json_string_value(json_object_get(run, "label"));
            json_t *list;

            if (label == NULL)
                label = "unlabelled";
            list = json_object_get(groups, label);
            if (list == NULL) {
                list = json_array();
                json_object_set_new(groups, label, list);
                json_array_append_new(order, json_string(label));
            }
            json_array_append_new(list, run);
        }
        fclose(f);
    }
    if (json_array_size(order) == 0) {
        fprintf(stderr, "usage: driftd-bench report [--json | --median "
                        "FIGURE] RESULT.json...\n");
        json_decref(groups);
        json_decref(order);
        return 2;
    }
    if (median != NULL) {
        rv = print_median(groups, order, median);
        json_decref(groups);
        json_decref(order);
        return rv;
    }
    if (as_json)
        out = json_array();
    for (size_t i = 0; i < json_array_size(order); i++) {
        const char *label = json_string_value(json_array_get(order, i));

        report_group(json_object_get(groups, label), label, as_json, out);
    }
    if (as_json) {
        json_dumpf(out, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
        json_decref(out);
    }
    json_decref(groups);
    json_decref(order);
    return rv;
}
