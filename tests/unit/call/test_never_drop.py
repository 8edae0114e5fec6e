"""The caller is never dropped (issue 7): a move that survives a hostile caller side and a
flaky PSAP, in memory with a fake clock. Each test is one of the issue's broken cases, turned
into the behaviour DESIGN "A call's life" step 5 now promises."""
from __future__ import annotations

import gc

import pytest

from ng911 import sdp as sdplib
from ng911.call.port import MEMBERS
from ng911.call.sdpbody import sdp_of
from ng911.call.state import TRANSITIONS, CallState
from ng911.routing.model import FailoverSpec
from ng911.sip.message import Request
from ng911.testing.psap import ApScript, PsapHarness

from .helpers import CALLER_OFFER, parsed


def harness(**failover: float) -> PsapHarness:
    return PsapHarness(failover=FailoverSpec(in_dialog_options_interval=2.0, **failover))  # type: ignore[arg-type]


def talking(h: PsapHarness):  # type: ignore[no-untyped-def]
    call = h.place_call(offer=CALLER_OFFER)
    h.run(2.0)
    assert call.state == "confirmed" and h.row()["answer_point"] == "ap1"
    return call


def caller_invites(h: PsapHarness) -> list[tuple[float, str, int | None]]:
    """The in-dialog INVITE transactions on the caller's leg, in wire order: (time, what, CSeq)
    with what "req>" (ctl → caller), "req<" (caller → ctl) or "final" (a final response)."""
    out = []
    for p in h.net.packets:
        m = p.message
        if m is None or m.cseq.method != "INVITE" or m.cseq.seq == 1 or "esrp" not in (p.src_name, p.dst_name):
            continue
        if p.is_request:
            out.append((p.sent_at, "req>" if p.src_name == "ctl" else "req<", m.cseq.seq))
        elif m.status >= 200:  # type: ignore[union-attr]
            out.append((p.sent_at, "final", m.cseq.seq))
    return out


def assert_one_invite_at_a_time(h: PsapHarness) -> None:
    """RFC 3261 §14.1 on the caller's dialog, read off the wire: a new INVITE only after the
    previous one's final response (retransmissions of the same CSeq aside)."""
    open_seq: int | None = None
    for _at, what, seq in caller_invites(h):
        if what.startswith("req"):
            assert open_seq in (None, seq), f"INVITE {seq} sent while {open_seq} was pending: {caller_invites(h)}"
            open_seq = seq
        elif seq == open_seq:
            open_seq = None


def assert_states_follow_the_table(h: PsapHarness, call_id: str | None = None) -> None:
    states = [e["data"]["state"] for e in h.events(call_id) if "state" in e["data"]]
    assert states[0] == "routing"
    for a, b in zip(states, states[1:]):
        assert CallState(b) in TRANSITIONS[CallState(a)], (a, b, states)
    assert states[-1] == h.row(call_id)["state"]


# --- 1. the caller's re-INVITE fails during a move ------------------------------------------


def test_a_caller_that_ignores_the_moves_reinvite_is_given_up_on_with_a_bye_after_the_limit() -> None:
    h = harness(caller_reinvite_give_up=30.0)
    talking(h)
    h.caller.hooks["on_reinvite"] = lambda session, request: None  # a 100 Trying, then nothing
    h.ap("ap1").die()
    h.run(10.0)
    # the new position is kept: ACKed with the caller's current media, not given up
    assert len(h.requests_to("ap2", "ACK")) == 1 and h.requests_to("ap2", "BYE") == []
    assert h.row()["state"] == "moving" and h.metric("ng911_calls_in_state", state="moving") == 1
    assert h.metric("ng911_calls_in_state", state="talking") == 0
    assert h.requests_to("esrp", "BYE") == []
    h.run(40.0)
    [bye] = h.requests_to("esrp", "BYE")
    assert len(h.requests_to("ap2", "BYE")) == 1
    row = h.row()
    assert (row["state"], row["end_reason"]) == ("ended", "caller_unreachable")
    at = {e["kind"]: e["at"] for e in h.events()}
    assert at["ended"] - at["failover"] == pytest.approx(30.0, abs=3.0)  # the limit, from the re-INVITE
    assert h.controller.pool.aps["ap2"].active == 0 and h.controller.calls == {}
    assert_states_follow_the_table(h)


