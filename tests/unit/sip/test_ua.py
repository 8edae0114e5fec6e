"""The UA core over the loop network: call flows, dialogs, CANCEL, offer/answer in re-INVITE,
UPDATE and PRACK, failure detection and the error answers. Every message is serialised and
parsed again on its way; time moves only through ``LoopNetwork.run`` (Clock.advance)."""

from __future__ import annotations

from typing import Any

import pytest

from ng911.sip.message import Request, Response, parse_message
from ng911.sip.uri import parse_uri
from ng911.sip.ua import SESSION_CONFIRMED, SESSION_TERMINATED, Session, UaConfig
from ng911.testing import ANSWER, OFFER, RecordingHandler, UaPair, answer_with, sdp

OFFER2 = sdp("10.0.0.1", 4002, version=2)
ANSWER2 = sdp("10.0.0.2", 5002, version=2)


def answering_pair(**kwargs: Any) -> UaPair:
    return UaPair(bob=RecordingHandler(on_invite=answer_with(ANSWER)), **kwargs)


def connected(**kwargs: Any) -> tuple[UaPair, Session, Session]:
    """A confirmed call alice → bob; returns (pair, alice's session, bob's session)."""
    pair = answering_pair(**kwargs)
    a = pair.call()
    pair.run(1.0)
    b = pair.bob.handler.session
    assert a.state == b.state == SESSION_CONFIRMED
    return pair, a, b


def raw_request(
    method: str,
    *,
    uri: str = "sip:bob@10.0.0.2:5060",
    call_id: str = "raw-1@10.0.0.9",
    from_tag: str = "rawtag",
    to_tag: str | None = None,
    cseq: int = 1,
    branch: str = "z9hG4bKraw1",
    headers: tuple[tuple[str, str], ...] = (),
    without: tuple[str, ...] = (),
) -> bytes:
    """A request from carol (10.0.0.9) as bytes, optionally without some mandatory header."""
    lines = [
        ("Via", f"SIP/2.0/UDP 10.0.0.9:5060;branch={branch};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:carol@10.0.0.9>;tag={from_tag}"),
        ("To", "<sip:bob@10.0.0.2>" + (f";tag={to_tag}" if to_tag else "")),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", "<sip:carol@10.0.0.9:5060>"),
        *headers,
    ]
    text = f"{method} {uri} SIP/2.0\r\n" + "".join(f"{n}: {v}\r\n" for n, v in lines if n not in without)
    return (text + "Content-Length: 0\r\n\r\n").encode()


def carol_sends(pair: UaPair, data: bytes) -> Response:
    """Inject ``data`` from carol to bob; return bob's (last) answer."""
    carol = pair.net.nodes.get(("10.0.0.9", 5060)) or pair.net.add_ua("carol", "10.0.0.9")
    before = len(pair.net.packets)
    pair.net.inject(data, carol.address, pair.bob.address)
    pair.run(0.5)
    answers = [p.message for p in pair.net.packets[before:] if p.src_name == "bob" and not p.is_request]
    assert answers, f"bob did not answer: {pair.trace()[before:]}"
    return answers[-1]  # type: ignore[return-value]


# --- a basic call -------------------------------------------------------------------------------


def test_basic_call_invite_100_180_200_ack_bye_200() -> None:
    pair = UaPair()
    clock = pair.clock

    def later(session: Session, request: Request) -> None:  # ring after the automatic 100
        clock.callLater(0.3, session.ring, 180)
        clock.callLater(1.0, session.answer, ANSWER)

    pair.bob.handler.hooks["on_invite"] = later
    a = pair.call()
    pair.run(2.0)
    a.bye()
    pair.run(1.0)
    assert pair.trace() == [
        "alice>bob INVITE",
        "bob>alice 100/INVITE",
        "bob>alice 180/INVITE",
        "bob>alice 200/INVITE",
        "alice>bob ACK",
        "alice>bob BYE",
        "bob>alice 200/BYE",
    ]
    assert pair.alice.handler.names() == ["provisional", "answered", "confirmed", "terminated"]
    assert pair.bob.handler.names() == ["invite", "confirmed", "terminated"]
    assert pair.alice.handler.last("terminated") == "local BYE"
    assert pair.bob.handler.last("terminated") == "remote BYE"
    b = pair.bob.handler.session
    assert a.remote_sdp == ANSWER and b.remote_sdp == OFFER
    assert a.state == b.state == SESSION_TERMINATED
    assert not pair.alice.ua.dialogs and not pair.bob.ua.dialogs


