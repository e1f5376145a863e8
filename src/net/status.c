/*
 * status.c - GET /cluster/status: this node's view of the cluster as JSON.
 *
 * {"id", "role", "leader": {"id", "http"} | null, "term", "commit_index",
 *  "applied_index", "last_index", "config_index", "queued", "ready",
 *  "not_ready" (why not,
 *  or null), "disk_full",
 *  "nodes": [{"id", "role", "raft", "http", "match_index" (leader only)}]}
 *
 * Built with jansson: it is an operator's endpoint, not a hot path.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "internal.h"

static void add_member(void *arg, const struct cons_member *m)
{
    json_t *nodes = arg;
    json_t *o = json_object();

    if (o == NULL)
        return;
    json_object_set_new(o, "id", json_integer(m->id));
    json_object_set_new(o, "role", json_string(m->role));
    json_object_set_new(o, "raft", json_string(m->raft_addr));
    json_object_set_new(o, "http",
                        m->http_addr != NULL ? json_string(m->http_addr)
                                             : json_null());
    if (m->has_match)
        json_object_set_new(o, "match_index",
                            json_integer((json_int_t)m->match_index));
    json_array_append_new(nodes, o);
}

char *net__cluster_status_json(struct net_server *s, size_t *len)
{
    struct cons_status st;
    json_t *root, *nodes, *leader = NULL;
    const char *why;
    char *text;

    cons_node_status(s->cons, &st);
    root = json_object();
    nodes = json_array();
    if (root == NULL || nodes == NULL) {
        json_decref(root);
        json_decref(nodes);
        return NULL;
    }
    if (st.leader_id != 0) {
        const char *http = cons_node_http_addr(s->cons, st.leader_id);

        leader = json_object();
        json_object_set_new(leader, "id", json_integer(st.leader_id));
        json_object_set_new(leader, "http",
                            http != NULL ? json_string(http) : json_null());
    }
    json_object_set_new(root, "id", json_integer(st.id));
    json_object_set_new(root, "role",
                        json_string(st.role != NULL ? st.role : "unavailable"));
    json_object_set_new(root, "leader", leader != NULL ? leader : json_null());
    json_object_set_new(root, "term", json_integer((json_int_t)st.term));
    json_object_set_new(root, "commit_index",
                        json_integer((json_int_t)st.commit_index));
    json_object_set_new(root, "applied_index",
                        json_integer((json_int_t)st.applied_index));
    json_object_set_new(root, "last_index",
                        json_integer((json_int_t)st.last_index));
    json_object_set_new(root, "config_index",
                        json_integer((json_int_t)st.config_index));
    json_object_set_new(root, "queued", json_integer((json_int_t)st.queued));
    why = cons_node_not_ready(s->cons);
    json_object_set_new(root, "ready", json_boolean(why == NULL));
    json_object_set_new(root, "not_ready",
                        why != NULL ? json_string(why) : json_null());
    json_object_set_new(root, "disk_full",
                        json_boolean(cons_node_disk_fault(s->cons) != NULL));
    cons_node_members(s->cons, add_member, nodes);
    json_object_set_new(root, "nodes", nodes);
    text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (text != NULL)
        *len = strlen(text);
    return text;
}
