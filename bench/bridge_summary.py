#!/usr/bin/env python3
"""Markdown table for BENCHMARKS.md from one bench/bridge-vs-mqttwarn.sh results dir.

    python3 bench/bridge_summary.py bench/results-bridge/<stamp>

Reads the harness's JSON files (control-mosquitto_sub-*.json, mqttwarn-*.json,
lookout-bridge-*.json) and latency.json; prints medians over the repetitions and the
ratios against the targets of the issue.
"""

import json
import statistics
import sys
from pathlib import Path

MiB = 1024


def load(d: Path, prefix: str):
    fs = sorted(d.glob(f"{prefix}-2*.json"))
    return json.loads(fs[-1].read_text()) if fs else None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=0):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}"


def main():
    d = Path(sys.argv[1])
    tp = {"control": load(d, "control-mosquitto_sub"), "mqttwarn": load(d, "mqttwarn"),
          "lookout-bridge": load(d, "lookout-bridge")}
    lat_path = d / "latency.json"
    lat = json.loads(lat_path.read_text()) if lat_path.exists() else None
    names = ["control", "mqttwarn", "lookout-bridge"]
    label = {"control": "control: mosquitto_sub 2.0.11", "mqttwarn": "mqttwarn 0.36.1 (WARNING, 1 worker)",
             "lookout-bridge": "lookout-bridge (file target)"}
    commit = (d / "commit.txt").read_text().split()[-1] if (d / "commit.txt").exists() else "?"
    out = []
    row = {}
    qos_levels = []
    for q in ("qos1", "qos0"):
        if any(tp[n] and q in tp[n]["summary"] for n in names):
            qos_levels.append(q)
    for n in names:
        doc = tp[n]
        row[n] = {}
        for q in qos_levels:
            if not doc or q not in doc["summary"]:
                continue
            rs = [r for r in doc["runs"] if f"qos{r['qos']}" == q]
            row[n][q] = {
                "mps": med(r["msgs_per_s"] for r in rs),
                "runs": [r["msgs_per_s"] for r in rs],
                "cpu_s": med(r["sub_cpu_s"] for r in rs),
                "cpu_pct": med(r["sub_cpu_pct"] for r in rs),
                "mpcs": med(r["msgs_per_cpu_s"] for r in rs),
                "rss_peak": max(max(r["sub_rss_peak_sampled_kb"] or 0, r["sub_vmhwm_kb"] or 0)
                                for r in rs),
                "ok": all(r["completed"] and r["integrity"]["missing"] == 0
                          and r["integrity"]["duplicates"] == 0 and r["late_extra_lines"] == 0
                          for r in rs),
                "pub": med(r["publish_done_s"] for r in rs),
                "wall": med(r["wall_s"] for r in rs),
            }
    lrow = {}
    if lat:
        for n in names:
            rs = [r for r in lat["runs"] if r["name"] == n]
            if not rs:
                continue
            lrow[n] = {
                "p50": med(r["p50_ms"] for r in rs), "p99": med(r["p99_ms"] for r in rs),
                "p99_runs": [r["p99_ms"] for r in rs], "max": med(r["max_ms"] for r in rs),
                "cpu_s": med(r["sub_cpu_s"] for r in rs),
                "mpcs": med(r["msgs_per_cpu_s"] for r in rs),
                "hwm": max(r["sub_vmhwm_kb"] or 0 for r in rs),
                "ok": all(r["missing"] == 0 and r["duplicates"] == 0 for r in rs),
                "rate": med(r["publisher"].get("rate") for r in rs),
                "n": rs[0]["n"], "reps": len(rs),
            }

    for q in qos_levels:
        reps = len(next(iter(row[n][q]["runs"] for n in names if q in row[n])))
        out.append(f"Throughput, N = 20,000 flooded, publish and subscribe {q.upper()} "
                   f"(bridge: subscription QoS 1 always), median of {reps}:\n")
        out.append("| subscriber | msgs/s (runs) | CPU-s per run | msgs per CPU-s | RSS max | exactly once |")
        out.append("|---|---:|---:|---:|---:|---|")
        for n in names:
            r = row[n].get(q)
            if not r:
                continue
            out.append(f"| {label[n]} | **{fmt(r['mps'])}** ({', '.join(fmt(x) for x in r['runs'])}) "
                       f"| {fmt(r['cpu_s'], 2)} ({fmt(r['cpu_pct'])} % of a core) | {fmt(r['mpcs'])} "
                       f"| {fmt(r['rss_peak'] / MiB, 1)} MiB | {'yes' if r['ok'] else '**NO**'} |")
        out.append("")
    if lrow:
        any_r = next(iter(lrow.values()))
        out.append(f"Latency, publish → line in the file, paced 1,000 msgs/s for 20 s "
                   f"({any_r['n']:,} msgs, QoS 1), median of {any_r['reps']}:\n")
        out.append("| subscriber | p50 | p99 (runs) | max | CPU-s per run | msgs per CPU-s | RSS max (VmHWM) | exactly once |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---|")
        for n in names:
            r = lrow.get(n)
            if not r:
                continue
            out.append(f"| {label[n]} | {fmt(r['p50'], 2)} ms | **{fmt(r['p99'], 2)} ms** "
                       f"({', '.join(fmt(x, 2) for x in r['p99_runs'])}) | {fmt(r['max'], 1)} ms "
                       f"| {fmt(r['cpu_s'], 2)} | {fmt(r['mpcs'])} | {fmt(r['hwm'] / MiB, 1)} MiB "
                       f"| {'yes' if r['ok'] else '**NO**'} |")
        out.append("")

    # targets
    out.append(f"Targets (commit `{commit}`), lookout-bridge against the peers of the same run:\n")
    out.append("| target | measured | met? |")
    out.append("|---|---|---|")
    b, m, c = row.get("lookout-bridge", {}), row.get("mqttwarn", {}), row.get("control", {})
    for q in qos_levels:
        if q in b and q in m and b[q]["mpcs"] and m[q]["mpcs"]:
            ratio = b[q]["mpcs"] / m[q]["mpcs"]
            out.append(f"| ≥ 20× mqttwarn's msgs per CPU-s ({q.upper()}) | {fmt(b[q]['mpcs'])} vs "
                       f"{fmt(m[q]['mpcs'])} = **{ratio:.1f}×** | {'met' if ratio >= 20 else '**not met**'} |")
    for q in qos_levels:
        if q in b and q in c:
            ratio = b[q]["mps"] / c[q]["mps"]
            out.append(f"| throughput ≥ 90 % of control ({q.upper()}) | {fmt(b[q]['mps'])} vs "
                       f"{fmt(c[q]['mps'])} msgs/s = **{100 * ratio:.0f} %** | "
                       f"{'met' if ratio >= 0.9 else '**not met**'} |")
    if "lookout-bridge" in lrow:
        p99 = lrow["lookout-bridge"]["p99"]
        out.append(f"| p99 ≤ 5 ms at 1,000 msgs/s | **{p99:.2f} ms** (runs "
                   f"{', '.join(fmt(x, 2) for x in lrow['lookout-bridge']['p99_runs'])}) | "
                   f"{'met' if p99 <= 5 else '**not met**'} |")
    rss = [b[q]["rss_peak"] for q in b] + ([lrow["lookout-bridge"]["hwm"]] if "lookout-bridge" in lrow else [])
    if rss:
        mx = max(rss) / MiB
        out.append(f"| RSS ≤ 16 MiB | max over all bridge runs **{mx:.1f} MiB** | "
                   f"{'met' if mx <= 16 else '**not met**'} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
