"""2. The hunt: an answer point that refuses (486, 503) or never answers hands the call to the next.
3. Offer variants end to end: a delayed-offer caller, and a caller offering no media lines."""
from __future__ import annotations

import pytest

from .conftest import Ap, expect_rc, scenario_variant

pytestmark = pytest.mark.integration


def _hunted(node, reason_fragment: str, failed_kind: str):
    (call,) = node.wait_ended(1)
    assert call["outcome"] == "answered" and call["answer_point"] == "ap2"
    events = node.events(call["call_id"])
    kinds = [e["kind"] for e in events]
    assert kinds[:4] == ["received", "routing", "ap_invite", failed_kind], kinds
    assert kinds[-3:] == ["answered", "caller_hangup", "ended"], kinds
    invites = [e["data"]["answer_point"] for e in events if e["kind"] == "ap_invite"]
    assert invites == ["ap1", "ap2"]
    failed = events[3]["data"]
    assert failed["answer_point"] == "ap1" and reason_fragment in failed["reason"], failed
    return call


@pytest.mark.parametrize("status, reason", [(486, "Busy Here"), (503, "Service Unavailable")])
def test_ap_refusing_hands_the_call_to_the_next(node_factory, sipp, tmp_path, status, reason):
    ap1, ap2 = Ap("ap1"), Ap("ap2")
    refusal = scenario_variant(tmp_path, "ap_reject.xml", {"SIP/2.0 486 Busy Here": f"SIP/2.0 {status} {reason}"})
    a1 = sipp.ap(refusal, ap1)
    a2 = sipp.ap("ap_answer.xml", ap2)
    node = node_factory.start([ap1, ap2])
    caller = sipp.caller("caller_basic.xml", node, hold_ms=500)
    expect_rc(caller, 0, 30)
    expect_rc(a1, 97, 20)  # INVITE, our final response, the node's ACK
    expect_rc(a2, 97, 20)  # INVITE, 180, 200, ACK, BYE

    assert len(a1.received("ACK")) >= 1 and not a1.received("CANCEL")
    assert len(a2.received("BYE")) == 1
    # the caller talked to ap2 and was never told about ap1's refusal
    finals = [m.status for m in caller.messages() if m.direction == "received" and not m.is_request
              and m.method == "INVITE" and m.status >= 200]
    assert set(finals) == {200}
    assert b"o=ap2 " in [m for m in caller.messages() if m.status == 200 and m.method == "INVITE"][0].body
    _hunted(node, str(status), "ap_failed")
    assert node.metric("ng911_hunt_attempts_total", result="rejected") == 1
    assert node.metric("ng911_hunt_attempts_total", result="answered") == 1
    node.assert_clean()


@pytest.mark.parametrize("scenario, sends", [("ap_silent.xml", "nothing"), ("ap_trying.xml", "100 only")],
                         ids=["silent", "trying-only"])
def test_ap_that_never_rings_is_passed_over_after_no_provisional_timeout(node_factory, sipp, scenario, sends):
    ap1, ap2 = Ap("ap1", no_provisional_timeout=1.0), Ap("ap2")
    a1 = sipp.ap(scenario, ap1, timeout=15)  # answers OPTIONS (-aa): healthy, yet it never rings
    a2 = sipp.ap("ap_answer.xml", ap2)
    node = node_factory.start([ap1, ap2])
    caller = sipp.caller("caller_basic.xml", node, hold_ms=500)
    expect_rc(caller, 0, 30)
    # 97: the AP got to the end of its scenario. Silent: it received nothing but the INVITE (and
    # its retransmissions) -- no CANCEL, as it sent no provisional response (RFC 3261 section 9.1).
    # Trying-only: the 100 allows a CANCEL, which it got (200, 487, ACK).
    expect_rc(a1, 97, 20)
    expect_rc(a2, 97, 20)

    assert len(a1.received("INVITE")) >= 1 and a1.received("BYE") == []
    if sends == "nothing":
        assert a1.received("CANCEL") == [] and a1.received("ACK") == []
        assert [m for m in a1.sent(requests=False) if m.method == "INVITE"] == []
    else:
        assert len({m.header("Via") for m in a1.received("CANCEL")}) == 1
        assert [m.status for m in a1.sent(requests=False) if m.method == "INVITE"][-1] == 487
    call = _hunted(node, "no provisional", "ap_timeout")
    assert call["answer_point"] == "ap2"
    assert node.metric("ng911_hunt_attempts_total", result="no_provisional") == 1
    node.assert_clean()


# --- 3. offer variants --------------------------------------------------------------------------


def test_delayed_offer_caller(node_factory, sipp):
    ap1 = Ap("ap1")
    ap = sipp.ap("ap_offerless.xml", ap1)  # checks: INVITE without SDP, ACK with SDP
    node = node_factory.start([ap1])
    caller = sipp.caller("caller_delayed.xml", node, hold_ms=500)  # checks: 200 holds an offer
    expect_rc(caller, 0, 30)
    expect_rc(ap, 97, 20)

    (invite,) = ap.received("INVITE")
    assert invite.body == b"" and invite.header("Content-Type") is None
    (ok,) = [m for m in ap.sent(requests=False) if m.method == "INVITE" and m.status == 200][:1]
    up_200 = [m for m in caller.messages() if m.direction == "received" and m.method == "INVITE" and m.status == 200][0]
    assert up_200.sdp() == ok.sdp()  # the AP's offer, unchanged, in our 200
    (caller_ack,) = caller.sent("ACK")
    ap_acks = ap.received("ACK")
    assert ap_acks and all(a.sdp() == caller_ack.sdp() for a in ap_acks)  # the caller's answer
    (call,) = node.wait_ended(1)
    assert call["outcome"] == "answered"
    assert node.kinds(call["call_id"])[-3:] == ["answered", "caller_hangup", "ended"]
    node.assert_clean()


def test_flow_iv_offer_without_media_lines(node_factory, sipp):
    ap1 = Ap("ap1")
    ap = sipp.ap("ap_flow4.xml", ap1)  # checks: SDP offer with no m= line
    node = node_factory.start([ap1])
    caller = sipp.caller("caller_flow4.xml", node, hold_ms=500)  # checks: answer with no m= line
    expect_rc(caller, 0, 30)
    expect_rc(ap, 97, 20)

    (sent,) = caller.sent("INVITE")
    (got,) = ap.received("INVITE")
    assert got.sdp() == sent.sdp() and b"m=" not in got.sdp()
    (call,) = node.wait_ended(1)
    assert call["outcome"] == "answered" and call["answer_point"] == "ap1"
    node.assert_clean()
