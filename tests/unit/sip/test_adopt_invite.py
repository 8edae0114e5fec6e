"""A node takes over a caller's INVITE that another node received and never answered
(DESIGN "Cluster"): `UserAgent.adopt_invite` over the loop network.

Node A receives the caller's INVITE through a record-routing proxy ("kam"), rings with a To
tag, and stores the INVITE's bytes, its flow (`flow_to_dict`) and the tag; then A dies. Node B
— another address and port, so another Contact — adopts them and answers on the caller's
original transaction: the same Via stack, the same To tag, to where the INVITE came from.
"""
from __future__ import annotations

import json
from typing import Any

import pytest

from ng911.sip.body import BodyPart, build_multipart
from ng911.sip.message import Headers, Request, Response, parse_message
from ng911.sip.transport.flow import Flow
from ng911.sip.ua import (
    INCOMING,
    SESSION_CONFIRMED,
    SESSION_EARLY,
    SESSION_TERMINATED,
    Session,
    flow_from_dict,
    flow_to_dict,
)
from ng911.testing import ANSWER, OFFER, LoopNetwork, LoopPort, Packet, RecordingHandler

PIDF = (b'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
        b'entity="pres:caller@example.net"/>')
BOUNDARY = "adopt-boundary-1"
MULTIPART = build_multipart(
    [
        BodyPart(Headers([("Content-Type", "application/sdp")]), OFFER),
        BodyPart(Headers([("Content-Type", "application/pidf+xml"), ("Content-ID", "<loc@example.net>")]), PIDF),
    ],
    BOUNDARY,
)
KAM = ("10.0.0.11", 5060)


def ringing(session: Session, request: Request) -> None:
    session.ring(180)


class Cluster:
    """The caller (alice), the proxy in front (kam), node A (which dies) and node B."""

    def __init__(self) -> None:
        self.net = LoopNetwork(latency=0.01)
        self.alice = self.net.add_ua("alice", "10.0.0.1")
        self.kam = self.net.add_proxy("kam", *KAM)
        self.a = self.net.add_ua("a", "10.0.0.2", handler=RecordingHandler(on_invite=ringing))
        self.b = self.net.add_ua("b", "10.0.0.3", 5070)

    def call(self) -> Session:
        """alice calls through kam; A rings; returns alice's session."""
        session = self.alice.ua.invite(
            "sip:911@10.0.0.2:5060", from_uri=f"<{self.alice.uri()}>", to_uri="<urn:service:sos>",
            body=MULTIPART, content_type=f"multipart/mixed;boundary={BOUNDARY}",
            headers=(("Route", f"<{self.kam.uri}>"),),
        )
        self.net.run(1.0)
        return session

    def stored(self) -> tuple[bytes, dict[str, Any], str]:
        """What node A saved: the INVITE's bytes as received, its flow, the To tag it sent."""
        [packet] = self.net.find("INVITE", requests=True, dst="a")
        a_session = self.a.handler.session
        assert a_session.dialog is not None
        flow = json.loads(json.dumps(flow_to_dict(a_session.source)))  # through the database
        return packet.data, flow, a_session.dialog.local_tag

    def kill_a(self) -> None:
        self.net.remove("a")

    def adopt(self) -> Session:
        raw, flow, tag = self.stored()
        self.kill_a()
        return self.b.ua.adopt_invite(raw, source=flow_from_dict(flow), local_tag=tag)

    def sent_by(self, node: str, status: int | None = None, method: str = "INVITE") -> list[Packet]:
        return [p for p in self.net.find(method, status, src=node) if not p.is_request]

    def run(self, seconds: float) -> None:
        self.net.run(seconds)


def vias(packet: Packet) -> list[str]:
    assert packet.message is not None
    return packet.message.headers.get_all("Via")


def test_adopted_180_has_the_same_to_tag_and_the_exact_via_stack_and_goes_to_the_proxy() -> None:
    c = Cluster()
    alice = c.call()
    [a_180] = c.sent_by("a", 180)
    session = c.adopt()
    assert session.state == SESSION_EARLY and session.role == "uas"
    assert session.remote_sdp == OFFER  # from the multipart body
    session.ring(180)
    c.run(0.5)
    [b_180] = c.sent_by("b", 180)
    assert b_180.dst == KAM and b_180.transport == "UDP"
    assert len(vias(a_180)) == 2 and vias(b_180) == vias(a_180)
    assert isinstance(b_180.message, Response) and isinstance(a_180.message, Response)
    assert b_180.message.to.tag == a_180.message.to.tag
    assert b_180.message.contacts[0].uri.host == "10.0.0.3" and b_180.message.contacts[0].uri.port == 5070
    assert b_180.message.headers.get_all("Record-Route") == a_180.message.headers.get_all("Record-Route")
    # The caller sees one early dialog, rung twice; B's application was not told of an INVITE.
    assert alice.state == SESSION_EARLY and len(alice.ua.dialogs) == 1
    assert alice.dialog is not None and alice.dialog.remote_tag == b_180.message.to.tag
    assert c.alice.handler.names() == ["provisional", "provisional"]
    assert "invite" not in c.b.handler.names()


