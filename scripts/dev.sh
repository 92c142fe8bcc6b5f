#!/usr/bin/env bash
# Cairn's developer entry point. On a fresh Debian machine with the Rust
# toolchain it installs what the build needs, then:
#
#   scripts/dev.sh cluster [--fresh] [--tls]  build (optimised) and run a local three-zone cluster, in the foreground
#   scripts/dev.sh run [cairn flags...]   build and run a single member (etcd's defaults: localhost:2379)
#   scripts/dev.sh test                   the whole test suite (unit, integration, etcdctl comparisons)
#   scripts/dev.sh jepsen [--release] ARGS  build cairn and cairn-jepsen, run `cairn-jepsen ARGS`
#   scripts/dev.sh bench ARGS             build cairn-bench (optimised), run `cairn-bench ARGS`
#   scripts/dev.sh compare ARGS           build cairn and cairn-bench (optimised), run benches/compare.sh ARGS
#   scripts/dev.sh compat                 build cairn, run the etcdctl, migration and HTTP comparisons (tests/compat/)
#   scripts/dev.sh deps                   only install the build dependencies
#   scripts/dev.sh selftest-deps          check the dependency check itself (on made-up trees)
#   scripts/dev.sh verify-unit            check contrib/systemd/cairn.service with systemd-analyze verify
#
# Builds go to $CARGO_TARGET_DIR, by default a directory outside the clone
# ($HOME/.cache/cairn/target), so that every clone on this machine (and CI,
# which runs from a fresh clone) reuses the ~12-minute RocksDB C++ build. Only
# the dev profile is used, but by `cluster`: tests, the binary they start and
# `run` share one build; `cluster` builds the release profile (optimised).
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
    # tikv-jemalloc-sys builds jemalloc with its configure script and make.
    command -v make >/dev/null 2>&1 || missing+=(make)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing build dependencies: ${missing[*]}" >&2
        apt_install "${missing[@]}"
    fi
}

# need_etcdctl : etcdctl on the PATH (Debian's etcd-client; not etcd-server,
# whose package may start an etcd on :2379).
need_etcdctl() {
    command -v etcdctl >/dev/null 2>&1 || apt_install etcd-client
}

