#!/usr/bin/env bash
# Runs every libFuzzer target of tests/fuzz over its corpus (docs/fuzzing.md).
#
#   tests/fuzz/run.sh BUILD_DIR [extra libFuzzer flags...]
#
# FUZZ_RUNS=N (default 100000) inputs per target after the corpus, or
# FUZZ_TIME=SECONDS per target instead (the long run); FUZZ_TARGETS="json
# batch" picks targets. Each target first replays its corpus in the tree
# (seeds and crash-* regressions). A short run starts from that alone, so it
# is the same run every time (fixed seed); a long run also starts from, and
# adds to, what earlier long runs found in BUILD_DIR/fuzz-corpus/. New
# inputs never go into the tree. A crash, leak, timeout or broken invariant
# fails the run and its input is kept in BUILD_DIR/fuzz-artifacts/.
set -euo pipefail

build=${1:?usage: run.sh BUILD_DIR [libFuzzer flags...]}
shift
here=$(cd "$(dirname "$0")" && pwd)
targets=${FUZZ_TARGETS:-json cbor msgpack batch snapshot http forward}
runs=${FUZZ_RUNS:-100000}
time=${FUZZ_TIME:-0}
if [[ $time -gt 0 ]]; then
    limit=(-runs=-1 -max_total_time="$time")
else
    limit=(-runs="$runs")
fi
mkdir -p "$build/fuzz-artifacts"
scratch=$(mktemp -d "$build/fuzz-scratch.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in $targets; do
    bin="$build/fuzz_$t"
    if [[ $time -gt 0 ]]; then
        work="$build/fuzz-corpus/fuzz_$t"
    else
        work="$scratch/fuzz_$t"
    fi
    log="$build/fuzz-artifacts/fuzz_$t.log"
    mkdir -p "$work"
    start=$(date +%s)
    if "$bin" "${limit[@]}" -seed=1 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$build/fuzz-artifacts/fuzz_$t-" "$@" \
        "$work" "$here/corpus/fuzz_$t" >"$log" 2>&1; then
        echo "fuzz_$t: ok, $(grep -o 'Done [0-9]* runs' "$log" | tail -1 |
            cut -d' ' -f2) runs in $(($(date +%s) - start)) s"
    else
        tail -n 60 "$log"
        echo "fuzz_$t: FAILED (log: $log; input kept in $build/fuzz-artifacts/)"
        failed+=("fuzz_$t")
    fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: all targets passed"
