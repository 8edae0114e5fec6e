"""Fixtures for the controller integration tests: ``ng911 serve`` as a real process, SIPp callers
and answer points over 127.0.0.1, a real PostgreSQL database (tests/pg.py) per test.

- ``db_url``: a fresh, empty PostgreSQL database for the test (dropped after it).
- ``node_factory``: ``start(aps=[...], ...)`` writes a TOML config into tmp_path (the node and its
  answer points on free ports, LAN timers made faster), runs ``ng911 migrate`` then
  ``ng911 serve`` with the URL in ``NG911_DATABASE_URL``, and waits for its ``serving`` line.
  ``Node`` reads the store (``SqlStore`` reads, plus every call row), metrics and its log.
- ``sipp``: starts SIPp processes with ``-nostdin``, ``-timeout Ns -timeout_error``, ``-aa`` and
  ``-trace_msg``/``-message_file`` into tmp_path; ``SippProcess.messages()`` parses the message
  log so tests assert on what SIPp sent and received.

Answer point scenarios end themselves: SIPp counts the OPTIONS it auto-answers (``-aa``) as calls,
so ``-m`` cannot tell when an answer point is done. Each AP scenario counts its own completed
calls down from ``-set left N`` and runs ``<exec int_cmd="stop_now"/>`` at zero: SIPp then exits
with status 97 ("exit on internal command"), which here means "every call reached the end of the
scenario". A call that fails (unexpected message, failed regexp check) never gets there, and the
AP runs into its ``-timeout`` (status 255).

SIPp 3.6.1 notes: ``-timeout`` alone does not stop a SIPp whose call is stuck (with
``-timeout_error`` it exits 255 on time); ``[next_url]`` is only set by a ``<recv rrs="true">``;
status codes are read at load time, so refusals other than 486 are ``scenario_variant()`` copies.

Every process started here is killed in a finalizer (SIGTERM, then SIGKILL), by its own pid.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import sqlalchemy as sa

from tests.integration.conftest import free_port, media_port, port_bound, wait_until
from tests.pg import pg_server, postgres_url  # noqa: F401  (pg_server is a fixture)

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
CONFORMANCE_INVITES = HERE.parents[3] / "shared" / "conformance" / "ng911-dev" / "SIP_INVITE"
NG911 = str(Path(sys.executable).parent / "ng911")
SIPP = "sipp"


def stop_process(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` s; always reaped. Only this process, by pid."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


# --- SIP messages as SIPp logged them ------------------------------------------------------------


@dataclass
class SipMsg:
    at: float  # epoch seconds (SIPp's local-time stamp)
    direction: str  # "sent" | "received"
    raw: bytes

    @property
    def head(self) -> str:
        return self.raw.partition(b"\r\n\r\n")[0].decode("utf-8", "replace")

    @property
    def body(self) -> bytes:
        return self.raw.partition(b"\r\n\r\n")[2]

    @property
    def start_line(self) -> str:
        return self.head.split("\r\n", 1)[0]

    @property
    def is_request(self) -> bool:
        return not self.start_line.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        """The request's method, or the CSeq method of a response."""
        if self.is_request:
            return self.start_line.split(" ", 1)[0]
        return (self.header("CSeq") or " ").split()[-1]

    @property
    def status(self) -> int | None:
        return None if self.is_request else int(self.start_line.split()[1])

    def headers(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for line in self.head.split("\r\n")[1:]:
            if line[:1] in (" ", "\t") and out:
                out[-1] = (out[-1][0], out[-1][1] + " " + line.strip())
                continue
            name, _, value = line.partition(":")
            out.append((name.strip(), value.strip()))
        return out

    def header_all(self, name: str) -> list[str]:
        compact = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
                   "c": "content-type", "k": "supported"}
        name = name.lower()
        return [v for n, v in self.headers() if compact.get(n.lower(), n.lower()) == name]

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def parts(self) -> list[tuple[dict[str, str], bytes]]:
        """Body parts (headers lower-cased, body bytes) of a multipart body; a plain body is
        one part. Written from RFC 2046 here, independent of ng911's own parser."""
        ctype = self.header("Content-Type") or ""
        if not self.body:
            return []
        if not ctype.lower().startswith("multipart/"):
            return [({"content-type": ctype}, self.body)]
        m = re.search(r'boundary="?([^";]+)"?', ctype, re.I)
        assert m, ctype
        delim = b"--" + m.group(1).encode()
        chunks = self.body.split(delim)
        out = []
        for chunk in chunks[1:]:
            if chunk.startswith(b"--"):
                break
            chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
            head, _, body = chunk.partition(b"\r\n\r\n")
            if body.endswith(b"\r\n"):  # the CRLF before the next delimiter belongs to it
                body = body[:-2]
            hdrs = {}
            for line in head.decode("utf-8", "replace").split("\r\n"):
                n, _, v = line.partition(":")
                if n:
                    hdrs[n.strip().lower()] = v.strip()
            out.append((hdrs, body))
        return out

    def sdp(self) -> bytes | None:
        for hdrs, body in self.parts():
            if hdrs.get("content-type", "").split(";")[0].strip().lower() == "application/sdp":
                return body
        return None