# port_free PORT : nothing listens on 127.0.0.1:PORT.
port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# cluster [--fresh] [--tls] [--dir DIR] [--client-ports P1,P2,P3] : three
# members, one per zone (az-a, az-b, az-c), on this machine, in the
# foreground. Peer port = client port + 1. The data (and each member's
# development key) stays in DIR between runs; --fresh starts from nothing.
# --tls: client and peer TLS with certificates of a CA made here by
# cairn-certs (DIR/certs, kept between runs like the data), client and peer
# certificates required. CAIRN_BIN=PATH runs that binary instead of building
# one (the test suite does), with the cairn-certs next to it (or
# CAIRN_CERTS_BIN).
cluster() {
    local dir="$root/dev-cluster" fresh=0 tls=0 ports="2379,22379,32379"
    while [ $# -gt 0 ]; do
        case "$1" in
            --fresh) fresh=1 ;;
            --tls) tls=1 ;;
            --dir) dir="$2"; shift ;;
            --client-ports) ports="$2"; shift ;;
            *) echo "cluster: unknown option $1 (--fresh, --tls, --dir DIR, --client-ports P1,P2,P3)" >&2; exit 2 ;;
        esac
        shift
    done
    local bin="${CAIRN_BIN:-}" certs_bin="${CAIRN_CERTS_BIN:-}"
    if [ -z "$bin" ]; then
        deps
        cargo build --release --bin cairn
        bin="$CARGO_TARGET_DIR/release/cairn"
        if [ "$tls" = 1 ] && [ -z "$certs_bin" ]; then
            cargo build --release -p cairn-tls --bin cairn-certs
            certs_bin="$CARGO_TARGET_DIR/release/cairn-certs"
        fi
    fi
    if [ "$tls" = 1 ]; then
        certs_bin="${certs_bin:-$(dirname "$bin")/cairn-certs}"
        [ -x "$certs_bin" ] || { echo "cluster: no cairn-certs at $certs_bin (set CAIRN_CERTS_BIN)" >&2; exit 1; }
    fi
    need_etcdctl
    local names=(a b c) client=() peer=() p
    IFS=, read -r -a client <<<"$ports"
    [ "${#client[@]}" = 3 ] || { echo "cluster: --client-ports takes three ports" >&2; exit 2; }
    for p in "${client[@]}"; do
        peer+=("$((p + 1))")
        for p in "$p" "$((p + 1))"; do
            port_free "$p" || { echo "cluster: port $p is in use (another etcd or cluster?)" >&2; exit 1; }
        done
    done
    [ "$fresh" = 1 ] && rm -rf "$dir"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)  # the printed etcdctl line works from anywhere
    # The members keep their peers' URLs (http or https) in their data: a
    # cluster made with one scheme does not restart with the other.
    local made_tls=0
    [ -e "$dir/certs/ca.pem" ] && made_tls=1
    if [ -d "$dir/a.cairn" ] && [ "$made_tls" != "$tls" ]; then
        local was="without" now="with"
        [ "$made_tls" = 1 ] && was="with" now="without"
        echo "cluster: $dir holds a cluster made $was --tls; it cannot restart $now it (add --fresh to start over)" >&2
        exit 1
    fi
    local scheme=http ctl_tls=() tls_flags=()
    if [ "$tls" = 1 ]; then
        scheme=https
        local certs="$dir/certs" have=1 f
        for f in ca a a-key b b-key c c-key client client-key; do
            [ -s "$certs/$f.pem" ] || have=0
        done
        if [ "$have" = 0 ]; then
            # Every member's certificate serves both its clients and its
            # peers, and is its client certificate when it dials a peer.
            # The client's Common Name is root: with auth enabled it is the
            # user etcd's and Cairn's --client-cert-auth take it for.
            rm -rf "$certs"
            "$certs_bin" "$certs" a=a,127.0.0.1,localhost b=b,127.0.0.1,localhost \
                c=c,127.0.0.1,localhost client=root >/dev/null
            echo "made a CA and certificates in $certs" >&2
        fi
        ctl_tls=(--cacert="$certs/ca.pem" --cert="$certs/client.pem" --key="$certs/client-key.pem")
    fi
    local initial="" i endpoints=""
    for i in 0 1 2; do
        initial+="${initial:+,}${names[$i]}=$scheme://127.0.0.1:${peer[$i]}"
        endpoints+="${endpoints:+,}$scheme://127.0.0.1:${client[$i]}"
    done
    local pids=()
    stop_cluster() {
        trap - INT TERM
        echo "stopping the three members..." >&2
        kill -TERM "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
        echo "stopped; the data stays in $dir (--fresh to start over)" >&2
    }
    trap 'stop_cluster; exit 0' INT TERM
    for i in 0 1 2; do
        if [ "$tls" = 1 ]; then
            local cert="$dir/certs/${names[$i]}.pem" key="$dir/certs/${names[$i]}-key.pem" ca="$dir/certs/ca.pem"
            tls_flags=(--cert-file "$cert" --key-file "$key" --client-cert-auth --trusted-ca-file "$ca"
                --peer-cert-file "$cert" --peer-key-file "$key" --peer-client-cert-auth --peer-trusted-ca-file "$ca")
        fi
        "$bin" --name "${names[$i]}" --zone "az-${names[$i]}" --data-dir "$dir/${names[$i]}.cairn" \
            --listen-client-urls "$scheme://127.0.0.1:${client[$i]}" \
            --advertise-client-urls "$scheme://127.0.0.1:${client[$i]}" \
            --listen-peer-urls "$scheme://127.0.0.1:${peer[$i]}" \
            --initial-advertise-peer-urls "$scheme://127.0.0.1:${peer[$i]}" \
            --initial-cluster "$initial" "${tls_flags[@]}" >>"$dir/${names[$i]}.log" 2>&1 &
        pids+=("$!")
    done
    echo "starting members a, b, c (zones az-a, az-b, az-c); logs in $dir/{a,b,c}.log" >&2
    local deadline=$((SECONDS + 120))
    until ETCDCTL_API=3 etcdctl "${ctl_tls[@]}" --endpoints="$endpoints" --command-timeout=2s endpoint health >/dev/null 2>&1; do
        for p in "${pids[@]}"; do
            kill -0 "$p" 2>/dev/null && continue
            echo "cluster: a member exited while starting; see $dir/*.log" >&2
            stop_cluster
            exit 1
        done
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "cluster: not healthy after 120 s; see $dir/*.log" >&2
            stop_cluster
            exit 1
        fi
        sleep 0.5
    done
    local security=""
    [ "$tls" = 1 ] && security=" Client and peer TLS (certificates in $dir/certs)."
    cat <<EOT