def test_a_caller_that_answers_408_and_503_is_retried_and_moved_without_a_bye() -> None:
    h = harness()
    call = talking(h)
    answers = [408, 503]

    def flaky(session, request: Request) -> None:  # type: ignore[no-untyped-def]
        if answers:
            session.reject_update(answers.pop(0))
        else:
            session.accept_update(sdplib.versioned(sdplib.parse(session.local_sdp), sdplib.parse(
                h.caller.offers[session.call_id])).to_bytes())

    h.caller.hooks["on_reinvite"] = flaky
    h.ap("ap1").die()
    h.run(20.0)
    assert [r.status for r in h.responses_to("ctl", "INVITE", src="esrp") if r.cseq.seq > 1 and r.status >= 200] \
        == [408, 503, 200]
    assert h.requests_to("esrp", "BYE") == [] and call.state == "confirmed"
    assert h.row()["state"] == "talking" and h.row()["answer_point"] == "ap2"
    assert [e["kind"] for e in h.events()].count("caller_reinvite_failed") == 2
    assert h.requests_to("ap3", "INVITE") == []  # the same position kept throughout
    # each retry re-offers on the session the caller has: the version moves once, on the 2xx
    offers = [parsed(r) for r in h.reinvites_to("esrp")]
    assert len({o.origin.sess_version for o in offers}) == 1
    assert_one_invite_at_a_time(h)
    assert_states_follow_the_table(h)


def test_a_caller_that_answers_481_is_gone_the_call_ends_without_a_bye_to_it() -> None:
    h = harness()
    talking(h)
    h.caller.hooks["on_reinvite"] = lambda session, request: session.reject_update(481)
    h.ap("ap1").die()
    h.run(10.0)
    assert h.requests_to("esrp", "BYE") == []
    assert len(h.requests_to("ap2", "BYE")) == 1
    row = h.row()
    assert (row["state"], row["end_reason"]) == ("ended", "caller_dialog_gone")
    assert h.controller.pool.aps["ap2"].active == 0 and h.controller.calls == {}


# --- 2. the caller's own re-INVITE is in flight when the position dies ---------------------


def test_a_caller_reinvite_pending_when_the_position_dies_is_answered_and_the_move_goes_on() -> None:
    h = harness()
    call = talking(h)
    h.ap("ap1").die()
    # the caller holds (a new offer) the instant the position died: relayed to the dead ap1
    held = sdplib.hold(sdplib.parse(CALLER_OFFER))
    call.reinvite(sdplib.versioned(sdplib.parse(CALLER_OFFER), held).to_bytes())
    h.run(15.0)
    finals = [r.status for r in h.responses_to("esrp", "INVITE") if r.cseq.seq > 1 and r.status >= 200]
    assert finals[0] == 491  # answered at the failover: a new offer cannot be relayed now
    assert len(h.reinvites_to("esrp")) >= 1 and len([a for a in h.requests_to("ap2", "ACK") if a.cseq.seq == 1]) == 1
    assert h.row()["state"] == "talking" and h.row()["answer_point"] == "ap2"
    assert h.requests_to("esrp", "BYE") == []
    moved = h.event("moved")
    assert moved["seconds"] < 5.0  # not 36 s of 491 ping-pong
    assert_one_invite_at_a_time(h)


def test_a_caller_refresh_pending_when_the_position_dies_gets_200_with_our_last_sdp() -> None:
    h = harness()
    call = talking(h)
    h.ap("ap1").die()
    call.reinvite(call.local_sdp)  # a session refresh: same SDP
    h.run(15.0)
    finals = [r for r in h.responses_to("esrp", "INVITE") if r.cseq.seq > 1 and r.status >= 200]
    [answered] = [r for r in h.responses_to("esrp", "INVITE") if r.cseq.seq == 1 and r.status == 200]
    assert finals[0].status == 200 and sdp_of(finals[0]) == answered.body
    assert h.row()["answer_point"] == "ap2" and h.requests_to("esrp", "BYE") == []
    assert_one_invite_at_a_time(h)