def test_adopted_answer_is_retransmitted_until_the_ack_then_bye_reaches_b() -> None:
    c = Cluster()
    alice = c.call()
    session = c.adopt()
    session.ring(180)
    c.run(0.5)
    lost = []

    def lose_two_acks(p: Packet) -> bool:
        if p.is_request and p.method == "ACK" and len(lost) < 2:
            lost.append(p)
            return True
        return False

    c.net.drop = lose_two_acks
    session.answer(ANSWER)
    assert c.net.run_until(lambda: session.state == SESSION_CONFIRMED, timeout=32.0)
    oks = c.sent_by("b", 200)
    assert len(oks) >= 3 and len(lost) == 2  # the 2xx went again after each lost ACK
    assert all(p.dst == KAM and vias(p) == vias(oks[0]) for p in oks)
    ok = oks[0].message
    assert isinstance(ok, Response) and ok.to.tag == session.dialog.local_tag  # type: ignore[union-attr]
    assert str(ok.contacts[0].uri) == "sip:ng911@10.0.0.3:5070"
    assert alice.state == SESSION_CONFIRMED and alice.remote_sdp == ANSWER
    assert c.b.handler.names() == ["confirmed"]
    c.run(10.0)
    assert len(c.sent_by("b", 200)) == len(oks)  # no more once the ACK came
    # The caller's in-dialog requests now come to B (its Contact, through kam's route).
    alice.bye()
    c.run(1.0)
    [bye] = c.net.find("BYE", requests=True, dst="b")
    assert bye.src == KAM
    assert [p.status for p in c.sent_by("b", method="BYE")] == [200]
    assert session.state == SESSION_TERMINATED
    assert c.b.handler.names() == ["confirmed", "terminated"]
    assert c.b.handler.last("terminated") == "remote BYE"


def test_a_retransmitted_invite_reaching_b_is_absorbed_and_gets_the_last_provisional() -> None:
    c = Cluster()
    c.call()
    raw, _flow, tag = c.stored()
    session = c.adopt()
    session.ring(180)
    c.run(0.5)
    c.net.inject(raw, KAM, c.b.address)  # kam retransmits the INVITE
    c.run(0.5)
    provisionals = c.sent_by("b", 180)
    assert len(provisionals) == 2 and provisionals[1].dst == KAM
    assert provisionals[1].data == provisionals[0].data
    assert list(c.b.ua.sessions_by_invite.values()) == [session]
    assert "invite" not in c.b.handler.names()
    assert session.state == SESSION_EARLY and session.dialog is not None and session.dialog.local_tag == tag


def forwarded_cancel(invite: Request) -> bytes:
    """The CANCEL of ``invite`` as kam forwards the caller's: the same Via stack (kam's branch
    is derived from the caller's, so it is the INVITE's)."""
    items = [("Via", v) for v in invite.headers.get_all("Via")] + [
        ("Max-Forwards", "69"),
        ("From", invite.headers.get("From") or ""),
        ("To", invite.headers.get("To") or ""),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.seq} CANCEL"),
    ]
    return Request("CANCEL", invite.uri, Headers(items)).to_bytes()


def test_a_cancel_reaching_b_gets_200_and_the_invite_487_and_the_handler_is_told() -> None:
    c = Cluster()
    alice = c.call()
    raw, _flow, tag = c.stored()
    session = c.adopt()
    session.ring(180)
    c.run(0.5)
    invite = parse_message(raw)
    assert isinstance(invite, Request)
    c.net.inject(forwarded_cancel(invite), KAM, c.b.address)
    c.run(0.5)
    [ok] = c.sent_by("b", 200, method="CANCEL")
    terminated = c.sent_by("b", 487)[0]  # (re-sent until an ACK: kam's goes to dead A here)
    assert ok.dst == terminated.dst == KAM
    assert isinstance(terminated.message, Response) and terminated.message.to.tag == tag
    assert vias(terminated) == invite.headers.get_all("Via")
    assert c.b.handler.names() == ["cancelled", "terminated"]
    assert session.state == SESSION_TERMINATED
    assert alice.state == SESSION_TERMINATED
    response, _reason = c.alice.handler.last("failed")
    assert response.status == 487


