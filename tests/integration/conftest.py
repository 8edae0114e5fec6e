"""Fixtures for the integration tests: real processes over loopback.

- ``free_port()``: a port number free for both UDP and TCP on 127.0.0.1 (the agent binds both).
- ``ua``: starts ``ng911 ua ...`` processes (``ua.answer(...)`` waits for the "listening" event
  line; ``ua.call(...)`` runs a caller to completion); every process is killed at teardown.
- ``sipp``: starts SIPp with ``-nostdin``, ``-timeout`` and its working files in the test's
  tmp_path, and reads its statistics (``-trace_stat`` CSV) when it exits.
- ``SipProbe`` (``sip_probe`` fixture): a raw SIP endpoint (UDP or TCP) for hand-written
  requests, to check the exact response to a malformed or unusual request.

The agent is started through ``ng911.cli.main`` (what the ``ng911`` console script runs) with
Twisted's log sent to stderr at level error: the stack catches exceptions per datagram and logs
them through Twisted, which the CLI never routes anywhere, so without this an internal error
would be invisible. Tests assert that stderr holds no traceback.
"""
from __future__ import annotations

import csv
import json
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

HOST = "127.0.0.1"
SCENARIOS = Path(__file__).parent / "scenarios"
CONFORMANCE = Path(__file__).resolve().parents[3] / "shared" / "conformance"
SIPP = shutil.which("sipp")

# ``ng911 ua`` with Twisted's error-level log events (caught handler failures, unhandled errors
# in Deferreds or delayed calls) written to stderr.
_BOOT = """
import sys
from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate,
                            globalLogBeginner, textFileLogObserver)
globalLogBeginner.beginLoggingTo(
    [FilteringLogObserver(textFileLogObserver(sys.stderr),
                          [LogLevelFilterPredicate(defaultLogLevel=LogLevel.error)])],
    redirectStandardIO=False)
from ng911.cli import main
sys.exit(main(sys.argv[1:]))
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if SIPP is None:
        skip = pytest.mark.skip(reason="sipp (Debian sip-tester) is not installed")
        for item in items:
            if "sipp" in getattr(item, "fixturenames", ()):
                item.add_marker(skip)


# --- ports ------------------------------------------------------------------------------------

_handed_out: set[int] = set()


#: where free_port looks: below Linux's ephemeral range (32768-60999), so that a port handed out
#: here is not taken meanwhile by the source port of some outgoing connection (a node's
#: PostgreSQL sessions, a TCP leg) before the process meant to bind it does
PORT_RANGE = (20000, 32767)


def free_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1 right now, never handed out twice a session."""
    for _ in range(500):
        port = random.randint(*PORT_RANGE)
        if port in _handed_out:
            continue
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            tcp.bind((HOST, port))
            udp.bind((HOST, port))
        except OSError:
            continue
        finally:
            tcp.close()
            udp.close()
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port pair on 127.0.0.1")


def media_port() -> int:
    """SIPp's ``-mp``: it binds that port and the next three (audio and video RTP/RTCP), so all
    four must be free (one taken made a SIPp exit at start: "Unable to bind video RTP socket")."""
    for _ in range(500):
        base = random.randint(PORT_RANGE[0], PORT_RANGE[1] - 3) & ~1
        block = range(base, base + 4)
        if any(p in _handed_out for p in block):
            continue
        sockets = []
        try:
            for p in block:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    sock = socket.socket(socket.AF_INET, kind)
                    sockets.append(sock)
                    sock.bind((HOST, p))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        _handed_out.update(block)
        return base
    raise RuntimeError("no four free ports in a row on 127.0.0.1")


