"""Capacity of the controller: SIPp caller → ng911 (PostgreSQL store) → SIPp answer points,
stepped call rates, beside the sippy B2BUA carrying the same load with no database.

For each target and rate, everything starts afresh: a throwaway PostgreSQL database (created,
migrated, dropped), N SIPp answer points (`-sn uas -aa`: they auto-200 the controller's OPTIONS
probes), the node (`ng911 serve`, its own process, a config written to a temp dir), and SIPp's
built-in `uac` placing emergency calls (Request-URI `sip:sos@127.0.0.1:PORT`, a configured PSAP
URI) at that rate for longer than 64*T1. Per step we report: calls attempted, successful and
failed (SIPp's stats CSV; a call still open when SIPp stops counts as failed), provisional
responses that arrived after the 200 (`unexp`: ignored, as a real UAC does), INVITE→200 response
time p50/p99/max (`-trace_rtt`, 1 ms resolution), the node's CPU share (of one core) while calls
are placed, its RSS at the end, PostgreSQL's backends' CPU share, the whole host's CPU busy
share (of all cores: the other work on a shared machine shows here), and the store's queue depth
(max, at the end of the load, seconds to drain after it) and batch commit time (mean, p99 by
bucket) from the node's /metrics. A step passes when fewer than 0.1 % of its calls failed and,
for ng911, the store queue did not grow (it drains within --drain-limit s after the load: a
queue that grew for 40 s takes longer, a burst is gone in about a second). The capacity is the
highest rate up to which every step passed; a second figure also asks p99 <= --p99-limit ms.
Rates run in increasing order, targets and repeats alternating at each rate, so that both
targets see the same background load.

The sippy target is sippy's `b2bua` (PyPI `sippy`, installed by bench/sippy_b2bua/setup.sh into
a throwaway venv, never into .venv) with RADIUS authentication and accounting off and a static
route to one SIPp answer point; its logging off by default (SIPLOG_BEND=none: its best case).

    bench/sippy_b2bua/setup.sh                 # once: sippy (and py-spy) into /tmp/ng911-bench-tools
    .venv/bin/python bench/bench_controller.py                                  # both, 50..400 cps
    .venv/bin/python bench/bench_controller.py --rates 25 50 75 100 150 200 300 400 --repeat 2
    .venv/bin/python bench/bench_controller.py --targets ng911 --rates 150 --profile /tmp/prof

--profile DIR runs py-spy (`record --threads --format raw`) on the node during each ng911 step
and prints its top functions by self and inclusive time, and per thread by the innermost ng911
function; the folded stacks stay in DIR.

Figures are for reports (bench/README.md), never for asserts. Loopback only. Every process
started here is stopped before the tool returns, also on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import glob
import json
import os
import random
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
NG911 = ROOT / ".venv" / "bin" / "ng911"
TOOLS_VENV = Path(os.environ.get("NG911_BENCH_TOOLS", "/tmp/ng911-bench-tools"))
PG_ADMIN = os.environ.get("NG911_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
HOST = "127.0.0.1"
FAIL_LIMIT = 0.001  # < 0.1 % failed calls
CLK = os.sysconf("SC_CLK_TCK")
PROFILE_RATE = 100  # py-spy samples/s


# --- small helpers (the style of bench_ua_sipp.py) -------------------------------------------


def free_port() -> int:
    """A port free for both UDP and TCP on the loopback."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind((HOST, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def free_port_block(n: int = 4) -> int:
    """The first of n consecutive free UDP ports (SIPp's -mp binds several media sockets)."""
    for _ in range(500):
        base = random.randrange(20000, 60000, 2)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((HOST, p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK


def host_busy() -> tuple[float, float]:
    """(busy jiffies, total jiffies) over all CPUs, from /proc/stat."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = v[3] + v[4]
    return float(sum(v) - idle), float(sum(v))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def stop(proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM, grace: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- PostgreSQL: a throwaway database per step -----------------------------------------------


def _pg_admin() -> Any:
    import psycopg2  # in .venv: ng911's own driver

    conn = psycopg2.connect(PG_ADMIN)
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def throwaway_database() -> Iterator[str]:
    name = f"ng911_bench_{os.getpid()}_{random.randrange(1 << 30):x}"
    with contextlib.closing(_pg_admin()) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with contextlib.closing(_pg_admin()) as conn, conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_backend_pids(dbname: str) -> list[int]:
    with contextlib.closing(_pg_admin()) as conn, conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (dbname,))
        return [r[0] for r in cur.fetchall()]


# --- the node's /metrics ---------------------------------------------------------------------


def scrape(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    with urllib.request.urlopen(url, timeout=2.0) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(("ng911_store_", "ng911_answer_point_up", "ng911_calls_total",
                                "ng911_active_calls", "ng911_sip_transaction_timeouts_total")):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
    return out


def write_latency(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean and p99 (upper bucket bound) of the batch commit time between two scrapes."""
    pre = "ng911_store_write_seconds"
    n = after.get(f"{pre}_count", 0.0) - before.get(f"{pre}_count", 0.0)
    s = after.get(f"{pre}_sum", 0.0) - before.get(f"{pre}_sum", 0.0)
    buckets = []
    for key, v in after.items():
        if key.startswith(f"{pre}_bucket"):
            le = key.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), v - before.get(key, 0.0)))
    buckets.sort()
    p99 = float("nan")
    for le, cum in buckets:
        if n and cum >= 0.99 * n:
            p99 = le
            break
    return {"batches": n, "write_mean_ms": 1000 * s / n if n else float("nan"), "write_p99_ms": 1000 * p99}


