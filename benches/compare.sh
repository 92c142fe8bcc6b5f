#!/usr/bin/env bash
# Side-by-side benchmark: the same cairn-bench workloads against a fresh
# THREE-member etcd 3.5.1 cluster and a fresh THREE-member Cairn cluster on this
# machine (optionally also etcd 3.4 from Debian's etcd-server), one cluster at a
# time, each started, measured and stopped in turn (with --rounds N, N times,
# fresh clusters each time, the order reversed every other round). Prints ONE
# table: per workload, requests/s and p99 latency of etcd and of Cairn with
# their ratio, and the peak RSS of the members (the ratio is Cairn/etcd for
# throughput and etcd/Cairn for latency and RSS, so that >= 1.0 always means
# Cairn is at least as good; over several rounds, each figure is the median of
# the rounds). Everything goes to the results directory: each run's --json
# output, command line and stderr, the members' RSS/CPU per run, table.txt,
# table.md, plot.svg (throughput, p99 latency and RSS per workload, etcd beside
# Cairn, the bars' whiskers spanning the rounds).
#
# Usage (from anywhere):
#   bash benches/compare.sh            # full comparison (a few minutes per cluster)
#   bash benches/compare.sh --quick    # CI: tiny totals; checks the tool end to end
#                                      # (valid JSON, total > 0, errors == 0), not the figures
#   options: --rounds N    N rounds (default 1); figures are the medians of the rounds
#            --out DIR     results directory (default benches/results/<UTC timestamp>)
#            --etcd34      also measure etcd 3.4 (Debian etcd-server; installed if missing)
#            --tls         also measure etcd 3.5.1 and Cairn with client and peer TLS (see below)
#            --plaintext   also measure Cairn's benchmark-only plaintext build (nothing sealed:
#                          the report's "cost of encryption" table; CAIRN_PLAINTEXT_BIN)
#            --scale       then the scale runs of benches/restart.sh (single members of etcd
#                          3.5.1 and Cairn, --scale-keys keys, default 1,000,000: load rate,
#                          restart after kill -9, RSS and data size, put/range at 10,000 keys
#                          and at all of them; with --rounds N, N times); their table joins
#                          the report (medians of the rounds)
#            --publish     (full mode) copy the plot to docs/benchmarks.svg and put the
#                          table into docs/benchmarks.md between its table markers
#            --keep        keep the members' data directories and logs
#            --report DIR  only rebuild table + plot from an existing results directory
# Environment:
#   CAIRN_BIN        Cairn server binary (default $CARGO_TARGET_DIR/release/cairn,
#                    else $CARGO_TARGET_DIR/debug/cairn)
#   CAIRN_BENCH_BIN  cairn-bench binary (default $CARGO_TARGET_DIR/release/cairn-bench,
#                    else target/release/cairn-bench of this clone, else the debug ones)
#   CAIRN_PLAINTEXT_BIN  Cairn built with --features bench-plaintext, for --plaintext
#                    (default: cairn-plaintext next to CAIRN_BIN)
#   CAIRN_CERTS_BIN  cairn-certs, for --tls (default: next to CAIRN_BIN, else in
#                    $CARGO_TARGET_DIR/release or debug)
#   CARGO_TARGET_DIR default ~/.cache/cairn/target (as scripts/dev.sh)
#   CAIRN_TOOLS_DIR  cache of the etcd 3.5.1 binaries (see tests/compat/lib.sh)
#   COMPARE_PORT     first loopback port to try (default 25790); a cluster takes six
#   COMPARE_RUN_TIMEOUT  seconds one cairn-bench run may take (default 900, quick 60)
#   COMPARE_IDLE_WAIT    before each run, wait up to this many seconds while a cargo,
#                    rustc or cargo-nextest process or another etcd or cairn server runs
#                    on the machine (default 900, quick 0); a run during which one ran
#                    anyway is flagged in the log and the table
#
# Workloads (etcd's tools/benchmark and its performance page, op-guide/performance):
# see "workloads" below; the full-mode totals are sized for a 2-core machine.
# Every cluster is fresh and empty; its members are m1, m2, m3, started with etcd's
# flags and default settings, and m1 is made the leader before the first run
# (etcdctl move-leader), so that every server runs with the same member leading
# (cairn-bench, like etcd's clientv3, sends each connection's calls round-robin to
# all the endpoints). Before the first run, key "foo" (read by the range runs) is
# written with a 256-byte value. Peak RSS per run: each member's high-water mark
# (VmHWM) is reset before the run (/proc/PID/clear_refs, "5") and read after it.
#
# TLS (--tls): after the plain clusters, the same workloads against a three-member
# etcd 3.5.1 cluster and a three-member Cairn cluster with client and peer TLS: one
# set of certificates for both, made by cairn-certs for the run (a CA; per member a
# certificate for 127.0.0.1 and localhost, used as server certificate for clients and
# peers and as client certificate towards peers; a client certificate, CN root), every
# URL https://, and the members started with etcd's --cert-file --key-file
# --client-cert-auth --trusted-ca-file and the --peer-* twins. cairn-bench and etcdctl
# get --cacert --cert --key. The report adds the table of the TLS clusters (Cairn TLS
# against etcd TLS) and the cost of TLS (each server against itself without TLS).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
helper="$here/compare.py"

