#!/usr/bin/env python3
"""Writes docs/BENCHMARKS.md and its SVG plots from one scripts/bench.sh run.

Input: results.tsv (target, workload, run, value, unit), meta.json (machine and versions), and a
directory of grantfs-bench JSON outputs (N.json + N.cmd). Only the standard library: the SVGs are
written by hand.
"""

import argparse
import html
import json
import math
import os
import statistics
from collections import defaultdict

TARGETS = {
    "native": "native ext4",
    "bindfs": "bindfs",
    "ptll": "passthrough_ll",
    "grantfs": "grantfs",
    "excl": "grantfs --exclusive",
    "nogate": "grantfs, gate compiled out",
}
COLORS = {
    "native": "#7f7f7f",
    "bindfs": "#d62728",
    "ptll": "#ff7f0e",
    "grantfs": "#1f77b4",
    "excl": "#2ca02c",
    "nogate": "#9ecae1",
}
# workload -> (label, higher_is_better)
WORKLOADS = {
    "create": ("create empty file", True),
    "stat_warm": ("stat, warm (same files again)", True),
    "stat_aged": ("stat, files last seen 2 s ago", True),
    "stat_cold": ("stat, first look (created behind the mount)", True),
    "unlink": ("unlink", True),
    "small_write": ("small-file write (create+4 KiB+close)", True),
    "small_read": ("small-file read (open+4 KiB+close)", True),
    "seq_write": ("sequential write, buffered", True),
    "seq_write_fsync": ("sequential write + fsync", True),
    "seq_read": ("sequential read (warm)", True),
    "rand_read_4k": ("4 KiB random read (warm)", True),
    "git_clone": ("git clone (local bare repo)", False),
    "git_status": ("git status", False),
    "git_add": ("git add -A after touching files", False),
    "tar_x": ("tar extraction", False),
}


def load(path):
    data = defaultdict(list)  # (target, workload) -> [values]
    units = {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 5:
                continue
            t, w, _run, v, unit = parts
            try:
                data[(t, w)].append(float(v))
            except ValueError:
                continue
            units[w] = unit
    return data, units


def med(data, t, w):
    v = data.get((t, w))
    return statistics.median(v) if v else None


def speed(data, t, w, ref):
    """Speed of t relative to ref (>1: t is faster), whatever the unit."""
    a, b = med(data, t, w), med(data, ref, w)
    if a is None or b is None or a <= 0 or b <= 0:
        return None
    return a / b if WORKLOADS.get(w, ("", True))[1] else b / a


def fmt(v, unit=""):
    if v is None:
        return "–"
    if unit == "s":
        return f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s"
    if v >= 100000:
        return f"{v / 1000:.0f} k"
    if v >= 10000:
        return f"{v / 1000:.1f} k"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.2f}"


def fx(r):
    return "–" if r is None else f"{r:.2f}×"


# ---- SVG -----------------------------------------------------------------------------------------


