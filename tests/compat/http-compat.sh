#!/usr/bin/env bash
# HTTP comparison: the same curl session (http-session.sh: /health and its
# variants, /version, every JSON gateway endpoint under /v3/ with a streamed
# watch and keep-alive, errors of validation, decoding, methods and paths)
# and the same Python client (etcd3gw-session.py: etcd3gw, unchanged, doing
# put/get/txn/watch/lease/lock) against a fresh etcd 3.5.1 and a fresh
# Cairn; the transcripts are normalised (http-normalise.py) and diffed. Any
# difference fails the test.
#
# Usage: bash tests/compat/http-compat.sh [--etcd-only] [--keep] [--no-etcd3gw]
#
# Normalised (only what legitimately differs between two servers): cluster
# and member ids (the learner's too), raft term and index, DB sizes, the
# server version, hash values, the endpoint and peer host:port, the
# remaining TTL of timetolive (when within 5 s of the granted TTL), the
# Date and content-length headers (not shown). Revisions, bodies, field
# order, error texts, gRPC codes and HTTP status codes are compared exactly.
#
# Environment:
#   CAIRN_BIN          the cairn binary (default $CARGO_TARGET_DIR/debug/cairn)
#   HTTP_COMPAT_PORT   first loopback port to try (default 22790; the etcdctl
#                      comparisons use 23790 and 24790 up)
#   CAIRN_TOOLS_DIR    where etcd 3.5.1 and etcd3gw are installed (~/.cache/cairn-tools)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
with_etcd3gw=1
args=()
for a in "$@"; do
  case "$a" in
    --no-etcd3gw) with_etcd3gw=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$a") ;;
  esac
done
# lib.sh: options, etcd 3.5.1, ports, servers, cleanup (only etcdctl 3.5,
# for its readiness check).
. "$here/lib.sh" --ctl 3.5 "${args[@]}"
next_port=${HTTP_COMPAT_PORT:-22790}
if ! command -v curl >/dev/null; then
  log "installing curl"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl
  else
    sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl
  fi
fi

# etcd3gw (a Python client of the JSON API), installed with pip into the
# tools directory, never into the system's Python.
etcd3gw_dir="$tools_dir/etcd3gw-2.7.0"
if [ "$with_etcd3gw" = 1 ] && [ ! -f "$etcd3gw_dir/etcd3gw/client.py" ]; then
  log "installing etcd3gw 2.7.0 (PyPI) into $etcd3gw_dir"
  rm -rf "$etcd3gw_dir.tmp"
  python3 -m pip install --quiet --disable-pip-version-check --target "$etcd3gw_dir.tmp" etcd3gw==2.7.0 ||
    die "pip install etcd3gw failed (run with --no-etcd3gw to skip that client)"
  mv "$etcd3gw_dir.tmp" "$etcd3gw_dir"
fi

start() { # start KIND TAG -> $endpoint, $peer
  local kind=$1 tag=$2 bin
  if [ "$kind" = etcd ]; then bin=$etcd_bin; else bin=$cairn_bin; fi
  pick_port; endpoint="127.0.0.1:$port"
  pick_port; peer="127.0.0.1:$port"
  mkdir -p "$work/$tag"
  spawn "$work/$tag/server.log" "$bin" --name compat --data-dir "$work/$tag/data" \
    --listen-client-urls "http://$endpoint" --advertise-client-urls "http://$endpoint" \
    --listen-peer-urls "http://$peer" --initial-advertise-peer-urls "http://$peer" \
    --initial-cluster "compat=http://$peer" --initial-cluster-state new
  wait_healthy "$kind" "$endpoint" 1
}

run() { # run KIND : both sessions against a fresh server, normalised
  local kind=$1
  start "$kind" "$kind-http"
  log "running the curl session against $kind at $endpoint"
  run_script "$kind-http" "$here/http-session.sh" ENDPOINT="$endpoint"
  stop_servers
  python3 "$here/http-normalise.py" "$endpoint" "$peer" <"$work/$kind-http.raw" >"$work/$kind-http.txt"
  if [ "$with_etcd3gw" = 1 ]; then
    start "$kind" "$kind-etcd3gw"
    log "running etcd3gw against $kind at $endpoint"
    PYTHONPATH="$etcd3gw_dir" python3 "$here/etcd3gw-session.py" "$endpoint" \
      >"$work/$kind-etcd3gw.raw" 2>"$work/$kind-etcd3gw.stderr" ||
      { cat "$work/$kind-etcd3gw.stderr" >&2; die "etcd3gw-session.py failed against $kind"; }
    stop_servers
    python3 "$here/http-normalise.py" "$endpoint" "$peer" <"$work/$kind-etcd3gw.raw" >"$work/$kind-etcd3gw.txt"
  fi
}

run etcd
if [ "$etcd_only" = 1 ]; then
  cat "$work/etcd-http.txt"
  [ "$with_etcd3gw" = 0 ] || cat "$work/etcd-etcd3gw.txt"
  exit 0
fi
run cairn
failed=0
sessions=(http)
[ "$with_etcd3gw" = 0 ] || sessions+=(etcd3gw)
for s in "${sessions[@]}"; do
  if diff -u --label "etcd ($s)" --label "cairn ($s)" "$work/etcd-$s.txt" "$work/cairn-$s.txt" >"$work/diff-$s.txt"; then
    log "$s session: transcripts identical ($(grep -c '^\$ ' "$work/etcd-$s.txt") requests)"
  else
    cat "$work/diff-$s.txt"
    log "$s session: transcripts DIFFER (see diff above)"
    failed=1
  fi
done
if [ "$failed" = 0 ]; then log "PASS"; else log "FAIL"; fi
exit "$failed"
