#!/usr/bin/env python3
"""Helper of benches/compare.sh (Python standard library only).

    compare.py check DIR                 every run of every cluster in DIR: one valid
                                         cairn-bench --json object, total > 0, errors == 0
    compare.py report DIR [--publish-md FILE] [--publish-svg FILE]
                                         DIR/table.txt, table.md, plot.svg, summary.json
                                         from the runs' JSON; prints table.txt; with
                                         --publish-*, also the docs page's table and plot
    compare.py brief FILE                one line about one run (for the log)
    compare.py leader CLIENTS [--ids]    reads `etcdctl endpoint status -w json` on stdin;
                                         prints the leader's name (m1..m3 = position in
                                         CLIENTS); with --ids also m1's hex id and the
                                         leader's endpoint

DIR is a results directory written by compare.sh: machine.tsv, workloads.tsv
(name, description, command), kinds.tsv (id, label, binary, version) and per kind
KIND/NAME.json (cairn-bench --json), KIND/NAME.stats.json (members' RSS and CPU
before/after the run), KIND/NAME.cmd, KIND/NAME.stderr.

Ratios: Cairn/etcd for throughput, etcd/Cairn for latency and RSS, so that a
ratio >= 1.0 means Cairn is at least as good. The baseline is etcd 3.5.1 (the
first kind); etcd 3.4, when measured, is shown beside it without a ratio.

With compare.sh --tls, kinds etcd-3.5-tls and cairn-tls (the same servers with
client and peer TLS) come after the plain ones: the report then has three
tables, without TLS, with TLS (Cairn TLS / etcd TLS ratios) and the cost of TLS
(each server's TLS figures against its own plain ones).
"""

import json
import math
import os
import re
import shutil
import sys
from html import escape

PERCENTILES = ["10", "25", "50", "75", "90", "95", "99", "99.9"]
NUM_FIELDS = ["total", "errors", "total_secs", "slowest_ms", "fastest_ms",
              "average_ms", "stddev_ms", "rps"]
TABLE_BEGIN = "<!-- compare.sh:table:begin -->"
TABLE_END = "<!-- compare.sh:table:end -->"
COLORS = {"etcd-3.5": "#4e79a7", "etcd-3.4": "#9dbbd9", "cairn": "#e8762b",
          "etcd-3.5-tls": "#27466b", "cairn-tls": "#a34a0c", "cairn-plaintext": "#f5b98a"}
TLS_SUFFIX = "-tls"
# Cairn's benchmark-only build that seals nothing: measured beside Cairn for the
# cost of encryption, never compared with etcd in the main table
PLAINTEXT = "cairn-plaintext"


def split_tls(kinds):
    """(plain kinds, TLS kinds), each in their order; the plaintext build is in
    neither (see encryption_tables)."""
    return ([k for k in kinds if not k["id"].endswith(TLS_SUFFIX) and k["id"] != PLAINTEXT],
            [k for k in kinds if k["id"].endswith(TLS_SUFFIX)])


# --------------------------------------------------------------------------
# loading

def read_tsv(path):
    rows = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if line:
                    rows.append(line.split("\t"))
    return rows


def load_run(path, workload=None):
    """(main object, every object, problem): cairn-bench --json prints one JSON
    object per report, one a line (two for watch-latency: "watch-latency-put"
    and "watch-latency"); the main one is the report named `workload`, else
    the last."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        return None, [], f"no output ({e.strerror})"
    objs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            return None, objs, f"line {n} is not JSON: {e}"
        if not isinstance(obj, dict):
            return None, objs, f"line {n} is not a JSON object"
        objs.append(obj)
    if not objs:
        return None, [], "empty output"
    main = next((o for o in objs if o.get("workload") == workload), objs[-1])
    return main, objs, None


def validate(obj):
    """Problems with one run's JSON (shape, total > 0, errors == 0)."""
    probs = []

    def num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not isinstance(obj.get("workload"), str) or not obj.get("workload"):
        probs.append("'workload' missing or not a string")
    eps = obj.get("endpoints")
    if not isinstance(eps, list) or not eps or not all(isinstance(e, str) for e in eps):
        probs.append("'endpoints' missing or not a list of strings")
    for k in ("clients", "conns", "total", "errors"):
        if not isinstance(obj.get(k), int) or isinstance(obj.get(k), bool):
            probs.append(f"'{k}' missing or not an integer")
    for k in NUM_FIELDS:
        if not num(obj.get(k)):
            probs.append(f"'{k}' missing or not a number")
    pct = obj.get("percentiles_ms")
    if not isinstance(pct, dict) or not all(num(pct.get(p)) for p in PERCENTILES):
        probs.append("'percentiles_ms' missing or lacks one of " + ", ".join(PERCENTILES))
    hist = obj.get("histogram")
    if not isinstance(hist, list) or not all(
            isinstance(h, dict) and num(h.get("le_ms")) and isinstance(h.get("count"), int)
            for h in hist):
        probs.append("'histogram' missing or malformed")
    ed = obj.get("error_distribution")
    if not isinstance(ed, dict):
        probs.append("'error_distribution' missing or not an object")
    if isinstance(obj.get("total"), int) and obj["total"] <= 0:
        probs.append(f"total is {obj['total']}")
    if isinstance(obj.get("errors"), int) and obj["errors"] != 0:
        probs.append(f"{obj['errors']} errors: {json.dumps(ed)}")
    if not probs:
        if sum(h["count"] for h in hist) != obj["total"] - obj["errors"] and \
                sum(h["count"] for h in hist) != obj["total"]:
            probs.append(f"histogram counts {sum(h['count'] for h in hist)} != total {obj['total']}")
        if not obj["fastest_ms"] <= obj["average_ms"] <= obj["slowest_ms"]:
            probs.append("not fastest <= average <= slowest")
        if not obj["rps"] > 0 or not obj["total_secs"] > 0:
            probs.append("rps or total_secs not positive")
    return probs


