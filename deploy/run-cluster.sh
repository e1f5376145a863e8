#!/usr/bin/env bash
# Starts a local 3-node driftd cluster on loopback (what `make run` runs) and
# stops it cleanly on Ctrl-C. Builds nothing.
#
#   deploy/run-cluster.sh                      # build/driftd, data in ./driftd-data
#   DRIFTD=/path/to/driftd DATA_ROOT=/tmp/dd deploy/run-cluster.sh
#   deploy/run-cluster.sh /path/to/driftd      # same as DRIFTD=...
#
# Node i (1..3): --id i, client HTTP/WebSocket on 127.0.0.1:808(i-1)
# (8080, 8081, 8082), raft on 127.0.0.1:908(i-1) (9080, 9081, 9082), data in
# ${DATA_ROOT:-driftd-data}/node$i. All three get the same --bootstrap list;
# it only acts on an empty data folder, so running this again resumes the same
# cluster with its rooms. Extra driftd flags for every node: $DRIFTD_ARGS
# (e.g. DRIFTD_ARGS="--log-level debug").
#
# A closed cluster by default: a cluster key ($DATA_ROOT/cluster.key, made
# with driftctl keygen) authenticates the raft and forward links, and an
# admin token ($DATA_ROOT/admin.token) guards the admin API; both are made on
# the first run and kept, so later runs resume the same cluster. driftctl
# reads the token with DRIFTCTL_TOKEN_FILE=$DATA_ROOT/admin.token.
# DRIFTD_OPEN=1: neither (loopback-only open mode).
#
# Logs: each node's stdout and stderr go to this script's stderr, every line
# prefixed with "[node$i] ", and are appended unprefixed to
# $DATA_ROOT/node$i.log.
#
# Ctrl-C (SIGINT) or SIGTERM: SIGTERM to the three driftd processes this script
# started (by PID), wait for them. In a terminal, Ctrl-C sends SIGINT to the
# whole process group, the nodes included: each stops cleanly on its own and
# exits 0, which is what the script reports. A node that exits 0 was asked to
# stop (driftd exits 0 only after SIGTERM or SIGINT): "stopped", not an error.
# A node that exits non-zero or dies of a signal is reported as exited
# unexpectedly (with its status) and the other two keep running: a 3-node
# cluster keeps working with one node down. The script ends when no node is
# left, with one summary line and exit status 0 when every node stopped
# cleanly, 1 otherwise.
#
# Ports: HTTP_PORT_BASE (8080) and RAFT_PORT_BASE (9080) move the three
# nodes to BASE, BASE+1, BASE+2 (tests run the script on free ports).
set -uo pipefail

DRIFTD=${1:-${DRIFTD:-build/driftd}}
DATA_ROOT=${DATA_ROOT:-driftd-data}
read -r -a EXTRA <<< "${DRIFTD_ARGS:-}"

if [[ ! -x "$DRIFTD" ]]; then
    echo "run-cluster: $DRIFTD is not an executable driftd (build it first: make build, or set DRIFTD=)" >&2
    exit 1
fi

HTTP_BASE=${HTTP_PORT_BASE:-8080}
RAFT_BASE=${RAFT_PORT_BASE:-9080}
BOOTSTRAP=1=127.0.0.1:$RAFT_BASE,2=127.0.0.1:$((RAFT_BASE + 1)),3=127.0.0.1:$((RAFT_BASE + 2))
DRIFTCTL=${DRIFTCTL:-$(dirname "$DRIFTD")/driftctl}

