"""The PSAP leg moves, the caller's leg stays: 4. the answer point dies mid-call (kill -9) and the
call fails over; 6. the call-taker transfers the call by REFER. Either way the caller gets one
re-INVITE continuing its session (same o= session, higher version) and never a BYE."""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.integration.conftest import REPORT

from .conftest import NG911, Ap, expect_rc, sdp_origin

pytestmark = pytest.mark.integration


def _wait_talking(node, ap: str, timeout: float = 15.0):
    (call,) = node.wait_calls(lambda cs: len(cs) == 1 and cs[0]["state"] == "talking" and cs[0]["answer_point"] == ap,
                              timeout, f"the call talking to {ap}")
    return call


def _check_caller_moved(caller, new_ap):
    """The caller's view: 200 from the first AP, then exactly one re-INVITE with SDP that continues
    the session the caller knows (RFC 3264 section 8: same o= user and session id, version + 1),
    same number of m-lines; no BYE ever came from the node. Returns the re-INVITE."""
    received = [m for m in caller.messages() if m.direction == "received"]
    assert [m for m in received if m.is_request and m.method == "BYE"] == [], "the caller got a BYE"
    (ok,) = [m for m in received if not m.is_request and m.method == "INVITE" and m.status == 200][:1]
    reinvites = [m for m in received if m.is_request and m.method == "INVITE"]
    assert len({m.header("CSeq") for m in reinvites}) == 1, [m.header("CSeq") for m in reinvites]
    reinvite = reinvites[0]
    user, session, version = sdp_origin(ok.sdp())
    user2, session2, version2 = sdp_origin(reinvite.sdp())
    assert (user2, session2) == (user, session), (ok.sdp(), reinvite.sdp())
    assert version2 > version
    assert reinvite.sdp().count(b"\nm=") == ok.sdp().count(b"\nm=") == 1
    # the media now come from the new answer point (its offer's port), rewritten onto the session
    offer = [m for m in new_ap.sent(requests=False) if m.method == "INVITE" and m.status == 200][0]
    new_port = re.search(rb"^m=audio (\d+)", offer.sdp() or b"", re.M)
    assert new_port and re.search(rb"^m=audio " + new_port.group(1) + rb" ", reinvite.sdp(), re.M)
    return reinvite


