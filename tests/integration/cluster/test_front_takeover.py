"""Takeover behind the cluster's front: two real ``ng911 serve`` nodes on one PostgreSQL database,
the real ``deploy/kamailio/kamailio.cfg`` in front of them, a SIPp caller (an ESRP) sending
``INVITE urn:service:sos`` to the front, SIPp answer points. The node that holds the call is
killed (``kill -9``); the survivor takes the call over and reaches the caller through the front,
whose address never changes:

- a talking call: the caller gets a re-INVITE relayed by the front, with the survivor's Contact;
  its BYE (Route: the front, Request-URI: that Contact) reaches the survivor, which ends both legs;
- a ringing call: the survivor answers the caller's original INVITE transaction (the To-tag of
  the dead node's 180) through the front (its tm matches the 200 by the branch of its Via).

Over UDP and over TCP (the caller's transport; the answer points stay on UDP). What is asserted
is behaviour (what the caller and the answer points received, the call's record); the time from
the kill to what the caller saw is printed, never asserted.
"""
from __future__ import annotations

import re
from typing import Callable

import pytest

from tests.integration.cluster.kamailio import HOST, Kamailio
from tests.integration.cluster.nodes import (  # noqa: F401  (fixtures)
    Ap, ClusterNode, cluster, db_url, pg_server, sipp, sipp_ap, sipp_caller,
)
from tests.integration.cluster.nodes import SCENARIOS
from tests.integration.conftest import wait_until
from tests.integration.controller.conftest import SipMsg

pytestmark = pytest.mark.integration

TRANSPORTS = [pytest.param("u1", id="udp"), pytest.param("t1", id="tcp")]
CONTROLLER_SCENARIOS = SCENARIOS.parent.parent / "controller" / "scenarios"


# --- helpers ---------------------------------------------------------------------------------------


def _contact_port(msg: SipMsg) -> int:
    m = re.search(r"<sip:[^@>]*@?[0-9.]+:(\d+)", msg.header("Contact") or "")
    assert m, msg.head
    return int(m.group(1))


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

    calls = nodes[0].wait_calls(lambda cs: len(cs) == 1 and cs[0]["state"] == "talking", 20, "a talking call")
    dead, survivor = _owner(nodes, calls[0])
    killed = dead.kill9()

    rc = caller.wait(60)
    assert rc == 0, _evidence(caller, [ap_proc], kam, nodes)
    assert ap_proc.wait(30) == 97, _evidence(caller, [ap_proc], kam, nodes)

    # the first answer came through the front (its Record-Route), from the node that died
    [ok] = _answered_by(caller)
    assert _contact_port(ok) == dead.sip_port
    assert any(f"{HOST}:{kam.port};" in rr for rr in _record_routes(ok)), ok.head
    # the caller: one re-INVITE, relayed by the front, with the survivor's Contact; never a BYE
    reinvites = caller.received("INVITE")
    assert len(reinvites) == 1, _evidence(caller, [ap_proc], kam, nodes)
    [reinvite] = reinvites
    assert _contact_port(reinvite) == survivor.sip_port, reinvite.head
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
    assert len(ap_reinvites) == 1 and _contact_port(ap_reinvites[0]) == survivor.sip_port
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
    assert _contact_port(ok) == survivor.sip_port, ok.head
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
            and _contact_port(m) == survivor.sip_port]
    print(f"\n[front {transport}] kill -9 of a ringing call's node {dead.name} → {survivor.name}'s 180 through the front: "
          f"{(rung[0].at - killed) if rung else float('nan'):.2f} s, its 200 (after a new hunt): {ok.at - killed:.2f} s")

    [ap_bye] = ap_proc.received("BYE")
    assert _top_via_is(ap_bye, survivor.sip_port), ap_bye.head
    (row,) = survivor.wait_ended(1, timeout=15)
    assert (row["owner_node"], row["answer_point"], row["end_reason"]) == (survivor.name, "ap2", "caller_hangup")
    assert survivor.metric("ng911_cluster_takeovers_total", state="ringing") == 1
    survivor.assert_clean()
