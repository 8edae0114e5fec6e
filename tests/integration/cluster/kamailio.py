"""The cluster's front, for tests: the real ``deploy/kamailio/kamailio.cfg`` run by a real
Kamailio in the foreground, on a free loopback port (UDP and TCP), with its dispatcher list, pid
file, runtime directory and control socket in a test's tmp dir.

    kam = Kamailio(tmp_path / "kamailio", nodes=[("127.0.0.1", 5060), ("127.0.0.1", 5062)])
    kam.start()            # returns once it answers an OPTIONS (UDP and TCP)
    ... send calls to kam.uri ...
    kam.stop()             # SIGTERM, then SIGKILL; bounded

``nodes`` go into both dispatcher sets (1: UDP, 2: TCP), as in ``deploy/kamailio/dispatcher.list``.
Kamailio logs to stderr (``-E``), kept in ``workdir/kamailio.log``: ``log_text()`` reads it, so a
failing test can show what the front decided (one info line per routing decision).
"""
from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from tests.integration.conftest import free_port
from tests.integration.controller.conftest import stop_process

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "deploy" / "kamailio" / "kamailio.cfg"
KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"


def dispatcher_list(nodes: Sequence[tuple[str, int]]) -> str:
    """A dispatcher list with every node in set 1 (UDP) and set 2 (TCP)."""
    lines = ["# written by tests/integration/cluster/kamailio.py"]
    for i, (host, port) in enumerate(nodes, 1):
        lines.append(f"1 sip:{host}:{port} 0 0 name=node{i}")
        lines.append(f"2 sip:{host}:{port};transport=tcp 0 0 name=node{i}")
    return "\n".join(lines) + "\n"


def options_ping(port: int, transport: str = "udp", timeout: float = 0.5) -> int | None:
    """Send one OPTIONS to 127.0.0.1:port; the status code of the answer, or None."""
    transport = transport.lower()
    sock_type = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, sock_type) as sock:
        sock.settimeout(timeout)
        try:
            if transport == "udp":
                sock.bind((HOST, 0))
            else:
                sock.connect((HOST, port))
            local = sock.getsockname()[1]
            call_id = secrets.token_hex(8)
            msg = (f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/{transport.upper()} {HOST}:{local};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
                   f"Max-Forwards: 70\r\n"
                   f"From: <sip:probe@{HOST}:{local}>;tag={secrets.token_hex(4)}\r\n"
                   f"To: <sip:{HOST}:{port}>\r\n"
                   f"Call-ID: {call_id}@{HOST}\r\n"
                   f"CSeq: 1 OPTIONS\r\n"
                   f"Content-Length: 0\r\n\r\n").encode()
            if transport == "udp":
                sock.sendto(msg, (HOST, port))
                data = sock.recv(65535)
            else:
                sock.sendall(msg)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(65535)
                    if not chunk:
                        break
                    data += chunk
        except OSError:
            return None
    first = data.split(b"\r\n", 1)[0].split()
    if len(first) >= 2 and first[0] == b"SIP/2.0" and first[1].isdigit():
        return int(first[1])
    return None


class Kamailio:
    """One Kamailio process running the deployment config."""

    def __init__(self, workdir: Path, nodes: list[tuple[str, int]], port: int | None = None,
                 config: Path = CONFIG) -> None:
        self.workdir = Path(workdir)
        self.nodes = list(nodes)
        self.port = port or free_port()
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    # --- where things are -----------------------------------------------------------------------
    @property
    def uri(self) -> str:
        return f"sip:{HOST}:{self.port}"

    @property
    def list_path(self) -> Path:
        return self.workdir / "dispatcher.list"

    @property
    def log_path(self) -> Path:
        return self.workdir / "kamailio.log"

    @property
    def ctl_socket(self) -> Path:
        return self.workdir / "run" / "kamailio_ctl"

    def argv(self) -> list[str]:
        """The command line: foreground (-DD), log to stderr (-E), pid file and runtime dir in the
        work dir, small memory pools, listen address/port and list path as -A defines."""
        run = self.workdir / "run"
        return [
            KAMAILIO, "-DD", "-E",
            "-f", str(self.config),
            "-Y", str(run),
            "-P", str(run / "kamailio.pid"),
            "-m", "64", "-M", "8",
            "-A", f"LISTEN_IP={HOST}",
            "-A", f"LISTEN_PORT={self.port}",
            "-A", f'DISPATCHER_LIST="{self.list_path}"',
            "-A", f'CTL_SOCKET="unix:{self.ctl_socket}"',
        ]

    # --- life -----------------------------------------------------------------------------------
    def write_list(self, nodes: list[tuple[str, int]] | None = None) -> None:
        if nodes is not None:
            self.nodes = list(nodes)
        self.list_path.write_text(dispatcher_list(self.nodes))

    def start(self, timeout: float = 15.0) -> Kamailio:
        """Start it and return once it answers an OPTIONS over UDP and over TCP."""
        assert self.proc is None, "already started"
        (self.workdir / "run").mkdir(parents=True, exist_ok=True)
        self.write_list()
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv(), cwd=self.workdir, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        ready = {"udp": False, "tcp": False}
        while not all(ready.values()):
            if self.proc.poll() is not None:
                raise AssertionError(f"kamailio exited with {self.proc.returncode}:\n"
                                     f"{' '.join(self.argv())}\n{self.log_text()[-4000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"kamailio did not answer OPTIONS within {timeout}s:\n{self.log_text()[-4000:]}")
            for transport in ready:
                if not ready[transport]:
                    ready[transport] = options_ping(self.port, transport) == 200
            if not all(ready.values()):
                time.sleep(0.1)
        return self

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM (Kamailio stops its children), then SIGKILL after ``grace`` s; always reaped."""
        if self.proc is not None:
            stop_process(self.proc, grace)
        if self._log is not None:
            self._log.close()
            self._log = None

    def rpc(self, *command: str, timeout: float = 10.0) -> str:
        """Run ``kamcmd`` against this Kamailio's control socket (e.g. ``"dispatcher.reload"``)."""
        kamcmd = shutil.which("kamcmd") or "/usr/sbin/kamcmd"
        out = subprocess.run([kamcmd, "-s", f"unix:{self.ctl_socket}", *command], capture_output=True,
                             text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise AssertionError(f"kamcmd {' '.join(command)} failed ({out.returncode}): {out.stderr}{out.stdout}")
        return out.stdout

    def reload(self, nodes: list[tuple[str, int]]) -> None:
        """Rewrite the dispatcher list and have Kamailio reload it (no restart)."""
        self.write_list(nodes)
        self.rpc("dispatcher.reload")

    # --- what it says ---------------------------------------------------------------------------
    def log_text(self) -> str:
        if self._log is not None:
            self._log.flush()
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
