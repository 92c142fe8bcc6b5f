#!/usr/bin/env bash
# A follower catching up by snapshot, etcd 3.5.1 and Cairn side by side (issue 19):
# a fresh THREE-member cluster of each kind, m1 made the leader, m3 stopped; N puts
# (256-byte values, sequential keys, 1,000 clients over 100 connections) through m1
# and m2, so that the leader's log moves far past m3 and is compacted; then m3 is
# started again on its old data directory and must be sent a snapshot. The figures:
# seconds from m3's start until its revision reaches the leader's (etcdctl endpoint
# status, polled every ~200 ms), each member's peak RSS meanwhile (high-water marks
# reset after the load), how many leader elections happened meanwhile (raft term
# after minus before), and the load's requests/s and errors.
#
# Usage (from anywhere):
#   bash benches/catchup.sh                # N = 1,000,000 (about 2 x 2 minutes of load on 2 cores)
#   bash benches/catchup.sh --keys 200000  # smaller N while iterating
#   options: --keys N      puts to load (default 1000000)
#            --only KIND   etcd or cairn (default both, etcd first)
#            --out DIR     results directory (default benches/results/catchup-<UTC timestamp>)
#            --keep        keep the data directories and logs
# Environment: CAIRN_BIN, CAIRN_BENCH_BIN, CARGO_TARGET_DIR, CAIRN_TOOLS_DIR as
# benches/compare.sh (release builds first); CATCHUP_PORT first port (default 26090).
#
# Results: table.txt (one row per server), the members' logs, the load's report.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
helper="$here/compare.py"

keys=1000000 only= out= keep_arg=()
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --keys) shift; keys=${1:?--keys needs a number} ;;
    --only) shift; only=${1:?--only needs etcd or cairn} ;;
    --out) shift; out=${1:?--out needs a directory} ;;
    --keep) keep_arg=(--keep) ;;
    -h|--help) usage; exit 0 ;;
    *) echo "catchup: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$keys" in ''|*[!0-9]*|0) echo "catchup: --keys needs a positive number" >&2; exit 2 ;; esac
case "$only" in ''|etcd|cairn) ;; *) echo "catchup: --only takes etcd or cairn" >&2; exit 2 ;; esac

# shellcheck source=benches/bins.sh
. "$here/bins.sh" catchup

# etcd 3.5.1, etcdctl 3.5, ports, spawn/stop helpers
# shellcheck source=tests/compat/lib.sh
. "$repo/tests/compat/lib.sh" --ctl 3.5 "${keep_arg[@]}"
log() { echo "catchup: $*" >&2; }
next_port=${CATCHUP_PORT:-26090}
ready_timeout=120

