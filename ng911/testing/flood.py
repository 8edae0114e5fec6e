"""A flooder for the limits test and bench: garbage and untrusted INVITEs over UDP from many
loopback source addresses (Linux loopback answers for all of 127/8), at a paced rate.

    python -m ng911.testing.flood 127.0.0.1:5060 --rate 10000 --duration 60 --sources 2-201 \\
        --workers 2 --report flood.json [--slowloris 40]

Each worker process binds one UDP socket per source address it owns and sends, every 10 ms,
its share of the packets due by then (a late tick catches up, bounded to one second's worth).
Half the packets are garbage (random octets, truncated or nonsense SIP), half well-formed
out-of-dialog INVITEs to ``urn:service:sos`` with a fresh Call-ID and branch. Responses are
never read (the kernel drops them). ``--slowloris N`` also opens N TCP connections from one
address that dribble a header line now and then and never finish a message. The report (JSON)
says how many datagrams went out and at what rate: the rate reached, not the rate asked for.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import socket
import time
from typing import Any

TICK = 0.01


def _payloads(target: tuple[str, int], source: str, rng: random.Random, n: int) -> list[bytes]:
    out: list[bytes] = []
    host, port = target
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out.append(rng.randbytes(rng.randint(1, 1400)))
        elif kind == 1:
            out.append(b"INVITE sip:sos@%s SIP/2.0\r\nVia: garbage\r\n\x00\x01\r\n\r\n" % host.encode())
        else:
            tag = "%x" % rng.getrandbits(64)
            out.append((
                f"INVITE urn:service:sos SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {source}:5060;branch=z9hG4bK{tag};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:flood@{source}>;tag={tag}\r\n"
                f"To: <urn:service:sos>\r\nCall-ID: {tag}@{source}\r\nCSeq: 1 INVITE\r\n"
                f"Contact: <sip:flood@{source}:5060>\r\nContent-Type: application/sdp\r\n"
                f"Content-Length: 0\r\n\r\n").encode())
    return out


def _worker(index: int, target: tuple[str, int], sources: list[str], rate: float, duration: float,
            result: Any) -> None:
    rng = random.Random(index)
    socks = []
    for src in sources:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # responses: dropped by the kernel
        s.bind((src, 0))
        s.setblocking(False)
        socks.append((s, _payloads(target, src, rng, 64)))
    sent = errors = 0
    start = time.monotonic()
    end = start + duration
    i = 0
    parent = os.getppid()
    while True:
        now = time.monotonic()
        if now >= end or os.getppid() != parent:  # done, or the flooder was stopped: stop too
            break
        due = int((now - start) * rate) - sent
        due = min(due, int(rate))  # after a stall: catch up at most one second's worth
        for _ in range(max(0, due)):
            s, payloads = socks[i % len(socks)]
            try:
                s.sendto(payloads[(i // len(socks)) % len(payloads)], target)
                sent += 1
            except (BlockingIOError, OSError):
                errors += 1
                sent += 1  # counted as due, not as delivered (see errors)
            i += 1
        time.sleep(max(0.0, TICK - (time.monotonic() - now)))
    elapsed = time.monotonic() - start
    for s, _ in socks:
        s.close()
    result.put({"worker": index, "sent": sent - errors, "errors": errors, "elapsed": elapsed})


def _slowloris(target: tuple[str, int], source: str, count: int, duration: float, result: Any) -> None:
    conns = []
    refused = 0
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((source, 0))
            s.settimeout(2.0)
            s.connect(target)
            s.sendall(b"INVITE urn:service:sos SIP/2.0\r\n")
            conns.append(s)
        except OSError:
            refused += 1
            s.close()
    closed_by_peer = 0
    end = time.monotonic() + duration
    parent = os.getppid()
    while time.monotonic() < end and conns and os.getppid() == parent:
        time.sleep(1.0)
        alive = []
        for s in conns:
            try:
                s.sendall(b"X-Slow: %d\r\n" % random.getrandbits(16))
                alive.append(s)
            except OSError:
                closed_by_peer += 1
                s.close()
        conns = alive
    for s in conns:
        s.close()
    result.put({"slowloris": count, "refused": refused, "closed_by_peer": closed_by_peer,
                "still_open": len(conns)})


def parse_sources(spec: str) -> list[str]:
    """``"2-201"``: 127.0.0.2 … 127.0.0.201 (last octet; more than 254 spill into 127.0.1.x)."""
    lo, _, hi = spec.partition("-")
    first, last = int(lo), int(hi or lo)
    return [f"127.0.{n // 256}.{n % 256}" for n in range(first, last + 1) if n % 256 not in (0, 255)]


def flood(target: tuple[str, int], *, rate: float, duration: float, sources: list[str],
          workers: int = 2, slowloris: int = 0) -> dict[str, Any]:
    """Run the flood (blocking) and return its report."""
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()
    procs = []
    for w in range(workers):
        mine = sources[w::workers]
        procs.append(ctx.Process(target=_worker, args=(w, target, mine, rate / workers, duration, result)))
    if slowloris:
        procs.append(ctx.Process(target=_slowloris, args=(target, "127.0.0.254", slowloris, duration, result)))
    started = time.monotonic()
    for p in procs:
        p.start()
    reports = [result.get(timeout=duration + 60) for _ in procs]
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
            p.join()
    elapsed = time.monotonic() - started
    sent = sum(r.get("sent", 0) for r in reports)
    return {"target": f"{target[0]}:{target[1]}", "asked_rate": rate, "duration": duration,
            "sources": len(sources), "sent": sent, "errors": sum(r.get("errors", 0) for r in reports),
            "rate": round(sent / max(duration, 1e-9)), "elapsed": round(elapsed, 2),
            "slowloris": next((r for r in reports if "slowloris" in r), None)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", help="HOST:PORT of the node's SIP UDP port")
    ap.add_argument("--rate", type=float, default=10_000.0, help="datagrams per second, all workers")
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--sources", default="2-201", help="last octets of 127.0.0.x, e.g. 2-201")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--slowloris", type=int, default=0, help="TCP connections that never finish")
    ap.add_argument("--report", help="write the JSON report here (else stdout)")
    args = ap.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    report = flood((host, int(port)), rate=args.rate, duration=args.duration,
                   sources=parse_sources(args.sources), workers=args.workers, slowloris=args.slowloris)
    text = json.dumps(report)
    if args.report:
        tmp = args.report + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.report)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