quick=0 etcd34=0 tls=0 publish=0 keep_arg=() out= report_only= rounds=1 plaintext=0 scale=0
scale_keys=
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --etcd34) etcd34=1 ;;
    --tls) tls=1 ;;
    --plaintext) plaintext=1 ;;
    --scale) scale=1 ;;
    --scale-keys) shift; scale_keys=${1:?--scale-keys needs a number} ;;
    --scale-keys=*) scale_keys=${1#--scale-keys=} ;;
    --publish) publish=1 ;;
    --keep) keep_arg=(--keep) ;;
    --rounds) shift; rounds=${1:?--rounds needs a number} ;;
    --rounds=*) rounds=${1#--rounds=} ;;
    --out) shift; out=${1:?--out needs a directory} ;;
    --out=*) out=${1#--out=} ;;
    --report) shift; report_only=${1:?--report needs a results directory} ;;
    --report=*) report_only=${1#--report=} ;;
    -h|--help) usage; exit 0 ;;
    *) echo "compare: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$quick" = 0 ] || [ "$publish" = 0 ] || { echo "compare: --publish needs a full run, not --quick" >&2; exit 2; }
# docs/benchmarks.md's table is the plain comparison; a TLS run's tables stay in its results
[ "$tls" = 0 ] || [ "$publish" = 0 ] || { echo "compare: --publish is for runs without --tls" >&2; exit 2; }
case "$rounds" in ''|*[!0-9]*|0) echo "compare: --rounds needs a positive number" >&2; exit 2 ;; esac

publish_args=()
[ "$publish" = 0 ] || publish_args=(--publish-md "$repo/docs/benchmarks.md" --publish-svg "$repo/docs/benchmarks.svg")

if [ -n "$report_only" ]; then
  exec python3 "$helper" report "$report_only" "${publish_args[@]}"
fi

# ---------------------------------------------------------------------------
# binaries
target_dir=${CARGO_TARGET_DIR:-$HOME/.cache/cairn/target}
first_exe() { local f; for f in "$@"; do [ -x "$f" ] && { echo "$f"; return 0; }; done; return 1; }
cairn_bin=${CAIRN_BIN:-$(first_exe "$target_dir/release/cairn" "$target_dir/debug/cairn" || true)}
bench_bin=${CAIRN_BENCH_BIN:-$(first_exe "$target_dir/release/cairn-bench" "$repo/target/release/cairn-bench" \
  "$target_dir/debug/cairn-bench" "$repo/target/debug/cairn-bench" || true)}