mkdir -p "$DATA_ROOT" || exit 1
SECURE=()
if [[ "${DRIFTD_OPEN:-0}" != 1 ]]; then
    key="$DATA_ROOT/cluster.key"
    token="$DATA_ROOT/admin.token"
    if [[ ! -f "$key" ]]; then
        if [[ -x "$DRIFTCTL" ]]; then
            "$DRIFTCTL" keygen "$key" || exit 1
        else
            (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$key" && echo >> "$key") || exit 1
        fi
    fi
    if [[ ! -f "$token" ]]; then
        (umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > "$token" && echo >> "$token") || exit 1
    fi
    SECURE=(--cluster-key-file "$key" --admin-token-file "$token")
fi
declare -A PIDS=()    # node id -> driftd pid
declare -A NODE_OF=() # driftd pid -> node id

log() { echo "run-cluster: $*" >&2; }

for i in 1 2 3; do
    http="127.0.0.1:$((HTTP_BASE + i - 1))"
    raft="127.0.0.1:$((RAFT_BASE + i - 1))"
    dir="$DATA_ROOT/node$i"
    mkdir -p "$dir" || exit 1
    # The log filter ignores SIGINT/SIGTERM: it must outlive its node, which
    # still logs while it shuts down.
    "$DRIFTD" --id "$i" --http "$http" --raft "$raft" --data "$dir" \
        --bootstrap "$BOOTSTRAP" "${SECURE[@]}" "${EXTRA[@]}" \
        > >(trap '' INT TERM; tee -a "$DATA_ROOT/node$i.log" | sed -u "s/^/[node$i] /" >&2) 2>&1 &
    pid=$!
    PIDS[$i]=$pid
    NODE_OF[$pid]=$i
    log "node $i (pid $pid): http://$http  ws://$http/room/ID/connect  (raft $raft, data $dir)"
done

stopping=0
clean=0  # nodes that exited 0
failed=() # "node I (status N)" of the others
# shellcheck disable=SC2317  # invoked by the trap below
stop_all() {
    stopping=1
    (( ${#PIDS[@]} )) || return 0
    log "stopping: SIGTERM to ${PIDS[*]}"
    for i in "${!PIDS[@]}"; do kill -TERM "${PIDS[$i]}" 2>/dev/null; done
}
trap stop_all INT TERM

if command -v curl >/dev/null; then
    for _ in $(seq 1 100); do
        (( stopping )) && break
        curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$HTTP_BASE/healthz" && {
            log "cluster ready (a leader is elected). Try: curl -X POST http://127.0.0.1:$HTTP_BASE/new"
            (( ${#SECURE[@]} )) && log "admin: DRIFTCTL_TOKEN_FILE=$DATA_ROOT/admin.token $DRIFTCTL status"
            log "Ctrl-C stops the three nodes."
            break
        }
        sleep 0.2
    done
fi

# One node's end: its status says what it was (see the top of this file).
# shellcheck disable=SC2317
reaped() {
    local i=$1 pid=$2 rc=$3
    unset "PIDS[$i]"
    if (( rc == 0 )); then
        log "node $i stopped (exit 0)"
        clean=$((clean + 1))
    elif (( stopping )); then
        log "node $i stopped with exit status $rc (log: $DATA_ROOT/node$i.log)"
        failed+=("node $i (status $rc)")
    else
        log "node $i (pid $pid) exited unexpectedly with status $rc; the others keep running (log: $DATA_ROOT/node$i.log)"
        failed+=("node $i (status $rc)")
    fi
}

# Reap nodes as they exit, until none is left. With Ctrl-C in a terminal the
# nodes' own SIGINT and the trap race: a node may be reaped before the trap
# has run, so what a node's exit means comes from its status alone.
while (( ${#PIDS[@]} > 0 )); do
    # A node that died while bash ran a foreground command (the health
    # check's curl or sleep) was reaped then, and `wait -n` no longer knows
    # it (it would wait for the others only), but a plain `wait PID` still
    # returns its status: look for such nodes by PID before each wait -n.
    for i in "${!PIDS[@]}"; do
        pid=${PIDS[$i]}
        kill -0 "$pid" 2>/dev/null && continue
        wait "$pid"
        reaped "$i" "$pid" "$?"
    done
    (( ${#PIDS[@]} > 0 )) || break
    exited=""
    wait -n -p exited "${PIDS[@]}"
    rc=$?
    # No pid: a trapped signal interrupted wait (stop_all ran); keep reaping.
    if [[ -n "${exited:-}" && -n "${NODE_OF[$exited]:-}" ]]; then
        reaped "${NODE_OF[$exited]}" "$exited" "$rc"
    fi
done
if (( ${#failed[@]} == 0 )); then
    log "all $clean nodes stopped cleanly"
    exit 0
fi
log "$clean of 3 nodes stopped cleanly; failed: ${failed[*]}"
exit 1
