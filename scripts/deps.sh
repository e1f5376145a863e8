#!/usr/bin/env bash
# Installs the Debian packages driftd needs to build and test, when missing.
# libraft comes from bookworm-backports (0.22.x): bookworm's own 0.15 lacks the
# split-brain and disk-failure fixes. Idempotent: does nothing when all is there.
set -euo pipefail

# clang-14 and libclang-rt-14-dev (libFuzzer, ASan and UBSan runtimes):
# make fuzz, which make test runs. iproute2, nftables, util-linux (ip netns,
# nft, tc, unshare): the chaos suite (tests/chaos/). chromium: the
# dashboard's browser test (tests/blackbox/ui.test.mjs).
PKGS=(build-essential cmake pkg-config libuv1-dev libwebsockets-dev
      libmsgpack-dev libjansson-dev libcbor-dev libcmocka-dev
      libcurl4-openssl-dev libssl-dev openssl nodejs npm haproxy clang-14
      libclang-rt-14-dev iproute2 nftables util-linux chromium)
BACKPORTS_PKGS=(libraft-dev)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
need_raft=0
# Any libraft older than 0.17 is bookworm's 0.15: replace it with backports'.
if ! pkg-config --atleast-version=0.17 raft 2>/dev/null; then
    need_raft=1
fi
# node/npm may come from another source (nodesource): accept any working npm.
if command -v node >/dev/null && command -v npm >/dev/null; then
    tmp=()
    for p in "${missing[@]}"; do
        [[ "$p" == nodejs || "$p" == npm ]] || tmp+=("$p")
    done
    missing=("${tmp[@]+"${tmp[@]}"}")
fi

if [[ ${#missing[@]} -eq 0 && $need_raft -eq 0 ]]; then
    echo "deps: all build and test dependencies present"
    exit 0
fi

BPLIST=/etc/apt/sources.list.d/bookworm-backports.list
cmd="apt-get update && apt-get install -y ${missing[*]:-}"
if [[ $need_raft -eq 1 ]]; then
    cmd="echo 'deb http://deb.debian.org/debian bookworm-backports main' > $BPLIST && $cmd && apt-get install -y -t bookworm-backports ${BACKPORTS_PKGS[*]}"
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "deps: missing packages: ${missing[*]:-} $([[ $need_raft -eq 1 ]] && echo libraft-dev/bookworm-backports)" >&2
    echo "deps: run as root:" >&2
    echo "  $cmd" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if [[ $need_raft -eq 1 && ! -f $BPLIST ]]; then
    echo 'deb http://deb.debian.org/debian bookworm-backports main' > "$BPLIST"
fi
apt-get update -q
if [[ ${#missing[@]} -gt 0 ]]; then
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [[ $need_raft -eq 1 ]]; then
    apt-get install -y -q --no-install-recommends -t bookworm-backports "${BACKPORTS_PKGS[@]}"
fi
echo "deps: installed"
