"""Abuse of `serve`'s public HTTP endpoints, bounded in count and time, on
loopback only: a flood of forged webhooks at a fixed rate over keep-alive
connections, and bodies far over the limit, declared (Content-Length) or
chunked, sent a piece at a time until the server answers, so what is
measured is how much the server took before it refused.

Used by the e2e suite's `abuse` scenario; by hand:
  abuse.py flood 127.0.0.1:7890 --rate 1000 --seconds 10
  abuse.py big 127.0.0.1:7890 --mb 100 [--chunked]
"""

import argparse
import asyncio
import json
import select
import socket
import time

import tokens  # noqa: F401  (LIVEKIT_* env, like the other clients)
from livekit import api

FORGED = json.dumps({
    "event": "track_published",
    "room": {"name": "e2e-flood-raw"},
    "participant": {"identity": "mallory"},
    "track": {"sid": "TR_flood", "type": "VIDEO"},
    "id": "EV_flood",
}).encode()


def forged_auth():
    """A well-formed webhook token signed with the wrong secret."""
    return api.AccessToken(tokens.KEY, "not-the-secret").with_sha256("AAAA").to_jwt()


def request(host, body, auth):
    return (f"POST /webhook HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/webhook+json\r\n"
            f"Authorization: {auth}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def read_response(reader):
    """(status, body) of one HTTP/1.1 response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    n = 0
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            n = int(v.strip())
    body = await reader.readexactly(n) if n else b""
    return status, body


async def flood(addr, rate=1000.0, seconds=10.0, conns=8):
    """POSTs forged webhooks at `rate` per second for `seconds` over `conns`
    keep-alive connections; returns what came back."""
    host, port = addr.rsplit(":", 1)
    req = request(addr, FORGED, forged_auth())
    codes = {}
    lat = []
    errors = 0
    total = int(rate * seconds)
    t0 = time.monotonic()

    async def worker(w):
        nonlocal errors
        reader = writer = None
        for i in range(w, total, conns):
            due = t0 + i / rate
            d = due - time.monotonic()
            if d > 0:
                await asyncio.sleep(d)
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, int(port))
                t = time.monotonic()
                writer.write(req)
                await writer.drain()
                code, _ = await asyncio.wait_for(read_response(reader), 5)
                lat.append(time.monotonic() - t)
                codes[code] = codes.get(code, 0) + 1
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
                errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker(w) for w in range(conns)))
    wall = time.monotonic() - t0
    lat.sort()
    sent = sum(codes.values())
    return {
        "requests": total, "answered": sent, "errors": errors, "codes": codes,
        "wall_s": round(wall, 2), "rate_achieved": round(sent / wall, 1) if wall else 0,
        "latency_ms_p50": round(1000 * lat[len(lat) // 2], 2) if lat else None,
        "latency_ms_p99": round(1000 * lat[int(len(lat) * 0.99)], 2) if lat else None,
    }


def big(addr, size, chunked=False, piece=64 * 1024, timeout=10.0):
    """Sends a body of `size` bytes (declared, or chunked) a piece at a time
    and stops as soon as the server answers or closes; returns the status,
    the bytes of body sent by then and how long it took. The body is never
    built whole (zeros, one piece reused)."""
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    head = (f"POST /webhook HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/webhook+json\r\n"
            f"Authorization: {forged_auth()}\r\n")
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {size}\r\n\r\n"
    t0 = time.monotonic()
    s.sendall(head.encode())
    # A server that refuses on the declared length answers before any body.
    s.settimeout(0.3)
    try:
        early = s.recv(65536)
    except socket.timeout:
        early = b""
    except OSError:
        early = b""
    if early.startswith(b"HTTP/"):
        s.close()
        return {"declared_mb": None if chunked else round(size / 1e6, 1), "chunked": chunked,
                "status": int(early.split()[1]), "closed_before_answer": False, "body_sent_bytes": 0,
                "answered_after_s": round(time.monotonic() - t0, 3)}
    zeros = b"\0" * piece
    frame = (f"{piece:x}\r\n".encode() + zeros + b"\r\n") if chunked else zeros
    sent = 0
    got = b""
    closed = False
    s.setblocking(False)
    end = t0 + timeout
    while time.monotonic() < end:
        r, w, _ = select.select([s], [s] if sent < size else [], [], 0.05)
        if r:
            try:
                data = s.recv(65536)
            except OSError:
                closed = True
                break
            if not data:
                closed = True
                break
            got += data
            if b"\r\n\r\n" in got:
                break
        elif w:
            try:
                s.send(frame)
                sent += piece
            except BlockingIOError:
                pass
            except OSError:
                closed = True
                break
        elif sent >= size and not r:
            continue
    s.close()
    status = None
    if got.startswith(b"HTTP/"):
        status = int(got.split()[1])
    return {"declared_mb": None if chunked else round(size / 1e6, 1), "chunked": chunked,
            "status": status, "closed_before_answer": closed and status is None,
            "body_sent_bytes": sent, "answered_after_s": round(time.monotonic() - t0, 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["flood", "big"])
    ap.add_argument("addr")
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--mb", type=float, default=100)
    ap.add_argument("--chunked", action="store_true")
    a = ap.parse_args()
    if a.what == "flood":
        print(json.dumps(asyncio.run(flood(a.addr, a.rate, a.seconds))))
    else:
        print(json.dumps(big(a.addr, int(a.mb * 1e6), a.chunked)))


if __name__ == "__main__":
    main()
