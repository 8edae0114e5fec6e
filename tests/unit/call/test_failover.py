"""Failover (DESIGN "A call's life" step 5, RFC 3725 flow I): the PSAP leg fails, the
controller INVITEs another AP without SDP and re-INVITEs the caller with that AP's offer
rewritten onto the caller's session. The caller never sees a BYE."""
from __future__ import annotations

import pytest

from ng911.call.sdpbody import sdp_of
from ng911.routing.model import FailoverSpec, HealthSpec
from ng911.testing.psap import PIDF, ApScript, PsapHarness, make_sdp

from ng911 import sdp as sdplib

from .helpers import CALLER_OFFER, parsed, part_types, ports

parsed_sdp = sdplib.parse


def talking(h: PsapHarness, **kwargs):  # type: ignore[no-untyped-def]
    """A call answered by ap1 (the caller offers audio + text)."""
    call = h.place_call(offer=CALLER_OFFER, **kwargs)
    h.run(2.0)
    assert call.state == "confirmed" and h.row()["answer_point"] == "ap1"
    return call


def assert_moved_to_ap2(h: PsapHarness, call, reason: str) -> None:  # type: ignore[no-untyped-def]
    """Everything step 5 promises, read off the wire, the store and the metrics."""
    caller_200 = h.responses_to("esrp", "INVITE")[-1]  # the answer the caller has (ap1's)
    assert caller_200.status == 200 and caller_200.cseq.seq == 1
    before = parsed(caller_200)

    # ap2: INVITE without SDP but with the location; its 200 holds an offer
    [invite] = h.requests_to("ap2", "INVITE")
    assert sdp_of(invite) is None
    assert part_types(invite) == ["application/pidf+xml"] and invite.body == PIDF
    assert invite.headers.get_all("Geolocation") == ["<cid:loc@esrp.example>"]
    assert any("emergency-CallId" in v for v in invite.headers.get_all("Call-Info"))
    ap2_offer = parsed(h.responses_to("ctl", "INVITE", src="ap2")[-1])

    # the caller: one re-INVITE with ap2's media under its own session's o= (version + 1),
    # the same m-lines in the same order
    [reinvite] = h.reinvites_to("esrp")
    assert reinvite.from_.tag == caller_200.to.tag  # in the caller's dialog
    assert reinvite.call_id == caller_200.call_id
    offer_up = parsed(reinvite)
    assert offer_up.origin.same_session(before.origin)
    assert (offer_up.origin.username, offer_up.origin.sess_id) == ("ap1", "1001")
    assert offer_up.origin.sess_version == before.origin.sess_version + 1
    assert [m.media for m in offer_up.media] == [m.media for m in before.media]
    assert offer_up.connection is not None and offer_up.connection.address == "10.0.1.2"
    assert [m.port for m in offer_up.media] == [m.port for m in ap2_offer.media]

    # ap2's ACK: the caller's answer lined up on ap2's offer
    caller_answer = parsed(h.responses_to("ctl", "INVITE", src="esrp")[-1])
    assert caller_answer.origin.sess_id == "555"
    [ack] = h.requests_to("ap2", "ACK")
    to_ap2 = parsed(ack)
    assert [m.media for m in to_ap2.media] == [m.media for m in ap2_offer.media]
    assert ports(to_ap2) == ports(caller_answer)[: len(to_ap2.media)]
    assert h.ap("ap2").current.remote_sdp == ack.body

    # nobody told the caller to go away
    assert h.requests_to("esrp", "BYE") == []
    assert call.state == "confirmed"

    kinds = h.event_kinds()
    # (no ap_ringing during a move: the call row stays "moving", nothing is relayed)
    assert kinds[kinds.index("answered"):] == ["answered", "failover", "ap_invite", "moved"]
    assert h.event("failover") == {"reason": reason, "answer_point": "ap1", "state": "moving"}
    moved = h.event("moved")
    assert (moved["answer_point"], moved["reason"]) == ("ap2", reason)
    at = {e["kind"]: e["at"] for e in h.events()}
    assert moved["seconds"] == pytest.approx(at["moved"] - at["failover"], abs=1e-3)
    assert h.metric("ng911_failovers_total", reason=reason) == 1
    assert h.metric("ng911_failover_duration_seconds_count") == 1
    assert h.metric("ng911_failover_duration_seconds_sum") == pytest.approx(at["moved"] - at["failover"])
    row = h.row()
    assert (row["state"], row["answer_point"]) == ("talking", "ap2")
    assert row["legs"]["psap"]["answer_point"] == "ap2"
    assert h.controller.pool.aps["ap1"].active == 0 and h.controller.pool.aps["ap2"].active == 1


def hang_up_normally(h: PsapHarness, call) -> None:  # type: ignore[no-untyped-def]
    call.bye()
    h.run(1.0)
    assert len(h.requests_to("ap2", "BYE")) == 1
    assert h.ap("ap2").sessions_up == []
    row = h.row()
    assert (row["state"], row["outcome"], row["answer_point"]) == ("ended", "answered", "ap2")
    assert h.metric("ng911_calls_total", kind="emergency", outcome="answered") == 1
    assert h.controller.pool.aps["ap2"].active == 0