def test_dialog_ids_mirror_each_other_and_targets_are_the_contacts() -> None:
    pair, a, b = connected()
    assert a.dialog is not None and b.dialog is not None
    call_id, a_tag, b_tag = a.dialog.id
    assert b.dialog.id == (call_id, b_tag, a_tag)
    assert a_tag == a.invite.from_.tag
    assert a.dialog.remote_target == "sip:ng911@10.0.0.2:5060"
    assert b.dialog.remote_target == "sip:ng911@10.0.0.1:5060"
    assert pair.alice.ua.dialogs[a.dialog.id] is a and pair.bob.ua.dialogs[b.dialog.id] is b


def test_bye_cseq_is_above_invite_cseq_and_ack_reuses_the_invite_cseq() -> None:
    pair, a, b = connected()
    a.bye()
    pair.run(1.0)
    [invite] = pair.net.find("INVITE", requests=True)
    [ack] = pair.net.find("ACK")
    [bye] = pair.net.find("BYE", requests=True)
    seq = invite.message.cseq.seq
    assert ack.message.cseq.seq == seq and ack.message.cseq.method == "ACK"
    assert bye.message.cseq.seq > seq
    assert ack.message.branch != invite.message.branch  # a 2xx's ACK is a transaction of its own


def test_uas_bye_uses_its_own_cseq_space_and_goes_to_the_uac_contact() -> None:
    pair, a, b = connected()
    b.bye()
    pair.run(1.0)
    [bye] = pair.net.find("BYE", requests=True)
    assert bye.src_name == "bob" and bye.dst_name == "alice"
    assert str(bye.message.uri) == "sip:ng911@10.0.0.1:5060"
    assert bye.message.to.tag == a.invite.from_.tag
    assert pair.alice.handler.last("terminated") == "remote BYE"


def test_route_set_from_record_route_reversed_at_uac_and_in_order_at_uas() -> None:
    pair = answering_pair(proxies=2)
    a = pair.call()
    pair.run(1.0)
    b = pair.bob.handler.session
    p1, p2 = (p.uri for p in pair.proxies)
    assert a.dialog is not None and b.dialog is not None
    assert a.dialog.route_set == (f"<{p1}>", f"<{p2}>")
    assert b.dialog.route_set == (f"<{p2}>", f"<{p1}>")
    # The dialog-creating responses carried the INVITE's Record-Route, in order (§12.1.1).
    [invite_at_bob] = pair.net.find("INVITE", src="p2", requests=True)
    for resp in pair.net.find("INVITE", src="bob", requests=False):
        assert resp.message.headers.get_all("Record-Route") == invite_at_bob.message.headers.get_all("Record-Route")
    # ACK and BYE follow the route set in both directions.
    b.reinvite(OFFER2)
    pair.run(1.0)
    a.bye()
    pair.run(1.0)
    assert [p.summary for p in pair.net.packets if p.method == "ACK"] == [
        "alice>p1 ACK", "p1>p2 ACK", "p2>bob ACK",  # the INVITE's
        "bob>p2 ACK", "p2>p1 ACK", "p1>alice ACK",  # bob's re-INVITE's
    ]
    assert [p.summary for p in pair.net.packets if p.method == "INVITE" and p.is_request][3:] == [
        "bob>p2 INVITE", "p2>p1 INVITE", "p1>alice INVITE",
    ]
    assert [p.summary for p in pair.net.packets if p.method == "BYE"] == [
        "alice>p1 BYE", "p1>p2 BYE", "p2>bob BYE", "bob>p2 200/BYE", "p2>p1 200/BYE", "p1>alice 200/BYE",
    ]
    [bye] = pair.net.find("BYE", src="alice", requests=True)
    assert bye.message.headers.get_all("Route") == [f"<{p1}>", f"<{p2}>"]
    assert pair.bob.handler.last("terminated") == "remote BYE"


def test_reinvite_contact_refreshes_the_remote_target() -> None:
    pair = UaPair(bob=RecordingHandler(on_invite=answer_with(ANSWER)))
    pair.net.remove("bob")
    bob = pair.bob = pair.net.add_ua("bob", "10.0.0.2", handler=pair.bob.handler, aliases=[("10.0.0.2", 5070)])
    a = pair.call()
    pair.run(1.0)
    b = bob.handler.session

    def moved_contact(msg: Request | Response, src: Any, dst: Any) -> Request | Response:
        if isinstance(msg, Request) and msg.method == "INVITE" and src == bob.address:
            return msg.replace(headers=msg.headers.set("Contact", "<sip:ng911@10.0.0.2:5070>"))
        return msg

    pair.net.rewrite = moved_contact
    b.reinvite(OFFER2)
    pair.run(1.0)
    assert a.dialog is not None and a.dialog.remote_target == "sip:ng911@10.0.0.2:5070"
    a.bye()
    pair.run(1.0)
    [bye] = pair.net.find("BYE", requests=True)
    assert bye.dst == ("10.0.0.2", 5070) and str(bye.message.uri) == "sip:ng911@10.0.0.2:5070"
    assert pair.bob.handler.last("terminated") == "remote BYE"


