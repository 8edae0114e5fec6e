"""ICMP errors on UDP (RFC 3261 §18.4): the error-queue parsing, the kernel's side on loopback,
and the Twisted port that reads them (real reactor, turned by hand: see conftest.Loop)."""

from __future__ import annotations

import errno
import socket
import struct
import sys

import pytest

from ng911.sip.transport.flow import Flow
from ng911.sip.transport.icmp import (
    IP_RECVERR,
    IPV6_RECVERR,
    SO_EE_ORIGIN_ICMP,
    SO_EE_ORIGIN_ICMP6,
    SO_EE_ORIGIN_LOCAL,
    SOL_IP,
    SOL_IPV6,
    ExtendedError,
    drain_error_queue,
    enable_recverr,
    parse_error_message,
    parse_extended_err,
    parse_sockaddr,
)
from ng911.sip.transport.udp import RecvErrPort

from .conftest import Loop

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_RECVERR is Linux's")


def sockaddr_in(host: str, port: int) -> bytes:
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) + bytes(8)


def sockaddr_in6(host: str, port: int) -> bytes:
    return (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0)
            + socket.inet_pton(socket.AF_INET6, host) + struct.pack("=I", 0))


def ee(errno_: int, origin: int, type_: int, code: int, info: int = 0, data: int = 0) -> bytes:
    return struct.pack("=IBBBBII", errno_, origin, type_, code, 0, info, data)


# -- parsing ---------------------------------------------------------------------------------------


def test_a_port_unreachable_is_parsed_with_its_offender() -> None:
    raw = ee(errno.ECONNREFUSED, SO_EE_ORIGIN_ICMP, 3, 3) + sockaddr_in("192.0.2.7", 0)
    err = parse_extended_err(SOL_IP, IP_RECVERR, raw)
    assert err == ExtendedError(errno.ECONNREFUSED, SO_EE_ORIGIN_ICMP, 3, 3, 0, 0, ("192.0.2.7", 0))
    assert err.is_icmp and err.is_send_failure
    assert err.describe() == "ICMP port unreachable (type 3 code 3), ECONNREFUSED from 192.0.2.7"


def test_an_icmpv6_error_and_its_offender() -> None:
    raw = ee(errno.ECONNREFUSED, SO_EE_ORIGIN_ICMP6, 1, 4) + sockaddr_in6("2001:db8::1", 0)
    err = parse_extended_err(SOL_IPV6, IPV6_RECVERR, raw)
    assert err is not None and err.offender == ("2001:db8::1", 0) and err.is_send_failure
    assert err.describe().startswith("ICMPv6 port unreachable (type 1 code 4)")


@pytest.mark.parametrize("origin, type_, code, failure", [
    (SO_EE_ORIGIN_ICMP, 3, 0, True),    # network unreachable
    (SO_EE_ORIGIN_ICMP, 3, 1, True),    # host unreachable
    (SO_EE_ORIGIN_ICMP, 3, 2, True),    # protocol unreachable
    (SO_EE_ORIGIN_ICMP, 3, 3, True),    # port unreachable
    (SO_EE_ORIGIN_ICMP, 3, 4, False),   # fragmentation needed: a path MTU, not an absent peer
    (SO_EE_ORIGIN_ICMP, 3, 13, True),   # administratively prohibited
    (SO_EE_ORIGIN_ICMP, 4, 0, False),   # source quench: ignored (§18.4)
    (SO_EE_ORIGIN_ICMP, 11, 0, False),  # TTL exceeded: ignored (§18.4)
    (SO_EE_ORIGIN_ICMP, 12, 0, True),   # parameter problem
    (SO_EE_ORIGIN_ICMP6, 1, 4, True),   # port unreachable
    (SO_EE_ORIGIN_ICMP6, 1, 3, True),   # address unreachable
    (SO_EE_ORIGIN_ICMP6, 2, 0, False),  # packet too big
    (SO_EE_ORIGIN_ICMP6, 3, 0, False),  # hop limit exceeded
    (SO_EE_ORIGIN_ICMP6, 4, 0, True),   # parameter problem
    (SO_EE_ORIGIN_LOCAL, 0, 0, False),  # a local error (e.g. EMSGSIZE): not the peer's
])
def test_rfc3261_18_4_says_which_errors_are_failures_to_send(origin: int, type_: int, code: int,
                                                               failure: bool) -> None:
    err = parse_extended_err(SOL_IP, IP_RECVERR, ee(errno.EHOSTUNREACH, origin, type_, code))
    assert err is not None and err.is_send_failure is failure


def test_other_control_messages_and_short_data_are_not_errors() -> None:
    raw = ee(errno.ECONNREFUSED, SO_EE_ORIGIN_ICMP, 3, 3) + sockaddr_in("127.0.0.1", 0)
    assert parse_extended_err(SOL_IP, 8, raw) is None            # IP_PKTINFO, say
    assert parse_extended_err(socket.SOL_SOCKET, IP_RECVERR, raw) is None
    assert parse_extended_err(SOL_IP, IP_RECVERR, raw[:10]) is None
    # a local error carries no offender (AF_UNSPEC)
    local = parse_extended_err(SOL_IP, IP_RECVERR, ee(errno.EMSGSIZE, SO_EE_ORIGIN_LOCAL, 0, 0, 1400) + bytes(16))
    assert local is not None and local.offender is None and local.info == 1400


