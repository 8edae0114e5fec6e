"""Routing a call (DESIGN "A call's life" steps 1-3, 6): what the caller and each answer point
receive on the wire, for an offer, a delayed offer, flow IV, early media and the hunt."""
from __future__ import annotations

import pytest

from ng911 import sdp as sdplib
from ng911.call.sdpbody import sdp_of
from ng911.routing.model import FailoverSpec, QueueSpec, RoutingSpec
from ng911.sip.message import Request
from ng911.testing.psap import PIDF, ApScript, PsapHarness, ap_spec, make_sdp

from .helpers import CALLER_OFFER, parsed, part_types, ports

def _no_probe() -> FailoverSpec:
    return FailoverSpec(in_dialog_options_interval=0)


# --- the basic call ---------------------------------------------------------------------------


def test_basic_call_carries_the_ng911_invite_to_the_answer_point_and_relays_every_answer() -> None:
    h = PsapHarness()
    call = h.place_call(offer=CALLER_OFFER)
    h.run(2.0)

    sent = h.packets("INVITE", src="esrp", dst="ctl", requests=True)[0].message
    assert isinstance(sent, Request)
    [invite] = h.requests_to("ap1", "INVITE")
    # the caller's body, every part, octet for octet
    assert invite.body == sent.body and invite.content_type == sent.content_type
    assert part_types(invite) == ["application/sdp", "application/pidf+xml"]
    assert sdp_of(invite) == CALLER_OFFER
    # the NG9-1-1 headers travel along
    assert invite.headers.get_all("Geolocation") == ["<cid:loc@esrp.example>"]
    assert invite.headers.get_all("Geolocation-Routing") == ["no"]
    assert invite.headers.get_all("Resource-Priority") == ["esnet.1"]
    call_info = invite.headers.get_all("Call-Info")
    assert len(call_info) == 2
    assert call_info[0].startswith("<urn:emergency:uid:callid:") and call_info[0].endswith(
        ":psap.example>;purpose=emergency-CallId")
    assert "purpose=emergency-IncidentId" in call_info[1]
    assert invite.headers.get_all("History-Info") == ["<sip:ap1@10.0.1.1:5060>;index=1"]
    assert str(invite.from_.uri) == "sip:+12025551212@esrp.example"
    # nothing else tried
    assert h.requests_to("ap2", "INVITE") == [] and h.requests_to("ap3", "INVITE") == []

    # 100 at once, one 180 relayed, the AP's 200 answer relayed as is; ACKs both ways
    assert h.statuses_to("esrp") == [100, 180, 200]
    ap_200 = h.responses_to("ctl", "INVITE", src="ap1")[-1]
    caller_200 = h.responses_to("esrp", "INVITE")[-1]
    assert caller_200.body == ap_200.body
    assert ports(parsed(caller_200)) == [("audio", 6100), ("text", 6102)]
    assert len(h.requests_to("ap1", "ACK")) == 1
    assert len(h.packets("ACK", src="esrp", dst="ctl")) == 1
    assert call.state == "confirmed" and h.ap("ap1").current.state == "confirmed"

    call.bye()
    h.run(1.0)
    assert len(h.requests_to("ap1", "BYE")) == 1
    assert h.ap("ap1").sessions_up == []
    assert h.requests_to("esrp", "BYE") == []

    row = h.row()
    assert (row["kind"], row["state"], row["outcome"], row["answer_point"]) == ("emergency", "ended", "answered", "ap1")
    assert row["end_reason"] == "caller_hangup"
    assert row["nena_call_id"] == call_info[0][1:].split(">")[0]
    [shape] = row["location"]["value"]["infos"][0]["shapes"]
    assert (shape["kind"], shape["points"]) == ("Point", [[38.8977, -77.0365]])
    assert row["location"]["geolocation"][0]["kind"] == "by-value"
    assert set(row["legs"]) == {"upstream", "psap"} and row["legs"]["psap"]["answer_point"] == "ap1"
    assert h.event_kinds() == ["received", "routing", "ap_invite", "ap_ringing", "answered", "caller_hangup", "ended"]
    assert h.metric("ng911_calls_total", kind="emergency", outcome="answered") == 1
    assert h.metric("ng911_active_calls", kind="emergency") == 0
    assert h.metric("ng911_time_to_answer_seconds_count", kind="emergency") == 1
    assert h.metric("ng911_hunt_attempts_total", result="answered") == 1