def test_bye_to_contact_with_upper_case_transport_udp_routes_over_udp() -> None:
    pair = UaPair(bob=RecordingHandler(on_invite=answer_with(ANSWER)))
    pair.net.remove("bob")
    bob = pair.bob = pair.net.add_ua("bob", "10.0.0.2", handler=pair.bob.handler, aliases=[("10.0.0.2", 5070)])
    contact = "<sip:ng911@10.0.0.2:5070;transport=UDP>"

    def upper(msg: Request | Response, src: Any, dst: Any) -> Request | Response:
        if isinstance(msg, Response) and msg.status == 200 and msg.cseq.method == "INVITE":
            return msg.replace(headers=msg.headers.set("Contact", contact))
        return msg

    pair.net.rewrite = upper
    a = pair.call()
    pair.run(1.0)
    a.bye()
    pair.run(1.0)
    for method in ("ACK", "BYE"):
        [p] = pair.net.find(method, requests=True)
        assert (p.dst, p.transport) == (("10.0.0.2", 5070), "UDP")
    assert pair.net.find("BYE", 200) and bob.handler.last("terminated") == "remote BYE"
    # URI parameters compare case-insensitively (RFC 3261 §19.1.4).
    assert parse_uri("sip:ng911@10.0.0.2:5070;transport=UDP").equivalent(parse_uri("sip:ng911@10.0.0.2:5070;transport=udp"))


# --- provisional after final ----------------------------------------------------------------------


def test_1xx_arriving_after_the_2xx_is_absorbed() -> None:
    pair = answering_pair(latency=lambda p: 0.3 if p.status == 180 else 0.01)
    a = pair.call()
    pair.run(1.0)
    assert pair.net.find("INVITE", 180)[0].delivered_at is not None
    assert pair.alice.handler.names() == ["answered", "confirmed"]
    # And one that turns up after the INVITE transaction is long gone (a stray) as well.
    late_180 = pair.net.find("INVITE", 180)[0]
    pair.run(40.0)
    pair.net.inject(late_180.data, pair.bob.address, pair.alice.address)
    pair.run(1.0)
    assert pair.alice.handler.names() == ["answered", "confirmed"]
    assert a.state == SESSION_CONFIRMED


# --- CANCEL ---------------------------------------------------------------------------------------


def test_cancel_before_any_provisional_waits_for_the_first_1xx() -> None:
    pair = UaPair()  # bob leaves the INVITE ringing; his IST sends 100 after 200 ms
    a = pair.call()
    pair.run(0.05)
    a.cancel()
    pair.run(0.1)
    assert not pair.net.find("CANCEL")
    pair.run(2.0)
    [trying] = pair.net.find("INVITE", 100)
    [cancel] = pair.net.find("CANCEL", requests=True)
    assert trying.delivered_at is not None and cancel.sent_at >= trying.delivered_at
    assert cancel.message.branch == pair.net.find("INVITE", requests=True)[0].message.branch
    assert pair.net.find("CANCEL", 200) and pair.net.find("INVITE", 487)
    response, reason = pair.alice.handler.last("failed")
    assert response.status == 487 and reason == "487 Request Terminated"
    assert pair.bob.handler.names() == ["invite", "cancelled", "terminated"]
    assert pair.bob.handler.last("terminated") == "cancelled"


def test_cancel_after_180_gets_200_and_487_and_the_487_is_acked() -> None:
    pair = UaPair(bob=RecordingHandler(on_invite=lambda s, r: s.ring(180)))
    a = pair.call()
    pair.run(1.0)
    a.cancel()
    pair.run(1.0)
    assert pair.trace() == [
        "alice>bob INVITE",
        "bob>alice 180/INVITE",
        "alice>bob CANCEL",
        "bob>alice 200/CANCEL",
        "bob>alice 487/INVITE",
        "alice>bob ACK",
    ]
    assert pair.alice.handler.names() == ["provisional", "failed"]
    assert pair.alice.handler.last("failed")[0].status == 487
    assert pair.bob.handler.names() == ["invite", "cancelled", "terminated"]
    assert a.state == SESSION_TERMINATED and not pair.alice.ua.dialogs


def test_bye_on_a_ringing_outgoing_call_cancels_it() -> None:
    pair = UaPair(bob=RecordingHandler(on_invite=lambda s, r: s.ring(180)))
    a = pair.call()
    pair.run(1.0)
    a.bye()
    pair.run(1.0)
    assert "alice>bob CANCEL" in pair.trace() and not pair.net.find("BYE")
    assert pair.alice.handler.last("failed")[0].status == 487


