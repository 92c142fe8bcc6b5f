#!/usr/bin/env bash
# The TLS session of tests/compat/etcdctl-compat.sh, run unchanged against an
# etcd and a Cairn serving https:// with --client-cert-auth, whose transcripts
# it diffs. Short: the point is the transport (the full session runs over
# plain http); every revision is deterministic, as in session.sh.
#
# Inputs (environment):
#   ETCDCTL       path of the etcdctl binary (3.4.x or 3.5.x)
#   ENDPOINT      https://host:port of the server under test (EMPTY store)
#   CACERT, CERT, KEY  the CA that signed the server's certificate, and the
#                 client certificate (Common Name root) and key it accepts
#   OTHER_CACERT  a CA that signed neither
#
# Output (stdout): a transcript in session-lib.sh's format. etcdctl gets the
# TLS files through its ETCDCTL_CACERT/ETCDCTL_CERT/ETCDCTL_KEY variables (the
# same as --cacert/--cert/--key), so the echoed commands carry no temporary
# paths.
set -uo pipefail

: "${ENDPOINT:?set ENDPOINT to https://host:port}"
: "${CACERT:?}" "${CERT:?}" "${KEY:?}" "${OTHER_CACERT:?}"
# shellcheck source=tests/compat/session-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/session-lib.sh"
# (after session-lib.sh, which drops every ETCDCTL_* variable it inherits)
export ETCDCTL_CACERT="$CACERT" ETCDCTL_CERT="$CERT" ETCDCTL_KEY="$KEY"

# without_cert ARGS... : run, with the CA but no client certificate.
without_cert() {
  printf '# with --cacert, without --cert/--key:\n'
  (unset ETCDCTL_CERT ETCDCTL_KEY; run "$@")
}

# other_ca ARGS... : run, with the client certificate but trusting another CA.
other_ca() {
  printf '# with --cert/--key, --cacert of a CA that did not sign the server'"'"'s certificate:\n'
  (ETCDCTL_CACERT="$OTHER_CACERT" run "$@")
}

# ---------------------------------------------------------------------------
section "client TLS: --cacert --cert --key (client certificate CN root)"
run get "" --prefix -w json
run put k/a v-1                                  # rev 2
run put k/b v-2 --prev-kv -w json                # rev 3
run put k/a v-3 --prev-kv                        # rev 4
run get k/ --prefix
run get k/ --prefix -w json
run get k/a -w fields
run get k/a --rev 2
txn -w json <<'TXN'
val("k/a") = "v-3"

put k/c v-4
get k/ --prefix

put k/never x

TXN
txn <<'TXN'
ver("k/b") > "5"

put k/never x

get k/c
del k/b --prev-kv

TXN
run del k/a --prev-kv -w json
run get "" --prefix --keys-only
run compaction 3
run get k/c -w json

section "cluster and maintenance over TLS"
run member list
run member list -w table
run endpoint status
run endpoint status -w json
run endpoint status -w table
run endpoint health
run endpoint health -w table

section "refused"
without_cert --dial-timeout=1s --command-timeout=2s get k/c
without_cert --dial-timeout=1s --command-timeout=2s put k/x nope
other_ca --dial-timeout=1s --command-timeout=2s get k/c
# nothing was written by the refused commands
run get "" --prefix --keys-only -w json
