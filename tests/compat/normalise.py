#!/usr/bin/env python3
"""Normalises the etcdctl transcripts of tests/compat/ before they are diffed.

    normalise.py single ENDPOINT [PEER] < raw > normalised
                                                         (etcdctl-compat.sh; PEER, the
                                                         member's peer host:port, for
                                                         the TLS session's member list)
    normalise.py cluster TOKEN C1 P1 C2 P2 C3 P3 < raw > normalised
                                                         (cluster-compat.sh: the client
                                                         and peer host:port of members
                                                         m1, m2, m3, and the cluster token)
    normalise.py token P1 P2 P3                          (cluster-compat.sh: prints a
                                                         cluster token, see pick_token)

What is replaced, and why, is listed in the header of etcdctl-compat.sh (single)
and cluster-compat.sh (cluster); this file is the implementation.
"""
import hashlib
import re
import struct
import sys

NUM = r"[1-9]\d*"  # non-zero only: see the header of etcdctl-compat.sh
JSON_RULES = [  # JSON output (-w json) of get/put/del/txn/compaction/endpoint status|health
    ("cluster_id", NUM, "<CLUSTER_ID>"), ("member_id", NUM, "<MEMBER_ID>"),
    ("leader", NUM, "<MEMBER_ID>"), ("raft_term", NUM, "<RAFT_TERM>"),
    ("raftTerm", NUM, "<RAFT_TERM>"), ("raftIndex", NUM, "<RAFT_INDEX>"),
    ("raftAppliedIndex", NUM, "<RAFT_INDEX>"), ("dbSize", NUM, "<DB_SIZE>"),
    ("dbSizeInUse", NUM, "<DB_SIZE>"),
    ("version", r"\"[^\"]*\"", "<VERSION>"),  # only the string form: kv versions are numbers
    ("took", r"\"[^\"]*\"", "<DURATION>"),
    # etcdctl's warn logs (the ts of `endpoint health`'s own client is a number)
    ("ts", r"(?:\"[^\"]*\"|\d+(?:\.\d+)?)", "<TS>"), ("target", r"\"[^\"]*\"", "<TARGET>"),
]
FIELDS_RULES = [  # -w fields output: `"Name" : value`
    ("ClusterID", NUM, "<CLUSTER_ID>"), ("MemberID", NUM, "<MEMBER_ID>"),
    ("Leader", NUM, "<MEMBER_ID>"), ("RaftTerm", NUM, "<RAFT_TERM>"),
    ("RaftIndex", NUM, "<RAFT_INDEX>"), ("RaftAppliedIndex", NUM, "<RAFT_INDEX>"),
    ("DBSize", NUM, "<DB_SIZE>"), ("DBSizeInUse", NUM, "<DB_SIZE>"),
    ("Version", r"\"[^\"]*\"", "<VERSION>"),
]
TABLE_COLS = {"ID": "<MEMBER_ID>", "VERSION": "<VERSION>", "DB SIZE": "<DB_SIZE>",
              "RAFT TERM": "<RAFT_TERM>", "RAFT INDEX": "<RAFT_INDEX>",
              "RAFT APPLIED INDEX": "<RAFT_INDEX>", "TOOK": "<DURATION>"}
# `endpoint status` simple output: endpoint, id, version, db size, is leader,
# is learner, raft term, raft index, raft applied index, errors. (The endpoint and
# the id may already be placeholders: <ENDPOINT>, http://<CLIENT_n>, <ID_n>.)
STATUS_LINE = re.compile(r"^((?:https?://)?<ENDPOINT>|(?:http://)?<CLIENT_\d>), ([0-9a-f]+|<ID_\d>), [^,]*, [^,]*, "
                         r"(true|false), (true|false), \d+, \d+, \d+, ")


def status_line(m):
    member = m.group(2) if m.group(2).startswith("<") else "<MEMBER_ID>"
    return "%s, %s, <VERSION>, <DB_SIZE>, %s, %s, <RAFT_TERM>, <RAFT_INDEX>, <RAFT_INDEX>, " % (
        m.group(1), member, m.group(3), m.group(4))


