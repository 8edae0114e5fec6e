"""The UA core's timers over the loop network: 2xx and reliable-1xx retransmission, Timer A/B
as the application sees them, CANCEL without answer, and RFC 4028 session timers. Time moves
only through ``LoopNetwork.run`` (Clock.advance to each pending call); T1 = 0.5 s, T2 = 4 s."""

from __future__ import annotations

from typing import Any

import pytest

from ng911.sip.message import Request, Response
from ng911.sip.ua import SESSION_CONFIRMED, SESSION_TERMINATED, Session, UaConfig
from ng911.testing import ANSWER, OFFER, Packet, RecordingHandler, UaPair, answer_with, sdp

T1 = 0.5
OFFER2 = sdp("10.0.0.1", 4002, version=2)


def answering_pair(**kwargs: Any) -> UaPair:
    return UaPair(bob=RecordingHandler(on_invite=answer_with(ANSWER)), **kwargs)


def offsets(packets: list[Packet], start: float) -> list[float]:
    return [round(p.sent_at - start, 6) for p in packets]


def drop_first(n: int, match: Any) -> Any:
    """A drop rule losing the first ``n`` packets ``match`` accepts."""
    seen = {"n": 0}

    def rule(p: Packet) -> bool:
        if match(p) and seen["n"] < n:
            seen["n"] += 1
            return True
        return False

    return rule


def when(pair: UaPair, handler: RecordingHandler, name: str) -> list[float]:
    """Record the clock time of each ``name`` callback (``on_`` + name) from now on."""
    times: list[float] = []
    previous = handler.hooks.get("on_" + name)

    def hook(*args: Any) -> None:
        times.append(pair.clock.seconds())
        if previous:
            previous(*args)

    handler.hooks["on_" + name] = hook
    return times


# --- 2xx retransmission (§13.3.1.4) -------------------------------------------------------------


def test_uas_retransmits_2xx_at_t1_doubling_capped_at_t2_and_byes_at_64_t1_without_ack() -> None:
    pair = answering_pair()
    pair.net.drop = lambda p: p.method == "ACK"
    ended = when(pair, pair.bob.handler, "terminated")
    pair.call()
    pair.run(40.0)
    oks = pair.net.find("INVITE", 200)
    t0 = oks[0].sent_at
    assert offsets(oks, t0) == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    [bye] = pair.net.find("BYE", requests=True)
    assert bye.src_name == "bob" and bye.sent_at == pytest.approx(t0 + 64 * T1)
    assert ended == [pytest.approx(t0 + 64 * T1)]
    assert pair.bob.handler.names() == ["invite", "terminated"]
    assert pair.bob.handler.last("terminated") == "no ACK"
    # The UAC answered every retransmission with its ACK again (all lost here).
    assert len(pair.net.find("ACK", src="alice")) == len(oks)
    assert pair.alice.handler.last("terminated") == "remote BYE"


def test_uas_stops_retransmitting_when_the_ack_finally_arrives() -> None:
    pair = answering_pair()
    pair.net.drop = drop_first(2, lambda p: p.method == "ACK")
    a = pair.call()
    pair.run(40.0)
    oks = pair.net.find("INVITE", 200)
    assert offsets(oks, oks[0].sent_at) == [0, 0.5, 1.5]
    assert [p.dropped for p in pair.net.find("ACK")] == [True, True, False]
    assert pair.bob.handler.names() == ["invite", "confirmed"]
    assert a.state == pair.bob.handler.session.state == SESSION_CONFIRMED


def test_uac_acks_again_a_2xx_retransmission_arriving_after_its_transaction_ended() -> None:
    pair = answering_pair()
    pair.call()
    pair.run(1.0)
    [ok] = pair.net.find("INVITE", 200)
    [ack] = pair.net.find("ACK")
    pair.run(40.0)  # Timer M is long gone: the next 200 is a stray for the UA core
    assert len(pair.alice.ua.layer) == 0
    pair.net.inject(ok.data, pair.bob.address, pair.alice.address)
    pair.run(1.0)
    [_, again] = pair.net.find("ACK")
    assert again.data == ack.data  # the very same ACK (§13.2.2.4)
    assert pair.alice.handler.names() == ["provisional", "answered", "confirmed"]