def test_the_callers_nena_call_id_and_history_info_are_kept() -> None:
    h = PsapHarness()
    mine = "urn:emergency:uid:callid:abc123:esrp.example"
    h.place_call(call_info=f"<{mine}>;purpose=emergency-CallId",
                 history_info="<sip:sos@esrp.example>;index=1")
    h.run(2.0)
    [invite] = h.requests_to("ap1", "INVITE")
    call_info = invite.headers.get_all("Call-Info")
    assert call_info[0] == f"<{mine}>;purpose=emergency-CallId"
    assert [c for c in call_info if "emergency-CallId" in c] == [call_info[0]]  # none minted
    assert any("emergency-IncidentId" in c for c in call_info)  # that one is minted
    assert invite.headers.get_all("History-Info") == [
        "<sip:sos@esrp.example>;index=1", "<sip:ap1@10.0.1.1:5060>;index=1.1;mp=1"]
    assert h.row()["nena_call_id"] == mine


def test_ap_hangs_up_and_the_caller_gets_a_bye() -> None:
    h = PsapHarness()
    call = h.place_call()
    h.run(2.0)
    h.ap("ap1").hang_up()
    h.run(1.0)
    assert call.state == "terminated"
    assert len(h.requests_to("esrp", "BYE")) == 1
    assert h.event_kinds()[-2:] == ["ap_hangup", "ended"]
    row = h.row()
    assert (row["state"], row["outcome"], row["end_reason"]) == ("ended", "answered", "answer_point_hangup")
    assert h.metric("ng911_calls_total", kind="emergency", outcome="answered") == 1
    assert h.controller.pool.aps["ap1"].active == 0


# --- offer variants ---------------------------------------------------------------------------


@pytest.mark.parametrize("with_pidf", [False, True], ids=["no-body", "pidf-only"])
def test_delayed_offer_goes_up_in_our_200_and_the_answer_down_in_the_aps_ack(with_pidf: bool) -> None:
    h = PsapHarness()
    call = h.place_call(with_offer=False, ng911=with_pidf)
    h.run(2.0)
    [invite] = h.requests_to("ap1", "INVITE")
    assert sdp_of(invite) is None
    assert part_types(invite) == (["application/pidf+xml"] if with_pidf else [])
    if with_pidf:
        assert invite.body == PIDF
    ap_offer = h.responses_to("ctl", "INVITE", src="ap1")[-1].body
    assert h.responses_to("esrp", "INVITE")[-1].body == ap_offer
    [caller_ack] = [p.message for p in h.packets("ACK", src="esrp", dst="ctl")]
    [ap_ack] = h.requests_to("ap1", "ACK")
    assert caller_ack.body and ap_ack.body == caller_ack.body
    assert h.ap("ap1").current.remote_sdp == caller_ack.body
    assert call.state == "confirmed"
    assert h.row()["outcome"] is None and h.row()["answer_point"] == "ap1"


def test_flow_iv_an_offer_without_media_lines_is_routed_and_answered() -> None:
    h = PsapHarness()
    no_media = make_sdp("10.0.0.1", user="caller", sess_id=555, media=())
    call = h.place_call(offer=no_media)
    h.run(2.0)
    [invite] = h.requests_to("ap1", "INVITE")
    assert sdp_of(invite) == no_media
    answer = parsed(h.responses_to("esrp", "INVITE")[-1])
    assert answer.media == ()
    assert call.state == "confirmed" and h.row()["answer_point"] == "ap1"


# --- early media --------------------------------------------------------------------------------


@pytest.mark.parametrize("caller_100rel", [True, False])
def test_early_media_from_the_ap_is_relayed_reliably_when_the_caller_supports_100rel(caller_100rel: bool) -> None:
    h = PsapHarness()
    early = make_sdp("10.0.1.1", 6100, user="ap1", sess_id=1001, media=("audio", "text"))
    h.ap("ap1").script = ApScript(provisional=183, early_sdp=early, answer_after=3.0)
    call = h.place_call(offer=CALLER_OFFER, supported_100rel=caller_100rel)
    h.run(1.0)
    up = [r for r in h.responses_to("esrp", "INVITE") if r.status == 183]
    assert len(up) >= 1 and up[0].body == early
    assert h.statuses_to("esrp")[:2] == [100, 183]
    assert 180 not in h.statuses_to("esrp")
    if caller_100rel:
        assert "100rel" in up[0].header_tokens("Require") and up[0].headers.get("RSeq") == "1"
        assert len(h.packets("PRACK", src="esrp", dst="ctl", requests=True)) == 1
    else:
        assert "100rel" not in up[0].header_tokens("Require")
        assert h.packets("PRACK", src="esrp", dst="ctl", requests=True) == []
    h.run(3.0)
    assert call.state == "confirmed"
    assert h.event_kinds().count("early_media") == 1


