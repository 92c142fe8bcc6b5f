#!/usr/bin/env bash
# The etcdctl session that tests/compat/etcdctl-compat.sh runs, unchanged, against
# a fresh real etcd and against a fresh Cairn, and whose transcripts it diffs.
#
# Inputs (environment):
#   ETCDCTL   path of the etcdctl binary (3.4.x or 3.5.x)
#   ENDPOINT  host:port of the server under test (its store must be EMPTY)
#
# Output (stdout): a transcript. Every command appears as one `$ etcdctl ...` line
# (the stdin of a txn follows it as a here-document), then the command's stdout and
# stderr (merged, in the order written), then `[exit N]`.
#
# The session starts from an empty store (revision 1) and every write is listed
# here, so every revision number in the transcript is deterministic and must be
# the same on etcd and on Cairn. Keys, values, versions, create and mod revisions
# are chosen so that each --sort-by target gives a distinct order with no ties.
#
# Commands that only one etcdctl version has (e.g. `get --count-only`, 3.5+) are
# run only with that version, and a `# skipped: ...` line says so otherwise.
set -uo pipefail

: "${ETCDCTL:?set ETCDCTL to the etcdctl binary}"
: "${ENDPOINT:?set ENDPOINT to host:port}"
for v in $(compgen -e); do  # no stray ETCDCTL_* settings (endpoints, TLS, ...) from the caller
  case "$v" in ETCDCTL_*) unset "$v" ;; esac
done
export ETCDCTL_API=3
export LC_ALL=C  # stable quoting of the echoed commands (printf %q) on any machine

tmp=$(mktemp)
tmp_in=$(mktemp)
trap 'rm -f "$tmp" "$tmp_in"' EXIT

ctl_version=$("$ETCDCTL" version 2>/dev/null | sed -n 's/^etcdctl version: //p')
case "$ctl_version" in
  3.4.*) ctl_minor=4 ;;
  3.5.*) ctl_minor=5 ;;
  *) echo "session.sh: unsupported etcdctl version '$ctl_version'" >&2; exit 2 ;;
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

# run ARGS... : one etcdctl command with no stdin.
run() {
  printf '$ etcdctl'
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
  printf '$ etcdctl txn'
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
