# The HTTP session of http-compat.sh: curl against the client port of ONE
# fresh server (etcd 3.5.1 or Cairn), from an empty store, so that every
# revision is deterministic. Run, never sourced: `ENDPOINT=host:port bash
# http-session.sh > transcript`.
#
# The transcript: each request as `$ METHOD PATH BODY`, then `HTTP <code>`,
# the response headers that matter (sorted, lower-cased names: content
# type, grpc-metadata-*, allow, location, CORS, nosniff), and the body
# (`[no newline at end]` when it has none). Streams (watch, keep-alive)
# run as background curls whose request body is a pipe the session writes
# requests into; their output is printed when the session stops them.
set -uo pipefail

: "${ENDPOINT:?set ENDPOINT to host:port}"
export LC_ALL=C
base="http://$ENDPOINT"
scratch=$(mktemp -d)
declare -A bg_pid=() bg_fd=()
cleanup() {
  local pid
  for pid in "${bg_pid[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$scratch"
}
trap cleanup EXIT

show_headers() { # the headers worth comparing, sorted
  tr -d '\r' <"$1" | sed -n 's/^\([A-Za-z-]*\): \(.*\)$/\1: \2/p' | while IFS= read -r line; do
    name=$(printf '%s' "${line%%:*}" | tr 'A-Z' 'a-z')
    case "$name" in
      content-type|grpc-metadata-*|allow|location|x-content-type-options|access-control-*)
        printf '%s:%s\n' "$name" "${line#*:}" ;;
    esac
  done | sort
}

show_body() {
  cat "$1"
  if [ -s "$1" ] && [ "$(tail -c 1 "$1" | od -An -c | tr -d ' ')" != '\n' ]; then
    printf '\n[no newline at end]\n'
  fi
}

# req METHOD PATH [BODY] : one request, shown with its answer.
req() {
  local method=$1 path=$2 body=${3-} code shown
  shown=$body
  [ "${#body}" -le 200 ] || shown="${body:0:60}...<${#body} bytes>"
  printf '$ %s %s %s\n' "$method" "$path" "$shown"
  local args=(-s -X "$method" -D "$scratch/h" -o "$scratch/b" -w '%{http_code}' -H 'Expect:')
  rm -f "$scratch/h" "$scratch/b"
  touch "$scratch/h" "$scratch/b"
  printf '%s' "$body" >"$scratch/body"
  [ "$#" -lt 3 ] || args+=(--data-binary "@$scratch/body")
  code=$(curl "${args[@]}" "$base$path") || code="curl failed: $?"
  echo "HTTP $code"
  show_headers "$scratch/h"
  show_body "$scratch/b"
}

post() { req POST "$@"; }

# stream_start NAME PATH : a background stream (http-stream.py: the first
# line of its output is `HTTP <code>`); its request body is fed by
# stream_send, its response collected for stream_stop.
stream_start() {
  local name=$1 path=$2
  printf '$ POST %s <stream %s> &\n' "$path" "$name"
  mkfifo "$scratch/$name.in"
  python3 "$(dirname "${BASH_SOURCE[0]}")/http-stream.py" "$ENDPOINT" "$path" \
    <"$scratch/$name.in" >"$scratch/$name.out" 2>&1 &
  bg_pid[$name]=$!
  exec {fd}>"$scratch/$name.in"
  bg_fd[$name]=$fd
}

# stream_send NAME JSON : one request into the stream's body.
stream_send() {
  printf '$ <stream %s> %s\n' "$1" "$2"
  printf '%s\n' "$2" >&"${bg_fd[$1]}"
}