_BLOCK = re.compile(
    rb"^-{47} (\d{4}-\d\d-\d\d[ \t]\d\d:\d\d:\d\d\.\d+)\n(?:UDP|TCP|TLS) message "
    rb"(?:(received) \[(\d+)\] bytes :|(sent) \((\d+) bytes\):)\n\n",
    re.M,
)


def parse_message_log(path: Path) -> list[SipMsg]:
    data = path.read_bytes() if path.exists() else b""
    out = []
    for m in _BLOCK.finditer(data):
        stamp = m.group(1).decode().replace("\t", " ")
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
        direction = (m.group(2) or m.group(4)).decode()
        n = int(m.group(3) or m.group(5))
        out.append(SipMsg(at, direction, data[m.end():m.end() + n]))
    return out


def sdp_origin(sdp: bytes | None) -> tuple[str, int, int]:
    """(username, session id, version) of an SDP's o= line."""
    assert sdp, "no SDP"
    m = re.search(rb"^o=(\S+) (\d+) (\d+) ", sdp, re.M)
    assert m, sdp
    return m.group(1).decode(), int(m.group(2)), int(m.group(3))


# --- SIPp -----------------------------------------------------------------------------------------


class SippProcess:
    def __init__(self, workdir: Path, name: str, argv: list[str], port: int, transport: str = "u1") -> None:
        self.workdir, self.name, self.argv, self.port = workdir, name, argv, port
        self.proto = "tcp" if transport == "t1" else "udp"
        workdir.mkdir(parents=True, exist_ok=True)
        self._out = open(workdir / "stdout.log", "wb")
        self.proc = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT)

    def wait_bound(self, timeout: float = 10.0) -> SippProcess:
        wait_until(lambda: port_bound(self.port, self.proto) or self.proc.poll() is not None, timeout,
                   f"{self.name} to bind {self.proto}/{self.port}")
        assert self.proc.poll() is None, f"{self.name} exited early:\n{self.summary()}"
        return self

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
            raise AssertionError(f"{self.name} still running after {timeout}s\n{self.summary()}") from None

    def kill9(self) -> float:
        """SIGKILL now; returns the time it was sent."""
        at = time.time()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=5)
        return at

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def messages(self) -> list[SipMsg]:
        return parse_message_log(self.workdir / "messages.log")

    def received(self, method: str | None = None, *, requests: bool = True) -> list[SipMsg]:
        return [m for m in self.messages() if m.direction == "received" and m.is_request == requests
                and (method is None or m.method == method)]

    def sent(self, method: str | None = None, *, requests: bool = True) -> list[SipMsg]:
        return [m for m in self.messages() if m.direction == "sent" and m.is_request == requests
                and (method is None or m.method == method)]

    def stats(self) -> dict[str, str]:
        path = self.workdir / "stats.csv"
        if not path.exists():
            return {}
        rows = [r for r in csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";") if r]
        return dict(zip(rows[0], rows[-1])) if len(rows) >= 2 else {}

    def summary(self) -> str:
        self._out.flush()
        errors = self.workdir / "errors.log"
        logs = self.workdir / "actions.log"
        screen = (self.workdir / "stdout.log").read_text(errors="replace")
        msgs = [f"{m.direction}: {m.start_line}" for m in self.messages()
                if not (m.method == "OPTIONS")]
        return (f"{self.name}: rc={self.proc.poll()} argv={' '.join(self.argv)}\n"
                f"errors:\n{_errors(errors)[-3000:]}\n"
                f"log actions:\n{logs.read_text(errors='replace')[-1500:] if logs.exists() else ''}\n"
                f"messages (no OPTIONS):\n" + "\n".join(msgs[-40:]) + f"\nscreen tail:\n{screen[-1500:]}")

    def stop(self) -> None:
        try:
            stop_process(self.proc)
        finally:
            self._out.close()


