"""Node death → callers re-homed: kill -9 of the node owning N live calls, per lease setting.

For each (heartbeat, lease) pair: two real `ng911 serve` nodes (cluster.enabled) on a throwaway
PostgreSQL database, one SIPp answer point of capacity N (answering re-INVITEs), a SIPp caller
placing N calls to node n1 (direct: no front, the caller follows the re-INVITE's Contact).
Once all N talk, n1 is killed (kill -9; the time taken just before the signal). Figures, from
SIPp's message log (-trace_msg timestamps):

- kill → the caller's re-INVITE from the survivor, p50 / p99 / last of the N calls;
- kill → the caller's 200 to that re-INVITE (the re-INVITE answered: the caller is re-homed).

Figures go in bench/README.md, never in asserts. Loopback only; every process is stopped before
the tool returns (the test fixtures' own clean-up).

    .venv/bin/python bench/bench_takeover.py                       # 50 calls, three settings
    .venv/bin/python bench/bench_takeover.py --calls 20 --settings 0.5/2 --json /tmp/t.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.cluster.nodes import ClusterFactory, sipp_ap, sipp_caller  # noqa: E402
from tests.integration.controller.conftest import Ap, SippFactory  # noqa: E402
from tests.pg import postgres_server, postgres_url  # noqa: E402


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def run(calls: int, heartbeat: float, lease: float, server: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="ng911-takeover-") as tmp, postgres_url(server) as url:
        workdir = Path(tmp)
        sipp = SippFactory(workdir)
        cluster = ClusterFactory(workdir, url)
        try:
            ap = Ap("ap1", capacity=calls)
            ap_proc = sipp_ap(sipp, "tk_ap.xml", ap, calls=calls, timeout=180)
            n1, n2 = cluster.start(["n1", "n2"], [ap], heartbeat=heartbeat, lease=lease)
            caller = sipp_caller(sipp, "tk_caller.xml", n1.sip_port, calls=calls, hold_ms=3000, timeout=180,
                                 extra=["-l", str(calls), "-r", "20"])
            n1.wait_calls(lambda cs: len(cs) == calls and all(c["state"] == "talking" for c in cs), 60,
                          f"{calls} talking calls")
            killed = n1.kill9()
            rc = caller.wait(180)
            ap_proc.wait(60)
            reinvites = [m.at - killed for m in caller.received("INVITE")]
            answered = [m.at - killed for m in caller.sent(None, requests=False)
                        if m.status == 200 and "INVITE" in (m.header("CSeq") or "") and m.at > killed]
            return {
                "heartbeat": heartbeat, "lease": lease, "calls": calls, "caller_rc": rc,
                "rehomed": len(reinvites), "byes_to_callers": len(caller.received("BYE")),
                "reinvite_p50": _quantile(reinvites, 0.5), "reinvite_p99": _quantile(reinvites, 0.99),
                "reinvite_last": max(reinvites),
                "answered_p50": _quantile(answered, 0.5), "answered_p99": _quantile(answered, 0.99),
                "answered_last": max(answered),
            }
        finally:
            sipp.close()
            cluster.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50, help="live calls on the node killed (default 50)")
    parser.add_argument("--settings", nargs="+", default=["0.25/1", "0.5/2", "1/3"],
                        help="heartbeat/lease pairs in seconds (default: 0.25/1 0.5/2 1/3)")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    results = []
    with postgres_server() as server:
        for pair in args.settings:
            heartbeat, lease = (float(x) for x in pair.split("/"))
            results.append(run(args.calls, heartbeat, lease, server))
            r = results[-1]
            print(f"heartbeat {heartbeat:g} s, lease {lease:g} s: {r['rehomed']}/{r['calls']} re-homed, "
                  f"{r['byes_to_callers']} BYE to callers; kill → re-INVITE p50 {r['reinvite_p50']:.2f} "
                  f"p99 {r['reinvite_p99']:.2f} last {r['reinvite_last']:.2f} s; → answered p50 "
                  f"{r['answered_p50']:.2f} p99 {r['answered_p99']:.2f} last {r['answered_last']:.2f} s",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
