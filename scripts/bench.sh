#!/usr/bin/env bash
# Runs the standard benchmark set against a local 3-node driftd cluster on
# loopback and writes the results table (what `make bench` runs).
#
#   scripts/bench.sh [BUILD_DIR]        # default build/
#   RUNS=5 scripts/bench.sh             # runs per scenario (default 3)
#   QUICK=1 scripts/bench.sh            # 1 short run each, small counts
#   SCENARIOS="ingest fanout" scripts/bench.sh
#   SECURITY=tls scripts/bench.sh       # the same over TLS (see below)
#
# Every run gets a fresh cluster (empty data dirs under $OUT/NAME-N/data;
# node i: HTTP 127.0.0.1:$((BASE_PORT+i)), raft 127.0.0.1:$((BASE_PORT+100+i)),
# the same --bootstrap list, /healthz polled until 200), stopped with SIGTERM
# afterwards: runs do not inherit each other's retained data (snapshots grow
# with it) nor memory (the connections figure is an RSS difference, and
# glibc keeps what a node freed).
#
# Output in $OUT (default $BUILD/bench/YYYYmmdd-HHMMSS): one JSON result per
# run (NAME-N.json; connections: NAME-N-nodeI.json, one tool process per
# node), each node's log (NAME-N/nodeI.log), commands.txt, and
# results.md: median, min and max over the runs (driftd-bench report).
# Exit status: 0 when every run passed its loss/order check, 1 otherwise.
#
# SECURITY selects what protects the cluster (the material is made here,
# in $OUT/security, with driftctl keygen and the openssl command line: a
# throwaway CA and one certificate for 127.0.0.1, used by every node):
#   open  no cluster key, plain HTTP/WebSocket and raft (the default)
#   key   a cluster key on every node (--cluster-key-file): raft links and
#         forward links authenticate with it
#   tls   key + TLS on the client port (--tls-cert/--tls-key: the tool
#         speaks https and wss, --cacert) and on forward links (--peer-ca)
#   mtls  tls + mutual TLS on raft links (--peer-cert/--peer-key/--peer-ca)
#
# Environment: BUILD, DRIFTD, DRIFTCTL, BENCH (binaries), OUT, RUNS, QUICK,
# DURATION, WARMUP, SCENARIOS, SECURITY, BASE_PORT (18180), DRIFTD_ARGS
# (extra node flags), BENCH_ARGS (extra driftd-bench flags, e.g.
# --msgpack), LATENCY_RATE (the latency scenario's rate instead of 10% of
# the ingest median), CONNS (connections per node in that scenario).
set -uo pipefail

BUILD=${1:-${BUILD:-build}}
DRIFTD=${DRIFTD:-$BUILD/driftd}
BENCH=${BENCH:-$BUILD/driftd-bench}
DRIFTCTL=${DRIFTCTL:-$BUILD/driftctl}
SECURITY=${SECURITY:-open}
QUICK=${QUICK:-0}
BASE_PORT=${BASE_PORT:-18180}
if [[ $QUICK == 1 ]]; then
    RUNS=${RUNS:-1}
    DURATION=${DURATION:-3}
    WARMUP=${WARMUP:-1}
else
    RUNS=${RUNS:-3}
    DURATION=${DURATION:-10}
    WARMUP=${WARMUP:-2}
fi
SCENARIOS=${SCENARIOS:-"ingest latency fanout rooms connections"}
OUT=${OUT:-$BUILD/bench/$(date +%Y%m%d-%H%M%S)}
read -r -a EXTRA_NODE <<< "${DRIFTD_ARGS:-}"
read -r -a EXTRA_BENCH <<< "${BENCH_ARGS:-}"

log() { echo "bench.sh: $*" >&2; }

case $SECURITY in
open | key | tls | mtls) ;;
*)
    log "unknown SECURITY=$SECURITY (open key tls mtls)"
    exit 2
    ;;
esac
bins=("$DRIFTD" "$BENCH")
[[ $SECURITY != open ]] && bins+=("$DRIFTCTL")
for bin in "${bins[@]}"; do
    if [[ ! -x $bin ]]; then
        log "$bin is missing: build first (make build, or cmake --build $BUILD --target driftd driftctl driftd-bench)"
        exit 2
    fi
done
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)

