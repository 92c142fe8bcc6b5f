#!/usr/bin/env bash
# The etcdctl session that tests/compat/etcdctl-compat.sh runs, unchanged, against
# a fresh real etcd and against a fresh Cairn, and whose transcripts it diffs.
#
# Inputs (environment):
#   ETCDCTL   path of the etcdctl binary (3.4.x or 3.5.x)
#   ENDPOINT  host:port of the server under test (its store must be EMPTY)
#
# Output (stdout): a transcript, in the format described at the top of
# session-lib.sh (the helpers it shares with cluster-session.sh).
#
# The session starts from an empty store (revision 1) and every write is listed
# here, so every revision number in the transcript is deterministic and must be
# the same on etcd and on Cairn. Keys, values, versions, create and mod revisions
# are chosen so that each --sort-by target gives a distinct order with no ties.
#
# Commands that only one etcdctl version has (e.g. `get --count-only`, 3.5+) are
# run only with that version, and a `# skipped: ...` line says so otherwise.
#
# Blocking commands (watch, lock, elect, lease keep-alive) run as background jobs.
# The session never sleeps to let time decide what a job prints: it waits for the
# number of lines etcd prints (or for keys to appear or disappear), and watches
# start at a given revision (--rev). Lease ids are the server's: the session takes
# them from the output that announces them (the comparison script normalises them).
set -uo pipefail

: "${ENDPOINT:?set ENDPOINT to host:port}"
# shellcheck source=tests/compat/session-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/session-lib.sh"

# Lease ids are chosen by the server. The session takes them from the output of
# the command that created them (last_lease_hex / last_lease_dec) and passes them
# on; the comparison script normalises them everywhere.
last_lease_hex() { sed -n 's/^lease \([0-9a-f][0-9a-f]*\) granted with TTL.*/\1/p' "$tmp" | head -n 1; }
last_lease_dec() { # "ID":N (json) or "ID" : N (fields) in $tmp, printed as hex
  local d
  d=$(sed -n 's/.*"ID":\([0-9][0-9]*\).*/\1/p; s/^"ID" : \([0-9][0-9]*\)$/\1/p' "$tmp" | head -n 1)
  [ -z "$d" ] || printf '%x\n' "$d"
}
key_lease() { # key_lease PREFIX FILE : the hex lease id suffix of the first PREFIX<hex> line
  sed -n "s|^$1\\([0-9a-f][0-9a-f]*\\)\$|\\1|p" "$2" | head -n 1
}

# ---------------------------------------------------------------------------
section "empty store: revision 1, nothing stored"
run get "" --prefix -w json
run get "" --from-key -w fields

# ---------------------------------------------------------------------------
section "put (revisions 2..)"
# Final state under k/ (key: value, version, create_revision order):
#   k/a: v-3 (version 4), k/b: v-5 (3), k/c: v-1 (1), k/d: v-4 (5), k/e: v-2 (2)
# create order: k/c, k/a, k/e, k/b, k/d; mod order: k/c, k/b, k/a, k/e, k/d.
run put k/c v-1                                  # rev 2
run put k/a tmp-a1                               # rev 3
run put k/e tmp-e1                               # rev 4
run put k/b v-5                                  # rev 5
run put k/d tmp-d1                               # rev 6
run put k/a tmp-a2 --prev-kv                     # rev 7
run put k/d tmp-d2 -w json                       # rev 8
run put k/d tmp-d3 --prev-kv -w json             # rev 9
run put k/b --ignore-value --prev-kv             # rev 10 (value stays v-5)
run put k/a tmp-a3 -w fields                     # rev 11
run put k/b --ignore-value -w json               # rev 12
run put k/a v-3 --prev-kv -w fields              # rev 13
run put k/d tmp-d4                               # rev 14
run put k/e v-2 --prev-kv -w json                # rev 15
run put k/d v-4                                  # rev 16
run put j/1 "value with spaces"                  # rev 17
run put l/1 l1                                   # rev 18
run put l/2 l2                                   # rev 19
run put z "héllo wörld"                          # rev 20
run put new/key fresh --prev-kv                  # rev 21 (no previous kv)
run put new/key2 fresh2 --prev-kv -w json        # rev 22 (no previous kv)
# errors: no revision is used
run put k/missing --ignore-value
run put k/missing --ignore-value -w json
run put "" v
run put "" v -w json

