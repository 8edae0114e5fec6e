"""Soak: one node, PostgreSQL, held emergency calls at a steady rate for an hour; RSS and setup
p99 over time, as a CSV and a PNG plot.

A real `ng911 serve` (PostgreSQL store, a throwaway database) with three SIPp answer points
(capacity --capacity each; they answer the node's session refreshes, re-INVITEs, as well) and a
SIPp caller placing emergency calls to `sip:sos@127.0.0.1:PORT` at --rate calls/s for
--duration s, each held --hold s (so about rate × hold calls are up at once). The caller asks
for a one-hour session timer and refreshes itself (so the node sends it none); the answer points
accept the node's 90 s one, so the node refreshes each PSAP leg every 45 s (a re-INVITE), and
probes it with in-dialog OPTIONS every 2 s, as deploy/examples/single-node.toml does.

Every --interval s: the node's RSS (VmRSS), CPU share and open fds, its active calls, calls
ended by outcome and store queue depth (/metrics), the caller's successful and failed calls
(SIPp's stats), and the setup time of the calls placed in that interval (INVITE → 200 at the
caller, SIPp's -trace_rtt, 1 ms resolution): p50, p99, max. Written under bench/results/ as
soak-<date>.csv and soak-<date>.png (RSS on top, setup p50/p99 below, active calls at the
bottom), rewritten every minute, so a run cut short still leaves its curve. The summary: RSS at
start, after --warmup and at the end of the load, its slope after the warm-up (least squares,
MB/hour), setup p99 per quarter of the load, calls ok / failed.

    .venv/bin/pip install -e '.[test,bench]'     # matplotlib: the plot only
    .venv/bin/python bench/bench_soak.py                                     # 1 h, 2 calls/s, 60 s
    .venv/bin/python bench/bench_soak.py --duration 180 --warmup 90          # a quick check

Figures go in bench/README.md, never in asserts. Loopback only. Every process started here is
stopped before the tool returns, also on Ctrl-C or SIGTERM; the run's logs stay in --workdir.
"""
from __future__ import annotations

import argparse
import csv
import glob
import math
import os
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.conftest import wait_until  # noqa: E402
from tests.integration.controller.conftest import (  # noqa: E402
    Ap, Node, NodeFactory, SippFactory, scenario_variant,
)
from tests.pg import postgres_server, postgres_url  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
COLUMNS = ["t_s", "rss_mb", "cpu_pct", "fds", "active_calls", "answered", "not_answered", "store_queue",
           "caller_ok", "caller_failed", "setups", "setup_p50_ms", "setup_p99_ms", "setup_max_ms"]


def percentile(values: list[float], q: float) -> float:
    """Nearest rank; nan when empty."""
    if not values:
        return math.nan
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def proc_sample(pid: int) -> tuple[float, float, int]:
    """(RSS MB, CPU seconds, open fds) of a live process."""
    rss = next(int(line.split()[1]) / 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / CLK, len(os.listdir(f"/proc/{pid}/fd"))


def setup_times(caller: Any) -> list[tuple[float, float]]:
    """(epoch s, INVITE → 200 ms) of every call so far, from SIPp's -trace_rtt file: its times
    are ms since SIPp's start (StartTime in its stats). Written in stdio blocks: the newest
    calls show up late, hence the binning by their own time."""
    start = caller.stats().get("StartTime", "")
    if not start:
        return []
    base = float(start.split("\t")[-1])
    out = []
    for path in glob.glob(str(caller.workdir / "*_rtt.csv")):
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh, delimiter=";"):
                try:
                    out.append((base + float(row["Date_ms"]) / 1000, float(row["response_time_ms"])))
                except (KeyError, TypeError, ValueError):
                    pass  # a row half written
    return out


