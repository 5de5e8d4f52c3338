#!/usr/bin/env python3
"""Scores one `lookout-agent simulate` run (JSON lines of truths and alarm changes).

    summarize.py RUN.jsonl --normal-until MS [--start MS] [--grace-s 300] [--json OUT]

Days before --normal-until are normal behaviour: every alarm there is false. After it,
anomalies are injected: an anomaly is caught when an alarm of its host and metric reaches
severity >= 2 between its start and its end + grace; the delay is from its start to that
moment. Alarms after --normal-until that meet no anomaly are false too.

Prints one markdown row per phase; --json writes the figures for run.sh to aggregate.
"""
import argparse
import json
import statistics
import sys
from collections import defaultdict

DAY_MS = 86_400_000


def load(path):
    truths, changes = [], []
    with open(path) as f:
        for line in f:
            v = json.loads(line)
            if "truth" in v:
                truths.append(v["truth"])
            elif "alarm" in v:
                changes.append(v["alarm"])
    return truths, changes


def episodes(changes):
    """Alarm episodes by id: start, end, max severity, severity changes, when it first
    reached severity >= 2 and >= 3."""
    eps = {}
    for a in changes:
        e = eps.get(a["id"])
        if e is None:
            e = eps[a["id"]] = {
                "id": a["id"], "host": a["host"], "source": a["source"],
                "start": a["started_at"], "fired": a["ts"], "end": None, "max": 0,
                "changes": -1, "at2": None, "at3": None, "last_sev": None,
                "host_level": a.get("labels", {}).get("scope") == "host",
            }
        sev = a["severity"]
        if a["state"] == "firing":
            if e["last_sev"] is None or sev != e["last_sev"]:
                e["changes"] += 1
            e["last_sev"] = sev
            e["max"] = max(e["max"], sev)
            if sev >= 2 and e["at2"] is None:
                e["at2"] = a["ts"]
            if sev >= 3 and e["at3"] is None:
                e["at3"] = a["ts"]
        else:
            e["end"] = a["ts"]
    return list(eps.values())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--start", type=int, default=1_767_571_200_000)
    p.add_argument("--normal-until", type=int, required=True)
    p.add_argument("--end", type=int, required=True)
    p.add_argument("--hosts", type=int, required=True)
    p.add_argument("--grace-s", type=float, default=300)
    p.add_argument("--json")
    a = p.parse_args()
    truths, changes = load(a.run)
    eps = episodes(changes)
    model_eps = [e for e in eps if not e["host_level"]]
    host_eps = [e for e in eps if e["host_level"]]
    normal_days = (a.normal_until - a.start) / DAY_MS * a.hosts
    normal = [e for e in model_eps if e["start"] < a.normal_until]
    normal_host = [e for e in host_eps if e["start"] < a.normal_until]
    grace = a.grace_s * 1000
    by_host = defaultdict(list)
    for e in model_eps:
        if e["start"] >= a.normal_until:
            by_host[(e["host"], e["source"])].append(e)
    caught, delays, matched = 0, [], set()
    injected = [t for t in truths if t["start"] >= a.normal_until]
    per_kind = defaultdict(lambda: [0, 0])
    for t in injected:
        lo, hi = t["start"], t["end"] + grace
        hits = [e for e in by_host[(t["host"], t["metric"])]
                if e["start"] <= hi and (e["end"] is None or e["end"] >= lo)]
        for e in hits:
            matched.add(e["id"])
        at2 = [max(e["at2"], lo) for e in hits if e["at2"] is not None and e["at2"] <= hi]
        per_kind[t["kind"]][1] += 1
        if at2:
            caught += 1
            per_kind[t["kind"]][0] += 1
            delays.append((min(at2) - t["start"]) / 1000)
    anomaly_days = (a.end - a.normal_until) / DAY_MS * a.hosts
    false_after = [e for e in model_eps if e["start"] >= a.normal_until and e["id"] not in matched]
    sev_changes = [max(e["changes"], 0) for e in model_eps]

    def per_day(es, sev, days):
        return sum(1 for e in es if e["max"] >= sev) / days if days else float("nan")

    r = {
        "host_days_normal": normal_days,
        "false_per_host_day": {str(s): per_day(normal, s, normal_days) for s in (1, 2, 3, 4)},
        "host_alarms_per_host_day": {str(s): per_day(normal_host, s, normal_days) for s in (1, 2, 3, 4)},
        "first_day_false_sev2_per_host": per_day([e for e in normal if e["start"] < a.start + DAY_MS], 2, a.hosts),
        "injected": len(injected),
        "recall_sev2": caught / len(injected) if injected else float("nan"),
        "delay_median_s": statistics.median(delays) if delays else float("nan"),
        "delay_p90_s": (statistics.quantiles(delays, n=10)[-1] if len(delays) >= 10 else (max(delays) if delays else float("nan"))),
        "false_per_host_day_with_anomalies_sev2": per_day(false_after, 2, anomaly_days),
        "severity_changes_per_alarm": statistics.mean(sev_changes) if sev_changes else 0.0,
        "per_kind": {k: f"{c}/{n}" for k, (c, n) in sorted(per_kind.items())},
    }
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)
    json.dump(r, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