def load_round(base, workload):
    obj, objs, prob = load_run(base + ".json", workload)
    stats = None
    if os.path.exists(base + ".stats.json"):
        with open(base + ".stats.json", encoding="utf-8") as f:
            stats = json.load(f)
    if stats is not None and stats.get("rc", 0) != 0:
        prob = f"cairn-bench exited with {stats['rc']}" + (f"; {prob}" if prob else "")
    return {"obj": obj, "objs": objs, "problem": prob, "stats": stats}


def round_dirs(kind_dir):
    """The round directories of a kind (r1, r2, ...); the kind's directory
    itself for results written before rounds existed."""
    if not os.path.isdir(kind_dir):
        return []
    rs = sorted((int(n[1:]), os.path.join(kind_dir, n)) for n in os.listdir(kind_dir)
                if re.fullmatch(r"r[0-9]+", n) and os.path.isdir(os.path.join(kind_dir, n)))
    return [p for _, p in rs] or [kind_dir]


def load(d):
    """machine, workloads, kinds, runs: runs[(kind, workload)] is the list of
    that workload's runs, one per round."""
    machine = dict((r[0], r[1] if len(r) > 1 else "") for r in read_tsv(os.path.join(d, "machine.tsv")))
    # "source": the run a row reads (another row's, for a run with several reports)
    workloads = [{"name": r[0], "desc": r[1], "cmd": r[2] if len(r) > 2 else "",
                  "workload": r[3] if len(r) > 3 else None,
                  "fixed_rate": len(r) > 4 and r[4] == "fixed-rate",
                  "source": r[5] if len(r) > 5 and r[5] else r[0]}
                 for r in read_tsv(os.path.join(d, "workloads.tsv"))]
    kinds = [{"id": r[0], "label": r[1], "bin": r[2], "version": r[3] if len(r) > 3 else ""}
             for r in read_tsv(os.path.join(d, "kinds.tsv"))]
    runs = {}
    for k in kinds:
        k["startups"] = []
        rdirs = round_dirs(os.path.join(d, k["id"]))
        k["rounds"] = len(rdirs)
        for rd in rdirs:
            sp = os.path.join(rd, "startup.stats.json")
            if os.path.exists(sp):
                with open(sp, encoding="utf-8") as f:
                    k["startups"].append(json.load(f))
        for w in workloads:
            runs[(k["id"], w["name"])] = [load_round(os.path.join(rd, w["source"]), w["workload"])
                                          for rd in rdirs]
    return machine, workloads, kinds, runs


# --------------------------------------------------------------------------
# figures

def run_ok(run):
    return bool(run) and run["obj"] is not None and run["problem"] is None


def median(vals):
    vals = sorted(v for v in vals if v is not None)
    if not vals:
        return None
    n = len(vals)
    return vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2


def peak_rss_mib(run):
    """Largest member's peak RSS during the run (MiB)."""
    st = run and run["stats"]
    if not st:
        return None
    return max(m["hwm_kib"] for m in st["after"].values()) / 1024.0


def cluster_cpu_s(run):
    st = run and run["stats"]
    if not st:
        return None
    return sum(st["after"][m]["cpu_s"] - st["before"][m]["cpu_s"] for m in st["after"])


def member_peaks_mib(kind, workloads, runs):
    """Each member's peak RSS over every round (startups and every workload)."""
    peaks = {}
    sources = list(kind.get("startups", [])) + [
        (run["stats"] or {}).get("after") for w in workloads for run in runs[(kind["id"], w["name"])]]
    for s in sources:
        for m, v in (s or {}).items():
            peaks[m] = max(peaks.get(m, 0), v["hwm_kib"] / 1024.0)
    return peaks


def figures(rounds):
    """One kind's figures for one workload over its rounds: medians of the
    good rounds, every round's value, summed errors."""
    ok = [r for r in rounds if run_ok(r)]
    f = {}
    for key, get in (("rps", lambda o: o["rps"]), ("p99_ms", lambda o: o["percentiles_ms"]["99"]),
                     ("avg_ms", lambda o: o["average_ms"]), ("p50_ms", lambda o: o["percentiles_ms"]["50"]),
                     ("p999_ms", lambda o: o["percentiles_ms"]["99.9"]), ("total_secs", lambda o: o["total_secs"])):
        vals = [get(r["obj"]) for r in ok]
        f[key] = median(vals)
        f[key + "_all"] = vals
    rss = [peak_rss_mib(r) for r in rounds]
    f["rss_mib"], f["rss_mib_all"] = median(rss), [v for v in rss if v is not None]
    f["cpu_s"] = median([cluster_cpu_s(r) for r in rounds])
    objs = [r["obj"] for r in rounds if r["obj"] is not None]
    f["total"] = sum(o.get("total", 0) for o in objs) if objs else None
    f["errors"] = sum(o.get("errors", 0) for o in objs) if objs else None
    dist = {}
    for o in objs:
        for m, n in (o.get("error_distribution") or {}).items():
            dist[m] = dist.get(m, 0) + n
    f["error_distribution"] = dist
    probs = [f"round {i + 1}: {r['problem']}" for i, r in enumerate(rounds) if r["problem"]]
    f["problem"] = "; ".join(probs) if (probs and not ok) or not rounds else None
    f["round_problems"] = probs
    f["leader_after"] = "/".join((r["stats"] or {}).get("leader_after", "?") for r in rounds) or None
    f["builds_running"] = " ".join((r["stats"] or {}).get("builds_running", "") for r in rounds).strip()
    f["rounds"] = len(rounds)
    f["obj"] = ok[0]["obj"] if ok else (objs[0] if objs else None)
    return f


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_rps(v):
    return "—" if v is None else f"{v:,.0f}"


