#!/usr/bin/env bash
# Builds the Debian source packages driftd carries patches for, with only the
# parts driftd uses, into a private prefix (default /opt/driftd-deps) that
# CMakeLists.txt looks in first. Called by scripts/deps.sh; run it alone to
# rebuild after changing a patch.
#
#   scripts/patched-deps.sh [PACKAGE...]     default: every package below
#
# For each package: the exact Debian source version (pinned below) comes
# from the archive with `apt-get source` (apt checks the .dsc against the
# signed Sources index, dpkg-source the tarballs against the .dsc), the
# patches in deploy/patches/PACKAGE/*.patch are applied in name order and
# must apply exactly (no fuzz), then the package's build function configures,
# builds and installs it. A stamp in the prefix holds the hash of the source
# version, the patches and the package's two functions (so its build
# options): when it matches, nothing is fetched or built.
#
# Adding a package (libraft is next): a pkg_NAME function that sets SRC_PKG,
# SRC_VERSION, SRC_SUITE, BIN_PKG and BUILD_DEPS (see libwebsockets), a
# build_NAME function that builds the patched source in the current folder
# and installs it into $PREFIX, writing the list of installed files to $1,
# and NAME in PACKAGES.
#
# Environment: DRIFTD_DEPS_PREFIX (install prefix), DRIFTD_DEPS_WORK (where
# sources are unpacked and built; default a temporary folder, removed after
# a success), DRIFTD_DEPS_NO_PATCHES=1 (build the pristine Debian source:
# only for checking that a test fails without our patches, best with another
# DRIFTD_DEPS_PREFIX; the stamp records it), JOBS (default 2).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${DRIFTD_DEPS_PREFIX:-/opt/driftd-deps}
JOBS=${JOBS:-2}
NO_PATCHES=${DRIFTD_DEPS_NO_PATCHES:-0}
PACKAGES=(libwebsockets raft)
APT=(apt-get -q -y -o DPkg::Lock::Timeout=600)

# ---- libwebsockets ---------------------------------------------------------
# Why patched: lws 4.1 cuts a request whose headers do not fit its header
# buffer without an answer (RFC 6585 wants 431), and accepts unmasked frames
# from clients (RFC 6455 section 5.1: the server must close, 1002); 4.1 has
# no hook for either; and with libuv it closes its event pipe twice when the
# context is destroyed (deploy/patches/libwebsockets/).
pkg_libwebsockets() {
    # The version bookworm installs (libwebsockets17 4.1.6-3). A new Debian
    # revision means: bump it here, check the patches still apply and the
    # tests pass.
    SRC_PKG=libwebsockets
    SRC_VERSION=4.1.6-3
    SRC_SUITE=bookworm
    BIN_PKG=libwebsockets17
    # dpkg-dev: apt-get source unpacks with dpkg-source (and brings patch).
    BUILD_DEPS=(build-essential cmake pkg-config dpkg-dev libssl-dev
                libuv1-dev)
}

build_libwebsockets() {
    # What driftd uses: HTTP/1.1 + WebSocket server and client (the forward
    # link to the leader, driftd-bench), OpenSSL, the libuv event loop, IPv6
    # listen addresses. Everything else off:
    # - libuv is linked into libwebsockets.so instead of a runtime plugin
    #   (LWS_WITH_EVLIB_PLUGINS=OFF): a plugin is dlopen()ed from a folder,
    #   and Debian's evlib-uv plugin, built for Debian's library, must never
    #   be what our library loads.
    # - no HTTP/2 (driftd offers only http/1.1 through ALPN and its request
    #   handling is written for it), no extensions or zlib (driftd
    #   negotiates no permessage-deflate), no unix sockets, raw files or
    #   other event libraries, no libcap (privilege dropping, which driftd
    #   does not ask for; off rather than found or not by chance).
    # - no test apps, examples or plugins; the shared library only (the
    #   binaries find it through their RPATH).
    # - Debian's compiler and linker flags (dpkg-buildflags: -O2, stack
    #   protector, fortify, relro), as Debian builds its package;
    #   DISABLE_WERROR: lws 4.1's OpenSSL code uses calls OpenSSL 3
    #   deprecates, and those warnings must not stop the build.
    local cflags ldflags
    cflags="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
    ldflags=$(dpkg-buildflags --get LDFLAGS)
    run _configure.log cmake -S . -B _build -DCMAKE_BUILD_TYPE=None \
        -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_INSTALL_LIBDIR=lib \
        -DCMAKE_C_FLAGS="$cflags" -DCMAKE_SHARED_LINKER_FLAGS="$ldflags" \
        -DDISABLE_WERROR=ON -DLWS_WITH_SHARED=ON -DLWS_WITH_STATIC=OFF \
        -DLWS_ROLE_H1=ON -DLWS_ROLE_WS=ON -DLWS_WITH_HTTP2=OFF \
        -DLWS_ROLE_RAW_FILE=OFF -DLWS_UNIX_SOCK=OFF -DLWS_IPV6=ON \
        -DLWS_WITH_SSL=ON -DLWS_WITH_LIBUV=ON -DLWS_WITH_EVLIB_PLUGINS=OFF \
        -DLWS_WITH_LIBEV=OFF -DLWS_WITH_LIBEVENT=OFF -DLWS_WITH_GLIB=OFF \
        -DLWS_WITHOUT_EXTENSIONS=ON -DLWS_WITH_ZLIB=OFF \
        -DLWS_WITH_PLUGINS=OFF -DLWS_WITHOUT_TESTAPPS=ON \
        -DLWS_WITH_MINIMAL_EXAMPLES=OFF -DLWS_WITH_LWSWS=OFF \
        -DLWS_WITHOUT_CLIENT=OFF -DLWS_WITHOUT_SERVER=OFF \
        -DLWS_HAVE_LIBCAP=OFF -DLWS_HAVE_SYS_CAPABILITY_H=OFF
    run _build.log cmake --build _build -j"$JOBS"
    run _install.log cmake --install _build
    cp _build/install_manifest.txt "$1"
}

