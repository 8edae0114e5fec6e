"""The shell's admission (SipStack.set_limits) with a fake reactor: strangers are rate limited
before parsing and answered statelessly after; caps answer 503; trusted peers are never shed."""
from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.testing import MemoryReactorClock

from ng911.config import LimitSettings
from ng911.sip.message import Response, parse_message
from ng911.sip.stack import SipStack
from ng911.sip.transport.flow import Flow
from ng911.sip.trust import TrustPolicy
from ng911.sip.ua import UaHandler

TRUSTED = "127.0.0.1"
AP = "127.0.0.5"


class Taker(UaHandler):
    def __init__(self) -> None:
        self.invites: list[Any] = []

    def on_invite(self, session: Any, request: Any) -> None:
        self.invites.append(request)
        session.reject(486)


def make(**limits: Any) -> tuple[SipStack, Taker, list[tuple[bytes, Flow]]]:
    reactor = MemoryReactorClock()
    reactor.advance(1000.0)
    taker = Taker()
    stack = SipStack(reactor, taker, udp_port=None, tcp_port=None)
    sent: list[tuple[bytes, Flow]] = []
    stack.manager.send = lambda data, target, **kw: sent.append((data, target))  # type: ignore[method-assign]
    stack.manager.send_response = lambda resp, flow: sent.append((resp.to_bytes(), flow))  # type: ignore[method-assign]
    policy = TrustPolicy([ipaddress.ip_network(f"{TRUSTED}/32")])
    stack.set_limits(LimitSettings(**limits), trusts=policy.trusts, exempt_hosts={AP},
                     is_emergency=lambda r: str(r.uri).startswith("urn:service:sos"))
    return stack, taker, sent


def udp(host: str, port: int = 5080) -> Flow:
    return Flow("UDP", ("127.0.0.1", 5060), (host, port))


_n = iter(range(1_000_000))


def invite(host: str, *, uri: str = "urn:service:sos", method: str = "INVITE", to_tag: str = "") -> bytes:
    n = next(_n)
    to = "<sip:sos@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    return (f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:5080;branch=z9hG4bK{n}x;maddr=192.0.2.99;rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:caller@{host}>;tag=f{n}\r\nTo: {to}\r\n"
            f"Call-ID: call{n}@{host}\r\nCSeq: 1 {method}\r\nContact: <sip:caller@{host}:5080>\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def statuses(sent: list[tuple[bytes, Flow]]) -> list[int]:
    out = []
    for data, _ in sent:
        msg = parse_message(data)
        if isinstance(msg, Response):
            out.append(msg.status)
    return out


def test_untrusted_invite_gets_one_stateless_403_to_its_source_address() -> None:
    stack, taker, sent = make()
    flow = udp("127.0.0.9", 5099)
    stack._on_bytes(invite("127.0.0.9"), flow)
    assert statuses(sent) == [403] and sent[0][1] == flow  # the packet's source, not Via maddr
    assert len(stack.ua.layer) == 0 and taker.invites == []  # no transaction: nothing retransmitted
    assert stack.ua.next_deadline() is None
    stack.reactor.advance(60)
    assert len(sent) == 1
    assert stack.shed == {"untrusted_stateless_403": 1}


def test_a_flooding_source_is_dropped_unread_past_its_burst() -> None:
    stack, _, sent = make(untrusted_rate=10, untrusted_burst=20)
    for _ in range(100):
        stack._on_bytes(b"garbage that is not SIP\r\n\r\n", udp("127.0.0.9"))
    assert stack.parse_errors == 20 and stack.shed["rate_source"] == 80
    stack.reactor.advance(1.0)  # ten more tokens
    for _ in range(20):
        stack._on_bytes(invite("127.0.0.9"), udp("127.0.0.9"))
    assert stack.shed["untrusted_stateless_403"] == 10 and stack.shed["rate_source"] == 90
    assert len(stack.rate) == 1


def test_many_sources_together_meet_the_total_rate() -> None:
    stack, _, _ = make(untrusted_rate=5, untrusted_burst=5, untrusted_total_rate=100)
    for i in range(1000):
        stack._on_bytes(invite(f"127.0.{i // 200 + 1}.{i % 200 + 2}"), udp(f"127.0.{i // 200 + 1}.{i % 200 + 2}"))
    assert stack.shed["untrusted_stateless_403"] == 100 and stack.shed["rate_total"] == 900


def test_trusted_peers_and_answer_points_are_never_shed() -> None:
    stack, taker, sent = make(untrusted_rate=1, untrusted_burst=1, untrusted_total_rate=1)
    for _ in range(50):
        stack._on_bytes(invite(TRUSTED), udp(TRUSTED))
    assert len(taker.invites) == 50 and stack.shed == {}
    for _ in range(50):  # an answer point's host: not trusted for calls (the controller says
        stack._on_bytes(invite(AP, method="OPTIONS"), udp(AP))  # so), but never shed
    assert stack.shed == {} and statuses(sent).count(200) == 50


def test_untrusted_ack_and_stray_response_are_dropped_silently() -> None:
    stack, _, sent = make()
    stack._on_bytes(invite("127.0.0.9", method="ACK", to_tag="x"), udp("127.0.0.9"))
    stack._on_bytes(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKnope\r\n"
                    b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
                    b"Content-Length: 0\r\n\r\n", udp("127.0.0.9"))
    assert sent == [] and stack.shed == {"untrusted_stray": 2}


def test_past_the_transaction_cap_new_requests_get_503_but_trusted_invites_are_taken() -> None:
    stack, taker, sent = make(max_transactions=100)
    for _ in range(100):  # OPTIONS from an answer point's host: each a server transaction (Timer K)
        stack._on_bytes(invite(AP, method="OPTIONS"), udp(AP))
    stack._on_bytes(invite(AP, method="OPTIONS"), udp(AP))  # ... 32 s lingering on UDP
    assert len(stack.ua.layer) >= 100
    assert statuses(sent)[-1] == 503 and b"Retry-After: 5" in sent[-1][0]
    assert stack.shed == {"transactions_cap": 1}
    stack._on_bytes(invite(TRUSTED), udp(TRUSTED))  # an emergency call: served first
    assert len(taker.invites) == 1


def test_past_the_dialog_cap_only_emergency_calls_from_trusted_peers_are_taken() -> None:
    stack, taker, sent = make(max_dialogs=10)
    stack.ua.dialogs.update({("c", str(i), "r"): None for i in range(10)})  # type: ignore[misc]
    stack._on_bytes(invite(TRUSTED, uri="sip:someone@127.0.0.1"), udp(TRUSTED))
    assert statuses(sent) == [503] and stack.shed == {"dialogs_cap": 1} and taker.invites == []
    stack._on_bytes(invite(TRUSTED), udp(TRUSTED))
    assert len(taker.invites) == 1


def test_over_tcp_the_stateless_answer_goes_back_over_the_connection_it_came_on() -> None:
    stack, _, sent = make()
    flow = Flow("TCP", ("127.0.0.1", 5060), ("127.0.0.9", 40001), 17)
    stack._on_bytes(invite("127.0.0.9").replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"), flow)
    assert statuses(sent) == [403] and sent[0][1] == flow and len(stack.ua.layer) == 0
