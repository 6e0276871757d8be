"""Finding 1 and 3: what a non-member gets back for `list` and for garbage, and how many
rooms one member can hold.

python3 amplify.py [ROOMS_TO_TRY]   (default 1297)
"""
import socket
import sys

from chatlib import Member, Server, summary_lines

rooms_to_try = int(sys.argv[1]) if len(sys.argv) > 1 else 1297
server = Server()
m = Member(server.port, "m000")
joined = refused = 0
first_refusal = None
# Pipelined in chunks, then the answers read back.
CHUNK = 100
for start in range(0, rooms_to_try, CHUNK):
    n = min(CHUNK, rooms_to_try - start)
    for i in range(start, start + n):
        m.send({"type": "join", "room": f"room-{i:04}"})
    for _ in range(n):
        ev = m.next()
        if ev["type"] == "joined":
            joined += 1
        else:
            refused += 1
            first_refusal = first_refusal or ev
print(f"rooms joined by one member: {joined} of {rooms_to_try} tried; refused {refused}; "
      f"first refusal: {first_refusal}")

stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
stranger.settimeout(1.0)
for request in [b'{"type":"list"}', b"x", b'{"type":"join","room":"r"}', b"not json at all!"]:
    stranger.sendto(request, ("127.0.0.1", server.port))
    try:
        reply, _ = stranger.recvfrom(1 << 17)
    except socket.timeout:
        reply = b""
    print(f"non-member {request[:20]!r:24} {len(request):3} bytes -> {len(reply):6} bytes back "
          f"({len(reply) / len(request):.1f}x) {reply[:60]!r}")
err = server.stop()
print("\n".join(summary_lines(err)))