def _errors(path: Path) -> str:
    """SIPp's error log without the notes about auto-answered OPTIONS (one per probe)."""
    if not path.exists():
        return ""
    text = path.read_text(errors="replace")
    items = re.split(r"(?=\d{4}-\d\d-\d\d\t\d\d:\d\d:\d\d\.\d+\t)", text)
    return "\n".join(i.strip() for i in items if i.strip() and "Automatic response mode" not in i)


class SippFactory:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[SippProcess] = []

    def _start(self, scenario: str | Path, remote: str | None, *, port: int | None, timeout: float,
               extra: list[str], keys: dict[str, str], sets: dict[str, str], transport: str = "u1") -> SippProcess:
        path = Path(scenario) if os.path.isabs(scenario) else SCENARIOS / scenario
        assert path.exists(), path
        port = port or free_port()
        name = f"sipp{len(self.procs)}-{path.stem}-{port}"
        argv = [SIPP, "-sf", str(path)]
        if remote:
            argv.append(remote)
        argv += ["-i", HOST, "-p", str(port), "-t", transport, "-nostdin", "-aa",
                 "-timeout", f"{timeout:g}s", "-timeout_error",
                 "-cp", str(free_port()), "-mp", str(media_port()),
                 "-trace_msg", "-message_file", "messages.log",
                 "-trace_err", "-error_file", "errors.log",
                 "-trace_logs", "-log_file", "actions.log",
                 "-trace_stat", "-stf", "stats.csv", "-fd", "1"]
        for k, v in keys.items():
            argv += ["-key", k, v]
        for k, v in sets.items():
            argv += ["-set", k, v]
        argv += extra
        proc = SippProcess(self.workdir / name, name, argv, port, transport)
        self.procs.append(proc)
        return proc

    def ap(self, scenario: str | Path, ap: Ap, *, calls: int = 1, timeout: float = 30.0,
           keys: dict[str, str] | None = None, extra: list[str] = ()) -> SippProcess:  # type: ignore[assignment]
        """Answer point ``ap`` (its port and transport): a UAS that stops itself (exit 97) after
        ``calls`` complete calls. ``[apname]`` in the scenario is the AP's name."""
        proc = self._start(scenario, None, port=ap.port, timeout=timeout, extra=list(extra),
                           keys={"apname": ap.name, **(keys or {})}, sets={"left": str(calls)},
                           transport=ap.sipp_transport)
        return proc.wait_bound()

    def caller(self, scenario: str | Path, node: Node, *, calls: int = 1, limit: int | None = None,
               rate: float | None = None, hold_ms: int = 500, timeout: float = 30.0, port: int | None = None,
               keys: dict[str, str] | None = None, extra: list[str] = ()) -> SippProcess:  # type: ignore[assignment]
        """A caller towards the node: ``-m calls``, ``<pause/>`` lasting ``hold_ms``; exit 0 = every
        call succeeded."""
        argv = ["-m", str(calls), "-d", str(hold_ms), "-s", "sos"]
        if limit is not None:
            argv += ["-l", str(limit)]
        if rate is not None:
            argv += ["-r", f"{rate:g}"]
        return self._start(scenario, f"{HOST}:{node.sip_port}", port=port, timeout=timeout,
                           extra=argv + list(extra), keys=dict(keys or {}), sets={})

    def close(self) -> None:
        for p in self.procs:
            p.stop()


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[SippFactory]:
    factory = SippFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


# --- the node -------------------------------------------------------------------------------------


@dataclass
class Ap:
    name: str
    port: int = field(default_factory=free_port)
    capacity: int = 1
    ring_timeout: float = 4.0
    no_provisional_timeout: float = 1.0
    transport: str | None = None  # the URI's transport parameter: None, "udp" or "tcp"

    @property
    def uri(self) -> str:
        param = f";transport={self.transport}" if self.transport else ""
        return f"sip:{self.name}@{HOST}:{self.port}{param}"

    @property
    def sipp_transport(self) -> str:
        return "t1" if self.transport == "tcp" else "u1"