# The cluster key and certificates of this invocation, and the flags they
# give the nodes (SEC_NODE) and the tool (SEC_BENCH).
SCHEME=http
SEC_DIR="$OUT/security"
CA=
declare -a SEC_NODE=() SEC_BENCH=()
make_security() {
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
    mkdir -p "$SEC_DIR" || return 1
    "$DRIFTCTL" keygen "$SEC_DIR/cluster.key" > /dev/null || return 1
    SEC_NODE=(--cluster-key-file "$SEC_DIR/cluster.key")
    [[ $SECURITY == key ]] && return 0
    (
        cd "$SEC_DIR" &&
            openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 \
                -subj "/CN=driftd bench CA" &&
            openssl req "${ec[@]}" -keyout node.key -out node.csr \
                -subj "/CN=127.0.0.1" &&
            printf 'subjectAltName=IP:127.0.0.1\n' > node.ext &&
            openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key \
                -CAcreateserial -out node.pem -days 2 -extfile node.ext &&
            chmod 600 ca.key node.key
    ) > "$SEC_DIR/openssl.log" 2>&1 || {
        log "making certificates failed; see $SEC_DIR/openssl.log"
        return 1
    }
    CA="$SEC_DIR/ca.pem"
    SCHEME=https
    SEC_NODE+=(--tls-cert "$SEC_DIR/node.pem" --tls-key "$SEC_DIR/node.key"
        --peer-ca "$CA")
    [[ $SECURITY == mtls ]] &&
        SEC_NODE+=(--peer-cert "$SEC_DIR/node.pem" --peer-key "$SEC_DIR/node.key")
    SEC_BENCH=(--cacert "$CA")
}
if [[ $SECURITY != open ]]; then
    make_security || exit 2
fi

# 10,000 connections per node, and the tool holds all 30,000 of them.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

URLS="$SCHEME://127.0.0.1:$((BASE_PORT + 1)),$SCHEME://127.0.0.1:$((BASE_PORT + 2)),$SCHEME://127.0.0.1:$((BASE_PORT + 3))"
BOOTSTRAP="1=127.0.0.1:$((BASE_PORT + 101)),2=127.0.0.1:$((BASE_PORT + 102)),3=127.0.0.1:$((BASE_PORT + 103))"
declare -a PIDS=()
CLUSTER_DIR=

