#!/usr/bin/env bash
# Runs every libFuzzer target of tests/fuzz over its corpus (docs/fuzzing.md).
#
#   tests/fuzz/run.sh BUILD_DIR [extra libFuzzer flags...]
#
# FUZZ_RUNS=N (default 100000) inputs per target after the corpus, or
# FUZZ_TIME=SECONDS per target instead (the long run); FUZZ_TARGETS="json
# batch" picks targets. Each target starts from the corpus in the tree
# (every file there, seeds and crash-* regressions, is replayed first) plus
# what earlier runs found in BUILD_DIR/fuzz-corpus/; new inputs go there,
# never into the tree. A crash, leak, timeout or broken invariant fails the
# run and its input is kept as BUILD_DIR/fuzz-artifacts/<target>-crash-*.
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
failed=()
for t in $targets; do
    bin="$build/fuzz_$t"
    work="$build/fuzz-corpus/fuzz_$t"
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
