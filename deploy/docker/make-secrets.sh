#!/usr/bin/env bash
# Makes deploy/docker/secrets/cluster.key (driftctl keygen's format: 64 hex
# digits) and secrets/admin.token for compose.yaml, once; never overwrites.
# The files get mode 640 and group 10001 (the image's driftd group) when run
# as root, so the containers can read them and other users cannot; run
# without root it says what to run.
set -euo pipefail
dir=$(dirname "$0")/secrets
umask 077
mkdir -p "$dir"
for f in cluster.key admin.token; do
    [[ -e "$dir/$f" ]] && { echo "make-secrets: $dir/$f exists, kept"; continue; }
    n=32
    [[ $f == admin.token ]] && n=16
    od -An -tx1 -N"$n" /dev/urandom | tr -d ' \n' > "$dir/$f"
    echo >> "$dir/$f"
    echo "make-secrets: wrote $dir/$f"
done
if [[ $(id -u) -eq 0 ]]; then
    chgrp 10001 "$dir/cluster.key" "$dir/admin.token"
    chmod 640 "$dir/cluster.key" "$dir/admin.token"
else
    echo "make-secrets: the containers (uid/gid 10001) must read them:" >&2
    echo "  sudo chgrp 10001 $dir/cluster.key $dir/admin.token && sudo chmod 640 $dir/cluster.key $dir/admin.token" >&2
fi
