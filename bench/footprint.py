#!/usr/bin/env python3
"""Memory and CPU footprint of one process that this script starts (standard library only).

    python3 bench/footprint.py [options] -- CMD [ARG ...]

Starts CMD (no shell: the measured PID is CMD itself) with stdout+stderr to --log, then
every --interval seconds reads, for CMD's process tree in /proc (root plus live
descendants): VmRSS (sum), VmHWM of the root, threads, and utime+stime+cutime+cstime.

- CPU % of one core = change of the tree's utime+stime(+cutime+cstime) over the window
  [--warmup, --warmup + --duration] / window length (all threads counted; 10 ms ticks).
- RSS median/min/max/first/last over the samples inside the window; VmHWM and PSS
  (smaps_rollup) at the end of the window.
- --at T,T,...: RSS/VmHWM at these wall-clock seconds after start (first sample at or after).
- --sub-port P --sub-topic FILTER: runs `mosquitto_sub -h 127.0.0.1 -p P -t FILTER` (e.g. on
  an embedded broker inside CMD), counts the messages received in the window and tracks
  the newest `"ts":<unix ms>` seen in a payload. With --sim-at S,S,... (simulated seconds)
  it reads RSS/VmHWM the moment a payload's ts first reaches start + S (start = when CMD
  was spawned, which is when a simulating lookout-agent sets its clock, to a few ms), so
  simulated time is measured from what the agent published, not assumed from the speed.
  --stop-at-sim S ends the run as soon as simulated time S is reached.

The process is stopped by its PID only (SIGTERM, SIGKILL after 10 s); its exit status and
how long it took to stop are recorded, so are WARN/ERROR lines of its log. --json writes
everything, samples included.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
TS_RE = re.compile(rb'"ts":(\d+)')
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")   # tracing colours its output even into a file


def read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def stat_fields(pid: int) -> list[str] | None:
    try:
        s = read(f"/proc/{pid}/stat")
    except OSError:
        return None
    return s[s.rindex(")") + 2:].split()   # [0]=state [1]=ppid [11..14]=utime stime cutime cstime


def tree(root: int) -> dict[int, list[str]]:
    stats, kids = {}, {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (f := stat_fields(int(d))):
            stats[int(d)] = f
            kids.setdefault(int(f[1]), []).append(int(d))
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in stats and stats[pid][0] != "Z":
            out[pid] = stats[pid]
            todo.extend(kids.get(pid, []))
    return out


def ticks(f: list[str]) -> int:
    return sum(int(x) for x in f[11:15])


def status_kib(pid: int, key: str) -> int:
    try:
        for line in read(f"/proc/{pid}/status").splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid: int) -> int:
    try:
        return int(re.search(r"^Pss:\s+(\d+)", read(f"/proc/{pid}/smaps_rollup"), re.M).group(1))
    except (OSError, AttributeError):
        return 0


def host_cpu() -> tuple[int, int]:
    v = [int(x) for x in read("/proc/stat").splitlines()[0].split()[1:]]
    return sum(v[:8]) - v[3] - v[4], sum(v[:8])


def point(pid: int, t0: float) -> dict:
    return {"t_wall_s": round(time.monotonic() - t0, 3), "rss_kib": status_kib(pid, "VmRSS"),
            "hwm_kib": status_kib(pid, "VmHWM")}


class Sub:
    """mosquitto_sub on the process's broker: message count and newest payload ts."""

    def __init__(self, port: int, topic: str, pid: int, t0: float, start_ms: int,
                 sim_at: list[float]):
        self.pid, self.t0, self.start_ms = pid, t0, start_ms
        self.times: list[float] = []          # monotonic receive time of each message
        self.ts_first = self.ts_last = None
        self.sim_at = sorted(sim_at)
        self.sim_points: list[dict] = []
        self.reached = threading.Event()
        self.stop_at_sim: float | None = None
        self.p = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port),
                                   "-i", "footprint-sub", "-t", topic, "-F", "%p"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        self.th = threading.Thread(target=self._read, daemon=True)
        self.th.start()

    def sim_s(self) -> float | None:
        return None if self.ts_last is None else (self.ts_last - self.start_ms) / 1000

    def _read(self) -> None:
        for line in self.p.stdout:
            now = time.monotonic()
            self.times.append(now)
            m = TS_RE.search(line)
            if not m:
                continue
            ts = int(m.group(1))
            if self.ts_first is None:
                self.ts_first = ts
            if self.ts_last is None or ts > self.ts_last:
                self.ts_last = ts
            sim = (ts - self.start_ms) / 1000
            while self.sim_at and sim >= self.sim_at[0]:
                target = self.sim_at.pop(0)
                p = point(self.pid, self.t0)
                p.update(sim_target_s=target, sim_s=round(sim, 1))
                self.sim_points.append(p)
            if self.stop_at_sim is not None and sim >= self.stop_at_sim:
                self.reached.set()

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.th.join(timeout=5)


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.005)
    return False


