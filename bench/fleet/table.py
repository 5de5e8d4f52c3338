#!/usr/bin/env python3
"""One markdown table from the per-seed results of bench/fleet/run.sh, with targets."""
import json
import sys

rows = [(p.rsplit("/", 1)[-1].removesuffix(".json"), json.load(open(p))) for p in sys.argv[1:]]
print("| seed | false/host-day sev>=1 | sev>=2 | sev>=3 | host-level sev>=2 | first-day sev>=2 per host | recall sev>=2 | delay median / p90 (s) | false/host-day sev>=2 with anomalies | severity changes/alarm |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for name, r in rows:
    f = r["false_per_host_day"]
    h = r["host_alarms_per_host_day"]
    print(f"| {name} | {f['1']:.2f} | {f['2']:.2f} | {f['3']:.3f} | {h['2']:.2f} | "
          f"{r['first_day_false_sev2_per_host']:.2f} | {r['recall_sev2']:.1%} | "
          f"{r['delay_median_s']:.0f} / {r['delay_p90_s']:.0f} | "
          f"{r['false_per_host_day_with_anomalies_sev2']:.2f} | {r['severity_changes_per_alarm']:.2f} |")
print()
print("targets: sev>=2 <= 1 per host-day, sev>=3 <= 0.1, recall >= 90 % with median delay <= 60 s, <= 1 severity change per alarm")
for name, r in rows:
    print(f"{name} caught by kind: " + ", ".join(f"{k} {v}" for k, v in r["per_kind"].items()))
