# Helpers shared by the etcdctl sessions of tests/compat/ (session.sh,
# cluster-session.sh); sourced, never run. The transcript format:
#
# Every command appears as one `$ etcdctl ...` line (the stdin of a txn follows it
# as a here-document), then the command's stdout and stderr (merged, in the order
# written), then `[exit N]`. With SHOW_ENDPOINTS=1 the command line also shows the
# endpoints it was sent to (`$ etcdctl --endpoints=... ARGS`).
#
# Inputs (environment): ETCDCTL (etcdctl 3.4.x or 3.5.x); ENDPOINT, the endpoint(s)
# every command is sent to (a caller may set it per command: `ENDPOINT=x run ...`).
#
# Blocking commands (watch, lock, elect, lease keep-alive) run as background jobs:
# `$ etcdctl ... &  # job NAME`, and their output appears where the session stops
# them or they exit (`# job NAME output:` ... `[job NAME <how it ended>, exit N]`).
set -uo pipefail

: "${ETCDCTL:?set ETCDCTL to the etcdctl binary}"
for v in $(compgen -e); do  # no stray ETCDCTL_* settings (endpoints, TLS, ...) from the caller
  case "$v" in ETCDCTL_*) unset "$v" ;; esac
done
export ETCDCTL_API=3
export LC_ALL=C  # stable quoting of the echoed commands (printf %q) on any machine

scratch=$(mktemp -d)  # the session's files; a session may add its own here
tmp=$scratch/out      # the output of the last command
tmp_in=$scratch/in    # the stdin of the last txn
bg_dir=$scratch/bg    # output files of background jobs
mkdir "$bg_dir"
declare -A bg_pid=()
cleanup_session() {
  local pid
  for pid in "${bg_pid[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$scratch"
}
trap cleanup_session EXIT

ctl_version=$("$ETCDCTL" version 2>/dev/null | sed -n 's/^etcdctl version: //p')
case "$ctl_version" in
  3.4.*) ctl_minor=4 ;;
  3.5.*) ctl_minor=5 ;;
  *) echo "$(basename "$0"): unsupported etcdctl version '$ctl_version'" >&2; exit 2 ;;
esac
echo "# etcdctl $ctl_version"

# Print a command's captured output; mark a missing final newline explicitly so
# that it cannot merge with the [exit N] line unnoticed.
emit() {
  cat "$1"
  if [ -s "$1" ] && [ "$(tail -c 1 "$1" | od -An -c | tr -d ' ')" != '\n' ]; then
    printf '\n[no newline at end of output]\n'
  fi
}

# echo_ctl : the start of a command line in the transcript (`$ etcdctl`, and the
# endpoints too with SHOW_ENDPOINTS=1)
echo_ctl() {
  printf '$ etcdctl'
  [ -z "${SHOW_ENDPOINTS:-}" ] || printf ' --endpoints=%s' "$ENDPOINT"
}

# run ARGS... : one etcdctl command with no stdin.
run() {
  echo_ctl
  printf ' %q' "$@"
  printf '\n'
  "$ETCDCTL" --endpoints="$ENDPOINT" "$@" </dev/null >"$tmp" 2>&1
  local rc=$?
  emit "$tmp"
  echo "[exit $rc]"
}