def test_without_a_stored_tag_the_session_is_incoming_and_ring_picks_a_tag() -> None:
    c = Cluster()
    c.call()
    raw, flow, _tag = c.stored()
    c.kill_a()
    session = c.b.ua.adopt_invite(raw, source=flow_from_dict(flow), local_tag=None)
    assert session.state == INCOMING and session.dialog is None and not c.b.ua.dialogs
    session.reject(486)
    c.run(0.5)
    busy = c.sent_by("b", 486)[0]
    assert busy.dst == KAM and isinstance(busy.message, Response) and busy.message.to.tag
    assert c.alice.handler.last("failed")[0].status == 486


# --- over a stream transport ---------------------------------------------------------------------

TCP_INVITE = (
    "INVITE sip:911@10.0.0.2:5060;transport=tcp SIP/2.0\r\n"
    "Via: SIP/2.0/TCP 10.0.0.11:5060;branch=z9hG4bKkam.tcp.1;rport\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;received=192.0.2.1;branch=z9hG4bKcaller.1;rport=5060\r\n"
    "Record-Route: <sip:10.0.0.11;transport=tcp;lr>\r\n"
    "Max-Forwards: 69\r\n"
    "From: <sip:+15551234567@192.0.2.1>;tag=caller1\r\n"
    "To: <urn:service:sos>\r\n"
    "Call-ID: tcp-adopt-1@192.0.2.1\r\n"
    "CSeq: 7 INVITE\r\n"
    "Contact: <sip:caller@192.0.2.1:5060>\r\n"
    f"Content-Type: multipart/mixed;boundary={BOUNDARY}\r\n"
    f"Content-Length: {len(MULTIPART)}\r\n\r\n"
).encode() + MULTIPART


def test_over_tcp_responses_go_to_the_proxy_sent_by_and_the_2xx_is_not_retransmitted() -> None:
    c = Cluster()
    c.net.inject(TCP_INVITE, KAM, c.a.address, "TCP")
    c.run(0.5)
    a_session = c.a.handler.session
    stored = json.loads(json.dumps(flow_to_dict(a_session.source)))
    assert "connection_id" not in stored
    [a_180] = c.sent_by("a", 180)
    assert a_session.dialog is not None
    tag = a_session.dialog.local_tag
    c.kill_a()
    source = flow_from_dict(stored)
    assert source.transport == "TCP" and source.connection_id is None
    session = c.b.ua.adopt_invite(TCP_INVITE, source=source, local_tag=tag)
    session.ring(180)
    session.answer(ANSWER)
    c.run(5.0)
    [b_180] = c.sent_by("b", 180)
    [ok] = c.sent_by("b", 200)  # once: a reliable transport retransmits for us
    for p in (b_180, ok):
        assert p.dst == KAM and p.transport == "TCP"
        assert vias(p) == vias(a_180)  # received=/rport= stamped as A did
    assert "received=10.0.0.11" in vias(ok)[0] and "rport=5060" in vias(ok)[0]
    assert isinstance(ok.message, Response) and ok.message.to.tag == tag
    assert str(ok.message.contacts[0].uri) == "sip:ng911@10.0.0.3:5070;transport=tcp"
    ack = (
        "ACK sip:ng911@10.0.0.3:5070;transport=tcp SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 10.0.0.11:5060;branch=z9hG4bKkam.tcp.ack\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKcaller.ack;rport\r\n"
        "Max-Forwards: 69\r\n"
        "From: <sip:+15551234567@192.0.2.1>;tag=caller1\r\n"
        f"To: <urn:service:sos>;tag={tag}\r\n"
        "Call-ID: tcp-adopt-1@192.0.2.1\r\n"
        "CSeq: 7 ACK\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    c.net.inject(ack, KAM, c.b.address, "TCP")
    c.run(1.0)
    assert session.state == SESSION_CONFIRMED
    assert c.b.handler.names() == ["confirmed"]
    c.run(40.0)
    assert session.state == SESSION_CONFIRMED and len(c.sent_by("b", 200)) == 1


# --- bad input -------------------------------------------------------------------------------------


def _without(raw: bytes, header: bytes) -> bytes:
    return b"\r\n".join(line for line in raw.split(b"\r\n") if not line.startswith(header + b":"))


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"not a SIP message at all", "does not parse"),
        (b"", "does not parse"),
        (b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 10.0.0.11;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n",
         "response"),
        (TCP_INVITE.replace(b"INVITE sip:", b"OPTIONS sip:", 1).replace(b"7 INVITE", b"7 OPTIONS"), "OPTIONS"),
        (_without(TCP_INVITE, b"CSeq"), "CSeq"),
        (TCP_INVITE.replace(b"To: <urn:service:sos>", b"To: <urn:service:sos>;tag=x"), "To tag"),
    ],
)
def test_adopting_bytes_that_are_not_an_initial_invite_raises_value_error(raw: bytes, why: str) -> None:
    c = Cluster()
    with pytest.raises(ValueError, match=why):
        c.b.ua.adopt_invite(raw, source=Flow("UDP", c.b.address, KAM), local_tag="t1")
    assert not c.b.ua.sessions_by_invite and not c.b.ua.dialogs and len(c.b.ua.layer) == 0
    assert not c.net.packets


