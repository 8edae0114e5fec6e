"""Failover latency: kill -9 of the answering position → the caller's re-INVITE.

One `ng911 serve --config deploy/examples/single-node.toml` (unchanged: SIP on 127.0.0.1:5060,
API 8911, metrics 9911; those ports must be free), a throwaway PostgreSQL database (created,
`ng911 migrate`d, dropped; NG911_DATABASE_URL) unless --sqlite, and SIPp's built-in `uas`
scenario with `-aa` (it answers the node's OPTIONS) as the three answer points ap1..ap3 on
127.0.0.1:5070/5071/5072. Then, move after move, under light load (one call at a time, the node
otherwise idle but for its health probes):

1. wait until the node's /metrics says all three positions are up;
2. one SIPp caller (a scenario written by this tool) calls sip:sos@127.0.0.1:5060 from
   127.0.0.1: INVITE with SDP, 200, ACK; it then waits for a re-INVITE, answers it 200, takes
   the ACK, and hangs up after --hold ms; a BYE from the node fails it;
3. once the call is talking (the caller sent its ACK; the node's 'answered' log event names the
   position), wait a random 0..--jitter s, so that the kill falls at any phase of the node's
   probe timers, and kill -9 the answering position (the time is taken just before the signal);
4. the figure is the caller's re-INVITE time (SIPp's -trace_msg timestamp) minus the kill time;
   the node's own 'failover' and 'moved' JSON log events give the detection time and the
   failover reason, as a cross-check;
5. the killed position is restarted on its port before the next move.

--transport tcp runs the same with the positions on TCP: a copy of the config whose answer
point URIs carry ;transport=tcp (nothing else changed) and SIPp `-t t1`.

Reports n, p50/p99/max of kill→re-INVITE, of kill→failover (node log), and the failover
reasons. Figures go in bench/README.md, never in asserts. Loopback only. Every process started
here is stopped before the tool returns (SIGTERM, then SIGKILL, by pid), also on Ctrl-C/SIGTERM.

    .venv/bin/python bench/bench_failover.py                      # 60 moves, UDP, PostgreSQL
    .venv/bin/python bench/bench_failover.py --moves 100 --transport tcp --json /tmp/f.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "deploy" / "examples" / "single-node.toml"
NG911 = str(Path(sys.executable).parent / "ng911")
PG_ADMIN = os.environ.get("NG911_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
SIP_PORT, METRICS_PORT, API_PORT = 5060, 9911, 8911
APS = {"ap1": 5070, "ap2": 5071, "ap3": 5072}

CALLER_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="caller whose position dies">
  <send retrans="500"><![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: "Caller" <sip:+15550001@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:caller@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 4242 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: "Caller" <sip:+15550001@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Content-Length: 0

  ]]></send>
  <recv request="INVITE" timeout="60000"/>
  <send retrans="500"><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:caller@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 4242 2 IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

  ]]></send>
  <recv request="ACK"/>
  <pause/>
  <send retrans="500"><![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: "Caller" <sip:+15550001@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Content-Length: 0

  ]]></send>
  <recv response="200" crlf="true"/>
</scenario>
"""


# --- small helpers ---------------------------------------------------------------------------


