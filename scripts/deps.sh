#!/usr/bin/env bash
# Installs the Debian packages driftd needs to build and test, when missing,
# then builds the dependencies driftd patches (libwebsockets, libraft) from
# Debian's sources into /opt/driftd-deps: scripts/patched-deps.sh, which also
# installs what those builds need. Idempotent: does nothing when all is there.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

# clang-14 and libclang-rt-14-dev (libFuzzer, ASan and UBSan runtimes):
# make fuzz, which make test runs. iproute2, nftables, util-linux (ip netns,
# nft, tc, unshare): the chaos suite (tests/chaos/). chromium: the
# dashboard's browser test (tests/blackbox/ui.test.mjs). nats-server,
# golang-go, golang-github-nats-io-go-nats-dev (with nkeys and nuid): the
# benchmark's NATS JetStream peer (scripts/bench.sh, its load generator built
# offline from src/bench/jetstream against /usr/share/gocode). No
# libwebsockets-dev or libraft-dev:
# patched-deps.sh builds our own.
PKGS=(build-essential cmake pkg-config libuv1-dev
      libmsgpack-dev libjansson-dev libcbor-dev libcmocka-dev
      libcurl4-openssl-dev libssl-dev openssl nodejs npm haproxy clang-14
      libclang-rt-14-dev iproute2 nftables util-linux chromium
      nats-server golang-go golang-github-nats-io-go-nats-dev)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# node/npm may come from another source (nodesource): accept any working npm.
if command -v node >/dev/null && command -v npm >/dev/null; then
    tmp=()
    for p in "${missing[@]}"; do
        [[ "$p" == nodejs || "$p" == npm ]] || tmp+=("$p")
    done
    missing=("${tmp[@]+"${tmp[@]}"}")
fi
# systemd (systemd-analyze), python3-yaml, shellcheck:
# tests/blackbox/deploy.test.mjs.
for p in systemd python3-yaml shellcheck; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "deps: all Debian packages present"
    exec "$here/patched-deps.sh"
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "deps: missing packages: ${missing[*]}" >&2
    echo "deps: run as root:" >&2
    echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
# Debian's nats-server package enables and starts a service (port 4222) on a
# host run by systemd; the benchmark starts servers of its own, so a server
# installed here for it does not stay running.
if [[ " ${missing[*]} " == *" nats-server "* && -d /run/systemd/system ]]; then
    systemctl disable --now nats-server.service > /dev/null 2>&1 || true
fi
echo "deps: installed"
exec "$here/patched-deps.sh"
