#!/usr/bin/env python3
"""Prints the DEV comparison table: NAB's published detectors (figures from
../shared/reference/README.md, scored by the same evaluator) and Lookout's row from an
`evaluate.py score --json` result. With --series, the per-series table too."""
import argparse
import json

PUBLISHED = [  # caught, windows, FP episodes, worst series, F1, NAB standard
    ("seed notebook parameters, threshold 3", 26, 30, 229, None, 0.182, -227.1),
    ("Netdata-like parameters, threshold 3", 6, 30, 3, None, 0.308, 16.2),
    ("NAB random", 13, 30, 120, 17, 0.160, 17.0),
    ("NAB windowedGaussian", 16, 30, 50, 15, 0.333, 37.1),
    ("NAB relativeEntropy", 20, 30, 42, 8, 0.435, 52.7),
    ("NAB contextOSE (CAD OSE)", 22, 30, 24, 7, 0.579, 59.7),
    ("NAB ARTime", 25, 30, 74, 11, 0.388, 62.0),
    ("NAB numenta (HTM)", 24, 30, 40, 11, 0.511, 66.1),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("result")
    ap.add_argument("--label", default="Lookout")
    ap.add_argument("--series", action="store_true", help="also print the per-series table")
    a = ap.parse_args()
    res = json.load(open(a.result))
    o = res["overall"]
    worst = max(r["fp_episodes"] for r in res["series"])
    print("| detector on DEV | windows caught | FP episodes | worst series (FP episodes) | F1 | NAB standard |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, tp, n, fp, w, f1, nab in PUBLISHED:
        print(f"| {name} | {tp}/{n} | {fp} | {'' if w is None else w} | {f1:.3f} | {nab:.1f} |")
    print(f"| **{a.label}** | {o['tp']}/{o['windows']} | {o['fp_episodes']} | {worst} | "
          f"{o['f1']:.3f} | {o['nab']['standard']['normalised']:.1f} |")
    if a.series:
        print()
        print("| series | kind | windows caught | FP episodes | F1 | NAB raw (standard) | median delay (rows) |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for r in res["series"]:
            f1 = "" if r["f1"] != r["f1"] else f"{r['f1']:.3f}"
            d = "" if r["median_delay_rows"] is None else f"{r['median_delay_rows']:.0f}"
            print(f"| {r['series']} | {r['kind']} | {r['tp']}/{r['windows']} | {r['fp_episodes']} | {f1} | "
                  f"{r['nab_raw']['standard']:.2f} | {d} |")


if __name__ == "__main__":
    main()