def fmt_ms(v):
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_mib(v):
    return "—" if v is None else f"{v:,.0f}"


def is_behind(r):
    """A ratio below 1.00 as printed (0.996 prints 1.00: not behind)."""
    return r is not None and round(r, 2) < 1.0


def fmt_ratio(r, md=False, judged=True):
    if r is None:
        return "—"
    s = f"{r:.2f}"
    if not judged:
        return f"({s})" if md else f"({s}) "
    if is_behind(r):
        return f"**{s}**" if md else s + " <"
    return s if md else s + "  "


def judged(r, rk):
    """Whether a ratio counts: not the throughput of a fixed-rate workload."""
    return not (rk == "ratio_rps" and r.get("fixed_rate"))


def behind_in(r):
    return [what for what, rk in (("throughput", "ratio_rps"), ("p99 latency", "ratio_p99"), ("RSS", "ratio_rss"))
            if judged(r, rk) and is_behind(r[rk])]


def row_label(w, runs, kinds):
    obj = None
    for k in kinds:
        for r in runs.get((k["id"], w["name"]), []):
            if r["obj"]:
                obj = r["obj"]
                break
        if obj:
            break
    label = w["desc"]
    if obj and isinstance(obj.get("clients"), int) and w["workload"] != "watch-latency":
        c, n = obj["clients"], obj.get("conns")
        label += f", {c:,} client{'s' if c != 1 else ''}"
        if isinstance(n, int) and n != c:
            label += f" / {n:,} conn{'s' if n != 1 else ''}"
    return label


def build_rows(workloads, kinds, runs):
    base = kinds[0]["id"]
    subj = next((k["id"] for k in kinds if k["id"] == "cairn"), kinds[-1]["id"])
    rows = []
    for w in workloads:
        r = {"name": w["name"], "label": row_label(w, runs, kinds), "kinds": {},
             "fixed_rate": w["fixed_rate"]}
        for k in kinds:
            f = figures(runs[(k["id"], w["name"])])
            del f["obj"]
            r["kinds"][k["id"]] = f
        b, s = r["kinds"][base], r["kinds"][subj]
        r["ratio_rps"] = ratio(s["rps"], b["rps"])
        r["ratio_p99"] = ratio(b["p99_ms"], s["p99_ms"])
        r["ratio_rss"] = ratio(b["rss_mib"], s["rss_mib"])
        rows.append(r)
    return rows, base, subj


# --------------------------------------------------------------------------
# tables

SHORT = {"etcd-3.5": "etcd 3.5", "etcd-3.4": "etcd 3.4", "cairn": "Cairn",
         "etcd-3.5-tls": "etcd 3.5 TLS", "cairn-tls": "Cairn TLS", PLAINTEXT: "Cairn plaintext"}
GROUPS = (("requests/s", "rps", fmt_rps, "ratio_rps", "req/s"),
          ("p99 latency, ms", "p99_ms", fmt_ms, "ratio_p99", "p99 ms"),
          ("peak RSS, MiB", "rss_mib", fmt_mib, "ratio_rss", "RSS MiB"))


def table_cells(rows, kinds, base, subj, workloads, runs, md):
    """(groups, header, body): groups = [(title, first column, number of columns)]."""
    order = [k for k in kinds if k["id"] != subj] + [k for k in kinds if k["id"] == subj]
    header, groups = ["workload"], []
    for title, _, _, _, short in GROUPS:
        groups.append((title, len(header), len(order) + 1))
        header += [(short + " " if md else "") + SHORT.get(k["id"], k["label"]) for k in order]
        header.append("ratio")
    body = []
    for r in rows:
        line = [r["label"]]
        for _, key, fmt, rk, _ in GROUPS:
            for k in order:
                c = r["kinds"][k["id"]]
                if c["problem"] and key != "rss_mib":
                    line.append("failed")
                elif key == "rps" and c["errors"]:
                    line.append(fmt(c[key]) + (" (E)" if md else " E"))
                else:
                    line.append(fmt(c[key]))
            line.append(fmt_ratio(r[rk], md, judged(r, rk)))
        body.append(line)
    # whole run: each member's peak RSS
    peaks = {k["id"]: member_peaks_mib(k, workloads, runs) for k in kinds}
    line = ["members' peak RSS, whole run: m1/m2/m3"] + [""] * (2 * (len(order) + 1))
    for k in order:
        p = peaks[k["id"]]
        line.append("/".join(fmt_mib(p.get(m)) for m in sorted(p)) if p else "—")
    bmax = max(peaks[base].values()) if peaks[base] else None
    smax = max(peaks[subj].values()) if peaks[subj] else None
    line.append(fmt_ratio(ratio(bmax, smax), md))
    body.append(line)
    return groups, header, body


def fmt_change(tls, plain):
    """TLS against plain, as a signed percentage (—: a figure is missing)."""
    r = ratio(tls, plain)
    return "—" if r is None else f"{(r - 1) * 100:+.0f}%"


def cost_cells(rows, servers, md):
    """(groups, header, body) of the cost of a feature (TLS, encryption): for
    each server (kind id without it, kind id with it, name without, name
    with), req/s and p99 without and with it and the change (in parentheses:
    the throughput of a fixed-rate workload)."""
    header, groups = ["workload"], []
    for title, key, _, rk, short in GROUPS[:2]:
        groups.append((title, len(header), 3 * len(servers)))
        for _, _, name, name_with in servers:
            prefix = short + " " if md else ""
            header += [prefix + name, prefix + name_with, "change"]
    body = []
    for r in rows:
        line = [r["label"]]
        for _, key, fmt, rk, _ in GROUPS[:2]:
            for plain, tls, _, _ in servers:
                a, b = r["kinds"][plain], r["kinds"][tls]
                change = fmt_change(b[key], a[key]) if not (a["problem"] or b["problem"]) else "—"
                if change != "—" and not judged(r, rk):
                    change = f"({change})"
                line += [fmt(a[key]) if not a["problem"] else "failed",
                         fmt(b[key]) if not b["problem"] else "failed", change]
        body.append(line)
    return groups, header, body


