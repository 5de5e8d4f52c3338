#!/usr/bin/env python3
"""Soak (issue 19, item 5): agent + bridge + mosquitto for a long time under faults, with
RSS and open file descriptors recorded over time and every alarm state accounted for.

- mosquitto (persistence on, so sessions and retained states survive) is restarted every
  --broker-every seconds (600);
- `lookout-agent run --simulate HOSTS --speed SPEED` (50 hosts at 60x by default, with
  anomalies injected) publishes into it;
- one `lookout-bridge` delivers every alarm state to a local HTTP sink that fails
  --fail-rate (10 %) of requests with 503, so the bridge retries (5 retries: a state is
  dead-lettered only after 6 failures in a row, one in a million);
- every --sample-every seconds (10) the RSS and fd count of each process go to
  `samples.csv`.

At the end the agent is stopped (SIGTERM, so its outbox drains), the bridge is given
--drain seconds, and every alarm state the agent logged (`alarm firing` / `alarm
resolved`: host, alarm, state, severity, started_at) is looked for at the sink as
(id, state, severity). Lost = logged but not delivered and not dead-lettered. Writes
`summary.json`, `samples.csv` and `rss.svg` (RSS over time per process) to --out, and
exits 1 if a state was lost, a process died, or a count is off.

usage: run.py --agent BIN --bridge BIN --duration SECONDS --out DIR [--hosts 50] [--speed 60]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bridge_latency import mem_kb, start, stop, stop_all, wait_port  # noqa: E402

ALARM_LINE = re.compile(
    r'alarm (firing|resolved) host=(\S+) alarm=(\S+) .*?severity=(\d+) .*?started_at=(\d+)')


class FlakySink:
    """Accepts alarm JSON; fails `fail_rate` of requests with 503."""

    def __init__(self, fail_rate: float, seed: int = 7):
        self.lock = threading.Lock()
        self.keys: dict[tuple, int] = {}
        self.requests = 0
        self.failed = 0
        rng = random.Random(seed)
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink.lock:
                    sink.requests += 1
                    fail = rng.random() < fail_rate
                    if fail:
                        sink.failed += 1
                    else:
                        try:
                            d = json.loads(body)
                            k = (d.get("id"), d.get("state"), d.get("severity"))
                            sink.keys[k] = sink.keys.get(k, 0) + 1
                        except ValueError:
                            pass
                self.send_response(503 if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def svg(samples: list[dict], names: list[str], path: Path):
    """RSS over time, one line per process, no plotting library needed."""
    w, h, pad = 720, 320, 50
    t_max = max(s["t"] for s in samples) or 1
    r_max = max(max(s[f"{n}_rss_mib"] for s in samples) for n in names) * 1.1 or 1
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="monospace" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{pad}" y1="{h - pad}" x2="{w - 10}" y2="{h - pad}" stroke="black"/>',
           f'<line x1="{pad}" y1="10" x2="{pad}" y2="{h - pad}" stroke="black"/>',
           f'<text x="{pad}" y="{h - pad + 15}">0</text>',
           f'<text x="{w - 80}" y="{h - pad + 15}">{t_max / 3600:.2f} h</text>',
           f'<text x="5" y="15">{r_max:.0f} MiB</text>',
           f'<text x="5" y="{h - pad}">0</text>']
    for i, n in enumerate(names):
        pts = " ".join(
            f'{pad + s["t"] / t_max * (w - pad - 10):.1f},'
            f'{h - pad - s[f"{n}_rss_mib"] / r_max * (h - pad - 10):.1f}'
            for s in samples if s[f"{n}_rss_mib"] > 0)
        c = colours[i % len(colours)]
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{pts}"/>')
        out.append(f'<text x="{pad + 10 + 150 * i}" y="{h - 12}" fill="{c}">{n} RSS</text>')
    out.append("</svg>")
    path.write_text("\n".join(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agent", required=True)
    ap.add_argument("--bridge", required=True)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--speed", type=float, default=60)
    ap.add_argument("--broker-every", type=float, default=600)
    ap.add_argument("--fail-rate", type=float, default=0.10)
    ap.add_argument("--sample-every", type=float, default=10)
    ap.add_argument("--drain", type=float, default=60)
    a = ap.parse_args()
    out = Path(a.out)
    work = out / "work"
    # A run starts from nothing: models, outbox and buffer left by an earlier run would
    # resolve alarms whose firing this run never logged, and count them lost.
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)

    port = free_port()
    # Started as root, mosquitto drops to its own user: the store must be writable by it,
    # or it keeps no session across a restart and this run measures a broker that forgets.
    store = work / "mosquitto-db"
    store.mkdir(exist_ok=True)
    for d in (out, work):
        d.chmod(0o755)
    store.chmod(0o777)
    # It must also get there: a parent made by `mktemp -d` is 0700. Ours get o+x.
    for d in out.resolve().parents:
        st = d.stat()
        if st.st_uid == os.getuid() and not st.st_mode & 0o001 and d != Path("/"):
            d.chmod(st.st_mode | 0o011)
    (work / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {store}/\nautosave_interval 5\nmax_queued_messages 100000\n")

    def broker():
        p = start(["mosquitto", "-c", str(work / "mosquitto.conf")], work, out / "mosquitto.log")
        if not wait_port(port, 10):
            raise RuntimeError("mosquitto did not start")
        return p

    mosq = broker()
    sink = FlakySink(a.fail_rate)
    cfg = work / "bridge.toml"
    cfg.write_text(f"""
