"""Emergency calls through a flood from strangers (issue 9): the figures of tests/.../test_flood.py.

A node (`ng911 serve`, PostgreSQL in a throwaway database, upstream trusted = 127.0.0.1/32 only)
with SIPp answer points; SIPp places emergency calls from 127.0.0.1 at --call-rate for --before
seconds (calm), then again while the flood runs: `ng911.testing.flood` sends --rate garbage and
untrusted INVITE datagrams per second for --seconds from 127.0.0.2-201 (--workers processes),
with --slowloris TCP connections that never finish a message, and a SIPp UAC from 127.0.0.253
sends untrusted INVITEs at --stranger-rate (no retransmissions). Reported: the flood rate
reached (datagrams actually sent), calls served and failed before and during, INVITE→200 p50/p99
(SIPp -trace_rtt, 1 ms resolution), the node's RSS every --rss-every seconds (before, during,
after), its CPU share during the flood, and `ng911_sip_shed_total` by reason.

    .venv/bin/python bench/bench_flood.py                   # 10,000/s for 60 s, 5 calls/s
    .venv/bin/python bench/bench_flood.py --rate 20000 --workers 3 --seconds 30

Figures are for reports (bench/README.md), never for asserts. Loopback only. Every process
started here is stopped before the tool returns.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_controller as bc  # noqa: E402  (helpers: ports, SIPp, PostgreSQL, /proc)

HOST = bc.HOST


def shed(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    with urllib.request.urlopen(url, timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("ng911_sip_shed_total{"):
                reason = line.split('reason="', 1)[1].split('"', 1)[0]
                out[reason] = float(line.rpartition(" ")[2])
            elif line.startswith(("ng911_sip_transactions ", "ng911_sip_dialogs ", "ng911_sip_connections ",
                                  "ng911_sip_tracked_sources ")):
                name, _, value = line.partition(" ")
                out[name] = float(value)
    return out


def calls(port: int, rate: int, seconds: float, work: Path) -> subprocess.Popen[Any]:
    work.mkdir(parents=True, exist_ok=True)
    cmd, _ = bc.sipp_caller(port, rate, seconds, work, recv_timeout=30.0, hold_ms=500)
    return subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=open(work / "sipp.err", "w"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=10_000, help="flood datagrams/s (raw sockets)")
    ap.add_argument("--seconds", type=float, default=60.0, help="flood duration")
    ap.add_argument("--workers", type=int, default=2, help="flooder processes")
    ap.add_argument("--sources", default="2-201", help="flood source addresses: 127.0.0.<a-b>")
    ap.add_argument("--slowloris", type=int, default=40)
    ap.add_argument("--stranger-rate", type=int, default=300, help="SIPp untrusted INVITEs/s")
    ap.add_argument("--call-rate", type=int, default=5, help="emergency calls/s (0: none, the flood alone)")
    ap.add_argument("--before", type=float, default=20.0, help="seconds of calls before the flood")
    ap.add_argument("--aps", type=int, default=2)
    ap.add_argument("--capacity", type=int, default=50)
    ap.add_argument("--rss-every", type=float, default=5.0)
    ap.add_argument("--ng911", default=str(bc.NG911))
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--settle", type=float, default=1.0)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ng911-flood-"))
    with bc.throwaway_database() as db_url:
        node = bc.Ng911(args, work, db_url)
        # trust 127.0.0.1 only: every other loopback address is a stranger
        original = bc.CONFIG
        bc.CONFIG = original.replace('trusted = ["127.0.0.0/8"]', 'trusted = ["127.0.0.1/32"]')
        procs: list[subprocess.Popen[Any]] = []
        try:
            port = node.start()
            bc.CONFIG = original
            pid, url = node.pid, node.metrics_url
            curve: list[tuple[float, float]] = []
            t0 = time.monotonic()
            done = threading.Event()

            def sample() -> None:
                while not done.wait(args.rss_every):
                    curve.append((round(time.monotonic() - t0), round(bc.rss_mb(pid), 1)))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            curve.append((0, round(bc.rss_mb(pid), 1)))

            if args.call_rate:
                calm = calls(port, args.call_rate, args.before, work / "before")
                procs.append(calm)
                calm.wait(timeout=args.before * 2 + 60)
            else:  # --call-rate 0: the flood alone (what strangers cost, without calls' own memory)
                time.sleep(args.before)
            rss_before = bc.rss_mb(pid)

            cpu0 = bc.cpu_seconds(pid)
            flood_start = time.monotonic()
            report = work / "flood.json"
            flooder = subprocess.Popen(
                [sys.executable, "-m", "ng911.testing.flood", f"{HOST}:{port}", "--rate", str(args.rate),
                 "--duration", str(args.seconds), "--sources", args.sources, "--workers", str(args.workers),
                 "--slowloris", str(args.slowloris), "--report", str(report)],
                cwd=bc.ROOT, stdout=subprocess.DEVNULL, stderr=open(work / "flood.err", "w"))
            procs.append(flooder)
            (work / "stranger").mkdir()
            stranger = subprocess.Popen(
                ["sipp", "-sn", "uac", f"{HOST}:{port}", "-s", "sos", "-i", "127.0.0.253", "-p", str(bc.free_port()),
                 "-cp", str(bc.free_port()), "-mp", str(bc.free_port_block()), "-r", str(args.stranger_rate),
                 "-m", str(int(args.stranger_rate * args.seconds)), "-nr", "-recv_timeout", "1000",
                 "-timeout", str(int(args.seconds)), "-nostdin"],
                cwd=work / "stranger", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(stranger)
            time.sleep(3.0)
            if args.call_rate:
                loaded = calls(port, args.call_rate, args.seconds - 6, work / "during")
                procs.append(loaded)
                loaded.wait(timeout=args.seconds * 2 + 60)
            flooder.wait(timeout=args.seconds + 60)
            cpu = (bc.cpu_seconds(pid) - cpu0) / (time.monotonic() - flood_start)
            bc.stop(stranger)
            time.sleep(10.0)  # calm again
            rss_after = bc.rss_mb(pid)
            done.set()
            sampler.join(timeout=5)
            alive = node.node is not None and node.node.poll() is None
            result = {
                "flood": json.loads(report.read_text()) if report.exists() else None,
                "node_alive": alive,
                "node_cpu_share_during": round(cpu, 2),
                "before": bc.sipp_results(work / "before"),
                "during": bc.sipp_results(work / "during"),
                "rss_mb": {"before": round(rss_before, 1), "after": round(rss_after, 1),
                           "max": max(v for _, v in curve), "curve": curve},
                "shed": shed(url) if alive else None,
            }
        finally:
            bc.CONFIG = original
            for p in procs:
                bc.stop(p)
            node.stop()
    print(json.dumps(result, indent=1, default=str))
    f = result["flood"] or {}
    print(f"\nflood: {f.get('rate')}/s reached ({f.get('sent')} datagrams in {args.seconds:g} s); "
          f"node alive: {result['node_alive']}, CPU {result['node_cpu_share_during']:.0%} of a core")
    for phase in ("before", "during"):
        r = result[phase]
        if not r["attempted"]:
            continue
        print(f"{phase:>6}: {r['ok']}/{r['attempted']} calls served, {r['failed']} failed, "
              f"setup p50 {r['p50_ms']:.0f} ms p99 {r['p99_ms']:.0f} ms max {r['max_ms']:.0f} ms")
    rss = result["rss_mb"]
    print(f"   RSS: before {rss['before']} MB, max {rss['max']} MB, after {rss['after']} MB")
    print(f"work files in {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