# --- the hunt -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [486, 503, 603])
def test_an_ap_rejecting_the_call_hands_it_to_the_next(status: int) -> None:
    h = PsapHarness()
    h.ap("ap1").script = ApScript(reject=status, reject_after=0.5)
    call = h.place_call()
    h.run(3.0)
    assert h.statuses_to("ctl", src="ap1")[-1] == status
    assert len(h.requests_to("ap2", "INVITE")) == 1
    assert call.state == "confirmed" and h.ap("ap2").current.state == "confirmed"
    assert h.statuses_to("esrp") == [100, 180, 200]  # one 180 whoever rings
    assert h.row()["answer_point"] == "ap2"
    assert h.event_kinds()[2:] == ["ap_invite", "ap_ringing", "ap_failed", "ap_invite", "ap_ringing", "answered"]
    assert h.metric("ng911_hunt_attempts_total", result="rejected") == 1
    assert h.controller.pool.aps["ap1"].active == 0 and h.controller.pool.aps["ap2"].active == 1


def test_an_ap_that_sends_no_provisional_is_cancelled_and_the_next_tried() -> None:
    h = PsapHarness(no_provisional_timeout=2.0)
    h.ap("ap1").script = ApScript(provisional=None, answer_after=None)  # only the IST's 100
    call = h.place_call()
    h.run(1.9)
    assert h.requests_to("ap2", "INVITE") == [] and h.requests_to("ap1", "CANCEL") == []
    h.run(2.0)
    [cancel] = h.requests_to("ap1", "CANCEL")
    assert cancel.call_id == h.requests_to("ap1", "INVITE")[0].call_id
    assert 487 in h.statuses_to("ctl", src="ap1")
    [invite2] = h.requests_to("ap2", "INVITE")
    assert invite2.call_id != cancel.call_id
    assert call.state == "confirmed" and h.row()["answer_point"] == "ap2"
    assert h.event("ap_timeout")["reason"] == "no provisional"
    assert h.metric("ng911_hunt_attempts_total", result="no_provisional") == 1


def test_an_ap_that_never_responds_is_given_up_and_the_next_tried() -> None:
    h = PsapHarness(no_provisional_timeout=2.0)
    h.ap("ap1").die()  # not even a 100 Trying: no CANCEL may be sent (RFC 3261 §9.1)
    call = h.place_call()
    h.run(5.0)
    assert len(h.requests_to("ap2", "INVITE")) == 1
    assert call.state == "confirmed" and h.row()["answer_point"] == "ap2"
    assert h.event("ap_timeout")["answer_point"] == "ap1"
    assert h.packets("CANCEL", dst="ap1") == []
    # Timer B ends the abandoned INVITE later without disturbing the call
    h.run(40.0)
    assert call.state == "confirmed" and h.ap("ap2").current.state == "confirmed"
    assert h.controller.pool.aps["ap1"].active == 0


def test_an_ap_ringing_past_its_ring_timeout_is_cancelled_and_the_next_tried() -> None:
    h = PsapHarness(ring_timeout=8.0)
    h.ap("ap1").script = ApScript(answer_after=None)  # rings forever
    call = h.place_call()
    h.run(7.9)
    assert h.requests_to("ap1", "CANCEL") == [] and h.requests_to("ap2", "INVITE") == []
    h.run(2.0)
    assert len(h.requests_to("ap1", "CANCEL")) == 1
    assert h.ap("ap1").names().count("cancelled") == 1
    assert call.state == "confirmed" and h.row()["answer_point"] == "ap2"
    assert h.event("ap_timeout")["reason"] == "ring timeout"
    assert h.metric("ng911_hunt_attempts_total", result="ring_timeout") == 1
    assert h.statuses_to("esrp") == [100, 180, 200]