[ -n "$cairn_bin" ] && [ -x "$cairn_bin" ] ||
  { echo "compare: no Cairn binary (build it: cargo build --release -p cairn-server --bin cairn; or set CAIRN_BIN)" >&2; exit 1; }
[ -n "$bench_bin" ] && [ -x "$bench_bin" ] ||
  { echo "compare: no cairn-bench binary (build it: cargo build --release -p cairn-bench; or set CAIRN_BENCH_BIN)" >&2; exit 1; }
bench_bin=$(cd "$(dirname "$bench_bin")" && pwd)/$(basename "$bench_bin")
export CAIRN_BIN=$cairn_bin
if [ "$plaintext" = 1 ]; then
  plaintext_bin=${CAIRN_PLAINTEXT_BIN:-$(dirname "$cairn_bin")/cairn-plaintext}
  [ -x "$plaintext_bin" ] || { echo "compare: no plaintext build of Cairn at $plaintext_bin (build it:" \
    "cargo build --release -p cairn-server --bin cairn --features bench-plaintext, and copy it there;" \
    "scripts/dev.sh compare --plaintext does; or set CAIRN_PLAINTEXT_BIN)" >&2; exit 1; }
fi
if [ "$tls" = 1 ]; then
  certs_bin=${CAIRN_CERTS_BIN:-$(first_exe "$(dirname "$cairn_bin")/cairn-certs" "$target_dir/release/cairn-certs" \
    "$target_dir/debug/cairn-certs" || true)}
  [ -n "$certs_bin" ] && [ -x "$certs_bin" ] ||
    { echo "compare: no cairn-certs binary (build it: cargo build -p cairn-tls --bin cairn-certs; or set CAIRN_CERTS_BIN)" >&2; exit 1; }
  export CAIRN_CERTS_BIN=$certs_bin
fi

# servers, ports, health checks and etcd 3.5.1 (and 3.4) from the etcdctl comparison;
# only etcdctl 3.5 is needed here (health checks, move-leader, the "foo" key)
# shellcheck source=tests/compat/lib.sh
. "$repo/tests/compat/lib.sh" --ctl 3.5 "${keep_arg[@]}"
log() { echo "compare: $*" >&2; }
base_port=${COMPARE_PORT:-25790}

# the commit of the sources of cairn and cairn-bench, "+changes" when they differ from it
source_commit() {
  local c
  c=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null) || { echo unknown; return; }
  if [ -n "$(git -C "$repo" status --porcelain -- server client proto benches/src benches/Cargo.toml \
      Cargo.toml Cargo.lock 2>/dev/null)" ]; then
    c+="+changes"
  fi
  echo "$c"
}

