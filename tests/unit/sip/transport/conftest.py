"""Fixtures for real-reactor loopback tests: turn the global reactor by hand, never run() it."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pytest

from ng911.sip.transport.flow import Flow, TransportError
from ng911.sip.transport.manager import TransportManager

DEADLINE = 5.0


@dataclass
class Loop:
    """The real reactor, turned in small steps until a condition holds (or 5 s pass)."""

    reactor: Any
    sockets: list[socket.socket] = field(default_factory=list)
    managers: list[TransportManager] = field(default_factory=list)

    def spin(self, condition: Callable[[], object], timeout: float = DEADLINE) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met within %.1fs" % timeout)
            self.reactor.iterate(0.005)

    def turn(self, seconds: float = 0.05) -> None:
        """Let the reactor run for a while (to show that something does NOT happen)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.reactor.iterate(0.005)

    def socket(self, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        s = socket.socket(socket.AF_INET, kind)
        s.setblocking(False)
        self.sockets.append(s)
        return s

    def recv(self, s: socket.socket, size: int = 65536) -> bytes:
        """Turn the reactor until ``s`` has data; return it."""
        got: list[bytes] = []

        def ready() -> bool:
            try:
                got.append(s.recv(size))
            except BlockingIOError:
                return False
            return True

        self.spin(ready)
        return got[0]

    def recv_until(self, s: socket.socket, size: int) -> bytes:
        buf = b""
        while len(buf) < size:
            chunk = self.recv(s)
            if not chunk:
                break
            buf += chunk
        return buf

    def accept(self, server: socket.socket) -> socket.socket:
        got: list[socket.socket] = []

        def ready() -> bool:
            try:
                conn, _ = server.accept()
            except BlockingIOError:
                return False
            conn.setblocking(False)
            self.sockets.append(conn)
            got.append(conn)
            return True

        self.spin(ready)
        return got[0]

    def manager(self, **options: Any) -> Recorder:
        rec = Recorder()
        mgr = TransportManager(self.reactor, rec.on_message, rec.on_error, **options)
        self.managers.append(mgr)
        rec.manager = mgr
        return rec


@dataclass
class Recorder:
    messages: list[tuple[bytes, Flow]] = field(default_factory=list)
    errors: list[tuple[Flow, TransportError]] = field(default_factory=list)
    manager: TransportManager = None  # type: ignore[assignment]

    def on_message(self, data: bytes, flow: Flow) -> None:
        self.messages.append((data, flow))

    def on_error(self, flow: Flow, error: TransportError) -> None:
        self.errors.append((flow, error))


@pytest.fixture
def loop() -> Iterator[Loop]:
    from twisted.internet import reactor

    lp = Loop(reactor)
    before = set(reactor.getDelayedCalls())
    try:
        yield lp
    finally:
        for s in lp.sockets:
            s.close()
        done: list[bool] = []
        for mgr in lp.managers:
            mgr.stop().addBoth(lambda _: done.append(True))
        lp.spin(lambda: len(done) == len(lp.managers)
                and not any(m.tcp.connections for m in lp.managers))
        lp.turn(0.02)  # deferred error reports fire
        leaked = [c for c in reactor.getDelayedCalls() if c not in before and c.active()]
        for call in leaked:
            call.cancel()
        assert not leaked, "delayed calls left behind: %r" % (leaked,)
