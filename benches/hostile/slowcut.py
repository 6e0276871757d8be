"""Finding 5: a member that reads nothing is cut off as a slow consumer; how long does it
keep receiving, and how much, after the cut-off?

python3 slowcut.py [extra server flags...]
`slow` (4 KiB receive buffer) and `fast` share a room; `fast` says 4,000-byte messages
(reading its own back) until the server logs the cut-off; then `slow` reads until EOF or
a reset, and the time and bytes are reported.
"""
import socket
import sys
import time

from chatlib import Member, Server

server = Server(*sys.argv[1:])
slow = Member(server.port)
slow.sock.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", server.port))
slow.sock, slow.buf = s, b""
slow.send({"type": "hello", "name": "slow"})
assert slow.next()["type"] == "welcome"
slow.send({"type": "join", "room": "r"})
slow.next()
fast = Member(server.port, "fast")
fast.send({"type": "join", "room": "r"})
fast.until(lambda e: e["type"] == "joined")
slow.next()  # fast joined; from now on slow reads nothing
text = "x" * 4000
said, cut = 0, False
while not cut:
    for _ in range(16):
        fast.send({"type": "say", "room": "r", "text": text})
    said += 16
    # Read fast's own copies back; the `left` of slow marks the cut-off.
    for _ in range(16):
        ev = fast.next()
        while ev["type"] != "msg":
            if ev["type"] == "left" and ev["name"] == "slow":
                cut = True
            ev = fast.next()
    assert said < 20000, "never cut off"
t0 = time.perf_counter()
drained, how = len(slow.buf), "?"
s.settimeout(120)
while True:
    try:
        chunk = s.recv(1 << 16)
    except ConnectionResetError:
        how = "ECONNRESET"
        break
    except socket.timeout:
        how = "timeout (still open)"
        break
    if not chunk:
        how = "EOF"
        break
    drained += len(chunk)
took = time.perf_counter() - t0
print(f"cut off after {said} messages of 4000 bytes; then slow received {drained} bytes "
      f"over {took:.3f} s, ended by {how}")
err = server.stop()
print("\n".join(l for l in err.splitlines() if "slow consumer" in l or "chat served" in l))