# ---- libraft ---------------------------------------------------------------
# Why patched (deploy/patches/raft/): a follower took a configuration entry
# received in mid-batch as never committed (nodes disagreed on the member
# list; changes stuck "in progress"), a torn open segment crashed the node at
# start, the leader never re-sent entries a follower lost, io_destroy()
# stalled the loop ~40 ms at every segment switch, a snapshot that could not
# be written (or whose data a forked encoder failed to produce) tripped an
# assertion, the log's CRC-32 went one byte per table lookup (~8% of a
# node's CPU under ingest), and a follower refused votes while it knew a
# leader however long that leader had been silent.
pkg_raft() {
    # bookworm-backports' 0.22.1 (bookworm's own 0.15 lacks the split-brain
    # and disk-failure fixes of 0.17+).
    SRC_PKG=raft
    SRC_VERSION=0.22.1-1~bpo12+1
    SRC_SUITE=bookworm-backports
    # Debian's binary package is installed from backports only on request,
    # so its candidate says nothing: no version check.
    BIN_PKG=
    BUILD_DEPS=(build-essential autoconf automake libtool pkg-config dpkg-dev
                libuv1-dev liblz4-dev)
}

# The archive here serves this package's upstream tarball but not its .dsc
# or Debian tarball (404), so the tarball alone is fetched with apt's own
# downloader and checked against the SHA-256 that the signed Sources index
# lists for it. Debian's packaging of 0.22.1 adds no source patches.
fetch_raft() {
    local orig=${SRC_PKG}_${SRC_VERSION%%-*}.orig.tar.gz dir sha mirror
    dir=$(apt-cache showsrc "$SRC_PKG" | awk -v v="$SRC_VERSION" '
        /^Package:/ { ok = 0 } $0 == "Version: " v { ok = 1 }
        ok && /^Directory:/ && !done { print $2; done = 1 }')
    sha=$(apt-cache showsrc "$SRC_PKG" | awk -v v="$SRC_VERSION" -v f="$orig" '
        /^Package:/ { ok = 0 } $0 == "Version: " v { ok = 1 }
        ok && /^Checksums-Sha256:/ { c = 1; next }
        ok && c && /^ / && $3 == f && !done { print $1; done = 1 }
        /^[^ ]/ { c = 0 }')
    [[ -n $dir && -n $sha ]] || die "no $orig in the Sources index"
    mirror=http://deb.debian.org/debian
    run fetch.log /usr/lib/apt/apt-helper download-file \
        "$mirror/$dir/$orig" "$orig" "SHA256:$sha"
    mkdir src
    run unpack.log tar -xzf "$orig" -C src --strip-components=1
}

build_raft() {
    # As Debian builds it (autotools, its hardening flags, lz4, the uv
    # backend and the test fixture, which tests/unit uses), without examples
    # or benchmarks; libraft's own test suite is not run here.
    local cflags ldflags
    cflags="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
    ldflags=$(dpkg-buildflags --get LDFLAGS)
    run autoreconf.log autoreconf -i
    run configure.log ./configure --prefix="$PREFIX" --libdir="$PREFIX/lib" \
        --disable-static --disable-example --disable-benchmark \
        CFLAGS="$cflags" LDFLAGS="$ldflags"
    run build.log make -j"$JOBS"
    run install.log make install DESTDIR="$PWD/_stage"
    rm -f "_stage$PREFIX"/lib/*.la
    (cd "_stage$PREFIX" && find . -type f -o -type l) |
        sed "s|^\.|$PREFIX|" >"$1"
    cp -a "_stage$PREFIX/." "$PREFIX/"
}

# ---- generic part ----------------------------------------------------------

log() { echo "patched-deps: $*"; }
die() {
    echo "patched-deps: $*" >&2
    exit 1
}

# run LOG CMD...: CMD's output goes to LOG; on failure its tail is shown.
run() {
    local out=$1
    shift
    "$@" >"$out" 2>&1 || {
        tail -n 40 "$out" >&2
        die "failed: $* (whole log: $PWD/$out)"
    }
}

# The hash that decides whether a package must be rebuilt.
stamp_of() {
    local name=$1 p
    {
        echo "$SRC_PKG $SRC_VERSION prefix=$PREFIX no_patches=$NO_PATCHES"
        declare -f "pkg_$name" "build_$name"
        declare -f "fetch_$name" || true
        if [[ $NO_PATCHES != 1 ]]; then
            for p in "$ROOT/deploy/patches/$name"/*.patch; do
                [[ -e $p ]] || continue
                echo "== $(basename "$p")"
                cat "$p"
            done
        fi
    } | sha256sum | cut -d' ' -f1
}

install_missing() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
            grep -q 'install ok installed' || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing ${missing[*]}"
    "${APT[@]}" update >/dev/null
    "${APT[@]}" install --no-install-recommends "${missing[@]}" >/dev/null
}

# apt-get source needs a deb-src entry for the package's suite; Debian's
# images ship deb entries only.
ensure_source() {
    local pkg=$1 version=$2 suite=$3
    local list=/etc/apt/sources.list.d/driftd-src-$suite.sources
    if apt-cache showsrc "$pkg" 2>/dev/null | grep -x "Version: $version" >/dev/null; then
        return 0
    fi
    if [[ ! -f $list ]]; then
        log "adding $list (deb-src $suite main)"
        cat >"$list" <<EOF
# Added by driftd's scripts/patched-deps.sh: apt-get source for the Debian
# packages driftd builds with its own patches.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    "${APT[@]}" update >/dev/null
    apt-cache showsrc "$pkg" 2>/dev/null | grep -x "Version: $version" >/dev/null ||
        die "$pkg $version is not in the archive's sources (a new Debian revision? bump SRC_VERSION in $0 and check the patches)"
}

build_package() {
    local name=$1 stamp_file manifest want work own_work=0 t0 cand
    "pkg_$name"
    stamp_file=$PREFIX/share/driftd-deps/$name.stamp
    manifest=$PREFIX/share/driftd-deps/$name.manifest
    want=$(stamp_of "$name")
    if [[ -f $stamp_file && $(cat "$stamp_file") == "$want" ]]; then
        log "$name $SRC_VERSION up to date in $PREFIX"
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || die "building $name needs root (apt-get, $PREFIX)"
    export DEBIAN_FRONTEND=noninteractive
    install_missing "${BUILD_DEPS[@]}"
    ensure_source "$SRC_PKG" "$SRC_VERSION" "$SRC_SUITE"
    # Debian's binary package should be this same version; when the archive
    # has moved on (a security update), say so.
    cand=
    [[ -z $BIN_PKG ]] || cand=$(apt-cache policy "$BIN_PKG" 2>/dev/null |
        sed -n 's/^ *Candidate: //p')
    if [[ -n $cand && $cand != "(none)" && $cand != "$SRC_VERSION" ]]; then
        log "warning: Debian now installs $BIN_PKG $cand; we build $SRC_VERSION"
    fi

    t0=$(date +%s)
    if [[ -n ${DRIFTD_DEPS_WORK:-} ]]; then
        work=$DRIFTD_DEPS_WORK/$name
        rm -rf "$work"
        mkdir -p "$work"
    else
        work=$(mktemp -d)
        own_work=1
    fi
    log "building $name $SRC_VERSION in $work"
    # A plain subshell for the cd: not part of a || list, so set -e holds in
    # it and any failure stops the script (the work folder is kept).
    (
        cd "$work"
        # Download, then unpack under a known name; apt verifies the .dsc
        # against the signed index, dpkg-source the tarballs against it.
        if declare -F "fetch_$name" >/dev/null; then
            "fetch_$name"
        else
            run fetch.log apt-get -q source --download-only "$SRC_PKG=$SRC_VERSION"
            run unpack.log dpkg-source -x "${SRC_PKG}_${SRC_VERSION}.dsc" src
        fi
        cd src
        if [[ $NO_PATCHES == 1 ]]; then
            log "warning: DRIFTD_DEPS_NO_PATCHES=1: $name stays unpatched"
        else
            for p in "$ROOT/deploy/patches/$name"/*.patch; do
                [[ -e $p ]] || continue
                log "applying $(basename "$p")"
                patch -p1 --forward --fuzz=0 --no-backup-if-mismatch -s \
                    <"$p" || die "$(basename "$p") does not apply"
            done
        fi
        # The previous build's files go first, so none is left behind.
        if [[ -f $manifest ]]; then
            while IFS= read -r f; do
                rm -f -- "$f"
            done <"$manifest"
        fi
        rm -f "$stamp_file"
        mkdir -p "$(dirname "$stamp_file")"
        "build_$name" "$manifest"
    )
    echo "$want" >"$stamp_file"
    if [[ $own_work -eq 1 ]]; then
        rm -rf "$work"
    fi
    log "$name $SRC_VERSION built into $PREFIX in $(($(date +%s) - t0)) s"
}

main() {
    local name
    if [[ $# -eq 0 ]]; then
        set -- "${PACKAGES[@]}"
    fi
    for name in "$@"; do
        declare -F "pkg_$name" >/dev/null || die "unknown package $name"
        build_package "$name"
    done
}

main "$@"
