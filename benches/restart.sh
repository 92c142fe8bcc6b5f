#!/usr/bin/env bash
# Restart time after kill -9, etcd 3.5.1 and Cairn side by side (issue 19): a fresh
# SINGLE-member server of each kind is loaded with N keys (cairn-bench put:
# N sequential keys, then N/10 random overwrites among them; 256-byte values; 1,000
# clients over 100 connections), killed with SIGKILL right after the load, and
# started again on the same data directory; the figure is the time from the start
# of the new process until a linearizable Get (etcdctl 3.5, polled every ~30 ms)
# succeeds. With --restarts R, the member is then killed again (at rest) and
# restarted R-1 more times. Also reported: the data directory's size at rest (after
# the kill), the member's RSS just before the kill and once it answers again, and
# whether throughput stays flat as the store grows: put (random keys, 1,000 clients
# over 100 connections) and linearizable range (a random one of the keys) with
# 10,000 keys in a fresh server, and again once all N are in (--flat-total requests
# each), and then the range among the first 10,000 keys of the loaded server
# (the same keys as the 10,000-key run reads, on a server holding N). The
# 10,000-key runs come first, on servers of their own, in the order
# A B B A (each kind's figure the mean of its two): a server that ran right after
# the other's 1,000,000-key phase ran slower, and with both orders in one round
# no kind is favoured by its place.
# `benches/compare.sh --scale` runs this script and puts its table in its report.
#
# Usage (from anywhere):
#   bash benches/restart.sh                 # N = 1,000,000 (about 2 x 2 minutes of load on 2 cores)
#   bash benches/restart.sh --keys 200000   # smaller N while iterating
#   options: --keys N      keys to load (default 1000000)
#            --restarts R  restarts per server (default 2: after the load, then at rest)
#            --only KIND   etcd or cairn (default both, etcd first)
#            --first KIND  with both, which runs first (default etcd; compare.sh alternates)
#            --out DIR     results directory (default benches/results/restart-<UTC timestamp>)
#            --flat-total T  requests of each put/range run (default 50000; 0: no such runs)
#            --keep        keep the data directories and logs
# Environment: CAIRN_BIN, CAIRN_BENCH_BIN, CARGO_TARGET_DIR, CAIRN_TOOLS_DIR as
# benches/compare.sh (release builds first); RESTART_PORT first port (default 25990);
# RESTART_PERF=1 records each Cairn restart with `perf record -g` (cairn.restartR.perf).
#
# Results: table.txt (one row per server: load seconds, each restart's seconds,
# RSS, data size, the put and range rates at 10,000 and at N keys), scale.tsv (the
# same, one "server, figure, value" line each, for compare.sh), each server's logs (Cairn's "start-up phase" lines give the
# breakdown of its restarts), the cairn-bench reports.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

keys=1000000 restarts=2 only= first=etcd out= keep_arg=() flat_total=50000 small=10000
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --keys) shift; keys=${1:?--keys needs a number} ;;
    --restarts) shift; restarts=${1:?--restarts needs a number} ;;
    --only) shift; only=${1:?--only needs etcd or cairn} ;;
    --first) shift; first=${1:?--first needs etcd or cairn} ;;
    --out) shift; out=${1:?--out needs a directory} ;;
    --flat-total) shift; flat_total=${1:?--flat-total needs a number} ;;
    --keep) keep_arg=(--keep) ;;
    -h|--help) usage; exit 0 ;;
    *) echo "restart: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$keys" in ''|*[!0-9]*|0) echo "restart: --keys needs a positive number" >&2; exit 2 ;; esac
case "$restarts" in ''|*[!0-9]*|0) echo "restart: --restarts needs a positive number" >&2; exit 2 ;; esac
case "$flat_total" in ''|*[!0-9]*) echo "restart: --flat-total needs a number" >&2; exit 2 ;; esac
[ "$small" -lt "$keys" ] || small=$((keys / 10 > 0 ? keys / 10 : 1))
case "$only" in ''|etcd|cairn) ;; *) echo "restart: --only takes etcd or cairn" >&2; exit 2 ;; esac
case "$first" in etcd) order=(etcd cairn) ;; cairn) order=(cairn etcd) ;;
  *) echo "restart: --first takes etcd or cairn" >&2; exit 2 ;; esac

# shellcheck source=benches/bins.sh
. "$here/bins.sh" restart

# etcd 3.5.1, etcdctl 3.5, ports, spawn/stop helpers
# shellcheck source=tests/compat/lib.sh
. "$repo/tests/compat/lib.sh" --ctl 3.5 "${keep_arg[@]}"
log() { echo "restart: $*" >&2; }
next_port=${RESTART_PORT:-25990}
ready_timeout=600

out=${out:-$repo/benches/results/restart-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
log "results in $out (N = $keys)"
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }
rss_kib() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$1/status" 2>/dev/null || echo 0; }

