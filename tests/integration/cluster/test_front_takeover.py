"""Takeover behind the cluster's front: two real ``ng911 serve`` nodes on one PostgreSQL database,
the real ``deploy/kamailio/kamailio.cfg`` in front of them, a SIPp caller (an ESRP) sending
``INVITE urn:service:sos`` to the front, SIPp answer points. The node that holds the call is
killed (``kill -9``); the survivor takes the call over and reaches the caller through the front,
whose address never changes:

- a talking call: the caller gets a re-INVITE relayed by the front, with the survivor's Contact;
  its BYE (Route: the front, Request-URI: that Contact) reaches the survivor, which ends both legs;
- a ringing call: the survivor answers the caller's original INVITE transaction (the To-tag of
  the dead node's 180) through the front (its tm matches the 200 by the branch of its Via);
- a call on hold: the survivor re-offers each side what it last sent (the caller our answer to its
  hold, version + 1; the position a=sendonly again), through the front to the caller;
- a queued call (no position up): once the position comes up, the survivor answers the caller's
  original INVITE through the front;
- a paused node (SIGSTOP past the lease, then SIGCONT): nothing it sends on the call taken from
  it reaches the caller (no request with its Via/Contact, no in-dialog relay from it in the
  front's log) or the position;
- 40 calls over TCP spread by the front over both nodes: the 20 of the killed node are all
  re-homed (kill → re-INVITE p50/p99/last printed), the survivor's own 20 left alone.

Kamailio's round-robin gives the first call to the last node of its list: the node that owns a
call is read from the database, never assumed.

Over UDP and over TCP (the caller's transport; the answer points stay on UDP). What is asserted
is behaviour (what the caller and the answer points received, the call's record); the time from
the kill to what the caller saw is printed, never asserted.
"""
from __future__ import annotations

import re
import time
from typing import Callable

import pytest

from tests.integration.cluster.kamailio import HOST, Kamailio
from tests.integration.cluster.nodes import (  # noqa: F401  (fixtures)
    Ap, ClusterNode, cluster, db_url, pg_server, sipp, sipp_ap, sipp_caller,
)
from tests.integration.cluster.nodes import SCENARIOS, contact_port
from tests.integration.conftest import wait_until
from tests.integration.controller.conftest import SipMsg, sdp_origin

pytestmark = pytest.mark.integration

TRANSPORTS = [pytest.param("u1", id="udp"), pytest.param("t1", id="tcp")]
CONTROLLER_SCENARIOS = SCENARIOS.parent.parent / "controller" / "scenarios"


# --- helpers ---------------------------------------------------------------------------------------


def _vias(msg: SipMsg) -> list[str]:
    return [v.strip() for value in msg.header_all("Via") for v in value.split(",")]


def _top_via_is(msg: SipMsg, port: int) -> bool:
    vias = _vias(msg)
    return bool(vias) and f"{HOST}:{port};" in vias[0]


def _routes(msg: SipMsg) -> list[str]:
    return [r.strip() for value in msg.header_all("Route") for r in value.split(",")]


def _record_routes(msg: SipMsg) -> list[str]:
    return [r.strip() for value in msg.header_all("Record-Route") for r in value.split(",")]


def _owner(nodes: list[ClusterNode], call: dict) -> tuple[ClusterNode, ClusterNode]:
    """(the node that owns ``call``, the other one)."""
    by_name = {n.name: n for n in nodes}
    owner = by_name[call["owner_node"]]
    (other,) = [n for n in nodes if n is not owner]
    return owner, other


def _front(kamailio_factory: Callable[..., Kamailio], nodes: list[ClusterNode]) -> Kamailio:
    return kamailio_factory([(HOST, n.sip_port) for n in nodes])


def _evidence(caller, ap_procs, kam: Kamailio, nodes: list[ClusterNode]) -> str:
    """What to look at when a check fails: the SIPp summaries, the front's log, the nodes' logs."""
    parts = [caller.summary()] + [p.summary() for p in ap_procs]
    parts.append("kamailio log:\n" + kam.log_text()[-4000:])
    for n in nodes:
        parts.append(f"{n.name} stderr tail:\n" + n.stderr_text()[-6000:])
    return "\n\n".join(parts)


def _answered_by(caller) -> list[SipMsg]:
    return [m for m in caller.received(None, requests=False)
            if m.status == 200 and "INVITE" in (m.header("CSeq") or "")]