def test_cancel_crossing_the_200_makes_the_uac_ack_and_bye() -> None:
    pair = UaPair(latency=0.05, bob=RecordingHandler(on_invite=lambda s, r: s.ring(180)))
    a = pair.call()
    pair.run(1.0)
    b = pair.bob.handler.session
    pair.clock.callLater(0.0, b.answer, ANSWER)
    pair.clock.callLater(0.0, a.cancel)
    pair.run(1.0)
    trace = pair.trace()
    assert "bob>alice 200/CANCEL" in trace and "bob>alice 487/INVITE" not in trace
    assert trace.index("alice>bob ACK") < trace.index("alice>bob BYE")
    assert trace[-1] == "bob>alice 200/BYE"
    assert "answered" not in pair.alice.handler.names()
    assert pair.alice.handler.last("terminated") == "cancelled"
    assert pair.bob.handler.names() == ["invite", "confirmed", "terminated"]
    assert pair.bob.handler.last("terminated") == "remote BYE"


# --- offer/answer ---------------------------------------------------------------------------------


def test_delayed_offer_200_carries_the_offer_and_the_ack_the_answer() -> None:
    pair = UaPair(
        alice=RecordingHandler(on_answered=lambda s, r: s.ack(OFFER)),  # alice's answer to bob's offer
        bob=RecordingHandler(on_invite=answer_with(ANSWER)),
    )
    a = pair.call(sdp=None)
    pair.run(1.0)
    b = pair.bob.handler.session
    [invite] = pair.net.find("INVITE", requests=True)
    [ok] = pair.net.find("INVITE", 200)
    [ack] = pair.net.find("ACK")
    assert invite.message.body == b"" and ok.message.body == ANSWER
    assert ack.message.body == OFFER and ack.message.content_type == "application/sdp"
    assert a.remote_sdp == ANSWER and b.remote_sdp == OFFER
    assert pair.bob.handler.last("confirmed").body == OFFER
    assert a.state == b.state == SESSION_CONFIRMED


def test_reinvite_from_uac_with_sdp_exchanges_offer_and_answer() -> None:
    pair, a, b = connected()
    pair.bob.handler.hooks["on_reinvite"] = lambda s, r: s.accept_update(ANSWER2)
    a.reinvite(OFFER2)
    pair.run(1.0)
    assert a.remote_sdp == ANSWER2 and b.remote_sdp == OFFER2
    assert pair.alice.handler.last("reinvite_answered").status == 200
    [reinvite] = pair.net.find("INVITE", requests=True)[1:]
    acks = pair.net.find("ACK")
    assert acks[-1].message.cseq.seq == reinvite.message.cseq.seq > a.invite.cseq.seq
    assert a.state == b.state == SESSION_CONFIRMED


def test_reinvite_from_uas_with_sdp_exchanges_offer_and_answer() -> None:
    pair, a, b = connected()
    pair.alice.handler.hooks["on_reinvite"] = lambda s, r: s.accept_update(OFFER2)
    b.reinvite(ANSWER2)
    pair.run(1.0)
    assert b.remote_sdp == OFFER2 and a.remote_sdp == ANSWER2
    assert pair.bob.handler.last("reinvite_answered").status == 200
    assert pair.net.find("ACK")[-1].src_name == "bob"


def test_offerless_reinvite_gets_the_offer_in_2xx_and_acks_with_the_answer() -> None:
    pair, a, b = connected()
    pair.alice.handler.hooks["on_reinvite_answered"] = lambda s, r: s.ack(OFFER2)
    a.reinvite(None)
    pair.run(1.0)
    [_, reinvite] = pair.net.find("INVITE", requests=True)
    ack = pair.net.find("ACK")[-1]
    assert reinvite.message.body == b""
    assert pair.net.find("INVITE", 200)[-1].message.body == ANSWER  # bob offers his current SDP
    assert ack.message.cseq.seq == reinvite.message.cseq.seq and ack.message.body == OFFER2
    assert b.remote_sdp == OFFER2
    pair.run(40.0)  # bob got his ACK: no 2xx retransmission, no BYE
    assert len(pair.net.find("INVITE", 200)) == 2 and not pair.net.find("BYE")


def test_update_from_uac_with_sdp_exchanges_offer_and_answer() -> None:
    pair, a, b = connected()
    pair.bob.handler.hooks["on_update"] = lambda s, r: s.accept_update(ANSWER2)
    a.update(OFFER2)
    pair.run(1.0)
    assert a.remote_sdp == ANSWER2 and b.remote_sdp == OFFER2
    assert pair.trace()[-2:] == ["alice>bob UPDATE", "bob>alice 200/UPDATE"]