# --- 3. a second move while the first is in flight -----------------------------------------


def test_a_second_move_during_the_first_never_overlaps_reinvites_on_the_callers_dialog() -> None:
    h = harness()
    call = talking(h)
    pending: list = []
    h.caller.hooks["on_reinvite"] = lambda session, request: pending.append(session)  # slow caller
    h.ap("ap1").die()
    assert h.run_until(lambda: len(pending) == 1, timeout=10.0)
    h.ap("ap2").die()  # the new position dies while the caller still thinks about its offer
    h.run(8.0)
    assert len(h.reinvites_to("esrp")) == 1  # ap3's re-INVITE waits for the first to complete
    h.caller.hooks.pop("on_reinvite")
    own = h.caller.offers[call.call_id]
    pending[0].accept_update(sdplib.versioned(sdplib.parse(call.local_sdp), sdplib.parse(own)).to_bytes())
    h.run(10.0)
    assert len(h.reinvites_to("esrp")) == 2
    assert h.row()["answer_point"] == "ap3" and h.requests_to("esrp", "BYE") == []
    assert_one_invite_at_a_time(h)
    assert h.controller.pool.aps["ap2"].active == 0 and h.controller.pool.aps["ap3"].active == 1
    # the second offer is built on the session the caller accepted last (version + 1 again)
    first, second = (parsed(r) for r in h.reinvites_to("esrp"))
    assert second.origin.sess_version == first.origin.sess_version + 1


# --- 4. the caller refuses the move's offer --------------------------------------------------


def test_a_caller_that_refuses_the_moves_offer_gets_an_offerless_reinvite_and_the_same_position() -> None:
    h = harness()
    call = talking(h)
    before = h.controller.calls[h.call_id].last_sent_up
    first = {"done": False}

    def refuse_then_offer(session, request: Request) -> None:  # type: ignore[no-untyped-def]
        if not first["done"]:
            first["done"] = True
            session.reject_update(488)
        else:
            assert sdp_of(request) is None  # the second try asks for the caller's offer
            session.accept_update(h.caller.offers[session.call_id])

    h.caller.hooks["on_reinvite"] = refuse_then_offer
    h.ap("ap1").die()
    h.run(10.0)
    assert len(h.requests_to("ap2", "INVITE")) == 1 and h.requests_to("ap3", "INVITE") == []
    reinvites = h.reinvites_to("esrp")
    assert len(reinvites) == 2 and sdp_of(reinvites[1]) is None
    # the caller's ACK carries the answer: ap2's media under the caller's session, version + 1
    acks = [a for a in h.requests_to("esrp", "ACK") if a.cseq.seq == reinvites[1].cseq.seq]
    answer = parsed(acks[0])
    assert answer.connection is not None and answer.connection.address == "10.0.1.2"
    assert answer.origin.sess_version == sdplib.parse(before).origin.sess_version + 1  # the 488 changed nothing
    [ack_ap2] = h.requests_to("ap2", "ACK")  # ap2 gets the caller's offer as its answer
    assert parsed(ack_ap2).connection.address == parsed(h.requests_to("ctl", "INVITE", src="esrp")[0]).connection.address
    assert h.row()["answer_point"] == "ap2" and call.state == "confirmed"
    assert h.requests_to("esrp", "BYE") == []
    assert_one_invite_at_a_time(h)