# ---------------------------------------------------------------------------
section "get: single keys, ranges, missing keys"
run get k/a
run get k/a -w json
run get k/a -w fields
run get k/nope
run get k/nope -w json
run get k/nope -w fields
run get ""
run get "" -w json
run get k/a k/d
run get k/a k/d -w json
run get k/d k/a
run get z
run get z -w fields

section "get --prefix / --from-key"
run get k/ --prefix
run get k/ --prefix -w json
run get k/ --prefix -w fields
run get "" --prefix --keys-only
run get k/c --from-key --keys-only
run get k/c --from-key -w json
run get "" --from-key --keys-only
run get zz --from-key -w json

section "get --limit"
run get k/ --prefix --limit 2
run get k/ --prefix --limit 2 -w json
run get k/ --prefix --limit 2 -w fields
run get k/ --prefix --limit 5 -w json
run get k/ --prefix --limit 6 -w json
run get "" --from-key --limit 3 --keys-only

section "get --rev"
run get k/a --rev 3
run get k/a --rev 3 -w json
run get k/a --rev 7 -w fields
run get k/ --prefix --rev 6
run get k/ --prefix --rev 6 -w json
run get k/ --prefix --rev 1 -w json
run get k/ --prefix --rev 0 --keys-only
run get k/e --rev 22 -w json

section "get --order / --sort-by"
run get k/ --prefix --order ASCEND
run get k/ --prefix --order DESCEND
run get k/ --prefix --order DESCEND -w json
run get k/ --prefix --sort-by KEY
run get k/ --prefix --sort-by KEY --order DESCEND
run get k/ --prefix --sort-by VERSION
run get k/ --prefix --sort-by VERSION --order ASCEND
run get k/ --prefix --sort-by VERSION --order DESCEND
run get k/ --prefix --sort-by CREATE --order ASCEND
run get k/ --prefix --sort-by CREATE --order DESCEND -w json
run get k/ --prefix --sort-by MODIFY --order ASCEND
run get k/ --prefix --sort-by MODIFY --order DESCEND
run get k/ --prefix --sort-by VALUE
run get k/ --prefix --sort-by VALUE --order DESCEND
run get k/ --prefix --sort-by VALUE --order DESCEND --limit 2 -w json
run get k/ --prefix --sort-by MODIFY --order DESCEND --limit 1 --keys-only
run get k/ --prefix --rev 9 --sort-by VERSION --order DESCEND -w fields

section "get --keys-only / --count-only / --print-value-only"
run get k/ --prefix --keys-only
run get k/ --prefix --keys-only -w json
run get k/ --prefix --keys-only -w fields
only35 get k/ --prefix --count-only -w fields
only35 get k/ --prefix --count-only -w json
only35 get "" --from-key --count-only --limit 2 -w json
only35 get k/ --prefix --count-only
run get k/ --prefix --print-value-only
run get k/a --print-value-only
run get j/1 --print-value-only

section "get --consistency"
run get k/ --prefix --consistency=s
run get k/a --consistency=s -w json
run get k/a --consistency=l -w fields

# ---------------------------------------------------------------------------
# txn stdin format (non-interactive): compares, then success ops, then failure ops;
# EACH of the three sections ends with an empty line (an empty section is just the
# empty line). A section that is not terminated makes etcdctl fail with "Error: EOF".
section "txn: compares on value / version / create / mod with = > < !="
# state: k/a = v-3, version 4, create 3, mod 13
txn <<'EOF'
val("k/a") = "v-3"
val("k/a") > "v-2"
val("k/a") < "v-4"
val("k/a") != "v-9"