def _in_dialog_byes_relayed(kam: Kamailio, port: int) -> list[str]:
    """The front's routing lines for in-dialog BYEs it sent to 127.0.0.1:``port``."""
    return [line for line in kam.log_text().splitlines()
            if "in-dialog BYE from" in line and re.search(rf"-> sip:[^ ]*{re.escape(HOST)}:{port}\b", line)]


# --- tests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_talking_call_behind_the_front_survives_kill9_of_its_node(
        transport: str, cluster, sipp, kamailio_factory: Callable[..., Kamailio]) -> None:
    ap = Ap("ap1")
    ap_proc = sipp_ap(sipp, "tk_ap.xml", ap)
    nodes = cluster.start(["n1", "n2"], [ap], trace=True)
    kam = _front(kamailio_factory, nodes)
    caller = sipp_caller(sipp, "front_caller.xml", kam.port, hold_ms=1000, transport=transport)

    calls = nodes[0].wait_talking()
    dead, survivor = _owner(nodes, calls[0])
    killed = dead.kill9()

    rc = caller.wait(60)
    assert rc == 0, _evidence(caller, [ap_proc], kam, nodes)
    assert ap_proc.wait(30) == 97, _evidence(caller, [ap_proc], kam, nodes)

    # the first answer came through the front (its Record-Route), from the node that died
    [ok] = _answered_by(caller)
    assert contact_port(ok) == dead.sip_port
    assert any(f"{HOST}:{kam.port};" in rr for rr in _record_routes(ok)), ok.head
    # the caller: one re-INVITE, relayed by the front, with the survivor's Contact; never a BYE
    reinvites = caller.received("INVITE")
    assert len(reinvites) == 1, _evidence(caller, [ap_proc], kam, nodes)
    [reinvite] = reinvites
    assert contact_port(reinvite) == survivor.sip_port, reinvite.head
    # relayed by the front: its Via on top, the survivor's under it
    assert _top_via_is(reinvite, kam.port), f"the re-INVITE did not come through the front:\n{reinvite.head}"
    assert len(_vias(reinvite)) == 2 and f"{HOST}:{survivor.sip_port};" in _vias(reinvite)[1], reinvite.head
    assert caller.received("BYE") == []
    # the caller's BYE: Route = the front, Request-URI = the survivor's Contact
    [bye] = caller.sent("BYE")
    assert f"{HOST}:{survivor.sip_port}" in bye.start_line, bye.head
    assert _routes(bye) and all(f"{HOST}:{kam.port};" in r for r in _routes(bye)), bye.head
    # … and the front relayed it to the survivor
    assert _in_dialog_byes_relayed(kam, survivor.sip_port), kam.log_text()[-3000:]
    print(f"\n[front {transport}] kill -9 of {dead.name} → caller's re-INVITE from {survivor.name} "
          f"through the front: {reinvite.at - killed:.2f} s")

    # the position: refreshed by the survivor, then BYEd by it when the caller hung up
    ap_reinvites = [m for m in ap_proc.received("INVITE") if "tag=" in (m.header("To") or "")]
    assert len(ap_reinvites) == 1 and contact_port(ap_reinvites[0]) == survivor.sip_port
    [ap_bye] = ap_proc.received("BYE")
    assert _top_via_is(ap_bye, survivor.sip_port), ap_bye.head
    # the record: the survivor owns and ended it, the caller's hang-up
    (row,) = survivor.wait_ended(1, timeout=15)
    assert (row["owner_node"], row["end_reason"], row["outcome"]) == (survivor.name, "caller_hangup", "answered")
    assert "resumed" in survivor.kinds(row["call_id"])
    assert survivor.metric("ng911_cluster_takeovers_total", state="talking") == 1
    survivor.assert_clean()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ringing_call_behind_the_front_is_answered_by_the_survivor_on_the_original_invite(
        transport: str, cluster, sipp, kamailio_factory: Callable[..., Kamailio]) -> None:
    ringer = Ap("ap1", ring_timeout=3.0)  # rings and never answers (each attempt CANCELled)
    answerer = Ap("ap2")
    ringer_proc = sipp.ap(CONTROLLER_SCENARIOS / "ap_ring_cancel.xml", ringer, calls=3, timeout=90)
    ap_proc = sipp_ap(sipp, "tk_ap.xml", answerer)
    nodes = cluster.start(["n1", "n2"], [ringer, answerer], trace=True)
    kam = _front(kamailio_factory, nodes)
    caller = sipp_caller(sipp, "front_caller_unanswered.xml", kam.port, hold_ms=1000, transport=transport)

    calls = nodes[0].wait_calls(lambda cs: len(cs) == 1 and cs[0]["state"] == "ringing", 20, "a ringing call")
    dead, survivor = _owner(nodes, calls[0])
    wait_until(lambda: any(m.status == 180 for m in caller.received(None, requests=False)), 10, "the caller's 180")
    first_180 = [m for m in caller.received(None, requests=False) if m.status == 180][0]
    killed = dead.kill9()

    def evidence() -> str:
        return _evidence(caller, [ringer_proc, ap_proc], kam, nodes)

    rc = caller.wait(60)
    assert rc == 0, evidence()
    assert ap_proc.wait(30) == 97, evidence()

    [ok] = _answered_by(caller)
    assert contact_port(ok) == survivor.sip_port, ok.head
    # one early dialog: the survivor answers with the To-tag the dead node gave, on the caller's
    # own Via only — the front consumed its Via: the 200 came through it, not straight from the node
    assert ok.header("To") == first_180.header("To"), (ok.head, first_180.head)
    assert _vias(ok) == _vias(first_180) and len(_vias(ok)) == 1, ok.head
    assert any(f"{HOST}:{kam.port};" in rr for rr in _record_routes(ok)), ok.head
    assert caller.received("BYE") == []
    # the ACK and the BYE went along the front's route to the survivor's Contact
    [bye] = caller.sent("BYE")
    assert f"{HOST}:{survivor.sip_port}" in bye.start_line, bye.head
    assert _routes(bye) and all(f"{HOST}:{kam.port};" in r for r in _routes(bye)), bye.head
    assert _in_dialog_byes_relayed(kam, survivor.sip_port), kam.log_text()[-3000:]
    rung = [m for m in caller.received(None, requests=False) if m.status == 180 and m.at > killed
            and contact_port(m) == survivor.sip_port]
    print(f"\n[front {transport}] kill -9 of a ringing call's node {dead.name} → {survivor.name}'s 180 through the front: "
          f"{(rung[0].at - killed) if rung else float('nan'):.2f} s, its 200 (after a new hunt): {ok.at - killed:.2f} s")

    [ap_bye] = ap_proc.received("BYE")
    assert _top_via_is(ap_bye, survivor.sip_port), ap_bye.head
    (row,) = survivor.wait_ended(1, timeout=15)
    assert (row["owner_node"], row["answer_point"], row["end_reason"]) == (survivor.name, "ap2", "caller_hangup")
    assert survivor.metric("ng911_cluster_takeovers_total", state="ringing") == 1
    survivor.assert_clean()


