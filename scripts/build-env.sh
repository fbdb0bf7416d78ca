#!/usr/bin/env bash
# Sourced by the other scripts: installs what a fresh Debian machine lacks to build skiff,
# and arranges for RocksDB's C++ (the slowest part of the build, ~26 min on 2 cores) to be
# compiled once and then reused from a cache outside target/ as a static library.
set -euo pipefail

SKIFF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$SKIFF_ROOT"

need_pkgs=()
command -v cc >/dev/null 2>&1 || need_pkgs+=(build-essential)
command -v c++ >/dev/null 2>&1 || need_pkgs+=(build-essential)
# bindgen needs libclang itself; libclang-cpp (which some images carry) is not enough.
ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* >/dev/null 2>&1 || need_pkgs+=(libclang-dev)
# The pause program is linked statically against glibc.
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need_pkgs+=(libc6-dev)
# The etcd client's gRPC code is generated from etcd's .proto files at build time.
command -v protoc >/dev/null 2>&1 || need_pkgs+=(protobuf-compiler)
# The datastore tests run a real etcd (Debian's etcd-server, 3.4).
command -v etcd >/dev/null 2>&1 || need_pkgs+=(etcd-server)
# ClusterIPs are kernel rules written with nft; the service range's device with ip.
command -v nft >/dev/null 2>&1 || need_pkgs+=(nftables)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
# The test script waits for its etcd with curl.
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
# The cluster DNS tests forward to a resolver of their own on loopback (dnsmasq's binary
# only: the package without the system service).
command -v dnsmasq >/dev/null 2>&1 || need_pkgs+=(dnsmasq-base)
# Test images are built from Debian's static busybox (no registry is reachable).
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q static || need_pkgs+=(busybox-static)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    echo "==> installing ${need_pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo (Rust) is required" >&2; exit 1; }

# The cache is keyed by the librocksdb-sys version in Cargo.lock, so a version bump
# rebuilds it instead of linking a mismatched library.
rocks_version="$(awk '/^name = "librocksdb-sys"/{getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)"
SKIFF_CACHE_DIR="${SKIFF_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff}"
ROCKS_CACHE="$SKIFF_CACHE_DIR/librocksdb-sys-$rocks_version"
target_dir="${CARGO_TARGET_DIR:-$SKIFF_ROOT/target}"

if [ ! -f "$ROCKS_CACHE/librocksdb.a" ]; then
    echo "==> building RocksDB $rocks_version once (about 26 minutes on 2 cores); cached in $ROCKS_CACHE" >&2
    unset ROCKSDB_LIB_DIR ROCKSDB_STATIC SNAPPY_LIB_DIR SNAPPY_STATIC
    cargo build -p librocksdb-sys >&2
    out="$(ls -dt "$target_dir"/debug/build/librocksdb-sys-*/out 2>/dev/null | while read -r d; do
        [ -f "$d/librocksdb.a" ] && { echo "$d"; break; }; done)"
    [ -n "$out" ] || { echo "built RocksDB but found no librocksdb.a" >&2; exit 1; }
    mkdir -p "$ROCKS_CACHE.tmp"
    cp "$out"/librocksdb.a "$out"/libsnappy.a "$ROCKS_CACHE.tmp"/
    rm -rf "$ROCKS_CACHE"
    mv "$ROCKS_CACHE.tmp" "$ROCKS_CACHE"
fi

export ROCKSDB_LIB_DIR="$ROCKS_CACHE" ROCKSDB_STATIC=1
export SNAPPY_LIB_DIR="$ROCKS_CACHE" SNAPPY_STATIC=1