out=${out:-$repo/benches/results/catchup-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
log "results in $out (N = $keys)"
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }
hwm_mib() { awk '/^VmHWM:/ { printf "%d", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# status ENDPOINT FIELD : one field of `etcdctl endpoint status` (revision, raftTerm, leader, member_id)
status() {
  ETCDCTL_API=3 "$ctl35" --endpoints="$1" --dial-timeout=1s --command-timeout=2s endpoint status -w json \
    2>/dev/null | python3 -c 'import json, sys
found = json.load(sys.stdin)
if not found: sys.exit(0)  # not serving yet: the caller asks again
s = found[0]["Status"]
print({"revision": s["header"]["revision"], "member_id": s["header"]["member_id"]}.get(sys.argv[1], s.get(sys.argv[1])))' "$2"
}

row_fmt='%-6s %8s %10s %7s %10s %13s %13s %13s %9s\n'
# shellcheck disable=SC2059  # the format is ours
printf "$row_fmt" server keys load_rps errors catchup_s leader_hwm_mib m2_hwm_mib m3_hwm_mib elections \
  >"$out/table.txt"

measure() {
  local kind=$1 dir="$work/$1" n initial= bin=$etcd_bin t0 t1 rev term0 term1 elapsed_s rps errors
  local -a client=() peer=() args pids=()
  [ "$kind" = etcd ] || bin=$cairn_bin
  for n in 1 2 3; do
    pick_port; client+=("127.0.0.1:$port")
    pick_port; peer+=("http://127.0.0.1:$port")
  done
  for n in 1 2 3; do initial+="${initial:+,}m$n=${peer[n - 1]}"; done
  mkdir -p "$dir"
  # start_member N : member N (1-3) on its data directory, appending to its log
  start_member() {
    args=(--name "m$1" --data-dir "$dir/m$1.data"
      --listen-client-urls "http://${client[$1 - 1]}" --advertise-client-urls "http://${client[$1 - 1]}"
      --listen-peer-urls "${peer[$1 - 1]}" --initial-advertise-peer-urls "${peer[$1 - 1]}"
      --initial-cluster "$initial" --initial-cluster-token cairn-catchup --initial-cluster-state new)
    [ "$kind" = etcd ] || args+=(--zone "az-$1")
    "$bin" "${args[@]}" >>"$out/$kind.m$1.log" 2>&1 &
    pids[$1]=$!
  }
  for n in 1 2 3; do start_member "$n"; done
  server_pids=("${pids[1]}" "${pids[2]}" "${pids[3]}")
  server_logs=("$out/$kind.m1.log" "$out/$kind.m2.log" "$out/$kind.m3.log")
  wait_healthy "$kind cluster" "${client[0]}" 3 --cluster
  # m1 leads, so that stopping m3 stops no leader
  local m1_id deadline=$((SECONDS + 30))
  m1_id=$(python3 -c 'import sys; print(format(int(sys.argv[1]), "x"))' "$(status "${client[0]}" member_id)")
  until [ "$(status "${client[0]}" leader)" = "$(status "${client[0]}" member_id)" ]; do
    ETCDCTL_API=3 "$ctl35" --endpoints="$(IFS=,; echo "${client[*]}")" --command-timeout=10s \
      move-leader "$m1_id" >/dev/null 2>&1 || true
    [ "$SECONDS" -lt "$deadline" ] || die "could not make m1 the leader"
    sleep 0.5
  done
  kill "${pids[3]}"; wait "${pids[3]}" 2>/dev/null || true
  log "$kind: m3 stopped; loading $keys puts through m1 and m2"
  "$bench_bin" --endpoints "${client[0]},${client[1]}" --conns 100 --clients 1000 --json \
    put --total "$keys" --key-space-size "$keys" --sequential-keys --key-size 8 --val-size 256 \
    >"$out/$kind.load.json"
  read -r rps errors < <(python3 -c 'import json, sys
o = json.load(open(sys.argv[1])); print(round(o["rps"]), o["errors"])' "$out/$kind.load.json")
  rev=$(status "${client[0]}" revision)
  term0=$(status "${client[0]}" raftTerm)
  for n in 1 2; do echo 5 >"/proc/${pids[$n]}/clear_refs"; done
  t0=$(now)
  start_member 3
  server_pids=("${pids[1]}" "${pids[2]}" "${pids[3]}")
  until r=$(status "${client[2]}" revision) && [ -n "$r" ] && [ "$r" != None ] && [ "$r" -ge "$rev" ]; do
    kill -0 "${pids[3]}" 2>/dev/null || die "m3 exited while catching up (log: $out/$kind.m3.log)"
    sleep 0.2
  done
  t1=$(now)
  elapsed_s=$(elapsed "$t0" "$t1")
  term1=$(status "${client[0]}" raftTerm)
  log "$kind: m3 has revision $rev after $elapsed_s s; elections meanwhile: $((term1 - term0))"
  # shellcheck disable=SC2059
  printf "$row_fmt" "$kind" "$keys" "$rps" "$errors" "$elapsed_s" "$(hwm_mib "${pids[1]}")" \
    "$(hwm_mib "${pids[2]}")" "$(hwm_mib "${pids[3]}")" "$((term1 - term0))" >>"$out/table.txt"
  stop_servers
  [ "$keep" = 1 ] || rm -rf "$dir"
}

for kind in etcd cairn; do
  [ -z "$only" ] || [ "$only" = "$kind" ] || continue
  measure "$kind"
done
{
  echo
  echo "catchup_s: seconds from m3's start until its revision reached the leader's;"
  echo "*_hwm_mib: each member's peak RSS from the end of the load until then (m1 led at the start);"
  echo "elections: the raft term's rise meanwhile, as m1 saw it (0: the leader stayed)."
} >>"$out/table.txt"
cat "$out/table.txt"