def text_table(groups, header, body):
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    # widen a group's columns if its title is longer than they are
    for title, first, n in groups:
        span = sum(widths[first:first + n]) + 2 * (n - 1)
        if len(title) > span:
            widths[first + n - 1] += len(title) - span
    sep = " | "

    def fmt_line(cells):
        out = cells[0].ljust(widths[0])
        for title, first, n in groups:
            out += sep + "  ".join(cells[i].rjust(widths[i]) for i in range(first, first + n))
        return out.rstrip()

    top = " " * widths[0]
    for title, first, n in groups:
        span = sum(widths[first:first + n]) + 2 * (n - 1)
        top += sep + title.center(span)
    rule = "-" * widths[0]
    for title, first, n in groups:
        rule += "-+-" + "-" * (sum(widths[first:first + n]) + 2 * (n - 1))
    return "\n".join([top.rstrip(), fmt_line(header), rule] + [fmt_line(b) for b in body])


def md_table(header, body):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    for b in body:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in b) + " |")
    return "\n".join(out)


def details_md(rows, kinds):
    """Every kind and workload: medians, and each round's req/s and p99."""
    header = ["workload", "server", "requests (all rounds)", "errors", "req/s", "req/s by round",
              "avg ms", "p50 ms", "p99 ms", "p99 ms by round", "p99.9 ms", "cluster CPU s",
              "peak RSS MiB", "leader after"]
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join([":---", ":---"] + ["---:"] * 11 + [":---"]) + "|"]
    for r in rows:
        for k in kinds:
            c = r["kinds"][k["id"]]
            tot = "—" if c["total"] is None else f"{c['total']:,}"
            err = "—" if c["errors"] is None else f"{c['errors']:,}"
            cpu = "—" if c["cpu_s"] is None else f"{c['cpu_s']:.1f}"
            out.append("| " + " | ".join([
                r["label"], k["label"], tot, err, fmt_rps(c["rps"]),
                " / ".join(fmt_rps(v) for v in c["rps_all"]) or "—",
                fmt_ms(c["avg_ms"]), fmt_ms(c["p50_ms"]), fmt_ms(c["p99_ms"]),
                " / ".join(fmt_ms(v) for v in c["p99_ms_all"]) or "—",
                fmt_ms(c["p999_ms"]), cpu, fmt_mib(c["rss_mib"]), c["leader_after"] or "—"]) + " |")
    return "\n".join(out)


# --------------------------------------------------------------------------
# plot (hand-built SVG: matplotlib is not required)

def nice_num(v):
    if v is None:
        return ""
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.1f}"
    return f"{v:.2f}"


