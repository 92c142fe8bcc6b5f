#!/usr/bin/env bash
# The longer matrix behind jepsen/FINDINGS.md: every nemesis alone with every
# workload, then all nemeses together, each for several seeds; prints one line
# per run (verdict, ops, faults) and a summary. Exit status 1 if any run was
# not VALID.
#
#   bash jepsen/matrix.sh [--time-limit S] [--seeds "1 2"] [--soak S] [--out DIR]
#
# Uses release binaries (CARGO_TARGET_DIR/release, default ./target/release):
#   CARGO_TARGET_DIR=$PWD/target cargo build --release -p cairn-server --bin cairn
#   CARGO_TARGET_DIR=$PWD/target cargo build --release -p cairn-jepsen --bin cairn-jepsen
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
cj="$target/release/cairn-jepsen"
limit=45
seeds="1 2"
soak=120
out="$root/jepsen/results/matrix-$(date -u +%Y%m%d-%H%M%S)"
while [ $# -gt 0 ]; do
  case "$1" in
    --time-limit) limit=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --soak) soak=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) sed -n '2,10p' "$0" >&2; exit 2 ;;
  esac
done
[ -x "$cj" ] || { echo "matrix: build $cj first (see the header)" >&2; exit 2; }
mkdir -p "$out"
summary="$out/summary.txt"
: >"$summary"
bad=0

one() { # one NEMESIS WORKLOADS SECONDS SEED
  local log="$out/run-$1-$4.log" rc=0
  "$cj" run --out "$out" --nemesis "$1" --workload "$2" --time-limit "$3" --seed "$4" >"$log" 2>&1 || rc=$?
  local dir
  dir=$(sed -n 's/^run: [A-Z]*  (\(.*\)\/report.html)$/\1/p' "$log")
  local line
  line=$(python3 - "$dir" "$1" "$2" "$3" "$4" "$rc" <<'PY'
import json, sys
d, nem, wl, secs, seed, rc = sys.argv[1:]
try:
    v = json.load(open(d + "/verdict.json"))
    ops = v["counts"]["ops"]
    faults = v["counts"]["faults"]
    anomalies = sum(len(r["anomalies"]) for r in v["results"])
    print(f"{v['valid'].upper():8} {nem:11} {wl:26} {secs:>4}s seed {seed:>3}  ops {ops['total']:>6} "
          f"(ok {ops['ok']}, fail {ops['fail']}, unknown {ops['unknown']})  faults {faults}  anomalies {anomalies}  {d}")
except Exception as e:
    print(f"ERROR    {nem:11} {wl:26} {secs:>4}s seed {seed:>3}  exit {rc}: {e}")
PY
)
  echo "$line" | tee -a "$summary"
  case "$line" in VALID*) ;; *) bad=$((bad + 1)) ;; esac
}

for nemesis in kill pause partition zone-loss slow membership compaction; do
  for seed in $seeds; do one "$nemesis" all "$limit" "$seed"; done
done
for seed in $seeds; do one all all "$soak" "$seed"; done
echo "matrix: $(wc -l <"$summary") runs, $bad not valid; summary in $summary"
[ "$bad" -eq 0 ]
