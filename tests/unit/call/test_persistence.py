"""What a call leaves behind (DESIGN "State and persistence", step 6): the call row, its legs,
the ordered event log, the callback list of abandoned calls, the metrics — and no reference
cycles for the cyclic GC to find (the runtime runs with automatic full collections off)."""
from __future__ import annotations

import gc
import weakref

import pytest

from ng911.call.call import Call
from ng911.routing.model import FailoverSpec, QueueSpec, RoutingSpec
from ng911.sip.ua import Session
from ng911.testing.psap import ApScript, PsapHarness, ap_spec

from .helpers import CALLER_OFFER


def test_a_caller_who_hangs_up_while_ringing_is_an_abandoned_call_on_the_callback_list() -> None:
    h = PsapHarness()
    h.ap("ap1").script = ApScript(answer_after=None)
    call = h.place_call()
    h.run(3.0)
    assert call.state == "early"
    call.cancel()
    h.run(1.0)
    # the caller: 200 to its CANCEL, 487 to its INVITE; the AP: CANCELled
    assert h.statuses_to("esrp", "CANCEL") == [200]
    assert h.statuses_to("esrp")[-1] == 487
    assert len(h.requests_to("ap1", "CANCEL")) == 1
    assert h.ap("ap1").names().count("cancelled") == 1
    assert 487 in h.statuses_to("ctl", src="ap1")
    [entry] = h.store.abandoned_calls()
    assert entry["call_id"] == h.call_id and entry["called_back_at"] is None
    assert "sip:+12025551212@esrp.example" in entry["caller"]
    assert entry["location"]["value"]["infos"][0]["shapes"][0]["points"] == [[38.8977, -77.0365]]
    row = h.row()
    assert (row["state"], row["outcome"], row["answer_point"]) == ("ended", "abandoned", None)
    assert h.event_kinds()[-2:] == ["abandoned", "ended"]
    assert h.metric("ng911_abandoned_calls_total") == 1
    assert h.metric("ng911_calls_total", kind="emergency", outcome="abandoned") == 1
    assert h.metric("ng911_active_calls", kind="emergency") == 0
    assert h.controller.pool.aps["ap1"].active == 0 and h.controller.calls == {}


def test_a_caller_who_hangs_up_while_waiting_for_a_free_position_is_abandoned_too() -> None:
    h = PsapHarness(aps=1)
    h.ap("ap1").script = ApScript(provisional=None, reject=486)
    call = h.place_call()
    h.run(3.0)
    assert h.row()["state"] == "queued"
    call.cancel()
    h.run(1.0)
    assert h.row()["outcome"] == "abandoned"
    assert len(h.store.abandoned_calls()) == 1
    assert h.metric("ng911_queue_length", queue="main") == 0
    assert h.metric("ng911_time_in_queue_seconds_count", queue="main") == 1
    # nothing keeps hunting for a call that is over
    before = len(h.requests_to("ap1", "INVITE"))
    h.run(30.0)
    assert len(h.requests_to("ap1", "INVITE")) == before


def test_an_abandoned_test_call_does_not_go_on_the_callback_list() -> None:
    h = PsapHarness()
    h.ap("ap1").script = ApScript(answer_after=None)
    call = h.place_call(request_uri="urn:service:test.sos")
    h.run(1.0)
    call.cancel()
    h.run(1.0)
    assert h.row()["outcome"] == "abandoned"
    assert h.store.abandoned_calls() == []
    assert h.metric("ng911_abandoned_calls_total") == 0
    assert h.metric("ng911_calls_total", kind="test", outcome="abandoned") == 1


def test_the_event_log_is_ordered_and_the_legs_hold_what_a_takeover_needs() -> None:
    h = PsapHarness(failover=FailoverSpec(in_dialog_options_interval=0))
    h.ap("ap1").script = ApScript(reject=486)
    call = h.place_call(offer=CALLER_OFFER)
    h.run(3.0)
    events = h.events()
    assert [e["kind"] for e in events] == [
        "received", "routing", "ap_invite", "ap_ringing", "ap_failed", "ap_invite", "ap_ringing", "answered"]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    received = events[0]["data"]
    assert received["kind"] == "emergency" and received["sip_call_id"] == call.call_id
    assert [e["data"]["answer_point"] for e in events if e["kind"] == "ap_invite"] == ["ap1", "ap2"]
    assert events[4]["data"]["reason"] == "486 Busy Here"

    legs = h.row()["legs"]
    up, psap = legs["upstream"], legs["psap"]
    assert up["dialog"]["call_id"] == call.call_id
    assert up["remote_sdp"] == CALLER_OFFER
    assert up["local_sdp"] == h.responses_to("esrp", "INVITE")[-1].body
    ap2 = h.ap("ap2").current
    assert psap["dialog"]["call_id"] == ap2.call_id and psap["answer_point"] == "ap2"
    assert psap["remote_sdp"] == ap2.local_sdp
    row = h.row()
    assert row["answered_at"] == pytest.approx(events[-1]["at"])
    assert row["created_at"] == pytest.approx(events[0]["at"])


def test_each_call_gets_its_own_row_and_ids() -> None:
    h = PsapHarness()
    a = h.place_call()
    b = h.place_call()
    h.run(2.0)
    assert a.state == b.state == "confirmed"
    first, second = h.observer.call_ids
    assert first != second
    assert h.row(first)["nena_call_id"] != h.row(second)["nena_call_id"]
    assert {h.row(first)["answer_point"], h.row(second)["answer_point"]} == {"ap1", "ap2"}
    assert len(h.store.live_calls()) == 2
    assert h.metric("ng911_active_calls", kind="emergency") == 2


# --- no reference cycles ---------------------------------------------------------------------


def _garbage_of(kinds: tuple[type, ...]) -> list[object]:
    """Objects of ``kinds`` that only the cyclic GC can free (found now, then dropped)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = [o for o in gc.garbage if isinstance(o, kinds)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return found


@pytest.mark.parametrize("scenario", ["plain", "hunt-and-failover", "transfer", "abandoned"])
def test_a_finished_call_is_freed_by_reference_counting_alone(scenario: str) -> None:
    gc.collect()
    h = PsapHarness(routing=RoutingSpec(
        queues=(QueueSpec("main", (ap_spec(1), ap_spec(2), ap_spec(3))),),
        failover=FailoverSpec(in_dialog_options_interval=2.0),
    ))
    gc.disable()
    try:
        call = h.place_call(offer=CALLER_OFFER)
        if scenario == "hunt-and-failover":
            h.ap("ap1").script = ApScript(reject=503)
            h.run(2.0)
            h.ap("ap2").die()
            h.run(8.0)
            assert h.row()["answer_point"] == "ap3"
        elif scenario == "transfer":
            h.run(2.0)
            h.ap("ap1").refer("sip:ap2@10.0.1.2:5060")
            h.run(3.0)
            assert h.row()["answer_point"] == "ap2"
        elif scenario == "abandoned":
            h.ap("ap1").script = ApScript(answer_after=None)
            h.run(1.0)
        else:
            h.run(2.0)
        live = h.controller.calls[h.call_id]
        ref = weakref.ref(live)
        legs = [weakref.ref(s) for s in live.legs()]
        del live
        if scenario == "abandoned":
            call.cancel()
        else:
            call.bye()
        h.run(64 * 0.5 + 5.0)  # every transaction of the call over (64*T1)
        assert h.ended == [h.call_id]
        assert ref() is None, gc.get_referrers(ref())
        assert [r() for r in legs] == [None] * len(legs)
    finally:
        gc.enable()
    assert _garbage_of((Call, Session)) == []
