#!/usr/bin/env python3
"""A simple reference detector for the device benchmark: how hard are the recordings?

Per dimension, the median and the MAD of the first --train rows (robust z-scores); a row
is flagged when the largest |z| over the dimensions, averaged over the last --smooth
rows, is at least --z. No hysteresis, no learning after the first rows, no use of the
labels. Writes one output per recording in replay's format (timestamp,score,alarm,
firing,severity; `score` is the largest |z|), for score.py to score like Lookout's:

    reference.py --data /tmp/lookout-devices/data --out /tmp/lookout-devices/ref
    score.py --data /tmp/lookout-devices/data --out /tmp/lookout-devices/ref --label reference

It is a yardstick, not a contender: it cannot see a stuck sensor or values in an unusual
combination, and its defaults (z 5, 5 rows) were not tuned on these recordings.
"""

import argparse
import csv
import json
import statistics
from pathlib import Path


def detect(rows, columns, train, z_at, smooth):
    centre, spread = {}, {}
    for c in columns:
        head = [float(r[c]) for r in rows[:train]]
        centre[c] = statistics.median(head)
        mad = statistics.median(abs(v - centre[c]) for v in head)
        spread[c] = max(1.4826 * mad, 1e-9)
    scores, flags, recent = [], [], []
    for i, r in enumerate(rows):
        z = max(abs(float(r[c]) - centre[c]) / spread[c] for c in columns)
        recent = (recent + [z])[-smooth:]
        scores.append(z)
        flags.append(i >= train and sum(recent) / len(recent) >= z_at)
    return scores, flags


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--z", type=float, default=5.0)
    ap.add_argument("--smooth", type=int, default=5)
    args = ap.parse_args()
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in json.loads((data / "meta.json").read_text()):
        with open(data / name, newline="") as fh:
            header = fh.readline()
            fh.seek(0)
            delim = max([",", ";", "\t"], key=header.count)
            rows = list(csv.DictReader(fh, delimiter=delim))
        ts = next(iter(rows[0]))
        columns = [c for c in rows[0] if c not in (ts, "label")]
        scores, flags = detect(rows, columns, args.train, args.z, args.smooth)
        with open(out / name, "w") as fh:
            fh.write("timestamp,score,alarm,firing,severity\n")
            for i, (r, s, f) in enumerate(zip(rows, scores, flags)):
                raised = f and (i == 0 or not flags[i - 1])
                fh.write(f"{r[ts]},{s:.4f},{int(raised)},{int(f)},{int(f)}\n")


if __name__ == "__main__":
    main()