Cairn is serving: three members in zones az-a, az-b, az-c.$security
  endpoints: $endpoints
  etcdctl ${ctl_tls[*]}${ctl_tls[*]:+ }--endpoints=$endpoints endpoint status -w table
Ctrl-C stops all three.
EOT
    # In the foreground until a signal, or until a member stops by itself.
    wait -n "${pids[@]}" || true
    echo "cluster: a member stopped; see $dir/*.log" >&2
    stop_cluster
    exit 1
}

# unit_clean UNIT : systemd-analyze verify finds nothing to say about UNIT
# (it exits 0 on unknown keys and bad values, so its output is the verdict).
unit_clean() {
    local out
    out=$(systemd-analyze verify "$1" 2>&1) && [ -z "$out" ] && return 0
    printf '%s\n' "$out" >&2
    return 1
}

# verify_unit : contrib/systemd/cairn.service passes systemd-analyze verify
# (with ExecStart and EnvironmentFile pointed at this clone's files, which
# verify opens), and a deliberately broken copy does not.
verify_unit() {
    command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
    local t bin="${CAIRN_BIN:-$CARGO_TARGET_DIR/debug/cairn}"
    [ -x "$bin" ] || cargo build --bin cairn
    t=$(mktemp -d)
    sed -e "s#^ExecStart=/usr/local/bin/cairn#ExecStart=$bin#" \
        -e "s#^EnvironmentFile=.*#EnvironmentFile=$root/contrib/systemd/cairn.env#" \
        contrib/systemd/cairn.service >"$t/cairn.service"
    sed -e 's/^Type=notify/Type=notfy/' "$t/cairn.service" >"$t/broken.service"
    local ok=1
    unit_clean "$t/cairn.service" || { echo "verify-unit: contrib/systemd/cairn.service has problems" >&2; ok=0; }
    if unit_clean "$t/broken.service" 2>/dev/null; then
        echo "verify-unit: a broken unit passed the check" >&2; ok=0
    fi
    rm -rf "$t"
    [ "$ok" = 1 ] && echo "verify-unit: contrib/systemd/cairn.service is clean (and a broken copy is caught)"
    [ "$ok" = 1 ]
}