# start KIND DATA LOG : starts one single-member server of KIND on $data, sets $pid
start() {
  local kind=$1 data=$2 log_file=$3 bin=$etcd_bin
  local -a args=(--name m1 --data-dir "$data"
    --listen-client-urls "http://$client" --advertise-client-urls "http://$client"
    --listen-peer-urls "http://$peer" --initial-advertise-peer-urls "http://$peer"
    --initial-cluster "m1=http://$peer" --initial-cluster-token cairn-restart
    --initial-cluster-state new)
  if [ "$kind" = cairn ]; then
    bin=$cairn_bin
    args+=(--encryption-key-file "$key_file")
  fi
  "$bin" "${args[@]}" >>"$log_file" 2>&1 &
  pid=$!
}

# until_read : polls a linearizable Get until it succeeds (the server must stay up)
until_read() {
  while :; do
    kill -0 "$pid" 2>/dev/null || die "the server exited while restarting (log: $log_file)"
    if ETCDCTL_API=3 "$ctl35" --endpoints="$client" --dial-timeout=1s --command-timeout=2s \
      get --consistency=l restart-probe >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.03
  done
}

row_fmt='%-6s %8s %8s %-24s %8s %8s %8s %9s %9s %9s %9s\n'
# shellcheck disable=SC2059  # the format is ours
printf "$row_fmt" server keys load_s restart_s rss_mib rss2_mib data_mib put_small put_all range_small \
  range_all >"$out/table.txt"
: >"$out/scale.tsv"
# figure KIND NAME VALUE : one line of scale.tsv
figure() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$out/scale.tsv"; }
# rate_of FILE : requests/s of a cairn-bench --json report (its last line), "failed" with errors
rate_of() {
  tail -n 1 "$1" | python3 -c 'import json, sys
o = json.load(sys.stdin)
print(round(o["rps"]) if o["errors"] == 0 else "failed")'
}
# flat KIND AT N : the put and range runs with N keys in the store (put_rps_AT, range_rps_AT)
flat() {
  local kind=$1 at=$2 n=$3
  flat_put=- flat_range=-
  [ "$flat_total" -gt 0 ] || return 0
  "$bench_bin" --endpoints "$client" --conns 100 --clients 1000 --json \
    put --total "$flat_total" --key-space-size "$n" --val-size 256 >"$out/$kind.put-$at.json"
  "$bench_bin" --endpoints "$client" --conns 100 --clients 1000 --json \
    range --key-space-size "$n" --consistency l --total "$flat_total" >"$out/$kind.range-$at.json"
  flat_put=$(rate_of "$out/$kind.put-$at.json") flat_range=$(rate_of "$out/$kind.range-$at.json")
  figure "$kind" "put_rps_$at" "$flat_put"
  figure "$kind" "range_rps_$at" "$flat_range"
  log "$kind: with $n keys: put $flat_put/s, linearizable range $flat_range/s"
  [ "$at" = all ] || return 0
  # The same loaded server read among its first $small keys only: the range's
  # loss at N keys split into what the keys read cost and what the loaded
  # server costs whichever keys it reads.
  "$bench_bin" --endpoints "$client" --conns 100 --clients 1000 --json \
    range --key-space-size "$small" --consistency l --total "$flat_total" >"$out/$kind.range-all-first.json"
  local first
  first=$(rate_of "$out/$kind.range-all-first.json")
  figure "$kind" range_rps_all_first "$first"
  log "$kind: with $n keys: linearizable range among the first $small $first/s"
}

# fresh KIND DIR LOG : a fresh single-member server of KIND with its data under DIR
# (written out first: `sync`, so no server starts while the last one's writes drain)
fresh() {
  local kind=$1 dir=$2
  log_file=$3
  sync
  pick_port; client=127.0.0.1:$port
  pick_port; peer=127.0.0.1:$port
  mkdir -p "$dir"
  data="$dir/m1.data"
  : >"$log_file"
  key_file="$dir/master.key"
  head -c 32 /dev/urandom | base64 >"$key_file"
  chmod 600 "$key_file"
  start "$kind" "$data" "$log_file"
  server_pids=("$pid") server_logs=("$log_file")
  wait_healthy "$kind" "$client" 1
}

# mean A B : the mean of two rates ("failed" if either failed, "-" if either was not run)
mean() {
  case "$1 $2" in *failed*) echo failed ;; -*|*-) echo - ;; *) echo $((($1 + $2 + 1) / 2)) ;; esac
}

# small KIND I : the I-th run of KIND at $small keys (one sequential pass, then the
# put and range runs), on a fresh server; the rates in small_put[KIND], small_range[KIND]
declare -A small_put=() small_range=()
small() {
  local kind=$1 i=$2
  fresh "$kind" "$work/$kind-small$i" "$out/$kind.small$i.log"
  "$bench_bin" --endpoints "$client" --conns 100 --clients 1000 --json \
    put --total "$small" --key-space-size "$small" --sequential-keys --val-size 256 >"$out/$kind.small$i.json"
  flat "$kind" "small$i" "$small"
  small_put[$kind]+="$flat_put " small_range[$kind]+="$flat_range "
  stop_servers
  [ "$keep" = 1 ] || rm -rf "$work/$kind-small$i"
}

