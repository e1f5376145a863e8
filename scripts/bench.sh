#!/usr/bin/env bash
# Runs the standard benchmark set against a local 3-node driftd cluster (or
# 5 nodes: NODES=5) on loopback and writes the results table (what `make
# bench` runs).
#
#   scripts/bench.sh [BUILD_DIR]        # default build/
#   RUNS=5 scripts/bench.sh             # runs per scenario (default 3)
#   QUICK=1 scripts/bench.sh            # 1 short run each, small counts
#   SCENARIOS="ingest fanout" scripts/bench.sh
#   SECURITY=tls scripts/bench.sh       # the same over TLS (see below)
#   SCENARIOS="ingest jetstream" scripts/bench.sh   # driftd next to JetStream
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
# The `jetstream` scenario runs the same load as ingest (the same
# publishers, window 64, 64 B values, each publisher its own subject as it
# has its own room) against NATS JetStream on this machine: per run a fresh
# cluster of 3 nats-server processes (client port 127.0.0.1:$((BASE_PORT+200+i)),
# routes $((BASE_PORT+210+i)), monitoring $((BASE_PORT+220+i)); store in
# $OUT/jetstream-N/data/nodeI), a stream of 3 replicas on file storage made
# by the load generator, src/bench/jetstream/main.go (built here into
# $BUILD/jetstream-bench, offline, in GOPATH mode against Debian's
# golang-github-nats-io-go-nats-dev). When SCENARIOS holds both ingest and
# jetstream, their runs alternate (ingest 1, jetstream 1, ingest 2, ...) and
# results.md gets the median of the per-pair ratios. JetStream does not
# fsync each message (2.9 syncs about once a minute; from 2.10,
# sync_interval, 2 min by default); driftd does.
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
# DURATION, WARMUP, SCENARIOS, SECURITY, NODES (3 or 5 voters), BASE_PORT
# (18180), DRIFTD_ARGS
# (extra node flags), BENCH_ARGS (extra driftd-bench flags, e.g.
# --msgpack), LATENCY_RATE (the latency scenario's rate instead of 10% of
# the ingest median), CONNS (connections per node in that scenario),
# SNAPSHOT_RATE and SNAPSHOT_DURATION (the snapshots scenario's rate instead
# of half the ingest median, and its length, 40 s).
# NATS_SERVER (the nats-server binary), JSBENCH (a prebuilt jetstream-bench;
# else built from source when missing or older than it).
set -uo pipefail

BUILD=${1:-${BUILD:-build}}
DRIFTD=${DRIFTD:-$BUILD/driftd}
BENCH=${BENCH:-$BUILD/driftd-bench}
DRIFTCTL=${DRIFTCTL:-$BUILD/driftctl}
SECURITY=${SECURITY:-open}
NODES=${NODES:-3}
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
SCENARIOS=${SCENARIOS:-"ingest jetstream latency snapshots fanout rooms connections"}
OUT=${OUT:-$BUILD/bench/$(date +%Y%m%d-%H%M%S)}
read -r -a EXTRA_NODE <<< "${DRIFTD_ARGS:-}"
read -r -a EXTRA_BENCH <<< "${BENCH_ARGS:-}"
NATS_SERVER=${NATS_SERVER:-nats-server}
JSBENCH_SRC=$(cd "$(dirname "$0")/.." && pwd)/src/bench/jetstream

log() { echo "bench.sh: $*" >&2; }

if [[ $NODES != 3 && $NODES != 5 ]]; then
    log "NODES=$NODES: 3 or 5 voters"
    exit 2
fi
has_scenario() { [[ " $SCENARIOS " == *" $1 "* ]]; }

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