put t/1 one
put t/2 two
get t/ --prefix
del k/e --prev-kv

put t/fail nope

EOF
# ^ rev 23: both puts and the delete share one revision; the get sees the puts
txn <<'EOF'
ver("k/a") = "4"
ver("k/a") > "3"
ver("k/a") < "5"
ver("k/a") != "1"

get k/a

put t/fail nope

EOF
txn -w json <<'EOF'
c("k/a") = "3"
c("k/a") > "2"
c("k/a") < "4"
c("k/a") != "99"

put t/3 three
get t/ --prefix --keys-only
del t/1

put t/fail nope

EOF
# ^ rev 24
txn -w json <<'EOF'
m("k/a") = "13"
m("k/a") > "12"
m("k/a") < "14"
m("k/a") != "1"

get k/a


EOF

section "txn: failure branch taken"
txn <<'EOF'
val("k/a") = "v-3"
val("k/b") = "wrong"

put t/never x

put t/fail f1
get t/fail

EOF
# ^ rev 25
txn -w json <<'EOF'
ver("k/a") > "4"

put t/never x

put t/fail2 f2 --prev-kv
put t/fail f1b --prev-kv
get t/fail --rev 25

EOF
# ^ rev 26
txn <<'EOF'
c("k/a") < "3"

put t/never x

del t/fail2 --prev-kv

EOF
# ^ rev 27
txn <<'EOF'
m("k/a") != "13"

put t/never x


EOF
txn -w json <<'EOF'
m("k/a") = "0"



EOF
txn -w json <<'EOF'
val("k/a") < "v-3"

put t/never x

del t/nothing
get t/never

EOF

section "txn: missing keys in compares"
txn <<'EOF'
ver("t/none") = "0"
c("t/none") = "0"
m("t/none") = "0"

get t/none


EOF
txn <<'EOF'
val("t/none") = ""

put t/never x

get t/none

EOF
txn <<'EOF'
val("t/none") != "x"

put t/never x


EOF

section "txn: no compares, empty, read-only"
txn <<'EOF'

put t/4 four --prev-kv
put k/a v-3 --prev-kv
get k/a


EOF
# ^ rev 28 (k/a: same value, new version 5 and mod revision 28)
txn -w json <<'EOF'



EOF
txn -w json <<'EOF'

get k/ --prefix --limit 1
get t/ --prefix --rev 24


EOF
txn -w fields <<'EOF'

get k/a
put t/4 four
del t/nothing


EOF
# ^ rev 29
run get k/a -w json

section "txn: errors"
txn <<'EOF'

put a 1
put a 1


EOF
txn <<'EOF'

put dup x
del dup


EOF
txn <<'EOF'

put pre/x x
del pre/ --prefix


EOF
txn <<'EOF'

put a 1

put b 2
put b 3

EOF
txn <<'EOF'

put "" x


EOF
txn <<'EOF'

put t/missing --ignore-value


EOF
txn <<'EOF'

get t/ --prefix --rev 1000


EOF
gen_ops() { # gen_ops N FORMAT : N lines, FORMAT (printf) applied to 1..N
  local i
  for ((i = 1; i <= $1; i++)); do printf "$2\n" "$i"; done
}
{ printf '\n'; gen_ops 129 'put gen/%d x'; printf '\n\n'; } |
  TXN_LABEL="success: 129 ops 'put gen/N x', N=1..129" txn
{ gen_ops 129 'ver("gen/%d") = "0"'; printf '\nget x\n\n\n'; } |
  TXN_LABEL="129 compares 'ver(\"gen/N\") = \"0\"'; success: 'get x'" txn
{ gen_ops 128 'ver("gen/%d") = "0"'; printf '\nget x --keys-only\n\n\n'; } |
  TXN_LABEL="128 compares 'ver(\"gen/N\") = \"0\"'; success: 'get x --keys-only'" txn
{ printf '\n'; gen_ops 128 'del gen/%d'; printf '\n\n'; } |
  TXN_LABEL="success: 128 ops 'del gen/N', N=1..128" txn -w json
{ printf '\n'; gen_ops 128 'get gen/%d --keys-only'; printf '\ndel x\n\n'; } |
  TXN_LABEL="success: 128 ops 'get gen/N --keys-only'; failure: 'del x'" txn -w json
{ printf 'ver("k/a") = "0"\n\nget x\n\n'; gen_ops 129 'get gen/%d'; printf '\n'; } |
  TXN_LABEL="compare false; success: 'get x'; failure: 129 ops 'get gen/N'" txn
