"""Stream transport and manager logic with a fake clock and fake connections (no real time)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from ng911.sip.transport.flow import Destination, Flow, TransportError
from ng911.sip.transport.framing import FramingError
from ng911.sip.transport.manager import TransportManager
from ng911.sip.transport.stream import StreamConnection, TcpTransport
from ng911.sip.transport.udp import SipDatagramProtocol

MSG = b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nl: 0\r\n\r\n"
LOCAL = ("127.0.0.1", 5060)


class Harness:
    def __init__(self, **options: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.messages: list[tuple[bytes, Flow]] = []
        self.errors: list[tuple[Flow, TransportError]] = []
        self.bad: list[tuple[Flow, FramingError]] = []
        options.setdefault("on_bad_stream", self.on_bad_stream)
        self.stream = TcpTransport(self.reactor, on_message=self.on_message,
                                   on_transport_error=self.on_error, **options)

    def on_message(self, data: bytes, flow: Flow) -> None:
        self.messages.append((data, flow))

    def on_error(self, flow: Flow, error: TransportError) -> None:
        self.errors.append((flow, error))

    def on_bad_stream(self, flow: Flow, error: FramingError) -> bytes | None:
        self.bad.append((flow, error))
        return b"SIP/2.0 %d %s\r\n\r\n" % (error.status_hint, error.reason.encode())

    def complete_connect(self, index: int = -1, local_port: int = 40000,
                         peer: tuple[str, int] | None = None) -> tuple[StreamConnection, StringTransport]:
        host, port, factory, _timeout, _bind = self.reactor.tcpClients[index]
        peer = peer or (host, port)
        proto = factory.buildProtocol(IPv4Address("TCP", *peer))
        transport = StringTransport(IPv4Address("TCP", "127.0.0.1", local_port),
                                    IPv4Address("TCP", *peer))
        proto.makeConnection(transport)
        return proto, transport

    def fail_connect(self, index: int = -1) -> None:
        _host, _port, factory, _timeout, _bind = self.reactor.tcpClients[index]
        factory.clientConnectionFailed(self.reactor.connectors[index],
                                       Failure(ConnectionRefusedError()))

    def accept(self, peer: tuple[str, int]) -> tuple[StreamConnection, StringTransport]:
        self.stream.listen("127.0.0.1", 5060)
        factory = self.reactor.tcpServers[-1][1]
        proto = factory.buildProtocol(IPv4Address("TCP", *peer))
        transport = StringTransport(IPv4Address("TCP", *LOCAL), IPv4Address("TCP", *peer))
        proto.makeConnection(transport)
        return proto, transport


def lose(proto: StreamConnection) -> None:
    proto.connectionLost(Failure(ConnectionDone()))


# -- connecting on demand, queueing, reuse -------------------------------------------------------


def test_sends_wait_for_the_connection_and_go_out_in_order() -> None:
    h = Harness(connect_timeout=7.0)
    dest = Destination("TCP", "127.0.0.1", 5070)
    h.stream.send(b"one", dest)
    h.stream.send(b"two", dest)
    assert len(h.reactor.tcpClients) == 1
    host, port, _f, timeout, _b = h.reactor.tcpClients[0]
    assert (host, port, timeout) == ("127.0.0.1", 5070, 7.0)
    _proto, transport = h.complete_connect()
    assert transport.value() == b"onetwo"
    h.stream.send(b"three", dest)
    assert transport.value() == b"onetwothree"
    assert len(h.reactor.tcpClients) == 1


def test_accepted_connection_is_reused_for_its_remote_address() -> None:
    h = Harness()
    _proto, transport = h.accept(("127.0.0.1", 5070))
    h.stream.send(b"req", Destination("TCP", "127.0.0.1", 5070))
    assert transport.value() == b"req"
    assert h.reactor.tcpClients == []


def test_a_closed_connection_is_not_reused() -> None:
    h = Harness()
    dest = Destination("TCP", "127.0.0.1", 5070)
    h.stream.send(b"one", dest)
    proto, _ = h.complete_connect()
    lose(proto)
    h.stream.send(b"two", dest)
    assert len(h.reactor.tcpClients) == 2
    _proto2, transport2 = h.complete_connect(local_port=40001)
    assert transport2.value() == b"two"


def test_hostname_connection_is_indexed_under_name_and_address() -> None:
    h = Harness()
    h.stream.send(b"one", Destination("TCP", "ap1.psap.test", 5070))
    proto, transport = h.complete_connect(peer=("127.0.0.9", 5070))
    assert h.stream.reusable(("ap1.psap.test", 5070)) is proto
    assert h.stream.reusable(("127.0.0.9", 5070)) is proto
    h.stream.send(b"two", Destination("TCP", "127.0.0.9", 5070))
    assert transport.value() == b"onetwo"
    lose(proto)
    assert h.stream.reusable(("ap1.psap.test", 5070)) is None


def test_response_goes_over_the_connection_by_id_even_with_two_to_one_peer() -> None:
    h = Harness()
    p1, t1 = h.accept(("127.0.0.1", 40001))
    p2, t2 = h.accept(("127.0.0.1", 40002))
    p1.dataReceived(MSG)
    flow = h.messages[0][1]
    assert flow.connection_id == p1.connection_id != p2.connection_id
    h.stream.send(b"resp", flow)
    assert (t1.value(), t2.value()) == (b"resp", b"")


# -- failures --------------------------------------------------------------------------------------


def test_refused_connect_fails_each_pending_send_after_the_current_turn() -> None:
    h = Harness()
    dest = Destination("TCP", "127.0.0.1", 5070)
    h.stream.send(b"one", dest)
    h.stream.send(b"two", dest)
    h.fail_connect()
    assert h.errors == []
    h.reactor.advance(0)
    assert [e.data for _, e in h.errors] == [b"one", b"two"]
    flow, error = h.errors[0]
    assert flow == Flow("TCP", ("", 0), ("127.0.0.1", 5070))
    assert isinstance(error.cause, Failure) and error.cause.check(ConnectionRefusedError)
    # the next send tries again
    h.stream.send(b"three", dest)
    assert len(h.reactor.tcpClients) == 2


def test_send_on_a_flow_whose_connection_closed_is_a_transport_error() -> None:
    h = Harness()
    proto, _ = h.accept(("127.0.0.1", 40001))
    proto.dataReceived(MSG)
    flow = h.messages[0][1]
    lose(proto)
    h.stream.send(b"late", flow)
    h.reactor.advance(0)
    assert [(f, e.reason, e.data) for f, e in h.errors] == [(flow, "connection closed", b"late")]
    assert h.reactor.tcpClients == []  # never reconnects to an ephemeral port


def test_pending_queue_is_bounded() -> None:
    h = Harness(max_pending=2)
    dest = Destination("TCP", "127.0.0.1", 5070)
    for data in (b"1", b"2", b"3"):
        h.stream.send(data, dest)
    h.reactor.advance(0)
    assert [(e.reason, e.data) for _, e in h.errors] == [("send queue full", b"3")]


def test_handler_exception_does_not_break_the_connection() -> None:
    h = Harness()
    calls: list[bytes] = []

    def explode(data: bytes, flow: Flow) -> None:
        calls.append(data)
        raise RuntimeError("bug upstairs")

    h.stream.on_message = explode
    proto, transport = h.accept(("127.0.0.1", 40001))
    proto.dataReceived(MSG + MSG)
    assert calls == [MSG, MSG]
    assert not transport.disconnecting


# -- keep-alive and framing errors ---------------------------------------------------------------


def test_ping_is_answered_with_a_pong() -> None:
    h = Harness()
    proto, transport = h.accept(("127.0.0.1", 40001))
    proto.dataReceived(b"\r\n\r\n")
    assert transport.value() == b"\r\n"
    assert h.messages == []


def test_framing_error_delivers_earlier_messages_replies_and_closes() -> None:
    h = Harness()
    proto, transport = h.accept(("127.0.0.1", 40001))
    proto.dataReceived(MSG + b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n")
    assert [d for d, _ in h.messages] == [MSG]
    assert h.bad[0][1].status_hint == 400
    assert transport.value() == b"SIP/2.0 400 Missing Content-Length\r\n\r\n"
    assert transport.disconnecting
    assert h.stream.reusable(("127.0.0.1", 40001)) is None
    proto.dataReceived(MSG)  # anything still arriving is ignored
    assert len(h.messages) == 1


def test_manager_answers_a_request_with_400_before_closing() -> None:
    reactor = MemoryReactorClock()
    mgr = TransportManager(reactor, lambda d, f: None, lambda f, e: None)
    mgr.listen_tcp("127.0.0.1", 5060)
    factory = reactor.tcpServers[-1][1]
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001))
    transport = StringTransport(IPv4Address("TCP", *LOCAL), IPv4Address("TCP", "127.0.0.1", 40001))
    proto.makeConnection(transport)
    proto.dataReceived(
        b"INVITE sip:sos@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK9\r\n"
        b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:sos@127.0.0.1>\r\nCall-ID: c\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 1048577\r\n\r\n")
    reply = transport.value()
    assert reply.startswith(b"SIP/2.0 413 Request Entity Too Large\r\n")
    assert b"branch=z9hG4bK9" in reply
    assert transport.disconnecting


def test_manager_sends_nothing_for_an_unparseable_or_response_head() -> None:
    reactor = MemoryReactorClock()
    mgr = TransportManager(reactor, lambda d, f: None, lambda f, e: None)
    mgr.listen_tcp("127.0.0.1", 5060)
    factory = reactor.tcpServers[-1][1]
    for head in (b"garbage here\r\n\r\n", b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\n"):
        proto = factory.buildProtocol(None)
        transport = StringTransport(IPv4Address("TCP", *LOCAL), IPv4Address("TCP", "127.0.0.1", 40001))
        proto.makeConnection(transport)
        proto.dataReceived(head)
        assert transport.value() == b""
        assert transport.disconnecting


# -- idle close (one timer per connection, re-armed for the remainder) ---------------------------


def test_idle_connection_closes_only_after_the_timeout_since_last_activity() -> None:
    h = Harness(idle_timeout=30.0)
    proto, transport = h.accept(("127.0.0.1", 40001))
    h.reactor.advance(20)
    proto.dataReceived(MSG)            # activity at t=20
    h.reactor.advance(15)              # t=35: 15 s idle
    assert not transport.disconnecting
    h.stream.send(b"resp", h.messages[0][1])   # sending is activity too (t=35)
    h.reactor.advance(29)              # t=64
    assert not transport.disconnecting
    h.reactor.advance(1)               # t=65: 30 s idle
    assert transport.disconnecting
    lose(proto)
    assert h.reactor.getDelayedCalls() == []
    assert h.stream.connections == ()


def test_idle_timeout_can_be_disabled() -> None:
    h = Harness(idle_timeout=None)
    _proto, transport = h.accept(("127.0.0.1", 40001))
    assert h.reactor.getDelayedCalls() == []
    h.reactor.advance(10**6)
    assert not transport.disconnecting


def test_lost_connection_cancels_its_idle_timer() -> None:
    h = Harness(idle_timeout=30.0)
    proto, _ = h.accept(("127.0.0.1", 40001))
    assert len(h.reactor.getDelayedCalls()) == 1
    lose(proto)
    assert h.reactor.getDelayedCalls() == []


def test_a_connection_the_far_end_closed_is_reported_on_the_next_turn() -> None:
    """A peer whose process died (kill -9) has its kernel close its connections: the earliest
    sign of its death, reported as on_connection_lost (the health monitor probes it)."""
    lost: list[tuple[Flow, str]] = []
    h = Harness(on_connection_lost=lambda flow, why: lost.append((flow, why)))
    h.stream.send(b"INVITE", Destination("TCP", "127.0.0.1", 5070))
    proto, _ = h.complete_connect(local_port=40000)
    lose(proto)
    assert lost == []                      # never inside the Twisted callback
    h.reactor.advance(0)
    assert lost == [(Flow("TCP", ("127.0.0.1", 40000), ("127.0.0.1", 5070), proto.connection_id),
                     "Connection was closed cleanly.")]
    assert h.errors == []                  # not a failed send: nothing was being sent


def test_connections_closed_here_are_not_reported_as_lost() -> None:
    lost: list[tuple[Flow, str]] = []
    h = Harness(idle_timeout=30.0, on_connection_lost=lambda flow, why: lost.append((flow, why)))
    idle, _ = h.accept(("127.0.0.1", 40001))
    h.reactor.advance(30)                  # idle: we close it
    lose(idle)
    bad, _ = h.accept(("127.0.0.1", 40002))
    bad.dataReceived(b"GARBAGE\r\n\r\n")  # framing error: we close it
    lose(bad)
    shut, _ = h.accept(("127.0.0.1", 40003))
    h.stream.close_all()                   # shutdown
    lose(shut)
    h.reactor.advance(0)
    assert lost == []


# -- manager routing (fake reactor) -----------------------------------------------------------


def test_manager_response_fallback_when_the_connection_is_gone() -> None:
    reactor = MemoryReactorClock()
    errors: list[object] = []
    mgr = TransportManager(reactor, lambda d, f: None, lambda f, e: errors.append(e))
    gone = Flow("TCP", LOCAL, ("127.0.0.1", 40001), 999_999)
    mgr.send(b"resp", gone, fallback=Destination("TCP", "127.0.0.1", 5999))
    assert [(h, p) for h, p, *_ in reactor.tcpClients] == [("127.0.0.1", 5999)]
    assert errors == []


def test_manager_reports_an_unavailable_transport_later_not_inside_send() -> None:
    reactor = MemoryReactorClock()
    errors: list[tuple[Flow, TransportError]] = []
    mgr = TransportManager(reactor, lambda d, f: None, lambda f, e: errors.append((f, e)))
    mgr.send(b"x", Destination("TLS", "127.0.0.1", 5061))
    mgr.send(b"y", Destination("UDP", "127.0.0.1", 5060))  # no UDP socket yet
    assert errors == []
    reactor.advance(0)
    assert [e.reason for _, e in errors] == ["transport TLS not available",
                                            "no UDP socket for this address family"]


def test_manager_registers_a_stream_transport_by_name() -> None:
    class FakeTls(TcpTransport):
        transport_name = "TLS"

    reactor = MemoryReactorClock()
    mgr = TransportManager(reactor, lambda d, f: None, lambda f, e: None)
    mgr.add_stream_transport(FakeTls(reactor, on_message=lambda d, f: None,
                                     on_transport_error=lambda f, e: None))
    mgr.send(b"x", Destination("TLS", "127.0.0.1", 5061))
    assert [(h, p) for h, p, *_ in reactor.tcpClients] == [("127.0.0.1", 5061)]


# -- UDP protocol without a socket ---------------------------------------------------------------


class FakeUdpTransport:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.fail = fail

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", *LOCAL)

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.fail is not None:
            raise self.fail
        self.written.append((data, addr))


def test_udp_protocol_flow_and_drop() -> None:
    got: list[tuple[bytes, Flow]] = []
    proto = SipDatagramProtocol(lambda d, f: got.append((d, f)))
    proto.makeConnection(FakeUdpTransport())  # type: ignore[arg-type]
    proto.datagramReceived(b"", ("10.0.0.1", 5060))
    proto.datagramReceived(b"\r\n\r\n", ("10.0.0.1", 5060))
    proto.datagramReceived(MSG, ("10.0.0.1", 5061))
    assert got == [(MSG, Flow("UDP", LOCAL, ("10.0.0.1", 5061)))]
    assert (proto.keepalives_dropped, proto.received) == (2, 1)


def test_udp_send_failure_is_reported() -> None:
    failures: list[tuple[Flow, bytes, BaseException]] = []
    proto = SipDatagramProtocol(lambda d, f: None,
                                on_send_error=lambda f, d, e: failures.append((f, d, e)))
    proto.makeConnection(FakeUdpTransport(fail=OSError(90, "Message too long")))  # type: ignore[arg-type]
    assert proto.send(b"big", ("10.0.0.1", 5060)) is False
    assert failures[0][0] == Flow("UDP", LOCAL, ("10.0.0.1", 5060))
    assert failures[0][1] == b"big"


@pytest.mark.parametrize("addr", [("10.0.0.1", 5060), ("::1", 5060, 0, 0)])
def test_udp_flow_keeps_host_and_port_only(addr: tuple[Any, ...]) -> None:
    got: list[Flow] = []
    proto = SipDatagramProtocol(lambda d, f: got.append(f))
    proto.makeConnection(FakeUdpTransport())  # type: ignore[arg-type]
    proto.datagramReceived(MSG, addr)
    assert got[0].remote == addr[:2]