# txn [ARGS...] <<<TEXT : `etcdctl txn` fed TEXT on stdin (non-interactive mode:
# compares, blank line, success ops, blank line, failure ops, blank line).
# TXN_LABEL, if set, replaces the here-document in the transcript (for generated
# requests that are too long to show).
txn() {
  local input
  input=$(cat; echo x)
  input=${input%x}
  echo_ctl
  printf ' txn'
  [ $# -eq 0 ] || printf ' %q' "$@"
  if [ -n "${TXN_LABEL:-}" ]; then
    printf ' < (%s)\n' "$TXN_LABEL"
  else
    printf " <<'EOF'\n%sEOF\n" "$input"
  fi
  printf '%s' "$input" >"$tmp_in"
  "$ETCDCTL" --endpoints="$ENDPOINT" txn "$@" <"$tmp_in" >"$tmp" 2>&1
  local rc=$?
  emit "$tmp"
  echo "[exit $rc]"
}

section() { printf '\n#### %s\n' "$*"; }
only35() { # only35 ARGS... : run only with etcdctl >= 3.5
  if [ "$ctl_minor" -ge 5 ]; then run "$@"; else
    printf '# skipped (etcdctl %s lacks it): etcdctl' "$ctl_version"; printf ' %q' "$@"; printf '\n'
  fi
}

# --- background jobs (watch, lock, elect block until stopped) -------------------
# A background job's output goes to a file and is printed, with how the job
# ended, only when the job is stopped (bg_stop) or has exited (bg_end), so the
# transcript does not depend on timing. The session only ever waits for output
# that etcd prints deterministically (bg_wait counts lines), and before stopping
# a job it gives it BG_GRACE seconds to print anything unexpected on top.
BG_TIMEOUT=${BG_TIMEOUT:-20}  # seconds: longest wait for a job's output or exit
BG_GRACE=${BG_GRACE:-0.3}

# bg NAME ARGS... : start `etcdctl ARGS` in the background as job NAME.
bg() {
  local name=$1
  shift
  echo_ctl
  printf ' %q' "$@"
  printf ' &  # job %s\n' "$name"
  : >"$bg_dir/$name"  # (created here: the job's own redirection happens asynchronously)
  "$ETCDCTL" --endpoints="$ENDPOINT" "$@" </dev/null >>"$bg_dir/$name" 2>&1 &
  bg_pid[$name]=$!
}

# bg_wait NAME LINES : wait until job NAME has printed LINES complete lines (or
# has exited); prints a comment line only (and the deadline if it passed).
bg_wait() {
  local name=$1 want=$2 deadline=$((SECONDS + BG_TIMEOUT)) n
  while :; do
    n=$(wc -l <"$bg_dir/$name")
    [ "$n" -lt "$want" ] || break
    if ! kill -0 "${bg_pid[$name]}" 2>/dev/null; then
      printf '# job %s exited after %s of %s lines\n' "$name" "$(wc -l <"$bg_dir/$name")" "$want"
      return
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      printf '# job %s: still only %s of %s lines after %ss\n' "$name" "$n" "$want" "$BG_TIMEOUT"
      return
    fi
    sleep 0.05
  done
  printf '# (job %s has printed %s lines)\n' "$name" "$want"
}

# bg_report NAME HOW : print job NAME's output and how it ended; forget it.
bg_report() {
  local name=$1 how=$2 rc
  wait "${bg_pid[$name]}" 2>/dev/null
  rc=$?
  unset "bg_pid[$name]"
  printf '# job %s output:\n' "$name"
  emit "$bg_dir/$name"
  printf '[job %s %s, exit %s]\n' "$name" "$how" "$rc"
}

# bg_kill_wait PID : wait up to BG_TIMEOUT seconds for PID to end, then SIGKILL it.
bg_kill_wait() {
  local deadline=$((SECONDS + BG_TIMEOUT))
  while kill -0 "$1" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then kill -9 "$1" 2>/dev/null; return 1; fi
    sleep 0.05
  done
}

# bg_stop NAME [SIGNAL] : after BG_GRACE seconds, send SIGNAL (default TERM) to
# job NAME if it still runs; print its output and exit status.
bg_stop() {
  local name=$1 sig=${2:-TERM} pid=${bg_pid[$1]} how
  sleep "$BG_GRACE"
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$sig" "$pid" 2>/dev/null
    how="stopped with SIG$sig"
    bg_kill_wait "$pid" || how="$how (did not exit within ${BG_TIMEOUT}s: SIGKILLed)"
  else
    how="had exited by itself"
  fi
  bg_report "$name" "$how"
}

# bg_end NAME : wait for job NAME to exit by itself; print its output and exit status.
bg_end() {
  local name=$1 how="exited by itself"
  bg_kill_wait "${bg_pid[$name]}" || how="did not exit within ${BG_TIMEOUT}s: SIGKILLed"
  bg_report "$name" "$how"
}

# quiet ARGS... : etcdctl ARGS, output only in $tmp (not in the transcript).
quiet() {
  "$ETCDCTL" --endpoints="$ENDPOINT" "$@" </dev/null >"$tmp" 2>&1
}

# wait_keys PREFIX N : wait (silently, up to BG_TIMEOUT s) until exactly N keys
# start with PREFIX; prints a comment line.
wait_keys() {
  local deadline=$((SECONDS + BG_TIMEOUT)) n
  while :; do
    quiet get "$1" --prefix --keys-only
    n=$(grep -c . "$tmp")
    [ "$n" != "$2" ] || break
    if [ "$SECONDS" -ge "$deadline" ]; then
      printf '# %s keys under %s, not %s, after %ss\n' "$n" "$1" "$2" "$BG_TIMEOUT"
      return
    fi
    sleep 0.05
  done
  printf '# (waited until %s keys exist under %s)\n' "$2" "$1"
}