def test_reinvite_2xx_is_retransmitted_until_its_ack_and_reported_once() -> None:
    pair = answering_pair()
    a = pair.call()
    pair.run(1.0)
    pair.net.drop = drop_first(3, lambda p: p.method == "ACK")
    a.reinvite(OFFER2)
    pair.run(40.0)
    oks = pair.net.find("INVITE", 200)[1:]
    assert offsets(oks, oks[0].sent_at) == [0, 0.5, 1.5, 3.5]
    acks = pair.net.find("ACK")[1:]
    assert [p.dropped for p in acks] == [True, True, True, False]
    assert len({p.message.cseq.seq for p in acks}) == 1 and acks[0].message.cseq.seq > a.invite.cseq.seq
    assert pair.alice.handler.names().count("reinvite_answered") == 1
    assert a.state == SESSION_CONFIRMED and not pair.net.find("BYE")


def test_stray_reinvite_2xx_gets_the_reinvite_ack_not_the_invite_ack() -> None:
    pair = answering_pair()
    a = pair.call()
    pair.run(1.0)
    a.reinvite(OFFER2)
    pair.run(1.0)
    reinvite_ok = pair.net.find("INVITE", 200)[-1]
    pair.run(40.0)  # the re-INVITE's transaction is gone
    pair.net.inject(reinvite_ok.data, pair.bob.address, pair.alice.address)
    pair.run(1.0)
    acks = pair.net.find("ACK")
    assert len(acks) == 3 and acks[2].data == acks[1].data
    assert acks[2].message.cseq.seq == reinvite_ok.message.cseq.seq
    assert pair.alice.handler.names().count("reinvite_answered") == 1


def test_uas_bye_without_ack_over_delayed_offer_when_the_app_never_acks() -> None:
    pair = answering_pair()  # alice's app never calls ack() for her delayed offer
    pair.call(sdp=None)
    pair.run(40.0)
    assert not pair.net.find("ACK")
    assert pair.bob.handler.last("terminated") == "no ACK"


# --- INVITE client transaction as the application sees it ---------------------------------------


def test_lost_invites_are_retransmitted_by_timer_a_and_timer_b_fails_the_call() -> None:
    pair = answering_pair()
    pair.net.drop = lambda p: p.method == "INVITE"
    failed = when(pair, pair.alice.handler, "failed")
    a = pair.call()
    pair.run(40.0)
    assert offsets(pair.net.find("INVITE"), 0.0) == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert failed == [pytest.approx(64 * T1)]
    assert pair.alice.handler.last("failed") == (None, "timeout")
    assert a.state == SESSION_TERMINATED and "terminated" not in pair.alice.handler.names()


def test_one_lost_invite_is_recovered_by_its_retransmission() -> None:
    pair = answering_pair()
    pair.net.drop = drop_first(1, lambda p: p.method == "INVITE")
    a = pair.call()
    pair.run(2.0)
    assert [p.dropped for p in pair.net.find("INVITE", requests=True)] == [True, False]
    assert a.state == SESSION_CONFIRMED


def test_cancel_of_a_call_whose_peer_died_gives_up_64_t1_after_the_cancel() -> None:
    pair = UaPair(bob=RecordingHandler(on_invite=lambda s, r: s.ring(180)))
    a = pair.call()
    pair.run(1.0)
    pair.net.remove("bob")  # the answer point dies while ringing
    failed = when(pair, pair.alice.handler, "failed")
    a.cancel()
    pair.run(40.0)
    cancels = pair.net.find("CANCEL")
    assert offsets(cancels, 1.0)[:4] == [0, 0.5, 1.5, 3.5]
    assert failed == [pytest.approx(1.0 + 64 * T1)]
    assert pair.alice.handler.last("failed") == (None, "timeout")
    assert a.state == SESSION_TERMINATED
    assert len(pair.alice.ua.layer) == 0 and not pair.alice.ua._clients  # noqa: SLF001 - nothing leaks


