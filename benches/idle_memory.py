#!/usr/bin/env python3
"""Memory per idle connection: RSS of `switchboard echo` before and after N idle
connections (each echoes one frame first, then stays idle).

usage: python3 benches/idle_memory.py [BINARY] [N]
  BINARY defaults to target/release/switchboard, N to 10000.
Client sockets are spread over 127.0.0.2-5 as source addresses, so N may exceed the
~28,000 ephemeral ports of one address; this process holds N descriptors.
"""
import socket
import struct
import subprocess
import sys
import time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/switchboard"
count = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
port = 9100


def rss_kib(pid):
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return int(fields["VmRSS"].split()[0])


server = subprocess.Popen([binary, "echo", "--tcp", f"127.0.0.1:{port}", "--udp", "off",
                           "--log-level", "warn"])
try:
    for _ in range(50):
        try:
            warm = socket.create_connection(("127.0.0.1", port))
            break
        except OSError:
            time.sleep(0.1)
    frame = struct.pack(">I", 2) + b"hi"
    warm.sendall(frame)
    assert warm.recv(16) == frame
    before = rss_kib(server.pid)
    clients = []
    for i in range(count):
        s = socket.socket()
        s.bind((f"127.0.0.{2 + i % 4}", 0))
        s.connect(("127.0.0.1", port))
        clients.append(s)
    for s in clients:
        s.sendall(frame)
    for s in clients:
        assert s.recv(16) == frame
    time.sleep(0.5)
    after = rss_kib(server.pid)
    print(f"RSS before {before} KiB; with {count} idle connections {after} KiB; "
          f"+{after - before} KiB = {(after - before) * 1024 / count:.0f} bytes per connection")
finally:
    server.terminate()
    server.wait()