def floats(s: str | None) -> list[float]:
    return [float(x) for x in s.split(",") if x] if s else []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warmup", type=float, default=10, help="seconds before the window")
    ap.add_argument("--duration", type=float, default=60, help="window length, s")
    ap.add_argument("--interval", type=float, default=1.0, help="sampling period, s")
    ap.add_argument("--at", help="wall seconds after start at which to record RSS/VmHWM")
    ap.add_argument("--sub-port", type=int, help="broker port for mosquitto_sub")
    ap.add_argument("--sub-topic", help="topic filter for mosquitto_sub")
    ap.add_argument("--sim-at", help="simulated seconds at which to record RSS/VmHWM "
                    "(needs --sub-*, payloads with \"ts\")")
    ap.add_argument("--stop-at-sim", type=float,
                    help="end the window when simulated time reaches this many seconds")
    ap.add_argument("--log", default="footprint-cmd.log", help="CMD's stdout+stderr")
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--label", default="", help="free text recorded in the JSON")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARG ...]")
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no command given (after --)")

    logf = open(a.log, "wb")
    start_ms = int(time.time() * 1000)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                            start_new_session=True)
    pid = proc.pid
    res: dict = {"label": a.label, "cmd": cmd, "pid": pid, "start_unix_ms": start_ms,
                 "warmup_s": a.warmup, "duration_s": a.duration, "interval_s": a.interval}
    sub = None
    samples: list[dict] = []
    at = sorted(floats(a.at))
    at_points: list[dict] = []
    try:
        if a.sub_topic:
            if not wait_port(a.sub_port, 10):
                raise RuntimeError(f"nothing listens on 127.0.0.1:{a.sub_port}")
            sub = Sub(a.sub_port, a.sub_topic, pid, t0, start_ms, floats(a.sim_at))
            sub.stop_at_sim = a.stop_at_sim
            res["sub_connected_after_s"] = round(time.monotonic() - t0, 3)
        end = a.warmup + a.duration
        w0 = w1 = None
        i = 0
        while True:
            now = time.monotonic() - t0
            snap = tree(pid)
            if pid not in snap:
                raise RuntimeError(f"process exited (status {proc.poll()}), see {a.log}")
            s = {"t_wall_s": round(now, 3), "rss_kib": sum(status_kib(p, "VmRSS") for p in snap),
                 "hwm_kib": status_kib(pid, "VmHWM"), "ticks": sum(ticks(f) for f in snap.values()),
                 "threads": status_kib(pid, "Threads"), "procs": len(snap)}
            if sub:
                s["sim_s"] = sub.sim_s()
                s["msgs"] = len(sub.times)
            samples.append(s)
            while at and now >= at[0]:
                at_points.append(dict(s, at_s=at.pop(0)))
            if w0 is None and now >= a.warmup:
                w0 = (time.monotonic(), s, host_cpu())
            stop_sim = sub is not None and sub.reached.is_set()
            if now >= end or stop_sim:
                w1 = (time.monotonic(), s, host_cpu())
                res["stopped_because"] = "sim time reached" if stop_sim else "duration"
                break
            i += 1
            # sleep until the next sample, waking early if the simulated target is reached
            delay = max(0.0, t0 + i * a.interval - time.monotonic())
            if sub is not None and sub.stop_at_sim is not None:
                sub.reached.wait(delay)
            else:
                time.sleep(delay)
        if w0 is None:
            w0 = (t0, samples[0], host_cpu())
        secs = w1[0] - w0[0]
        win = [s for s in samples if w0[1]["t_wall_s"] <= s["t_wall_s"] <= w1[1]["t_wall_s"]]
        rss = [s["rss_kib"] for s in win]
        (hb0, ht0), (hb1, ht1) = w0[2], w1[2]
        res.update(
            window_s=round(secs, 3),
            window_wall_s=[w0[1]["t_wall_s"], w1[1]["t_wall_s"]],
            cpu_pct_one_core=round(100 * (w1[1]["ticks"] - w0[1]["ticks"]) / CLK_TCK / secs, 3)
            if secs > 0 else None,
            cpu_s_total=round(w1[1]["ticks"] / CLK_TCK, 2),
            rss_kib_median=statistics.median(rss), rss_kib_min=min(rss), rss_kib_max=max(rss),
            rss_kib_first=rss[0], rss_kib_last=rss[-1],
            hwm_kib_end=status_kib(pid, "VmHWM"), pss_kib_end=sum(pss_kib(p) for p in tree(pid)),
            threads=max(s["threads"] for s in samples), processes=max(s["procs"] for s in samples),
            host_busy_pct_all_cores=round(100 * (hb1 - hb0) / max(1, ht1 - ht0), 1),
            loadavg_end=read("/proc/loadavg").split()[:3],
            at_points=at_points)
        if sub:
            n = sum(1 for t in sub.times if w0[0] <= t < w1[0])
            res.update(msgs_in_window=n, msgs_per_s=round(n / secs, 2) if secs > 0 else None,
                       sim_s_end=sub.sim_s(), sim_points=sub.sim_points,
                       sim_first_seen_s=None if sub.ts_first is None
                       else (sub.ts_first - start_ms) / 1000)
            if sub.sim_s() is not None and secs > 0:
                # simulated seconds per wall second over the whole run (start to last ts)
                res["sim_speed_achieved"] = round(sub.sim_s() / (w1[0] - t0), 1)
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        t_stop = time.monotonic()
        how = f"exited({proc.poll()})"
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
                how = "SIGTERM"
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                how = "SIGKILL"
        res.update(stop=how, exit_status=proc.returncode,
                   stop_took_s=round(time.monotonic() - t_stop, 2))
        if sub:
            sub.stop()
        logf.close()
    log = [ANSI_RE.sub("", l) for l in open(a.log, errors="replace").read().splitlines()]
    res["log_lines"] = len(log)
    res["log_warn_error"] = [l for l in log if re.search(r"\b(WARN|ERROR)\b|panic", l)][:50]
    res["samples"] = samples
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1)
    short = {k: v for k, v in res.items() if k not in ("samples", "cmd")}
    print(json.dumps(short, indent=1))
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())