case "${1:-}" in
    verify-unit)
        verify_unit
        ;;
    cluster)
        shift
        cluster "$@"
        ;;
    deps)
        deps
        ;;
    jepsen)
        shift
        deps
        profile=debug release=()
        if [ "${1:-}" = --release ]; then profile=release release=(--release); shift; fi
        # With the test-only feature, as the test suite builds it: the
        # suite's self-test needs it, and the flag is inert unless passed.
        cargo build "${release[@]}" -p cairn-server --bin cairn --features jepsen-broken
        cargo build "${release[@]}" -p cairn-jepsen --bin cairn-jepsen
        exec "$CARGO_TARGET_DIR/$profile/cairn-jepsen" "$@"
        ;;
    bench)
        shift
        cargo build --release -p cairn-bench --bin cairn-bench
        exec "$CARGO_TARGET_DIR/release/cairn-bench" "$@"
        ;;
    compare)
        shift
        deps
        case " $* " in *" --plaintext "*)
            # the benchmark-only build that seals nothing, beside cairn as
            # cairn-plaintext (built first: the feature flip rebuilds cairn-server)
            cargo build --release -p cairn-server --bin cairn --features bench-plaintext
            cp "$CARGO_TARGET_DIR/release/cairn" "$CARGO_TARGET_DIR/release/cairn-plaintext" ;;
        esac
        cargo build --release -p cairn-server --bin cairn
        cargo build --release -p cairn-bench --bin cairn-bench
        # cairn-certs: the certificates of --tls (its libraries are cairn's).
        cargo build --release -p cairn-tls --bin cairn-certs
        CAIRN_BIN="$CARGO_TARGET_DIR/release/cairn" CAIRN_BENCH_BIN="$CARGO_TARGET_DIR/release/cairn-bench" \
            exec bash benches/compare.sh "$@"
        ;;
    compat)
        deps
        cargo build -p cairn-server --bin cairn --features jepsen-broken
        # cairn-certs: the certificates of the TLS comparison.
        cargo build -p cairn-tls --bin cairn-certs
        # The etcdctl sessions, plain, TLS and auth (auth-session.sh).
        CAIRN_BIN="$CARGO_TARGET_DIR/debug/cairn" bash tests/compat/etcdctl-compat.sh
        CAIRN_BIN="$CARGO_TARGET_DIR/debug/cairn" bash tests/compat/cluster-compat.sh
        # cairn migrate: etcd -> Cairn -> etcd with real etcd 3.5.1.
        CAIRN_BIN="$CARGO_TARGET_DIR/debug/cairn" bash tests/compat/migrate.sh
        # The JSON API: curl and etcd3gw against etcd 3.5.1 and Cairn.
        CAIRN_BIN="$CARGO_TARGET_DIR/debug/cairn" bash tests/compat/http-compat.sh
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
        # cairn-certs: the certificates of the TLS comparison and of the
        # dev cluster's --tls run.
        cargo build -p cairn-tls --bin cairn-certs
        # The etcdctl sessions, plain, TLS and auth (auth-session.sh).
        CAIRN_BIN="$CARGO_TARGET_DIR/debug/cairn" bash tests/compat/etcdctl-compat.sh
        CAIRN_BIN="$CARGO_TARGET_DIR/debug/cairn" bash tests/compat/cluster-compat.sh
        # cairn migrate: etcd -> Cairn -> etcd with real etcd 3.5.1.
        CAIRN_BIN="$CARGO_TARGET_DIR/debug/cairn" bash tests/compat/migrate.sh
        # The JSON API: curl and etcd3gw against etcd 3.5.1 and Cairn.
        CAIRN_BIN="$CARGO_TARGET_DIR/debug/cairn" bash tests/compat/http-compat.sh
        # The README's run command (the three-zone cluster, plain and with
        # --tls), end to end.
        CAIRN_BIN="$CARGO_TARGET_DIR/debug/cairn" bash tests/dev-cluster/test.sh
        # cairn-bench end to end against three-member etcd and Cairn (the
        # tool, not the figures: tiny totals, debug builds), with the scale
        # runs (2,000 keys) and the plaintext column; --quick's figures mean
        # nothing, so the sealed build stands in for the plaintext one.
        cargo build -p cairn-bench --bin cairn-bench
        CAIRN_BIN="$CARGO_TARGET_DIR/debug/cairn" CAIRN_BENCH_BIN="$CARGO_TARGET_DIR/debug/cairn-bench" \
            CAIRN_PLAINTEXT_BIN="$CARGO_TARGET_DIR/debug/cairn" bash benches/compare.sh --quick --scale --plaintext
        # cairn-jepsen's short suite: faults across three zones, checked
        # histories, and the self-test against a deliberately broken server.
        cargo build -p cairn-jepsen --bin cairn-jepsen
        jepsen_out="$(mktemp -d /tmp/cairn-jepsen.XXXXXX)"
        "$CARGO_TARGET_DIR/debug/cairn-jepsen" suite --quick --out "$jepsen_out" \
            || { echo "cairn-jepsen suite failed; results in $jepsen_out" >&2; exit 1; }
        rm -rf "$jepsen_out"
        ;;
    *)
        sed -n '2,22p' "$0" >&2
        exit 2
        ;;
esac