def _from_node(msgs: list[SipMsg], node: ClusterNode) -> list[SipMsg]:
    """The requests among ``msgs`` that ``node`` sent: its address in any Via (behind the front its
    Via is under the front's), or its Contact; the out-of-dialog OPTIONS of its position health
    checks are on no call."""
    def sent_by(m: SipMsg) -> bool:
        return any(f"{HOST}:{node.sip_port};" in v for v in _vias(m)) or \
            f"{HOST}:{node.sip_port}" in (m.header("Contact") or "")

    return [m for m in msgs if m.is_request and sent_by(m)
            and not (m.method == "OPTIONS" and "tag=" not in (m.header("To") or ""))]


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_call_on_hold_behind_the_front_stays_on_hold_when_taken_over(
        transport: str, cluster, sipp, kamailio_factory: Callable[..., Kamailio]) -> None:
    ap = Ap("ap1")
    ap_proc = sipp_ap(sipp, "tk_ap.xml", ap)
    nodes = cluster.start(["n1", "n2"], [ap], trace=True)
    kam = _front(kamailio_factory, nodes)
    caller = sipp_caller(sipp, "front_caller_hold.xml", kam.port, hold_ms=1000, transport=transport)

    def evidence() -> str:
        return _evidence(caller, [ap_proc], kam, nodes)

    calls = nodes[0].wait_talking()
    dead, survivor = _owner(nodes, calls[0])
    # the hold went through the front: the position was re-INVITEd with the caller's sendonly offer
    wait_until(lambda: any(b"a=sendonly" in (m.sdp() or b"") for m in ap_proc.received("INVITE")), 10,
               "the hold reaching the position")
    wait_until(lambda: any(m.status == 200 and m.header("CSeq") == "2 INVITE"
                           for m in caller.received(None, requests=False)), 10, "the caller's 200 to its hold")
    time.sleep(0.5)  # (its legs' new SDP saved)
    killed = dead.kill9()

    assert caller.wait(60) == 0, evidence()
    assert ap_proc.wait(30) == 97, evidence()
    assert caller.received("BYE") == []
    # the hold's re-INVITE went along the front's route to the dead node's Contact
    [hold] = [m for m in caller.sent("INVITE") if m.header("CSeq") == "2 INVITE"]
    assert f"{HOST}:{dead.sip_port}" in hold.start_line and _routes(hold), hold.head
    # the caller: one re-INVITE from the survivor, relayed by the front
    [reinvite] = caller.received("INVITE")
    assert contact_port(reinvite) == survivor.sip_port, reinvite.head
    assert _top_via_is(reinvite, kam.port) and f"{HOST}:{survivor.sip_port};" in _vias(reinvite)[1], reinvite.head
    # … offering what the caller last accepted (our answer to its hold), version + 1
    [hold_answer] = [m for m in caller.received(None, requests=False)
                     if m.status == 200 and m.header("CSeq") == "2 INVITE"]
    offer, last = reinvite.sdp(), hold_answer.sdp()
    (user, sess, version), (user0, sess0, version0) = sdp_origin(offer), sdp_origin(last)
    assert (user, sess, version) == (user0, sess0, version0 + 1), (offer, last)
    assert [line for line in offer.splitlines() if not line.startswith(b"o=")] == \
        [line for line in last.splitlines() if not line.startswith(b"o=")], (offer, last)
    # the position is still held by the caller's side: the survivor offers it sendonly again
    from_survivor_ap = [m for m in ap_proc.received("INVITE") if contact_port(m) == survivor.sip_port]
    assert len(from_survivor_ap) == 1, evidence()
    assert b"a=sendonly" in from_survivor_ap[0].sdp(), from_survivor_ap[0].sdp()
    # the caller's BYE: Route = the front, Request-URI = the survivor's Contact; relayed there
    [bye] = caller.sent("BYE")
    assert f"{HOST}:{survivor.sip_port}" in bye.start_line, bye.head
    assert _routes(bye) and all(f"{HOST}:{kam.port};" in r for r in _routes(bye)), bye.head
    assert _in_dialog_byes_relayed(kam, survivor.sip_port), kam.log_text()[-3000:]
    [ap_bye] = ap_proc.received("BYE")
    assert _top_via_is(ap_bye, survivor.sip_port), ap_bye.head
    print(f"\n[front {transport}] kill -9 of {dead.name} (call on hold) → caller's re-INVITE from {survivor.name} "
          f"through the front: {reinvite.at - killed:.2f} s")
    (row,) = survivor.wait_ended(1, timeout=15)
    assert (row["owner_node"], row["end_reason"], row["outcome"]) == (survivor.name, "caller_hangup", "answered")
    assert survivor.metric("ng911_cluster_takeovers_total", state="talking") == 1
    survivor.assert_clean()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_queued_call_behind_the_front_is_answered_by_the_survivor_when_a_position_comes_up(
        transport: str, cluster, sipp, kamailio_factory: Callable[..., Kamailio]) -> None:
    ap = Ap("ap1")  # nobody listens yet: down, the call waits in its queue
    nodes = cluster.start(["n1", "n2"], [ap], trace=True)
    kam = _front(kamailio_factory, nodes)
    caller = sipp_caller(sipp, "front_caller_unanswered.xml", kam.port, hold_ms=1000, timeout=90,
                         transport=transport)
    ap_procs: list = []

    def evidence() -> str:
        return _evidence(caller, ap_procs, kam, nodes)

    calls = nodes[0].wait_calls(lambda cs: len(cs) == 1 and cs[0]["state"] == "queued", 20, "a queued call")
    dead, survivor = _owner(nodes, calls[0])
    wait_until(lambda: caller.received(None, requests=False), 10, "a provisional to the caller")
    before = caller.received(None, requests=False)
    killed = dead.kill9()
    survivor.wait_calls(lambda cs: cs[0]["owner_node"] == survivor.name, 20, "the survivor owning the call")
    taken = time.time()
    ap_proc = sipp_ap(sipp, "tk_ap.xml", ap)  # the position signs in
    ap_procs.append(ap_proc)

    assert caller.wait(60) == 0, evidence()
    assert ap_proc.wait(30) == 97, evidence()
    [ok] = _answered_by(caller)
    assert contact_port(ok) == survivor.sip_port, ok.head
    # on the caller's original INVITE transaction, through the front: its Via consumed, its
    # Record-Route; the To-tag chosen at admission (the one in the dead node's provisionals)
    assert len(_vias(ok)) == 1 and _vias(ok) == _vias(before[0]), (ok.head, before[0].head)
    assert any(f"{HOST}:{kam.port};" in rr for rr in _record_routes(ok)), ok.head
    tagged = [m for m in before if "tag=" in (m.header("To") or "")]
    if tagged:
        assert ok.header("To") == tagged[0].header("To"), (ok.head, tagged[0].head)
    assert caller.received("BYE") == []
    [bye] = caller.sent("BYE")
    assert f"{HOST}:{survivor.sip_port}" in bye.start_line, bye.head
    assert _routes(bye) and all(f"{HOST}:{kam.port};" in r for r in _routes(bye)), bye.head
    assert _in_dialog_byes_relayed(kam, survivor.sip_port), kam.log_text()[-3000:]
    [ap_invite] = [m for m in ap_proc.received("INVITE") if "tag=" not in (m.header("To") or "")]
    assert _top_via_is(ap_invite, survivor.sip_port), ap_invite.head
    [ap_bye] = ap_proc.received("BYE")
    assert _top_via_is(ap_bye, survivor.sip_port), ap_bye.head
    print(f"\n[front {transport}] kill -9 of a queued call's node {dead.name} → {survivor.name} owns it: "
          f"{taken - killed:.2f} s; its 200 through the front {ok.at - taken:.2f} s after the position started "
          f"(provisionals before the kill: {[m.status for m in before]})")
    (row,) = survivor.wait_ended(1, timeout=15)
    assert (row["owner_node"], row["answer_point"], row["end_reason"]) == (survivor.name, "ap1", "caller_hangup")
    assert survivor.metric("ng911_cluster_takeovers_total", state="queued") == 1
    survivor.assert_clean()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_paused_node_behind_the_front_resumed_stays_silent_on_the_call_taken_from_it(
        transport: str, cluster, sipp, kamailio_factory: Callable[..., Kamailio]) -> None:
    ap = Ap("ap1")
    ap_proc = sipp_ap(sipp, "tk_ap.xml", ap)
    nodes = cluster.start(["n1", "n2"], [ap], trace=True)
    kam = _front(kamailio_factory, nodes)
    caller = sipp_caller(sipp, "front_caller.xml", kam.port, hold_ms=8000, transport=transport)

    def evidence() -> str:
        return _evidence(caller, [ap_proc], kam, nodes)

    calls = nodes[0].wait_talking()
    paused_node, survivor = _owner(nodes, calls[0])
    # its in-dialog probe of the position runs (one is due every second: overdue when it resumes)
    wait_until(lambda: any(m.method == "OPTIONS" for m in _from_node(ap_proc.received(None), paused_node)), 10,
               f"an in-dialog OPTIONS from {paused_node.name} to the position")
    front_log_at_pause = len(kam.log_text())
    paused = paused_node.pause()
    # the survivor takes the call: the caller's re-INVITE comes from it, through the front
    wait_until(lambda: any(contact_port(m) == survivor.sip_port for m in caller.received("INVITE")), 20,
               "the caller re-INVITEd by the survivor")
    resumed = paused_node.resume()
    # the paused node runs its overdue timers (probe, refresh), then learns from its heartbeat
    # that it lost the call
    wait_until(lambda: paused_node.metric("ng911_cluster_calls_lost_total") == 1, 15,
               f"{paused_node.name} noticing it lost the call")
    assert caller.wait(60) == 0, evidence()
    assert ap_proc.wait(30) == 97, evidence()

    late = [m for m in _from_node(caller.received(None) + ap_proc.received(None), paused_node) if m.at > paused]
    assert late == [], f"{paused_node.name} sent {len(late)} request(s) after its pause: " \
                       f"{[m.start_line for m in late]}\n{evidence()}"
    # the front relayed nothing from it on a dialog after the pause (UDP: its source port is its
    # SIP port; over TCP a node's connection comes from any port, and its Via is checked above)
    front_late = [line for line in kam.log_text()[front_log_at_pause:].splitlines()
                  if "in-dialog" in line and re.search(rf"from {re.escape(HOST)}:{paused_node.sip_port}\b", line)]
    assert front_late == [], front_late
    [reinvite] = caller.received("INVITE")
    assert _top_via_is(reinvite, kam.port) and f"{HOST}:{survivor.sip_port};" in _vias(reinvite)[1], reinvite.head
    assert caller.received("BYE") == []
    [bye] = caller.sent("BYE")
    assert f"{HOST}:{survivor.sip_port}" in bye.start_line, bye.head
    assert _in_dialog_byes_relayed(kam, survivor.sip_port), kam.log_text()[-3000:]
    (row,) = survivor.wait_ended(1, timeout=15)
    assert (row["owner_node"], row["end_reason"]) == (survivor.name, "caller_hangup")
    print(f"\n[front {transport}] {paused_node.name} paused {resumed - paused:.1f} s; caller re-INVITEd by "
          f"{survivor.name} through the front {reinvite.at - paused:.2f} s after the pause; "
          f"{paused_node.name} lost the call, sent nothing on it")
    paused_node.assert_clean()
    survivor.assert_clean()