def node_config(*, name: str, sip_port: int, metrics_port: int, api_port: int, aps: list[Ap],
                trusted: tuple[str, ...] = ("127.0.0.0/8",), extra: str = "") -> str:
    """single-node.toml on free ports, with faster LAN timers (answer points on loopback)."""
    quoted = ", ".join(f'"{t}"' for t in trusted)
    lines = [
        "[node]", f'name = "{name}"', "",
        "[sip]", f'host = "{HOST}"', f"port = {sip_port}", 'transports = ["udp", "tcp"]', "",
        "[sip.timers]", "t1 = 0.5", "t2 = 4.0", "t4 = 5.0", "",
        "[upstream]", f"trusted = [{quoted}]", "",
        "[routing]", 'emergency_queue = "main"', f'psap_uris = ["sip:sos@{HOST}:{sip_port}"]', "",
        "[[queues]]", 'name = "main"', "alternates = []", "",
    ]
    for ap in aps:
        lines += ["[[queues.answer_points]]", f'name = "{ap.name}"', f'uri = "{ap.uri}"',
                  f"ring_timeout = {ap.ring_timeout}", f"no_provisional_timeout = {ap.no_provisional_timeout}",
                  f"capacity = {ap.capacity}", ""]
    lines += [
        "[health]", "options_interval = 0.5", "options_timeout = 0.5", "down_after = 2", "up_after = 1", "",
        "[failover]", "session_expires = 90", "min_se = 90", "in_dialog_options_interval = 1.0",
        "hunt_backoff_initial = 0.5", "hunt_backoff_max = 2.0", "",
        "[api]", f'host = "{HOST}"', f"port = {api_port}", "",
        "[metrics]", f'host = "{HOST}"', f"port = {metrics_port}", "",
        '[database]', 'url = ""', "",
    ]
    return "\n".join(lines) + "\n" + extra


