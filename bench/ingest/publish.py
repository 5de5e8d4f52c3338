#!/usr/bin/env python3
"""Publishes N devices' readings at R readings/s each to an MQTT broker, QoS 0, spread
evenly over each second, for S seconds: the load of a fleet of sensors reporting into one
agent's device models. Plain MQTT 3.1.1 over a socket, so the benchmark needs no client
library.

usage: publish.py PORT DEVICES SECONDS [RATE] [PREFIX]
"""
import math
import socket
import struct
import sys
import time


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def packet(kind, body):
    return bytes([kind]) + varint(len(body)) + body


def main():
    port, devices, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    rate = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    prefix = sys.argv[5] if len(sys.argv) > 5 else "lookout"
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    connect = string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + string("bench-ingest")
    s.sendall(packet(0x10, connect))
    ack = s.recv(4)
    assert ack[:1] == b"\x20" and ack[3:4] == b"\x00", ack
    s.setblocking(False)
    topics = [string(f"{prefix}/ingest/dev-{i:04d}") for i in range(devices)]
    per_second = devices * rate
    slot = 0.01  # send in 10 ms batches
    start = time.monotonic()
    last_ping, i = start, 0
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        # Paced by elapsed time, so a late wake-up sends what is owed rather than losing it.
        due = int((now - start) * per_second)
        batch = bytearray()
        while i < due:
            d = i % devices
            # A daily-looking temperature with a little noise, different per device.
            v = 20 + 5 * math.sin((now + d) / 600) + ((i * 7919) % 13) * 0.05
            body = topics[d] + f'{{"metric":"temp","value":{v:.3f}}}'.encode()
            batch += packet(0x30, body)
            i += 1
        if batch:
            s.setblocking(True)
            s.sendall(batch)
            s.setblocking(False)
        if now - last_ping > 20:
            s.setblocking(True)
            s.sendall(b"\xc0\x00")
            s.setblocking(False)
            last_ping = now
        try:
            while s.recv(4096):
                pass
        except BlockingIOError:
            pass
        next_at = start + math.ceil((time.monotonic() - start) / slot) * slot
        time.sleep(max(0.0, next_at - time.monotonic()))
    s.sendall(b"\xe0\x00")
    s.close()
    print(f"published {i} readings in {time.monotonic() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