def test_a_dead_ap_found_by_the_in_dialog_options_probe_is_replaced_without_the_caller_noticing() -> None:
    h = PsapHarness(failover=FailoverSpec(in_dialog_options_interval=5.0),
                    health_spec=HealthSpec(options_timeout=1.0))
    call = talking(h)
    answered = h.now()
    h.ap("ap1").die()
    h.run(3.0)
    assert h.sent_to("ap1", "OPTIONS") == []  # not yet: every 5 s
    h.run(1.5)
    [probe] = h.sent_to("ap1", "OPTIONS")
    assert probe.dropped
    assert probe.message.to.tag  # in-dialog
    assert probe.sent_at == pytest.approx(answered - 1.0 + 5.0, abs=0.05)
    assert h.packets("INVITE", dst="ap2") == []
    h.run(1.0)  # options_timeout after the probe: failed over
    assert h.event("failover")["reason"] == "options_timeout"
    h.run(3.0)
    assert_moved_to_ap2(h, call, "options_timeout")
    hang_up_normally(h, call)


def test_a_dead_ap_found_by_health_probes_is_replaced() -> None:
    h = PsapHarness(health=True, failover=FailoverSpec(in_dialog_options_interval=0))
    call = talking(h)
    h.ap("ap1").die()
    h.run(8.0)
    assert h.controller.pool.aps["ap1"].up is False
    assert_moved_to_ap2(h, call, "ap_down")
    hang_up_normally(h, call)
    h.monitor.stop()


def test_an_ap_that_forgot_the_dialog_answers_481_to_options_and_is_replaced() -> None:
    h = PsapHarness(failover=FailoverSpec(in_dialog_options_interval=5.0))
    call = talking(h)
    h.ap("ap1").forget_dialogs()  # a rebooted phone
    h.run(6.0)
    assert 481 in h.statuses_to("ctl", "OPTIONS", src="ap1")
    assert_moved_to_ap2(h, call, "in_dialog_481")
    assert len(h.requests_to("ap1", "BYE")) == 1  # the old leg is let go of
    hang_up_normally(h, call)


def test_a_failed_session_refresh_moves_the_call() -> None:
    h = PsapHarness(failover=FailoverSpec(session_expires=90, min_se=90, in_dialog_options_interval=0))
    call = talking(h)
    h.ap("ap1").die()
    h.run(44.0)
    assert h.packets("INVITE", dst="ap2") == []
    h.run(3.0)  # the refresh at Session-Expires / 2 goes unanswered...
    [refresh] = h.sent_to("ap1", "UPDATE")
    assert refresh.sent_at == pytest.approx(46.0, abs=1.0)
    h.run(40.0)  # ...until its transaction times out (64*T1)
    assert_moved_to_ap2(h, call, "session_timer")
    hang_up_normally(h, call)


def test_a_call_with_no_free_ap_to_move_to_waits_with_the_caller_up() -> None:
    h = PsapHarness(aps=2, failover=FailoverSpec(in_dialog_options_interval=2.0))
    call = talking(h)
    other = h.place_call()  # keeps ap2 busy
    h.run(2.0)
    other_id = h.call_id
    assert h.row(other_id)["answer_point"] == "ap2"
    h.ap("ap1").die()
    h.run(30.0)
    assert call.state == "confirmed" and h.requests_to("esrp", "BYE") == []
    assert h.reinvites_to("esrp") == []  # no re-INVITE while there is nowhere to go
    assert "waiting" in h.event_kinds(h.observer.call_ids[0])
    # the other call ends: ap2 frees up and takes the moved call
    other.bye()
    h.run(3.0)
    first = h.observer.call_ids[0]
    assert h.row(first)["answer_point"] == "ap2" and h.row(first)["state"] == "talking"
    assert len(h.reinvites_to("esrp")) == 1
    assert call.state == "confirmed" and h.requests_to("esrp", "BYE") == []


def test_a_one_position_psap_moves_the_call_back_to_its_ap_once_it_is_back() -> None:
    h = PsapHarness(aps=1, no_provisional_timeout=1.0, failover=FailoverSpec(in_dialog_options_interval=2.0))
    call = talking(h)
    h.ap("ap1").die()
    h.run(20.0)
    assert call.state == "confirmed" and h.requests_to("esrp", "BYE") == []
    h.ap("ap1").revive()
    h.run(20.0)
    assert h.ap("ap1").current.state == "confirmed"
    assert h.event("moved")["answer_point"] == "ap1"
    assert call.state == "confirmed" and len(h.reinvites_to("esrp")) == 1
    assert h.requests_to("esrp", "BYE") == []