def svg_relative(data, targets, workloads, path):
    """Horizontal grouped bars: speed relative to native, log scale 0.01..10."""
    others = [t for t in targets if t != "native"]
    row_h, bar_h, left, width = 14 * len(others) + 12, 12, 300, 460
    height = 60 + row_h * len(workloads) + 40
    lo, hi = math.log10(0.01), math.log10(10)

    def x(v):
        v = min(max(v, 0.01), 10)
        return left + (math.log10(v) - lo) / (hi - lo) * width

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 30}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">Speed relative to native '
        "(median; log scale; right of 1× is faster than native)</text>",
    ]
    for tick in (0.01, 0.03, 0.1, 0.3, 1, 3, 10):
        out.append(
            f'<line x1="{x(tick):.1f}" y1="40" x2="{x(tick):.1f}" y2="{height - 35}" '
            f'stroke="{"#000" if tick == 1 else "#ddd"}"/>'
        )
        out.append(
            f'<text x="{x(tick):.1f}" y="{height - 22}" text-anchor="middle">{tick:g}×</text>'
        )
    y = 48
    for w in workloads:
        out.append(
            f'<text x="{left - 8}" y="{y + row_h / 2}" text-anchor="end">'
            f"{html.escape(WORKLOADS.get(w, (w, True))[0])}</text>"
        )
        for i, t in enumerate(others):
            r = speed(data, t, w, "native")
            by = y + i * 14
            if r is None:
                continue
            out.append(
                f'<rect x="{left}" y="{by}" width="{max(x(r) - left, 1):.1f}" height="{bar_h}" '
                f'fill="{COLORS.get(t, "#333")}"><title>{TARGETS.get(t, t)}: {r:.3f}×</title></rect>'
            )
            out.append(f'<text x="{x(r) + 3:.1f}" y="{by + 10}" font-size="9">{r:.2f}</text>')
        y += row_h
    lx = 10
    for t in others:
        out.append(f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{COLORS[t]}"/>')
        out.append(f'<text x="{lx + 14}" y="{height - 5}">{html.escape(TARGETS[t])}</text>')
        lx += 30 + 7 * len(TARGETS[t])
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


def svg_absolute(data, units, targets, workloads, path):
    """Small multiples: one bar chart per workload, absolute medians with min..max whiskers."""
    cols, cw, ch = 3, 300, 170
    rows = math.ceil(len(workloads) / cols)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{cols * cw + 20}" '
        f'height="{rows * ch + 60}" font-family="sans-serif" font-size="10">',
        '<rect width="100%" height="100%" fill="white"/>',
        '<text x="10" y="20" font-size="14" font-weight="bold">Throughput by workload '
        "(median of runs, whiskers min..max; time workloads shown as runs per second)</text>",
    ]
    for k, w in enumerate(workloads):
        ox, oy = 10 + (k % cols) * cw, 40 + (k // cols) * ch
        unit = units.get(w, "")
        higher = WORKLOADS.get(w, (w, True))[1]
        conv = (lambda v: v) if higher else (lambda v: 1.0 / v if v > 0 else 0.0)
        shown_unit = unit if higher else "1/s"
        vals = {t: [conv(v) for v in data.get((t, w), [])] for t in targets}
        top = max([max(v) for v in vals.values() if v] or [1.0]) * 1.1
        out.append(
            f'<text x="{ox}" y="{oy + 10}" font-weight="bold">'
            f"{html.escape(WORKLOADS.get(w, (w, True))[0])} [{shown_unit}]</text>"
        )
        base, hgt, bw = oy + ch - 30, ch - 55, (cw - 40) / max(len(targets), 1)
        out.append(f'<line x1="{ox}" y1="{base}" x2="{ox + cw - 30}" y2="{base}" stroke="#000"/>')
        for i, t in enumerate(targets):
            v = vals[t]
            if not v:
                continue
            m = statistics.median(v)
            bx = ox + 5 + i * bw
            bh = m / top * hgt
            out.append(
                f'<rect x="{bx:.1f}" y="{base - bh:.1f}" width="{bw * 0.8:.1f}" height="{bh:.1f}" '
                f'fill="{COLORS.get(t, "#333")}"><title>{TARGETS.get(t, t)}: {m:.4g}</title></rect>'
            )
            cx = bx + bw * 0.4
            y1, y2 = base - min(v) / top * hgt, base - max(v) / top * hgt
            out.append(f'<line x1="{cx:.1f}" y1="{y1:.1f}" x2="{cx:.1f}" y2="{y2:.1f}" stroke="#000"/>')
            out.append(
                f'<text x="{cx:.1f}" y="{base - bh - 3:.1f}" text-anchor="middle" font-size="8">'
                f"{fmt(m)}</text>"
            )
            out.append(
                f'<text x="{cx:.1f}" y="{base + 10}" text-anchor="middle" font-size="8">{t}</text>'
            )
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


def find_samples(obj, path=""):
    """(json path, [numbers]) for every list of >= 10 numbers under a key naming samples."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            found += find_samples(v, f"{path}.{k}" if path else k)
    elif isinstance(obj, list):
        if len(obj) >= 10 and all(isinstance(v, (int, float)) for v in obj):
            if any(s in path.lower() for s in ("sample", "latenc", "_ms", "_us")):
                found.append((path, [float(v) for v in obj]))
        else:
            for i, v in enumerate(obj):
                found += find_samples(v, f"{path}[{i}]")
    return found


def svg_cdf(series, path, title):
    left, width, height = 60, 520, 300
    allv = [v for _, s in series for v in s]
    hi = max(allv) * 1.05 if allv else 1
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 220}" height="{height + 60}" '
        'font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>',
        f'<line x1="{left}" y1="{height}" x2="{left + width}" y2="{height}" stroke="#000"/>',
        f'<line x1="{left}" y1="30" x2="{left}" y2="{height}" stroke="#000"/>',
    ]
    for q in (0, 0.5, 0.9, 0.99, 1):
        y = height - q * (height - 30)
        out.append(f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">p{q * 100:g}</text>')
    for i in range(6):
        v = hi * i / 5
        out.append(
            f'<text x="{left + width * i / 5:.1f}" y="{height + 15}" text-anchor="middle">{v:.3g}</text>'
        )
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    for k, (name, s) in enumerate(series):
        s = sorted(s)
        pts = " ".join(
            f"{left + v / hi * width:.1f},{height - (i + 1) / len(s) * (height - 30):.1f}"
            for i, v in enumerate(s)
        )
        c = palette[k % len(palette)]
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{pts}"/>')
        out.append(f'<text x="{left + width + 10}" y="{40 + 16 * k}" fill="{c}">{html.escape(name)}</text>')
    out.append(f'<text x="{left + width / 2}" y="{height + 32}" text-anchor="middle">value (unit as named in the JSON key)</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


# ---- markdown ------------------------------------------------------------------------------------


def targets_section(data, who="grantfs"):
    """The issue's targets, each with its measured ratio and verdict."""
    rows = []

    def check(what, r, op, goal):
        if r is None:
            rows.append((what, "–", f"{op} {goal}", "not measured"))
            return
        ok = r >= goal if op == "≥" else r <= goal
        miss = "" if ok else f" (by {abs(r / goal - 1) * 100:.0f} %)"
        rows.append((what, f"{r:.2f}×", f"{op} {goal}×", ("holds" if ok else "MISSED") + miss))

    for w in ("stat_warm", "stat_aged", "stat_cold"):
        check(f"{w} vs bindfs", speed(data, who, w, "bindfs"), "≥", 3)
        check(f"{w} vs passthrough_ll", speed(data, who, w, "ptll"), "≥", 3)
    check("create vs bindfs", speed(data, who, "create", "bindfs"), "≥", 1.2)
    check("create vs passthrough_ll", speed(data, who, "create", "ptll"), "≥", 1.0)
    check("seq_write vs native", speed(data, who, "seq_write", "native"), "≥", 0.5)
    check("seq_write_fsync vs native", speed(data, who, "seq_write_fsync", "native"), "≥", 0.5)
    check("seq_read vs passthrough_ll", speed(data, who, "seq_read", "ptll"), "≥", 2)
    check("seq_read vs native (DESIGN.md)", speed(data, who, "seq_read", "native"), "≥", 0.7)
    st = speed(data, who, "git_status", "native")
    check("git status time vs native", None if st is None else 1 / st, "≤", 3)
    # The gate-off build has the default cache settings: compare it with the default mount only.
    gate = [speed(data, who, w, "nogate") for w in WORKLOADS] if who == "grantfs" else []
    gate = [g for g in gate if g]
    if gate:
        geo = math.exp(sum(math.log(g) for g in gate) / len(gate))
        check("gate on vs off, geometric mean of all workloads", geo, "≥", 0.97)
        worst = min(
            ((speed(data, who, w, "nogate"), w) for w in WORKLOADS if speed(data, who, w, "nogate")),
        )
        check(f"gate on vs off, worst workload ({worst[1]})", worst[0], "≥", 0.97)
    lines = [f"| target | {TARGETS[who]} | goal | verdict |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--control-dir")
    ap.add_argument("--out", required=True)
    ap.add_argument("--plots", required=True)
    a = ap.parse_args()

    data, units = load(a.results)
    meta = json.load(open(a.meta))
    targets = [t for t in meta["targets"].split() if any(k[0] == t for k in data)]
    workloads = [w for w in WORKLOADS if any((t, w) in data for t in targets)]
    os.makedirs(a.plots, exist_ok=True)
    rel_svg = os.path.join(a.plots, "fs-relative.svg")
    abs_svg = os.path.join(a.plots, "fs-throughput.svg")
    svg_relative(data, targets, workloads, rel_svg)
    svg_absolute(data, units, targets, workloads, abs_svg)
    rel = os.path.relpath(a.plots, os.path.dirname(os.path.abspath(a.out)))

    md = ["# Benchmarks", ""]
    md.append(
        "Written by `scripts/bench.sh` (do not edit by hand; rerun it). Every number is the median "
        f"of {meta['runs']} run(s) measured in **one** script run that interleaves the targets "
        "(native, bindfs, passthrough_ll, grantfs, … then again), so machine drift hits all alike; "
        "ratios are taken only between targets of the same run."
        + (" **Quick mode** (`BENCH_QUICK=1`): smaller sizes, one run — indicative only." if meta["quick"] else "")
    )
    md += ["", "## Machine", ""]
    md.append("| | |\n|---|---|")
    for k in ("date", "commit", "os", "kernel", "cpu", "mem", "fs", "bindfs", "fuse3", "fio", "git", "rustc"):
        md.append(f"| {k} | {meta.get(k, '')} |")
    md.append(f"| bench.sh wall time | {meta['seconds']} s (before the report) |")
    md += ["", "## Targets", ""]
    md.append(
        "- **native**: the backing ext4 directory itself.\n"
        "- **bindfs**: Debian's bindfs with default options (single-threaded, as shipped).\n"
        "- **passthrough_ll**: libfuse's example compiled from `/usr/share/doc/libfuse3-dev/examples` "
        "with default options (multi-threaded, `cache=auto`: 1 s attribute/entry timeout, page cache "
        "dropped on open).\n"
        "- **grantfs**: `grantfs-agent mount` with a real control plane and ticket, default options "
        "(1 s attribute/entry timeout, page cache dropped when another writer changes a file: safe for "
        "a workspace mounted by several runtimes at once).\n"
        "- **grantfs --exclusive**: the same with `--exclusive` (the mount is its workspace's only "
        "writer on the host: 60 s caches, page cache kept across its own writes).\n"
        "- **grantfs, gate compiled out**: the same, built with `--features grantfs-agent/bench-no-gate` "
        "(never shipped): what the per-operation session-gate check costs."
    )
    md += ["", "## Workloads", ""]
    md.append(
        f"- create / stat / unlink: {meta['files']} empty files in one directory, by a small C loop "
        f"(`bench/fs/fsops.c`). *stat, warm*: {meta['stat_passes']} passes right after an untimed pass. "
        "*stat, aged*: one pass after 2 s idle (past bindfs's and passthrough_ll's 1 s timeouts). "
        "*stat, first look*: one pass over files created directly in the backing directory, so every "
        "FUSE target must look each one up.\n"
        f"- small files: {meta['files']} × create+write {meta['small_size']} B+close, then "
        "open+read+close of the same files.\n"
        f"- fio (psync, 1 MiB blocks, `invalidate=0`): {meta['big_mb']} MiB sequential write without "
        "and with a final fsync, sequential read of the file just written (page cache warm), "
        f"{meta['rand_secs']} s of 4 KiB random reads over it.\n"
        f"- git: a generated {meta['git_files']}-file tree (directories of 50 files, median ~1.8 KiB): "
        "`git clone --no-hardlinks` from a local bare repository, `git status` after 2 s idle, "
        f"`git add -A` after touching {meta['git_touch']} files.\n"
        f"- tar: `tar -xf` of the same {meta['git_files']}-file tree."
    )
    md += ["", "## Medians", ""]
    md.append("| workload | unit | " + " | ".join(TARGETS.get(t, t) for t in targets) + " |")
    md.append("|---|---|" + "---|" * len(targets))
    for w in workloads:
        u = units.get(w, "")
        md.append(
            f"| {WORKLOADS[w][0]} | {'time' if u == 's' else u} | "
            + " | ".join(fmt(med(data, t, w), u) for t in targets)
            + " |"
        )
    md += ["", "## Ratios", ""]
    md.append(
        "Speed of grantfs relative to each baseline (> 1× = grantfs faster; for time workloads the "
        "inverse time ratio)."
    )
    md.append("")
    refs = [t for t in ("native", "bindfs", "ptll", "nogate") if t in targets]
    for who in ("grantfs", "excl"):
        if who not in targets:
            continue
        md += ["", f"### {TARGETS[who]}", ""]
        md.append("| workload | " + " | ".join(f"vs {TARGETS[r]}" for r in refs) + " |")
        md.append("|---|" + "---|" * len(refs))
        for w in workloads:
            md.append(f"| {WORKLOADS[w][0]} | " + " | ".join(fx(speed(data, who, w, r)) for r in refs) + " |")
    for who in ("grantfs", "excl"):
        if who in targets:
            md += ["", f"## The issue's targets (#4): {TARGETS[who]}", "", targets_section(data, who)]
    analysis = os.path.join(os.path.dirname(os.path.abspath(__file__)), "analysis.md")
    if os.path.exists(analysis):
        md += ["", open(analysis).read().rstrip()]
    md += ["", "## Plots", ""]
    md.append(f"![speed relative to native]({rel}/fs-relative.svg)")
    md.append("")
    md.append(f"![throughput by workload]({rel}/fs-throughput.svg)")

    md += ["", "## Control plane, mount and revocation (grantfs-bench)", ""]
    cp = []
    if a.control_dir and os.path.isdir(a.control_dir):
        for name in sorted(os.listdir(a.control_dir), key=lambda n: (len(n), n)):
            if name.endswith(".json"):
                base = name[:-5]
                cmd_path = os.path.join(a.control_dir, base + ".cmd")
                cmd = open(cmd_path).read().strip() if os.path.exists(cmd_path) else base
                text = open(os.path.join(a.control_dir, name)).read().strip()
                try:
                    cp.append((cmd, json.loads(text)))
                except ValueError:
                    cp.append((cmd, {"error": "not JSON", "output": text[:2000]}))
    if not cp:
        md.append("Not measured in this run (`grantfs-bench` was not built; `cargo build --release -p grantfs-bench`).")
    series = []
    for cmd, obj in cp:
        slim = json.loads(json.dumps(obj))
        for p, s in find_samples(obj):
            series.append((f"{cmd.split()[0]}: {p}", s))
        md.append(f"`grantfs-bench {cmd}`:\n\n```json\n{json.dumps(strip_long(slim), indent=2)}\n```\n")
    if series:
        svg_cdf(series, os.path.join(a.plots, "revocation-latency.svg"), "Latency distributions from grantfs-bench (CDF)")
        md.append(f"![latency distributions]({rel}/revocation-latency.svg)")
    md += ["", "## Reproduce", "", "```sh\nscripts/bench.sh            # full run\nBENCH_QUICK=1 scripts/bench.sh  # quick look\n```", ""]
    with open(a.out, "w") as f:
        f.write("\n".join(md))


def strip_long(obj):
    """Sample arrays are plotted, not printed: keep a count and the first few."""
    if isinstance(obj, dict):
        return {k: strip_long(v) for k, v in obj.items()}
    if isinstance(obj, list):
        if len(obj) > 12 and all(isinstance(v, (int, float)) for v in obj):
            return {"n": len(obj), "first": obj[:5]}
        return [strip_long(v) for v in obj]
    return obj


if __name__ == "__main__":
    main()