# GET /healthz answered 200? (bash's /dev/tcp, or openssl s_client over
# TLS, verifying the node against our CA: no curl needed)
healthy() { # PORT
    local line=
    if [[ $SCHEME == https ]]; then
        line=$(printf 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$1" |
            timeout 3 openssl s_client -quiet -connect "127.0.0.1:$1" \
                -CAfile "$CA" -verify_return_error -verify_ip 127.0.0.1 2> /dev/null |
            head -1)
        [[ $line == "HTTP/1."?" 200"* ]]
        return
    fi
    { exec 3<> "/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    printf 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$1" >&3
    read -r -t 2 line <&3
    exec 3<&- 3>&-
    [[ $line == "HTTP/1."?" 200"* ]]
}

start_cluster() { # NAME
    local name=$1 i
    CLUSTER_DIR="$OUT/$name"
    rm -rf "$CLUSTER_DIR/data"
    PIDS=()
    for i in 1 2 3; do
        mkdir -p "$CLUSTER_DIR/data/node$i" || return 1
        "$DRIFTD" --id "$i" --http "127.0.0.1:$((BASE_PORT + i))" \
            --raft "127.0.0.1:$((BASE_PORT + 100 + i))" \
            --data "$CLUSTER_DIR/data/node$i" --bootstrap "$BOOTSTRAP" \
            --max-connections 10100 --max-connections-per-ip 0 \
            --max-room-rate 0 --max-msg-rate 0 --max-byte-rate 0 \
            "${SEC_NODE[@]}" "${EXTRA_NODE[@]}" \
            >> "$CLUSTER_DIR/node$i.log" 2>&1 &
        PIDS[i]=$!
    done
    for i in 1 2 3; do
        local deadline=$((SECONDS + 30))
        until healthy $((BASE_PORT + i)); do
            if ! kill -0 "${PIDS[i]}" 2>/dev/null; then
                log "node $i exited during start; see $CLUSTER_DIR/node$i.log"
                return 1
            fi
            if ((SECONDS > deadline)); then
                log "node $i: /healthz not 200 after 30 s; see $CLUSTER_DIR/node$i.log"
                return 1
            fi
            sleep 0.1
        done
    done
    log "cluster up for $name: pids ${PIDS[*]} ($URLS, security $SECURITY)"
}

stop_cluster() {
    local i rc status=0
    for i in "${!PIDS[@]}"; do
        kill -TERM "${PIDS[i]}" 2>/dev/null
    done
    for i in "${!PIDS[@]}"; do
        wait "${PIDS[i]}"
        rc=$?
        if ((rc != 0)); then
            log "node $i exited with status $rc; see $CLUSTER_DIR/node$i.log"
            status=1
        fi
    done
    PIDS=()
    [[ -n $CLUSTER_DIR ]] && rm -rf "$CLUSTER_DIR/data"
    return $status
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    if ((${#PIDS[@]} > 0)); then
        stop_cluster || true
    fi
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

FAILED=0

# run NAME N SCENARIO ARGS...: one run against all three nodes (or only
# node $NODE when set), its JSON in $OUT/NAME-N.json (NAME-N-nodeI.json).
run() {
    local name=$1 n=$2
    shift 2
    local json="$OUT/$name-$n.json" urls=$URLS pids=() i
    if [[ -n ${NODE:-} ]]; then
        json="$OUT/$name-$n-node$NODE.json"
        urls="$SCHEME://127.0.0.1:$((BASE_PORT + NODE))"
        pids=(--pid "${PIDS[NODE]}")
    else
        for i in "${!PIDS[@]}"; do pids+=(--pid "${PIDS[i]}"); done
    fi
    log "$name run $n/$RUNS${NODE:+ node $NODE}: $(basename "$BENCH") $* --url $urls"
    echo "$(basename "$BENCH") $* --url $urls --duration $DURATION --warmup $WARMUP ${SEC_BENCH[*]} ${EXTRA_BENCH[*]}" \
        >> "$OUT/commands.txt"
    "$BENCH" "$@" --url "$urls" "${pids[@]}" --duration "$DURATION" \
        --warmup "$WARMUP" --label "$name" --json "${SEC_BENCH[@]}" \
        "${EXTRA_BENCH[@]}" > "$json"
    local rc=$?
    if ((rc != 0)); then
        log "$name run $n${NODE:+ node $NODE} FAILED (exit $rc): $json"
        FAILED=1
    fi
    return $rc
}

# The median of a figure over the JSON results of NAME.
median_of() { # NAME FIGURE
    "$BENCH" report --median "$2" "$OUT/$1"-*.json 2>/dev/null
}

if [[ $QUICK == 1 ]]; then
    PUBS=8 SUBS=200 ROOMS=100 CONNS=${CONNS:-1000}
else
    PUBS=16 SUBS=1000 ROOMS=1000 CONNS=${CONNS:-10000}
fi
PEAK=

# fresh NAME N SCENARIO ARGS...: run N of NAME on a cluster of its own.
fresh() {
    start_cluster "$1-$2" || exit 1
    run "$@"
    stop_cluster || FAILED=1
}

for s in $SCENARIOS; do
    case $s in
    ingest)
        for n in $(seq "$RUNS"); do
            fresh ingest "$n" ingest --publishers "$PUBS" --window 64 --value-size 64
        done
        PEAK=$(median_of ingest "acked pushes/s")
        ;;
    latency)
        # publish->deliver latency at 10% of the peak ingest rate: one
        # subscriber per publisher's room, on another node than the
        # publisher. Needs the ingest figure (run ingest first), else
        # $LATENCY_RATE or 1000/s.
        rate=${LATENCY_RATE:-1000}
        if [[ -z ${LATENCY_RATE:-} && -n $PEAK ]]; then
            rate=$(awk -v p="$PEAK" 'BEGIN { r = int(p / 10); print (r < 1 ? 1 : r) }')
        fi
        for n in $(seq "$RUNS"); do
            fresh latency "$n" ingest --publishers "$PUBS" --subscribers "$PUBS" \
                --rate "$rate" --window 1000 --value-size 64
        done
        ;;
    fanout)
        # closed loop: the publisher stays at most 32 pushes ahead of the
        # slowest of the subscribers, so this is the delivery rate the
        # cluster sustains without growing its queues. FANOUT_WORKERS (2):
        # tool processes sharing the subscribers; one alone at ~90% of a
        # core was the bound (docs/benchmarks.md, "fanout").
        for n in $(seq "$RUNS"); do
            fresh fanout "$n" fanout --subscribers "$SUBS" --rate 0 --window 32 --value-size 64 \
                --workers "${FANOUT_WORKERS:-2}"
        done
        ;;
    rooms)
        for n in $(seq "$RUNS"); do
            fresh rooms "$n" rooms --rooms "$ROOMS" --clients 4 --rate 2 --value-size 64
        done
        ;;
    connections)
        # $CONNS connections on EACH node at once, from three tool processes
        # (one per node): one process cannot hold 30,000 sockets where the
        # hard RLIMIT_NOFILE is 20,000 and raising it is not permitted.
        for n in $(seq "$RUNS"); do
            start_cluster "connections-$n" || exit 1
            bpids=()
            for i in 1 2 3; do
                NODE=$i run connections "$n" connections --connections "$CONNS" \
                    --rooms 100 --concurrency 256 &
                bpids+=($!)
            done
            for p in "${bpids[@]}"; do
                wait "$p" || FAILED=1
            done
            stop_cluster || FAILED=1
        done
        ;;
    *)
        log "unknown scenario $s (ingest latency fanout rooms connections)"
        exit 2
        ;;
    esac
done

{
    echo "# driftd-bench results, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "Machine: $(nproc) CPU ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)."
    echo "3 driftd nodes and the tool on this machine, loopback. $RUNS run(s) per scenario, $DURATION s measured after $WARMUP s warm-up."
    echo "Security: $SECURITY${SEC_NODE[*]:+ (node flags: ${SEC_NODE[*]//$SEC_DIR\//})}."
    echo
    echo "Commands:"
    echo
    sed 's/^/    /' "$OUT/commands.txt" | sort -u
    files=()
    for s in $SCENARIOS; do
        for f in "$OUT/$s"-*.json; do [[ -e $f ]] && files+=("$f"); done
    done
    ((${#files[@]} > 0)) && "$BENCH" report "${files[@]}"
} > "$OUT/results.md"
cat "$OUT/results.md"
log "results: $OUT/results.md"
exit $FAILED