# --- reliable provisionals (RFC 3262) -----------------------------------------------------------


def test_unpracked_reliable_1xx_is_retransmitted_doubling_and_the_invite_rejected_after_64_t1() -> None:
    pair = UaPair(bob=RecordingHandler(on_invite=lambda s, r: s.ring(183, ANSWER, reliable=True)))
    pair.net.drop = lambda p: p.method == "PRACK"
    ended = when(pair, pair.bob.handler, "terminated")
    a = pair.call()
    pair.run(40.0)
    provs = pair.net.find("INVITE", 183)
    t0 = provs[0].sent_at
    # T1, 2*T1, 4*T1, ... with no T2 cap (RFC 3262 §3, unlike a 2xx)
    assert offsets(provs, t0) == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    [rejected] = pair.net.find("INVITE", 504)
    assert rejected.sent_at == pytest.approx(t0 + 64 * T1) and ended == [pytest.approx(t0 + 64 * T1)]
    assert pair.bob.handler.last("terminated") == "no PRACK"
    # Retransmissions of the same RSeq reach the application once only (RFC 3262 §4).
    assert pair.alice.handler.names() == ["provisional", "failed"]
    assert pair.alice.handler.last("failed")[0].status == 504
    assert a.state == SESSION_TERMINATED


def test_lost_prack_is_retransmitted_and_stops_the_1xx_retransmissions() -> None:
    pair = UaPair(bob=RecordingHandler(on_invite=lambda s, r: s.ring(183, ANSWER, reliable=True)))
    pair.net.drop = drop_first(1, lambda p: p.method == "PRACK" and p.is_request)
    pair.call()
    pair.run(20.0)
    assert len(pair.net.find("INVITE", 183)) == 2
    assert [p.dropped for p in pair.net.find("PRACK", requests=True)] == [True, False]
    assert pair.alice.handler.names() == ["provisional"]
    assert pair.bob.handler.session.state == "early"


# --- session timers (RFC 4028) ------------------------------------------------------------------


def timer_pair(*, alice: UaConfig | None = None, bob: UaConfig | None = None, **kwargs: Any) -> UaPair:
    return answering_pair(
        alice_config=alice or UaConfig(session_expires=90, min_se=90),
        bob_config=bob or UaConfig(),
        **kwargs,
    )


def test_uac_asks_session_expires_and_uas_2xx_names_the_refresher_and_requires_timer() -> None:
    pair = timer_pair()
    a = pair.call()
    pair.run(1.0)
    b = pair.bob.handler.session
    [invite] = pair.net.find("INVITE", requests=True)
    assert invite.message.headers.get("Session-Expires") == "90"
    assert invite.message.headers.get("Min-SE") == "90"
    assert "timer" in invite.message.header_tokens("Supported")
    [ok] = pair.net.find("INVITE", 200)
    assert ok.message.headers.get("Session-Expires") == "90;refresher=uac"
    assert "timer" in ok.message.header_tokens("Require")
    assert (a.session_interval, a.refresher, a.we_refresh) == (90, "uac", True)
    assert (b.session_interval, b.refresher, b.we_refresh) == (90, "uac", False)


def test_refresher_sends_update_at_half_the_interval_when_the_peer_allows_update() -> None:
    pair = timer_pair()
    a = pair.call()
    pair.run(1.0)
    [ack] = pair.net.find("ACK")
    pair.run(200.0)
    updates = pair.net.find("UPDATE", requests=True)
    assert updates and all(p.src_name == "alice" for p in updates)
    assert updates[0].sent_at == pytest.approx(ack.sent_at + 45)
    assert updates[1].sent_at == pytest.approx(updates[0].sent_at + 45, abs=0.05)  # from the 2xx
    assert updates[0].message.headers.get("Session-Expires") == "90;refresher=uac"
    assert updates[0].message.body == b""
    ok = pair.net.find("UPDATE", 200)[0].message
    assert ok.headers.get("Session-Expires") == "90;refresher=uac" and "timer" in ok.header_tokens("Require")
    assert not pair.net.find("BYE") and not pair.net.find("INVITE", requests=True)[1:]
    assert a.state == pair.bob.handler.session.state == SESSION_CONFIRMED