# stale_check BINARY SOURCE_DIR... : warn about a debug build, or one older than its sources
stale_check() {
  local b=$1
  shift
  case "$b" in */debug/*)
    if [ "$quick" = 0 ]; then log "WARNING: $b is a DEBUG build: the figures mean nothing"; fi ;;
  esac
  if [ -n "$(find "$@" -newer "$b" \( -name '*.rs' -o -name '*.proto' \) 2>/dev/null | head -n 1)" ]; then
    log "WARNING: $b is older than the sources (rebuild it?)"
  fi
}
stale_check "$cairn_bin" "$repo/server/src" "$repo/proto"
stale_check "$bench_bin" "$repo/benches/src" "$repo/proto"

commit=$(source_commit)
built() { date -u -r "$1" +'%Y-%m-%d %H:%M UTC'; }
kind_label() {
  case "$1" in
    etcd-3.5) echo "etcd 3.5.1" ;; etcd-3.4) echo "etcd 3.4" ;; cairn) echo Cairn ;;
    cairn-plaintext) echo "Cairn, plaintext build" ;;
    *-tls) echo "$(kind_label "${1%-tls}"), TLS" ;;
  esac
}
version_of() {
  case "${1%-tls}" in
    cairn) echo "Cairn $commit (binary built $(built "$2"))" ;;
    cairn-plaintext) echo "Cairn $commit plaintext build (binary built $(built "$2"))" ;;
    *) "$2" --version 2>&1 | sed -n 's/^etcd Version: /etcd /p' | head -n 1 ;;
  esac
}


kinds=(etcd-3.5 cairn)
etcd34_bin=
if [ "$etcd34" = 1 ]; then
  ensure_debian_etcd  # lib.sh: Debian etcd-server + etcd-client 3.4
  etcd34_bin=$(command -v etcd)
  case "$("$etcd34_bin" --version 2>&1 | head -n 1)" in
    "etcd Version: 3.4."*) ;;
    *) die "$etcd34_bin is not etcd 3.4" ;;
  esac
  kinds=(etcd-3.5 etcd-3.4 cairn)
fi
[ "$plaintext" = 0 ] || kinds+=(cairn-plaintext)
if [ "$tls" = 1 ]; then
  kinds+=(etcd-3.5-tls cairn-tls)
  # the run's certificates (see the header), in $work (removed on exit)
  certs="$work/certs"
  "$certs_bin" "$certs" m1=m1,127.0.0.1,localhost m2=m2,127.0.0.1,localhost m3=m3,127.0.0.1,localhost \
    client=root >/dev/null
fi

# ---------------------------------------------------------------------------
# workloads: NAME|DESCRIPTION|GLOBAL FLAGS|SUBCOMMAND AND ITS FLAGS[|REPORT]
# (REPORT: the run's report the row shows, by default the one named after the
# subcommand)
if [ "$quick" = 0 ]; then
  t1_put=5000 t1_range=5000 tn_put=100000 tn_range=100000 t_txn=20000 t_lease=50000
  cn="--conns 100 --clients 1000"
  streams=10 watchers=10 put_total=1000 put_rate=100
  big_streams=100 big_watchers=100 big_keys=1000 big_total=10000 big_rate=1000
  kube="--conns 10 --clients 100" kube_keys=10000 kube_total=20000 kube_every=100
  large="--conns 10 --clients 10" t_100k=1000 t_1m=200
  run_timeout=${COMPARE_RUN_TIMEOUT:-900}
  idle_wait=${COMPARE_IDLE_WAIT:-900}
else
  t1_put=200 t1_range=200 tn_put=200 tn_range=200 t_txn=200 t_lease=200
  cn="--conns 5 --clients 10"
  streams=2 watchers=2 put_total=20 put_rate=200
  big_streams=4 big_watchers=5 big_keys=10 big_total=40 big_rate=200
  kube="--conns 2 --clients 4" kube_keys=100 kube_total=200 kube_every=20
  large="--conns 2 --clients 2" t_100k=10 t_1m=4
  run_timeout=${COMPARE_RUN_TIMEOUT:-60}
  idle_wait=${COMPARE_IDLE_WAIT:-0}
fi
watch="--put-total $put_total --put-rate $put_rate --streams $streams --watchers-per-stream $watchers"
c1="--conns 1 --clients 1"
kv="--key-size 8 --val-size 256"
workloads=(
  "put-1|put|$c1|put $kv --sequential-keys --key-space-size 100000 --total $t1_put"
  "put-n|put, 100,000 keys|$cn|put $kv --sequential-keys --key-space-size 100000 --total $tn_put"
  "range-l-1|range, linearizable|$c1|range foo --consistency l --total $t1_range"
  "range-l-n|range, linearizable|$cn|range foo --consistency l --total $tn_range"
  "range-s-1|range, serializable|$c1|range foo --consistency s --total $t1_range"
  "range-s-n|range, serializable|$cn|range foo --consistency s --total $tn_range"
  "txn-put|txn-put, 4 puts per txn|$cn|txn-put $kv --txn-ops 4 --key-space-size 100000 --total $t_txn"
  "watch-latency|watch-latency, $((streams * watchers)) watchers on $streams streams, $put_rate puts/s||watch-latency $kv $watch"
  "lease-keepalive|lease-keepalive|$cn|lease-keepalive --total $t_lease"
  # at scale (Cairn's additions to etcd's workloads)
  "watchers|watch-latency, $((big_streams * big_watchers)) watchers of $big_keys keys on $big_streams streams, $big_rate puts/s|--conns $big_streams --clients $big_streams|watch-latency $kv --streams $big_streams --watchers-per-stream $big_watchers --key-space-size $big_keys --put-total $big_total --put-rate $big_rate"
  # the updates alone: in the report of every operation, the lists (one in
  # --list-every) sit at its 99th percentile
  "kube|Kubernetes-shaped: updates of $kube_keys 1 KiB objects beside lists and a watch|$kube|kube --keys $kube_keys --total $kube_total --list-every $kube_every|kube-update"
  "kube-list|Kubernetes-shaped: whole lists of $kube_keys objects, 500 a page||=kube kube-list"
  "kube-watch|Kubernetes-shaped: the watch's events||=kube kube-watch"
  "put-100k|put, 100 KiB values|$large|put --key-size 8 --val-size 102400 --sequential-keys --key-space-size 1000 --total $t_100k"
  "put-1m|put, 1 MiB values|$large|put --key-size 8 --val-size 1048576 --sequential-keys --key-space-size 100 --total $t_1m"
)

# ---------------------------------------------------------------------------
# results directory
out=${out:-$here/results/$(date -u +%Y%m%dT%H%M%SZ)$([ "$quick" = 0 ] || echo -quick)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
log "results in $out"
{
  printf 'mode\t%s\n' "$([ "$quick" = 1 ] && echo quick || echo full)"
  printf 'tls\t%s\n' "$([ "$tls" = 1 ] && echo yes || echo no)"
  printf 'rounds\t%s\n' "$rounds"
  printf 'date\t%s\n' "$(date -u +'%Y-%m-%d %H:%M UTC')"
  printf 'cpus\t%s\n' "$(nproc)"
  printf 'cpu\t%s\n' "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
  printf 'memory\t%s\n' "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  printf 'kernel\t%s\n' "$(uname -sr)"
  printf 'disk\t%s\n' "$(df -h "$work" | awk 'NR == 2 { print $1 " (" $2 ", data dirs under " $6 ")" }')"
  printf 'cairn_bin\t%s\n' "$cairn_bin"
  printf 'bench_bin\t%s\n' "$bench_bin"
  printf 'cairn_commit\t%s\n' "$commit"
  printf 'cairn_built\t%s\n' "$(built "$cairn_bin")"
  printf 'bench_built\t%s\n' "$(built "$bench_bin")"
} >"$out/machine.tsv"
: >"$out/workloads.tsv"
for w in "${workloads[@]}"; do
  IFS='|' read -r name desc global sub report <<<"$w"
  case "$sub" in *--put-rate*|*--rate*|=*-watch) fixed=fixed-rate ;; *) fixed= ;; esac
  case "$sub" in
    =*)  # another row of a run: "=RUN REPORT" (the run's report named REPORT)
      read -r source report <<<"${sub#=}"
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$desc" "(the $source run)" "$report" "$fixed" "$source" \
        >>"$out/workloads.tsv" ;;
    *)
      printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$desc" "cairn-bench --endpoints \$EPS $global --json $sub" "${report:-${sub%% *}}" \
        "$fixed" >>"$out/workloads.tsv" ;;
  esac
done
: >"$out/kinds.tsv"
# bin_of KIND : the server binary of KIND (with or without TLS)
bin_of() {
  case "${1%-tls}" in
    etcd-3.5) echo "$etcd_bin" ;; etcd-3.4) echo "$etcd34_bin" ;; cairn) echo "$cairn_bin" ;;
    cairn-plaintext) echo "$plaintext_bin" ;;
  esac
}
for kind in "${kinds[@]}"; do
  b=$(bin_of "$kind")
  printf '%s\t%s\t%s\t%s\n' "$kind" "$(kind_label "$kind")" "$b" "$(version_of "$kind" "$b")" >>"$out/kinds.tsv"
done

# ---------------------------------------------------------------------------
# clusters
client_tls=()
# start_cluster KIND : three fresh members m1..m3 of KIND (etcd-3.5, etcd-3.4, cairn;
# etcd-3.5-tls, cairn-tls: with client and peer TLS); waits until all three are
# healthy; sets $clients, $client_tls (the TLS flags of etcdctl and cairn-bench),
# $member_names, $member_pids
start_cluster() {
  local kind=$1 n initial= bin t0=$SECONDS scheme=http
  local -a client=() peer=() args=() server_tls=()
  next_port=$base_port first_port=
  client_tls=()
  case "$kind" in *-tls)
    scheme=https
    client_tls=(--cacert "$certs/ca.pem" --cert "$certs/client.pem" --key "$certs/client-key.pem") ;;
  esac
  for n in 1 2 3; do
    pick_port; client+=("$scheme://127.0.0.1:$port")
    pick_port; peer+=("$scheme://127.0.0.1:$port")
  done
  for n in 1 2 3; do initial+="${initial:+,}m$n=${peer[n - 1]}"; done
  rm -rf "${work:?}/$kind"
  mkdir -p "$work/$kind"
  bin=$(bin_of "$kind")
  for n in 1 2 3; do
    args=(--name "m$n" --data-dir "$work/$kind/m$n.data"
      --listen-client-urls "${client[n - 1]}" --advertise-client-urls "${client[n - 1]}"
      --listen-peer-urls "${peer[n - 1]}" --initial-advertise-peer-urls "${peer[n - 1]}"
      --initial-cluster "$initial" --initial-cluster-token cairn-compare --initial-cluster-state new)
    case "$kind" in cairn*) args+=(--zone "az-$n") ;; esac
    if [ "$scheme" = https ]; then
      server_tls=("$certs/m$n.pem" "$certs/m$n-key.pem" "$certs/ca.pem")
      args+=(--cert-file "${server_tls[0]}" --key-file "${server_tls[1]}" --client-cert-auth
        --trusted-ca-file "${server_tls[2]}" --peer-cert-file "${server_tls[0]}"
        --peer-key-file "${server_tls[1]}" --peer-client-cert-auth --peer-trusted-ca-file "${server_tls[2]}")
    fi
    spawn "$work/$kind/m$n.log" "$bin" "${args[@]}"
  done
  # the endpoints of etcdctl and cairn-bench: host:port without TLS (as always
  # here), https:// URLs with it
  clients=$(IFS=,; echo "${client[*]}")
  [ "$scheme" = https ] || clients=${clients//http:\/\//}
  wait_healthy "$kind cluster" "${clients%%,*}" 3 --cluster "${client_tls[@]}"
  log "$kind: healthy after $((SECONDS - t0))s"
  member_pids=("${server_pids[@]}")
}

ctl() { ETCDCTL_API=3 "$ctl35" --endpoints="$clients" --dial-timeout=2s --command-timeout=10s "${client_tls[@]}" "$@"; }

# leader_of : prints the name (m1..m3) of the member that leads, by `endpoint status`
leader_of() { ctl endpoint status -w json 2>/dev/null | python3 "$helper" leader "$clients"; }

# make_m1_leader : move the leadership to m1 (the first endpoint)
make_m1_leader() {
  local info leader m1_id deadline=$((SECONDS + 30))
  while :; do
    info=$(ctl endpoint status -w json 2>/dev/null | python3 "$helper" leader "$clients" --ids) || info=
    leader=${info%% *}
    [ "$leader" != m1 ] || return 0
    if [ -n "$info" ] && [ "$leader" != none ]; then
      m1_id=$(echo "$info" | cut -d' ' -f2)
      ETCDCTL_API=3 "$ctl35" --endpoints="$(echo "$info" | cut -d' ' -f3)" --command-timeout=10s \
        "${client_tls[@]}" move-leader "$m1_id" >/dev/null 2>&1 || true
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "could not make m1 the leader (last: '$info')"
    sleep 0.5
  done
}

# member_stats : one JSON object: per member, VmHWM and VmRSS (KiB) and CPU seconds
member_stats() {
  local i pid hwm rss cpu sep= tck
  tck=$(getconf CLK_TCK)
  printf '{'
  for i in 0 1 2; do
    pid=${member_pids[$i]}
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
    # utime + stime: fields 14 and 15 of /proc/PID/stat (after the ")" of comm: 12, 13)
    cpu=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk -v t="$tck" '{ printf "%.2f", ($12 + $13) / t }' || echo 0)
    printf '%s"m%d": {"pid": %d, "hwm_kib": %d, "rss_kib": %d, "cpu_s": %s}' \
      "$sep" $((i + 1)) "$pid" "${hwm:-0}" "${rss:-0}" "${cpu:-0}"
    sep=', '
  done
  printf '}'
}
reset_hwm() {
  local pid
  for pid in "${member_pids[@]}"; do echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || hwm_reset=0; done
}
members_alive() {
  local i
  for i in 0 1 2; do
    kill -0 "${member_pids[$i]}" 2>/dev/null || { log "member m$((i + 1)) died (log: ${server_logs[$i]})"; return 1; }
  done
}

# others_running : what else loads the machine: the pids of running cargo, rustc and
# cargo-nextest processes and of etcd or cairn servers that are not our members
others_running() {
  local pid mine m
  for pid in $({ pgrep -x cargo; pgrep -x rustc; pgrep -x cargo-nextest; pgrep -x etcd; pgrep -x cairn; } 2>/dev/null); do
    mine=0
    for m in "${member_pids[@]}"; do [ "$pid" != "$m" ] || mine=1; done
    [ "$mine" = 1 ] || printf '%s ' "$pid"
  done
}

# wait_idle WHAT : wait (up to $idle_wait s) until no build and no other etcd / cairn
# server runs, so that they do not skew the figures; go on (and warn) after that
wait_idle() {
  local deadline=$((SECONDS + idle_wait)) b
  b=$(others_running)
  [ -n "$b" ] || return 0
  [ "$idle_wait" -gt 0 ] || return 0
  log "a build or another server is running (pids $b): waiting up to ${idle_wait}s before $1"
  while [ -n "$(others_running)" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 2; done
}

failures=0
# run_workloads KIND DIR
run_workloads() {
  local kind=$1 dir=$2 w name desc global sub rc t0 before after leader busy
  local -a cmd
  mkdir -p "$dir"
  log "$kind: members $clients (pids ${member_pids[*]}); results in ${dir#"$out"/}"
  t0=$SECONDS
  make_m1_leader
  log "$kind: m1 leads ($((SECONDS - t0))s)"
  # the key of the range runs (the put runs write 8-byte binary keys, never "foo")
  ctl put foo "$(head -c 256 /dev/zero | tr '\0' v)" >/dev/null
  member_stats >"$dir/startup.stats.json"
  for w in "${workloads[@]}"; do
    IFS='|' read -r name desc global sub _ <<<"$w"
    case "$sub" in =*) continue ;; esac  # a row of another run
    # shellcheck disable=SC2206  # the flags are words
    cmd=(timeout -s INT -k 10 "$run_timeout" "$bench_bin" --endpoints "$clients" "${client_tls[@]}" $global --json $sub)
    printf '%q ' "${cmd[@]:6}" >"$dir/$name.cmd"; echo >>"$dir/$name.cmd"
    wait_idle "$kind $name"
    hwm_reset=1
    reset_hwm
    before=$(member_stats)
    busy=$(others_running)
    t0=$SECONDS
    "${cmd[@]}" >"$dir/$name.json" 2>"$dir/$name.stderr" </dev/null &
    session_pid=$!
    rc=0
    wait "$session_pid" || rc=$?
    session_pid=
    after=$(member_stats)
    leader=$(leader_of || echo unknown)
    # anything heavy beside us (a build) skews the figures: say so
    busy+=$(others_running)
    [ -z "$busy" ] || log "WARNING: a build or another server ran during $kind $name (pids $busy): its figures are skewed"
    printf '{"rc": %d, "wall_s": %d, "hwm_reset": %s, "leader_after": "%s", "builds_running": "%s", "before": %s, "after": %s}\n' \
      "$rc" $((SECONDS - t0)) "$([ "$hwm_reset" = 1 ] && echo true || echo false)" "$leader" "${busy% }" "$before" "$after" \
      >"$dir/$name.stats.json"
    if [ "$rc" != 0 ]; then
      failures=$((failures + 1))
      log "$kind $name: cairn-bench exited with $rc after $((SECONDS - t0))s; stderr:"
      tail -n 20 "$dir/$name.stderr" >&2 || true
    else
      log "$kind $name: $(python3 "$helper" brief "$dir/$name.json") (${SECONDS}s since start; leader $leader)"
    fi
    members_alive || { failures=$((failures + 1)); break; }
    [ "$quick" = 1 ] || sleep 2  # let the members settle (background commits, GC)
  done
}

for round in $(seq 1 "$rounds"); do
  order=("${kinds[@]}")
  if [ $((round % 2)) = 0 ]; then  # every other round in reverse: no cluster always goes first
    order=()
    for ((i = ${#kinds[@]} - 1; i >= 0; i--)); do order+=("${kinds[i]}"); done
  fi
  for kind in "${order[@]}"; do
    log "round $round/$rounds: starting a three-member $kind cluster"
    start_cluster "$kind"
    run_workloads "$kind" "$out/$kind/r$round"
    t0=$SECONDS
    stop_servers
    log "$kind: stopped ($((SECONDS - t0))s)"
    [ "${#keep_arg[@]}" = 0 ] || cp "$work/$kind"/m*.log "$out/$kind/r$round/" 2>/dev/null || true
  done
done

# the scale runs: single members, one server at a time (benches/restart.sh)
if [ "$scale" = 1 ]; then
  [ -n "$scale_keys" ] || scale_keys=$([ "$quick" = 1 ] && echo 2000 || echo 1000000)
  scale_args=(--keys "$scale_keys")
  [ "$quick" = 0 ] || scale_args+=(--restarts 1 --flat-total 200)
  # as many rounds as the three-member runs, each in its own directory, the
  # server that goes first alternating as there
  for round in $(seq 1 "$rounds"); do
    first=$([ $((round % 2)) = 1 ] && echo etcd || echo cairn)
    log "scale round $round/$rounds: benches/restart.sh with $scale_keys keys, $first first"
    CAIRN_BIN=$cairn_bin CAIRN_BENCH_BIN=$bench_bin bash "$here/restart.sh" "${scale_args[@]}" \
      --first "$first" --out "$out/scale/r$round" "${keep_arg[@]}" ||
      { failures=$((failures + 1)); log "scale round $round failed"; }
  done
fi

# ---------------------------------------------------------------------------
# report
if [ "$quick" = 1 ]; then
  check_rc=0
  python3 "$helper" check "$out" || check_rc=$?
  python3 "$helper" report "$out" >/dev/null || check_rc=1
  if [ "$failures" != 0 ] || [ "$check_rc" != 0 ]; then
    log "QUICK CHECK FAILED ($failures failed runs; see above and $out)"
    exit 1
  fi
  log "quick check PASSED: every run of every cluster gave valid JSON with total > 0 and no errors ($out)"
  exit 0
fi
python3 "$helper" report "$out" "${publish_args[@]}"
if [ "$failures" != 0 ]; then
  log "$failures run(s) failed (see above); their rows are marked in the table"
  exit 1
fi
