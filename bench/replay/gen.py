#!/usr/bin/env python3
"""Writes a reproducible single-metric series as `timestamp,value` (NAB's format) for
measuring replay speed (BENCHMARKS.md, "Replay speed"): a daily cycle, an hourly ripple, Gaussian noise, a level shift now and
then and a rare short spike. Same arguments, same bytes (a seeded generator, no clock).

    gen.py ROWS INTERVAL_SECONDS SEED OUT.csv
"""
import math
import random
import sys


def main():
    rows, interval, seed, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rng = random.Random(seed)
    day = 86400.0
    level = 40.0
    spike = 0
    # 2024-01-01 00:00:00 UTC, kept as calendar fields so no row needs datetime.
    y, mo, d, secs = 2024, 1, 1, 0
    dim = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    lines = ["timestamp,value\n"]
    with open(out, "w") as f:
        for i in range(rows):
            t = i * interval
            if rng.random() < 2e-5:
                level += rng.choice((-1, 1)) * rng.uniform(5.0, 20.0)
                level = min(max(level, 10.0), 90.0)
            if spike == 0 and rng.random() < 5e-6:
                spike = rng.randint(5, 60)
            v = (level
                 + 15.0 * math.sin(2 * math.pi * t / day)
                 + 3.0 * math.sin(2 * math.pi * t / 3600.0)
                 + rng.gauss(0.0, 1.5))
            if spike:
                v += 35.0
                spike -= 1
            h, rem = divmod(secs, 3600)
            lines.append("%04d-%02d-%02d %02d:%02d:%02d,%.3f\n" % (y, mo, d, h, rem // 60, rem % 60, v))
            secs += interval
            while secs >= 86400:
                secs -= 86400
                d += 1
                leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
                if d > (29 if mo == 2 and leap else 28 if mo == 2 else dim[mo - 1]):
                    d, mo = 1, mo + 1
                    if mo > 12:
                        mo, y = 1, y + 1
            if len(lines) >= 100000:
                f.write("".join(lines))
                lines.clear()
        f.write("".join(lines))


if __name__ == "__main__":
    main()