[bridge]
state_dir = "{work}/bridge-state"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
client_id = "soak-bridge"
topics = ["lookout/+/alarms/#"]
[delivery]
retries = 5
backoff_min = "200ms"
backoff_max = "5s"
timeout = "5s"
dead_letter = "{work}/dead-letter.jsonl"
[targets.sink]
type = "http"
url = "http://127.0.0.1:{sink.port}/alarm"
format = "json"
[[routes]]
topic = "lookout/+/alarms/#"
targets = ["sink"]
""")
    bridge = start([a.bridge, "run", "--config", str(cfg)], work, out / "bridge.log")
    agent = start([a.agent, "run", "--config", "configs/agent.toml",
                   "--simulate", str(a.hosts), "--speed", str(a.speed),
                   "--set", "broker.enabled=false", "--set", f"mqtt.url=mqtt://127.0.0.1:{port}",
                   "--set", f"outbox.dir={work}/outbox", "--set", f"buffer.dir={work}/buffer",
                   "--set", f"snapshots.dir={work}/models"],
                  Path.cwd(), out / "agent.log")
    procs = {"agent": agent, "bridge": bridge, "mosquitto": mosq}
    samples = []
    t0 = time.monotonic()
    next_restart = t0 + a.broker_every
    restarts = 0
    died = []
    with open(out / "samples.csv", "w") as csv:
        names = list(procs)
        csv.write("t," + ",".join(f"{n}_rss_mib,{n}_fds" for n in names) + "\n")
        while time.monotonic() - t0 < a.duration:
            time.sleep(min(a.sample_every, max(0.0, a.duration - (time.monotonic() - t0))))
            if time.monotonic() >= next_restart:
                stop(procs["mosquitto"], 10)
                procs["mosquitto"] = broker()
                restarts += 1
                next_restart += a.broker_every
            row = {"t": round(time.monotonic() - t0, 1)}
            for n in names:
                p = procs[n]
                if not p.alive() and n not in died:
                    died.append(n)
                rss = mem_kb(p.pid).get("VmRSS", 0) if p.alive() else 0
                row[f"{n}_rss_mib"] = round(rss / 1024, 1)
                row[f"{n}_fds"] = fds(p.pid) if p.alive() else -1
            samples.append(row)
            csv.write(",".join(str(row[k]) for k in row) + "\n")
            csv.flush()
    # The agent stops first: SIGTERM drains its outbox; then the bridge gets --drain.
    agent_exit = stop(agent, 30)
    deadline = time.monotonic() + a.drain
    logged = set()
    for line in open(out / "agent.log", errors="replace"):
        m = ALARM_LINE.search(line)
        if m:
            state, host, name, sev, started = m.groups()
            logged.add((f"{host}:{name}:{started}", state, int(sev)))
    dead = set()
    while time.monotonic() < deadline:
        with sink.lock:
            got = set(sink.keys)
        if logged <= got:
            break
        time.sleep(1)
    dl = work / "dead-letter.jsonl"
    if dl.exists():
        for line in dl.read_text().splitlines():
            try:
                d = json.loads(line)
                f = d.get("fields", d)
                dead.add((f.get("id"), f.get("state"), f.get("severity")))
            except ValueError:
                pass
    with sink.lock:
        got = dict(sink.keys)
        requests, failed = sink.requests, sink.failed
    lost = sorted(logged - set(got) - dead)
    save_errors = sum(line.count("Error saving") for line in open(out / "mosquitto.log",
                                                                   errors="replace"))
    first, last = samples[0], samples[-1]
    summary = {
        "duration_s": a.duration, "hosts": a.hosts, "speed": a.speed,
        "broker_restarts": restarts, "broker_save_errors": save_errors, "sink_requests": requests, "sink_failed_on_purpose": failed,
        "states_logged_by_agent": len(logged), "delivered": len(logged & set(got)),
        "dead_lettered": len(logged & dead), "lost": len(lost), "lost_examples": lost[:5],
        "duplicates_at_sink": sum(n - 1 for n in got.values()),
        "processes_died": died, "agent_stop": agent_exit,
        "rss_mib_first_last_max": {
            n: [first[f"{n}_rss_mib"], last[f"{n}_rss_mib"],
                max(s[f"{n}_rss_mib"] for s in samples)] for n in ("agent", "bridge")},
        "fds_first_last_max": {
            n: [first[f"{n}_fds"], last[f"{n}_fds"], max(s[f"{n}_fds"] for s in samples)]
            for n in ("agent", "bridge")},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    svg(samples, ["agent", "bridge"], out / "rss.svg")
    print(json.dumps(summary, indent=2))
    ok = not lost and not died and not save_errors and summary["states_logged_by_agent"] > 0
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