def svg_plot(rows, kinds, title, subtitle):
    panels = [("Throughput (requests/s, log scale; longer is better)", "rps", True),
              ("p99 latency (ms, log scale; shorter is better)", "p99_ms", True),
              ("Peak RSS, largest member (MiB; shorter is better)", "rss_mib", False)]
    nk = len(kinds)
    bar_h, bar_gap, group_gap = 13, 2, 12
    group_h = nk * (bar_h + bar_gap) + group_gap
    label_w = 20 + max([int(6.3 * len(r["label"])) for r in rows] + [200])
    panel_w, panel_gap = 330, 30
    top = 96
    plot_h = len(rows) * group_h
    width = label_w + 3 * panel_w + 2 * panel_gap + 20
    height = top + plot_h + 50
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="11">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="10" y="22" font-size="16" font-weight="bold">{escape(title)}</text>',
         f'<text x="10" y="40" fill="#555">{escape(subtitle)}</text>']
    # legend
    lx = 10
    for k in kinds:
        s.append(f'<rect x="{lx}" y="52" width="14" height="10" fill="{COLORS.get(k["id"], "#888")}"/>')
        s.append(f'<text x="{lx + 18}" y="61">{escape(k["label"])}</text>')
        lx += 30 + 7 * len(k["label"])
    # workload labels
    for i, r in enumerate(rows):
        y = top + i * group_h + (nk * (bar_h + bar_gap)) / 2 + 4
        s.append(f'<text x="{label_w - 8}" y="{y:.1f}" text-anchor="end">{escape(r["label"])}</text>')
        if i:
            yl = top + i * group_h - group_gap / 2
            s.append(f'<line x1="10" x2="{width - 10}" y1="{yl}" y2="{yl}" stroke="#eee"/>')
    for p, (ptitle, key, log) in enumerate(panels):
        x0 = label_w + p * (panel_w + panel_gap)
        inner = panel_w - 60  # room for the value labels
        vals = [r["kinds"][k["id"]][key] for r in rows for k in kinds] + [
            v for r in rows for k in kinds for v in r["kinds"][k["id"]][key + "_all"]]
        vals = [v for v in vals if v is not None and v > 0]
        s.append(f'<text x="{x0}" y="{top - 14}" font-weight="bold">{escape(ptitle)}</text>')
        if not vals:
            continue
        if log:
            lo = 10 ** math.floor(math.log10(min(vals)))
            hi = max(max(vals) * 1.05, lo * 10)
            pos = lambda v: inner * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
            ticks = [10 ** e for e in range(int(round(math.log10(lo))), int(math.floor(math.log10(hi))) + 1)]
        else:
            lo = 0.0
            step = 10 ** math.floor(math.log10(max(vals)))
            if max(vals) / step < 3:
                step /= 2
            hi = step * math.ceil(max(vals) / step)
            pos = lambda v: inner * v / hi
            ticks = [step * i for i in range(int(round(hi / step)) + 1)]
        for t in ticks:
            x = x0 + pos(t)
            s.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 6}" y2="{top + plot_h - group_gap}" stroke="#ddd"/>')
            s.append(f'<text x="{x:.1f}" y="{top + plot_h + 4}" text-anchor="middle" fill="#555">'
                     f'{escape(nice_num(t) if t >= 1 else f"{t:g}")}</text>')
        s.append(f'<line x1="{x0}" x2="{x0}" y1="{top - 6}" y2="{top + plot_h - group_gap}" stroke="#333"/>')
        for i, r in enumerate(rows):
            for j, k in enumerate(kinds):
                v = r["kinds"][k["id"]][key]
                y = top + i * group_h + j * (bar_h + bar_gap)
                if v is None or v <= 0:
                    s.append(f'<text x="{x0 + 4}" y="{y + bar_h - 3}" fill="#b00">n/a</text>')
                    continue
                w = max(1.0, pos(v)) if not log else max(1.0, pos(max(v, lo)))
                c = r["kinds"][k["id"]]
                s.append(f'<rect x="{x0}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                         f'fill="{COLORS.get(k["id"], "#888")}"><title>{escape(k["label"])}: {nice_num(v)}'
                         f'{" (rounds: " + ", ".join(nice_num(a) for a in c[key + "_all"]) + ")" if len(c[key + "_all"]) > 1 else ""}'
                         f'</title></rect>')
                spread = [a for a in c[key + "_all"] if a and a > 0]
                if len(spread) > 1:  # whisker: the rounds' min to max
                    xa = x0 + (pos(max(min(spread), lo)) if log else pos(min(spread)))
                    xb = x0 + (pos(max(spread)) if log else pos(max(spread)))
                    ym = y + bar_h / 2
                    s.append(f'<line x1="{xa:.1f}" x2="{xb:.1f}" y1="{ym}" y2="{ym}" stroke="#222" stroke-width="1"/>'
                             f'<line x1="{xa:.1f}" x2="{xa:.1f}" y1="{y + 3}" y2="{y + bar_h - 3}" stroke="#222"/>'
                             f'<line x1="{xb:.1f}" x2="{xb:.1f}" y1="{y + 3}" y2="{y + bar_h - 3}" stroke="#222"/>')
                    w = max(w, xb - x0)
                mark = " (errors)" if key == "rps" and c.get("errors") else ""
                s.append(f'<text x="{x0 + w + 4:.1f}" y="{y + bar_h - 3}" fill="{"#b00" if mark else "#222"}">'
                         f'{escape(nice_num(v) + mark)}</text>')
    s.append(f'<text x="10" y="{height - 10}" fill="#777">Generated by benches/compare.sh '
             f'(benches/compare.py) from cairn-bench --json output.</text>')
    s.append("</svg>")
    return "\n".join(s) + "\n"


# --------------------------------------------------------------------------
# commands

def cmd_check(d):
    machine, workloads, kinds, runs = load(d)
    problems = []
    if not workloads:
        problems.append("no workloads.tsv")
    want = {"etcd-3.5", "cairn"}
    if machine.get("tls") == "yes":
        want |= {"etcd-3.5" + TLS_SUFFIX, "cairn" + TLS_SUFFIX}
    have = {k["id"] for k in kinds}
    for missing in sorted(want - have):
        problems.append(f"{missing}: cluster never ran")
    for k in kinds:
        n_rounds = max(1, k["rounds"])
        for w in workloads:
            rounds = runs[(k["id"], w["name"])]
            if not rounds:
                problems.append(f"{k['id']} {w['name']}: never ran")
            for i, run in enumerate(rounds):
                probs = []
                if run["problem"]:
                    probs.append(run["problem"])
                for obj in run["objs"]:
                    probs += [f"report {obj.get('workload')!r}: {p}" for p in validate(obj)]
                if run["obj"] is not None and w["workload"] and run["obj"].get("workload") != w["workload"]:
                    probs.append(f"no report named {w['workload']!r}")
                where = f" (round {i + 1})" if n_rounds > 1 else ""
                for p in probs:
                    problems.append(f"{k['id']} {w['name']}{where}: {p}")
    n = sum(len(runs[(k["id"], w["name"])]) for k in kinds for w in workloads)
    if problems:
        for p in problems:
            print("check: " + p, file=sys.stderr)
        print(f"check: {len(problems)} problem(s) in {n} runs", file=sys.stderr)
        return 1
    print(f"check: {n} runs OK ({len(kinds)} clusters x {len(workloads)} workloads"
          f"{' x ' + str(kinds[0]['rounds']) + ' rounds' if kinds and kinds[0]['rounds'] > 1 else ''})",
          file=sys.stderr)
    return 0