run get "" --prefix --keys-only -w json

# ---------------------------------------------------------------------------
section "del"
run del k/nope
run del k/nope -w json
run del k/c --prev-kv                            # rev 30
run del k/b -w json                              # rev 31
run del l/ --prefix                              # rev 32
run del t/ --prefix --prev-kv -w json            # rev 33
run del y --from-key --prev-kv                   # rev 34 (deletes z)
run del new/key new/key3                         # rev 35 (range: new/key, new/key2)
run del ""
run del "" -w json
run get "" --from-key
run get k/c --rev 29 -w json
run get k/c --rev 30 -w json

# ---------------------------------------------------------------------------
section "compaction (current revision 35)"
run get "" --prefix --keys-only -w json
run compaction 1000
run compaction 36
run compaction 5                                 # compaction uses no revision
run compaction 5
run compaction 3
run get k/a --rev 4
run get k/a --rev 4 -w json
run get k/a --rev 5
run get k/a --rev 5 -w json
run get k/ --prefix --rev 36
run get k/ --prefix --rev 1000 -w json
run get k/ --prefix --rev 35 --keys-only
run compaction --physical 10
run compaction --physical 10
run get k/a --rev 9
run get k/a --rev 10 --keys-only
run get "" --from-key --rev 12 -w json
txn <<'EOF'

get k/a --rev 6


EOF
txn <<'EOF'

get k/a --rev 36


EOF
run put k/after compaction                       # rev 36
run get k/ --prefix --rev 36 -w json
run get k/ --prefix --rev 37 -w json
run compaction --physical 36                     # the current revision
run get k/ --prefix --keys-only
run get k/ --prefix --rev 35
run compaction 36
run del "" --prefix -w fields                    # rev 37
run get "" --prefix -w json

# ---------------------------------------------------------------------------
section "endpoint"
run endpoint status
run endpoint status -w table
run endpoint status -w json
run endpoint status -w fields
run endpoint health
run endpoint health -w json
run endpoint health -w table
run defrag
run alarm list

# ---------------------------------------------------------------------------
# watch, lease, lock, elect. Current revision 37, compacted at 36.
# Watches never wait for time to pass: history is replayed with --rev, and the
# "live" watch starts at the next revision (--rev), so that it reports the same
# events whether it is connected before the writes or only after them.
section "watch: replay with --rev (history: revisions 38..46)"
run put w/a a1                                   # rev 38
run put w/b b1                                   # rev 39
run put w/a a2                                   # rev 40
run del w/b                                      # rev 41
txn <<'EOF2'

put w/c c1
put w/a a3
del w/nothing


