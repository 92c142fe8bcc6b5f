#!/usr/bin/env bash
# The etcdctl session that tests/compat/cluster-compat.sh runs, unchanged, against
# a fresh three-member etcd cluster and a fresh three-member Cairn cluster, and
# whose transcripts it diffs.
#
# Inputs (environment):
#   ETCDCTL    path of the etcdctl binary (3.4.x or 3.5.x)
#   ENDPOINTS  client host:port of the members named m1, m2, m3, comma-separated,
#              in that order (a fresh, healthy cluster: its store must be EMPTY)
#
# Output (stdout): a transcript, in the format described at the top of
# session-lib.sh; every command line shows the endpoints it was sent to
# (`$ etcdctl --endpoints=127.0.0.1:P1 ...`; the comparison script turns them
# into <CLIENT_1>...). Member ids in commands are the server's: the session takes
# them from `member list`.
#
# What the servers may legitimately decide differently is fixed before it shows:
# the session first makes m1 the leader (the initial election is random; nothing
# is printed for this), and after a move-leader it waits until every member
# reports the new leader; before `endpoint status` and `endpoint hashkv` it makes
# sure every member has applied every write (a linearizable read through each).
# Serializable reads go only to members that answered a linearizable read after
# the last write. As in session.sh, every revision is deterministic.
set -uo pipefail

: "${ENDPOINTS:?set ENDPOINTS to the client host:port of m1,m2,m3}"
IFS=, read -r EP1 EP2 EP3 <<<"$ENDPOINTS"
[ -n "$EP3" ] || { echo "cluster-session.sh: ENDPOINTS needs three endpoints" >&2; exit 2; }
ENDPOINT=$EP1
SHOW_ENDPOINTS=1
# shellcheck source=tests/compat/session-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/session-lib.sh"

