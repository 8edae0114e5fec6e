"""Real sockets on 127.0.0.1 with the real reactor (turned by hand, see conftest.Loop)."""

from __future__ import annotations

import socket

from ng911.sip.builders import make_response
from ng911.sip.message import Request, parse_message
from ng911.sip.transport import Destination, Flow, stamp_received

from .conftest import Loop


def options(branch: str = "z9hG4bK1", *, transport: str = "UDP", body: bytes = b"") -> bytes:
    return (
        "OPTIONS sip:sos@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:5999;rport;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:probe@127.0.0.1>;tag=p1\r\n"
        "To: <sip:sos@127.0.0.1>\r\n"
        f"Call-ID: {branch}@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def bound_port(listening: object) -> int:
    return listening.getHost().port  # type: ignore[attr-defined]


# -- UDP -----------------------------------------------------------------------------------------


def test_udp_datagram_goes_up_with_its_flow_and_a_reply_goes_back(loop: Loop) -> None:
    rec = loop.manager()
    port = bound_port(rec.manager.listen_udp("127.0.0.1", 0))
    client = loop.socket()
    client.bind(("127.0.0.1", 0))
    client.sendto(options(), ("127.0.0.1", port))
    loop.spin(lambda: rec.messages)
    data, flow = rec.messages[0]
    assert data == options()
    assert flow == Flow("UDP", ("127.0.0.1", port), client.getsockname())

    rec.manager.send(b"SIP/2.0 200 OK\r\n\r\n", flow)
    assert loop.recv(client) == b"SIP/2.0 200 OK\r\n\r\n"


def test_udp_whitespace_keepalives_are_dropped_and_counted(loop: Loop) -> None:
    rec = loop.manager()
    port = bound_port(rec.manager.listen_udp("127.0.0.1", 0))
    client = loop.socket()
    for ping in (b"\r\n\r\n", b"\r\n", b" \t\r\n"):
        client.sendto(ping, ("127.0.0.1", port))
    client.sendto(options(), ("127.0.0.1", port))
    loop.spin(lambda: rec.messages)
    proto = rec.manager.udp[0]
    assert [d for d, _ in rec.messages] == [options()]
    assert proto.keepalives_dropped == 3
    assert proto.received == 1


def test_udp_send_to_a_destination_and_response_routing(loop: Loop) -> None:
    rec = loop.manager()
    port = bound_port(rec.manager.listen_udp("127.0.0.1", 0))
    client = loop.socket()
    client.bind(("127.0.0.1", 0))
    client.sendto(options(), ("127.0.0.1", port))
    loop.spin(lambda: rec.messages)
    data, flow = rec.messages[0]
    req = stamp_received(parse_message(data), flow)
    assert req.top_via.rport == client.getsockname()[1]
    route = rec.manager.send_response(make_response(req, 200), flow)  # type: ignore[arg-type]
    assert route.destination.port == client.getsockname()[1]  # rport, not the Via's 5999
    assert loop.recv(client).startswith(b"SIP/2.0 200 OK\r\n")

    rec.manager.send(b"MESSAGE", Destination("UDP", *client.getsockname()))
    assert loop.recv(client) == b"MESSAGE"


# -- TCP -----------------------------------------------------------------------------------------


def tcp_client(loop: Loop, port: int) -> socket.socket:
    client = loop.socket(socket.SOCK_STREAM)
    client.setblocking(True)
    client.connect(("127.0.0.1", port))
    client.setblocking(False)
    return client


def test_tcp_stream_is_framed_and_keepalive_answered(loop: Loop) -> None:
    rec = loop.manager()
    port = bound_port(rec.manager.listen_tcp("127.0.0.1", 0))
    client = tcp_client(loop, port)
    a, b = options("z9hG4bKa", transport="TCP"), options("z9hG4bKb", transport="TCP", body=b"hello")
    client.sendall(a + b[:20])
    loop.spin(lambda: len(rec.messages) == 1)
    client.sendall(b[20:] + b"\r\n\r\n")
    loop.spin(lambda: len(rec.messages) == 2)
    assert [d for d, _ in rec.messages] == [a, b]
    assert loop.recv(client) == b"\r\n"  # RFC 5626 pong
    flow = rec.messages[0][1]
    assert flow.transport == "TCP" and flow.is_reliable
    assert flow.remote == client.getsockname()
    assert flow.local == ("127.0.0.1", port)
    assert rec.messages[1][1] == flow  # same connection, same flow


def test_tcp_response_goes_back_over_the_same_connection(loop: Loop) -> None:
    rec = loop.manager()
    port = bound_port(rec.manager.listen_tcp("127.0.0.1", 0))
    client = tcp_client(loop, port)
    client.sendall(options(transport="TCP"))
    loop.spin(lambda: rec.messages)
    data, flow = rec.messages[0]
    req = stamp_received(parse_message(data), flow)
    assert isinstance(req, Request)
    response = make_response(req, 200)
    route = rec.manager.send_response(response, flow)
    assert route.flow == flow
    assert loop.recv_until(client, len(response.to_bytes())) == response.to_bytes()
    assert len(rec.manager.tcp.connections) == 1


def test_tcp_missing_content_length_gets_400_and_close(loop: Loop) -> None:
    rec = loop.manager()
    port = bound_port(rec.manager.listen_tcp("127.0.0.1", 0))
    client = tcp_client(loop, port)
    bad = options(transport="TCP").replace(b"Content-Length: 0\r\n", b"")
    client.sendall(bad)
    reply = loop.recv_until(client, 1 << 16)  # until EOF
    assert reply.startswith(b"SIP/2.0 400 Missing Content-Length\r\n")
    assert b"branch=z9hG4bK1" in reply
    assert rec.messages == []
    loop.spin(lambda: not rec.manager.tcp.connections)


def test_new_request_reuses_an_open_connection(loop: Loop) -> None:
    rec = loop.manager()
    server = loop.socket(socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    dest = Destination("TCP", *server.getsockname())
    first, second, third = (options(b, transport="TCP") for b in ("z9hG4bK1", "z9hG4bK2", "z9hG4bK3"))
    rec.manager.send(first, dest)
    rec.manager.send(second, dest)  # while still connecting: queued behind the first
    peer = loop.accept(server)
    assert loop.recv_until(peer, len(first + second)) == first + second
    rec.manager.send(third, dest)  # connection open: reused
    assert loop.recv_until(peer, len(third)) == third
    loop.turn(0.05)
    try:
        extra, _ = server.accept()
    except BlockingIOError:
        extra = None
    assert extra is None, "a second connection was opened"
    assert len(rec.manager.tcp.connections) == 1

    # What the far end sends back on it comes up with that connection's flow.
    peer.sendall(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    loop.spin(lambda: rec.messages)
    flow = rec.messages[0][1]
    assert flow.remote == server.getsockname()
    assert flow.connection_id == rec.manager.tcp.connections[0].connection_id
    assert rec.errors == []


def test_connection_refused_becomes_a_transport_error(loop: Loop) -> None:
    rec = loop.manager()
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    dest = Destination("TCP", "127.0.0.1", port)
    rec.manager.send(b"one", dest)
    rec.manager.send(b"two", dest)
    assert rec.errors == []  # never reported from inside send()
    loop.spin(lambda: len(rec.errors) == 2)
    assert [e.data for _, e in rec.errors] == [b"one", b"two"]
    flow, error = rec.errors[0]
    assert flow.transport == "TCP" and flow.remote == ("127.0.0.1", port)
    assert error.flow == flow
    assert "connect failed" in error.reason
    assert rec.manager.tcp.connections == ()


def test_response_falls_back_to_sent_by_when_the_connection_is_gone(loop: Loop) -> None:
    rec = loop.manager()
    port = bound_port(rec.manager.listen_tcp("127.0.0.1", 0))
    fallback_server = loop.socket(socket.SOCK_STREAM)
    fallback_server.bind(("127.0.0.1", 0))
    fallback_server.listen(1)
    sent_by_port = fallback_server.getsockname()[1]
    client = tcp_client(loop, port)
    client.sendall(options(transport="TCP").replace(b"127.0.0.1:5999", b"127.0.0.1:%d" % sent_by_port))
    loop.spin(lambda: rec.messages)
    data, flow = rec.messages[0]
    req = stamp_received(parse_message(data), flow)
    client.close()
    loop.spin(lambda: not rec.manager.tcp.connections)
    response = make_response(req, 200)  # type: ignore[arg-type]
    route = rec.manager.send_response(response, flow)
    assert route.destination == Destination("TCP", "127.0.0.1", sent_by_port)
    peer = loop.accept(fallback_server)
    assert loop.recv_until(peer, len(response.to_bytes())) == response.to_bytes()


def test_idle_connection_is_closed(loop: Loop) -> None:
    rec = loop.manager(idle_timeout=0.2)
    port = bound_port(rec.manager.listen_tcp("127.0.0.1", 0))
    client = tcp_client(loop, port)
    client.sendall(options(transport="TCP"))
    loop.spin(lambda: rec.messages)
    assert len(rec.manager.tcp.connections) == 1
    loop.spin(lambda: not rec.manager.tcp.connections)
    assert loop.recv(client) == b""  # EOF from our side


def test_udp_datagram_larger_than_twisteds_default_is_not_truncated(loop: Loop) -> None:
    rec = loop.manager()
    port = bound_port(rec.manager.listen_udp("127.0.0.1", 0))
    client = loop.socket()
    big = options(body=b"x" * 20000)
    client.sendto(big, ("127.0.0.1", port))
    loop.spin(lambda: rec.messages)
    assert rec.messages[0][0] == big


def test_listen_binds_udp_and_tcp_on_the_same_port(loop: Loop) -> None:
    rec = loop.manager()
    port = rec.manager.listen("127.0.0.1", 0)
    udp_client = loop.socket()
    udp_client.sendto(options(), ("127.0.0.1", port))
    tcp = tcp_client(loop, port)
    tcp.sendall(options(transport="TCP"))
    loop.spin(lambda: len(rec.messages) == 2)
    assert sorted(f.transport for _, f in rec.messages) == ["TCP", "UDP"]
    assert {f.local for _, f in rec.messages} == {("127.0.0.1", port)}
