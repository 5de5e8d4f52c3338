#!/usr/bin/env python3
"""Labelled recordings of a simulated industrial pump rig, one CSV per seed.

The rig: a centrifugal pump on an induction motor circulating water through a loop with
a control valve. Eight sensors in six units, sampled once a second:

    vib_x, vib_y   vibration RMS on two axes of the pump housing (g, about 0.03)
    current        motor current (A, 0.9 to 1.35)
    pressure       pump outlet pressure (bar, 0.3 to 0.6; more with a valve closing)
    temp_motor     motor winding temperature (degC, about 79)
    temp_fluid     loop water temperature (degC, about 26)
    voltage        supply voltage (V, 230 +- 3)
    flow           volume flow (l/min, 23 to 33)

A control program steps the pump's duty (speed) between three settings every one to two
minutes. Speed follows duty with a lag; flow and pressure sit where the pump curve
(head ~ speed^2 - b flow^2) meets the loop's curve (pressure ~ resistance * flow^2, the
valve's opening setting the resistance); current follows speed and hydraulic power;
the supply voltage wanders with the grid and sags with current; the motor and the water
warm towards the load with minutes of lag. Every sensor has its own noise and resolution.

One fault per recording, starting after row 400 (the first 400 rows are normal), lasting
about a third of the rows; the label column is 1 while the fault lasts and while the rig
returns to normal after its cause is removed (a valve reopening), 0 elsewhere:

    valve          a valve closes part way: flow falls while pressure rises
    cavitation     vibration noise up on both axes, flow and pressure jitter, flow dips
    imbalance      rotor imbalance: one axis' vibration up with speed squared, beating
    stuck          one sensor repeats its last reading
    drift          one sensor's calibration drifts away, slowly
    temp_climb     the motor's fan fails: its temperature climbs, until the recording ends
    small_dim      one small-unit dimension (a vibration axis or the current) steps up
                   by 10 of its standard deviations over the normal rows, nothing else
                   changes

The fault kind is chosen by seed (seed 1 valve, 2 cavitation, ... 8 valve again), and
every magnitude, duration, timing and affected sensor is drawn from the seed's generator.

    gen.py --seeds 1-35 --out /tmp/rig            # 35 recordings, 5 of each kind
    gen.py --seeds 3,10 --out /tmp/rig --rows 1200 --delimiter ,

Writes OUT/<seed>-<kind>.csv (datetime;vib_x;...;flow;label) and OUT/meta.json (per
file: kind, affected sensor, fault start and end rows, labelled end row, rows, and the
fault's magnitudes). Only the standard library is needed.
"""

import argparse
import datetime as dt
import json
import math
import random
import statistics
from pathlib import Path

KINDS = ["valve", "cavitation", "imbalance", "stuck", "drift", "temp_climb", "small_dim"]
SENSORS = ["vib_x", "vib_y", "current", "pressure", "temp_motor", "temp_fluid", "voltage", "flow"]
# Decimal places each sensor reports (its resolution).
DECIMALS = {"vib_x": 5, "vib_y": 5, "current": 4, "pressure": 4, "temp_motor": 2,
            "temp_fluid": 2, "voltage": 2, "flow": 3}
# Measurement noise, one standard deviation, in the sensor's unit.
NOISE = {"vib_x": 0.0015, "vib_y": 0.0014, "current": 0.012, "pressure": 0.006,
         "temp_motor": 0.06, "temp_fluid": 0.04, "voltage": 0.6, "flow": 0.35}
DUTIES = [0.75, 0.88, 1.0]
NORMAL_ROWS = 400


def parse_seeds(text):
    """'1-35', '3,10', '1-5,9' -> a list of ints."""
    seeds = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            seeds.extend(range(int(lo), int(hi) + 1))
        elif part:
            seeds.append(int(part))
    return seeds


class Ou:
    """An Ornstein-Uhlenbeck process: a slow wander around 0 with standard deviation sd
    and correlation time tau (s)."""

    def __init__(self, rng, sd, tau):
        self.rng, self.sd, self.a = rng, sd, math.exp(-1.0 / tau)
        self.x = rng.gauss(0, sd)

    def step(self):
        self.x = self.a * self.x + math.sqrt(1 - self.a * self.a) * self.rng.gauss(0, self.sd)
        return self.x