# stream_wait NAME LINES : until the stream answered LINES lines (20 s at most).
stream_wait() {
  local name=$1 want=$2 deadline=$((SECONDS + 20))
  while [ "$(grep -c '' "$scratch/$name.out")" -lt "$want" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "# stream $name: timed out waiting for $want lines"
      return
    fi
    sleep 0.05
  done
}

# stream_close NAME : end the stream's request body (the client's half-close).
stream_close() {
  printf '$ <stream %s> <end of body>\n' "$1"
  exec {bg_fd[$1]}>&-
}

# stream_stop NAME LINES : wait for LINES lines, stop the client, show them.
stream_stop() {
  local name=$1
  stream_wait "$name" "$2"
  sleep 0.3 # what would come beyond etcd's lines shows in the diff
  [ -z "${bg_fd[$name]:-}" ] || exec {bg_fd[$name]}>&- 2>/dev/null || true
  kill "${bg_pid[$name]}" 2>/dev/null || true
  wait "${bg_pid[$name]}" 2>/dev/null || true
  unset "bg_pid[$name]"
  echo "# stream $name output:"
  show_body "$scratch/$name.out"
}

echo "# health and version"
req GET /health
req GET '/health?serializable=true'
req GET '/health?exclude=NOSPACE'
req GET /version
req POST /health
req GET /nope

echo "# KV (keys foo, a, b, c; values bar, 1, 2, ...)"
post /v3/kv/put '{"key":"Zm9v","value":"YmFy"}'
MEMBER_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["header"]["member_id"])' "$scratch/b" 2>/dev/null || echo 0)
post /v3/kv/put '{"key":"YQ==","value":"MQ==","prev_kv":true}'
post /v3/kv/put '{"key":"YQ==","value":"Mg==","prev_kv":true}'
post /v3/kv/put '{"key":"Yg==","value":"Mw=="}'
post /v3/kv/put '{"key":"Yw==","ignore_value":true}'
post /v3/kv/range '{"key":"Zm9v"}'
post /v3beta/kv/range '{"key":"Zm9v"}'
post /v3/kv/range '{"key":"AA==","range_end":"AA=="}'
post /v3/kv/range '{"key":"YQ==","range_end":"Yw==","sort_order":"DESCEND","sort_target":"MOD"}'
post /v3/kv/range '{"key":"AA==","range_end":"AA==","limit":"2","keys_only":true}'
post /v3/kv/range '{"key":"AA==","range_end":"AA==","count_only":true}'
post /v3/kv/range '{"key":"YQ==","revision":3,"serializable":true}'
post /v3/kv/range '{"key":"eg=="}'
post /v3/kv/deleterange '{"key":"Yg==","prev_kv":true}'
post /v3/kv/deleterange '{"key":"eg=="}'
post /v3/kv/txn '{"compare":[{"key":"Zm9v","target":"VALUE","result":"EQUAL","value":"YmFy"}],"success":[{"request_put":{"key":"Yg==","value":"NA=="}},{"request_range":{"key":"Yg=="}}],"failure":[{"request_delete_range":{"key":"Yg=="}}]}'
post /v3/kv/txn '{"compare":[{"key":"YQ==","target":"VERSION","result":"GREATER","version":"5"}],"success":[],"failure":[{"request_delete_range":{"key":"Yg==","prev_kv":true}},{"request_txn":{"success":[{"request_range":{"key":"YQ=="}}]}}]}'
post /v3/kv/txn '{"compare":[{"key":"YQ==","target":"MOD","result":"LESS","mod_revision":100}],"success":[{"request_put":{"key":"YQ=="}},{"request_put":{"key":"YQ=="}}]}'
post /v3/kv/compaction '{"revision":4}'
post /v3/kv/compaction '{"revision":4}'
post /v3/kv/compaction '{"revision":1000}'
post /v3/kv/range '{"key":"YQ==","revision":2}'

echo "# errors: validation, decoding, methods, paths"
post /v3/kv/put '{"value":"YmFy"}'
post /v3/kv/range ''
post /v3/kv/range 'null'
post /v3/kv/range '{"key":"Zm9v"'
post /v3/kv/range '{"key":"Zm9v",}'
post /v3/kv/range '{"key" "Zm9v"}'
post /v3/kv/range 'nonsense'
post /v3/kv/range '[{"key":"Zm9v"}]'
post /v3/kv/range '{"key":"Zm9"}'
post /v3/kv/range '{"key":"Zm9vYQ"}'
post /v3/kv/range '{"key":"Zm9v_-"}'
post /v3/kv/range '{"key":5}'
post /v3/kv/range '{"key":"Zm9v","limit":true}'
post /v3/kv/range '{"key":"Zm9v","limit":1.5}'
post /v3/kv/range '{"key":"Zm9v","limit":"abc"}'
post /v3/kv/range '{"key":"Zm9v","limit":"99999999999999999999"}'
post /v3/kv/range '{"key":"Zm9v","serializable":"yes"}'
post /v3/kv/range '{"key":"Zm9v","sort_order":"BOGUS"}'
post /v3/kv/range '{"key":"Zm9v","sort_order":7}'
post /v3/kv/range '{"key":"Zm9v","unknown_field":{"x":[1,2]}}'
post /v3/kv/range '{"key":"Zm9v","key":"YQ=="}'
post /v3/kv/range '{"key":"Zm9v"} trailing garbage'
post /v3/kv/put "{\"key\":\"YQ==\",\"value\":\"$(head -c 1600000 /dev/zero | base64 -w0)\"}"
req GET /v3/kv/range
req PUT /v3/kv/range '{}'
req OPTIONS /v3/kv/range
req POST /v3/kv/nope '{}'
req POST /v3/kv/range/ '{}'
req OPTIONS /v3/nope
req GET /v3
req POST /v3alpha/kv/range '{"key":"Zm9v"}'