def port_bound(port: int, proto: str) -> bool:
    """Whether some socket is bound to 127.0.0.1/0.0.0.0:port (UDP) or listening on it (TCP),
    read from /proc/net so the check never touches the port itself."""
    table = Path("/proc/net/udp" if proto == "udp" else "/proc/net/tcp")
    want = f"{port:04X}"
    for line in table.read_text().splitlines()[1:]:
        cols = line.split()
        addr, _, p = cols[1].partition(":")
        if p == want and addr in ("0100007F", "00000000") and (proto == "udp" or cols[3] == "0A"):
            return True
    return False


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _kill(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """Stop a process we started: SIGTERM, then SIGKILL; always reaped."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)
        except ProcessLookupError:
            pass
    proc.wait(timeout=grace)


# --- the ng911 agent --------------------------------------------------------------------------


class UaProcess:
    """One ``ng911 ua`` process; stdout read by a thread into lines and JSON events."""

    def __init__(self, argv: list[str], workdir: Path, name: str, port: int) -> None:
        self.argv, self.name, self.port = argv, name, port
        self.stderr_path = workdir / f"{name}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self._stdout_copy = open(workdir / f"{name}.stdout", "w")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
            cwd=workdir, text=True, bufsize=1,
        )
        self.lines: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            try:
                self._stdout_copy.write(line + "\n")
                self._stdout_copy.flush()
            except ValueError:  # closed at teardown
                pass
            with self._cond:
                self.lines.append(line)
                if line.startswith("{"):
                    try:
                        self.events.append(json.loads(line))
                    except ValueError:
                        pass
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def target(self) -> str:
        return f"{HOST}:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def named(self, event: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e.get("event") == event]

    def wait_event(self, event: str, timeout: float, match: Callable[[dict[str, Any]], bool] = lambda e: True) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events:
                    if e.get("event") == event and match(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"{self.name}: no {event!r} event within {timeout}s "
                        f"(exit={self.proc.poll()}); stdout tail: {self.lines[-5:]}; "
                        f"stderr: {self.stderr_text()[-2000:]}"
                    )
                self._cond.wait(min(left, 0.2))

    def wait_exit(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout}s; stdout tail: {self.lines[-5:]}")
        self._reader.join(timeout=5)
        return rc

    def stderr_text(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def tracebacks(self) -> list[str]:
        """Python tracebacks and Twisted error/critical log events written to stderr."""
        text = self.stderr_text()
        chunks = re.split(r"\n(?=\S)", text)
        return [c for c in chunks if "Traceback" in c or "#critical]" in c or "#error]" in c]

    def stop(self) -> None:
        try:
            _kill(self.proc)
        finally:
            self._reader.join(timeout=5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self._stdout_copy.close()
            self._stderr.close()


class UaFactory:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[UaProcess] = []

    def _start(self, role_args: list[str], *, name: str, port: int | None, options: tuple[str, ...]) -> UaProcess:
        port = port or free_port()
        argv = [sys.executable, "-c", _BOOT, "ua", "--listen", f"{HOST}:{port}", *options, *role_args]
        proc = UaProcess(argv, self.workdir, f"{name}-{len(self.procs)}", port)
        self.procs.append(proc)
        return proc

    def answer(self, *args: str, options: tuple[str, ...] = (), port: int | None = None, timeout: float = 20.0) -> UaProcess:
        """Start ``ng911 ua answer`` and wait for its "listening" event (and both sockets)."""
        proc = self._start(["answer", *args], name="answer", port=port, options=options)
        ev = proc.wait_event("listening", timeout)
        assert ev["udp"] == proc.port and ev["tcp"] == proc.port, ev
        return proc

    def call(self, target: str, *args: str, options: tuple[str, ...] = (), port: int | None = None) -> UaProcess:
        """Start ``ng911 ua call TARGET ...``; the test waits for it with ``wait_exit``."""
        return self._start(["call", target, *args], name="call", port=port, options=options)

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def ua(tmp_path: Path) -> Iterator[UaFactory]:
    factory = UaFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


# --- SIPp -------------------------------------------------------------------------------------


@dataclass
class SippResult:
    returncode: int
    stats: dict[str, str]
    screen: str
    errors: str
    workdir: Path
    messages: Path | None

    @property
    def successful(self) -> int:
        return int(self.stats.get("SuccessfulCall(C)", -1))

    @property
    def failed(self) -> int:
        return int(self.stats.get("FailedCall(C)", -1))

    @property
    def created(self) -> int:
        return int(self.stats.get("TotalCallCreated", -1))

    @property
    def retransmissions(self) -> int:
        return int(self.stats.get("Retransmissions(C)", -1))

    def summary(self) -> str:
        return (f"sipp rc={self.returncode} successful={self.successful} failed={self.failed} "
                f"created={self.created} retrans={self.retransmissions}\nerrors:\n{self.errors[-3000:]}\n"
                f"screen tail:\n{self.screen[-2500:]}")


@dataclass
class SippProcess:
    name: str
    port: int
    transport: str
    workdir: Path
    argv: list[str]
    proc: subprocess.Popen[bytes] = field(init=False)
    trace_msg: bool = False

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._out = open(self.workdir / "stdout.log", "wb")
        self.proc = subprocess.Popen(self.argv, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=subprocess.STDOUT)

    def wait_bound(self, timeout: float = 10.0) -> None:
        """Wait until SIPp has bound its SIP port (UDP socket, or TCP listener)."""
        proto = "tcp" if self.transport == "t1" else "udp"
        wait_until(lambda: port_bound(self.port, proto) or self.proc.poll() is not None, timeout,
                   f"SIPp to bind {proto}/{self.port}")
        assert self.proc.poll() is None, f"SIPp exited early: {self.result().summary()}"

    def wait(self, timeout: float) -> SippResult:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(self.proc)
            raise AssertionError(f"SIPp {self.name} still running after {timeout}s:\n{self.result().summary()}")
        return self.result()

    def result(self) -> SippResult:
        self._out.flush()
        stats: dict[str, str] = {}
        stf = self.workdir / "stats.csv"
        if stf.exists():
            rows = [r for r in csv.reader(stf.read_text(errors="replace").splitlines(), delimiter=";") if r]
            if len(rows) >= 2:
                stats = dict(zip(rows[0], rows[-1]))
        screen = (self.workdir / "stdout.log").read_text(errors="replace")
        if not stats:  # fall back on the final statistics screen
            for label, key in (("Successful call", "SuccessfulCall(C)"), ("Failed call", "FailedCall(C)")):
                found = re.findall(rf"{label}\s*\|\s*\d+\s*\|\s*(\d+)", screen)
                if found:
                    stats[key] = found[-1]
        err = self.workdir / "errors.log"
        errors = err.read_text(errors="replace") if err.exists() else ""
        msgs = self.workdir / "messages.log"
        return SippResult(self.proc.returncode if self.proc.returncode is not None else -999,
                          stats, screen, errors, self.workdir, msgs if msgs.exists() else None)

    def stop(self) -> None:
        try:
            _kill(self.proc)
        finally:
            self._out.close()


class SippFactory:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[SippProcess] = []

    def start(
        self,
        scenario: str,
        *extra: str,
        remote: str | None = None,
        transport: str = "u1",
        calls: int = 1,
        rate: float | None = None,
        timeout: float = 30.0,
        port: int | None = None,
        trace_msg: bool = False,
    ) -> SippProcess:
        """Start SIPp. ``scenario``: a built-in name ("uac", "uas") or a file in scenarios/."""
        port = port or free_port()
        name = f"sipp-{len(self.procs)}-{Path(scenario).stem}"
        workdir = self.workdir / name
        scen = ["-sn", scenario] if scenario in ("uac", "uas") else ["-sf", str(SCENARIOS / scenario)]
        argv = [SIPP, *scen]
        if remote:
            argv.append(remote)
        argv += [
            "-t", transport, "-i", HOST, "-p", str(port), "-m", str(calls),
            "-nostdin", "-timeout", f"{timeout:g}", "-timeout_error",
            "-cp", str(free_port()), "-mp", str(media_port()),
            "-trace_stat", "-stf", "stats.csv", "-fd", "1",
            "-trace_err", "-error_file", "errors.log",
        ]
        if rate is not None:
            argv += ["-r", f"{rate:g}"]
        if trace_msg:
            argv += ["-trace_msg", "-message_file", "messages.log"]
        argv += list(extra)
        proc = SippProcess(name, port, transport, workdir, [str(a) for a in argv], trace_msg=trace_msg)
        self.procs.append(proc)
        return proc

    def run(self, scenario: str, *extra: str, wait: float | None = None, **kw: Any) -> SippResult:
        """Start SIPp and wait for it to exit (bounded: its -timeout plus a margin)."""
        proc = self.start(scenario, *extra, **kw)
        return proc.wait(wait if wait is not None else kw.get("timeout", 30.0) + 15)

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[SippFactory]:
    factory = SippFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


# --- a raw SIP endpoint -----------------------------------------------------------------------


@dataclass
class SipResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    raw: bytes

    _COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "l": "content-length",
                "k": "supported", "m": "contact", "c": "content-type"}

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if self._COMPACT.get(n.lower(), n.lower()) == name]

    def tokens(self, name: str) -> set[str]:
        return {t.strip().upper() for v in self.get_all(name) for t in v.split(",") if t.strip()}

    @classmethod
    def parse(cls, data: bytes) -> "SipResponse | None":
        head, _, _ = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        m = re.match(r"SIP/2\.0 (\d{3}) ?(.*)", lines[0])
        if not m:
            return None
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and headers:
                headers[-1] = (headers[-1][0], headers[-1][1] + " " + line.strip())
                continue
            name, colon, value = line.partition(":")
            if colon:
                headers.append((name.strip(), value.strip()))
        return cls(int(m.group(1)), m.group(2), headers, data)


def split_stream(buf: bytearray) -> list[bytes]:
    """Cut complete messages (head + Content-Length body) off the front of a stream buffer."""
    out: list[bytes] = []
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return out
        m = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)", bytes(buf[:end]))
        total = end + 4 + (int(m.group(1)) if m else 0)
        if len(buf) < total:
            return out
        out.append(bytes(buf[:total]))
        del buf[:total]


def sip_request(method: str, *, transport: str, local_port: int, agent_port: int, uri: str | None = None,
                headers: dict[str, str | None] | None = None, extra: list[str] | tuple[str, ...] = (),
                body: bytes = b"", call_id: str | None = None) -> tuple[bytes, str]:
    """A well-formed request and its Call-ID; ``headers`` overrides (None removes) a default."""
    call_id = call_id or f"{secrets.token_hex(8)}@{HOST}"
    uri = uri or f"sip:ng911@{HOST}:{agent_port}"
    base: dict[str, str | None] = {
        "Via": f"SIP/2.0/{transport.upper()} {HOST}:{local_port};branch=z9hG4bK{secrets.token_hex(8)};rport",
        "Max-Forwards": "70",
        "From": f"<sip:probe@{HOST}:{local_port}>;tag={secrets.token_hex(4)}",
        "To": f"<sip:ng911@{HOST}:{agent_port}>",
        "Call-ID": call_id,
        "CSeq": f"1 {method}",
    }
    base.update(headers or {})
    lines = [f"{method} {uri} SIP/2.0"]
    lines += [f"{k}: {v}" for k, v in base.items() if v is not None]
    lines += list(extra)
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body, call_id


class SipProbe:
    """Sends raw SIP to the agent over UDP or TCP (one connection) and collects responses."""

    def __init__(self, transport: str, agent_port: int) -> None:
        self.transport = transport.upper()
        self.agent = (HOST, agent_port)
        if self.transport == "UDP":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((HOST, 0))
        else:
            self.sock = socket.create_connection(self.agent, timeout=5)
        self.port = self.sock.getsockname()[1]
        self._buf = bytearray()
        self._pending: list[SipResponse] = []

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "SipProbe":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, **kw: Any) -> tuple[bytes, str]:
        """A well-formed request from this probe (see :func:`sip_request`)."""
        return sip_request(method, transport=self.transport, local_port=self.port, agent_port=self.agent[1], **kw)

    def send(self, data: bytes) -> None:
        if self.transport == "UDP":
            self.sock.sendto(data, self.agent)
        else:
            self.sock.sendall(data)

    def _read(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            if self.transport == "UDP":
                data, _ = self.sock.recvfrom(65535)
                parsed = SipResponse.parse(data)
                if parsed:
                    self._pending.append(parsed)
            else:
                data = self.sock.recv(65535)
                if not data:
                    raise ConnectionError("agent closed the TCP connection")
                self._buf += data
                for msg in split_stream(self._buf):
                    parsed = SipResponse.parse(msg)
                    if parsed:
                        self._pending.append(parsed)
        except (socket.timeout, BlockingIOError):
            pass

    def response(self, timeout: float = 5.0, *, call_id: str | None = None, final: bool = True,
                 cseq_method: str | None = None) -> SipResponse:
        """The next response matching (skipping provisional ones when ``final``)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, r in enumerate(self._pending):
                if call_id is not None and r.get("call-id") != call_id:
                    continue
                if final and r.status < 200:
                    continue
                if cseq_method and (r.get("cseq") or "").split()[-1:] != [cseq_method]:
                    continue
                return self._pending.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching response within {timeout}s (call_id={call_id})")
            self._read(min(left, 0.5))

    def exchange(self, method: str, timeout: float = 5.0, **kw: Any) -> SipResponse:
        data, call_id = self.request(method, **kw)
        self.send(data)
        return self.response(timeout, call_id=call_id)


@pytest.fixture
def sip_probe() -> Iterator[Callable[[str, int], SipProbe]]:
    probes: list[SipProbe] = []

    def make(transport: str, agent_port: int) -> SipProbe:
        probe = SipProbe(transport, agent_port)
        probes.append(probe)
        return probe

    try:
        yield make
    finally:
        for p in probes:
            p.close()


def assert_clean(*procs: UaProcess) -> None:
    """No Python traceback / Twisted error-level log event on an agent's stderr."""
    for proc in procs:
        bad = proc.tracebacks()
        assert not bad, f"{proc.name} logged errors:\n" + "\n".join(bad)[:4000]


# --- figures for the terminal summary ----------------------------------------------------------

REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section("integration figures")
        for line in REPORT:
            terminalreporter.write_line(line)