def test_update_from_uas_with_sdp_exchanges_offer_and_answer() -> None:
    pair, a, b = connected()
    pair.alice.handler.hooks["on_update"] = lambda s, r: s.accept_update(OFFER2)
    b.update(ANSWER2)
    pair.run(1.0)
    assert b.remote_sdp == OFFER2 and a.remote_sdp == ANSWER2
    assert pair.trace()[-2:] == ["bob>alice UPDATE", "alice>bob 200/UPDATE"]


def test_update_in_early_dialog_before_answer() -> None:
    pair = UaPair(bob=RecordingHandler(on_invite=lambda s, r: s.ring(183, ANSWER, reliable=True)))
    a = pair.call()
    pair.run(1.0)
    pair.bob.handler.hooks["on_update"] = lambda s, r: s.accept_update(ANSWER2)
    a.update(OFFER2)
    pair.run(1.0)
    assert pair.net.find("UPDATE", 200) and a.remote_sdp == ANSWER2
    assert pair.bob.handler.session.remote_sdp == OFFER2


def test_reinvite_glare_both_sides_get_491_then_retry_after_the_section_14_1_back_off() -> None:
    pair, a, b = connected(latency=0.05)
    a.reinvite(OFFER2)
    b.reinvite(ANSWER2)
    pair.run(1.0)
    assert sorted(p.summary for p in pair.net.find("INVITE", 491)) == ["alice>bob 491/INVITE", "bob>alice 491/INVITE"]
    # A 491 is not reported: each side tries again after its back-off. Bob does not own the
    # Call-ID (0-2 s), Alice does (2.1-4 s): Bob's retry goes first and is answered before
    # Alice's, so the two never cross again.
    assert "reinvite_answered" not in pair.alice.handler.names()
    assert a.invite_in_progress  # Alice still backs off at 1 s (2.1-4 s)
    pair.run(6.0)
    assert pair.alice.handler.last("reinvite_answered").status == 200
    assert pair.bob.handler.last("reinvite_answered").status == 200
    invites = [p for p in pair.net.find("INVITE", requests=True) if p.message.to.tag]
    assert [p.src_name for p in invites] == ["alice", "bob", "bob", "alice"]
    assert invites[2].sent_at - invites[0].sent_at <= 2.0 + 0.2 and invites[3].sent_at - invites[1].sent_at >= 2.1
    assert a.local_sdp == OFFER2 and b.local_sdp == ANSWER2
    assert a.state == b.state == SESSION_CONFIRMED


def test_reinvites_on_one_dialog_are_serialised_in_order() -> None:
    pair, a, b = connected(latency=0.05)
    done: list[int | None] = []
    a.reinvite(OFFER2, on_done=lambda r: done.append(r.status if r else None))
    a.reinvite(lambda: a.local_sdp, on_done=lambda r: done.append(r.status if r else None))
    assert a.reinvites_queued == 1  # the second waits for the first to complete
    pair.run(2.0)
    assert done == [200, 200]
    invites = [p for p in pair.net.find("INVITE") if p.message.cseq.seq > 1 and (p.status or 0) != 100]
    # request, 200, request, 200: never two outstanding
    assert [p.is_request for p in invites] == [True, False, True, False]
    second = [p for p in invites if p.is_request][1].message
    assert second.body == OFFER2  # built when sent, from the session as it was by then


def test_a_rejected_reinvite_offer_leaves_the_session_as_it_was() -> None:
    pair, a, b = connected(latency=0.05)
    before = a.local_sdp
    pair.bob.handler.hooks["on_reinvite"] = lambda s, r: s.reject_update(488)
    a.reinvite(OFFER2)
    pair.run(1.0)
    assert pair.alice.handler.last("reinvite_answered").status == 488
    assert a.local_sdp == before


def test_a_reinvite_waits_for_the_peers_pending_reinvite_to_be_answered() -> None:
    pair, a, b = connected(latency=0.05)
    held: list = []
    pair.alice.handler.hooks["on_reinvite"] = lambda s, r: held.append(s)
    b.reinvite(ANSWER2)
    pair.run(0.5)
    assert a.pending_request is not None
    a.reinvite(OFFER2)
    pair.run(1.0)
    assert [p.src_name for p in pair.net.find("INVITE", requests=True) if p.message.to.tag] == ["bob"]
    held[0].accept_update(a.local_sdp)
    pair.run(1.0)
    assert [p.src_name for p in pair.net.find("INVITE", requests=True) if p.message.to.tag] == ["bob", "alice"]
    assert pair.alice.handler.last("reinvite_answered").status == 200


def test_update_offer_glare_both_sides_get_491() -> None:
    pair, a, b = connected(latency=0.05)
    a.update(OFFER2)
    b.update(ANSWER2)
    pair.run(1.0)
    assert sorted(p.summary for p in pair.net.find("UPDATE", 491)) == ["alice>bob 491/UPDATE", "bob>alice 491/UPDATE"]