def _status(node) -> dict:
    res = subprocess.run([NG911, "status", "--config", str(node.config), "--json"], capture_output=True, text=True,
                         timeout=60, env=node.env, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.parametrize("caller_scenario, transport", [
    # a plain SDP caller; answer points on UDP
    pytest.param("caller_moved.xml", None, id="sdp-caller"),
    # an NG9-1-1 multipart caller: the new answer point's INVITE must carry the location and
    # additional data without the SDP part (answer points on TCP: these INVITEs exceed 1300 bytes)
    pytest.param("caller_ng911_moved.xml", "tcp", id="ng911-caller"),
])
def test_ap_killed_mid_call_fails_over_without_the_caller_noticing(node_factory, sipp, caller_scenario, transport):
    ap1, ap2 = Ap("ap1", transport=transport), Ap("ap2", transport=transport)
    a1 = sipp.ap("ap_answer.xml", ap1)
    a2 = sipp.ap("ap_offerless.xml", ap2)  # INVITE without SDP -> 200 offer -> ACK with the answer
    node = node_factory.start([ap1, ap2])
    caller = sipp.caller(caller_scenario, node, hold_ms=1500, timeout=40)
    call = _wait_talking(node, "ap1")
    status = _status(node)  # `ng911 status --json` reads the live call from the database
    assert [(c["call_id"], c["state"], c["answer_point"]) for c in status["calls"]] == [
        (call["call_id"], "talking", "ap1")]
    assert {a["name"]: a["up"] for a in status["answer_points"]} == {"ap1": True, "ap2": True}
    assert node.metric("ng911_failovers_total") == 0
    killed_at = a1.kill9()

    expect_rc(caller, 0, 45)  # re-INVITE answered, ACKed, its own BYE later; no BYE received
    expect_rc(a2, 97, 20)
    reinvite = _check_caller_moved(caller, a2)
    seconds = reinvite.at - killed_at
    line = (f"time to failover, kill -9 of the answer point -> caller's re-INVITE "
            f"({caller_scenario}): {seconds:.3f} s")
    print(line)
    REPORT.append(line)

    # the new AP's INVITE: no SDP, but the NG9-1-1 headers (with the NENA ids the node minted for
    # a caller that sent none) and every other body part, as the first AP got them
    (invite1,) = a1.received("INVITE")
    (invite2,) = a2.received("INVITE")
    assert invite2.sdp() is None and invite2.start_line == f"INVITE {ap2.uri} SIP/2.0"
    for name in ("Geolocation", "Geolocation-Routing", "Call-Info", "Resource-Priority"):
        assert invite2.header_all(name) == invite1.header_all(name), name
    assert len(invite2.header_all("Call-Info")) >= 2  # the NENA call and incident ids
    assert invite2.parts() == [(h, b) for h, b in invite1.parts() if h["content-type"] != "application/sdp"]
    # the new AP's ACK carries the caller's answer (aligned to its offer)
    acks = a2.received("ACK")
    caller_port = re.search(rb"^m=audio (\d+)", caller.sent("INVITE")[0].sdp(), re.M).group(1)
    assert acks and all(re.search(rb"^m=audio " + caller_port + rb" ", a.sdp() or b"", re.M) for a in acks)
    assert len(a2.received("BYE")) == 1  # the caller's hang-up reached the new AP

    (row,) = node.wait_ended(1)
    assert row["call_id"] == call["call_id"] and row["outcome"] == "answered" and row["answer_point"] == "ap2"
    events = node.events(call["call_id"])
    kinds = [e["kind"] for e in events]
    assert kinds.count("failover") == 1 and kinds.count("moved") == 1, kinds
    failover, moved = events[kinds.index("failover")], events[kinds.index("moved")]
    assert kinds.index("answered") < kinds.index("failover") < kinds.index("moved") < kinds.index("caller_hangup")
    assert failover["data"]["answer_point"] == "ap1"
    assert moved["data"]["answer_point"] == "ap2" and moved["data"]["reason"] == failover["data"]["reason"]
    assert "ap_hangup" not in kinds
    assert node.metric("ng911_failovers_total") == 1
    assert node.metric("ng911_failover_duration_seconds_count") == 1
    assert node.metric("ng911_calls_total", kind="emergency", outcome="answered") == 1
    node.assert_clean()


def test_refer_transfer_moves_the_call_to_another_ap(node_factory, sipp):
    ap1, ap2 = Ap("ap1"), Ap("ap2")
    a2 = sipp.ap("ap_offerless.xml", ap2)
    # REFER to ap2; expects 202, NOTIFY sipfrag 100, NOTIFY sipfrag 200, then a BYE
    a1 = sipp.ap("ap_refer.xml", ap1, keys={"refer_to": ap2.uri})
    node = node_factory.start([ap1, ap2])
    caller = sipp.caller("caller_moved.xml", node, hold_ms=1000, timeout=40)
    expect_rc(caller, 0, 45)
    expect_rc(a1, 97, 20)
    expect_rc(a2, 97, 20)

    _check_caller_moved(caller, a2)
    (refer,) = a1.sent("REFER")
    (accepted,) = [m for m in a1.received(requests=False) if m.method == "REFER"]
    assert accepted.status == 202
    notifies = [m.body for m in a1.received("NOTIFY")]
    assert [n.split(b"\r\n")[0] for n in dict.fromkeys(notifies)] == [b"SIP/2.0 100 Trying", b"SIP/2.0 200 OK"]
    (invite2,) = a2.received("INVITE")
    assert invite2.sdp() is None and invite2.start_line == f"INVITE {ap2.uri} SIP/2.0"

    (row,) = node.wait_ended(1)
    assert row["outcome"] == "answered" and row["answer_point"] == "ap2"
    events = node.events(row["call_id"])
    kinds = [e["kind"] for e in events]
    assert kinds.count("transfer") == 1 and kinds.count("moved") == 1, kinds
    assert kinds.index("answered") < kinds.index("transfer") < kinds.index("moved") < kinds.index("caller_hangup")
    moved = events[kinds.index("moved")]["data"]
    assert moved["answer_point"] == "ap2" and moved["reason"] == "transfer"
    assert "failover" not in kinds and "transfer_failed" not in kinds
    node.assert_clean()


def test_delayed_offer_caller_fails_over(node_factory, sipp):
    """The caller sent no offer: the first AP's offer went up in our 200 and the caller's answer
    came in its ACK. A failover must still continue the session the caller knows."""
    ap1, ap2 = Ap("ap1"), Ap("ap2")
    a1 = sipp.ap("ap_offerless.xml", ap1)
    a2 = sipp.ap("ap_offerless.xml", ap2)
    node = node_factory.start([ap1, ap2])
    caller = sipp.caller("caller_delayed_moved.xml", node, hold_ms=1000, timeout=40)
    _wait_talking(node, "ap1")
    a1.kill9()
    expect_rc(caller, 0, 45)
    expect_rc(a2, 97, 20)
    _check_caller_moved(caller, a2)
    (row,) = node.wait_ended(1)
    kinds = node.kinds(row["call_id"])
    assert row["answer_point"] == "ap2" and kinds.count("failover") == 1 and kinds.count("moved") == 1, kinds
    node.assert_clean()


def test_refer_to_a_target_that_refuses_keeps_the_call(node_factory, sipp):
    ap1, ap2 = Ap("ap1"), Ap("ap2")
    a2 = sipp.ap("ap_reject.xml", ap2)  # 486 Busy Here
    # REFER to ap2; expects 202, NOTIFY sipfrag 100, final NOTIFY sipfrag 486; keeps the call
    a1 = sipp.ap("ap_refer_refused.xml", ap1, keys={"refer_to": ap2.uri})
    node = node_factory.start([ap1, ap2])
    caller = sipp.caller("caller_basic.xml", node, hold_ms=2500)  # no re-INVITE, no BYE expected
    expect_rc(caller, 0, 30)
    expect_rc(a1, 97, 20)  # ... and the caller's BYE reached it
    expect_rc(a2, 97, 20)

    assert caller.received("INVITE") == [] and caller.received("BYE") == []
    (row,) = node.wait_ended(1)
    assert row["outcome"] == "answered" and row["answer_point"] == "ap1"
    events = node.events(row["call_id"])
    kinds = [e["kind"] for e in events]
    assert kinds.count("transfer") == 1 and kinds.count("transfer_failed") == 1, kinds
    assert kinds.index("transfer") < kinds.index("transfer_failed") < kinds.index("caller_hangup")
    assert "moved" not in kinds and "failover" not in kinds
    node.assert_clean()