def free_port() -> int:
    """A UDP port free now (SIPp binds UDP for -p in u1 mode, -cp and -mp) whose TCP twin is
    free too."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if not port_in_use(port, socket.SOCK_STREAM):
            return port


def media_ports() -> int:
    """A base port whose next three are free too (SIPp -mp binds audio and video RTP/RTCP)."""
    for _ in range(200):
        base = random.randrange(20000, 60000, 4)
        if not any(port_in_use(p, socket.SOCK_DGRAM) for p in range(base, base + 4)):
            return base
    raise RuntimeError("no free block of 4 UDP ports")


def port_in_use(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:  # a listener, not a TIME_WAIT left by a scrape
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 60 values is the 60th smallest: the max)."""
    if not values:
        return float("nan")
    values = sorted(values)
    rank = max(1, -(-int(q * 1000) * len(values) // 1000))  # ceil(q * n), exact for q = 0.5, 0.99
    return values[min(len(values), rank) - 1]


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


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def throwaway_database() -> Iterator[str]:
    import psycopg2  # in .venv: ng911's own driver

    def admin() -> Any:
        conn = psycopg2.connect(PG_ADMIN)
        conn.autocommit = True
        return conn

    name = f"ng911_bench_failover_{os.getpid()}_{random.randrange(1 << 30):x}"
    with contextlib.closing(admin()) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    finally:
        with contextlib.closing(admin()) as conn, conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def scrape_up() -> dict[str, float]:
    out = {}
    with urllib.request.urlopen(f"http://{HOST}:{METRICS_PORT}/metrics", timeout=2.0) as resp:
        for line in resp.read().decode().splitlines():
            m = re.match(r'ng911_answer_point_up\{answer_point="(\w+)"\} (\S+)', line)
            if m:
                out[m.group(1)] = float(m.group(2))
    return out


_BLOCK = re.compile(
    rb"^-{47} (\d{4}-\d\d-\d\d[ \t]\d\d:\d\d:\d\d\.\d+)\n(?:UDP|TCP|TLS) message "
    rb"(?:(received) \[(\d+)\] bytes :|(sent) \((\d+) bytes\):)\n\n", re.M)


def sipp_messages(path: Path) -> list[tuple[float, str, bytes]]:
    """(epoch seconds, 'sent'|'received', message) from a SIPp -trace_msg file."""
    data = path.read_bytes() if path.exists() else b""
    out = []
    for m in _BLOCK.finditer(data):
        at = datetime.strptime(m.group(1).decode().replace("\t", " "), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        n = int(m.group(3) or m.group(5))
        out.append((at, (m.group(2) or m.group(4)).decode(), data[m.end():m.end() + n]))
    return out


def node_events(path: Path, call_event: str) -> list[dict[str, Any]]:
    out = []
    with open(path, errors="replace") as fh:
        for line in fh:
            if line.startswith("{") and f'"event":"{call_event}"' in line:
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
    return out


def log_time(record: dict[str, Any]) -> float:
    ts = str(record["ts"]).replace("Z", "+00:00")
    return datetime.fromisoformat(ts).timestamp()


# --- the processes ---------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.sipp_transport = "t1" if args.transport == "tcp" else "u1"
        self.node: subprocess.Popen[Any] | None = None
        self.aps: dict[str, subprocess.Popen[Any]] = {}
        self.procs: list[subprocess.Popen[Any]] = []
        self.caller_xml = work / "caller_failover.xml"
        self.caller_xml.write_text(CALLER_XML)
        self.node_log = work / "node.log"

    def config(self) -> Path:
        if self.args.transport == "udp":
            return Path(self.args.config)
        text = Path(self.args.config).read_text()
        text = re.sub(r'(uri = "sip:ap\d@[\d.]+:\d+)"', r'\1;transport=tcp"', text)
        path = self.work / "single-node-tcp.toml"
        path.write_text(text)
        return path

    def start_node(self, env: dict[str, str]) -> None:
        cfg = self.config()
        subprocess.run([NG911, "migrate", "--config", str(cfg)], env=env, check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=open(self.work / "migrate.log", "w"), timeout=120)
        self.node = subprocess.Popen([NG911, "serve", "--config", str(cfg)], env=env, cwd=self.work,
                                     stdin=subprocess.DEVNULL, stdout=open(self.work / "node.out", "w"),
                                     stderr=open(self.node_log, "w"))
        self.procs.append(self.node)
        wait_for(lambda: '"serving"' in (self.work / "node.out").read_text() or self.node.poll() is not None,
                 60, "the node to serve")
        if self.node.poll() is not None:
            raise RuntimeError(f"node exited: {self.node_log.read_text()[-2000:]}")

    def start_ap(self, name: str, attempts: int = 3) -> None:
        for attempt in range(attempts):
            try:
                return self._start_ap(name)
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2)  # a port taken in between (another process): pick others

    def _start_ap(self, name: str) -> None:
        port = APS[name]
        # SIPp -sn uas -aa: 180 + 200 (SDP) to an INVITE, 200 to OPTIONS; answers an offerless
        # INVITE with its SDP as the offer (the move's INVITE) and ignores the ACK's answer.
        proc = subprocess.Popen(
            ["sipp", "-sn", "uas", "-aa", "-i", HOST, "-p", str(port), "-t", self.sipp_transport, "-nostdin",
             "-cp", str(free_port()), "-mp", str(media_ports()), "-l", "1000", "-bind_local",
             # a busy shared machine stalls SIPp's loop now and then: not a reason to exit
             "-watchdog_major_maxtriggers", "1000000", "-watchdog_minor_maxtriggers", "1000000"],
            cwd=self.work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.work / f"{name}.err", "a"))
        self.aps[name] = proc
        self.procs.append(proc)
        kind = socket.SOCK_STREAM if self.args.transport == "tcp" else socket.SOCK_DGRAM
        wait_for(lambda: port_in_use(port, kind) or proc.poll() is not None, 10, f"{name} to bind")
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {(self.work / f'{name}.err').read_text()[-1000:]}")

    def all_up(self) -> bool:
        with contextlib.suppress(OSError):
            up = scrape_up()
            return all(up.get(name) == 1.0 for name in APS)
        return False

    def move(self, i: int) -> dict[str, Any]:
        for name, proc in self.aps.items():
            if proc.poll() is not None:  # a position that exited by itself: start it again
                print(f"# {name} had exited (rc {proc.returncode}); restarting it", flush=True)
                self.start_ap(name)
                time.sleep(self.args.settle)
        wait_for(self.all_up, 30, "every position up", interval=0.05)
        cdir = self.work / f"move{i:03d}"
        cdir.mkdir()
        answered_before = len(node_events(self.node_log, "answered"))
        failovers_before = len(node_events(self.node_log, "failover"))
        caller = subprocess.Popen(
            ["sipp", "-sf", str(self.caller_xml), f"{HOST}:{SIP_PORT}", "-s", "sos", "-i", HOST,
             "-p", str(free_port()), "-t", "u1", "-m", "1", "-d", str(self.args.hold), "-nostdin",
             "-cp", str(free_port()), "-mp", str(media_ports()), "-timeout", "90s", "-timeout_error",
             "-trace_msg", "-message_file", "messages.log", "-trace_err", "-error_file", "errors.log"],
            cwd=cdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(cdir / "stderr", "w"))
        self.procs.append(caller)
        msgs = cdir / "messages.log"
        try:
            wait_for(lambda: any(d == "sent" and m.startswith(b"ACK") for _, d, m in sipp_messages(msgs))
                     or caller.poll() is not None, 30, "the call to be answered")
            answered = wait_for(lambda: node_events(self.node_log, "answered")[answered_before:], 10,
                                "the node's 'answered' event")
            victim = answered[0].get("ev_answer_point")
            if victim not in APS:
                raise RuntimeError(f"answered by {victim!r}?")
            time.sleep(random.uniform(0, self.args.jitter))
            proc = self.aps[victim]
            killed_at = time.time()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = caller.wait(timeout=90)
            invites = [at for at, d, m in sipp_messages(msgs) if d == "received" and m.startswith(b"INVITE ")]
            byes = [at for at, d, m in sipp_messages(msgs) if d == "received" and m.startswith(b"BYE ")]
            fo = wait_for(lambda: node_events(self.node_log, "failover")[failovers_before:], 10, "'failover' event")
            moved = node_events(self.node_log, "moved")
            moved = [r for r in moved if log_time(r) >= killed_at]
        finally:
            stop(caller)
        self.start_ap(victim)
        # Let probes sent while it was dead run out before the next move: a stale failure
        # would otherwise count against the restarted position and move the next call early.
        time.sleep(self.args.settle)
        early = [r for r in fo if log_time(r) < killed_at - 0.002]
        if early:
            raise RuntimeError(f"the call failed over before the kill: {early[0].get('ev_reason')}")
        result = {
            "move": i, "victim": victim, "caller_rc": rc, "byes": len(byes),
            "reinvite_s": invites[0] - killed_at if invites else None,
            "failover_s": log_time(fo[0]) - killed_at,
            "reason": fo[0].get("ev_reason"),
            "moved_to": moved[0].get("ev_answer_point") if moved else None,
        }
        return result

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def summary(values: list[float]) -> str:
    return (f"n={len(values)} p50={percentile(values, 0.5):.3f} s p99={percentile(values, 0.99):.3f} s "
            f"max={max(values, default=float('nan')):.3f} s min={min(values, default=float('nan')):.3f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moves", type=int, default=60)
    ap.add_argument("--transport", choices=("udp", "tcp"), default="udp", help="the positions' transport")
    ap.add_argument("--config", help="default: TREE/deploy/examples/single-node.toml")
    ap.add_argument("--tree", default=str(ROOT),
                    help="run the node from this checkout (PYTHONPATH), e.g. a `git archive` of another commit")
    ap.add_argument("--sqlite", action="store_true", help="embedded SQLite in the work dir, not PostgreSQL")
    ap.add_argument("--hold", type=int, default=200, help="caller hangs up this many ms after the move")
    ap.add_argument("--jitter", type=float, default=2.0, help="kill at a random 0..JITTER s into the call")
    ap.add_argument("--settle", type=float, default=2.5,
                    help="after restarting the killed position, wait this long (> probe interval + timeout)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    ap.add_argument("--json", metavar="FILE", help="also write every move's figures to FILE")
    args = ap.parse_args()
    args.config = args.config or str(Path(args.tree) / "deploy" / "examples" / "single-node.toml")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    busy = [p for p in (SIP_PORT, *APS.values()) if port_in_use(p, socket.SOCK_DGRAM)]
    busy += [p for p in (SIP_PORT, API_PORT, METRICS_PORT, *APS.values()) if port_in_use(p, socket.SOCK_STREAM)]
    if busy:
        print(f"ports in use: {sorted(set(busy))}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="ng911-bench-failover-"))
    bench = Bench(args, work)
    results: list[dict[str, Any]] = []
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} tree={args.tree} config={args.config} transport={args.transport} "
          f"db={'sqlite' if args.sqlite else 'postgresql'} moves={args.moves} work={work}", flush=True)
    try:
        with contextlib.ExitStack() as stack:
            env = dict(os.environ)
            env.pop("NG911_DATABASE_URL", None)
            env["PYTHONPATH"] = str(Path(args.tree).resolve())
            if args.sqlite:
                env["NG911_DATABASE_URL"] = f"sqlite:///{work / 'ng911.sqlite'}"
            else:
                env["NG911_DATABASE_URL"] = stack.enter_context(throwaway_database())
            try:
                for name in APS:
                    bench.start_ap(name)
                bench.start_node(env)
                for i in range(args.moves):
                    r = bench.move(i)
                    results.append(r)
                    print(f"move {i:3d} {r['victim']}->{r['moved_to']} reinvite={r['reinvite_s'] if r['reinvite_s'] is None else round(r['reinvite_s'], 3)} "
                          f"failover={r['failover_s']:.3f} reason={r['reason']} rc={r['caller_rc']} byes={r['byes']}",
                          flush=True)
            finally:
                bench.stop_all()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    except Exception as exc:  # a move that went wrong: report what we have, keep the logs
        print(f"move failed: {exc!r}; logs kept in {work}", file=sys.stderr)
        args.keep = True
        results.append({"move": len(results), "victim": None, "caller_rc": None, "byes": 0,
                        "reinvite_s": None, "failover_s": float("nan"), "reason": f"bench error: {exc}",
                        "moved_to": None})
    reinv = [r["reinvite_s"] for r in results if r["reinvite_s"] is not None]
    fo = [r["failover_s"] for r in results if r["failover_s"] == r["failover_s"]]
    reasons: dict[str, int] = {}
    for r in results:
        reasons[str(r["reason"])] = reasons.get(str(r["reason"]), 0) + 1
    bad = [r for r in results if r["caller_rc"] != 0 or r["byes"] or r["reinvite_s"] is None]
    print(f"kill -> caller's re-INVITE: {summary(reinv)}")
    print(f"kill -> node's 'failover' event: {summary(fo)}")
    print(f"failover reasons: {reasons}; moves where the caller failed / got a BYE / no re-INVITE: {len(bad)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "moves": results}, indent=1))
    if not args.keep:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    return 0 if results and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