def test_reinvite_crossing_an_update_offer_gets_491() -> None:
    pair, a, b = connected(latency=0.05)
    a.update(OFFER2)
    b.reinvite(ANSWER2)
    pair.run(1.0)
    assert "alice>bob 491/INVITE" in pair.trace() and "bob>alice 491/UPDATE" in pair.trace()


def test_offer_while_an_offer_awaits_our_answer_gets_500_with_retry_after() -> None:
    pair, a, b = connected()
    pair.bob.handler.hooks["on_reinvite"] = lambda s, r: None  # bob thinks about it
    a.reinvite(OFFER2)
    pair.run(0.5)
    a.update(OFFER)  # RFC 3311 §5.2: bob has an offer he has not answered yet
    pair.run(0.5)
    [busy] = pair.net.find("UPDATE", 500)
    assert busy.message.headers.get("Retry-After") == "1"
    b.accept_update(ANSWER2)  # the re-INVITE is still answerable
    pair.run(0.5)
    assert a.remote_sdp == ANSWER2


# --- 100rel ---------------------------------------------------------------------------------------


def test_reliable_183_has_require_and_rseq_and_is_pracked_with_matching_rack() -> None:
    pair = UaPair(bob=RecordingHandler(on_invite=lambda s, r: s.ring(183, ANSWER, reliable=True)))
    a = pair.call()
    pair.run(10.0)
    [p183] = pair.net.find("INVITE", 183)  # PRACKed at once: never retransmitted
    assert p183.message.headers.get("Require") == "100rel" and p183.message.headers.get("RSeq") == "1"
    [prack] = pair.net.find("PRACK", requests=True)
    assert prack.message.headers.get("RAck") == f"1 {a.invite.cseq.seq} INVITE"
    assert prack.message.to.tag == p183.message.to.tag
    assert pair.net.find("PRACK", 200)
    assert a.remote_sdp == ANSWER and pair.alice.handler.names() == ["provisional"]
    pair.bob.handler.session.answer(ANSWER)
    pair.run(1.0)
    assert a.state == SESSION_CONFIRMED
    assert a.dialog is not None and a.dialog.local_seq == a.invite.cseq.seq + 1  # the PRACK's


def test_reliable_1xx_not_used_when_the_uac_does_not_support_100rel() -> None:
    pair = UaPair(bob=RecordingHandler(on_invite=lambda s, r: s.ring(183, ANSWER, reliable=True)))

    def no_100rel(msg: Request | Response, src: Any, dst: Any) -> Request | Response:
        if isinstance(msg, Request) and msg.method == "INVITE":
            return msg.replace(headers=msg.headers.set("Supported", "timer"))
        return msg

    pair.net.rewrite = no_100rel
    pair.call()
    pair.run(5.0)
    [p183] = pair.net.find("INVITE", 183)
    assert "require" not in p183.message.headers and "rseq" not in p183.message.headers
    assert not pair.net.find("PRACK")


def test_second_reliable_1xx_counts_rseq_up_after_the_first_is_pracked() -> None:
    pair = UaPair(bob=RecordingHandler(on_invite=lambda s, r: s.ring(183, ANSWER, reliable=True)))
    a = pair.call()
    pair.run(1.0)
    pair.bob.handler.session.ring(180, ANSWER, reliable=True)
    pair.run(1.0)
    assert [p.message.headers.get("RSeq") for p in pair.net.find("INVITE", requests=False) if p.status != 100] == ["1", "2"]
    assert [p.message.headers.get("RAck") for p in pair.net.find("PRACK", requests=True)] == [
        f"1 {a.invite.cseq.seq} INVITE",
        f"2 {a.invite.cseq.seq} INVITE",
    ]


# --- failure detection ----------------------------------------------------------------------------


def test_in_dialog_options_answered_481_terminates_the_session() -> None:
    pair, a, b = connected()
    pair.bob.ua.dialogs.clear()  # bob lost the call (a restart, say)
    got: list[int] = []
    a.request("OPTIONS", on_response=lambda r: got.append(r.status))
    pair.run(1.0)
    assert got == [481]
    assert a.state == SESSION_TERMINATED
    assert pair.alice.handler.last("terminated") == "OPTIONS got 481"


def test_in_dialog_request_answered_408_terminates_the_session() -> None:
    pair, a, b = connected()
    pair.bob.handler.hooks["on_request"] = lambda s, r, reply: reply(408)
    a.request("INFO")
    pair.run(1.0)
    assert pair.alice.handler.last("terminated") == "INFO got 408"


def test_reinvite_answered_481_terminates_the_session() -> None:
    pair, a, b = connected()
    pair.bob.ua.dialogs.clear()
    a.reinvite(OFFER2)
    pair.run(1.0)
    assert pair.alice.handler.last("reinvite_answered").status == 481
    assert pair.alice.handler.last("terminated") == "re-INVITE got 481"


