#!/usr/bin/env python3
"""Summary of a bench/profile/run.sh run (standard library only).

    python3 bench/profile/summary.py RESULTS_DIR     # markdown tables for BENCHMARKS.md
    ... | python3 bench/profile/summary.py --criterion ROUND VARIANT   # criterion -> TSV rows
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import statistics
import sys

TIME_RE = re.compile(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]")
UNIT_NS = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}


def criterion_rows(round_: str, variant: str) -> None:
    """Criterion prints a bench's name, then (on the same or the next line) its
    `time: [low median high]`; one TSV row per bench, median in ns."""
    name = None
    for line in sys.stdin:
        if line and not line[0].isspace() and line.strip():
            name = line.split()[0]
        m = TIME_RE.search(line)
        if m and name:
            ns = float(m.group(1)) * UNIT_NS[m.group(2)]
            print(f"{round_}\t{variant}\t{name}\t{ns:.1f}")
            name = None


def kib(n: int) -> str:
    return f"{n / 1024:,.0f}"


def footprint(out: str) -> dict[str, dict]:
    """Peer name -> summary of the harness's JSON (several invocations merged by run)."""
    runs: dict[str, list] = {}
    loaded: dict[str, dict] = {}
    for path in sorted(glob.glob(os.path.join(out, "footprint", "*.json"))):
        doc = json.load(open(path))
        runs.setdefault(doc["peer"], []).extend(r for r in doc["runs"] if "rss_kib_median" in r)
        for r in doc["runs"]:
            if r.get("loaded"):
                loaded.setdefault(doc["peer"], r["loaded"])
    return {
        peer: {
            "rss_mib": statistics.median(r["rss_kib_median"] for r in rs) / 1024,
            "rss_range": (min(r["rss_kib_median"] for r in rs) / 1024,
                          max(r["rss_kib_median"] for r in rs) / 1024),
            "cpu": statistics.median(r["cpu_pct_one_core"] for r in rs),
            "busy": [r.get("host_busy_pct_all_cores") for r in rs],
            "n": len(rs),
            "loaded": loaded.get(peer),
        }
        for peer, rs in runs.items()
    }


def main(out: str) -> None:
    builds = list(csv.DictReader(open(os.path.join(out, "builds.tsv")), delimiter="\t"))
    fp = footprint(out)
    ticks: dict[tuple[str, str], list[float]] = {}
    tick_path = os.path.join(out, "ticks.tsv")
    if os.path.exists(tick_path):
        for row in csv.DictReader(open(tick_path), delimiter="\t"):
            ticks.setdefault((row["variant"], row["bench"]), []).append(float(row["median_ns"]))
    benches = sorted({b for _, b in ticks})

    print("| variant | opt-level | lto | codegen-units | panic | strip | agent KiB | agent without live view KiB "
          "| bridge KiB | agent RSS MiB, median (range) | agent CPU % | "
          + " | ".join(f"{b} (median of rounds)" for b in benches) + " |")
    print("|---|---|---|---|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(benches))
    for b in builds:
        f = fp.get(f"lookout-agent.{b['variant']}")
        rss = f"{f['rss_mib']:.2f} ({f['rss_range'][0]:.2f}-{f['rss_range'][1]:.2f})" if f else "-"
        cpu = f"{f['cpu']:.3f}" if f else "-"
        cells = []
        for bench in benches:
            xs = ticks.get((b["variant"], bench))
            cells.append(fmt_ns(statistics.median(xs)) if xs else "-")
        print(f"| {b['variant']} | {b['opt_level']} | {b['lto']} | {b['codegen_units']} | {b['panic']} "
              f"| {b['strip']} | {kib(int(b['agent_bytes']))} | {kib(int(b['agent_no_live_view_bytes']))} "
              f"| {kib(int(b['bridge_bytes']))} | {rss} | {cpu} | " + " | ".join(cells) + " |")

    c = fp.get("collectd")
    if c:
        print()
        print(f"collectd, same run: RSS {c['rss_mib']:.2f} MiB median "
              f"({c['rss_range'][0]:.2f}-{c['rss_range'][1]:.2f}), CPU {c['cpu']:.3f} %, {c['n']} runs")
        if c["loaded"]:
            files = {**c["loaded"].get("exe", {}), **c["loaded"].get("plugins", {}),
                     **c["loaded"].get("mapped", {})}
            daemon_plugins = sum(s for p, s in files.items()
                                 if p.endswith("/collectd") or p.startswith("/usr/lib/collectd/"))
            extra = {p: s for p, s in files.items()
                     if re.search(r"lib(mosquitto|ssl|crypto)\.so", p)}
            print(f"collectd daemon + loaded plugins: {kib(daemon_plugins)} KiB; "
                  + ", ".join(f"{os.path.basename(p)} {kib(s)} KiB" for p, s in sorted(extra.items()))
                  + f"; together {kib(daemon_plugins + sum(extra.values()))} KiB")
    busy = [x for f in fp.values() for x in f["busy"] if x is not None]
    if busy:
        print(f"\nwhole machine busy during the windows: {min(busy):.1f}-{max(busy):.1f} % of all cores")


def fmt_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--criterion":
        criterion_rows(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 2:
        main(sys.argv[1])
    else:
        sys.exit(__doc__)
