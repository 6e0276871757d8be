"""Helpers for measuring a `switchboard chat` release build on loopback."""
import json
import os
import signal
import socket
import struct
import subprocess
import time

# Relative to the repository, where these are run from (benches/hostile/SCRIPT).
BINARY = os.environ.get("SWITCHBOARD", "target/release/switchboard")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, *extra):
        self.port = free_port()
        addr = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [BINARY, "chat", "--tcp", addr, "--udp", addr, "--log-level", "info", *extra],
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("server did not start")

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        return err


class Member:
    """A TCP member: length-prefixed JSON frames."""

    def __init__(self, port, name=None):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.frames_in = 0
        if name:
            self.send({"type": "hello", "name": name})
            ev = self.next()
            assert ev["type"] == "welcome", ev

    def send(self, obj):
        payload = json.dumps(obj).encode()
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def next(self, timeout=10):
        self.sock.settimeout(timeout)
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    payload, self.buf = self.buf[4 : 4 + n], self.buf[4 + n :]
                    self.frames_in += 1
                    return json.loads(payload)
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def until(self, pred, timeout=10):
        """Reads events until one satisfies pred; returns (event, events skipped)."""
        skipped = 0
        while True:
            ev = self.next(timeout)
            if pred(ev):
                return ev, skipped
            skipped += 1

    def ping_rtt(self):
        t = time.perf_counter()
        self.send({"type": "ping"})
        _, skipped = self.until(lambda e: e["type"] == "pong")
        return time.perf_counter() - t, skipped


def summary_lines(stderr):
    return [l for l in stderr.splitlines() if "served" in l or "refused" in l]
