#!/usr/bin/env python3
"""Normalises an HTTP session transcript (http-compat.sh) so that two
servers' transcripts compare: only values that legitimately differ between
two independent servers become placeholders (see http-compat.sh's header).

Usage: http-normalise.py ENDPOINT PEER < raw > normalised
"""
import json
import re
import sys

endpoint, peer = sys.argv[1], sys.argv[2]
text = sys.stdin.read()

# Ids: the member's own (first header), the cluster's, and members added
# during the session, in order of appearance.
ids = {}
m = re.search(r'"member_id":"(\d+)"', text)
if m:
    ids[m.group(1)] = "<MEMBER_ID>"
m = re.search(r'"cluster_id":"(\d+)"', text)
if m:
    ids[m.group(1)] = "<CLUSTER_ID>"
for i, m in enumerate(re.finditer(r'"member":\{"ID":"(\d+)"', text)):
    ids.setdefault(m.group(1), "<ADDED_ID_%d>" % (i + 1))
for number, name in ids.items():
    text = re.sub(r'(?<![0-9])%s(?![0-9])' % number, name, text)

text = text.replace(endpoint, "<ENDPOINT>").replace(peer, "<PEER>")
for field, name in (
    ("raft_term", "TERM"),
    ("raftTerm", "TERM"),
    ("raftIndex", "INDEX"),
    ("raftAppliedIndex", "INDEX"),
    ("dbSize", "SIZE"),
    ("dbSizeInUse", "SIZE"),
):
    text = re.sub(r'"%s":"\d+"' % field, '"%s":"<%s>"' % (field, name), text)
text = re.sub(r'"(etcdserver|version)":"3\.5\.\d+"', r'"\1":"<VERSION>"', text)
text = re.sub(r'"hash":\d+', '"hash":<HASH>', text)


def ttl(m):
    left, granted = int(m.group(1)), int(m.group(2))
    if granted - 5 <= left <= granted and left > 0:
        return '"TTL":"<TTL>","grantedTTL":"%d"' % granted
    return m.group(0)


text = re.sub(r'"TTL":"(\d+)","grantedTTL":"(\d+)"', ttl, text)


def sort_members(line):
    """Members are listed by id; ids other than the first member's are
    random, so their order is too: sorted by placeholder instead."""
    if '"members":[' not in line or not line.startswith("{"):
        return line
    try:
        body = json.loads(line)
    except ValueError:
        return line
    body["members"].sort(key=lambda m: m.get("ID", ""))
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


text = "\n".join(sort_members(line) for line in text.split("\n"))
sys.stdout.write(text)
