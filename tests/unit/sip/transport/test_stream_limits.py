"""Stream limits (StreamTransport.set_guard) with a fake clock and fake connections."""
from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from ng911.sip.limits import UNTRUSTED_IDLE_TIMEOUT, ConnectionCounter
from ng911.sip.transport.flow import Flow
from ng911.sip.transport.stream import StreamConnection, StreamGuard, TcpTransport

MSG = b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nl: 0\r\n\r\n"
TRUSTED = "127.0.0.1"


class Harness:
    def __init__(self, *, max_total: int = 10, per_source: int = 2, buffer: int = 4096,
                 first: float = 10.0) -> None:
        self.reactor = MemoryReactorClock()
        self.messages: list[tuple[bytes, Flow]] = []
        self.shed: list[str] = []
        self.stream = TcpTransport(self.reactor, on_message=lambda d, f: self.messages.append((d, f)),
                                   on_transport_error=lambda f, e: None, idle_timeout=300.0)
        self.counter = ConnectionCounter(max_total, per_source)
        self.stream.set_guard(StreamGuard(self.counter, lambda flow: flow.remote[0] == TRUSTED,
                                          self.shed.append, buffer=buffer, first_message_timeout=first))
        self.stream.listen("127.0.0.1", 5060)
        self.port = 40000

    def accept(self, host: str) -> tuple[StreamConnection, Any]:
        self.port += 1
        factory = self.reactor.tcpServers[-1][1]
        proto = factory.buildProtocol(IPv4Address("TCP", host, self.port))
        transport = StringTransport(IPv4Address("TCP", "127.0.0.1", 5060), IPv4Address("TCP", host, self.port))
        aborted: list[bool] = []

        def abort() -> None:  # StringTransport has no abortConnection: count, then lose
            aborted.append(True)
            proto.connectionLost(Failure(ConnectionDone()))

        transport.abortConnection = abort  # type: ignore[attr-defined]
        transport.aborted = aborted  # type: ignore[attr-defined]
        proto.makeConnection(transport)
        return proto, transport


def test_an_untrusted_source_over_its_share_is_closed_at_once() -> None:
    h = Harness(per_source=2)
    conns = [h.accept("127.0.0.9") for _ in range(3)]
    assert [bool(t.aborted) for _, t in conns] == [False, False, True]
    assert h.shed == ["connections_per_source"] and h.counter.total == 2
    assert len(h.stream.connections) == 2
    conns[0][0].connectionLost(Failure(ConnectionDone()))
    assert h.counter.total == 1
    assert not h.accept("127.0.0.9")[1].aborted  # a place freed


def test_past_the_total_untrusted_connections_are_closed_trusted_ones_kept() -> None:
    h = Harness(max_total=3, per_source=10)
    for i in range(3):
        h.accept(f"127.0.0.{10 + i}")
    _, t = h.accept("127.0.0.20")
    assert t.aborted and h.shed == ["connections_cap"]
    _, t = h.accept(TRUSTED)
    assert not t.aborted and h.counter.total == 4


def test_a_connection_buffering_past_the_limit_is_closed() -> None:
    h = Harness(buffer=4096)
    proto, t = h.accept("127.0.0.9")
    proto.dataReceived(b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nX: " + b"a" * 2000)
    assert not t.aborted
    proto.dataReceived(b"a" * 3000)  # no end of headers in sight: refused as too large
    assert h.shed == ["buffer"] and not proto.open


def test_a_message_larger_than_the_buffer_is_refused_from_its_head() -> None:
    h = Harness(buffer=4096)
    proto, t = h.accept("127.0.0.9")
    proto.dataReceived(b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nl: 100000\r\n\r\n")
    assert h.shed == ["buffer"] and not proto.open and h.messages == []


def test_an_untrusted_connection_without_a_whole_message_in_time_is_closed() -> None:
    h = Harness(first=10.0)
    slow, st = h.accept("127.0.0.9")
    fast, ft = h.accept("127.0.0.8")
    trusted, tt = h.accept(TRUSTED)
    slow.dataReceived(b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\n")  # and then one octet a second...
    fast.dataReceived(MSG)
    h.reactor.advance(10.0)
    assert st.aborted and not ft.aborted and not tt.aborted
    assert h.shed == ["first_message_timeout"] and len(h.messages) == 1


def test_untrusted_connections_idle_out_sooner_than_trusted_ones() -> None:
    h = Harness()
    untrusted, ut = h.accept("127.0.0.9")
    trusted, tt = h.accept(TRUSTED)
    untrusted.dataReceived(MSG)
    trusted.dataReceived(MSG)
    h.reactor.advance(UNTRUSTED_IDLE_TIMEOUT)
    assert ut.disconnecting and not tt.disconnecting
    h.reactor.advance(300.0)
    assert tt.disconnecting


def test_a_message_within_the_buffer_passes_whole_one_beyond_it_by_its_head_gets_413() -> None:
    h = Harness(buffer=4096)
    proto, t = h.accept("127.0.0.9")
    body = b"x" * 3900
    head = b"MESSAGE sip:a@127.0.0.1 SIP/2.0\r\nl: %d\r\n\r\n" % len(body)
    proto.dataReceived(head)
    proto.dataReceived(body)
    assert len(h.messages) == 1 and h.shed == []
    big = b"x" * 4080  # its body alone fits, head + body does not
    proto.dataReceived(b"MESSAGE sip:a@127.0.0.1 SIP/2.0\r\nl: %d\r\n\r\n" % len(big))
    assert h.shed == ["buffer"] and not proto.open