EOF2
# ^ rev 42: two events in one revision
run put x/other o1                               # rev 43 (outside w/)
run del w/ --prefix                              # rev 44 (deletes w/a and w/c)
run put w/a a5                                   # rev 45 (created again: version 1)
run put w/end end                                # rev 46
# Each watch replays the history from --rev and then waits for more: the session
# waits for the lines that etcd prints (bg_wait), then stops it (bg_stop).
bg w1 watch --rev=38 --prefix w/
bg_wait w1 30
bg_stop w1
bg w2 watch --rev=38 --prefix w/ --prev-kv
bg_wait w2 40
bg_stop w2
bg w3 watch --rev=38 --prefix w/ -w json
bg_wait w3 1
bg_stop w3
bg w4 watch --rev=42 w/a --prev-kv -w json
bg_wait w4 1
bg_stop w4
bg w5 watch --rev=40 w/b w/d                     # range [w/b, w/d)
bg_wait w5 9
bg_stop w5
bg w6 watch --rev=43 "" --prefix -w fields       # every key
bg_wait w6 1
bg_stop w6
# with a command run per event (ETCD_WATCH_REVISION is the response's header revision)
bg w7 watch --rev=42 --prefix w/ -- sh -c 'echo "exec: rev=$ETCD_WATCH_REVISION type=$ETCD_WATCH_EVENT_TYPE key=$ETCD_WATCH_KEY value=$ETCD_WATCH_VALUE"'
bg_wait w7 24
bg_stop w7
bg w8 watch --rev=37 "" --prefix                 # the first revision after the compaction
bg_wait w8 45
bg_stop w8

section "watch: compacted revisions (compacted at 36)"
# (no watch starting exactly AT the compacted revision: see README)
# the server cancels the watch, etcdctl reports it and exits
bg c1 watch --rev=35 --prefix ""
bg_end c1
bg c2 watch --rev=2 k/a -w json
bg_end c2
bg c3 watch --rev=1 k/a
bg_end c3

section "watch: live events (from the next revision, 47)"
bg live watch --rev=47 --prefix w/ --prev-kv
bg live2 watch --rev=47 w/b
sleep 0.5  # (usually connected by now; the simple output is the same either way, but
           # not JSON's: replayed events come in one response with the current revision)
run put w/a a6                                   # rev 47
txn <<'EOF2'

put w/b b2
put w/c c2


EOF2
# ^ rev 48
run del w/a --prev-kv                            # rev 49
run put w/b b3                                   # rev 50
bg_wait live 16
bg_stop live
bg_wait live2 6
bg_stop live2
bg future watch --rev=1000 w/                    # nothing to report yet
bg_stop future

# ---------------------------------------------------------------------------
# Lease TTLs are far above the minimum so that nothing expires by accident.
section "lease: grant, list (current revision 50)"
run lease grant 120
L1=$(last_lease_hex)
run lease grant 60 -w json                       # expires before L1: listed first
L2=$(last_lease_dec)
run lease grant 300 -w fields
L3=$(last_lease_dec)
run lease list
run lease list -w json

section "lease: put --lease, timetolive, keep-alive"
run put w/l1 v1 --lease="$L1"                    # rev 51
run put w/l2 v2 --lease="$L1"                    # rev 52
run put w/l3 v3 --lease="$L2" -w json            # rev 53
txn <<EOF2

put w/l4 v4 --lease=$L1
get w/l4


EOF2
# ^ rev 54
run get w/l --prefix -w json
run get w/l1 -w fields
run lease timetolive "$L1"
run lease timetolive "$L1" --keys
run lease timetolive "$L1" --keys -w json
run lease timetolive "$L1" --keys -w fields
run lease timetolive "$L3" --keys
run lease keep-alive --once "$L1"
run lease keep-alive --once "$L2" -w json
run lease keep-alive --once "$L3" -w fields
bg ka lease keep-alive "$L3"                    # renews now, then every TTL/3 (100 s)
bg_wait ka 1
bg_stop ka
run put w/l1 v1b --ignore-lease                  # rev 55: stays attached to L1
run put w/l2 v2b                                 # rev 56: detached (no lease)
run put w/l3 v3b --lease="$L1"                   # rev 57: moved from L2 to L1
run del w/l4                                     # rev 58
run lease timetolive "$L1" --keys
run lease timetolive "$L2" --keys
run get w/l --prefix -w json

section "lease: errors (unknown lease 1234, ...)"
run put w/x v --lease=1234
run put w/x v --lease=1234 -w json
run put w/x v --lease=zz
run put w/nope v --ignore-lease                # missing key
run put w/l1 v --ignore-lease --lease="$L1"
txn <<'EOF2'

