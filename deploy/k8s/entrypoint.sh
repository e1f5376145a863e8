#!/usr/bin/env bash
# driftd in a Kubernetes StatefulSet (deploy/k8s/driftd.yaml); the image
# installs it as /usr/local/bin/driftd-k8s-entrypoint.
#
# Pod NAME-N is node N+1. Its stable DNS name through the headless service,
# NAME-N.SERVICE.NAMESPACE.svc.DOMAIN, is its raft address (port 9080) and
# its advertised HTTP address (port 8080); it listens on all addresses.
#   - Pod 0 on an empty volume bootstraps a one-voter cluster, unless another
#     pod already answers as part of a cluster (pod 0's volume was lost): it
#     then starts with --join like the others.
#   - Every other pod starts with --join and, in the background, asks the
#     cluster (through pod 0, else the client service) to add it with
#     `driftctl add ID RAFT`, retrying until it is a member; a pod that is
#     already a member (a restart) skips that.
#   - On a volume that has data, --bootstrap and --join do nothing: the node
#     resumes.
# SIGTERM (pod deletion) goes to driftd, which stops cleanly; the script
# exits with driftd's status.
#
# Not done here: removing a member when the StatefulSet is scaled down
# (`driftctl remove ID`, see docs/operations.md), and re-adding a pod whose
# volume was lost while it is still a member (remove it first).
#
# Environment: POD_NAME, POD_NAMESPACE (downward API); DRIFTD_SERVICE
# (headless service, default driftd-headless), DRIFTD_CLIENT_SERVICE
# (default driftd), CLUSTER_DOMAIN (cluster.local), DRIFTD_EXTRA_ARGS (more
# driftd flags, split at spaces), DRIFTD_SECRETS (default /etc/driftd/secrets:
# files cluster-key and admin-token), DRIFTD_DATA (/var/lib/driftd/data),
# DRIFTD_LISTEN (0.0.0.0), DRIFTD_HTTP_PORT (8080), DRIFTD_RAFT_PORT (9080);
# DRIFTD and DRIFTCTL, the binaries (tests/blackbox/deploy.test.mjs runs
# this script against local processes with these).
set -uo pipefail

: "${POD_NAME:?POD_NAME is not set (downward API)}"
: "${POD_NAMESPACE:?POD_NAMESPACE is not set (downward API)}"
SERVICE=${DRIFTD_SERVICE:-driftd-headless}
CLIENT_SERVICE=${DRIFTD_CLIENT_SERVICE:-driftd}
SECRETS=${DRIFTD_SECRETS:-/etc/driftd/secrets}
DATA=${DRIFTD_DATA:-/var/lib/driftd/data}
DRIFTD=${DRIFTD:-/usr/local/bin/driftd}
DRIFTCTL=${DRIFTCTL:-/usr/local/bin/driftctl}
LISTEN=${DRIFTD_LISTEN:-0.0.0.0}
HTTP_PORT=${DRIFTD_HTTP_PORT:-8080}
RAFT_PORT=${DRIFTD_RAFT_PORT:-9080}

ordinal=${POD_NAME##*-}
if [[ ! "$ordinal" =~ ^[0-9]+$ ]]; then
    echo "entrypoint: cannot read an ordinal from POD_NAME=$POD_NAME" >&2
    exit 2
fi
id=$((ordinal + 1))
domain="$SERVICE.$POD_NAMESPACE.svc.${CLUSTER_DOMAIN:-cluster.local}"
self="$POD_NAME.$domain"
raft="$self:$RAFT_PORT"
first="http://${POD_NAME%-*}-0.$domain:$HTTP_PORT"
client="http://$CLIENT_SERVICE.$POD_NAMESPACE.svc.${CLUSTER_DOMAIN:-cluster.local}:$HTTP_PORT"
ctl=("$DRIFTCTL" --token-file "$SECRETS/admin-token")

log() { echo "entrypoint: $*" >&2; }

# driftd binds its raft address by name: wait for the headless service's
# record of this pod (publishNotReadyAddresses makes it appear at once).
for _ in $(seq 1 120); do
    getent hosts "$self" >/dev/null && break
    sleep 1
done

empty=1
[[ -d "$DATA" && -n "$(ls -A "$DATA" 2>/dev/null)" ]] && empty=0

# Is node $1 a member of the cluster that $2 answers for? (its id in the
# first column of driftctl status' table)
is_member() {
    "${ctl[@]}" --server "$2" status 2>/dev/null |
        awk -v id="$1" '$1 == id { found = 1 } END { exit !found }'
}

# Does any other pod of the set answer as part of a cluster?
cluster_exists() {
    "${ctl[@]}" --server "$client" status >/dev/null 2>&1
}

join=1
if (( ordinal == 0 && empty )) && ! cluster_exists; then
    join=0
fi

args=(--id "$id" --http "$LISTEN:$HTTP_PORT" --advertise "$self:$HTTP_PORT"
      --raft "$raft" --data "$DATA"
      --cluster-key-file "$SECRETS/cluster-key"
      --admin-token-file "$SECRETS/admin-token")
if (( join )); then
    args+=(--join)
else
    args+=(--bootstrap "$id=$raft")
fi
# shellcheck disable=SC2206  # split at spaces on purpose
args+=(${DRIFTD_EXTRA_ARGS:-})

log "node $id: $DRIFTD ${args[*]}"
"$DRIFTD" "${args[@]}" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT

# Until this node is a member: through pod 0, else any ready pod.
add_self() {
    local server
    while kill -0 "$pid" 2>/dev/null; do
        for server in "$first" "$client"; do
            if is_member "$id" "$server"; then
                log "node $id is a member"
                return 0
            fi
            if "${ctl[@]}" --server "$server" add "$id" "$raft"; then
                return 0
            fi
        done
        sleep 2
    done
}
if (( join )) && (( empty )); then
    add_self &
fi

# wait returns early when the trap runs: wait until driftd is gone, then
# once more for its status (bash keeps it).
while kill -0 "$pid" 2>/dev/null; do
    wait "$pid"
done
wait "$pid"
exit $?