# jetstream-bench, built offline from src/bench/jetstream in GOPATH mode:
# nats.go and what it imports come from Debian's packages in
# /usr/share/gocode (scripts/deps.sh), no module is downloaded. The build
# cache lives in $BUILD/go-cache.
build_jsbench() {
    local build_abs
    if [[ -n ${JSBENCH:-} ]]; then
        [[ -x $JSBENCH ]] && return 0
        log "JSBENCH=$JSBENCH is not executable"
        return 1
    fi
    JSBENCH="$BUILD/jetstream-bench"
    [[ -x $JSBENCH && $JSBENCH -nt $JSBENCH_SRC/main.go ]] && return 0
    if ! command -v go > /dev/null; then
        log "go is missing (scripts/deps.sh installs golang-go and golang-github-nats-io-go-nats-dev)"
        return 1
    fi
    mkdir -p "$BUILD/go-cache" || return 1
    build_abs=$(cd "$BUILD" && pwd)
    log "building $JSBENCH from $JSBENCH_SRC"
    (cd "$JSBENCH_SRC" && GO111MODULE=off GOPATH=/usr/share/gocode \
        GOCACHE="$build_abs/go-cache" GOPROXY=off GOFLAGS='' \
        go build -o "$build_abs/jetstream-bench" .) || {
        log "building jetstream-bench failed"
        return 1
    }
}
if has_scenario jetstream; then
    if ! command -v "$NATS_SERVER" > /dev/null; then
        log "$NATS_SERVER is missing (scripts/deps.sh installs nats-server)"
        exit 2
    fi
    build_jsbench || exit 2
fi

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

# NODES voters (3 or 5), node i on BASE_PORT+i (HTTP) and BASE_PORT+100+i
# (raft); the tool spreads its clients over all of them.
NODE_IDS=$(seq "$NODES")
URLS=''
BOOTSTRAP=''
for i in $NODE_IDS; do
    URLS+="${URLS:+,}$SCHEME://127.0.0.1:$((BASE_PORT + i))"
    BOOTSTRAP+="${BOOTSTRAP:+,}$i=127.0.0.1:$((BASE_PORT + 100 + i))"
done
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