def test_a_caller_that_refuses_every_offer_keeps_one_position_and_is_given_up_on_bounded() -> None:
    h = harness(caller_reinvite_give_up=20.0)
    talking(h)
    h.caller.hooks["on_reinvite"] = lambda session, request: session.reject_update(488)
    h.ap("ap1").die()
    h.run(60.0)
    assert len(h.requests_to("ap2", "INVITE")) == 1 and h.requests_to("ap3", "INVITE") == []
    assert len(h.reinvites_to("esrp")) < 12  # bounded: back-off, not a loop
    assert h.row()["end_reason"] == "no_compatible_media"
    assert len(h.requests_to("esrp", "BYE")) == 1
    assert h.controller.pool.aps["ap2"].active == 0


# --- 5. a long wait in the queue --------------------------------------------------------------


def test_a_caller_waiting_over_three_minutes_hears_a_provisional_at_least_every_minute() -> None:
    h = PsapHarness(aps=1, scripts={"ap1": ApScript(reject=486)})
    h.place_call(offer=CALLER_OFFER)
    h.run(200.0)
    times = [p.sent_at for p in h.packets(dst="esrp", src="ctl") if p.status in (180, 183)]
    assert times and times[0] < 5.0
    gaps = [b - a for a, b in zip([0.0, *times], [*times, h.now()])]
    assert max(gaps) <= 45.0 + 0.5, gaps
    assert h.row()["state"] == "queued"
    h.ap("ap1").script = ApScript()
    h.run(10.0)
    assert h.row()["state"] == "talking"
    assert_states_follow_the_table(h)


# --- memory: a finished call leaves nothing behind -----------------------------------------


def test_thousands_of_calls_leave_nothing_keyed_by_a_finished_call() -> None:
    h = harness()
    ua = h.controller.ua
    gc.collect()
    gc.disable()
    try:
        for i in range(1500):
            call = h.place_call(offer=CALLER_OFFER)
            h.run(1.5 if i % 5 else 0.2)
            if i % 5 == 0:
                call.cancel()  # abandoned while ringing
            elif i % 7 == 0:
                h.ap(h.row()["answer_point"]).hang_up()
            else:
                call.bye()
            h.run(0.5)
        h.run(64 * 0.5 + 5)  # every transaction over
        assert h.controller.calls == {}
        assert ua.dialogs == {} and ua.sessions_by_invite == {} and ua._early == {}
        assert ua._clients == {}
        assert h.observer._queued_at == {}
        assert all(ap.active == 0 for ap in h.controller.pool.aps.values())
        assert [h.metric("ng911_calls_in_state", state=s.value) for s in CallState if s is not CallState.ENDED] \
            == [0.0] * 5
        assert len(ua.timers) <= 5, ua.timers  # the wheel holds no call's timer any more
        assert gc.collect() == 0  # nothing was waiting for the cyclic collector
    finally:
        gc.enable()


# --- the seam: a Call sees the node only through CallPort ------------------------------------


class _StrictPort:
    """The controller seen through ng911.call.port.CallPort and nothing else."""

    def __init__(self, controller: object) -> None:
        self._controller = controller

    def __getattr__(self, name: str) -> object:
        if name not in MEMBERS:
            raise AttributeError(f"Call reached past its port for {name!r}")
        return getattr(self._controller, name)


def test_a_call_uses_nothing_of_the_controller_but_its_port() -> None:
    h = harness()
    h.controller.call_port = _StrictPort(h.controller)  # type: ignore[assignment]
    call = talking(h)
    h.ap("ap1").die()
    h.run(8.0)
    assert h.row()["answer_point"] == "ap2"
    h.ap("ap2").refer("sip:ap3@10.0.1.3:5060")
    h.run(4.0)
    assert h.row()["answer_point"] == "ap3"
    call.bye()
    h.run(1.0)
    assert h.row()["end_reason"] == "caller_hangup" and h.controller.calls == {}


