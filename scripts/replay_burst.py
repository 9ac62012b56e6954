#!/usr/bin/env python3
"""Issue 13 item 2, reproduced: a burst of heavy `join` + `since: 0` requests.

  JWT_SECRET=... python3 scripts/replay_burst.py URL SERVER_PID [N] [MESSAGES] [ROOM]

Fills ROOM (default "burst", created if missing) with MESSAGES (default 1000)
messages of 4,096 four-byte characters (16 KiB each), unless it already
holds that many; then opens N connections (default 250, users 5000000 + i)
and has each send `{"type":"join","room":ROOM,"since":0}` at once, reading
everything it is sent at full speed. Prints the server's RSS (VmRSS of
SERVER_PID, from /proc) before the burst, its peak during it, and after the
connections closed (at once and 5 s later), with how many replies completed
and the reply-budget gauges from /metrics.

Stdlib only; loopback only; every wait is bounded (a reader gives up after
120 s). The server must accept HS256 tokens signed with JWT_SECRET.
"""
import base64
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import threading
import time
from urllib.parse import urlparse


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(secret, user_id, username):
    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"user_id": user_id, "sub": str(user_id), "username": username,
              "iat": now, "exp": now + 3600}
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(sig)}"


def connect(url, tok):
    u = urlparse(url)
    host = u.hostname
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        sys.exit("replay_burst.py: loopback targets only")
    s = socket.create_connection((host, u.port or 80), timeout=120)
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET /?token={tok} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n")
    s.sendall(req.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            raise ConnectionError("closed during handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n")[0].decode(errors="replace"))
    return s


def frame(text):
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


class Reader:
    """Reads whole WebSocket messages (server frames are unmasked)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def message(self):
        parts = []
        while True:
            self._need(2)
            b0, b1 = self.buf[0], self.buf[1]
            n, at = b1 & 0x7F, 2
            if n == 126:
                self._need(4)
                n, at = struct.unpack("!H", self.buf[2:4])[0], 4
            elif n == 127:
                self._need(10)
                n, at = struct.unpack("!Q", self.buf[2:10])[0], 10
            self._need(at + n)
            payload = bytes(self.buf[at:at + n])
            del self.buf[:at + n]
            op = b0 & 0x0F
            if op == 0x8:
                raise ConnectionError("server closed: %r" % payload[2:])
            if op in (0x9, 0xA):
                continue
            parts.append(payload)
            if b0 & 0x80:
                return b"".join(parts)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def metrics(url):
    u = urlparse(url)
    s = socket.create_connection((u.hostname, u.port or 80), timeout=10)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    raw = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        raw += chunk
    out = {}
    for line in raw.decode(errors="replace").splitlines():
        if line.startswith("chat_reply_"):
            name, _, value = line.rpartition(" ")
            out[name] = value
    return out


def fill(url, secret, room, messages):
    s = connect(url, token(secret, 4999999, "burst-filler"))
    r = Reader(s)
    s.sendall(frame(json.dumps({"type": "create_room", "room": room})))
    r.message()  # room_created, or "already exists"
    s.sendall(frame(json.dumps({"type": "join", "room": room, "ref": "j"})))
    while json.loads(r.message()).get("ref") != "j":
        pass
    s.sendall(frame(json.dumps({"type": "rooms", "ref": "n"})))
    while True:
        v = json.loads(r.message())
        if v.get("ref") == "n":
            break
    have = 0
    if v.get("type") == "rooms":
        for e in v["data"]:
            if e["room"] == room and e["last_id"] is not None:
                have = messages  # already filled by an earlier run
    sent = acked = 0
    window = 50
    while acked < messages - have:
        while sent < messages - have and sent - acked < window:
            content = f"{sent:06}" + "\U0001F600" * 4090
            s.sendall(frame(json.dumps({"type": "message", "room": room, "content": content},
                                       ensure_ascii=False)))
            sent += 1
        if json.loads(r.message()).get("type") == "message":
            acked += 1
    s.close()


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    url, pid = sys.argv[1], int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 250
    messages = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    room = sys.argv[5] if len(sys.argv) > 5 else "burst"
    secret = os.environ.get("JWT_SECRET") or sys.exit("set JWT_SECRET")

    fill(url, secret, room, messages)
    time.sleep(1)
    before = rss_kib(pid)
    socks = [connect(url, token(secret, 5000000 + i, f"burst{i}")) for i in range(n)]
    results = [None] * n

    def run(i):
        s = socks[i]
        r = Reader(s)
        got = 0
        try:
            s.sendall(frame(json.dumps({"type": "join", "room": room, "since": 0, "ref": i})))
            deadline = time.time() + 120
            while got < messages and time.time() < deadline:
                v = r.message()
                if v.startswith(b'{"type":"message"'):
                    got += 1
                elif v.startswith(b'{"type":"error"'):
                    results[i] = ("error", json.loads(v)["data"]["message"])
                    return
            results[i] = ("ok" if got == messages else "incomplete", got)
        except (OSError, ConnectionError) as e:
            results[i] = ("failed", str(e))

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    started = time.time()
    for t in threads:
        t.start()
    peak = before
    peak_gauges = {}
    while any(t.is_alive() for t in threads) and time.time() - started < 130:
        peak = max(peak, rss_kib(pid))
        time.sleep(0.1)
    took = time.time() - started
    peak_gauges = metrics(url)
    for s in socks:
        s.close()
    time.sleep(0.5)
    after = rss_kib(pid)
    time.sleep(5)
    later = rss_kib(pid)
    kinds = {}
    for res in results:
        kind = res[0] if res else "unfinished"
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"{n} x join since 0 on {messages} messages of 16 KiB: {kinds} in {took:.1f} s")
    print(f"server RSS before {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
          f"after {after / 1024:.1f} MiB, 5 s later {later / 1024:.1f} MiB")
    for k, v in sorted(peak_gauges.items()):
        print(f"  {k} {v}")


if __name__ == "__main__":
    main()