def tls_tables(workloads, kinds, runs):
    """The text and markdown lines of the TLS tables (none without TLS kinds):
    Cairn TLS against etcd TLS, and each server's TLS against its plain self."""
    plain, tls = split_tls(kinds)
    if not tls:
        return [], []
    rows, base, subj = build_rows(workloads, tls, runs)
    groups, header, body = table_cells(rows, tls, base, subj, workloads, runs, md=False)
    _, header_md, body_md = table_cells(rows, tls, base, subj, workloads, runs, md=True)
    all_rows, _, _ = build_rows(workloads, kinds, runs)
    plain_ids = {k["id"] for k in plain}
    servers = [(k["id"][:-len(TLS_SUFFIX)], k["id"], SHORT.get(k["id"][:-len(TLS_SUFFIX)], k["id"]),
                SHORT.get(k["id"][:-len(TLS_SUFFIX)], k["id"]) + " TLS")
               for k in tls if k["id"][:-len(TLS_SUFFIX)] in plain_ids]
    cgroups, cheader, cbody = cost_cells(all_rows, servers, md=False)
    _, cheader_md, cbody_md = cost_cells(all_rows, servers, md=True)
    behind = [f"{r['label']} ({', '.join(behind_in(r))})" for r in rows if behind_in(r)]
    txt = ["", "With client and peer TLS (https://, client certificates required by the members):",
           "", text_table(groups, header, body),
           "", "The cost of TLS: each server with client and peer TLS against itself without:",
           "", text_table(cgroups, cheader, cbody)]
    md = ["", "With client and peer TLS (`https://`, client certificates required by the members "
          "from clients and peers, the same `cairn-certs` certificates for both servers):",
          "", md_table(header_md, body_md), "",
          "Where Cairn TLS is behind etcd TLS: " + ("; ".join(behind) if behind else "nowhere") + ".",
          "", "The cost of TLS, each server against itself without TLS (a negative change of req/s "
          "and a positive change of p99 are its cost):", "", md_table(cheader_md, cbody_md)]
    return txt, md


def encryption_tables(workloads, kinds, runs):
    """The text and markdown lines of the cost of encryption at rest (none
    without the plaintext build): Cairn as it ships against its plaintext
    build, on every workload."""
    ids = {k["id"] for k in kinds}
    if PLAINTEXT not in ids or "cairn" not in ids:
        return [], []
    rows, _, _ = build_rows(workloads, kinds, runs)
    servers = [(PLAINTEXT, "cairn", "plaintext", "sealed")]
    groups, header, body = cost_cells(rows, servers, md=False)
    _, header_md, body_md = cost_cells(rows, servers, md=True)
    txt = ["", "The cost of encryption at rest: Cairn as it ships (every record sealed) against its",
           "benchmark-only plaintext build (--features bench-plaintext), same commit:",
           "", text_table(groups, header, body)]
    md = ["", "The cost of encryption at rest: Cairn as it ships (every record sealed with AES-256-GCM) "
          "against its benchmark-only plaintext build (`--features bench-plaintext`, same commit; a "
          "negative change of req/s and a positive change of p99 are the cost of sealing):",
          "", md_table(header_md, body_md)]
    return txt, md


SCALE_FIGURES = (
    # (key, label, format, better: "high" / "low", or "split": a diagnosis of
    # the figure above it, whose ratio is shown in parentheses and not judged)
    ("load_rate", "load: puts/s ({keys} keys, then {over} random overwrites; 1,000 clients)", "{:,.0f}", "high"),
    ("restart_s_1", "restart after kill -9 right after the load, to a linearizable read (s)", "{:.2f}", "low"),
    ("restart_s_2", "restart after kill -9 at rest (s)", "{:.2f}", "low"),
    ("rss_loaded_mib", "RSS after the load (MiB)", "{:,.0f}", "low"),
    ("rss_restarted_mib", "RSS once restarted (MiB)", "{:,.0f}", "low"),
    ("data_mib", "data directory at rest (MiB)", "{:,.0f}", "low"),
    ("put_rps_small", "put, random keys, with {small} keys in the store (req/s)", "{:,.0f}", "high"),
    ("put_rps_all", "put, random keys, with {keys} keys (req/s)", "{:,.0f}", "high"),
    ("put_flat", "put: rate with {keys} keys / rate with {small}", "{:.2f}", "high"),
    ("range_rps_small", "linearizable range, random key, {small} keys (req/s)", "{:,.0f}", "high"),
    ("range_rps_all", "linearizable range, random key, {keys} keys (req/s)", "{:,.0f}", "high"),
    ("range_flat", "range: rate with {keys} keys / rate with {small}", "{:.2f}", "high"),
    ("range_rps_all_first", "linearizable range among the first {small} keys, {keys} keys in (req/s)",
     "{:,.0f}", "high"),
    ("range_loaded_flat", "range with {keys} keys in: among all / among the first {small}", "{:.2f}", "split"),
)


def scale_rounds(d):
    """benches/restart.sh's figures in d/scale, one {server: {figure: value}}
    per round (d/scale/rN/scale.tsv; a results directory of one round written
    before rounds existed has d/scale/scale.tsv), with each round's derived
    figures (load rate, flatness) computed within the round."""
    base = os.path.join(d, "scale")
    paths = [os.path.join(base, "scale.tsv")]
    if os.path.isdir(base):
        rdirs = [n for n in os.listdir(base) if n[:1] == "r" and n[1:].isdigit()]
        paths += [os.path.join(base, n, "scale.tsv") for n in sorted(rdirs, key=lambda n: int(n[1:]))]
    rounds = []
    for path in paths:
        figs = {}
        for r in read_tsv(path):
            if len(r) >= 3:
                try:
                    figs.setdefault(r[0], {})[r[1]] = float(r[2])
                except ValueError:
                    figs.setdefault(r[0], {})[r[1]] = None
        for f in figs.values():
            if f.get("load_s") and f.get("load_puts"):
                f["load_rate"] = f["load_puts"] / f["load_s"]
            for what in ("put", "range"):
                a, b = f.get(f"{what}_rps_all"), f.get(f"{what}_rps_small")
                f[f"{what}_flat"] = a / b if a and b else None
            a, b = f.get("range_rps_all"), f.get("range_rps_all_first")
            f["range_loaded_flat"] = a / b if a and b else None
        if figs:
            rounds.append(figs)
    return rounds


