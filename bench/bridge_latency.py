#!/usr/bin/env python3
"""Publish-to-file latency of MQTT alarm subscribers at a paced rate (default 1,000/s).

The peer harness (../shared/bench/mqttwarn/bench.py) only floods; it has no paced mode.
This script uses the same broker config (its mosquitto.conf.in) and the same subscriber
contract (subscribe to `alarms/#` on 127.0.0.1:{port} at {qos}, append one line per message
to {outfile}; placeholders {port} {qos} {outfile} {rundir}), and measures every subscriber
given with --sub NAME=CMD the same way, in the same invocation, against one broker:

- a publisher *process* (paho-mqtt, no network thread: each publish() writes the socket
  at once) sends --rate messages/s for --duration s on alarms/hNNN/<metric>, each payload
  a ~200-byte JSON alarm stamped with `t_ns` = time.monotonic_ns() taken just before the
  publish call (CLOCK_MONOTONIC is system-wide, so other processes can compare it);
- this process (single-threaded) follows the output file with inotify and takes
  time.monotonic_ns() when a line appears: latency = that minus `t_ns`;
- --purge-client-id ID (the bridge's fixed client id) ends that client's persistent
  session after every run: otherwise mosquitto queues the other subscribers' 20,000
  messages for the stopped bridge and hands them over as a burst at its next start;
- a warm-up message first proves the subscriber is subscribed and writing;
- CPU (utime+stime from /proc/PID/stat) and RSS (VmRSS every 250 ms, VmHWM) of the
  subscriber over the paced window; every line is checked (missing / duplicate seq).

Repetitions are interleaved (rep 1: A B C, rep 2: B C A, ...) so that machine noise is
spread over all subscribers. Every process started here is stopped by its own PID.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import select
import shlex
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
METRICS = ["cpu", "mem", "disk", "load", "net"]


# --------------------------------------------------------------------------
# publisher (runs as its own process: `bridge_latency.py --publisher ...`)
# --------------------------------------------------------------------------

def publisher_main(a) -> int:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(client_id=f"lat-pub-{os.getpid()}", clean_session=True,
                    protocol=mqtt.MQTTv311)
    c.max_inflight_messages_set(0)   # unlimited: never hold a message back for acks
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", a.port, keepalive=60)
    deadline = time.monotonic() + 10
    while not c.is_connected():
        c.loop(timeout=0.05)
        if time.monotonic() > deadline:
            print(json.dumps({"error": "publisher could not connect"}))
            return 1
    n = int(a.rate * a.duration)
    period = 1_000_000_000 // a.rate
    # Fixed-size payload like the harness's (~200 bytes): pad computed once.
    proto = ('{"host":"h000","metric":"cpu","score":0.97,"severity":2,"level":"critical",'
             '"rule":"cpu_anomaly_lagged_kmeans","value":93.41,"threshold":0.9,'
             f'"run":"{a.run}","seq":0,"t_ns":{time.monotonic_ns()},"pad":""}}')
    pad = "x" * max(0, a.payload_bytes - len(proto))
    run = a.run
    late_max = 0
    t0 = time.monotonic_ns()
    for seq in range(n):
        due = t0 + seq * period
        now = time.monotonic_ns()
        if now < due:
            time.sleep((due - now) / 1e9)
        host = f"h{seq % 64:03d}"
        metric = METRICS[seq % 5]
        t_ns = time.monotonic_ns()
        late_max = max(late_max, t_ns - due)
        body = ('{"host":"%s","metric":"%s","score":0.97,"severity":2,"level":"critical",'
                '"rule":"%s_anomaly_lagged_kmeans","value":93.41,"threshold":0.9,'
                '"run":"%s","seq":%d,"t_ns":%d,"pad":"%s"}'
                % (host, metric, metric, run, seq, t_ns, pad))
        c.publish(f"alarms/{host}/{metric}", body, qos=a.qos)
        c.loop(timeout=0)  # read PUBACKs / pings; never blocks
    t_end = time.monotonic_ns()
    # Let the last PUBACKs arrive, then leave cleanly.
    deadline = time.monotonic() + 5
    while c._out_messages and time.monotonic() < deadline:
        c.loop(timeout=0.05)
    unacked = len(c._out_messages)
    c.disconnect()
    print(json.dumps({"sent": n, "send_s": round((t_end - t0) / 1e9, 3),
                      "rate": round(n / ((t_end - t0) / 1e9), 1),
                      "max_late_ms": round(late_max / 1e6, 3), "unacked_at_end": unacked}))
    return 0


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

class Proc:
    def __init__(self, argv, cwd, log, env=None):
        self._fh = open(log, "ab")
        self.p = subprocess.Popen(argv, cwd=str(cwd), stdout=self._fh,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self.pid = self.p.pid

    def alive(self):
        return self.p.poll() is None

    def stop(self, grace=15.0):
        how = f"exited({self.p.returncode})"
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=grace)
                how = f"SIGTERM({self.p.returncode})"
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
                how = "SIGKILL"
        self._fh.close()
        return how


STARTED: list[Proc] = []


def start(argv, cwd, log, env=None) -> Proc:
    p = Proc(argv, cwd, log, env)
    STARTED.append(p)
    return p


def stop(p: Proc, grace=15.0) -> str:
    how = p.stop(grace)
    if p in STARTED:
        STARTED.remove(p)
    return how


def stop_all():
    for p in reversed(list(STARTED)):
        try:
            stop(p, 5.0)
        except Exception as ex:
            print(f"warning: stopping pid {p.pid}: {ex}", file=sys.stderr)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def mem_kb(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
    return out


def wait_port(port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class Inotify:
    """IN_MODIFY on one file, through libc (no third-party package)."""
    IN_MODIFY = 0x2

    def __init__(self, path: Path):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if libc.inotify_add_watch(self.fd, str(path).encode(), self.IN_MODIFY) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch")

    def wait(self, timeout: float) -> None:
        r, _, _ = select.select([self.fd], [], [], timeout)
        if r:
            try:
                while os.read(self.fd, 65536):
                    pass
            except BlockingIOError:
                pass

    def close(self):
        os.close(self.fd)


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


# --------------------------------------------------------------------------
# one measured run
# --------------------------------------------------------------------------

def warm_up(port, outfile: Path, sub: Proc, timeout: float) -> None:
    """Publish warm-up messages until the subscriber writes a line."""
    import paho.mqtt.client as mqtt
    c = mqtt.Client(client_id=f"lat-warm-{os.getpid()}", clean_session=True,
                    protocol=mqtt.MQTTv311)
    c.connect("127.0.0.1", port, keepalive=60)
    deadline = time.monotonic() + timeout
    try:
        while not c.is_connected():
            c.loop(timeout=0.05)
            if time.monotonic() > deadline:
                raise RuntimeError("warm-up client could not connect")
        while outfile.stat().st_size == 0:
            if not sub.alive():
                raise RuntimeError(f"subscriber exited early; see {outfile.parent}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no warm-up line within {timeout}s; see {outfile.parent}")
            c.publish("alarms/warmup", b'{"warmup":true}', qos=1)
            t = time.monotonic() + 0.5
            while time.monotonic() < t and outfile.stat().st_size == 0:
                c.loop(timeout=0.01)
        for _ in range(20):
            c.loop(timeout=0.01)
    finally:
        c.disconnect()


def purge_session(port, client_id) -> None:
    """Connect as client_id with a clean session and leave: mosquitto drops that
    client's persistent session, so no backlog piles up for it while other
    subscribers are measured (the bridge uses clean_session=false)."""
    import paho.mqtt.client as mqtt
    c = mqtt.Client(client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311)
    c.connect("127.0.0.1", port, keepalive=60)
    deadline = time.monotonic() + 10
    while not c.is_connected() and time.monotonic() < deadline:
        c.loop(timeout=0.05)
    c.disconnect()


def one_run(a, broker: Proc, name: str, cmd: str, rep: int, workdir: Path) -> dict:
    label = f"{name}-r{rep}"
    rundir = workdir / label
    rundir.mkdir(parents=True)
    outfile = rundir / "alarms.out"
    outfile.touch()
    argv = shlex.split(cmd.format(port=a.port, qos=a.qos, outfile=outfile, rundir=rundir,
                                  venv=a.venv))
    sub = start(argv, rundir, rundir / "subscriber.log")
    pub = None
    try:
        warm_up(a.port, outfile, sub, a.startup_timeout)
        time.sleep(1.0)  # let duplicate warm-ups land
        ino = Inotify(outfile)
        f = open(outfile, "rb")
        f.seek(0, os.SEEK_END)
        base_bytes = f.tell()
        buf = b""
        first_seen: dict[int, int] = {}
        dups = foreign = bad = 0
        n = int(a.rate * a.duration)
        cpu0 = cpu_seconds(sub.pid)
        bcpu0 = cpu_seconds(broker.pid)
        rss_peak = 0
        samples = []
        pub = start([sys.executable, __file__, "--publisher", "--port", str(a.port),
                     "--qos", str(a.qos), "--rate", str(a.rate), "--duration", str(a.duration),
                     "--run", label, "--payload-bytes", str(a.payload_bytes)],
                    rundir, rundir / "publisher.out")
        t_start = time.monotonic()
        next_mem = 0.0
        pub_exit_at = None
        while True:
            ino.wait(0.25)
            now_ns = time.monotonic_ns()
            chunk = f.read()
            if chunk:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    try:
                        doc = json.loads(line)
                    except ValueError:
                        bad += 1
                        continue
                    if not isinstance(doc, dict) or doc.get("run") != label:
                        foreign += 1
                        continue
                    s = doc["seq"]
                    if s in first_seen:
                        dups += 1
                    else:
                        first_seen[s] = now_ns - doc["t_ns"]
            mono = time.monotonic()
            if mono >= next_mem and sub.alive():
                m = mem_kb(sub.pid)
                rss_peak = max(rss_peak, m["VmRSS"])
                samples.append((round(mono - t_start, 2), len(first_seen), m["VmRSS"]))
                next_mem = mono + 0.25
            if pub_exit_at is None and not pub.alive():
                pub_exit_at = mono
            if pub_exit_at is not None and len(first_seen) >= n:
                break
            if pub_exit_at is not None and mono - pub_exit_at > a.drain_timeout:
                break
            if not sub.alive() or mono - t_start > a.duration + a.drain_timeout + 30:
                break
        t_done = time.monotonic()
        time.sleep(0.5)
        extra = f.read()
        if extra:
            for line in extra.split(b"\n"):
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                if isinstance(doc, dict) and doc.get("run") == label and doc["seq"] in first_seen:
                    dups += 1
        f.close()
        ino.close()
        cpu1 = cpu_seconds(sub.pid) if sub.alive() else cpu0
        bcpu1 = cpu_seconds(broker.pid)
        mem = mem_kb(sub.pid) if sub.alive() else {}
    finally:
        pub_how = stop(pub) if pub is not None else None
        how = stop(sub, 15.0)
        for cid in a.purge_client_id:
            purge_session(a.port, cid)
    pubres = {}
    try:
        pubres = json.loads((rundir / "publisher.out").read_text().strip().splitlines()[-1])
    except Exception as ex:
        pubres = {"error": str(ex)}
    lat = sorted(v / 1e6 for v in first_seen.values())
    wall = t_done - t_start
    res = {
        "label": label, "name": name, "rep": rep, "n": n, "qos": a.qos, "rate": a.rate,
        "delivered": len(first_seen), "missing": n - len(first_seen), "duplicates": dups,
        "foreign_lines": foreign, "unparsable_lines": bad,
        "p50_ms": round(pct(lat, 50), 3) if lat else None,
        "p90_ms": round(pct(lat, 90), 3) if lat else None,
        "p99_ms": round(pct(lat, 99), 3) if lat else None,
        "p999_ms": round(pct(lat, 99.9), 3) if lat else None,
        "max_ms": round(lat[-1], 3) if lat else None,
        "mean_ms": round(statistics.fmean(lat), 3) if lat else None,
        "window_s": round(wall, 3),
        "sub_cpu_s": round(cpu1 - cpu0, 2),
        "sub_cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1) if wall > 0 else None,
        "msgs_per_cpu_s": round(len(first_seen) / (cpu1 - cpu0)) if cpu1 > cpu0 else None,
        "broker_cpu_pct": round(100 * (bcpu1 - bcpu0) / wall, 1) if wall > 0 else None,
        "sub_rss_peak_sampled_kb": rss_peak, "sub_vmhwm_kb": mem.get("VmHWM"),
        "publisher": pubres, "publisher_stopped": pub_how, "stopped_by": how,
        "rss_timeline": samples[:: max(1, len(samples) // 30)], "rundir": str(rundir),
    }
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--run", default="", help=argparse.SUPPRESS)
    ap.add_argument("--sub", action="append", default=[], metavar="NAME=CMD",
                    help="subscriber to measure (placeholders {port} {qos} {outfile} {rundir} "
                         "{venv}); the built-in names 'control' and 'mqttwarn' need no CMD")
    ap.add_argument("--rate", type=int, default=1000, help="messages per second")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of publishing")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--qos", type=int, default=1, help="publish and subscribe QoS")
    ap.add_argument("--port", type=int, default=18931)
    ap.add_argument("--payload-bytes", type=int, default=200)
    ap.add_argument("--drain-timeout", type=float, default=30.0,
                    help="seconds to wait for the last lines after publishing ends")
    ap.add_argument("--startup-timeout", type=float, default=30.0)
    ap.add_argument("--harness", default=str(Path(__file__).resolve().parent.parent.parent
                                              / "shared" / "bench" / "mqttwarn"),
                    help="the peer harness dir (for mosquitto.conf.in, mqttwarn.ini.in)")
    ap.add_argument("--purge-client-id", action="append", default=[], metavar="ID",
                    help="after each run, end this client id's persistent session (e.g. "
                         "lookout-bridge-bench) so it collects no backlog between runs")
    ap.add_argument("--venv", default=os.environ.get("MQTTWARN_VENV", "/tmp/mqttwarn-venv"))
    ap.add_argument("--mosquitto", default="mosquitto")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None, help="write all results here")
    a = ap.parse_args()
    if a.publisher:
        return publisher_main(a)

    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(SystemExit(128 + s)))
    harness = Path(a.harness)
    subs = []
    for spec in a.sub or ["control", "mqttwarn"]:
        name, _, cmd = spec.partition("=")
        if not cmd and name == "control":
            cmd = ("sh -c 'exec mosquitto_sub -h 127.0.0.1 -p {port} -q {qos} "
                   "-i bench-control -t alarms/# > {outfile}'")
        elif not cmd and name == "mqttwarn":
            cmd = "MQTTWARN"
        if not cmd:
            ap.error(f"--sub {spec}: give NAME=CMD")
        subs.append((name, cmd))
    if not port_free(a.port):
        print(f"port 127.0.0.1:{a.port} is in use; pick another with --port", file=sys.stderr)
        return 2
    workdir = Path(a.workdir or tempfile.mkdtemp(prefix="bridge-latency-"))
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text((harness / "mosquitto.conf.in").read_text().replace("@PORT@", str(a.port)))
    runs = []
    try:
        broker = start([a.mosquitto, "-c", str(conf)], workdir, workdir / "mosquitto.stdout")
        if not wait_port(a.port, 10):
            raise RuntimeError(f"mosquitto did not start; see {workdir}")
        for rep in range(1, a.reps + 1):
            k = (rep - 1) % len(subs)
            for name, cmd in subs[k:] + subs[:k]:
                if cmd == "MQTTWARN":
                    rd = workdir / f"{name}-r{rep}"
                    ini = workdir / f"{name}-r{rep}.ini"
                    ini.write_text((harness / "mqttwarn.ini.in").read_text()
                                   .replace("@PORT@", str(a.port)).replace("@QOS@", str(a.qos))
                                   .replace("@OUTFILE@", str(rd / "alarms.out"))
                                   .replace("@LOGFILE@", str(rd / "mqttwarn.log"))
                                   .replace("@LOGLEVEL@", "WARNING").replace("@WORKERS@", "1"))
                    cmd = f"{a.venv}/bin/mqttwarn --config-file={ini}"
                r = one_run(a, broker, name, cmd, rep, workdir)
                runs.append(r)
                print(f"{r['label']:>20}: p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  "
                      f"max {r['max_ms']} ms  delivered {r['delivered']}/{r['n']} "
                      f"dup {r['duplicates']}  cpu {r['sub_cpu_s']} s ({r['sub_cpu_pct']} %)  "
                      f"hwm {r['sub_vmhwm_kb']} KiB  pub {r['publisher']}", flush=True)
    finally:
        stop_all()
    summary = {}
    for name, _ in subs:
        rs = [r for r in runs if r["name"] == name]
        if not rs:
            continue
        med = lambda k: statistics.median(r[k] for r in rs if r[k] is not None)  # noqa: E731
        summary[name] = {
            "runs": len(rs),
            "median_p50_ms": med("p50_ms"), "median_p99_ms": med("p99_ms"),
            "runs_p99_ms": [r["p99_ms"] for r in rs],
            "median_max_ms": med("max_ms"),
            "median_sub_cpu_s": med("sub_cpu_s"), "median_msgs_per_cpu_s": med("msgs_per_cpu_s"),
            "max_vmhwm_kb": max((r["sub_vmhwm_kb"] or 0) for r in rs),
            "all_delivered_once": all(r["missing"] == 0 and r["duplicates"] == 0 for r in rs),
        }
    doc = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "args": vars(a),
           "summary": summary, "runs": runs, "workdir": str(workdir)}
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(doc, indent=2, default=str))
    print(json.dumps(summary, indent=2))
    print(f"results: {a.json}\nscratch: {workdir}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