def test_when_every_ap_fails_the_call_waits_ringing_and_hunts_again_after_a_back_off() -> None:
    h = PsapHarness()
    for name in ("ap1", "ap2", "ap3"):
        h.ap(name).script = ApScript(provisional=None, reject=503)
    call = h.place_call()
    h.run(0.2)
    assert [len(h.requests_to(n, "INVITE")) for n in ("ap1", "ap2", "ap3")] == [1, 1, 1]
    assert call.state == "early" and h.statuses_to("esrp") == [100, 180]
    assert h.row()["state"] == "queued"
    assert h.metric("ng911_queue_length", queue="main") == 1
    # back-off 0.5 s, then 1 s, 2 s ...: each round tries the three again
    h.run(0.6)
    assert len(h.requests_to("ap1", "INVITE")) == 2
    h.ap("ap2").script = ApScript(answer_after=0.5)  # back in service
    h.run(5.0)
    assert call.state == "confirmed" and h.row()["answer_point"] == "ap2"
    assert h.statuses_to("esrp") == [100, 180, 200]  # never a 4xx/5xx, one 180
    waits = [e["data"]["backoff"] for e in h.events() if e["kind"] == "waiting"]
    assert waits[:2] == [0.5, 1.0]
    assert h.metric("ng911_queue_length", queue="main") == 0
    assert h.metric("ng911_time_in_queue_seconds_count", queue="main") == 1
    assert h.metric("ng911_calls_total", kind="emergency", outcome="rejected") == 0


def test_capacity_a_second_call_goes_to_the_next_free_position() -> None:
    h = PsapHarness()
    first = h.place_call()
    h.run(2.0)
    second = h.place_call()
    h.run(2.0)
    assert first.state == second.state == "confirmed"
    assert len(h.requests_to("ap1", "INVITE")) == 1
    [invite2] = h.requests_to("ap2", "INVITE")
    assert invite2.from_.uri == first.invite.from_.uri
    assert h.controller.pool.aps["ap1"].active == 1 and h.controller.pool.aps["ap2"].active == 1


def test_when_every_position_is_busy_a_call_waits_for_the_first_one_to_free_up() -> None:
    h = PsapHarness(aps=2, failover=_no_probe())
    first = h.place_call()
    second = h.place_call()
    h.run(2.0)
    assert first.state == second.state == "confirmed"
    third = h.place_call()
    h.run(0.5)
    assert third.state == "early" and h.statuses_to("esrp")[-1] == 180
    third_id = h.call_id
    assert h.row(third_id)["state"] == "queued"
    h.run(20.0)  # backing off, still waiting
    assert third.state == "early"
    # the first call's caller hangs up: ap1 frees up and the waiting call goes there at once
    first.bye()
    h.run(0.1)
    assert len(h.requests_to("ap1", "INVITE")) == 2
    h.run(2.0)
    assert third.state == "confirmed" and h.row(third_id)["answer_point"] == "ap1"
    assert len(h.requests_to("ap2", "INVITE")) == 1


def test_alternate_queues_are_hunted_when_the_queue_is_exhausted() -> None:
    routing = RoutingSpec(
        queues=(
            QueueSpec("main", (ap_spec(1), ap_spec(2)), alternates=("backup",)),
            QueueSpec("backup", (ap_spec(3),)),
        ),
        failover=_no_probe(),
    )
    h = PsapHarness(routing=routing)
    h.ap("ap1").script = ApScript(reject=486)
    h.ap("ap2").script = ApScript(reject=486)
    call = h.place_call()
    h.run(3.0)
    assert call.state == "confirmed" and h.row()["answer_point"] == "ap3"
    assert h.row()["queue"] == "main"


def test_an_ap_marked_down_by_health_probes_is_skipped() -> None:
    h = PsapHarness(health=True)
    h.ap("ap1").die()
    h.run(6.0)  # two failed probes (1 s timeout each, every 2 s)
    assert h.controller.pool.aps["ap1"].up is False
    assert h.metric("ng911_answer_point_up", answer_point="ap1") == 0
    assert [a["name"] for a in h.store.answer_points() if not a["up"]] == ["ap1"]
    call = h.place_call()
    h.run(2.0)
    assert h.packets("INVITE", dst="ap1") == []
    assert call.state == "confirmed" and h.row()["answer_point"] == "ap2"
    h.monitor.stop()


def test_sdp_helpers_agree_with_the_wire() -> None:
    """The harness's SDP samples are what the toolkit parses (guards the other tests)."""
    desc = sdplib.parse(CALLER_OFFER)
    assert desc.origin.sess_id == "555" and ports(desc) == [("audio", 4000), ("text", 4002)]