class Tables:
    """`-w table` output: cells trimmed, border lines collapsed, and the cells of
    the TABLE_COLS columns replaced (unless they already hold a placeholder)."""

    def __init__(self):
        self.header = None

    def line(self, line):
        """The normalised line if it belongs to a table, else None."""
        if line.startswith("+-") and line.endswith("+"):
            return "+-+"
        if line.startswith("|") and line.endswith("|"):
            cells = [c.strip() for c in line[1:-1].split("|")]
            if self.header is None:  # first row of a table: the column names
                self.header = cells
            else:
                cells = [TABLE_COLS.get(self.header[i], c)
                         if i < len(self.header) and not c.startswith("<") else c
                         for i, c in enumerate(cells)]
            return "| " + " | ".join(cells) + " |"
        self.header = None
        return None


def common(line):
    """The rules for every transcript, on a line that is not part of a table."""
    for name, pat, rep in JSON_RULES:
        line = re.sub(r"(\"%s\":)%s" % (name, pat), r"\g<1>" + rep, line)
    for name, pat, rep in FIELDS_RULES:
        line = re.sub(r"^(\"%s\" : )%s$" % (name, pat), r"\g<1>" + rep, line)
    line = STATUS_LINE.sub(status_line, line)
    line = re.sub(r"(is (un)?healthy: .*took = )\S+", r"\g<1><DURATION>", line)
    return line


# ---------------------------------------------------------------------------
# single: etcdctl-compat.sh (one member; leases)

# `member list` simple output: id, status, name, peer URLs, client URLs, learner.
MEMBER_LINE = re.compile(r"^[0-9a-f]+(, (?:started|unstarted), )")
# The alert a TLS server sends a client that presents no certificate when one
# is required: RFC 8446 names certificate_required (rustls, newer Go); Go
# 1.16, which built etcd 3.5.1, sends bad_certificate. etcdctl prints it.
NO_CLIENT_CERT_ALERT = re.compile(r"remote error: tls: (?:bad certificate|certificate required)")


def single(text, endpoint, peer=None):
    lines = text.split("\n")

    # Lease ids (see the header of etcdctl-compat.sh). First collect the ids the
    # server assigned, as integers, from the places where they appear: lease grant
    # / list / timetolive / keep-alive output (hex in simple output, decimal in
    # JSON and fields), the lease of a key (JSON "lease", fields "Lease") and the
    # lock and election keys <name>/<lease id in hex> of the session (mylock/,
    # myelection/).
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
    ttl_slack = 30

    def remaining(r, g):
        return "<REMAINING>" if g > 0 and max(0, g - ttl_slack) <= int(r) <= g else r
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
    tables = Tables()
    for line in lines:
        line = line.replace(endpoint, "<ENDPOINT>")
        if peer is not None:
            line = line.replace(peer, "<PEER>")
            line = MEMBER_LINE.sub(r"<MEMBER_ID>\g<1>", line)
        line = NO_CLIENT_CERT_ALERT.sub("remote error: tls: <NO CLIENT CERTIFICATE ALERT>", line)
        line = re.sub(r"\b[0-9a-f]+\b", lease_token, line)
        line = re.sub(r"^(lease \S+ granted with TTL\((\d+)s\), remaining\()(-?\d+)s\)(?:, attached keys\(\[(.*)\]\))?$",
                      timetolive_simple, line)
        line = re.sub(r"\"ttl\":(-?\d+),\"granted-ttl\":(\d+)(?:,\"keys\":\[([^]]*)\])?", timetolive_json, line)
        t = tables.line(line)
        out.append(common(line) if t is None else t)
    return "\n".join(out)


# ---------------------------------------------------------------------------
# cluster: cluster-compat.sh (three members m1, m2, m3)

def etcd_member_id(peer_urls, token):
    """etcd's member id: SHA-1 of the sorted peer URLs and the cluster token."""
    b = "".join(sorted(peer_urls)).encode() + token.encode()
    return struct.unpack(">Q", hashlib.sha1(b).digest()[:8])[0]


