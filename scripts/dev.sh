#!/usr/bin/env bash
# Cairn's developer entry point. On a fresh Debian machine with the Rust
# toolchain it installs what the build needs, then:
#
#   scripts/dev.sh run [cairn flags...]   build and run a single member (etcd's defaults: localhost:2379)
#   scripts/dev.sh test                   the whole test suite (unit, integration, etcdctl comparisons)
#   scripts/dev.sh deps                   only install the build dependencies
#   scripts/dev.sh selftest-deps          check the dependency check itself (on made-up trees)
#
# Builds go to $CARGO_TARGET_DIR, by default a directory outside the clone
# ($HOME/.cache/cairn/target), so that every clone on this machine (and CI,
# which runs from a fresh clone) reuses the ~12-minute RocksDB C++ build. Only
# the dev profile is used: tests, the binary they start and `run` share one build.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cairn/target}"

apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "need root to apt-get install $*; install them and re-run" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$@" >/dev/null
}

# has_libclang [ROOT] : whether ROOT (default /) has a libclang that bindgen
# (clang-sys) loads: libclang.so*, or libclang-VERSION.so*. Not libclang-cpp
# (the C++ library, which machine images carry without libclang itself).
has_libclang() {
    local root=${1:-} f name
    for f in "$root"/usr/lib/llvm-*/lib/libclang* "$root"/usr/lib/x86_64-linux-gnu/libclang* \
        "$root"/usr/lib/aarch64-linux-gnu/libclang*; do
        [ -e "$f" ] || continue
        name=${f##*/}
        case "$name" in
            libclang-cpp*) ;;
            libclang.so*|libclang-[0-9]*.so*) return 0 ;;
        esac
    done
    return 1
}

# selftest_deps : proves has_libclang by its logic, on made-up trees (CI runs
# it, since the machine's own state proves nothing about a fresh one).
selftest_deps() {
    local t
    t=$(mktemp -d)
    mkdir -p "$t/cpp-only/usr/lib/llvm-14/lib" "$t/versioned/usr/lib/llvm-14/lib" \
        "$t/plain/usr/lib/llvm-14/lib" "$t/empty"
    touch "$t/cpp-only/usr/lib/llvm-14/lib/libclang-cpp.so.14" \
        "$t/versioned/usr/lib/llvm-14/lib/libclang-cpp.so.14" \
        "$t/versioned/usr/lib/llvm-14/lib/libclang-14.so.1" \
        "$t/plain/usr/lib/llvm-14/lib/libclang.so.1"
    local ok=1
    has_libclang "$t/cpp-only" && { echo "deps selftest: libclang-cpp alone taken for libclang" >&2; ok=0; }
    has_libclang "$t/empty" && { echo "deps selftest: an empty tree taken for libclang" >&2; ok=0; }
    has_libclang "$t/versioned" || { echo "deps selftest: libclang-14.so.1 not found" >&2; ok=0; }
    has_libclang "$t/plain" || { echo "deps selftest: libclang.so.1 not found" >&2; ok=0; }
    rm -rf "$t"
    [ "$ok" = 1 ] && echo "deps selftest: 4 passed, 0 failed"
    [ "$ok" = 1 ]
}

deps() {
    # librocksdb-sys runs bindgen, which needs libclang and clang's own headers
    # (stdbool.h). protoc is vendored by protoc-bin-vendored.
    local missing=()
    has_libclang || missing+=(libclang1-14)
    ls /usr/lib/llvm-*/lib/clang/*/include/stdbool.h >/dev/null 2>&1 || missing+=(libclang-common-14-dev)
    command -v g++ >/dev/null 2>&1 || missing+=(g++)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing build dependencies: ${missing[*]}" >&2
        apt_install "${missing[@]}"
    fi
}

case "${1:-}" in
    deps)
        deps
        ;;
    selftest-deps)
        selftest_deps
        ;;
    run)
        shift
        deps
        cargo build --bin cairn
        exec "$CARGO_TARGET_DIR/debug/cairn" "$@"
        ;;
    test)
        deps
        # The test build of cairn has the test-only `jepsen-broken` feature
        # (an inert flag unless passed): cairn-jepsen's self-test needs it.
        features=(--features cairn-server/jepsen-broken)
        if cargo nextest --version >/dev/null 2>&1; then
            # nextest names and kills a hung test (.config/nextest.toml).
            cargo nextest run --workspace "${features[@]}"
            cargo test --workspace --doc "${features[@]}"
        else
            cargo test --workspace "${features[@]}"
        fi
        CAIRN_BIN="$CARGO_TARGET_DIR/debug/cairn" bash tests/compat/etcdctl-compat.sh
        CAIRN_BIN="$CARGO_TARGET_DIR/debug/cairn" bash tests/compat/cluster-compat.sh
        # cairn-bench end to end against three-member etcd and Cairn (the
        # tool, not the figures: tiny totals, debug builds).
        cargo build -p cairn-bench --bin cairn-bench
        CAIRN_BIN="$CARGO_TARGET_DIR/debug/cairn" CAIRN_BENCH_BIN="$CARGO_TARGET_DIR/debug/cairn-bench" \
            bash benches/compare.sh --quick
        # cairn-jepsen's short suite: faults across three zones, checked
        # histories, and the self-test against a deliberately broken server.
        cargo build -p cairn-jepsen --bin cairn-jepsen
        jepsen_out="$(mktemp -d /tmp/cairn-jepsen.XXXXXX)"
        "$CARGO_TARGET_DIR/debug/cairn-jepsen" suite --quick --out "$jepsen_out" \
            || { echo "cairn-jepsen suite failed; results in $jepsen_out" >&2; exit 1; }
        rm -rf "$jepsen_out"
        ;;
    *)
        sed -n '2,13p' "$0" >&2
        exit 2
        ;;
esac