def test_refresher_sends_reinvite_when_the_peer_does_not_allow_update() -> None:
    pair = timer_pair()

    def no_update(msg: Request | Response, src: Any, dst: Any) -> Request | Response:
        if isinstance(msg, Response) and msg.status == 200 and msg.cseq.method == "INVITE":
            return msg.replace(headers=msg.headers.set("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"))
        return msg

    pair.net.rewrite = no_update
    a = pair.call()
    pair.run(1.0)
    [ack] = pair.net.find("ACK")
    pair.run(100.0)
    assert not pair.net.find("UPDATE")
    refreshes = pair.net.find("INVITE", requests=True)[1:]
    assert refreshes[0].sent_at == pytest.approx(ack.sent_at + 45)
    assert refreshes[0].message.body == OFFER  # the session as it is (RFC 4028 §7.4)
    assert refreshes[0].message.headers.get("Session-Expires") == "90;refresher=uac"
    assert len(pair.net.find("ACK")) == 1 + len(refreshes)
    assert a.state == SESSION_CONFIRMED and not pair.net.find("BYE")


@pytest.mark.parametrize(("interval", "deadline"), [(90, 60), (1800, 1768)])
def test_non_refresher_byes_at_interval_minus_min_32_third_when_refreshes_stop(interval: int, deadline: int) -> None:
    pair = timer_pair(
        alice=UaConfig(session_expires=interval, min_se=90),
        bob=UaConfig(session_expires=interval, min_se=90),
    )
    pair.net.drop = lambda p: p.method == "UPDATE"
    ended = when(pair, pair.bob.handler, "terminated")
    pair.call()
    pair.run(1.0)
    [ack] = pair.net.find("ACK")
    pair.run(interval + 10.0)
    [bye] = pair.net.find("BYE", requests=True)
    assert bye.src_name == "bob"
    assert bye.sent_at == pytest.approx(ack.delivered_at + deadline)
    assert ended == [pytest.approx(ack.delivered_at + deadline)]
    assert pair.bob.handler.last("terminated") == "session expired"


def test_refresher_whose_refresh_times_out_ends_the_session() -> None:
    pair = timer_pair(alice=UaConfig(session_expires=1800, min_se=90), bob=UaConfig(session_expires=1800))
    pair.net.drop = lambda p: p.method == "UPDATE"
    pair.call()
    pair.run(1.0)
    pair.run(1000.0)
    assert pair.alice.handler.last("terminated") == "UPDATE timeout"


def test_422_with_min_se_makes_the_uac_retry_with_the_larger_interval() -> None:
    pair = timer_pair(bob=UaConfig(min_se=120))
    a = pair.call()
    pair.run(1.0)
    assert pair.trace() == [
        "alice>bob INVITE",
        "bob>alice 422/INVITE",
        "alice>bob ACK",
        "alice>bob INVITE",
        "bob>alice 180/INVITE",
        "bob>alice 200/INVITE",
        "alice>bob ACK",
    ]
    first, retry = pair.net.find("INVITE", requests=True)
    assert pair.net.find("INVITE", 422)[0].message.headers.get("Min-SE") == "120"
    assert retry.message.headers.get("Session-Expires") == "120"
    assert retry.message.cseq.seq == first.message.cseq.seq + 1
    assert retry.message.call_id == first.message.call_id and retry.message.from_.tag == first.message.from_.tag
    assert a.session_interval == pair.bob.handler.session.session_interval == 120
    assert pair.alice.handler.names() == ["provisional", "answered", "confirmed"]


def test_session_expires_below_min_se_gets_422_with_min_se() -> None:
    pair = UaPair()
    carol = pair.net.add_ua("carol", "10.0.0.9", config=UaConfig(session_expires=30, min_se=30))
    session = carol.call(pair.bob, headers=())
    pair.run(1.0)
    [too_small] = pair.net.find("INVITE", 422)
    assert too_small.message.headers.get("Min-SE") == "90"
    # carol retries once with 90, which bob takes
    assert pair.net.find("INVITE", requests=True)[-1].message.headers.get("Session-Expires") == "90"
    assert "invite" in pair.bob.handler.names()
    assert session.state in ("calling", "early")


