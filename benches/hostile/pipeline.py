"""Finding 4: a member writes ~128 KiB of `list` requests in one write and reads nothing
for a while. Reports the server's RSS growth (VmHWM - RSS before), another member's ping
round trips meanwhile, then reads every answer back and counts them.

python3 pipeline.py [HOLD_SECONDS] [extra server flags...]   (default 2 s)
The room list is made ~45 KB (13 members x 100 rooms), as in amplify.py's finding.
"""
import socket
import struct
import sys
import time

from chatlib import Member, Server, summary_lines

hold = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
server = Server(*sys.argv[2:])
hosts = []
for h in range(13):
    m = Member(server.port, f"host{h:02}")
    for i in range(100):
        m.send({"type": "join", "room": f"room-{h:02}-{i:04}"})
    for _ in range(100):
        m.next()
    hosts.append(m)
probe = Member(server.port, "probe")
probe.send({"type": "list"})
answer = len(struct.pack(">I", 0)) + len(__import__("json").dumps(probe.next(), separators=(",", ":")))
other = Member(server.port, "other")

pipe = socket.socket()
pipe.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
pipe.connect(("127.0.0.1", server.port))
request = b'{"type":"list"}'
one = struct.pack(">I", len(request)) + request
count = (128 * 1024) // len(one)
rss0 = server.rss_kib()
pipe.sendall(one * count)

rtts = []
t_end = time.perf_counter() + hold
while time.perf_counter() < t_end:
    rtt, _ = other.ping_rtt()
    rtts.append(rtt)
    time.sleep(0.005)
with open(f"/proc/{server.proc.pid}/status") as f:
    hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
rss1 = server.rss_kib()

# Now read everything back.
pipe.settimeout(10)
buf, got, t0 = b"", 0, time.perf_counter()
while got < count:
    chunk = pipe.recv(1 << 20)
    if not chunk:
        break
    buf += chunk
    while len(buf) >= 4:
        (n,) = struct.unpack(">I", buf[:4])
        if len(buf) < 4 + n:
            break
        assert b'"rooms"' in buf[4 : 4 + n]
        buf = buf[4 + n :]
        got += 1
read_for = time.perf_counter() - t0
rtts.sort()
print(f"{count} list requests ({count * len(one)} bytes) in one write; each answer {answer} bytes")
print(f"server RSS {rss0} KiB before, {rss1} KiB while held, peak (VmHWM) {hwm} KiB: "
      f"+{(hwm - rss0) / 1024:.1f} MiB")
print(f"other member: {len(rtts)} pings, p50 {rtts[len(rtts)//2]*1000:.2f} ms, "
      f"max {rtts[-1]*1000:.2f} ms")
print(f"answers read back: {got} of {count} in {read_for:.2f} s")
err = server.stop()
print("\n".join(summary_lines(err)))
print("\n".join(l for l in err.splitlines() if "write limit" in l)[:400])
