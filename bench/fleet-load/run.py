#!/usr/bin/env python3
"""Fleet load on the centre (issue 19, item 4): a thousand simulated hosts publishing into
one mosquitto, two lookout-bridge instances in one `$share` group delivering to a local
HTTP sink, and a site-wide outage in which every host alarms within 60 s.

Phases, one after another against the same broker and bridges:

1. **normal**: `lookout-agent run --simulate HOSTS` at real speed (metrics, scores,
   status, stats of every host; its own alarms are delivered too) for --normal seconds.
2. **burst**: every host raises a firing alarm `outage` (severity 3) within --burst
   seconds, evenly spread, then resolves it within the next --burst seconds. The alarms
   are published by this script (MQTT 3.1.1 over a socket, QoS 1, retained, as the agent
   publishes them) with the publish time in the label `t_ns` (CLOCK_MONOTONIC, which the
   sink reads too), so the end-to-end latency is publish → HTTP request at the sink.
3. **failover**: the same burst again, and bridge B is killed with SIGKILL halfway
   through the firing states, then started again on its state directory after
   --restart-after seconds (5: the shipped unit's RestartSec).

For each phase: alarms published, delivered, lost, duplicated (the same (id, state) twice
at the sink), latency p50/p99/max, the pair's delivery rate, and each process's CPU
seconds and peak RSS. Writes `summary.json` and prints a table.

usage: run.py --agent BIN --bridge BIN [--hosts 1000] [--normal 60] [--burst 60] --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bridge_latency import cpu_seconds, mem_kb, start, stop, stop_all, wait_port  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# the HTTP sink: records every request's body and arrival time
# --------------------------------------------------------------------------

class Sink:
    def __init__(self):
        self.lock = threading.Lock()
        self.got: list[tuple[int, dict]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                now = time.monotonic_ns()
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = {"unparsed": body[:200].decode("utf-8", "replace")}
                with sink.lock:
                    sink.got.append((now, doc))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def snapshot(self):
        with self.lock:
            return list(self.got)


# --------------------------------------------------------------------------
# a QoS 1 publisher on a raw socket (no client library needed)
# --------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


class Publisher:
    def __init__(self, port: int, client_id: str):
        self.sock = socket.create_connection(("127.0.0.1", port))
        body = _str("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + _str(client_id)
        self.sock.sendall(b"\x10" + _varint(len(body)) + body)
        if self.sock.recv(4)[:2] != b"\x20\x02":
            raise RuntimeError("no CONNACK")
        self.next_id = 0
        self.acked = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buf = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while len(buf) >= 4 and buf[0] == 0x40:
                self.acked += 1
                buf = buf[4:]
            if buf and buf[0] != 0x40:
                return

    def publish(self, topic: str, payload: bytes):
        self.next_id = self.next_id % 65535 + 1
        body = _str(topic) + struct.pack("!H", self.next_id) + payload
        # PUBLISH, QoS 1, retained: as the agent publishes alarm states.
        self.sock.sendall(b"\x33" + _varint(len(body)) + body)

    def close(self):
        self.sock.sendall(b"\xe0\x00")
        self.sock.close()


def alarm(host: str, state: str, started_ms: int, t_ns: int) -> bytes:
    return json.dumps({
        "id": f"{host}:outage:{started_ms}", "host": host, "source": "outage",
        "state": state, "severity": 3, "ts": int(time.time() * 1000),
        "started_at": started_ms, "score": 9.5, "threshold": 1.75,
        "summary": f"outage: site-wide on {host}", "labels": {"t_ns": str(t_ns)},
    }).encode()


def burst(port: int, hosts: int, seconds: float, phase: str, on_half=None,
          started_ms: int | None = None) -> dict:
    """Every host fires within `seconds`, then resolves within the next `seconds`."""
    pub = Publisher(port, f"fleet-load-{phase}-{os.getpid()}")
    started_ms = started_ms or int(time.time() * 1000)
    sent = 0
    t0 = time.monotonic()
    for state in ("firing", "resolved"):
        for i in range(hosts):
            due = t0 + (i + (hosts if state == "resolved" else 0)) * seconds / hosts
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            if on_half and state == "firing" and i == hosts // 2:
                on_half()
            host = f"sim-{i + 1}"
            pub.publish(f"lookout/{host}/alarms/outage",
                        alarm(host, state, started_ms, time.monotonic_ns()))
            sent += 1
    deadline = time.monotonic() + 10
    while pub.acked < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    acked = pub.acked
    pub.close()
    return {"sent": sent, "acked_by_broker": acked, "started_ms": started_ms}


# --------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------

def bridge_config(work: Path, name: str, port: int, sink: int) -> Path:
    cfg = work / f"bridge-{name}.toml"
    cfg.write_text(f"""