def test_sockaddrs() -> None:
    assert parse_sockaddr(sockaddr_in("10.1.2.3", 5070)) == ("10.1.2.3", 5070)
    assert parse_sockaddr(sockaddr_in6("::1", 5071)) == ("::1", 5071)
    assert parse_sockaddr(bytes(16)) is None   # AF_UNSPEC
    assert parse_sockaddr(b"\x02") is None


def test_an_error_queue_message_gives_destination_payload_and_error() -> None:
    anc = [(SOL_IP, IP_RECVERR, ee(errno.ECONNREFUSED, SO_EE_ORIGIN_ICMP, 3, 3) + sockaddr_in("127.0.0.1", 0))]
    item = parse_error_message(b"OPTIONS sip:ap1@127.0.0.1:5070 SIP/2.0\r\n", anc, ("127.0.0.1", 5070))
    assert item is not None
    assert item.destination == ("127.0.0.1", 5070) and item.payload.startswith(b"OPTIONS ")
    assert item.error.errno == errno.ECONNREFUSED
    assert parse_error_message(b"x", [], ("127.0.0.1", 5070)) is None


# -- the kernel, on loopback -----------------------------------------------------------------------


def closed_udp_port() -> int:
    """A loopback UDP port nobody listens on (bound, then closed: a 'dead position')."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_readable_error(s: socket.socket) -> None:
    import select

    poller = select.poll()
    poller.register(s, select.POLLIN)
    assert poller.poll(2000), "no error queued within 2 s"


@linux_only
def test_linux_queues_a_port_unreachable_for_an_unconnected_socket_with_ip_recverr() -> None:
    dead = closed_udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        assert enable_recverr(s)
        s.sendto(b"OPTIONS sip:ap@127.0.0.1 SIP/2.0\r\n\r\n", ("127.0.0.1", dead))
        wait_readable_error(s)
        # the pending error: the next send to ANY address fails once with it...
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED  # (and clears it)
        (item,) = drain_error_queue(s)
        assert item.destination == ("127.0.0.1", dead)
        assert item.payload == b"OPTIONS sip:ap@127.0.0.1 SIP/2.0\r\n\r\n"
        assert (item.error.origin, item.error.type, item.error.code) == (SO_EE_ORIGIN_ICMP, 3, 3)
        assert item.error.errno == errno.ECONNREFUSED and item.error.offender == ("127.0.0.1", 0)
        assert item.error.is_send_failure
        assert drain_error_queue(s) == []  # drained; never blocks


@linux_only
def test_without_ip_recverr_nothing_is_queued() -> None:
    dead = closed_udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        s.sendto(b"x", ("127.0.0.1", dead))
        s.sendto(b"y", ("127.0.0.1", dead))
        assert drain_error_queue(s) == []


# -- the Twisted port --------------------------------------------------------------------------------


@linux_only
def test_a_dead_udp_peer_is_a_transport_error_for_its_flow(loop: Loop) -> None:
    rec = loop.manager()
    listening = rec.manager.listen_udp("127.0.0.1", 0)
    assert isinstance(listening, RecvErrPort) and listening.recverr
    port = listening.getHost().port
    dead = closed_udp_port()
    rec.manager.send(b"OPTIONS sip:ap1@127.0.0.1 SIP/2.0\r\n\r\n", Flow("UDP", ("127.0.0.1", port), ("127.0.0.1", dead)))
    loop.spin(lambda: rec.errors)
    (flow, error), = rec.errors
    assert flow == Flow("UDP", ("127.0.0.1", port), ("127.0.0.1", dead))
    assert error.flow == flow and "port unreachable" in error.reason and "ECONNREFUSED" in error.reason
    assert error.data == b"OPTIONS sip:ap1@127.0.0.1 SIP/2.0\r\n\r\n"
    assert rec.manager.udp[0].icmp_errors == 1


@linux_only
def test_the_socket_lives_on_and_loses_nothing_after_an_icmp_error(loop: Loop) -> None:
    """A stock Twisted port with IP_RECVERR would drop the next datagram sent (the pending
    error fails that sendto and Twisted swallows ECONNREFUSED) and be closed by the reactor
    (POLLERR alone reads as a half-close)."""
    rec = loop.manager()
    port = rec.manager.listen_udp("127.0.0.1", 0).getHost().port
    live = loop.socket()
    live.bind(("127.0.0.1", 0))
    dead = closed_udp_port()
    for i in range(3):
        rec.manager.send(b"to the dead %d" % i, Flow("UDP", ("127.0.0.1", port), ("127.0.0.1", dead)))
        # same reactor turn: on loopback the ICMP is already queued when sendto returns
        rec.manager.send(b"to the living %d" % i, Flow("UDP", ("127.0.0.1", port), live.getsockname()))
        assert loop.recv(live) == b"to the living %d" % i
    loop.spin(lambda: len(rec.errors) == 3)
    loop.turn(0.05)  # only POLLERR pending now, at times: the reactor must keep reading
    assert rec.manager._udp_ports[0].connected
    live.sendto(b"still listening", ("127.0.0.1", port))
    loop.spin(lambda: rec.messages)
    assert rec.messages[0][0] == b"still listening"
    assert len(rec.errors) == 3 and {f.remote for f, _ in rec.errors} == {("127.0.0.1", dead)}
