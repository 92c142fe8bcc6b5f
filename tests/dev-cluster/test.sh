#!/usr/bin/env bash
# The README's run command, `scripts/dev.sh cluster`, end to end: it starts
# three members and prints the ready lines once all three are healthy; they
# answer; a signal stops all three with no process left; a second run keeps
# the data; --fresh starts over. Then the same with --tls: https everywhere,
# the printed etcdctl line (with --cacert/--cert/--key) answers, a client
# without a certificate is refused, the certificates are kept across runs,
# and a TLS cluster does not restart without --tls. CAIRN_BIN (required) is
# the binary to run; cairn-certs is taken from next to it (or CAIRN_CERTS_BIN).
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
    case " $* " in
        *" --tls "*) grep -q "etcdctl --cacert=$work/data/certs/ca.pem --cert=$work/data/certs/client.pem --key=$work/data/certs/client-key.pem --endpoints=https://127.0.0.1:${ports%%,*}" "$work/out" \
            || fail "no TLS etcdctl line" ;;
        *) grep -q "etcdctl --endpoints=http://127.0.0.1:${ports%%,*}" "$work/out" || fail "no etcdctl line" ;;
    esac
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

# --tls: the printed line, pasted, answers.
tls_endpoints=$(echo "$ports" | sed 's#\([0-9]*\)#https://127.0.0.1:\1#g')
start --fresh --tls
pasted=$(grep -o "etcdctl --cacert=.* endpoint status -w table" "$work/out")
read -r -a pasted <<<"$pasted"
status=$(env ETCDCTL_API=3 "${pasted[@]}" 2>&1) || fail "the printed etcdctl line failed: $status"
[ "$(echo "$status" | grep -c '^| https://127.0.0.1:')" = 3 ] || fail "TLS endpoint status: $status"
certs="$work/data/certs"
tctl() { ETCDCTL_API=3 etcdctl --cacert="$certs/ca.pem" --cert="$certs/client.pem" --key="$certs/client-key.pem" --endpoints="$tls_endpoints" "$@"; }
tctl put greeting secret >/dev/null
[ "$(tctl get greeting --print-value-only)" = secret ] || fail "TLS get after put"
peers=$(tctl member list | grep -c ', https://127.0.0.1:')
[ "$peers" = 3 ] || fail "member list shows $peers members with https URLs"
if ETCDCTL_API=3 etcdctl --cacert="$certs/ca.pem" --endpoints="$tls_endpoints" --dial-timeout=1s --command-timeout=2s \
    get greeting >/dev/null 2>&1; then
    fail "a client without a certificate was served"
fi
if ETCDCTL_API=3 etcdctl --endpoints="$endpoints" --dial-timeout=1s --command-timeout=2s get greeting >/dev/null 2>&1; then
    fail "a plaintext client was served"
fi
ca_sum=$(sha256sum "$certs/ca.pem")
stop

start --tls
[ "$(tctl get greeting --print-value-only)" = secret ] || fail "the TLS data did not survive a restart"
[ "$(sha256sum "$certs/ca.pem")" = "$ca_sum" ] || fail "a restart made new certificates"
stop

# A TLS cluster does not restart without --tls (its members keep https peer
# URLs): refused before any member starts.
if CAIRN_BIN="$CAIRN_BIN" bash "$root/scripts/dev.sh" cluster --dir "$work/data" --client-ports "$ports" >"$work/out" 2>&1; then
    fail "a TLS cluster restarted without --tls"
fi
grep -q "made with --tls; it cannot restart without it" "$work/out" || fail "no reason given: $(cat "$work/out")"

start --fresh --tls
[ "$(sha256sum "$certs/ca.pem")" != "$ca_sum" ] || fail "--fresh kept the old CA"
[ -z "$(tctl get greeting --print-value-only)" ] || fail "--fresh --tls kept the data"
stop
rm -rf "$work"
echo "dev-cluster test: passed (start, answer, stop with no process left, restart keeps data, --fresh; the same with --tls, a client without a certificate refused, certificates kept, no restart without --tls)"