echo "# watch: replay, live events, progress, cancel, errors"
# etcd's gateway (Go's HTTP/1.1 server) writes nothing of a stream until
# the request body has ended, so each stream's requests are sent and its
# body closed before the session waits for answers; live events come after
# that. Cairn answers while the body is still open too (server/tests/gateway.rs).
stream_start w1 /v3/watch
stream_send w1 '{"create_request":{"key":"YQ==","start_revision":5,"prev_kv":true}}'
stream_close w1
stream_wait w1 2
post /v3/kv/put '{"key":"YQ==","value":"NQ=="}'
stream_stop w1 3
stream_start w2 /v3/watch
stream_send w2 '{"create_request":{"key":"Zm9v","range_end":"Zm9w","watch_id":7,"filters":["NODELETE"]}}'
stream_send w2 '{"progress_request":{}}'
stream_close w2
stream_wait w2 3
post /v3/kv/put '{"key":"Zm9v","value":"YmF6"}'
post /v3/kv/deleterange '{"key":"Zm9v"}'
post /v3/kv/put '{"key":"Zm9v","value":"YmFy"}'
stream_stop w2 5
stream_start w3 /v3/watch
stream_send w3 '{"create_request":{"key":"Yg==","range_end":"YQ=="}}'
stream_send w3 '{"create_request":{"key":"Yg==","watch_id":0}}'
stream_send w3 '{"create_request":{"key":"Yg==","watch_id":0}} {"cancel_request":{"watch_id":0}}'
stream_send w3 '{"cancel_request":{"watch_id":"5"}}'
stream_close w3
stream_stop w3 5
# (etcd cancels a compacted watch from its sync loop: alone on its stream,
# so that the order of the answers is etcd's too)
stream_start w3c /v3/watch
stream_send w3c '{"create_request":{"key":"YQ==","start_revision":2}}'
stream_close w3c
stream_stop w3c 3
stream_start w4 /v3/watch
stream_send w4 '{"create_request":{"key":"!!"}}'
stream_close w4
stream_stop w4 4
stream_start w5 /v3/watch
stream_send w5 '{"create_request":{"key":"YQ==","start_revision":6}} {"create_requ'
stream_close w5
stream_stop w5 3

echo "# lease (ids chosen by the session)"
post /v3/lease/grant '{"ID":1000,"TTL":60}'
post /v3/lease/grant '{"ID":1000,"TTL":60}'
post /v3/lease/grant '{"ID":"2000","TTL":"120"}'
post /v3/kv/put '{"key":"bA==","value":"MQ==","lease":1000}'
post /v3/kv/put '{"key":"bQ==","value":"MQ==","lease":1001}'
post /v3/lease/timetolive '{"ID":1000,"keys":true}'
post /v3/kv/lease/timetolive '{"ID":2000}'
post /v3/lease/timetolive '{"ID":999}'
post /v3/lease/revoke '{"ID":2000}'
post /v3/lease/leases '{}'
post /v3/kv/lease/leases ''
stream_start k1 /v3/lease/keepalive
stream_send k1 '{"ID":1000}'
stream_send k1 '{"ID":"999"}'
stream_close k1
stream_stop k1 4
post /v3/lease/keepalive '{"ID":1000}'
post /v3/kv/lease/revoke '{"ID":1000}'
post /v3/lease/revoke '{"ID":1000}'
post /v3/kv/range '{"key":"bA=="}'
post /v3/lease/grant '{"TTL":99999999999}'
post /v3/kv/lease/grant '{"TTL":60}'
post /v3/kv/lease/keepalive '{"ID":1}'