def test_the_caller_hanging_up_during_a_move_ends_the_new_leg_and_frees_its_position() -> None:
    h = PsapHarness(failover=FailoverSpec(in_dialog_options_interval=2.0))
    call = talking(h)
    h.caller.hooks["on_reinvite"] = lambda session, request: None  # the caller sits on it
    h.ap("ap1").die()
    assert h.run_until(lambda: len(h.reinvites_to("esrp")) == 1, timeout=6.0)
    assert h.ap("ap2").sessions[-1].state == "answered"  # answered, not ACKed yet
    assert h.requests_to("ap2", "ACK") == []
    call.bye()
    h.run(1.0)
    # ap2 gets an ACK (an answer refusing its offer) and then a BYE
    [ack] = h.requests_to("ap2", "ACK")
    assert all(m.port == 0 for m in parsed(ack).media)
    assert len(h.requests_to("ap2", "BYE")) == 1
    assert h.controller.pool.aps["ap2"].active == 0
    row = h.row()
    assert (row["state"], row["outcome"], row["end_reason"]) == ("ended", "answered", "caller_hangup")
    assert h.controller.calls == {}


def test_a_caller_slow_to_answer_the_move_keeps_the_new_position_on_the_line() -> None:
    """Past KEEP_POSITION_AFTER without the caller's answer, ap2's 200 is ACKed with the media
    the caller has today (ap2 sends to the caller at once, and does not give up on its 200)."""
    h = PsapHarness(failover=FailoverSpec(in_dialog_options_interval=2.0))
    call = talking(h)
    held = []
    h.caller.hooks["on_reinvite"] = lambda session, request: held.append(session)
    h.ap("ap1").die()
    h.run(8.0)
    [ack] = h.requests_to("ap2", "ACK")
    assert h.ap("ap2").current.remote_sdp == ack.body
    assert ports(parsed(ack)) == ports(parsed_sdp(CALLER_OFFER))  # the caller's own ports
    assert h.requests_to("ap2", "BYE") == [] and h.requests_to("esrp", "BYE") == []
    # the caller answers at last: same media as ap2 was given, nothing more to tell ap2
    held[0].accept_update(parsed(ack).to_bytes())
    h.run(2.0)
    assert h.row()["state"] == "talking" and h.row()["answer_point"] == "ap2"
    assert h.reinvites_to("ap2") == []
    assert h.controller.pool.aps["ap2"].active == 1
    call.bye()
    h.run(1.0)
    assert h.controller.pool.aps["ap2"].active == 0 and h.row()["end_reason"] == "caller_hangup"


def test_a_move_onto_an_ap_with_different_media_disables_what_it_lacks() -> None:
    """ap2 offers audio only: the caller keeps its two m-lines (text at port 0) and ap2's ACK
    answers just its one stream."""
    h = PsapHarness(failover=FailoverSpec(in_dialog_options_interval=2.0))
    h.ap("ap2").sdp = make_sdp("10.0.1.2", 6200, user="ap2", sess_id=1002, media=("audio",))
    call = talking(h)
    h.ap("ap1").die()
    h.run(6.0)
    offer_up = parsed(h.reinvites_to("esrp")[0])
    assert ports(offer_up) == [("audio", 6200), ("text", 0)]
    [ack] = h.requests_to("ap2", "ACK")
    assert ports(parsed(ack)) == [("audio", 4000)]
    assert call.state == "confirmed"


def test_failover_of_a_delayed_offer_call() -> None:
    h = PsapHarness(failover=FailoverSpec(in_dialog_options_interval=2.0))
    call = h.place_call(offer=CALLER_OFFER, with_offer=False)
    h.run(2.0)
    assert call.state == "confirmed"
    h.ap("ap1").die()
    h.run(6.0)
    [ack] = h.requests_to("ap2", "ACK")
    assert sdp_of(ack) is not None and len(parsed(ack).media) == 2
    assert parsed(h.reinvites_to("esrp")[0]).origin.sess_id == "1001"
    assert call.state == "confirmed" and h.requests_to("esrp", "BYE") == []


def test_an_operator_can_move_calls_off_a_position() -> None:
    h = PsapHarness(failover=FailoverSpec(in_dialog_options_interval=0))
    call = talking(h)
    assert h.controller.fail_over_answer_point("ap1", "operator") == 1
    h.run(3.0)
    assert len(h.requests_to("ap1", "BYE")) == 1
    assert h.row()["answer_point"] == "ap2" and call.state == "confirmed"
    assert h.metric("ng911_failovers_total", reason="operator") == 1


def test_a_new_ap_that_rejects_the_move_is_skipped_for_the_next() -> None:
    h = PsapHarness(failover=FailoverSpec(in_dialog_options_interval=2.0))
    call = talking(h)
    h.ap("ap2").script = ApScript(reject=486)
    h.ap("ap1").die()
    h.run(8.0)
    assert h.statuses_to("ctl", src="ap2")[-1] == 486
    assert h.row()["answer_point"] == "ap3" and call.state == "confirmed"
    assert parsed(h.reinvites_to("esrp")[0]).origin.sess_version == 2