def duty_program(rng, rows):
    """The control program: duty settings held 60 to 130 s each, every setting visited in
    each round of three (in a shuffled order), so the first 400 rows see them all."""
    out = []
    while len(out) < rows:
        order = DUTIES[:]
        rng.shuffle(order)
        for d in order:
            out.extend([d] * rng.randint(60, 130))
    return out[:rows]


def plan_fault(rng, kind, rows):
    """Fault start and end rows, its labelled end (recovery included), its sensor and its
    magnitudes."""
    recovery = 12 if kind == "valve" else 0
    length = max(60, int(rows / 3) - recovery + rng.randint(-40, 40))
    if kind == "temp_climb":
        # An overheating motor is stopped: the recording ends with the fault.
        start = rows - length
    else:
        start = rng.randint(NORMAL_ROWS + 20, rows - length - recovery - 40)
    f = {"kind": kind, "start": start, "end": start + length, "label_end": start + length + recovery,
         "sensor": None}
    if kind == "valve":
        # Flow falls by 6 to 30 % at a given speed.
        f.update(opening=rng.uniform(0.6, 0.9), ramp=rng.randint(8, 30))
    elif kind == "cavitation":
        f.update(vib_gain=rng.uniform(1.2, 1.8), jitter=rng.uniform(2.0, 4.0),
                 flow_loss=rng.uniform(0.02, 0.06))
    elif kind == "imbalance":
        f.update(sensor=rng.choice(["vib_x", "vib_y"]), amp=rng.uniform(0.02, 0.045),
                 beat=rng.uniform(6.0, 15.0))
    elif kind == "stuck":
        f.update(sensor=rng.choice(SENSORS))
    elif kind == "drift":
        sensor = rng.choice(["pressure", "flow", "current", "temp_fluid"])
        # The drift reaches 10 to 30 noise deviations by the fault's end.
        f.update(sensor=sensor, total=rng.uniform(10, 30) * NOISE[sensor] * rng.choice([-1, 1]))
    elif kind == "temp_climb":
        # The fan fails: the motor's thermal resistance grows by 30 to 60 %, so its
        # steady temperature rises by that share of its rise over the room, slowly.
        f.update(resistance=rng.uniform(1.3, 1.6))
    elif kind == "small_dim":
        f.update(sensor=rng.choice(["vib_x", "vib_y", "current"]))
    return f


def motor_heat(current, resistance):
    """The motor's steady temperature at a current, with its thermal resistance to the
    room (1: the fan running): about 79 degC at 1.3 A."""
    return 25.0 + resistance * (46.0 + 6.5 * current ** 2)


def fluid_heat(temp_motor):
    """The water's steady temperature: the room's, warmed a little by the motor."""
    return 26.0 + 0.05 * (temp_motor - 79.0)


def in_fault(f, i):
    return f["start"] <= i < f["end"]