echo "# lock and election (etcd 3.5 serves them on the gateway too)"
post /v3/lease/grant '{"ID":3000,"TTL":60}'
post /v3/lock/lock '{"name":"bG9jaw==","lease":3000}'
lock_key=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["key"])' "$scratch/b" 2>/dev/null || echo none)
post /v3/kv/range '{"key":"bG9jaw==","range_end":"bG9jbA==","keys_only":true}'
post /v3/lock/unlock '{"key":"'"$lock_key"'"}'
post /v3/election/leader '{"name":"ZWxlYw=="}'
post /v3/election/campaign '{"name":"ZWxlYw==","lease":3000,"value":"djE="}'
leader=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["leader"], separators=(",", ":")))' "$scratch/b" 2>/dev/null || echo null)
post /v3/election/proclaim '{"leader":'"$leader"',"value":"djI="}'
post /v3/election/leader '{"name":"ZWxlYw=="}'
post /v3/election/resign '{"leader":'"$leader"'}'
post /v3/election/proclaim '{"leader":'"$leader"',"value":"djM="}'
post /v3/lease/revoke '{"ID":3000}'

echo "# cluster"
post /v3/cluster/member/list '{}'
self_peer=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["members"][0]["peerURLs"][0])' "$scratch/b" 2>/dev/null || echo none)
post /v3/cluster/member/list '{"linearizable":true}'
post /v3/cluster/member/add '{"peerURLs":["http://127.0.0.1:1"],"isLearner":true}'
learner=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["member"]["ID"])' "$scratch/b" 2>/dev/null || echo 0)
post /v3/cluster/member/add '{"peerURLs":["127.0.0.1:2"]}'
post /v3/cluster/member/add '{"peerURLs":["http://127.0.0.1:2"],"isLearner":true}'
post /v3/cluster/member/update '{"ID":"1","peerURLs":["http://127.0.0.1:3"]}'
post /v3/cluster/member/update '{"ID":"'"${MEMBER_ID:-0}"'","peerURLs":["'"$self_peer"'"]}'
post /v3/cluster/member/update '{"ID":"'"${MEMBER_ID:-0}"'","peerURLs":["http://127.0.0.1:1"]}'
post /v3/cluster/member/promote '{"ID":"1"}'
post /v3/cluster/member/promote '{"ID":"'"$learner"'"}'
post /v3/cluster/member/list '{}'
post /v3/cluster/member/remove '{"ID":"'"$learner"'"}'
post /v3/cluster/member/remove '{"ID":"1"}'

echo "# maintenance"
post /v3/maintenance/status '{}'
post /v3/maintenance/alarm '{}'
post /v3/maintenance/alarm '{"action":"GET"}'
post /v3/maintenance/alarm '{"action":"ACTIVATE","memberID":"'"${MEMBER_ID:-0}"'","alarm":"NOSPACE"}'
req GET /health
req GET '/health?exclude=NOSPACE'
post /v3/maintenance/alarm '{"action":"DEACTIVATE","memberID":"'"${MEMBER_ID:-0}"'","alarm":"NOSPACE"}'
post /v3/maintenance/alarm '{"action":"GET"}'
post /v3/maintenance/defragment '{}'
post /v3/maintenance/hash '{}'
post /v3/maintenance/transfer-leadership '{"targetID":"5"}'
post /v3/maintenance/downgrade '{"action":"VALIDATE","version":"3.4"}'
post /v3/maintenance/downgrade '{"action":"VALIDATE","version":"x"}'
printf '$ POST /v3/maintenance/snapshot {} | check\n'
curl -s -X POST "$base/v3/maintenance/snapshot" -d '{}' | python3 -c '
import json, sys
lines = sys.stdin.read().split("\n")
chunks = [json.loads(l)["result"] for l in lines if l]
ok = lines[-1] == "" and all(set(c) <= {"blob", "remaining_bytes"} and c.get("blob") for c in chunks)
print("snapshot: every line a {\"result\":{blob}} chunk:", ok, "; last chunk remaining_bytes:", chunks[-1].get("remaining_bytes", "0") if chunks else None)'
echo "# the store after it all"
post /v3/kv/range '{"key":"AA==","range_end":"AA=="}'