[bridge]
state_dir = "{work}/state-{name}"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
client_id = "fleet-load-{name}"
share_group = "fleet"
topics = ["lookout/+/alarms/#"]
[delivery]
retries = 5
timeout = "10s"
dead_letter = "{work}/dead-{name}.jsonl"
[targets.sink]
type = "http"
url = "http://127.0.0.1:{sink}/alarm"
format = "json"
[[routes]]
topic = "lookout/+/alarms/#"
targets = ["sink"]
""")
    return cfg


class Meter:
    """CPU seconds and peak RSS of the named processes over a phase."""

    def __init__(self, procs: dict):
        self.procs = procs
        self.pid0 = {n: p.pid for n, p in procs.items()}
        self.cpu0 = {n: cpu_seconds(p.pid) for n, p in procs.items() if p.alive()}
        self.load0 = os.getloadavg()[0]
        self.peak = {n: 0 for n in procs}
        self.stop_flag = threading.Event()
        self.t = threading.Thread(target=self._sample, daemon=True)
        self.t.start()

    def _sample(self):
        while not self.stop_flag.wait(0.25):
            for n, p in list(self.procs.items()):
                try:
                    self.peak[n] = max(self.peak[n], mem_kb(p.pid).get("VmRSS", 0))
                except OSError:
                    pass

    def done(self) -> dict:
        self.stop_flag.set()
        self.t.join()
        out = {}
        for n, p in self.procs.items():
            # A process started again during the phase: its own CPU since it started (the
            # killed one's last seconds are not readable any more).
            since = self.cpu0.get(n, 0.0) if p.pid == self.pid0.get(n) else 0.0
            try:
                cpu = round(cpu_seconds(p.pid) - since, 2)
            except OSError:
                cpu = None
            out[n] = {"cpu_s": cpu, "peak_rss_mib": round(self.peak[n] / 1024, 1),
                      "restarted": p.pid != self.pid0.get(n)}
        out["load_average_1m"] = {"start": round(self.load0, 2),
                                  "end": round(os.getloadavg()[0], 2)}
        return out


def judge(got: list, started_ms: int, hosts: int) -> dict:
    """The burst's alarms at the sink: delivered, lost, duplicated, latency."""
    seen: dict[tuple[str, str], int] = {}
    lat_ms = []
    times = []
    for t_recv, doc in got:
        if doc.get("source") != "outage" or doc.get("started_at") != started_ms:
            continue
        key = (doc.get("id"), doc.get("state"))
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 1:
            t_ns = int(doc.get("labels", {}).get("t_ns", 0))
            lat_ms.append((t_recv - t_ns) / 1e6)
            times.append(t_recv)
    expected = 2 * hosts
    delivered = len(seen)
    lat_ms.sort()

    def q(p):
        return round(lat_ms[min(len(lat_ms) - 1, int(p * len(lat_ms)))], 1) if lat_ms else None

    span = (max(times) - min(times)) / 1e9 if len(times) > 1 else 0
    return {
        "expected": expected, "delivered": delivered, "lost": expected - delivered,
        "duplicates": sum(n - 1 for n in seen.values()),
        "latency_ms_p50": q(0.50), "latency_ms_p99": q(0.99),
        "latency_ms_max": round(lat_ms[-1], 1) if lat_ms else None,
        "delivered_per_s": round(delivered / span, 1) if span else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agent", required=True)
    ap.add_argument("--bridge", required=True)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--normal", type=float, default=60)
    ap.add_argument("--burst", type=float, default=60)
    ap.add_argument("--settle", type=float, default=20, help="seconds to wait for stragglers")
    ap.add_argument("--restart-after", type=float, default=5,
                    help="seconds between killing bridge B and starting it again")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)

    port = free_port()
    (work / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n")
    mosq = start(["mosquitto", "-c", str(work / "mosquitto.conf")], work, out / "mosquitto.log")
    if not wait_port(port, 10):
        print("mosquitto did not start", file=sys.stderr)
        return 1
    sink = Sink()
    bridges = {n: bridge_config(work, n, port, sink.port) for n in ("a", "b")}
    procs = {"mosquitto": mosq}
    for n, cfg in bridges.items():
        procs[f"bridge-{n}"] = start([a.bridge, "run", "--config", str(cfg)], work,
                                     out / f"bridge-{n}.log")
    agent = start([a.agent, "run", "--config", "configs/agent.toml",
                   "--simulate", str(a.hosts), "--set", "broker.enabled=false",
                   "--set", f"mqtt.url=mqtt://127.0.0.1:{port}",
                   "--set", f"outbox.dir={work}/outbox", "--set", f"buffer.dir={work}/buffer",
                   "--set", f"snapshots.dir={work}/models"],
                  Path.cwd(), out / "agent.log")
    procs["agent"] = agent
    time.sleep(3)
    summary: dict = {"hosts": a.hosts, "burst_s": a.burst, "phases": {}}

    m = Meter(procs)
    time.sleep(a.normal)
    summary["phases"]["normal"] = {"seconds": a.normal, "processes": m.done(),
                                   "agent_alarms_at_sink": len(sink.snapshot())}

    m = Meter(procs)
    b = burst(port, a.hosts, a.burst, "burst")
    time.sleep(a.settle)
    summary["phases"]["burst"] = {**b, **judge(sink.snapshot(), b["started_ms"], a.hosts),
                                  "processes": m.done()}

    m = Meter(procs)
    killed = {}

    # B is killed halfway through the firing states and started again `--restart-after`
    # seconds later, as systemd does (packaging/lookout-bridge.service: RestartSec=5s).
    started_b = threading.Event()
    states: dict = {}

    def restart_b():
        states["before_b_restarted"] = judge(sink.snapshot(), states["started_ms"], a.hosts)
        procs["bridge-b"] = start([a.bridge, "run", "--config", str(bridges["b"])], work,
                                  out / "bridge-b-restarted.log")
        started_b.set()

    def kill_b():
        procs["bridge-b"].p.kill()
        threading.Timer(a.restart_after, restart_b).start()

    states["started_ms"] = int(time.time() * 1000)
    b = burst(port, a.hosts, a.burst, "failover", on_half=kill_b, started_ms=states["started_ms"])
    started_b.wait(60)
    time.sleep(a.settle)
    after = judge(sink.snapshot(), b["started_ms"], a.hosts)
    summary["phases"]["failover"] = {**b, "restart_after_s": a.restart_after,
                                     "before_b_restarted": states.get("before_b_restarted"),
                                     "at_end": after, "processes": m.done()}
    # Every (id, state) of the whole run, once: the agent's own alarms included.
    keys: dict = {}
    for _, doc in sink.snapshot():
        k = (doc.get("id"), doc.get("state"), doc.get("severity"))
        keys[k] = keys.get(k, 0) + 1
    summary["all_alarms_at_sink"] = {"distinct": len(keys),
                                     "duplicates": sum(n - 1 for n in keys.values())}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
