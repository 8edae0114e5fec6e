"""Admission and classification (DESIGN "A call's life" step 1): who gets in, what kind of
call it is, where it goes. An emergency call is never challenged (no 401/407)."""
from __future__ import annotations

from ng911.routing.model import FailoverSpec, QueueSpec, RoutingSpec
from ng911.testing.psap import CONTROLLER_HOST, PsapHarness, ap_spec


def never_challenged(h: PsapHarness) -> None:
    statuses = [p.status for p in h.net.packets if p.src_name == "ctl" and p.status is not None]
    assert 401 not in statuses and 407 not in statuses


def test_the_first_answer_is_100_trying_at_once() -> None:
    h = PsapHarness()
    h.place_call()
    h.run(0.025)  # INVITE 10 ms over, 100 Trying 10 ms back
    [trying] = h.responses_to("esrp", "INVITE")
    assert trying.status == 100
    assert h.packets("INVITE", src="ctl", dst="ap1")  # and the AP is being called already


def test_an_invite_from_an_untrusted_peer_gets_403_and_makes_no_call() -> None:
    h = PsapHarness()
    stranger = h.add_caller("stranger", "192.0.2.7")
    session = stranger.place_call(request_uri=f"sip:sos@{CONTROLLER_HOST}:5060")
    h.run(2.0)
    assert [r.status for r in h.responses_to("stranger", "INVITE")] == [100, 403]
    assert session.state == "terminated"
    assert h.observer.call_ids == [] and h.store.live_calls() == []
    assert h.net.find("INVITE", src="ctl", requests=True) == []
    # counted under the kind the call was (an emergency refused for its source, not "other")
    assert h.metric("ng911_calls_total", kind="emergency", outcome="rejected") == 1
    assert h.metric("ng911_active_calls", kind="emergency") == 0
    never_challenged(h)


def test_a_non_emergency_request_uri_without_an_other_queue_gets_404() -> None:
    h = PsapHarness()
    session = h.place_call(request_uri=f"sip:helpdesk@{CONTROLLER_HOST}:5060")
    h.run(2.0)
    assert h.statuses_to("esrp") == [100, 404]
    assert session.state == "terminated" and h.observer.call_ids == []
    assert h.net.find("INVITE", src="ctl", requests=True) == []
    never_challenged(h)


def test_a_non_emergency_call_goes_to_the_other_queue_when_there_is_one() -> None:
    routing = RoutingSpec(
        queues=(QueueSpec("main", (ap_spec(1), ap_spec(2))), QueueSpec("admin", (ap_spec(3),))),
        other_queue="admin", failover=FailoverSpec(in_dialog_options_interval=0),
    )
    h = PsapHarness(routing=routing)
    call = h.place_call(request_uri=f"sip:helpdesk@{CONTROLLER_HOST}:5060")
    h.run(2.0)
    assert call.state == "confirmed"
    row = h.row()
    assert (row["kind"], row["queue"], row["answer_point"]) == ("other", "admin", "ap3")
    call.bye()
    h.run(1.0)
    assert h.metric("ng911_calls_total", kind="other", outcome="answered") == 1
    assert h.metric("ng911_calls_total", kind="emergency", outcome="answered") == 0


def test_a_call_to_the_psap_uri_is_an_emergency_call() -> None:
    h = PsapHarness()
    call = h.place_call(request_uri=f"sip:sos@{CONTROLLER_HOST}:5060")
    h.run(2.0)
    assert call.state == "confirmed" and h.row()["kind"] == "emergency"
    assert h.row()["request_uri"] == f"sip:sos@{CONTROLLER_HOST}:5060"


def test_a_test_call_is_handled_end_to_end_in_the_test_queue_and_counted_apart() -> None:
    routing = RoutingSpec(
        queues=(QueueSpec("main", (ap_spec(1), ap_spec(2))), QueueSpec("test", (ap_spec(3),))),
        test_queue="test", failover=FailoverSpec(in_dialog_options_interval=0),
    )
    h = PsapHarness(routing=routing)
    call = h.place_call(request_uri="urn:service:test.sos")
    h.run(2.0)
    assert call.state == "confirmed"
    row = h.row()
    assert (row["kind"], row["queue"], row["answer_point"]) == ("test", "test", "ap3")
    assert h.requests_to("ap1", "INVITE") == []
    assert h.metric("ng911_active_calls", kind="test") == 1
    call.bye()
    h.run(1.0)
    assert h.metric("ng911_calls_total", kind="test", outcome="answered") == 1
    assert h.metric("ng911_calls_total", kind="emergency", outcome="answered") == 0
    never_challenged(h)


def test_a_test_call_without_a_test_queue_is_answered_by_the_emergency_queue() -> None:
    h = PsapHarness()
    call = h.place_call(request_uri="urn:service:test.sos")
    h.run(2.0)
    assert call.state == "confirmed"
    assert (h.row()["kind"], h.row()["queue"], h.row()["answer_point"]) == ("test", "main", "ap1")


def test_a_sub_service_and_a_trusted_peer_on_another_address_of_the_network() -> None:
    h = PsapHarness()
    bcf = h.add_caller("bcf", "10.0.0.2")
    call = bcf.place_call(request_uri="urn:service:sos.fire")
    h.run(2.0)
    assert call.state == "confirmed" and h.row()["kind"] == "emergency"
    never_challenged(h)


def test_under_overload_other_calls_get_503_and_emergency_calls_still_get_through() -> None:
    routing = RoutingSpec(
        queues=(QueueSpec("main", (ap_spec(1), ap_spec(2))), QueueSpec("admin", (ap_spec(3),))),
        other_queue="admin", failover=FailoverSpec(in_dialog_options_interval=0),
    )
    h = PsapHarness(routing=routing)
    h.controller.overload.sample(0.5, h.controller.now())  # the reactor ran a timer 0.5 s late
    other = h.place_call(request_uri=f"sip:helpdesk@{CONTROLLER_HOST}:5060")
    h.run(1.0)
    assert h.statuses_to("esrp") == [100, 503]
    assert other.state == "terminated"
    emergency = h.place_call()
    h.run(2.0)
    assert emergency.state == "confirmed"
    assert h.row()["kind"] == "emergency"
    never_challenged(h)


def test_overload_ends_once_the_reactor_keeps_time_again() -> None:
    from ng911.call.overload import OverloadGuard

    guard = OverloadGuard(lag_threshold=0.2, hold=5.0)
    guard.sample(0.05, now=10.0)
    assert not guard.overloaded(10.0)
    guard.sample(0.3, now=10.0)
    assert guard.overloaded(14.9)
    assert not guard.overloaded(15.1)