def scale_tables(d):
    """The text and markdown lines of benches/restart.sh's figures in d/scale
    (none without them): etcd 3.5.1 and Cairn, single members, each figure
    the median of the rounds (and each round's, with more than one), with
    the ratio of the medians (>= 1.00: Cairn at least as good)."""
    rounds = scale_rounds(d)
    if not rounds:
        return [], []
    any_f = next(iter(rounds[0].values()))
    keys = int(any_f.get("keys") or 0)
    names = {"keys": f"{keys:,}", "over": f"{keys // 10:,}", "small": f"{int(any_f.get('small_keys') or 0):,}"}
    several = len(rounds) > 1
    header = ["figure", "etcd 3.5.1", "Cairn", "ratio"]
    if several:
        header += ["etcd 3.5.1 by round", "Cairn by round"]
    body, behind = [], []
    for key, label, fmt, better in SCALE_FIGURES:
        by_round = {kind: [r.get(kind, {}).get(key) for r in rounds] for kind in ("etcd", "cairn")}
        e, c = median(by_round["etcd"]), median(by_round["cairn"])
        if e is None and c is None:
            continue
        r = (e / c if better == "low" else c / e) if e and c else None
        ratio = "—" if r is None else (f"({r:.2f})" if better == "split" else f"{r:.2f}")
        row = [label.format(**names), fmt.format(e) if e is not None else "—",
               fmt.format(c) if c is not None else "—", ratio]
        if r is not None and better != "split" and r < 1.0:
            behind.append(row[0])
        if several:
            row += [" / ".join("—" if v is None else fmt.format(v) for v in by_round[kind])
                    for kind in ("etcd", "cairn")]
        body.append(row)
    how = (f"{len(rounds)} rounds, the order alternating, every figure the median of the rounds"
           if several else "one round")
    intro = (f"At scale: a single member of each server, loaded with {names['keys']} keys (256-byte "
             f"values) by benches/restart.sh (see its header; {how}); ratio >= 1.00: Cairn at least as "
             f"good; a ratio in parentheses is of a figure that only splits the one above it, not judged")
    groups = [("etcd 3.5.1 vs Cairn", 1, 3)] + ([("by round", 4, 2)] if several else [])
    txt = ["", intro + ":", "", text_table(groups, header, body)]
    md = ["", intro + ":", "", md_table(header, body), "",
          "Where Cairn is behind at scale: " + ("; ".join(behind) if behind else "nowhere") + "."]
    return txt, md


def cmd_report(d, publish_md=None, publish_svg=None):
    machine, workloads, kinds, runs = load(d)
    if not kinds:
        print(f"report: no runs in {d}", file=sys.stderr)
        return 1
    rows, base, subj = build_rows(workloads, kinds, runs)
    plain, _ = split_tls(kinds)
    plain_rows, _, _ = build_rows(workloads, plain, runs)
    groups, header, body = table_cells(plain_rows, plain, base, subj, workloads, runs, md=False)
    _, header_md, body_md = table_cells(plain_rows, plain, base, subj, workloads, runs, md=True)
    mode = machine.get("mode", "?")
    machine_line = (f"{machine.get('cpus', '?')} × {machine.get('cpu', '?')}, {machine.get('memory', '?')} RAM, "
                    f"{machine.get('kernel', '?')}; disk {machine.get('disk', '?')}")
    versions = ", ".join(k["version"] or k["label"] for k in plain)
    if split_tls(kinds)[1]:
        versions += "; etcd and Cairn each also with client and peer TLS"
    if any(k["id"] == PLAINTEXT for k in kinds):
        versions += "; Cairn also as its plaintext build"
    n_rounds = max([k["rounds"] for k in kinds] + [1])
    rounds_txt = (f"{n_rounds} rounds (fresh clusters each), every figure the median of the rounds"
                  if n_rounds > 1 else "1 round")
    errors = []
    for r in rows:
        for k in kinds:
            c = r["kinds"][k["id"]]
            if c["errors"]:
                dist = ", ".join(f"{n:,} × {m!r}" for m, n in sorted(
                    (c["error_distribution"] or {}).items(), key=lambda kv: -kv[1]))
                errors.append(f"{k['label']}, {r['label']}: {c['errors']:,} of {c['total']:,} requests failed ({dist})")
    failed = [f"{k['label']}, {r['label']}: {'; '.join(r['kinds'][k['id']]['round_problems'])}"
              for r in rows for k in kinds if r["kinds"][k["id"]]["round_problems"]]
    skewed = [f"{k['label']}, {r['label']}" for r in rows for k in kinds
              if r["kinds"][k["id"]]["builds_running"].strip()]
    note = ("ratio: Cairn/etcd 3.5.1 for req/s, etcd 3.5.1/Cairn for p99 and RSS: >= 1.00 means Cairn is\n"
            "at least as good; '<' marks a line where Cairn is behind; (ratio): throughput set by a fixed\n"
            "rate, not judged. RSS: the largest member's peak during the run. E: some requests failed.")
    tls_txt, tls_md = tls_tables(workloads, kinds, runs)
    enc_txt, enc_md = encryption_tables(workloads, kinds, runs)
    scale_txt, scale_md = scale_tables(d)
    if tls_txt:
        note += ("\nWith TLS: the same ratios between Cairn TLS and etcd 3.5.1 TLS. Cost of TLS: each server's\n"
                 "figures with client and peer TLS against its own without (change in %).")
    if errors:
        note += "\nErrors:\n" + "\n".join("  " + e for e in errors)
    if failed:
        note += "\nFailed runs:\n" + "\n".join("  " + e for e in failed)
    if skewed:
        note += "\nA build or another etcd/cairn server ran during these runs, their figures are skewed:\n" + \
            "\n".join("  " + e for e in skewed)
    txt = "\n".join([
        f"cairn-bench comparison ({mode} mode, {rounds_txt}), {machine.get('date', '')}",
        f"machine: {machine_line}",
        f"servers: {versions}",
        "", text_table(groups, header, body), *tls_txt, *enc_txt, *scale_txt, "", note, ""])
    behind = [f"{r['label']} ({', '.join(behind_in(r))})" for r in plain_rows if behind_in(r)]
    md = "\n".join([
        f"Run of {machine.get('date', '')} ({mode} mode, {rounds_txt}) on {machine_line}. "
        f"Servers: {versions}. "
        f"Cairn binary: `{os.path.basename(machine.get('cairn_bin', '?'))}` "
        f"({'release' if '/release/' in machine.get('cairn_bin', '') else 'DEBUG'} build, "
        f"commit {machine.get('cairn_commit', '?')}, built {machine.get('cairn_built', '?')}); cairn-bench: "
        f"{'release' if '/release/' in machine.get('bench_bin', '') else 'DEBUG'} build "
        f"(built {machine.get('bench_built', '?')}).",
        "", md_table(header_md, body_md), "",
        "Ratios: Cairn/etcd 3.5.1 for requests/s, etcd 3.5.1/Cairn for p99 latency and RSS, so "
        "≥ 1.00 means Cairn is at least as good; **bold** marks a line where Cairn is behind; a ratio "
        "in parentheses is the throughput of a fixed-rate workload, not judged. "
        "Peak RSS: the largest member's high-water mark during that run (reset before each run). "
        "(E): some requests of that run failed (see below).",
        "", "Where Cairn is behind in this table: " + ("; ".join(behind) if behind else "nowhere") + ".",
        *tls_md, *enc_md, *scale_md,
        *(["", "Errors: " + "; ".join(errors) + "."] if errors else []),
        *(["", "Failed runs: " + "; ".join(failed) + "."] if failed else []),
        *(["", "A build or another etcd/cairn server ran on the machine during these runs, their figures are skewed: "
            + "; ".join(skewed) + "."] if skewed else []),
        "", "<details><summary>Every workload in detail (medians, and each round)</summary>", "", details_md(rows, kinds), "", "</details>", ""])
    title = "Cairn vs etcd: three members on one machine, cairn-bench"
    subtitle = f"{machine.get('date', '')}, {mode} mode, {rounds_txt}; {machine_line}"
    svg = svg_plot(rows, kinds, title, subtitle)
    with open(os.path.join(d, "table.txt"), "w", encoding="utf-8") as f:
        f.write(txt)
    with open(os.path.join(d, "table.md"), "w", encoding="utf-8") as f:
        f.write(md)
    with open(os.path.join(d, "plot.svg"), "w", encoding="utf-8") as f:
        f.write(svg)
    with open(os.path.join(d, "summary.json"), "w", encoding="utf-8") as f:
        json.dump({"machine": machine, "kinds": [{k2: v for k2, v in k.items() if k2 != "startups"} for k in kinds],
                   "rows": rows}, f, indent=1)
    print(txt)
    if publish_svg:
        shutil.copyfile(os.path.join(d, "plot.svg"), publish_svg)
        print(f"report: plot copied to {publish_svg}", file=sys.stderr)
    if publish_md:
        with open(publish_md, encoding="utf-8") as f:
            page = f.read()
        pat = re.compile(re.escape(TABLE_BEGIN) + r".*?" + re.escape(TABLE_END), re.S)
        if not pat.search(page):
            print(f"report: {publish_md} has no {TABLE_BEGIN} ... {TABLE_END} markers", file=sys.stderr)
            return 1
        page = pat.sub(lambda _: TABLE_BEGIN + "\n" + md + TABLE_END, page)
        with open(publish_md, "w", encoding="utf-8") as f:
            f.write(page)
        print(f"report: table written into {publish_md}", file=sys.stderr)
    return 0


