"""RFC 3261 §18 rules as pure functions: request destination, received/rport, response routing."""

from __future__ import annotations

import pytest

from ng911.sip.headers import Via, parse_name_addr, parse_via
from ng911.sip.message import Request, parse_message
from ng911.sip.transport import (
    Destination,
    Flow,
    ResponseRoute,
    UnroutableError,
    destination_for_request,
    response_route,
    stamp_received,
    via_for,
)
from ng911.sip.uri import parse_uri

LOCAL = ("127.0.0.1", 5060)


def request(uri: str = "sip:ap1@127.0.0.1:5070", *, via: str = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1",
            extra: str = "", body: bytes = b"", via_name: str = "Via") -> Request:
    text = (
        f"INVITE {uri} SIP/2.0\r\n"
        f"{via_name}: {via}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:caller@10.0.0.1>;tag=a\r\n"
        "To: <sip:sos@127.0.0.1>\r\n"
        "Call-ID: c1@10.0.0.1\r\n"
        "CSeq: 1 INVITE\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    msg = parse_message(text)
    assert isinstance(msg, Request)
    return msg


def udp_from(host: str, port: int) -> Flow:
    return Flow("UDP", LOCAL, (host, port))


def tcp_from(host: str, port: int, cid: int = 7) -> Flow:
    return Flow("TCP", LOCAL, (host, port), cid)


# -- Flow ------------------------------------------------------------------------------------


def test_flow_reliability_and_validation() -> None:
    assert not udp_from("10.0.0.1", 5060).is_reliable
    assert tcp_from("10.0.0.1", 40000).is_reliable
    assert Flow("TLS", LOCAL, ("10.0.0.1", 5061), 1).is_reliable
    with pytest.raises(ValueError):
        Flow("SCTP", LOCAL, ("10.0.0.1", 5060))
    with pytest.raises(ValueError):
        Flow("UDP", LOCAL, ("10.0.0.1", 5060), 3)
    assert tcp_from("10.0.0.1", 4).destination == Destination("TCP", "10.0.0.1", 4)


def test_flow_is_frozen_and_hashable() -> None:
    flow = udp_from("10.0.0.1", 5060)
    with pytest.raises(AttributeError):
        flow.transport = "TCP"  # type: ignore[misc]
    assert {flow: 1}[udp_from("10.0.0.1", 5060)] == 1


# -- client side: destination_for_request (RFC 3263 simplified, §18.1.1) ----------------------


@pytest.mark.parametrize(("uri", "expected"), [
    ("sip:ap1@127.0.0.1:5070", ("UDP", "127.0.0.1", 5070)),
    ("sip:ap1@127.0.0.1", ("UDP", "127.0.0.1", 5060)),
    ("sip:ap1@127.0.0.1;transport=tcp", ("TCP", "127.0.0.1", 5060)),
    ("sip:ap1@127.0.0.1:5080;transport=TCP", ("TCP", "127.0.0.1", 5080)),
    ("sip:ap1@127.0.0.1;transport=tls", ("TLS", "127.0.0.1", 5061)),
    ("sips:ap1@127.0.0.1", ("TLS", "127.0.0.1", 5061)),
    ("sips:ap1@127.0.0.1;transport=tcp", ("TLS", "127.0.0.1", 5061)),
    ("sip:ap1@[::1]:5070", ("UDP", "::1", 5070)),
    ("sip:ap1@psap.example.net", ("UDP", "psap.example.net", 5060)),
    ("sip:ap1@psap.example.net;maddr=192.0.2.9", ("UDP", "192.0.2.9", 5060)),
])
def test_destination_from_request_uri(uri: str, expected: tuple[str, str, int]) -> None:
    assert destination_for_request(request(uri)) == Destination(*expected)


def test_destination_prefers_a_loose_routing_first_route() -> None:
    req = request(extra="Route: <sip:esrp.example.net:5090;lr>\r\n")
    assert destination_for_request(req) == Destination("UDP", "esrp.example.net", 5090)


def test_destination_ignores_a_strict_route_and_uses_the_request_uri() -> None:
    req = request("sip:proxy.example.net:5099", extra="Route: <sip:ap1@127.0.0.1:5070>\r\n")
    assert destination_for_request(req) == Destination("UDP", "proxy.example.net", 5099)


def test_destination_from_explicit_next_hop() -> None:
    req = request(extra="Route: <sip:esrp.example.net;lr>\r\n")
    assert destination_for_request(req, parse_uri("sip:127.0.0.2:5062;transport=tcp")) == \
        Destination("TCP", "127.0.0.2", 5062)
    assert destination_for_request(req, parse_name_addr("<sip:127.0.0.3;lr>")) == \
        Destination("UDP", "127.0.0.3", 5060)


def test_destination_needs_a_sip_next_hop_for_urns() -> None:
    req = request("urn:service:sos")
    with pytest.raises(UnroutableError):
        destination_for_request(req)
    assert destination_for_request(req, parse_uri("sip:127.0.0.1:5060")).host == "127.0.0.1"


def test_large_request_switches_default_udp_to_tcp() -> None:
    """§18.1.1: over 1300 octets with an unknown path MTU, use a congestion-controlled transport."""
    big = request(body=b"x" * 1400)
    assert len(big.to_bytes()) > 1300
    assert destination_for_request(big) == Destination("TCP", "127.0.0.1", 5070)


def test_size_switch_can_be_turned_off_or_tuned() -> None:
    big = request(body=b"x" * 1400)
    assert destination_for_request(big, switch_to_tcp=False).transport == "UDP"
    small = request()
    assert destination_for_request(small).transport == "UDP"
    assert destination_for_request(small, size_limit=10).transport == "TCP"
    assert destination_for_request(small, size=5000).transport == "TCP"


def test_explicit_transport_udp_is_honoured_even_when_large() -> None:
    big = request("sip:ap1@127.0.0.1:5070;transport=udp", body=b"x" * 1400)
    assert destination_for_request(big).transport == "UDP"


# -- server side: stamp_received (§18.2.1, RFC 3581 §4) --------------------------------------


def test_same_address_without_rport_is_left_alone() -> None:
    req = request(via="SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1")
    assert stamp_received(req, udp_from("10.0.0.1", 5060)) is req


def test_different_source_address_adds_received() -> None:
    req = request(via="SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1")
    top = stamp_received(req, udp_from("192.0.2.7", 5060)).top_via
    assert top.received == "192.0.2.7"
    assert not top.has_rport
    assert top.branch == "z9hG4bK1"


def test_domain_sent_by_always_gets_received() -> None:
    req = request(via="SIP/2.0/UDP esrp.example.net;branch=z9hG4bK1")
    assert stamp_received(req, udp_from("10.0.0.1", 5060)).top_via.received == "10.0.0.1"


def test_empty_rport_is_filled_and_received_added_even_if_same_host() -> None:
    req = request(via="SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK1")
    top = stamp_received(req, udp_from("10.0.0.1", 34567)).top_via
    assert top.rport == 34567
    assert top.received == "10.0.0.1"
    assert top.branch == "z9hG4bK1"


def test_rport_filled_over_tcp_too() -> None:
    req = request(via="SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK1;rport")
    top = stamp_received(req, tcp_from("10.0.0.1", 40001)).top_via
    assert (top.received, top.rport) == ("10.0.0.1", 40001)


def test_ipv6_source_compared_as_address() -> None:
    req = request(via="SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1")
    assert stamp_received(req, udp_from("0:0:0:0:0:0:0:1", 5060)) is req
    top = stamp_received(req, udp_from("2001:db8::5", 5060)).top_via
    assert top.received == "2001:db8::5"


def test_only_the_first_via_element_changes() -> None:
    req = request(via="SIP/2.0/UDP 10.0.0.1;rport;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK0",
                  extra="Via: SIP/2.0/UDP 10.0.0.8;branch=z9hG4bKz\r\n")
    out = stamp_received(req, udp_from("192.0.2.1", 1111))
    assert out.vias[1:] == req.vias[1:]
    assert out.headers.get_all("Via")[0].endswith(", SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK0")
    assert len(out.headers.get_all("Via")) == 2


def test_compact_via_name_is_stamped_and_survives_the_wire() -> None:
    req = request(via="SIP/2.0/UDP 10.0.0.1;rport;branch=z9hG4bK1", via_name="v")
    out = stamp_received(req, udp_from("192.0.2.1", 1111))
    again = parse_message(out.to_bytes())
    assert (again.top_via.received, again.top_via.rport) == ("192.0.2.1", 1111)
    assert [name for name, _ in out.headers][0] == "v"


def test_responses_are_not_stamped() -> None:
    resp = parse_message(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1;rport;branch=z9hG4bK1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n")
    assert stamp_received(resp, udp_from("192.0.2.1", 1)) is resp


# -- response routing (§18.2.2, RFC 3581 §4) -------------------------------------------------


def via(text: str) -> Via:
    return parse_via(text)[0]


UDP_SRC = udp_from("192.0.2.1", 34567)
TCP_SRC = tcp_from("192.0.2.1", 40001, cid=42)


@pytest.mark.parametrize(("via_text", "source", "flow", "dest"), [
    # reliable: the request's connection; fallback received (else sent-by host) + sent-by port
    ("SIP/2.0/TCP 10.0.0.1:5070;branch=z;received=192.0.2.1", TCP_SRC, TCP_SRC,
     ("TCP", "192.0.2.1", 5070)),
    ("SIP/2.0/TCP 10.0.0.1;branch=z", TCP_SRC, TCP_SRC, ("TCP", "10.0.0.1", 5060)),
    ("SIP/2.0/TLS 10.0.0.1;branch=z", Flow("TLS", LOCAL, ("10.0.0.1", 4), 5),
     Flow("TLS", LOCAL, ("10.0.0.1", 4), 5), ("TLS", "10.0.0.1", 5061)),
    # reliable, rport is not used for a reconnect (the source port was ephemeral)
    ("SIP/2.0/TCP 10.0.0.1:5070;branch=z;rport=40001;received=192.0.2.1", TCP_SRC, TCP_SRC,
     ("TCP", "192.0.2.1", 5070)),
    # reliable, no source flow known (say, after a takeover): connect to the fallback
    ("SIP/2.0/TCP 10.0.0.1:5070;branch=z;received=192.0.2.1", None, None,
     ("TCP", "192.0.2.1", 5070)),
    # maddr is never honoured (a spoofed request must not steer its responses): the source
    ("SIP/2.0/UDP 10.0.0.1:5070;branch=z;maddr=239.1.1.1;received=192.0.2.1", UDP_SRC,
     Flow("UDP", LOCAL, ("192.0.2.1", 5070)), ("UDP", "192.0.2.1", 5070)),
    ("SIP/2.0/UDP 10.0.0.1;branch=z;maddr=192.0.2.50;received=192.0.2.1;rport=40000", UDP_SRC,
     Flow("UDP", LOCAL, ("192.0.2.1", 40000)), ("UDP", "192.0.2.1", 40000)),
    # unreliable: received + rport (RFC 3581)
    ("SIP/2.0/UDP 10.0.0.1:5070;branch=z;rport=34567;received=192.0.2.1", UDP_SRC,
     Flow("UDP", LOCAL, ("192.0.2.1", 34567)), ("UDP", "192.0.2.1", 34567)),
    # unreliable: received + sent-by port
    ("SIP/2.0/UDP 10.0.0.1:5070;branch=z;received=192.0.2.1", UDP_SRC,
     Flow("UDP", LOCAL, ("192.0.2.1", 5070)), ("UDP", "192.0.2.1", 5070)),
    # unreliable: received, no port anywhere: 5060
    ("SIP/2.0/UDP 10.0.0.1;branch=z;received=192.0.2.1", UDP_SRC,
     Flow("UDP", LOCAL, ("192.0.2.1", 5060)), ("UDP", "192.0.2.1", 5060)),
    # unreliable: no received (sent-by was the source): sent-by host and port
    ("SIP/2.0/UDP 192.0.2.1:5072;branch=z", UDP_SRC,
     Flow("UDP", LOCAL, ("192.0.2.1", 5072)), ("UDP", "192.0.2.1", 5072)),
    # unreliable: IPv6 sent-by loses its brackets
    ("SIP/2.0/UDP [2001:db8::1]:5072;branch=z", None, None, ("UDP", "2001:db8::1", 5072)),
    # unreliable without a known source: no flow, just the destination
    ("SIP/2.0/UDP 10.0.0.1;branch=z;rport=9;received=192.0.2.1", None, None,
     ("UDP", "192.0.2.1", 9)),
])
def test_response_routing_table(via_text: str, source: Flow | None, flow: Flow | None,
                                dest: tuple[str, str, int]) -> None:
    assert response_route(via(via_text), source) == ResponseRoute(flow, Destination(*dest))


def test_response_over_a_udp_via_never_reuses_a_stream_flow() -> None:
    route = response_route(via("SIP/2.0/UDP 10.0.0.1;branch=z;received=192.0.2.1"), TCP_SRC)
    assert route.flow is None
    assert route.destination == Destination("UDP", "192.0.2.1", 5060)


def test_stamp_then_route_sends_back_to_the_nat_binding() -> None:
    req = request(via="SIP/2.0/UDP 10.1.1.1:5060;rport;branch=z9hG4bK1")
    src = udp_from("198.51.100.4", 61000)
    route = response_route(stamp_received(req, src).top_via, src)
    assert route.destination == Destination("UDP", "198.51.100.4", 61000)
    assert route.flow == Flow("UDP", LOCAL, ("198.51.100.4", 61000))


# -- via_for -----------------------------------------------------------------------------------


def test_via_for_transport_name() -> None:
    v = via_for("udp", "127.0.0.1", 5060, "z9hG4bKabc")
    assert str(v) == "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport"
    assert v.has_rport and v.rport is None


def test_via_for_flow_or_destination() -> None:
    assert via_for(TCP_SRC, "127.0.0.1", 5060, "z9hG4bK1").transport == "TCP"
    assert via_for(Destination("TLS", "h", 5061), "127.0.0.1", 5061, "z9hG4bK1").transport == "TLS"


def test_via_for_ipv6_and_no_port() -> None:
    assert str(via_for("TCP", "::1", None, "z9hG4bK1")) == "SIP/2.0/TCP [::1];branch=z9hG4bK1;rport"


def test_via_for_round_trips_through_the_parser() -> None:
    v = via_for("UDP", "127.0.0.1", 5062, "z9hG4bK77")
    assert parse_via(str(v)) == (v,)