class Node:
    """One ``ng911 serve`` process and ways to look at it."""

    def __init__(self, workdir: Path, config: Path, db_url: str, sip_port: int, metrics_port: int,
                 direct_db_url: str | None = None) -> None:
        self.workdir, self.config, self.db_url = workdir, config, db_url
        self.direct_db_url = direct_db_url or db_url  # the database itself, not through a proxy
        self.sip_port, self.metrics_port = sip_port, metrics_port
        self.env = {**os.environ, "NG911_DATABASE_URL": db_url}
        self.stderr_path = workdir / "node.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([NG911, "serve", "--config", str(config)] + (["--log-level", "debug"] if "trace = true" in config.read_text() else []), cwd=workdir, env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
                                     text=True, bufsize=1)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._engine: sa.engine.Engine | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_serving(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith("{") and json.loads(line).get("event") == "serving":
                        return json.loads(line)
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"node not serving (rc={self.proc.poll()}): stdout={self.lines}\n"
                                         f"stderr tail:\n{self.stderr_text()[-3000:]}")
                self._cond.wait(min(left, 0.2))

    # --- what it says ---------------------------------------------------------------------------
    def stderr_text(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stderr_text().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def internal_errors(self) -> list[str]:
        """Error-level records and tracebacks: a handler that blew up, an unhandled Deferred."""
        bad = [json.dumps(r)[:1500] for r in self.log_records()
               if r.get("level") in ("error", "critical") or "exc" in r]
        bad += [line for line in self.stderr_text().splitlines() if line.startswith("Traceback")]
        return bad

    def assert_clean(self) -> None:
        bad = self.internal_errors()
        assert not bad, "node logged errors:\n" + "\n".join(bad[:10])

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://{HOST}:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.metrics().items() if n == name and want <= set(ls))

    # --- the database ---------------------------------------------------------------------------
    @property
    def engine(self) -> sa.engine.Engine:
        if self._engine is None:
            from ng911.store.db import engine_for

            self._engine = engine_for(self.direct_db_url)
        return self._engine

    def store(self) -> Any:
        """An unstarted SqlStore on the database: its blocking reads only."""
        from ng911.store.store import SqlStore

        return SqlStore(engine=self.engine)

    def all_calls(self) -> list[dict[str, Any]]:
        from ng911.store import models

        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(models.calls).order_by(models.calls.c.created_at))
            return [dict(r._mapping) for r in rows]

    def events(self, call_id: str) -> list[dict[str, Any]]:
        return self.store().events(call_id)

    def kinds(self, call_id: str) -> list[str]:
        return [e["kind"] for e in self.events(call_id)]

    def wait_calls(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str) -> list[dict[str, Any]]:
        box: list[list[dict[str, Any]]] = []

        def check() -> bool:
            box[:] = [self.all_calls()]
            return predicate(box[0])

        wait_until(check, timeout, what, interval=0.1)
        return box[0]

    def wait_ended(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Every one of ``count`` calls ended in the DB and its 'ended' event written."""
        def done(calls: list[dict[str, Any]]) -> bool:
            return len(calls) == count and all(c["ended_at"] is not None for c in calls) and all(
                "ended" in self.kinds(c["call_id"]) for c in calls)

        return self.wait_calls(done, timeout, f"{count} ended calls in the database")

    def stop(self) -> int | None:
        try:
            stop_process(self.proc, grace=10.0)
        finally:
            self._reader.join(timeout=5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self._stderr.close()
            if self._engine is not None:
                self._engine.dispose()
        return self.proc.returncode


class NodeFactory:
    def __init__(self, workdir: Path, db_url: str) -> None:
        self.workdir, self.db_url = workdir, db_url
        self.nodes: list[Node] = []

    def write_config(self, aps: list[Ap], *, name: str = "it", trusted: tuple[str, ...] = ("127.0.0.0/8",),
                     extra: str = "") -> tuple[Path, int, int]:
        sip_port, metrics_port = free_port(), free_port()
        text = node_config(name=name, sip_port=sip_port, metrics_port=metrics_port, api_port=free_port(),
                           aps=aps, trusted=trusted, extra=extra)
        path = self.workdir / f"{name}.toml"
        path.write_text(text)
        return path, sip_port, metrics_port

    def migrate(self, config: Path, db_url: str) -> None:
        res = subprocess.run([NG911, "migrate", "--config", str(config)], cwd=self.workdir,
                             env={**os.environ, "NG911_DATABASE_URL": db_url}, capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, f"migrate failed: {res.stdout}\n{res.stderr}"

    def start(self, aps: list[Ap], *, name: str = "it", trusted: tuple[str, ...] = ("127.0.0.0/8",),
              db_url: str | None = None, migrate: bool = True) -> Node:
        """Migrate (through ``db_url`` when given: a proxy) and serve."""
        config, sip_port, metrics_port = self.write_config(aps, name=name, trusted=trusted)
        url = db_url or self.db_url
        if migrate:
            self.migrate(config, self.db_url)
        node = Node(self.workdir, config, url, sip_port, metrics_port, direct_db_url=self.db_url)
        self.nodes.append(node)
        node.wait_serving()
        return node

    def close(self) -> None:
        for n in self.nodes:
            n.stop()


@pytest.fixture
def db_url(pg_server: str) -> Iterator[str]:  # noqa: F811
    with postgres_url(pg_server) as url:
        yield url


@pytest.fixture
def node_factory(tmp_path: Path, db_url: str) -> Iterator[NodeFactory]:
    factory = NodeFactory(tmp_path, db_url)
    try:
        yield factory
    finally:
        factory.close()


def scenario_variant(tmp_path: Path, name: str, replace: dict[str, str]) -> Path:
    """A copy of scenarios/``name`` in tmp_path with each ``old`` (present once) replaced."""
    text = (SCENARIOS / name).read_text("iso-8859-1")
    for old, new in replace.items():
        assert text.count(old) == 1, f"{name}: {old!r} not found once"
        text = text.replace(old, new)
    path = tmp_path / f"variant-{len(list(tmp_path.glob('variant-*')))}-{name}"
    path.write_text(text, "iso-8859-1")
    return path


def expect_rc(proc: SippProcess, want: int, timeout: float) -> None:
    rc = proc.wait(timeout)
    assert rc == want, f"{proc.name} exited {rc}, expected {want}\n{proc.summary()}"