measure() {
  local kind=$1 t0 t1 load_s sizes=() rss_loaded rss_ready r put_small range_small
  # shellcheck disable=SC2086  # two rates, one word each
  put_small=$(mean ${small_put[$kind]:-- -}) range_small=$(mean ${small_range[$kind]:-- -})
  figure "$kind" put_rps_small "$put_small"
  figure "$kind" range_rps_small "$range_small"
  fresh "$kind" "$work/$kind" "$out/$kind.log"
  log "$kind: loading $keys keys"
  t0=$(now)
  "$bench_bin" --endpoints "$client" --conns 100 --clients 1000 --json \
    put --total "$keys" --key-space-size "$keys" --sequential-keys --val-size 256 >"$out/$kind.load.json"
  "$bench_bin" --endpoints "$client" --conns 100 --clients 1000 --json \
    put --total $((keys / 10)) --key-space-size "$keys" --val-size 256 >>"$out/$kind.load.json"
  t1=$(now)
  load_s=$(elapsed "$t0" "$t1")
  figure "$kind" load_s "$load_s"
  figure "$kind" load_puts "$((keys + keys / 10))"
  flat "$kind" all "$keys"
  rss_loaded=$(rss_kib "$pid")
  for r in $(seq 1 "$restarts"); do
    kill -9 "$pid"
    wait "$pid" 2>/dev/null || true
    sizes+=("$(du -sk "$data" | cut -f1)")
    echo "=== restart $r (kill -9) ===" >>"$log_file"
    t0=$(now)
    start "$kind" "$data" "$log_file"
    server_pids=("$pid")
    perf_pid=
    if [ -n "${RESTART_PERF:-}" ] && [ "$kind" = cairn ]; then
      perf record -q -g -p "$pid" -o "$out/cairn.restart$r.perf" >/dev/null 2>&1 &
      perf_pid=$!
    fi
    until_read
    t1=$(now)
    if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
    restart_s+=("$(elapsed "$t0" "$t1")")
    rss_ready=$(rss_kib "$pid")
    log "$kind: restart $r: a linearizable read after ${restart_s[-1]} s (RSS $((rss_ready / 1024)) MiB)"
    figure "$kind" "restart_s_$r" "${restart_s[-1]}"
  done
  stop_servers
  figure "$kind" keys "$keys"
  figure "$kind" small_keys "$small"
  figure "$kind" rss_loaded_mib "$((rss_loaded / 1024))"
  figure "$kind" rss_restarted_mib "$((rss_ready / 1024))"
  figure "$kind" data_mib "$((sizes[0] / 1024))"
  # shellcheck disable=SC2059
  printf "$row_fmt" "$kind" "$keys" "$load_s" "$(IFS=/; echo "${restart_s[*]}")" \
    "$((rss_loaded / 1024))" "$((rss_ready / 1024))" "$((sizes[0] / 1024))" "$put_small" "$flat_put" \
    "$range_small" "$flat_range" >>"$out/table.txt"
  restart_s=()
  [ "$keep" = 1 ] || rm -rf "$work/$kind"
}

restart_s=()
kinds=()
for kind in "${order[@]}"; do
  [ -z "$only" ] || [ "$only" = "$kind" ] || continue
  kinds+=("$kind")
done
if [ "$flat_total" -gt 0 ]; then
  # A B B A (A A with --only)
  small "${kinds[0]}" 1
  small "${kinds[-1]}" $(( ${#kinds[@]} == 1 ? 2 : 1 ))
  [ "${#kinds[@]}" = 1 ] || { small "${kinds[1]}" 2; small "${kinds[0]}" 2; }
fi
for kind in "${kinds[@]}"; do
  measure "$kind"
done
if [ -f "$out/cairn.log" ]; then
  grep -a 'start-up phase' "$out/cairn.log" >"$out/cairn.phases.log" || true
fi
{
  echo
  echo "restart_s: seconds from the new process to the first linearizable Get, per restart"
  echo "           (the first right after the load, the others at rest);"
  echo "rss_mib: RSS after the load, before kill -9; rss2_mib: RSS once the last restart answered;"
  echo "data_mib: data directory at rest after the first kill -9;"
  echo "put_small, range_small: requests/s with the first $small keys in; put_all, range_all: with all"
  echo "           $keys (and the overwrites); random keys, 1,000 clients over 100 connections;"
  echo "           scale.tsv's range_rps_all_first: the loaded server's range among its first $small."
} >>"$out/table.txt"
cat "$out/table.txt"