def test_twenty_live_tcp_calls_of_the_dying_node_behind_the_front_are_all_rehomed(
        cluster, sipp, kamailio_factory: Callable[..., Kamailio]) -> None:
    """40 calls over TCP through the front, spread round-robin over the two nodes (20 each); the
    node of 20 of them is killed: each of its calls is re-INVITEd by the survivor through the
    front, the survivor's own 20 are left alone; every call ends by its caller's BYE."""
    total = 40
    ap = Ap("ap1", capacity=total)
    ap_proc = sipp_ap(sipp, "tk_ap.xml", ap, calls=total, timeout=120)
    nodes = cluster.start(["n1", "n2"], [ap])
    kam = _front(kamailio_factory, nodes)
    caller = sipp_caller(sipp, "front_caller_maybe_moved.xml", kam.port, calls=total, hold_ms=3000, timeout=120,
                         transport="t1", extra=["-l", str(total), "-r", "20"])

    def evidence() -> str:
        return _evidence(caller, [ap_proc], kam, nodes)

    calls = nodes[0].wait_calls(lambda cs: len(cs) == total and all(c["state"] == "talking" for c in cs), 30,
                                f"{total} talking calls")
    dead, survivor = _owner(nodes, calls[0])
    doomed = {c["call_id"] for c in calls if c["owner_node"] == dead.name}
    assert len(doomed) == total // 2, f"round-robin: {len(doomed)} of {total} calls on {dead.name}"
    killed = dead.kill9()

    assert caller.wait(120) == 0, evidence()
    assert ap_proc.wait(60) == 97, evidence()
    assert caller.received("BYE") == []
    # the dead node's calls, each re-INVITEd once by the survivor, through the front; the others not at all
    reinvites = caller.received("INVITE")
    assert len(reinvites) == len(doomed), evidence()
    assert {contact_port(m) for m in reinvites} == {survivor.sip_port}
    assert all(_top_via_is(m, kam.port) for m in reinvites)
    answered_by = {m.header("Call-ID"): contact_port(m) for m in _answered_by(caller)}
    assert {m.header("Call-ID") for m in reinvites} == \
        {cid for cid, port in answered_by.items() if port == dead.sip_port}
    # every BYE went through the front to the node holding its call now: the survivor
    byes = caller.sent("BYE")
    assert len(byes) == total and all(f"{HOST}:{survivor.sip_port}" in b.start_line for b in byes)
    assert len(_in_dialog_byes_relayed(kam, survivor.sip_port)) >= total
    rows = survivor.wait_ended(total, timeout=30)
    assert {(r["owner_node"], r["end_reason"]) for r in rows} == {(survivor.name, "caller_hangup")}
    assert survivor.metric("ng911_cluster_takeovers_total", state="talking") == len(doomed)
    delays = [m.at - killed for m in reinvites]
    print(f"\n[front tcp] {len(doomed)} calls of {dead.name} re-homed on {survivor.name} through the front "
          f"(its own {total - len(doomed)} untouched): kill -9 → caller's re-INVITE "
          f"p50 {_quantile(delays, 0.5):.2f} s, p99 {_quantile(delays, 0.99):.2f} s, last {max(delays):.2f} s (lease 2 s, heartbeat 0.5 s)")
    survivor.assert_clean()
