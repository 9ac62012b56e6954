#!/usr/bin/env python3
"""Misbehaving WebSocket clients for the soak (scripts/soak.sh), stdlib only.

  soak_clients.py slow  URL TOKEN ROOM SECONDS   join ROOM, then never read
  soak_clients.py flood URL TOKEN ROOM SECONDS   send joins as fast as possible, reconnecting

Loopback only; every loop is bounded by SECONDS. Prints one summary line.
"""
import base64
import json
import os
import socket
import struct
import sys
import time
from urllib.parse import urlparse


def connect(url, token):
    u = urlparse(url)
    host = u.hostname
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        sys.exit("soak_clients.py: loopback targets only")
    s = socket.create_connection((host, u.port or 80), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    req = (
        f"GET /?token={token} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    )
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
    else:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def slow(url, token, room, seconds):
    s = connect(url, token)
    s.sendall(frame(json.dumps({"type": "join", "room": room})))
    # Never read: the server must cut us off once our queue is full (or its
    # write to us stalls). Unread data stays buffered here, so watch the TCP
    # state rather than reading: CLOSE_WAIT (peer sent FIN) or CLOSE (reset).
    time.sleep(seconds)
    # The server's FIN (if it closed us) queues behind the data we never
    # read, so only draining tells: read until EOF or a quiet 5 s.
    s.settimeout(5)
    ended = False
    try:
        while True:
            if not s.recv(1 << 20):
                ended = True
                break
    except OSError:
        ended = True
    except socket.timeout:
        pass
    print(f"slow client: {'disconnected by server' if ended else 'still connected'}")


def flood(url, token, room, seconds):
    deadline = time.time() + seconds
    sent = closes = refused = 0
    msg = frame(json.dumps({"type": "join", "room": room}))
    while time.time() < deadline:
        try:
            s = connect(url, token)
        except (OSError, ConnectionError):
            refused += 1
            time.sleep(0.5)
            continue
        try:
            while time.time() < deadline:
                s.sendall(msg)
                sent += 1
                # Drain whatever came back, without blocking.
                s.setblocking(False)
                try:
                    while True:
                        data = s.recv(65536)
                        if not data:
                            raise ConnectionError("closed")
                except BlockingIOError:
                    pass
                s.setblocking(True)
        except (OSError, ConnectionError):
            closes += 1
        finally:
            s.close()
    print(f"flood client: {sent} requests sent, closed by server {closes} times, {refused} refused handshakes")


if __name__ == "__main__":
    mode, url, token, room, seconds = sys.argv[1:6]
    {"slow": slow, "flood": flood}[mode](url, token, room, float(seconds))