def test_update_answered_481_terminates_the_session() -> None:
    pair, a, b = connected()
    pair.bob.ua.dialogs.clear()
    b_ua = pair.bob.ua
    assert not b_ua.dialogs
    a.update(OFFER2)
    pair.run(1.0)
    assert pair.alice.handler.last("terminated") == "UPDATE got 481"


def test_other_error_answers_to_in_dialog_requests_keep_the_session() -> None:
    pair, a, b = connected()
    pair.bob.handler.hooks["on_request"] = lambda s, r, reply: reply(486)
    pair.bob.handler.hooks["on_reinvite"] = lambda s, r: s.reject_update(488)
    a.request("INFO")
    a.reinvite(OFFER2)
    pair.run(1.0)
    assert a.state == SESSION_CONFIRMED and "terminated" not in pair.alice.handler.names()


# --- error answers --------------------------------------------------------------------------------


def test_in_dialog_request_for_unknown_dialog_gets_481() -> None:
    pair = UaPair()
    for method in ("BYE", "INVITE", "INFO"):
        answer = carol_sends(pair, raw_request(method, to_tag="nosuch", branch=f"z9hG4bK{method}"))
        assert answer.status == 481


def test_out_of_dialog_bye_prack_update_get_481() -> None:
    pair = UaPair()
    for method in ("BYE", "PRACK", "UPDATE"):
        assert carol_sends(pair, raw_request(method, branch=f"z9hG4bK{method}")).status == 481


def test_unknown_method_gets_501_with_allow() -> None:
    pair = UaPair()
    answer = carol_sends(pair, raw_request("FROB"))
    assert answer.status == 501
    assert "invite" in answer.header_tokens("Allow") and "update" in answer.header_tokens("Allow")


def test_register_gets_405_with_allow() -> None:
    pair = UaPair()
    answer = carol_sends(pair, raw_request("REGISTER", uri="sip:10.0.0.2"))
    assert answer.status == 405 and "bye" in answer.header_tokens("Allow")


def test_require_of_unknown_extension_gets_420_with_unsupported() -> None:
    pair = UaPair()
    for i, method in enumerate(("INVITE", "OPTIONS", "MESSAGE")):
        answer = carol_sends(pair, raw_request(method, cseq=i + 1, branch=f"z9hG4bKr{i}", headers=(("Require", "foo, 100rel"),)))
        assert answer.status == 420 and answer.headers.get("Unsupported") == "foo"
    assert "invite" not in pair.bob.handler.names()


def test_in_dialog_require_of_unknown_extension_gets_420() -> None:
    pair, a, b = connected()
    a.request("INFO", headers=(("Require", "foo"),))
    pair.run(1.0)
    [answer] = pair.net.find("INFO", 420)
    assert answer.message.headers.get("Unsupported") == "foo"


def test_missing_call_id_gets_400_naming_it() -> None:
    pair = UaPair()
    answer = carol_sends(pair, raw_request("INVITE", without=("Call-ID",)))
    assert answer.status == 400 and "Call-ID" in answer.reason
    assert pair.bob.ua.stats["bad_requests"] == 1 and not pair.bob.handler.events


def test_merged_request_gets_482() -> None:
    pair = UaPair(bob=RecordingHandler(on_invite=lambda s, r: s.ring(180)))
    pair.call()
    pair.run(1.0)
    [invite] = pair.net.find("INVITE", requests=True)
    # The same request reaching bob by another path: same From tag, Call-ID and CSeq, new branch.
    forked = invite.message.replace(headers=invite.message.headers.set(
        "Via", "SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKotherpath;rport"))
    answer = carol_sends(pair, forked.to_bytes())
    assert answer.status == 482
    assert pair.bob.handler.names() == ["invite"]


def test_out_of_dialog_options_gets_200_with_allow_and_supported() -> None:
    pair = UaPair()
    answer = carol_sends(pair, raw_request("OPTIONS"))
    assert answer.status == 200
    assert {"invite", "ack", "bye", "cancel", "options", "prack", "update"} <= answer.header_tokens("Allow")
    assert {"100rel", "timer"} <= answer.header_tokens("Supported")


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (raw_request("REGISTER", uri="sip:10.0.0.2"), 405),
        (raw_request("FROB"), 501),
        (raw_request("BYE"), 481),
        (raw_request("OPTIONS", headers=(("Require", "foo"),)), 420),
        (raw_request("INVITE", headers=(("Session-Expires", "30"),)), 422),
        (raw_request("INVITE", without=("Call-ID",)), 400),
        (raw_request("INVITE", headers=(("Session-Expires", "soon"),)), 400),
    ],
    ids=["405", "501", "481", "420", "422", "400-missing-call-id", "400-bad-session-expires"],
)
def test_final_answers_of_the_ua_core_add_a_to_tag(data: bytes, status: int) -> None:
    """RFC 3261 §8.2.6.2: a final response to a request without To tag carries one."""
    pair = UaPair()
    answer = carol_sends(pair, data)
    assert answer.status == status
    assert answer.to.tag


