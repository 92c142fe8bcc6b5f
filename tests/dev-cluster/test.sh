#!/usr/bin/env bash
# The README's run command, `scripts/dev.sh cluster`, end to end: it starts
# three members and prints the ready lines once all three are healthy; they
# answer; a signal stops all three with no process left; a second run keeps
# the data; --fresh starts over. CAIRN_BIN (required) is the binary to run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
: "${CAIRN_BIN:?set CAIRN_BIN to the cairn binary}"
work=$(mktemp -d /tmp/cairn-dev-cluster.XXXXXX)
# Below Linux's ephemeral range (32768 and up), where an outgoing
# connection's local port can take a port between the check and the bind;
# clear of the comparisons' 23790+ and 25790+.
ports="$((26000 + RANDOM % 1900)),$((28000 + RANDOM % 1900)),$((30000 + RANDOM % 1900))"
endpoints=$(echo "$ports" | sed 's/\([0-9]*\)/127.0.0.1:\1/g')
runner=""
fail() { echo "dev-cluster test: $*" >&2; [ -n "$runner" ] && kill -TERM "$runner" 2>/dev/null; tail -n 20 "$work"/data/*.log "$work"/out >&2 || true; exit 1; }
trap 'pkill -TERM -f "$work/data" 2>/dev/null || true' EXIT

# start [ARGS...] : runs the command in the background; waits for its ready lines.
start() {
    : >"$work/out"
    CAIRN_BIN="$CAIRN_BIN" bash "$root/scripts/dev.sh" cluster --dir "$work/data" --client-ports "$ports" "$@" \
        >"$work/out" 2>&1 &
    runner=$!
    local deadline=$((SECONDS + 180))
    until grep -q "Ctrl-C stops all three" "$work/out"; do
        kill -0 "$runner" 2>/dev/null || fail "the command exited before serving"
        [ "$SECONDS" -lt "$deadline" ] || fail "not ready after 180 s"
        sleep 0.2
    done
    grep -q "etcdctl --endpoints=http://127.0.0.1:${ports%%,*}" "$work/out" || fail "no etcdctl line"
}

# stop : a signal, then every member gone and the command's status 0.
stop() {
    kill -TERM "$runner"
    local status=0
    wait "$runner" || status=$?
    [ "$status" = 0 ] || fail "the command exited with $status"
    if pgrep -f "$work/data" >/dev/null; then fail "members left running: $(pgrep -af "$work/data")"; fi
    runner=""
}

ctl() { ETCDCTL_API=3 etcdctl --endpoints="$endpoints" "$@"; }

start --fresh
ctl put greeting hello >/dev/null
[ "$(ctl get greeting --print-value-only)" = hello ] || fail "get after put"
members=$(ctl member list | wc -l)
[ "$members" = 3 ] || fail "member list has $members members"
zones=$(ctl endpoint status -w json | grep -o '"leader"' | wc -l)
[ "$zones" = 3 ] || fail "endpoint status answered from $zones members"
stop

start
[ "$(ctl get greeting --print-value-only)" = hello ] || fail "the data did not survive a restart"
stop

start --fresh
[ -z "$(ctl get greeting --print-value-only)" ] || fail "--fresh kept the data"
stop
rm -rf "$work"
echo "dev-cluster test: passed (start, answer, stop with no process left, restart keeps data, --fresh)"