def slope_mb_per_hour(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return math.nan
    n = len(points)
    mt, mr = sum(t for t, _ in points) / n, sum(r for _, r in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return 3600 * sum((t - mt) * (r - mr) for t, r in points) / var if var else math.nan


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path, db_url: str) -> None:
        self.args, self.work = args, work
        self.sipp = SippFactory(work)
        self.nodes = NodeFactory(work, db_url)
        self.rows: list[dict[str, Any]] = []
        self.t0 = 0.0  # epoch s of the first call

    def start(self) -> None:
        a = self.args
        runtime = a.duration + a.hold + 600  # SIPp's -timeout: a stuck SIPp still ends
        self.aps = [Ap(f"ap{i}", capacity=a.capacity, ring_timeout=20.0, no_provisional_timeout=2.0)
                    for i in (1, 2, 3)]
        quiet = ["-message_file", "/dev/null"]  # an hour of every message: gigabytes, unread here
        # The cluster tests' answer point, which answers re-INVITEs too, its 200 accepting the
        # node's session timer: the node then refreshes each PSAP leg every 45 s (re-INVITE).
        ap_scenario = self.work / "soak_ap.xml"
        text = (ROOT / "tests/integration/cluster/scenarios/tk_ap.xml").read_text("iso-8859-1")
        answer = "Contact: <sip:[apname]@[local_ip]:[local_port];transport=[transport]>\n      Content-Type"
        assert text.count(answer) == 2  # the 200 to the INVITE, then the 200 to a re-INVITE
        ap_scenario.write_text(text.replace(answer, answer.replace(
            "\n", "\n      Require: timer\n      Session-Expires: 90;refresher=uac\n", 1), 1), "iso-8859-1")
        for ap in self.aps:
            # it stops itself after `calls` calls, so: more than we will place
            self.sipp.ap(ap_scenario, ap, calls=10**9, timeout=runtime, extra=quiet)
        config, sip_port, metrics_port = self.nodes.write_config(self.aps, name="soak")
        text = config.read_text()
        for test_value, deployed in [("options_interval = 0.5", "options_interval = 1.0"),
                                     ("options_timeout = 0.5", "options_timeout = 1.0"),
                                     ("in_dialog_options_interval = 1.0", "in_dialog_options_interval = 2.0"),
                                     ("hunt_backoff_max = 2.0", "hunt_backoff_max = 5.0")]:
            assert test_value in text, test_value
            text = text.replace(test_value, deployed)  # single-node.toml's probe timers
        config.write_text(text)
        self.nodes.migrate(config, self.nodes.db_url)
        self.node = Node(self.work, config, self.nodes.db_url, sip_port, metrics_port)
        self.nodes.nodes.append(self.node)
        self.node.wait_serving()
        wait_until(lambda: self.node.metric("ng911_answer_point_up") == len(self.aps), 20,
                   "every answer point up")
        time.sleep(2)  # start-up garbage settled: the first RSS sample is the idle node
        self.rows.append(self.sample(time.time(), prev_cpu=None))
        scenario = scenario_variant(self.work, "caller_basic.xml", {
            "Resource-Priority: esnet.1\n":
                "Resource-Priority: esnet.1\n      Supported: timer\n      Session-Expires: 3600;refresher=uac\n"})
        calls = int(a.rate * a.duration)
        self.t0 = time.time()
        self.caller = self.sipp.caller(scenario, self.node, calls=calls, rate=a.rate, hold_ms=int(a.hold * 1000),
                                       limit=int(a.rate * a.hold * 2 + 50), timeout=runtime,
                                       extra=quiet + ["-trace_rtt", "-rtt_freq", "1"])

    def sample(self, now: float, prev_cpu: tuple[float, float] | None) -> dict[str, Any]:
        rss, cpu, fds = proc_sample(self.node.proc.pid)
        try:
            m = self.node.metrics()
        except OSError:  # a node too busy to answer in 5 s: a gap in those columns, not the end
            m = {}

        def metric(name: str, **labels: str) -> float:
            want = set(labels.items())
            return sum(v for (n, ls), v in m.items() if n == name and want <= set(ls))

        answered = metric("ng911_calls_total", outcome="answered")
        stats = self.caller.stats() if hasattr(self, "caller") else {}
        row = {"t_s": now - self.t0 if self.t0 else 0.0, "_at": now, "_cpu": cpu, "rss_mb": rss,
               "cpu_pct": 100 * (cpu - prev_cpu[1]) / (now - prev_cpu[0]) if prev_cpu else math.nan,
               "fds": fds, "active_calls": metric("ng911_active_calls"), "answered": answered,
               "not_answered": metric("ng911_calls_total") - answered,
               "store_queue": metric("ng911_store_queue_depth"),
               "caller_ok": int(stats.get("SuccessfulCall(C)", 0)), "caller_failed": int(stats.get("FailedCall(C)", 0))}
        return row

    def run(self) -> None:
        a = self.args
        last_write = time.monotonic()
        next_at = self.t0 + a.interval
        ended: float | None = None  # when the caller exited: the tail runs from there
        while ended is None or time.time() < ended + a.tail:
            if ended is None and self.caller.returncode is not None:
                ended = time.time()
                print(f"caller exited {self.caller.returncode}; sampling the idle node for {a.tail:g} s", flush=True)
                continue
            time.sleep(max(0.0, next_at - time.time()))
            next_at += a.interval
            prev = self.rows[-1]
            self.rows.append(self.sample(time.time(), (prev["_at"], prev["_cpu"])))
            r = self.rows[-1]
            print(f"{r['t_s']:6.0f} s  RSS {r['rss_mb']:6.1f} MB  CPU {r['cpu_pct']:4.0f} %  active "
                  f"{r['active_calls']:4.0f}  ok {r['caller_ok']}  failed {r['caller_failed']}  "
                  f"queue {r['store_queue']:.0f}", flush=True)
            if time.monotonic() - last_write >= 60:
                self.write()
                last_write = time.monotonic()

    # --- results ---------------------------------------------------------------------------
    def binned(self) -> list[dict[str, Any]]:
        """The samples, each with the setup times of the calls placed since the previous one."""
        times = sorted(setup_times(self.caller)) if hasattr(self, "caller") else []
        out, i = [], 0
        for row in self.rows:
            setups = []
            while i < len(times) and times[i][0] <= row["_at"]:
                setups.append(times[i][1])
                i += 1
            out.append({**row, "setups": len(setups), "setup_p50_ms": percentile(setups, 0.5),
                        "setup_p99_ms": percentile(setups, 0.99), "setup_max_ms": max(setups, default=math.nan)})
        return out

    def write(self) -> None:
        rows = self.binned()
        with open(self.args.out.with_suffix(".csv"), "w", newline="") as fh:
            w = csv.DictWriter(fh, COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows({k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
        try:
            plot(rows, self.args, self.args.out.with_suffix(".png"))
        except ImportError:
            print("no matplotlib (pip install -e '.[bench]'): CSV only", file=sys.stderr)

    def summary(self) -> str:
        a = self.args
        rows = self.binned()
        load = [r for r in rows if 0 < r["t_s"] <= a.duration]
        steady = [(r["t_s"], r["rss_mb"]) for r in load if r["t_s"] >= a.warmup]
        times = setup_times(self.caller)
        quarters = []
        for q in range(4):
            lo, hi = self.t0 + q * a.duration / 4, self.t0 + (q + 1) * a.duration / 4
            v = [ms for at, ms in times if lo <= at < hi]
            quarters.append(f"Q{q + 1} {percentile(v, 0.99):.0f} ms (n={len(v)})")
        after_warmup = next((r for r in load if r["t_s"] >= a.warmup), None)
        end = load[-1] if load else rows[-1]
        last = rows[-1]
        gcs = [f"{r['ts'][11:19]} {r['msg']}" for r in self.node.log_records() if "full GC" in r.get("msg", "")]
        cpu = [r["cpu_pct"] for r in load if r["cpu_pct"] == r["cpu_pct"]]
        return "\n".join([
            f"load: {a.rate:g} calls/s for {a.duration:g} s, held {a.hold:g} s; {len(rows)} samples every {a.interval:g} s",
            f"RSS: start {rows[0]['rss_mb']:.1f} MB (idle), after warm-up ({a.warmup:g} s) "
            f"{after_warmup['rss_mb'] if after_warmup else math.nan:.1f} MB, end of load {end['rss_mb']:.1f} MB, "
            f"max {max(r['rss_mb'] for r in rows):.1f} MB, at the end (idle, --tail after the last call) {last['rss_mb']:.1f} MB",
            f"RSS slope after warm-up: {slope_mb_per_hour(steady):+.1f} MB/hour ({len(steady)} samples); "
            f"over its second half {slope_mb_per_hour(steady[len(steady) // 2:]):+.1f} MB/hour",
            f"setup (INVITE → 200) p50 {percentile([ms for _, ms in times], 0.5):.0f} ms, "
            f"p99 {percentile([ms for _, ms in times], 0.99):.0f} ms, max {max((ms for _, ms in times), default=math.nan):.0f} ms;"
            f" p99 per quarter: " + ", ".join(quarters),
            f"calls: caller ok {last['caller_ok']}, failed {last['caller_failed']} (placed {int(a.rate * a.duration)}); "
            f"node: answered {last['answered']:.0f}, other outcomes {last['not_answered']:.0f}; "
            f"active at the end {last['active_calls']:.0f}",
            "node's full GCs (only when it carries no call, checked every 300 s): "
            + ("; ".join(gcs) if gcs else "none"),
            f"node CPU during the load: mean {sum(cpu) / max(1, len(cpu)):.0f} % of a core; fds "
            f"{rows[0]['fds']} → {end['fds']}; store queue max {max(r['store_queue'] for r in rows):.0f}",
        ])


def plot(rows: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r["t_s"] / 60 for r in rows]
    fig, (ax_rss, ax_lat, ax_calls) = plt.subplots(3, 1, sharex=True, figsize=(10, 8),
                                                   gridspec_kw={"height_ratios": [3, 3, 1.5]})
    ax_rss.plot(minutes, [r["rss_mb"] for r in rows], color="tab:blue")
    ax_rss.set_ylabel("node RSS (MB)")
    ax_rss.set_ylim(bottom=0)
    steady = [(r["t_s"], r["rss_mb"]) for r in rows if args.warmup <= r["t_s"] <= args.duration]
    if len(steady) >= 2:
        import numpy  # matplotlib's own dependency

        k, b = numpy.polyfit([t for t, _ in steady], [v for _, v in steady], 1)
        ends = [steady[0][0], steady[-1][0]]
        ax_rss.plot([t / 60 for t in ends], [k * t + b for t in ends], color="black", linestyle="--", lw=0.8,
                    label=f"fit after warm-up: {3600 * k:+.1f} MB/hour")
    ax_rss.axvline(args.warmup / 60, color="grey", linestyle=":", label="end of warm-up")
    ax_rss.axvline(args.duration / 60, color="grey", linestyle="--", label="last call placed")
    ax_rss.legend(loc="lower right")
    ax_lat.plot(minutes, [r["setup_p99_ms"] for r in rows], color="tab:red", label="p99", marker=".", lw=0.8)
    ax_lat.plot(minutes, [r["setup_p50_ms"] for r in rows], color="tab:green", label="p50", lw=0.8)
    ax_lat.set_ylabel(f"setup INVITE→200 (ms)\nper {args.interval:g} s")
    ax_lat.set_ylim(bottom=0)
    ax_lat.legend(loc="upper right")
    ax_calls.plot(minutes, [r["active_calls"] for r in rows], color="tab:purple")
    ax_calls.set_ylabel("active calls")
    ax_calls.set_xlabel("minutes since the first call")
    fig.suptitle(f"ng911 soak {args.stamp}: {args.rate:g} calls/s held {args.hold:g} s, PostgreSQL, 3 SIPp answer points")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2.0, help="calls placed per second (default 2)")
    parser.add_argument("--hold", type=float, default=60.0, help="each call held this long, s (default 60)")
    parser.add_argument("--duration", type=float, default=3600.0, help="calls placed for this long, s (default 3600)")
    parser.add_argument("--interval", type=float, default=10.0, help="one sample every this many s (default 10)")
    parser.add_argument("--warmup", type=float, default=300.0,
                        help="RSS slope from this many s into the load (default 300: calls up, caches full)")
    parser.add_argument("--tail", type=float, default=330.0,
                        help="after the last call, sample the idle node this long, s (default 330: it runs "
                             "its idle full GC within 300 s)")
    parser.add_argument("--capacity", type=int, default=60,
                        help="calls each of the 3 answer points takes (default 60: 180 places for ~120 calls)")
    parser.add_argument("--out", type=Path, help="CSV/PNG path without suffix (default bench/results/soak-<date>)")
    parser.add_argument("--workdir", type=Path, help="logs of the node and SIPp (default: a new /tmp/ng911-soak-*)")
    args = parser.parse_args(argv)
    args.stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d-%H%M")
    args.out = args.out or ROOT / "bench" / "results" / f"soak-{args.stamp}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ng911-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # unwind like Ctrl-C: every finally runs
        if signal.getsignal(sig) is not signal.SIG_IGN:  # under nohup, a hang-up stays ignored
            signal.signal(sig, _interrupt)
    print(f"# soak {args.stamp}: {args.rate:g} calls/s, hold {args.hold:g} s, {args.duration:g} s; logs in {work}; "
          f"results {args.out}.csv/.png", flush=True)
    soak: Soak | None = None
    try:
        with postgres_server() as server, postgres_url(server) as url:
            soak = Soak(args, work, url)
            try:
                soak.start()
                soak.run()
            except KeyboardInterrupt:
                print("interrupted: figures so far", flush=True)
            finally:
                if soak.rows:
                    soak.write()
                    if hasattr(soak, "caller"):
                        print(soak.summary(), flush=True)
                errors = soak.node.internal_errors() if hasattr(soak, "node") else []
                if errors:
                    print(f"node logged {len(errors)} errors, first: {errors[0][:500]}", flush=True)
                soak.sipp.close()
                soak.nodes.close()
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