def test_cancel_answers_carry_the_to_tag_of_the_invite_answers() -> None:
    pair = UaPair(bob=RecordingHandler(on_invite=lambda s, r: s.ring(180)))
    a = pair.call()
    pair.run(1.0)
    a.cancel()
    pair.run(1.0)
    [ringing] = pair.net.find("INVITE", 180)
    [ok] = pair.net.find("CANCEL", 200)
    [terminated] = pair.net.find("INVITE", 487)
    assert ringing.message.to.tag == ok.message.to.tag == terminated.message.to.tag


def test_in_dialog_request_with_lower_cseq_gets_500() -> None:
    pair, a, b = connected()
    assert a.dialog is not None
    a.dialog.local_seq = 100
    a.request("INFO")
    pair.run(1.0)
    a.dialog.local_seq = 50  # as if a request had been lost in a takeover gap gone wrong
    a.request("INFO")
    pair.run(1.0)
    assert [p.status for p in pair.net.find("INFO", requests=False)] == [200, 500]
    assert a.state == SESSION_CONFIRMED


def test_response_with_bad_session_expires_does_not_break_the_ua() -> None:
    pair = answering_pair()

    def bad(msg: Request | Response, src: Any, dst: Any) -> Request | Response:
        if isinstance(msg, Response) and msg.status == 200:
            return msg.replace(headers=msg.headers.set("Session-Expires", "soon"))
        return msg

    pair.net.rewrite = bad
    a = pair.call()
    pair.run(1.0)
    assert a.state == SESSION_CONFIRMED


def test_uas_answer_parses_again_identically_on_the_wire() -> None:
    pair, a, b = connected()
    for p in pair.net.packets:
        assert parse_message(p.data).to_bytes() == p.data


def test_default_handler_rejects_with_480() -> None:
    from ng911.sip.ua import UaHandler

    pair = UaPair()
    pair.net.remove("bob")
    pair.bob = pair.net.add_ua("bob", "10.0.0.2", handler=UaHandler(), config=UaConfig())
    pair.call()
    pair.run(1.0)
    assert pair.net.find("INVITE", 480)


# --- the loop network itself ------------------------------------------------------------------


def test_loop_delivers_after_the_latency_and_stamps_received_and_rport_like_the_shell() -> None:
    pair = UaPair(latency=0.25)
    pair.call()
    pair.run(0.2)
    assert "invite" not in pair.bob.handler.names()
    pair.run(0.1)
    [invite] = pair.net.find("INVITE", requests=True)
    assert invite.delivered_at == 0.25
    via = pair.bob.handler.last("invite").top_via
    assert (via.received, via.rport) == ("10.0.0.1", 5060)
    assert invite.message.top_via.rport is None  # the capture holds the bytes as sent


def test_loop_random_loss_is_reproducible_with_a_seed() -> None:
    def run(seed: int) -> list[str]:
        pair = answering_pair(loss=0.3, seed=seed)
        pair.call()
        pair.run(40.0)
        return pair.trace()

    assert run(1) == run(1)
    assert any(line.endswith(" x") for line in run(1))


def test_unparseable_request_gets_a_best_effort_400_as_from_the_shell() -> None:
    pair = UaPair()
    data = raw_request("OPTIONS").replace(b"Max-Forwards: 70", b"Max-Forwards: many")
    answer = carol_sends(pair, data)
    assert answer.status == 400 and pair.bob.parse_errors == 1


def test_loop_run_until_stops_at_the_event_that_makes_the_condition_true() -> None:
    pair = answering_pair(latency=0.1)
    a = pair.call()
    assert pair.net.run_until(lambda: a.state == SESSION_CONFIRMED, timeout=5.0)
    assert pair.clock.seconds() == 0.2
    assert not pair.net.run_until(lambda: a.state == SESSION_TERMINATED, timeout=1.0)
    assert pair.clock.seconds() == 1.2


def test_a_long_call_with_many_reinvites_keeps_only_a_few_acks() -> None:
    pair, a, b = connected()
    for i in range(12):
        a.reinvite(OFFER2 if i % 2 else OFFER)
        pair.run(1.0)
    assert a.state == SESSION_CONFIRMED and len(a._acks) <= 5
    assert a.invite.cseq.seq in a._acks  # the first INVITE's ACK stays (its 2xx may come again)