def test_adopting_the_same_invite_twice_raises_value_error() -> None:
    c = Cluster()
    source = Flow("TCP", c.b.address, KAM)
    first = c.b.ua.adopt_invite(TCP_INVITE, source=source, local_tag="t1")
    with pytest.raises(ValueError, match="already"):
        c.b.ua.adopt_invite(TCP_INVITE, source=source, local_tag="t1")
    assert list(c.b.ua.sessions_by_invite.values()) == [first]


# --- flows as data -----------------------------------------------------------------------------------


def test_flow_dict_is_json_and_round_trips_without_the_connection_id() -> None:
    udp = Flow("UDP", ("10.0.0.2", 5060), ("10.0.0.11", 5062))
    assert flow_to_dict(udp) == {"transport": "UDP", "host": "10.0.0.11", "port": 5062,
                                 "local_host": "10.0.0.2", "local_port": 5060}
    assert flow_from_dict(json.loads(json.dumps(flow_to_dict(udp)))) == udp
    tcp = Flow("TCP", ("10.0.0.2", 5060), ("10.0.0.11", 40123), connection_id=7)
    assert flow_from_dict(flow_to_dict(tcp)) == Flow("TCP", ("10.0.0.2", 5060), ("10.0.0.11", 40123))
    assert flow_from_dict(flow_to_dict(tcp), local=("10.0.0.3", 5070)).local == ("10.0.0.3", 5070)
    assert flow_from_dict({"transport": "udp", "host": "::1", "port": 5060}) == Flow("UDP", ("", 0), ("::1", 5060))


@pytest.mark.parametrize(
    "data",
    [{}, {"transport": "UDP", "host": "10.0.0.11"}, {"transport": "SCTP", "host": "10.0.0.11", "port": 5060},
     {"transport": "UDP", "host": "", "port": 5060}, {"transport": "UDP", "host": "10.0.0.11", "port": "5060"},
     {"transport": "UDP", "host": "10.0.0.11", "port": 0}, None],
)
def test_flow_from_dict_refuses_what_it_cannot_use(data: Any) -> None:
    with pytest.raises(ValueError):
        flow_from_dict(data)


def test_adopt_of_a_confirmed_dialog_takes_the_stored_flow_as_its_source() -> None:
    net = LoopNetwork()
    b: LoopPort = net.add_ua("b", "10.0.0.3", 5070)
    dialog = {
        "call_id": "c1@x", "local_tag": "l1", "remote_tag": "r1", "local_uri": "<sip:911@10.0.0.2>",
        "remote_uri": "<sip:caller@192.0.2.1>", "remote_target": "sip:caller@192.0.2.1:5060;transport=tcp",
        "route_set": ["<sip:10.0.0.11;transport=tcp;lr>"], "local_seq": 3, "remote_seq": 7,
        "secure": False, "state": "confirmed", "is_uac": False,
    }
    source = flow_from_dict({"transport": "TCP", "host": "10.0.0.11", "port": 5060})
    session = b.ua.adopt(dialog, local_sdp=ANSWER, remote_sdp=OFFER, source=source)
    assert session.source == session.dest == source
    assert session._contact() == "<sip:ng911@10.0.0.3:5070;transport=tcp>"


def test_the_request_the_application_was_given_serves_as_well_as_the_bytes_off_the_wire() -> None:
    """A stores ``session.invite.to_bytes()`` (already stamped with received/rport): stamping
    again on adoption changes nothing, and B's responses carry A's Via stack all the same."""
    c = Cluster()
    c.net.inject(TCP_INVITE, KAM, c.a.address, "TCP")
    c.run(0.5)
    a_session = c.a.handler.session
    [a_180] = c.sent_by("a", 180)
    assert a_session.dialog is not None
    stored = (a_session.invite.to_bytes(), flow_to_dict(a_session.source), a_session.dialog.local_tag)
    c.kill_a()
    raw, flow, tag = stored
    session = c.b.ua.adopt_invite(raw, source=flow_from_dict(flow), local_tag=tag)
    session.ring(180)
    c.run(0.5)
    [b_180] = c.sent_by("b", 180)
    assert vias(b_180) == vias(a_180) and b_180.dst == KAM
