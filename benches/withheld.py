#!/usr/bin/env python3
"""Withheld payloads: N connections each announce a 1 MiB frame, send KIB KiB of it (at
least 100 bytes), trickle 100 bytes twice more, and stall. Prints the server's resident memory before and at its peak, and how many of the
connections the server closed (the memory budget).

    target/release/switchboard echo --tcp 127.0.0.1:9100 --udp off &
    benches/withheld.py 9100 2000 $! 200          # KIB=200: 2,000 x 200 KiB = 390 MiB sent
    # the same with --memory-budget 0 shows the server without a budget

Needs 2 x N file descriptors in this process (ulimit -n).
"""
import socket
import struct
import sys
import time

port, n, pid, kib = (int(arg) for arg in sys.argv[1:5])


def rss_kib():
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


base = peak = rss_kib()
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    try:
        s.send(struct.pack(">I", 1 << 20) + b"x" * max(kib * 1024, 100))
    except BlockingIOError:
        pass
    socks.append(s)
    if i % 100 == 0:
        peak = max(peak, rss_kib())
# A few more bytes, each in a read of its own: a server that grows a frame's buffer to
# the announced length on the second read shows it here.
for _ in range(2):
    time.sleep(0.5)
    for s in socks:
        try:
            s.send(b"y" * 100)
        except (BlockingIOError, ConnectionResetError, BrokenPipeError):
            pass
    peak = max(peak, rss_kib())
time.sleep(1.0)
peak = max(peak, rss_kib())
reset = 0
for s in socks:
    try:
        # A reset connection says so once (on a send, or here), then reads as ended.
        if s.recv(1) == b"":
            reset += 1
    except ConnectionResetError:
        reset += 1
    except BlockingIOError:
        pass
print(f"{n} x {kib} KiB of 1 MiB frames withheld: RSS {base} KiB -> peak {peak} KiB "
      f"(+{(peak - base) / 1024:.0f} MiB); {reset} connections closed by the server")