start_cluster() { # NAME [NODE_FLAGS...]
    local name=$1 i
    shift
    CLUSTER_DIR="$OUT/$name"
    rm -rf "$CLUSTER_DIR/data"
    PIDS=()
    STOP_OK=0
    KIND=node
    for i in $NODE_IDS; do
        mkdir -p "$CLUSTER_DIR/data/node$i" || return 1
        "$DRIFTD" --id "$i" --http "127.0.0.1:$((BASE_PORT + i))" \
            --raft "127.0.0.1:$((BASE_PORT + 100 + i))" \
            --data "$CLUSTER_DIR/data/node$i" --bootstrap "$BOOTSTRAP" \
            --max-connections 10100 --max-connections-per-ip 0 \
            --max-room-rate 0 --max-msg-rate 0 --max-byte-rate 0 \
            "${SEC_NODE[@]}" "${EXTRA_NODE[@]}" "$@" \
            >> "$CLUSTER_DIR/node$i.log" 2>&1 &
        PIDS[i]=$!
    done
    for i in $NODE_IDS; do
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

# SIGTERM to every process of the cluster; its status must be STOP_OK (0 for
# driftd; 1 for nats-server: 2.9.10 exits 1 after a clean shutdown on
# SIGTERM, "Server Exiting.." in its log, and 0 only on SIGINT).
STOP_OK=0
KIND=node
stop_cluster() {
    local i rc status=0
    for i in "${!PIDS[@]}"; do
        kill -TERM "${PIDS[i]}" 2>/dev/null
    done
    for i in "${!PIDS[@]}"; do
        wait "${PIDS[i]}"
        rc=$?
        if ((rc != STOP_OK)); then
            log "$KIND $i exited with status $rc; see $CLUSTER_DIR/node$i.log"
            status=1
        fi
    done
    PIDS=()
    [[ -n $CLUSTER_DIR ]] && rm -rf "$CLUSTER_DIR/data"
    return $status
}

# ---- NATS JetStream, the peer of the ingest scenario ----

JS_URLS="nats://127.0.0.1:$((BASE_PORT + 201)),nats://127.0.0.1:$((BASE_PORT + 202)),nats://127.0.0.1:$((BASE_PORT + 203))"

# Whether the nats-server on monitoring port PORT knows the JetStream meta
# leader (GET /jsz: "meta_cluster": {..., "leader": "nI", ...}).
js_meta_leader() { # PORT
    local body
    { exec 3<> "/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    printf 'GET /jsz HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$1" >&3
    body=$(timeout 2 cat <&3)
    exec 3<&- 3>&-
    [[ $body == *'"meta_cluster"'*'"leader"'* ]]
}

# A fresh 3-server JetStream cluster for run NAME, like start_cluster: its
# PIDs in PIDS (stop_cluster stops it), its store under $OUT/NAME/data.
start_js_cluster() { # NAME
    local name=$1 i conf
    CLUSTER_DIR="$OUT/$name"
    rm -rf "$CLUSTER_DIR/data"
    PIDS=()
    STOP_OK=1
    KIND=nats-server
    for i in 1 2 3; do
        mkdir -p "$CLUSTER_DIR/data/node$i" || return 1
        conf="$CLUSTER_DIR/node$i.conf"
        cat > "$conf" << EOF || return 1
server_name: n$i
listen: 127.0.0.1:$((BASE_PORT + 200 + i))
http: 127.0.0.1:$((BASE_PORT + 220 + i))
jetstream {
  store_dir: "$CLUSTER_DIR/data/node$i"
}
cluster {
  name: driftd-bench
  listen: 127.0.0.1:$((BASE_PORT + 210 + i))
  routes: [
    nats-route://127.0.0.1:$((BASE_PORT + 211))
    nats-route://127.0.0.1:$((BASE_PORT + 212))
    nats-route://127.0.0.1:$((BASE_PORT + 213))
  ]
}
EOF
        "$NATS_SERVER" -c "$conf" >> "$CLUSTER_DIR/node$i.log" 2>&1 &
        PIDS[i]=$!
    done
    for i in 1 2 3; do
        local deadline=$((SECONDS + 30))
        until js_meta_leader $((BASE_PORT + 220 + i)); do
            if ! kill -0 "${PIDS[i]}" 2>/dev/null; then
                log "nats-server $i exited during start; see $CLUSTER_DIR/node$i.log"
                return 1
            fi
            if ((SECONDS > deadline)); then
                log "nats-server $i: no JetStream meta leader after 30 s; see $CLUSTER_DIR/node$i.log"
                return 1
            fi
            sleep 0.1
        done
    done
    log "JetStream cluster up for $name: pids ${PIDS[*]} ($JS_URLS)"
}

# js_run N: run N of the jetstream scenario, on a cluster of its own; its
# JSON in $OUT/jetstream-N.json.
js_run() {
    local n=$1 args pids
    args=(--publishers "$PUBS" --window 64 --value-size 64 --replicas 3
        --storage file --stream BENCH --subject-prefix bench)
    start_js_cluster "jetstream-$n" || exit 1
    pids=$(IFS=,; echo "${PIDS[*]}")
    log "jetstream run $n/$RUNS: $(basename "$JSBENCH") ${args[*]} --servers $JS_URLS"
    echo "$(basename "$JSBENCH") ${args[*]} --servers $JS_URLS --duration $DURATION --warmup $WARMUP" \
        >> "$OUT/commands.txt"
    if ! "$JSBENCH" "${args[@]}" --servers "$JS_URLS" --pids "$pids" \
        --duration "$DURATION" --warmup "$WARMUP" --label jetstream \
        --json "$OUT/jetstream-$n.json"; then
        log "jetstream run $n FAILED: $OUT/jetstream-$n.json"
        FAILED=1
    fi
    stop_cluster || FAILED=1
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

# run NAME N SCENARIO ARGS...: one run against all the nodes (or only
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

# metrics PORT: GET /metrics of the node on PORT (as healthy() does).
metrics() {
    if [[ $SCHEME == https ]]; then
        printf 'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$1" |
            timeout 5 openssl s_client -quiet -connect "127.0.0.1:$1" \
                -CAfile "$CA" -verify_return_error -verify_ip 127.0.0.1 2> /dev/null
        return
    fi
    { exec 3<> "/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    printf 'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$1" >&3
    timeout 5 cat <&3
    exec 3<&- 3>&-
}

# node_figures NAME N: what each node says of the run in /metrics (snapshots
# taken, the longest loop turn and the turns over 10 ms, elections),
# one line per node in $OUT/NAME-N-nodes.txt.
node_figures() {
    local i file="$OUT/$1-$2-nodes.txt"
    : > "$file"
    for i in $NODE_IDS; do
        metrics $((BASE_PORT + i)) | tr -d '\r' | awk -v node="$i" '
            $1 == "driftd_snapshots_total" { snaps = $2 }
            $1 == "driftd_loop_lag_max_seconds" { lag = $2 * 1000 }
            $1 == "driftd_loop_lag_seconds_bucket{le=\"0.01\"}" { le10 = $2 }
            $1 == "driftd_loop_lag_seconds_count" { count = $2 }
            $1 == "driftd_raft_elections_total" { elections = $2 }
            END {
                printf "node %d: snapshots %d, loop lag max %.1f ms, turns over 10 ms %d of %d, elections %d\n",
                    node, snaps, lag, count - le10, count, elections
            }' >> "$file"
    done
    sed "s/^/bench.sh: $1 run $2: /" "$file" >&2
}

# fresh NAME N SCENARIO ARGS...: run N of NAME on a cluster of its own.
fresh() {
    start_cluster "$1-$2" || exit 1
    run "$@"
    stop_cluster || FAILED=1
}

# ingest and jetstream together: their runs alternate, pair by pair
PAIRED=0
has_scenario ingest && has_scenario jetstream && PAIRED=1

for s in $SCENARIOS; do
    case $s in
    ingest)
        for n in $(seq "$RUNS"); do
            fresh ingest "$n" ingest --publishers "$PUBS" --window 64 --value-size 64
            ((PAIRED)) && js_run "$n"
        done
        PEAK=$(median_of ingest "acked pushes/s")
        ;;
    jetstream)
        ((PAIRED)) && continue # run with ingest, alternately
        for n in $(seq "$RUNS"); do
            js_run "$n"
        done
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
    snapshots)
        # Ingest at half the peak rate for long enough that every node takes
        # several snapshots (the defaults: one per 64 MiB of log, ~every 7 s
        # at 60k pushes/s), with the loop lag probe's figures per node: the
        # push->ack tail and the longest loop pause while snapshots are
        # taken. Rate: half the ingest median (run ingest first), else
        # $SNAPSHOT_RATE or 50,000/s.
        rate=${SNAPSHOT_RATE:-50000}
        if [[ -z ${SNAPSHOT_RATE:-} && -n $PEAK ]]; then
            rate=$(awk -v p="$PEAK" 'BEGIN { r = int(p / 2); print (r < 1 ? 1 : r) }')
        fi
        snap_args=()
        [[ $QUICK == 1 ]] && snap_args=(--snapshot-bytes 4)
        for n in $(seq "$RUNS"); do
            start_cluster "snapshots-$n" "${snap_args[@]}" || exit 1
            DURATION=${SNAPSHOT_DURATION:-$((QUICK == 1 ? 6 : 40))} \
                run snapshots "$n" ingest --publishers "$PUBS" --rate "$rate" \
                --window 64 --value-size 64
            node_figures snapshots "$n"
            stop_cluster || FAILED=1
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
        # $CONNS connections on EACH node at once, from one tool process
        # per node: one process cannot hold 30,000 sockets where the
        # hard RLIMIT_NOFILE is 20,000 and raising it is not permitted.
        for n in $(seq "$RUNS"); do
            start_cluster "connections-$n" || exit 1
            bpids=()
            for i in $NODE_IDS; do
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
        log "unknown scenario $s (ingest jetstream latency snapshots fanout rooms connections)"
        exit 2
        ;;
    esac
done

# The median of FIGURE over the results FILE... (empty if none has it).
median_in() { # FIGURE FILE...
    local fig=$1
    shift
    "$BENCH" report --median "$fig" "$@" 2>/dev/null
}

# results.md's section on JetStream: its figures next to driftd's ingest
# and, when they ran in pairs, the median of the per-pair ratios.
js_section() {
    local js=() in=() n d j ratios=() list label fig fmt dv jv row
    for n in $(seq "$RUNS"); do
        [[ -e $OUT/jetstream-$n.json ]] && js+=("$OUT/jetstream-$n.json")
        [[ -e $OUT/ingest-$n.json ]] && in+=("$OUT/ingest-$n.json")
    done
    ((${#js[@]} > 0)) || return 0
    echo
    echo "## driftd ingest and NATS JetStream R3"
    echo
    echo "JetStream ($("$NATS_SERVER" --version 2>&1 | head -1)): 3 servers on 127.0.0.1 in one cluster (routes between them), one stream of 3 replicas on file storage (subjects bench.*), a fresh cluster per run; the same load as ingest: $PUBS publishers, one connection and one subject each, round-robin over the 3 servers, at most 64 publishes unacknowledged per publisher, 64 B values, $DURATION s measured after $WARMUP s. Server 1's configuration: jetstream-1/node1.conf.${SEC_NODE[*]:+ JetStream has no TLS or authentication here; driftd runs with SECURITY=$SECURITY.}"
    echo
    echo "| figure (median over runs) | driftd ingest | JetStream R3 |"
    echo "|---|---:|---:|"
    for row in "acked pushes/s|acknowledged publishes/s|%.0f" \
        "push->ack p50 ms|publish->ack p50, ms|%.2f" \
        "push->ack p99 ms|publish->ack p99, ms|%.2f" \
        "push->ack p99.9 ms|publish->ack p99.9, ms|%.2f" \
        "nodes CPU % (sum)|servers' CPU, % of one core (sum of 3)|%.0f"; do
        IFS='|' read -r fig label fmt <<< "$row"
        dv=-
        jv=-
        ((${#in[@]} > 0)) && dv=$(median_in "$fig" "${in[@]}")
        jv=$(median_in "$fig" "${js[@]}")
        printf '| %s | %s | %s |\n' "$label" \
            "$(awk -v v="$dv" -v f="$fmt" 'BEGIN { if (v == "" || v == "-") print "-"; else printf f, v }')" \
            "$(awk -v v="$jv" -v f="$fmt" 'BEGIN { if (v == "") print "-"; else printf f, v }')"
    done
    echo
    if ((PAIRED)); then
        for n in $(seq "$RUNS"); do
            [[ -e $OUT/ingest-$n.json && -e $OUT/jetstream-$n.json ]] || continue
            d=$(median_in "acked pushes/s" "$OUT/ingest-$n.json")
            j=$(median_in "acked pushes/s" "$OUT/jetstream-$n.json")
            [[ -n $d && -n $j ]] || continue
            ratios+=("$(awk -v d="$d" -v j="$j" 'BEGIN { if (j > 0) printf "%.3f", d / j }')")
        done
        if ((${#ratios[@]} > 0)); then
            list=$(printf '%s, ' "${ratios[@]}")
            printf '%s\n' "${ratios[@]}" | sort -g | awk -v list="${list%, }" '
                { v[NR] = $1 }
                END {
                    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                    printf "driftd ingest / JetStream R3 = %.2f (median of per-pair ratios over %d pair%s: %s)\n", m, NR, NR == 1 ? "" : "s", list
                }'
        else
            echo "driftd ingest / JetStream R3: no complete pair"
        fi
        echo
        echo "Runs alternated (ingest 1, JetStream 1, ingest 2, ...), so each pair saw about the same machine. Acknowledged publishes per second, driftd over JetStream, pair by pair."
        echo
    else
        echo "No driftd ingest runs in this set, so no ratio: SCENARIOS=\"ingest jetstream\" runs them in pairs."
        echo
    fi
    echo "Not the same durability: driftd acknowledges a push once the raft entry holding it is fsynced on a majority of the nodes; JetStream acknowledges a publish once the stream's raft group has it on a majority of the replicas, written to files without fsync (nats-server 2.9 syncs them in the background about once a minute, 2.10 and later every sync_interval, 2 min by default): a power loss on a majority can lose acknowledged JetStream messages."
}

{
    echo "# driftd-bench results, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "Machine: $(nproc) CPU ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)."
    echo "$NODES driftd nodes (voters) and the tool on this machine, loopback. $RUNS run(s) per scenario, $DURATION s measured after $WARMUP s warm-up."
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
    if compgen -G "$OUT/snapshots-*-nodes.txt" > /dev/null; then
        echo
        echo "### snapshots: the nodes' own figures"
        echo
        echo "From each node's /metrics at the end of each run (loop lag: the"
        echo "longest turn of the event loop outside its wait for events, and"
        echo "how many turns took over 10 ms: driftd_loop_lag_seconds)."
        echo
        for f in "$OUT"/snapshots-*-nodes.txt; do
            r=${f##*/snapshots-}
            sed "s/^/    run ${r%-nodes.txt}: /" "$f"
        done
    fi
    has_scenario jetstream && js_section
} > "$OUT/results.md"
cat "$OUT/results.md"
log "results: $OUT/results.md"
exit $FAILED