# eps MEMBERS : the client endpoints of MEMBERS (digits: 1, 23, 123 ...)
eps() {
  local i v out=
  for ((i = 0; i < ${#1}; i++)); do
    v=EP${1:i:1}
    out=$out${out:+,}${!v}
  done
  echo "$out"
}
at() { local e; e=$(eps "$1"); shift; ENDPOINT=$e run "$@"; }      # at MEMBERS ARGS...

# cluster_at N ARGS... : `at N ARGS... --cluster`. (etcdctl 3.4 dials the
# members' advertised client URLs with the whole URL, `http://host:port`, as
# the HTTP/2 :authority; etcd accepts that, and so does Cairn.)
cluster_at() { local n=$1; shift; at "$n" "$@" --cluster; }
quiet_at() { local e; e=$(eps "$1"); shift; ENDPOINT=$e quiet "$@"; }
txn_at() { local e; e=$(eps "$1"); shift; ENDPOINT=$e txn "$@"; }  # txn_at MEMBERS <<<TEXT

# The member ids: HEX[n] (as etcdctl takes them) and DEC[n] (as JSON shows them).
declare -A HEX=() DEC=()
quiet_at 1 member list
while IFS=', ' read -r id _ name _; do
  case "$name" in m[123]) HEX[${name#m}]=$id ;; esac
done <"$tmp"
quiet_at 1 member list -w json
for n in 1 2 3; do
  DEC[$n]=$(grep -o "\"ID\":[0-9]*,\"name\":\"m$n\"" "$tmp" | sed 's/"ID":\([0-9]*\),.*/\1/')
  if [ -z "${HEX[$n]:-}" ] || [ -z "${DEC[$n]}" ]; then
    echo "cluster-session.sh: no member m$n in member list:" >&2
    cat "$tmp" >&2
    exit 2
  fi
done

# wait_leader N : wait (silently, up to BG_TIMEOUT s) until every member reports
# mN as the leader; prints a comment line only if it does not happen.
wait_leader() {
  local deadline=$((SECONDS + BG_TIMEOUT))
  while :; do
    quiet_at 123 endpoint status -w json
    [ "$(grep -o "\"leader\":${DEC[$1]}," "$tmp" | wc -l)" != 3 ] || return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      printf '# not every member reports m%s as the leader after %ss:\n' "$1" "$BG_TIMEOUT"
      cat "$tmp"
      return
    fi
    sleep 0.05
  done
}

# sync_all : a linearizable read through every member, so that each has applied
# every write acknowledged so far (silent).
sync_all() {
  local n
  for n in 1 2 3; do
    quiet_at "$n" get sync-probe || { echo "# linearizable read through m$n failed:"; cat "$tmp"; }
  done
}

# Setup: m1 leads (the initial election picks any member).
quiet_at 123 endpoint status -w json
if [ "$(grep -o "\"leader\":${DEC[1]}," "$tmp" | wc -l)" != 3 ]; then
  quiet_at 123 move-leader "${HEX[1]}" || { echo "# setup: move-leader to m1 failed:"; cat "$tmp"; }
fi
wait_leader 1

# ---------------------------------------------------------------------------
section "member list (m1 leads)"
at 1 member list
at 1 member list -w json
at 1 member list -w table
at 1 member list -w fields
at 3 member list -w json

section "endpoint status (revision 1)"
sync_all
cluster_at 1 endpoint status
cluster_at 1 endpoint status -w table
cluster_at 2 endpoint status -w json
at 123 endpoint status -w table
at 3 endpoint status -w fields

# ---------------------------------------------------------------------------
section "move-leader"
at 3 move-leader "${HEX[2]}"   # m3 is no leader: etcdctl finds none among the endpoints given
at 1 move-leader 1234          # no such member
at 1 move-leader "${HEX[1]}"   # to the leader itself
at 1 move-leader "${HEX[2]}"   # the leader m1 hands over to the follower m2
wait_leader 2
cluster_at 1 endpoint status -w table
cluster_at 3 endpoint status -w json
at 123 endpoint status

# ---------------------------------------------------------------------------
section "KV through different members (m2 leads; revisions from 2)"
at 1 put k/1 v1                        # rev 2, through a follower
at 2 get k/1 -w json                   # the leader
at 3 get k/1 -w json                   # a follower: linearizable (ReadIndex)
at 2 get k/1 --consistency=s -w json   # serializable: the member's own state
at 3 get k/1 --consistency=s
at 3 put k/2 v2 --prev-kv -w json      # rev 3, through the other follower
at 1 put k/1 v1b --prev-kv             # rev 4
at 1 get k/ --prefix -w json
at 1 get k/ --prefix --consistency=s
txn_at 3 -w json <<'EOF'
value("k/1") = "v1b"

put k/3 v3

put k/3 nope

EOF
at 2 del k/2 --prev-kv                 # rev 6
at 3 get k/ --prefix --keys-only
at 3 get k/ --prefix --consistency=s -w json
at 2 get k/ --prefix --rev 3 --consistency=s

# ---------------------------------------------------------------------------
section "endpoint hashkv (revision 6)"
sync_all
cluster_at 1 endpoint hashkv
cluster_at 1 endpoint hashkv -w json
cluster_at 2 endpoint hashkv -w table
at 123 endpoint hashkv
cluster_at 1 endpoint hashkv --rev 3 -w json   # an older revision
cluster_at 3 endpoint hashkv --rev 7           # a future one
at 1 put k/4 v4                                  # rev 7
sync_all
cluster_at 1 endpoint hashkv --rev 3           # the same history as before: the same hash
cluster_at 1 endpoint hashkv                   # revision 7
at 2 compaction 4
sync_all
cluster_at 1 endpoint hashkv -w json           # revision 7, compacted at 4
cluster_at 1 endpoint hashkv --rev 3           # below the compacted revision
cluster_at 1 endpoint hashkv --rev 4           # the compacted revision itself
cluster_at 3 endpoint hashkv --rev 5 -w json

# ---------------------------------------------------------------------------
section "snapshot save (its file is not compared: the formats differ)"
cd "$scratch" || exit 2
at 3 snapshot save snap.db                       # from a follower
if [ -s snap.db ]; then echo "# snap.db: written, not empty"; else echo "# snap.db: missing or empty"; fi
at 123 snapshot save snap2.db                    # one endpoint only

section "alarm list"
at 123 alarm list
at 2 alarm list -w json

section "endpoint health"
cluster_at 1 endpoint health
cluster_at 2 endpoint health -w json
cluster_at 3 endpoint health -w table
at 123 endpoint health

section "the end (revision 7)"
sync_all
cluster_at 3 endpoint status -w table
cluster_at 1 endpoint hashkv
at 2 member list -w table
