"""Throughput and latency of the ng911 SIP stack as a UAS, driven by SIPp's built-in `uac`.

For each call rate, `ng911 ua answer` runs as its own process and SIPp places calls at that
rate for longer than 64*T1 (so transactions live out their full 32 s and the garbage they
leave is part of the measurement). SIPp records each INVITE→200 response time (ms resolution);
we report failed calls, p50/p99/max response time, and the UAS process CPU time.

    .venv/bin/python bench/bench_ua_sipp.py --rates 100 200 400 --seconds 40

Figures are for reports (bench/README.md), never for asserts. Loopback only.
"""
from __future__ import annotations

import argparse
import csv
import glob
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NG911 = ROOT / ".venv" / "bin" / "ng911"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_rate(rate: int, seconds: float, extra: list[str]) -> dict[str, float]:
    port = free_port()
    uas = subprocess.Popen(
        [str(NG911), "ua", "--quiet", "--listen", f"127.0.0.1:{port}", *extra, "answer"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert uas.stdout is not None
        uas.stdout.readline()  # the "listening" line
        calls = int(rate * seconds)
        with tempfile.TemporaryDirectory() as work:
            cmd = [
                "sipp", "-sn", "uac", f"127.0.0.1:{port}", "-i", "127.0.0.1", "-p", str(free_port()),
                "-r", str(rate), "-m", str(calls), "-nostdin", "-timeout", str(int(seconds * 2 + 30)),
                "-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "5", "-l", str(max(rate * 40, 100)),
            ]
            cpu0, t0 = cpu_seconds(uas.pid), time.monotonic()
            subprocess.run(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=seconds * 2 + 60, check=False)
            cpu1, t1 = cpu_seconds(uas.pid), time.monotonic()
            rtts: list[float] = []
            for path in glob.glob(os.path.join(work, "*_rtt.csv")):
                with open(path) as fh:
                    rtts += [float(r["response_time_ms"]) for r in csv.DictReader(fh, delimiter=";")]
            ok = failed = 0
            for path in glob.glob(os.path.join(work, "*_[0-9]*_.csv")):
                with open(path) as fh:
                    rows = list(csv.DictReader(fh, delimiter=";"))
                if rows:
                    ok = int(rows[-1]["SuccessfulCall(C)"])
                    failed = int(rows[-1]["FailedCall(C)"])
        return {
            "rate": rate, "calls": calls, "ok": ok, "failed": failed,
            "p50_ms": percentile(rtts, 0.50), "p99_ms": percentile(rtts, 0.99), "max_ms": max(rtts, default=float("nan")),
            "cpu_pct": 100.0 * (cpu1 - cpu0) / (t1 - t0),
        }
    finally:
        uas.send_signal(signal.SIGTERM)
        try:
            uas.wait(timeout=5)
        except subprocess.TimeoutExpired:
            uas.kill()
            uas.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=int, nargs="+", default=[100, 200, 400])
    ap.add_argument("--seconds", type=float, default=40.0, help="per rate; > 64*T1 = 32 s (default 40)")
    args = ap.parse_args()
    print(f"{'rate':>6} {'calls':>7} {'ok':>7} {'failed':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'UAS CPU':>8}")
    for rate in args.rates:
        r = run_rate(rate, args.seconds, [])
        print(f"{r['rate']:>6} {r['calls']:>7} {r['ok']:>7} {r['failed']:>7} {r['p50_ms']:>7.0f} "
              f"{r['p99_ms']:>7.0f} {r['max_ms']:>7.0f} {r['cpu_pct']:>7.0f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
