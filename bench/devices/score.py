#!/usr/bin/env python3
"""Scores replay outputs of the device rig (gen.py) against its labels, row by row.

For every recording DATA/<name>.csv (its label column, `label` by default) there must be
OUT/<name>.csv, written by `lookout-agent replay` (timestamp,score,alarm,firing,severity;
one row per input row). With DATA/meta.json (gen.py writes it) rows are grouped by fault
kind; without it (recordings from a real rig, in folders: valve1/1.csv, ...) every *.csv
under DATA is scored and grouped by its folder. Rows before --skip (the training rows) are not scored. A row is flagged when
the model's alarm is firing after it (`firing` = 1), or with --by score when its score is
at or above --threshold (the issue's first measurement).

Per row: F1 of flagged against labelled, the share of normal rows flagged, the share of
faulty rows missed. Per fault (its labelled rows): caught when any of its rows is
flagged, and the delay in seconds from its first row to its first flagged row. Printed
as one markdown table, overall and per fault kind; --json writes the figures.

    score.py --data /tmp/lookout-devices/data --out /tmp/lookout-devices/out
"""

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path


def sniff_delimiter(header):
    return max([",", ";", "\t", "|"], key=header.count)


def read_labels(path, column):
    with open(path, newline="") as fh:
        header = fh.readline()
        fh.seek(0)
        rows = list(csv.DictReader(fh, delimiter=sniff_delimiter(header)))
    if rows and column not in rows[0]:
        return None
    return [int(float(r[column])) for r in rows]


def recordings(data):
    """(name relative to DATA, kind) of every recording."""
    meta = data / "meta.json"
    if meta.exists():
        return [(name, m["kind"]) for name, m in sorted(json.loads(meta.read_text()).items())]
    found = sorted(p.relative_to(data) for p in data.rglob("*.csv"))
    return [(str(p), str(p.parent) if str(p.parent) != "." else "all") for p in found]


def read_flags(path, by, threshold):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "firing" not in rows[0]:
        sys.exit(f"{path}: no firing column; is the replay binary older than this benchmark?")
    if by == "firing":
        return [r["firing"] == "1" for r in rows]
    return [r["score"] != "" and float(r["score"]) >= threshold for r in rows]


def faults(labels):
    """(first row, end row) of each run of labelled rows."""
    runs, start = [], None
    for i, label in enumerate(labels + [0]):
        if label and start is None:
            start = i
        elif not label and start is not None:
            runs.append((start, i))
            start = None
    return runs


def score_one(labels, flags, skip):
    c = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for label, flag in list(zip(labels, flags))[skip:]:
        c[("t" if flag == bool(label) else "f") + ("p" if flag else "n")] += 1
    events = []
    for start, end in faults(labels):
        if end <= skip:
            continue
        start = max(start, skip)
        hit = next((i for i in range(start, end) if flags[i]), None)
        events.append({"caught": hit is not None, "delay": None if hit is None else hit - start})
    return c, events


def summarize(counts, events):
    tp, fp, fn, tn = (sum(c[k] for c in counts) for k in ("tp", "fp", "fn", "tn"))
    delays = [e["delay"] for e in events if e["caught"]]
    return {
        "recordings": len(counts),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
        "normal_flagged": fp / (fp + tn) if fp + tn else 0.0,
        "faulty_missed": fn / (fn + tp) if fn + tp else 0.0,
        "faults": len(events),
        "caught": sum(e["caught"] for e in events),
        "delay_median": statistics.median(delays) if delays else None,
        "delay_max": max(delays) if delays else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="folder of the recordings (gen.py's, with meta.json)")
    ap.add_argument("--out", required=True, help="folder of replay outputs, same file names")
    ap.add_argument("--skip", type=int, default=400, help="training rows not scored (400)")
    ap.add_argument("--by", choices=["firing", "score"], default="firing")
    ap.add_argument("--threshold", type=float, default=1.75, help="for --by score (1.75)")
    ap.add_argument("--label", default="Lookout", help="the table's first column")
    ap.add_argument("--label-column", default="label", help="the recordings' 0/1 column (label)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    data, out = Path(args.data), Path(args.out)
    per_kind = {}
    for name, kind in recordings(data):
        labels = read_labels(data / name, args.label_column)
        if labels is None:
            print(f"{name}: no {args.label_column} column, not scored", file=sys.stderr)
            continue
        flags = read_flags(out / name, args.by, args.threshold)
        if len(flags) != len(labels):
            sys.exit(f"{out / name}: {len(flags)} rows where {name} has {len(labels)}")
        c, ev = score_one(labels, flags, args.skip)
        kind = per_kind.setdefault(kind, {"counts": [], "events": []})
        kind["counts"].append(c)
        kind["events"].extend(ev)
    rows = {"all": summarize([c for k in per_kind.values() for c in k["counts"]],
                             [e for k in per_kind.values() for e in k["events"]])}
    for kind in sorted(per_kind):
        rows[kind] = summarize(per_kind[kind]["counts"], per_kind[kind]["events"])
    flagged = "firing" if args.by == "firing" else f"score >= {args.threshold}"
    print(f"| {args.label} (flagged: {flagged}) | recordings | F1 | normal rows flagged | "
          "faulty rows missed | faults caught | delay median (max), s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, r in rows.items():
        delay = "-" if r["delay_median"] is None else f"{r['delay_median']:.0f} ({r['delay_max']})"
        name = "**all**" if kind == "all" else kind
        print(f"| {name} | {r['recordings']} | {r['f1']:.2f} | {100 * r['normal_flagged']:.1f} % | "
              f"{100 * r['faulty_missed']:.1f} % | {r['caught']}/{r['faults']} | {delay} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