def test_an_offer_the_caller_refused_leaves_its_session_and_its_version_is_not_reused() -> None:
    """RFC 3264 §8: the refused offer changes nothing, and the next offer with other media
    goes up from the refused one's version (a version only ever goes up)."""
    h = harness(caller_reinvite_give_up=60.0)
    h.ap("ap3").sdp = h.ap("ap3").sdp.replace(b"6300", b"6310")
    talking(h)
    before = sdplib.parse(h.controller.calls[h.call_id].last_sent_up).origin.sess_version
    h.caller.hooks["on_reinvite"] = lambda session, request: session.reject_update(488)
    h.ap("ap1").die()
    assert h.run_until(lambda: len(h.reinvites_to("esrp")) >= 2, timeout=10.0)
    assert h.controller.calls[h.call_id].last_sent_up is not None
    assert sdplib.parse(h.controller.calls[h.call_id].last_sent_up).origin.sess_version == before  # unchanged
    refused = parsed(h.reinvites_to("esrp")[0]).origin.sess_version
    assert refused == before + 1
    assert h.run_until(lambda: h.ap("ap2").sessions_up != [], timeout=10.0)  # kept on the line
    h.caller.hooks.pop("on_reinvite")
    h.ap("ap2").hang_up()  # the kept position gives up: the move goes on to ap3
    assert h.run_until(lambda: h.row()["answer_point"] == "ap3", timeout=60.0)
    to_ap3 = parsed(h.reinvites_to("esrp")[-1])
    assert to_ap3.connection is not None and to_ap3.connection.address == "10.0.1.3"
    assert to_ap3.origin.sess_version == refused + 1  # not before + 1 again
    assert h.requests_to("esrp", "BYE") == []


def test_a_transport_error_towards_a_dead_position_fails_its_leg_over_and_the_callers_pending_hold_gets_491() -> None:
    """ICMP port unreachable (reported by the UDP transport as a transport error towards the
    position) while the caller's hold is being relayed there: the PSAP leg fails at once, the
    caller's re-INVITE is answered 491 — not 488 — and the move goes on."""
    h = harness()
    call = h.place_call(offer=CALLER_OFFER, ng911=False)  # plain SDP: UDP all the way
    h.run(2.0)
    assert h.row()["answer_point"] == "ap1"
    h.ap("ap1").die()
    held = sdplib.hold(sdplib.parse(CALLER_OFFER))
    call.reinvite(sdplib.versioned(sdplib.parse(CALLER_OFFER), held).to_bytes())
    assert h.run_until(lambda: any(p.dst == ("10.0.1.1", 5060) and p.method == "INVITE" and p.is_request
                                   for p in h.net.packets[9:]), timeout=1.0)
    ua = h.controller.ua
    [dest] = {ctx.dest for ctx in ua._clients.values() if ctx.dest.host == "10.0.1.1"}
    assert dest.transport == "UDP"
    ua.transport_error(dest, "ICMP port unreachable")
    h.run(0.0)
    assert h.event("failover")["reason"] == "transport_error"
    h.run(8.0)
    finals = [r.status for r in h.responses_to("esrp", "INVITE") if r.cseq.seq > 1 and r.status >= 200]
    assert finals[0] == 491
    assert h.row()["answer_point"] == "ap2" and h.requests_to("esrp", "BYE") == []
    # nothing re-sent to the dead position over another transport
    assert not [p for p in h.net.packets if p.dst == ("10.0.1.1", 5060) and p.method == "INVITE"
                and p.is_request and p.message.cseq.seq == 1 and p.sent_at > 2.0]


def caller_without_session_timer(h: PsapHarness) -> None:
    """The caller side knows no session timers (no Session-Expires, no 'timer', and it ignores
    ours): the node runs one on the caller's leg itself, as refresher (RFC 4028 §9)."""

    def rewrite(msg, src, dst):  # type: ignore[no-untyped-def]
        if isinstance(msg, Request) and msg.method == "INVITE" and h.net.name_of(src) == "esrp":
            headers = msg.headers.remove("Session-Expires").remove("Min-SE")
            tokens = [t for t in msg.header_tokens("Supported") if t != "timer"]
            msg = msg.replace(headers=headers.set("Supported", ", ".join(sorted(tokens))))
        elif not isinstance(msg, Request) and h.net.name_of(dst) == "esrp":
            msg = msg.replace(headers=msg.headers.remove("Session-Expires").remove("Require"))
        return msg

    h.net.rewrite = rewrite


