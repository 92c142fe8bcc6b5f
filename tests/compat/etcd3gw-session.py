#!/usr/bin/env python3
"""A real client of the JSON API, unchanged: etcd3gw (OpenStack's etcd v3
gateway client) doing what an application does — put, get, prefix reads,
replace (a txn), delete, a watch, a lease with keys, refresh and revoke,
and a lock — against ENDPOINT. Prints what it sees, in a form that
compares between etcd and Cairn (http-compat.sh diffs the two).

Usage: PYTHONPATH=<etcd3gw> etcd3gw-session.py HOST:PORT
"""
import sys
import threading

from etcd3gw.client import Etcd3Client

host, port = sys.argv[1].rsplit(":", 1)
client = Etcd3Client(host=host, port=int(port), timeout=10)


def show(what, value):
    print("$ %s" % what)
    print(repr(value))


show("api_path", client.api_path)
show("put foo", client.put("foo", "bar"))
show("put foo/a", client.put("foo/a", "1"))
show("put foo/b", client.put("foo/b", b"\x00\xff"))
show("get foo", client.get("foo"))
show("get missing", client.get("missing"))
show("get foo metadata", [m for _, m in client.get("foo", metadata=True)])
show("get_prefix foo/", client.get_prefix("foo/"))
show("get_all", client.get_all(sort_order="descend", sort_target="key"))
show("replace foo bar->baz", client.replace("foo", "bar", "baz"))
show("replace foo bar->qux", client.replace("foo", "bar", "qux"))
show("create foo", client.create("foo", "x"))
show("create new", client.create("new", "x"))
show("delete foo/a", client.delete("foo/a"))
show("delete foo/a again", client.delete("foo/a"))
show("delete_prefix foo/", client.delete_prefix("foo/"))
show("status keys", sorted(client.status()))
show("members", [(m.get("name"), m.get("isLearner", False)) for m in client.members()])

# A watch from a past revision (replayed at once), then a live event.
events, cancel = client.watch("w", start_revision=1)
client.put("w", "1")
got = []
done = threading.Event()


def consume():
    for event in events:
        got.append(event)
        if len(got) == 2:
            done.set()
            return


threading.Thread(target=consume, daemon=True).start()
client.put("w", "2")
show("watch w: two events", done.wait(10))
cancel()
show("events", [(e.get("type", "PUT"), e["kv"]["key"], e["kv"]["value"],
                 e["kv"]["mod_revision"]) for e in got])
show("watch_once w", client.watch_once("w", timeout=1, start_revision=got[0]["kv"]["mod_revision"]))

lease = client.lease(ttl=60)
show("lease ttl", 55 <= lease.ttl() <= 60)
show("put with lease", client.put("leased", "v", lease=lease))
show("lease keys", lease.keys())
show("lease refresh", lease.refresh())
show("lease revoke", lease.revoke())
show("get leased", client.get("leased"))

lock = client.lock(id="L", ttl=60)
show("lock acquire", lock.acquire())
show("lock is_acquired", lock.is_acquired())
other = client.lock(id="L", ttl=60)
show("second lock acquire (held)", other.acquire() if False else other.is_acquired())
show("lock release", lock.release())
show("lock is_acquired after release", lock.is_acquired())