def etcd_cluster_id(member_ids):
    """etcd's cluster id: SHA-1 of the sorted member ids (big-endian)."""
    b = b"".join(struct.pack(">Q", i) for i in sorted(member_ids))
    return struct.unpack(">Q", hashlib.sha1(b).digest()[:8])[0]


def pick_token(peers):
    """A cluster token under which etcd's member ids of the members with these
    peer host:ports sort as m2 < m3 < m1: neither by name nor by position in
    --initial-cluster (nor the reverse of either), so the order of member lists
    in the transcript shows that a server sorts them by id, as etcd does."""
    for n in range(1000):
        token = "cairn-compat-%d" % n
        ids = [etcd_member_id(["http://" + p], token) for p in peers]
        if ids[1] < ids[2] < ids[0]:
            return token
    raise SystemExit("no suitable cluster token")


def split_json_array(s):
    """The raw text of the elements of the one-line JSON array s, or None."""
    if not (s.startswith("[") and s.endswith("]")):
        return None
    items, depth, start, in_str, esc = [], 0, 1, False, False
    for i, ch in enumerate(s[1:-1], 1):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == "\"":
                in_str = False
        elif ch == "\"":
            in_str = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(s[start:i])
            start = i + 1
    if start < len(s) - 1:
        items.append(s[start:-1])
    return items


def blocks(lines):
    """The transcript as [command line, output lines...] blocks; the lines before
    the first command form a block of their own."""
    out = [[]]
    for line in lines:
        if line.startswith("$ etcdctl"):
            out.append([])
        out[-1].append(line)
    return out


def cluster(text, token, clients, peers):
    lines = text.split("\n")
    # host:port of every member -> <CLIENT_n> / <PEER_n>, by the member's position
    ports = {}
    for n, (c, p) in enumerate(zip(clients, peers), 1):
        ports[c] = "<CLIENT_%d>" % n
        ports[p] = "<PEER_%d>" % n

    def hostport(m):
        return ports.get(m.group(0), m.group(0))
    lines = [re.sub(r"127\.0\.0\.1:\d+\b", hostport, line) for line in lines]

    # Member ids, learnt from `member list` (simple output: id, status, name, ...)
    ids = {}
    for line in lines:
        m = re.match(r"^([0-9a-f]+), (?:started|unstarted), m([123]), ", line)
        if m:
            ids.setdefault(int(m.group(1), 16), "<ID_%s>" % m.group(2))

    def id_token(m):  # every hex or decimal token that is one of them
        tok = m.group(0)
        for v in ([int(tok, 16)] + ([int(tok)] if tok.isdigit() else [])):
            if v in ids:
                return ids[v]
        return tok
    lines = [re.sub(r"\b[0-9a-f]+\b", id_token, line) for line in lines]

    hashes = {}      # hash value -> <HASH_n>, in order of first appearance
    mismatches = []  # commands whose members reported different hashes
    out = []
    for block in blocks(lines):
        cmd = block[0] if block and block[0].startswith("$ etcdctl") else ""
        body = block[1:] if cmd else block
        if " endpoint health" in cmd:
            body = sort_health(body)
        if " endpoint hashkv" in cmd:
            body, values = number_hashes(body, hashes)
            if len(set(values)) > 1:
                mismatches.append(cmd)
                exits = [i for i, line in enumerate(body) if line.startswith("[exit ")]
                body.insert(exits[-1] + 1 if exits else len(body),
                            "# HASH MISMATCH: the members reported different hashes: %s"
                            % " ".join(str(v) for v in values))
        if " snapshot save" in cmd:
            body = [snapshot_log(line) for line in body]
        tables = Tables()
        for line in ([cmd] if cmd else []) + body:
            t = tables.line(line)
            out.append(common(line) if t is None else t)

    # Whether the ids are the ones etcd derives (member id: peer URLs + token;
    # cluster id: member ids): said in the transcript, so the diff shows it.
    expected = [etcd_member_id(["http://" + p], token) for p in peers]
    found = {ids_name: v for v, ids_name in ids.items()}
    while out and out[-1] == "":
        out.pop()
    out.append("")
    out.append("# member ids as etcd derives them (SHA-1 of peer URLs and cluster token): "
               + ", ".join("m%d %s" % (n, "yes" if found.get("<ID_%d>" % n) == e else "NO")
                           for n, e in enumerate(expected, 1)))
    cids = set(int(v) for v in re.findall(r"\"cluster_id\":(\d+)", text))
    cids |= set(int(v) for v in re.findall(r"^\"ClusterID\" : (\d+)$", text, re.M))
    out.append("# cluster id as etcd derives it (SHA-1 of the member ids): "
               + ("yes" if cids == {etcd_cluster_id(expected)} else "NO: %s" % sorted(cids)))
    return "\n".join(out), mismatches