put w/x v --lease=1234


EOF2
run lease timetolive 1234
run lease timetolive 1234 --keys -w json
run lease keep-alive --once 1234
run lease revoke 1234
run lease grant 9000000001
run lease grant 9000000000 -w json
L4=$(last_lease_dec)

section "lease: revoke"
run lease revoke "$L1"                           # rev 59: deletes w/l1 and w/l3
run lease revoke "$L1"
run lease timetolive "$L1" --keys
run lease keep-alive --once "$L1"
run get w/l --prefix
run get w/l --prefix --rev 58 --keys-only
bg wl watch --rev=51 --prefix w/l --prev-kv
bg_wait wl 42
bg_stop wl
run lease list
run lease revoke "$L2" -w json                   # no keys: no revision
run lease revoke "$L4" -w fields
run lease list -w json
run put w/l9 v --lease="$L2"

section "lease: minimum TTL, expiry"
run lease grant 1                                # etcd raises it to its minimum TTL
run lease grant 0 -w json
run lease grant 5
L5=$(last_lease_hex)
run put w/expiring soon --lease="$L5"            # rev 60
wait_keys w/expiring 0                           # the lease expires after 5 s
run get w/expiring --rev 60                      # the key expired with the lease at rev 61
run get w/expiring -w json
run lease timetolive "$L5" --keys
bg we watch --rev=60 w/expiring
bg_wait we 6
bg_stop we
run lease revoke "$L3"
run get "" --prefix --keys-only

# ---------------------------------------------------------------------------
# etcdctl builds lock and elect on Lease + Txn + Watch (client/v3/concurrency):
# a key <name>/<lease id in hex> per contender, the oldest (lowest create
# revision) holds the lock / is the leader. Their sessions' leases (lock --ttl,
# default 10 s; elect: 60 s) are not revoked when etcdctl exits.
section "lock"
run lock mylock -- echo locked
run lock mylock -- sh -c 'echo "key=$ETCD_LOCK_KEY rev=$ETCD_LOCK_REV"; "$ETCDCTL" --endpoints="$ENDPOINT" get mylock/ --prefix -w fields'
run lock --ttl 30 mylock -- sh -c 'exit 3'
run get mylock/ --prefix
bg lk1 lock mylock                               # holds the lock, prints its key
bg_wait lk1 2
LK1=$(key_lease mylock/ "$bg_dir/lk1")
bg lk2 lock mylock -- sh -c 'echo "lk2 got the lock: key=$ETCD_LOCK_KEY rev=$ETCD_LOCK_REV"'
wait_keys mylock/ 2
run get mylock/ --prefix --sort-by=CREATE -w fields
run lease timetolive "$LK1" --keys
run lease revoke "$LK1"                          # lk1 loses the lock, lk2 gets it
bg_end lk2
bg_end lk1                                       # its next keep-alive finds the lease gone
bg lk3 lock mylock
bg_wait lk3 2
bg_stop lk3 INT                                  # unlocks: deletes its key
run get mylock/ --prefix

section "elect"
bg e1 elect myelection proposal1                 # becomes leader, prints its key
bg_wait e1 2
E1=$(key_lease myelection/ "$bg_dir/e1")
bg obs elect --listen myelection                 # prints each new leader
bg_wait obs 2
bg e2 elect myelection proposal2                 # waits for e1
wait_keys myelection/ 2
run get myelection/ --prefix --sort-by=CREATE
run lease timetolive "$E1" --keys
bg_stop e1                                       # resigns: e2 becomes leader
bg_wait e2 2
bg_wait obs 4
E2=$(key_lease myelection/ "$bg_dir/e2")
run get myelection/ --prefix -w fields
run lease revoke "$E2"                           # deletes e2's key: no leader
run get myelection/ --prefix
bg_stop e2
bg_stop obs
run elect myelection
run elect --listen myelection proposal3
