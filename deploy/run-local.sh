#!/usr/bin/env bash
# Starts one local driftd node on 127.0.0.1:8080 with its data in
# ./driftd-data (the embedded default) and stops it cleanly on Ctrl-C.
set -euo pipefail
BIN=${1:-build/driftd}
DATA=${DRIFTD_DATA:-./driftd-data}
echo "driftd: http://127.0.0.1:8080  (data: $DATA; Ctrl-C stops)"
exec "$BIN" --http 127.0.0.1:8080 --data "$DATA"