def test_uas_refresher_spells_refresher_for_each_transaction_and_nobody_hangs_up() -> None:
    pair = timer_pair()
    a = pair.call(
        session_timer=False,
        headers=(("Session-Expires", "90;refresher=uas"), ("Min-SE", "90")),
    )
    pair.run(1.0)
    b = pair.bob.handler.session
    assert pair.net.find("INVITE", 200)[0].message.headers.get("Session-Expires") == "90;refresher=uas"
    assert (a.refresher, a.we_refresh, b.we_refresh) == ("uas", False, True)
    pair.run(200.0)
    updates = pair.net.find("UPDATE", requests=True)
    assert len(updates) >= 4 and all(p.src_name == "bob" for p in updates)
    # In bob's UPDATE bob is the UAC: "refresher=uac" means bob (RFC 4028 §7.4, §9).
    assert updates[0].message.headers.get("Session-Expires") == "90;refresher=uac"
    ok = pair.net.find("UPDATE", 200)[0].message
    assert ok.headers.get("Session-Expires") == "90;refresher=uac"
    assert (a.refresher, b.refresher) == ("uas", "uas")
    assert not pair.net.find("BYE")
    assert a.state == b.state == SESSION_CONFIRMED


# --- failure detection by timeout ---------------------------------------------------------------


def test_in_dialog_request_timing_out_terminates_the_session() -> None:
    pair = answering_pair()
    a = pair.call()
    pair.run(1.0)
    pair.net.remove("bob")
    failures: list[str] = []
    a.request("OPTIONS", on_failure=failures.append)
    ended = when(pair, pair.alice.handler, "terminated")
    start = pair.clock.seconds()
    pair.run(40.0)
    assert failures == ["timeout"]
    assert ended == [pytest.approx(start + 64 * T1)]
    assert pair.alice.handler.last("terminated") == "OPTIONS timeout"


def test_reinvite_timing_out_terminates_the_session() -> None:
    pair = answering_pair()
    a = pair.call()
    pair.run(1.0)
    pair.net.remove("bob")
    done: list[Response | None] = []
    a.reinvite(OFFER2, on_done=done.append)
    pair.run(40.0)
    assert done == [None]
    assert pair.alice.handler.last("terminated") == "re-INVITE timeout"


# --- loss --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_call_and_hang_up_survive_random_loss(seed: int) -> None:
    pair = answering_pair(loss=0.3, seed=seed)
    a = pair.call()
    pair.run(40.0)
    b: Session = pair.bob.handler.session
    assert a.state == SESSION_CONFIRMED and "confirmed" in pair.bob.handler.names()
    a.bye()
    pair.run(40.0)
    assert pair.bob.handler.last("terminated") == "remote BYE"
    assert b.state == SESSION_TERMINATED
    assert any(p.dropped for p in pair.net.packets)


def test_2xx_retransmission_after_our_bye_gets_the_ack_again_and_no_second_bye() -> None:
    pair = answering_pair()
    lose_ack, lose_bye = drop_first(1, lambda p: p.method == "ACK"), drop_first(1, lambda p: p.method == "BYE")
    pair.net.drop = lambda p: lose_ack(p) or lose_bye(p)
    a = pair.call()
    pair.run(0.05)  # answered and ACKed (the ACK is lost)...
    a.bye()  # ...and hung up (that BYE is lost too) before the 200 comes again
    pair.run(5.0)
    assert a.state == SESSION_TERMINATED and pair.alice.handler.names().count("answered") == 1
    assert {p.message.cseq.seq for p in pair.net.find("BYE", requests=True)} == {a.invite.cseq.seq + 1}
    acks = pair.net.find("ACK")
    assert len(acks) == 2 and acks[0].data == acks[1].data
    assert pair.bob.handler.last("terminated") == "remote BYE"