def sort_health(body):
    """`endpoint health` checks the endpoints concurrently and prints them in the
    order the checks end: sort its simple lines, JSON array and table rows."""
    result = list(body)

    def sort_at(positions):  # sorts the lines at these positions among themselves
        for i, line in zip(positions, sorted(result[i] for i in positions)):
            result[i] = line
    sort_at([i for i, line in enumerate(result) if re.match(r"^\S+ is (un)?healthy: ", line)])
    sort_at([i for i, line in enumerate(result) if line.startswith("|")][1:])  # (not the header row)
    for i, line in enumerate(result):
        items = split_json_array(line)
        if items is not None:
            result[i] = "[" + ",".join(sorted(items)) + "]"
    return result


def number_hashes(body, hashes):
    """The hashes of `endpoint hashkv` (simple `ENDPOINT, HASH`, JSON "hash":N,
    table HASH column) -> <HASH_n>, numbered in order of first appearance in the
    transcript; returns the body and the raw values of this command."""
    values = []

    def name(v):
        values.append(int(v))
        if int(v) not in hashes:
            hashes[int(v)] = "<HASH_%d>" % (len(hashes) + 1)
        return hashes[int(v)]
    out, hash_col = [], None
    for line in body:
        m = re.fullmatch(r"(\S+, )(\d+)", line)
        if m:
            line = m.group(1) + name(m.group(2))
        line = re.sub(r"(\"hash\":)(\d+)", lambda m: m.group(1) + name(m.group(2)), line)
        if line.startswith("|") and line.endswith("|"):
            cells = line[1:-1].split("|")
            if hash_col is None:
                stripped = [c.strip() for c in cells]
                hash_col = stripped.index("HASH") if "HASH" in stripped else -1
            elif 0 <= hash_col < len(cells) and cells[hash_col].strip().isdigit():
                cells[hash_col] = " %s " % name(cells[hash_col].strip())
                line = "|" + "|".join(cells) + "|"
        elif not line.startswith("+-"):
            hash_col = None
        out.append(line)
    return out, values


def snapshot_log(line):
    """etcdctl's own log lines of `snapshot save`: the numeric timestamp, the
    snapshot size and how long it took."""
    line = re.sub(r"(\"ts\":)\d+(\.\d+)?", r"\g<1><TS>", line)
    line = re.sub(r"(\"size\":)\"[^\"]*\"", r"\g<1><DB_SIZE>", line)
    line = re.sub(r"(\"took\":)(\"[^\"]*\"|[\d.e-]+)", r"\g<1><DURATION>", line)
    return line


def main(argv):
    if len(argv) in (2, 3) and argv[0] == "single":
        sys.stdout.write(single(sys.stdin.read(), *argv[1:]))
    elif len(argv) == 8 and argv[0] == "cluster":
        text, mismatches = cluster(sys.stdin.read(), argv[1], argv[2::2], argv[3::2])
        sys.stdout.write(text)
        for cmd in mismatches:
            print("normalise.py: members' hashes differ: %s" % cmd, file=sys.stderr)
    elif len(argv) == 4 and argv[0] == "token":
        print(pick_token(argv[1:]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