def test_a_caller_leg_whose_session_refresh_is_lost_is_refreshed_again_not_dropped() -> None:
    """We refresh the caller's session (RFC 4028, refresher=uas when the caller did not ask);
    a refresh that goes unanswered does not end the caller's leg: it is tried again."""
    h = harness()
    caller_without_session_timer(h)
    call = h.place_call(offer=CALLER_OFFER, ng911=False)
    h.run(2.0)
    upstream = h.controller.calls[h.call_id].upstream
    assert upstream.we_refresh and upstream.session_interval == 90
    lost = {"n": 0}

    def lose_first_refresh(packet) -> bool:  # type: ignore[no-untyped-def]
        if packet.src_name == "ctl" and packet.dst_name == "esrp" and packet.method in ("UPDATE", "INVITE") \
                and packet.is_request and lost["n"] < 11:
            lost["n"] += 1  # the refresh and all its retransmissions
            return True
        return False

    h.net.drop = lose_first_refresh
    h.run(45.0 + 32.0 + 15.0)
    refreshes = [p for p in h.net.packets if p.src_name == "ctl" and p.dst_name == "esrp" and p.is_request
                 and p.method in ("UPDATE", "INVITE")]
    assert any(not p.dropped for p in refreshes)  # tried again after the lost one, answered
    assert call.state == "confirmed" and h.row()["state"] == "talking"
    assert h.requests_to("esrp", "BYE") == [] and h.requests_to("ap1", "BYE") == []


def test_a_caller_that_never_answers_refreshes_is_given_up_on_with_a_bye_after_three() -> None:
    h = harness()
    caller_without_session_timer(h)
    h.place_call(offer=CALLER_OFFER, ng911=False)
    h.run(2.0)
    h.net.drop = lambda p: p.src_name == "ctl" and p.dst_name == "esrp" and p.method in ("UPDATE", "INVITE") \
        and p.is_request and p.message.cseq.seq > 1
    h.run(400.0)
    assert h.row()["end_reason"] == "session_expired"
    byes = [p for p in h.net.packets if p.src_name == "ctl" and p.dst_name == "esrp" and p.method == "BYE"]
    assert byes  # the bounded give-up BYEs the caller (lost here too)
    refresh_txns = {p.message.cseq.seq for p in h.net.packets if p.src_name == "ctl" and p.dst_name == "esrp"
                    and p.method in ("UPDATE", "INVITE") and p.is_request and p.message.cseq.seq > 1}
    assert len(refresh_txns) == 3  # the first and two more
    assert len(h.requests_to("ap1", "BYE")) == 1


def test_a_caller_that_answers_481_to_a_relayed_hold_is_gone_and_the_position_keeps_its_dialog_till_the_bye() -> None:
    h = harness()
    talking(h)
    h.caller.hooks["on_reinvite"] = lambda session, request: session.reject_update(481)
    h.ap("ap1").hold()
    h.run(3.0)
    row = h.row()
    assert (row["state"], row["end_reason"]) == ("ended", "caller_dialog_gone")
    assert h.requests_to("esrp", "BYE") == []
    # the position was not told 481 (that would tear its dialog down as if we had lost it)
    assert 481 not in h.statuses_to("ap1", "INVITE")
    assert len(h.requests_to("ap1", "BYE")) == 1 and h.controller.pool.aps["ap1"].active == 0


def test_a_relayed_hold_the_caller_does_not_answer_leaves_both_sessions_as_they_were() -> None:
    h = harness()
    call = talking(h)
    h.caller.hooks["on_reinvite"] = lambda session, request: session.reject_update(503)
    h.ap("ap1").hold()
    h.run(3.0)
    assert 500 in h.statuses_to("ap1", "INVITE") and 503 not in h.statuses_to("ap1", "INVITE")
    assert h.row()["state"] == "talking" and call.state == "confirmed"
    assert h.requests_to("esrp", "BYE") == [] and h.requests_to("ap1", "BYE") == []