# --- SIPp ------------------------------------------------------------------------------------


def start_answer_point(port: int, work: Path, name: str) -> subprocess.Popen[Any]:
    return subprocess.Popen(
        ["sipp", "-sn", "uas", "-aa", "-i", HOST, "-p", str(port), "-bind_local", "-nostdin",
         "-cp", str(free_port()), "-mp", str(free_port_block()), "-l", "1000000"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=open(work / f"{name}.err", "w"),
    )


def sipp_caller(target_port: int, rate: int, seconds: float, work: Path, recv_timeout: float,
                hold_ms: int) -> tuple[list[str], int]:
    calls = int(rate * seconds)
    cmd = [
        "sipp", "-sn", "uac", f"{HOST}:{target_port}", "-s", "sos", "-i", HOST, "-p", str(free_port()),
        "-cp", str(free_port()), "-mp", str(free_port_block()),
        "-r", str(rate), "-m", str(calls), "-l", str(max(rate * 40, 100)), "-d", str(hold_ms),
        "-nostdin", "-recv_timeout", str(int(recv_timeout * 1000)), "-timeout", str(int(seconds * 2 + 30)),
        "-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "5", "-trace_err",
        # A provisional response that arrives after the 200 (UDP may reorder; sippy's three
        # sender threads do) is ignored, as a real UAC does, instead of failing the call;
        # such messages are counted ("unexp"). A wrong final response still fails the call.
        "-default_behaviors", "all,-abortunexp",
    ]
    return cmd, calls


def sipp_results(work: Path) -> dict[str, Any]:
    rtts: list[float] = []
    for path in glob.glob(str(work / "uac_*_rtt.csv")):
        with open(path) as fh:
            rtts += [float(r["response_time_ms"]) for r in csv.DictReader(fh, delimiter=";")]
    attempted = ok = failed = 0
    for path in glob.glob(str(work / "uac_[0-9]*_.csv")):
        with open(path) as fh:
            rows = list(csv.DictReader(fh, delimiter=";"))
        if rows:
            attempted = int(rows[-1]["OutgoingCall(C)"])
            ok = int(rows[-1]["SuccessfulCall(C)"])
            failed = int(rows[-1]["FailedCall(C)"])
    unexpected = 0
    for path in glob.glob(str(work / "uac_*_errors.log")):
        with open(path, errors="replace") as fh:
            unexpected += sum(line.count("unexpected message") for line in fh)
    return {"attempted": attempted, "ok": ok, "unexpected": unexpected, "failed": failed + max(0, attempted - ok - failed),
            "p50_ms": percentile(rtts, 0.50), "p99_ms": percentile(rtts, 0.99),
            "max_ms": max(rtts, default=float("nan"))}


def udp_ready(port: int, timeout: float) -> bool:
    """True once something at HOST:port answers an OPTIONS (any response)."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        me = s.getsockname()[1]
        n = 0
        while time.monotonic() < deadline:
            n += 1
            s.sendto((
                f"OPTIONS sip:ping@{HOST}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:{me};branch=z9hG4bK-ready{n}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:bench@{HOST}>;tag=b{n}\r\nTo: <sip:ping@{HOST}>\r\n"
                f"Call-ID: ready-{n}-{me}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(), (HOST, port))
            if select.select([s], [], [], 0.3)[0]:
                return True
    return False


# --- the systems under test ------------------------------------------------------------------


CONFIG = """\
# Written by bench/bench_controller.py: timers, probes and session timers as in
# deploy/examples/single-node.toml; one queue of {n} SIPp answer points of capacity {capacity}.
[node]
name = "bench"

[sip]
host = "{host}"
port = {sip_port}
transports = ["udp", "tcp"]

[sip.timers]
t1 = 0.5
t2 = 4.0
t4 = 5.0

[upstream]
trusted = ["127.0.0.0/8"]

[routing]
emergency_queue = "main"
psap_uris = ["sip:sos@{host}:{sip_port}"]

[[queues]]
name = "main"
alternates = []
{aps}
[health]
options_interval = 1.0
options_timeout = 1.0
down_after = 2
up_after = 1

[failover]
session_expires = 90
min_se = 90
in_dialog_options_interval = 2.0
hunt_backoff_initial = 0.5
hunt_backoff_max = 5.0

[api]
host = "{host}"
port = {api_port}

[metrics]
host = "{host}"
port = {metrics_port}
"""

AP = """
[[queues.answer_points]]
name = "ap{i}"
uri = "sip:ap{i}@{host}:{port}"
ring_timeout = 20.0
no_provisional_timeout = 2.0
capacity = {capacity}
"""


class Ng911:
    name = "ng911"

    def __init__(self, args: argparse.Namespace, work: Path, db_url: str) -> None:
        self.args, self.work, self.db_url = args, work, db_url
        self.procs: list[subprocess.Popen[Any]] = []
        self.node: subprocess.Popen[Any] | None = None
        self.metrics_url = ""
        self.pg_pids: list[int] = []

    def start(self) -> int:
        ap_ports = [free_port() for _ in range(self.args.aps)]
        for i, port in enumerate(ap_ports, 1):
            self.procs.append(start_answer_point(port, self.work, f"ap{i}"))
        sip_port, metrics_port = free_port(), free_port()
        aps = "".join(AP.format(i=i, host=HOST, port=p, capacity=self.args.capacity)
                      for i, p in enumerate(ap_ports, 1))
        cfg = self.work / "node.toml"
        cfg.write_text(CONFIG.format(host=HOST, sip_port=sip_port, api_port=free_port(), metrics_port=metrics_port,
                                     aps=aps, n=self.args.aps, capacity=self.args.capacity))
        env = {**os.environ, "NG911_DATABASE_URL": self.db_url}
        subprocess.run([self.args.ng911, "migrate", "--config", str(cfg)], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=open(self.work / "migrate.err", "w"))
        self.node = subprocess.Popen(
            [self.args.ng911, "serve", "--config", str(cfg), "--log-level", self.args.log_level],
            env=env, cwd=self.work, stdout=subprocess.PIPE, text=True,
            stderr=open(self.work / "node.log", "w"),
        )
        assert self.node.stdout is not None
        if not select.select([self.node.stdout], [], [], 30)[0]:
            raise RuntimeError("ng911 serve printed nothing in 30 s")
        line = self.node.stdout.readline()
        if '"serving"' not in line:
            raise RuntimeError(f"ng911 serve did not start: {line!r}; see {self.work / 'node.log'}")
        self.metrics_url = f"http://{HOST}:{metrics_port}/metrics"
        # the answer points must be up (answered a probe) before calls flow
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            m = scrape(self.metrics_url)
            if all(m.get(f'ng911_answer_point_up{{answer_point="ap{i}"}}') == 1.0 for i in range(1, self.args.aps + 1)):
                break
            time.sleep(0.2)
        time.sleep(self.args.settle)
        self.pg_pids = pg_backend_pids(self.db_url.rsplit("/", 1)[1])
        return sip_port

    @property
    def pid(self) -> int:
        assert self.node is not None
        return self.node.pid

    def stop(self) -> None:
        stop(self.node, signal.SIGTERM, grace=10.0)
        for p in self.procs:
            stop(p)


class Sippy:
    name = "sippy"

    def __init__(self, args: argparse.Namespace, work: Path, db_url: str | None = None) -> None:
        self.args, self.work = args, work
        self.procs: list[subprocess.Popen[Any]] = []
        self.node: subprocess.Popen[Any] | None = None
        self.metrics_url = ""
        self.pg_pids: list[int] = []

    def start(self) -> int:
        b2bua = TOOLS_VENV / "bin" / "b2bua"
        if not b2bua.exists():
            raise RuntimeError(f"{b2bua} missing: run bench/sippy_b2bua/setup.sh first")
        ap_port, port = free_port(), free_port()
        self.procs.append(start_answer_point(ap_port, self.work, "ap1"))
        env = {**os.environ, "SIPLOG_BEND": self.args.sippy_log, "SIPLOG_LOGFILE_FILE": str(self.work / "sippy.log")}
        # -f foreground, -u no RADIUS auth, -A 0 no accounting, -s static route, -c its command socket
        self.node = subprocess.Popen(
            [str(b2bua), "-f", "-l", HOST, "-p", str(port), "-s", f"{HOST}:{ap_port}", "-u", "-A", "0",
             "-c", str(self.work / "b2bua.sock"), "-P", str(self.work / "b2bua.pid")],
            env=env, cwd=self.work, stdout=subprocess.DEVNULL, stderr=open(self.work / "sippy.err", "w"),
        )
        if not udp_ready(port, 30):
            raise RuntimeError(f"sippy did not answer on {port}; see {self.work / 'sippy.err'}")
        time.sleep(self.args.settle)
        return port

    @property
    def pid(self) -> int:
        assert self.node is not None
        return self.node.pid

    def stop(self) -> None:
        stop(self.node, signal.SIGKILL)  # sippy ignores SIGTERM and SIGINT; it keeps no state
        for p in self.procs:
            stop(p)


# --- one step --------------------------------------------------------------------------------


def run_step(target: str, rate: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{target}-{rate}-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        if target == "ng911":
            sut: Any = Ng911(args, work, stack.enter_context(throwaway_database()))
        else:
            sut = Sippy(args, work)
        stack.callback(sut.stop)
        port = sut.start()
        cmd, calls = sipp_caller(port, rate, args.seconds, work, args.recv_timeout, args.hold)
        spy = None
        if args.profile and target == "ng911":
            prof = Path(args.profile)
            prof.mkdir(parents=True, exist_ok=True)
            out = prof / f"ng911-{rate}cps-{time.strftime('%H%M%S')}.folded"
            spy = subprocess.Popen(
                [str(TOOLS_VENV / "bin" / "py-spy"), "record", "--pid", str(sut.pid), "--threads",
                 "--format", "raw", "--rate", str(PROFILE_RATE), "--duration", str(int(args.seconds)), "--output", str(out),
                 "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=open(work / "py-spy.err", "w"),
                start_new_session=True,  # its own process group: no signal of its reaches us
            )
            stack.callback(stop, spy, signal.SIGINT, 10.0)
        m0 = scrape(sut.metrics_url) if sut.metrics_url else {}
        cpu0, pg0, host0 = cpu_seconds(sut.pid), sum(map(cpu_seconds, sut.pg_pids)), host_busy()
        t0 = time.monotonic()
        caller = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(stop, caller, signal.SIGKILL)
        depths: list[tuple[float, float]] = []
        load_cpu = pg_cpu = host_pct = float("nan")
        depth_end = float("nan")
        while caller.poll() is None:
            time.sleep(0.5)
            now = time.monotonic()
            if sut.metrics_url:
                with contextlib.suppress(OSError):
                    depths.append((now - t0, scrape(sut.metrics_url).get("ng911_store_queue_depth", float("nan"))))
            if now - t0 >= args.seconds and load_cpu != load_cpu:  # end of the placing phase: once
                dt = now - t0
                load_cpu = 100.0 * (cpu_seconds(sut.pid) - cpu0) / dt
                pg_cpu = 100.0 * (sum(map(cpu_seconds, sut.pg_pids)) - pg0) / dt
                h1 = host_busy()
                host_pct = 100.0 * (h1[0] - host0[0]) / max(1.0, h1[1] - host0[1])
                depth_end = depths[-1][1] if depths else float("nan")
            if now - t0 > args.seconds * 2 + 60:
                break
        t_end = time.monotonic()
        if load_cpu != load_cpu:  # SIPp finished within the poll interval around `seconds`
            dt = t_end - t0
            load_cpu = 100.0 * (cpu_seconds(sut.pid) - cpu0) / dt
            pg_cpu = 100.0 * (sum(map(cpu_seconds, sut.pg_pids)) - pg0) / dt
            h1 = host_busy()
            host_pct = 100.0 * (h1[0] - host0[0]) / max(1.0, h1[1] - host0[1])
            depth_end = depths[-1][1] if depths else float("nan")
        rss = rss_mb(sut.pid)
        drain = float("nan")
        store: dict[str, float] = {}
        if sut.metrics_url:
            # the gauge is sampled once a second: wait for it to read 0, at most 30 s
            m1: dict[str, float] = {}
            while time.monotonic() - t_end < args.drain_wait:
                with contextlib.suppress(OSError):  # a saturated node may answer late
                    m1 = scrape(sut.metrics_url)
                    if m1.get("ng911_store_queue_depth", 0.0) == 0:
                        drain = time.monotonic() - t_end
                        break
                time.sleep(0.25)
            with contextlib.suppress(OSError):
                m1 = scrape(sut.metrics_url)
            store = write_latency(m0, m1) if m1 else {}
        res = {"target": target, "rate": rate, "calls": calls, **sipp_results(work),
               "cpu_pct": load_cpu, "rss_mb": rss, "pg_cpu_pct": pg_cpu, "host_pct": host_pct,
               "depth_max": max((d for _, d in depths), default=float("nan")), "depth_end": depth_end,
               "drain_s": drain, **store, "elapsed_s": t_end - t0,
               "depths": [(round(t, 1), d) for t, d in depths]}
        if spy is not None:
            stop(spy, signal.SIGINT, 15.0)
            res["profile"] = str(out)
        return res


def passed(r: dict[str, Any], drain_limit: float) -> bool:
    fail_ok = r["attempted"] > 0 and r["failed"] / max(1, r["calls"]) < FAIL_LIMIT and r["attempted"] == r["calls"]
    if r["target"] != "ng911":
        return fail_ok
    # a store queue that grew through the load takes long to drain once it stops; a burst
    # absorbed by the next batches drains in about a second
    backlog_ok = r["drain_s"] == r["drain_s"] and r["drain_s"] <= drain_limit
    return fail_ok and backlog_ok


# --- profile summary -------------------------------------------------------------------------


def profile_summary(path: str, seconds: float, rate: int = PROFILE_RATE, top: int = 20) -> str:
    """Self and inclusive shares of the hottest functions in a py-spy raw (folded) file.

    Shares are of all samples of busy (not sleeping) threads; a thread's busy share is its
    samples over rate*seconds."""
    self_: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    by_thread: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        frames = stack.split(";")
        total += count
        thread = frames[0].split(": ", 1)[-1]
        threads[thread] += count
        funcs = [re.sub(r":\d+\)$", ")", f) for f in frames[1:]]  # one function, one row
        if funcs:
            self_[funcs[-1]] += count
            # the thread's hot spot: the innermost frame of ng911 code (what our code asked for)
            ours = [f for f in funcs if "(ng911/" in f or "(observer.py)" in f]
            by_thread[thread][ours[-1] if ours else funcs[-1]] += count
        for f in set(funcs):
            incl[f] += count
    if not total:
        return f"{path}: no samples"
    out = [f"{path}: {total} samples of busy threads"]
    out += [f"  thread {t}: {100 * c / total:.1f} % of samples, busy {100 * c / (rate * seconds):.0f} % of the time"
            for t, c in threads.most_common(4)]
    out.append("  self:")
    out += [f"    {100 * c / total:5.1f} %  {f}" for f, c in self_.most_common(top)]
    out.append("  inclusive:")
    out += [f"    {100 * c / total:5.1f} %  {f}" for f, c in incl.most_common(top)]
    for thread, counter in sorted(by_thread.items(), key=lambda kv: -threads[kv[0]])[:2]:
        out.append(f"  {thread}, by innermost ng911 function (library time charged to its caller):")
        out += [f"    {100 * c / total:5.1f} %  {f}" for f, c in counter.most_common(top // 2)]
    return "\n".join(out)


# --- main ------------------------------------------------------------------------------------

HEAD = (f"{'target':>6} {'rate':>5} {'calls':>6} {'ok':>6} {'failed':>6} {'fail%':>6} {'unexp':>5} {'p50':>5} {'p99':>6} "
        f"{'max':>6} {'CPU%':>5} {'RSS':>5} {'pgCPU':>5} {'host%':>5} {'qmax':>6} {'qend':>6} {'drain':>5} "
        f"{'wmean':>6} {'wp99':>6} {'pass':>4}")


def fmt(r: dict[str, Any], ok: bool) -> str:
    def n(v: Any, spec: str = ".0f") -> str:
        return "-" if v is None or v != v else format(v, spec)
    return (f"{r['target']:>6} {r['rate']:>5} {r['attempted']:>6} {r['ok']:>6} {r['failed']:>6} "
            f"{100 * r['failed'] / max(1, r['calls']):>6.2f} {r['unexpected']:>5} {n(r['p50_ms']):>5} {n(r['p99_ms']):>6} {n(r['max_ms']):>6} "
            f"{n(r['cpu_pct']):>5} {n(r['rss_mb']):>5} {n(r['pg_cpu_pct']):>5} {n(r['host_pct']):>5} "
            f"{n(r.get('depth_max')):>6} {n(r.get('depth_end')):>6} {n(r.get('drain_s'), '.1f'):>5} "
            f"{n(r.get('write_mean_ms'), '.1f'):>6} {n(r.get('write_p99_ms')):>6} {'yes' if ok else 'NO':>4}")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", nargs="+", choices=("ng911", "sippy"), default=["ng911", "sippy"])
    ap.add_argument("--rates", type=int, nargs="+", default=[50, 100, 150, 200, 300, 400])
    ap.add_argument("--seconds", type=float, default=40.0, help="calls placed per step for this long; > 64*T1 = 32 s")
    ap.add_argument("--repeat", type=int, default=1, help="run the whole ladder this many times (spread)")
    ap.add_argument("--aps", type=int, default=2, help="SIPp answer points behind ng911 (sippy: one, static route)")
    ap.add_argument("--capacity", type=int, default=1000, help="capacity of each answer point")
    ap.add_argument("--hold", type=int, default=0, help="call hold time, ms (SIPp -d; default 0 as SIPp)")
    ap.add_argument("--recv-timeout", type=float, default=10.0, help="SIPp gives up on a reply after this (s)")
    ap.add_argument("--drain-wait", type=float, default=30.0, help="wait at most this for the store queue to empty (s)")
    ap.add_argument("--settle", type=float, default=2.0, help="idle seconds between start-up and load")
    ap.add_argument("--ng911", default=str(NG911), help="the ng911 executable (another checkout's, a wrapper)")
    ap.add_argument("--log-level", default="info", help="ng911 --log-level (default info, as deployed)")
    ap.add_argument("--sippy-log", default="none", help="sippy SIPLOG_BEND: none | stderr | file")
    ap.add_argument("--drain-limit", type=float, default=5.0,
                    help="no store backlog: the queue empties within this many s after the load (default 5)")
    ap.add_argument("--p99-limit", type=float, default=500.0,
                    help="second capacity figure: also INVITE->200 p99 within this (ms)")
    ap.add_argument("--stop-above", type=float, default=20.0,
                    help="skip a target's higher rates once a step failed more than this %% of its calls")
    ap.add_argument("--profile", metavar="DIR", help="py-spy record each ng911 step into DIR")
    ap.add_argument("--json", metavar="FILE", help="also write every step's figures to FILE")
    args = ap.parse_args()
    if args.profile and not (TOOLS_VENV / "bin" / "py-spy").exists():
        ap.error(f"--profile needs {TOOLS_VENV}/bin/py-spy: run bench/sippy_b2bua/setup.sh")

    # SIGTERM/SIGHUP unwind like Ctrl-C, so every `finally` stops its processes
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  seconds={args.seconds:g} hold={args.hold} ms aps={args.aps} "
          f"capacity={args.capacity} ng911 log={args.log_level} sippy log={args.sippy_log}", flush=True)
    print(HEAD, flush=True)
    try:
        # rate by rate, the targets (and repeats) alternating: on a shared machine both see
        # the same background load, which moves the figures more than anything else here
        for rate in sorted(args.rates):
            for rep in range(args.repeat):
                for target in args.targets:
                    prior = [r for r in results if r["target"] == target and r["rate"] < rate]
                    if any(100 * r["failed"] / max(1, r["calls"]) > args.stop_above for r in prior):
                        continue
                    r = run_step(target, rate, args)
                    r["rep"] = rep
                    r["pass"] = passed(r, args.drain_limit)
                    results.append(r)
                    print(fmt(r, r["pass"]), flush=True)
                    if "profile" in r:
                        print(profile_summary(r["profile"], args.seconds), flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1, default=str))

    print()
    for target in args.targets:
        capacity = prompt = 0  # prompt: every rate up to it also kept p99 within --p99-limit
        prompt_broken = False
        for rate in sorted(args.rates):
            rows = [r for r in results if r["target"] == target and r["rate"] == rate]
            if len(rows) < args.repeat or not all(r["pass"] for r in rows):
                break
            capacity = rate
            prompt_broken = prompt_broken or not all(r["p99_ms"] <= args.p99_limit for r in rows)
            if not prompt_broken:
                prompt = rate
        mine = [r for r in results if r["target"] == target]
        for rate in sorted({r["rate"] for r in mine}):
            rows = [r for r in mine if r["rate"] == rate]
            if len(rows) > 1:
                def spread(key: str) -> str:
                    v = [r[key] for r in rows if r.get(key) == r.get(key)]
                    return f"{statistics.median(v):.0f} [{min(v):.0f}-{max(v):.0f}]" if v else "-"
                print(f"  {target} {rate} cps over {len(rows)} runs: failed% max "
                      f"{max(100 * r['failed'] / max(1, r['calls']) for r in rows):.2f}, p99 ms {spread('p99_ms')}, "
                      f"CPU % {spread('cpu_pct')}, store queue end {spread('depth_end')}")
        print(f"capacity {target}: {capacity} calls/s (highest rate with < 0.1 % failed"
              f"{' and no store backlog' if target == 'ng911' else ''}, every run); "
              f"{prompt} calls/s with INVITE->200 p99 <= {args.p99_limit:g} ms as well")
    print(f"# total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
