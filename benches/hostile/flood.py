"""Finding 2: N new seed-style UDP peers (one datagram each, each from its own port) while
a TCP member in the lobby pings. Reports the server's CPU time, its datagrams sent, the
frames the TCP member received, and the member's ping round trips.

RATE=1000 python3 flood.py [PEERS] [extra server flags...]   (default 5000 peers, 1000/s)
"""
import os
import re
import socket
import sys
import threading
import time

from chatlib import Member, Server, summary_lines

RATE = float(os.environ.get("RATE", "1000"))
peers = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
server = Server(*sys.argv[2:])
alice = Member(server.port, "alice")
alice.send({"type": "join", "room": "lobby"})
alice.until(lambda e: e["type"] == "joined")
alice.frames_in = 0

rtts, others = [], [0]
flooding = threading.Event()
flooding.set()


def pinger():
    while flooding.is_set():
        rtt, skipped = alice.ping_rtt()
        rtts.append(rtt)
        others[0] += skipped
        time.sleep(0.005)


cpu0 = server.cpu_seconds()
t = threading.Thread(target=pinger)
t.start()
socks = []
start = time.perf_counter()
for i in range(peers):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Small receive buffers: the replies these sockets never read must not pile up in
    # the kernel (5,000 default buffers would be a gigabyte).
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind(("127.0.0.1", 0))
    s.sendto(f'{{"name": "p{i:05}", "msg": "hi from {i}"}}'.encode(), ("127.0.0.1", server.port))
    socks.append(s)
    # Paced (RATE per second, default 1,000) so that the server's receive buffer does
    # not simply overflow: every peer is meant to arrive.
    if i % 50 == 49:
        ahead = start + (i + 1) / RATE - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
sent_for = time.perf_counter() - start
# Wait until the server has been idle for half a second.
last = server.cpu_seconds()
while True:
    time.sleep(0.5)
    now = server.cpu_seconds()
    if now - last < 0.02:
        break
    last = now
flooding.clear()
t.join()
busy = time.perf_counter() - start
cpu = server.cpu_seconds() - cpu0
rtt, skipped = alice.ping_rtt()
others[0] += skipped
rtts.sort()
p = lambda q: rtts[min(len(rtts) - 1, int(q * len(rtts)))] * 1000
print(f"{peers} new seed-style peers sent in {sent_for:.2f} s; server busy {busy:.1f} s, "
      f"CPU {cpu:.2f} s")
print(f"TCP member: {others[0]} frames besides its pongs; {len(rtts)} pings, "
      f"p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, max {rtts[-1] * 1000:.1f} ms")
err = server.stop()
for line in summary_lines(err):
    print(line)
m = re.search(r"datagrams in/out (\d+)/(\d+)", err)
if m:
    print(f"datagrams in {m.group(1)}, out {m.group(2)}")
warns = [l for l in err.splitlines() if "WARN" in l]
print(f"{len(warns)} warnings logged; first: {warns[:3]}")