def cmd_brief(path):
    obj, _, prob = load_run(path)
    if obj is None:
        print(prob)
        return 0
    try:
        print(f"{obj['total']:,} requests, {obj['errors']} errors, {obj['rps']:,.0f} req/s, "
              f"avg {fmt_ms(obj['average_ms'])} ms, p99 {fmt_ms(obj['percentiles_ms']['99'])} ms"
              + (f" ({prob})" if prob else ""))
    except (KeyError, TypeError) as e:
        print(f"unexpected JSON ({e!r})")
    return 0


def cmd_leader(clients, ids):
    def host_port(url):
        return re.sub(r"^https?://", "", url)
    given = clients.split(",")
    eps = [host_port(ep) for ep in given]
    try:
        status = json.load(sys.stdin)
    except json.JSONDecodeError:
        return 1
    leader_id = None
    by_ep = {}
    for st in status:
        ep = host_port(st.get("Endpoint", ""))
        s = st.get("Status", {})
        by_ep[ep] = s.get("header", {}).get("member_id")
        if s.get("leader"):
            leader_id = s["leader"]
    name, leader_ep = "none", "-"
    for i, ep in enumerate(eps):
        if leader_id is not None and by_ep.get(ep) == leader_id:
            name, leader_ep = f"m{i + 1}", given[i]
    m1 = by_ep.get(eps[0])
    if ids:
        print(name, format(m1, "x") if m1 is not None else "-", leader_ep)
    else:
        print(name)
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "check" and len(args) == 1:
        return cmd_check(args[0])
    if cmd == "report" and args:
        d, pm, ps = args[0], None, None
        rest = args[1:]
        while rest:
            if rest[0] == "--publish-md" and len(rest) > 1:
                pm, rest = rest[1], rest[2:]
            elif rest[0] == "--publish-svg" and len(rest) > 1:
                ps, rest = rest[1], rest[2:]
            else:
                print(f"report: unknown argument {rest[0]}", file=sys.stderr)
                return 2
        return cmd_report(d, pm, ps)
    if cmd == "brief" and len(args) == 1:
        return cmd_brief(args[0])
    if cmd == "leader" and len(args) in (1, 2):
        return cmd_leader(args[0], len(args) == 2 and args[1] == "--ids")
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