def simulate(seed, kind, rows):
    """Rows of sensor readings (dicts) and labels for one recording."""
    rng = random.Random(seed)
    duty = duty_program(rng, rows)
    f = plan_fault(rng, kind, rows)
    grid = Ou(rng, 1.6, 90.0)            # the supply's slow wander
    ambient = Ou(rng, 0.25, 600.0)       # the room around the water
    load_wobble = Ou(rng, 0.015, 20.0)   # small process variation in flow resistance
    speed = duty[0]
    valve = 1.0
    # Start where the program's average load keeps the motor and the water.
    mean_current = sum(0.45 + 0.35 * d + 0.5 * d ** 3 for d in DUTIES) / len(DUTIES)
    temp_motor = motor_heat(mean_current, 1.0)
    temp_fluid = fluid_heat(temp_motor)
    stuck_value = None
    out, labels = [], []
    for i in range(rows):
        speed += (duty[i] - speed) * (1 - math.exp(-1 / 3.0))          # 3 s lag
        # Valve: closes along a ramp at the fault's start, reopens over 10 s at its end.
        if kind == "valve" and in_fault(f, i):
            valve = max(f["opening"], valve - (1 - f["opening"]) / f["ramp"])
        elif kind == "valve":
            valve = min(1.0, valve + (1 - f["opening"]) / 10)
        # Hydraulics in normalised units: q = 1 is 32 l/min, pressure in bar.
        resistance = 0.6 * (1 + load_wobble.step()) / valve ** 2
        q = speed / math.sqrt(resistance + 0.4)
        cavitating = kind == "cavitation" and in_fault(f, i)
        if cavitating:
            q *= 1 - f["flow_loss"] * (1 + 0.5 * rng.gauss(0, 1))
        pressure = resistance * q * q
        current = 0.45 + 0.35 * speed + 0.5 * pressure * q / 0.6
        voltage = 230.0 + grid.step() - 0.8 * (current - 1.3)
        # Heat: the motor towards its load (8 min; longer without its fan), the water
        # towards the motor and the room (30 min).
        r_th = f["resistance"] if kind == "temp_climb" and in_fault(f, i) else 1.0
        temp_motor += (motor_heat(current, r_th) - temp_motor) * (1 - math.exp(-1 / (480.0 * r_th)))
        temp_fluid += (fluid_heat(temp_motor) + ambient.step() - temp_fluid) * (1 - math.exp(-1 / 1800.0))
        # Vibration RMS grows with speed; imbalance adds a once-per-revolution component
        # on one axis, its RMS beating against the housing's resonance.
        vib = {"vib_x": 0.018 + 0.012 * speed ** 2, "vib_y": 0.016 + 0.011 * speed ** 2}
        if kind == "imbalance" and in_fault(f, i):
            a = f["amp"] * speed ** 2 * (1 + 0.25 * math.sin(2 * math.pi * i / f["beat"]))
            vib[f["sensor"]] = math.sqrt(vib[f["sensor"]] ** 2 + a * a / 2)
        row = {"vib_x": vib["vib_x"], "vib_y": vib["vib_y"], "current": current,
               "pressure": pressure, "temp_motor": temp_motor, "temp_fluid": temp_fluid,
               "voltage": voltage, "flow": 32.0 * q}
        for s in SENSORS:
            noise = NOISE[s]
            if cavitating and s in ("vib_x", "vib_y"):
                row[s] *= f["vib_gain"]
                noise *= f["vib_gain"] * 1.5
            if cavitating and s in ("flow", "pressure", "current"):
                noise *= f["jitter"]
            row[s] += rng.gauss(0, noise)
        if kind == "drift" and in_fault(f, i):
            row[f["sensor"]] += f["total"] * (i - f["start"]) / (f["end"] - f["start"])
        if kind == "stuck":
            if in_fault(f, i):
                row[f["sensor"]] = stuck_value
            else:
                stuck_value = round(row[f["sensor"]], DECIMALS[f["sensor"]])
        out.append({s: round(row[s], DECIMALS[s]) for s in SENSORS})
        labels.append(1 if f["start"] <= i < f["label_end"] else 0)
    if kind == "small_dim":
        # 10 standard deviations of the sensor's normal rows (the first 400).
        s = f["sensor"]
        f["shift"] = round(10 * statistics.stdev(r[s] for r in out[:NORMAL_ROWS]), DECIMALS[s])
        for r in out[f["start"]:f["end"]]:
            r[s] = round(r[s] + f["shift"], DECIMALS[s])
    return out, labels, f


def write(path, seed, rows, labels, delimiter):
    start = dt.datetime(2026, 3, 2, 8, 0, 0) + dt.timedelta(days=seed)
    with open(path, "w") as fh:
        fh.write(delimiter.join(["datetime", *SENSORS, "label"]) + "\n")
        for i, (r, label) in enumerate(zip(rows, labels)):
            ts = (start + dt.timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S")
            fh.write(delimiter.join([ts, *(repr(r[s]) for s in SENSORS), str(label)]) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1-35", help="seeds: 1-35, 3,10, 1-5,9 (default 1-35)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--rows", type=int, default=0,
                    help="rows per recording (default: 1,100 to 1,500, drawn per seed)")
    ap.add_argument("--delimiter", default=";", help="field delimiter (default ;)")
    ap.add_argument("--kind", choices=KINDS, help="one fault kind for every seed")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {}
    for seed in parse_seeds(args.seeds):
        kind = args.kind or KINDS[(seed - 1) % len(KINDS)]
        rows = args.rows or random.Random(seed * 7919).randint(1100, 1500)
        data, labels, fault = simulate(seed, kind, rows)
        name = f"{seed:03d}-{kind}.csv"
        write(out / name, seed, data, labels, args.delimiter)
        meta[name] = {"seed": seed, "rows": rows,
                      **{k: round(v, 6) if isinstance(v, float) else v for k, v in fault.items()}}
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{len(meta)} recordings in {out}")


if __name__ == "__main__":
    main()
