"""A node dies (kill -9) or is paused: its calls are taken over by a survivor, which re-INVITEs
both legs with its own Contact; the caller is never sent a BYE. Real nodes, real PostgreSQL,
SIPp callers and answer points; what the peers received is what is asserted."""
from __future__ import annotations

import time

from tests.integration.cluster.nodes import (  # noqa: F401  (fixtures)
    Ap, cluster, db_url, pg_server, sipp, sipp_ap, sipp_caller,
)
from tests.integration.conftest import wait_until


def _contact_port(msg) -> int:
    contact = msg.header("Contact") or ""
    return int(contact.split(">")[0].rsplit(":", 1)[1].split(";")[0])


def _talking(node, n: int = 1) -> list[dict]:
    return node.wait_calls(lambda calls: len(calls) == n and all(c["state"] == "talking" for c in calls),
                           20, f"{n} talking call(s)")


def test_established_call_survives_kill9_of_its_node(cluster, sipp):
    ap = Ap("ap1")
    ap_proc = sipp_ap(sipp, "tk_ap.xml", ap)
    n1, n2 = cluster.start(["n1", "n2"], [ap], trace=True)
    caller = sipp_caller(sipp, "tk_caller.xml", n1.sip_port, hold_ms=1000)
    (call,) = _talking(n1)
    assert call["owner_node"] == "n1"
    killed = n1.kill9()

    assert caller.wait(60) == 0, caller.summary()
    assert ap_proc.wait(30) == 97, ap_proc.summary()
    # the caller: one re-INVITE, from the survivor, with its Contact; never a BYE
    reinvites = caller.received("INVITE")
    assert len(reinvites) == 1 and _contact_port(reinvites[0]) == n2.sip_port
    assert caller.received("BYE") == []
    print(f"kill -9 → caller's re-INVITE: {reinvites[0].at - killed:.2f} s")
    # the position: refreshed by the survivor, then BYEd by it when the caller hung up
    ap_reinvites = [m for m in ap_proc.received("INVITE") if m.header("To") and "tag=" in m.header("To")]
    assert len(ap_reinvites) == 1 and _contact_port(ap_reinvites[0]) == n2.sip_port
    assert len(ap_proc.received("BYE")) == 1
    # the record: the survivor owns and ended it, the caller's hang-up, with the takeover in it
    (row,) = n2.wait_ended(1, timeout=15)
    assert (row["owner_node"], row["end_reason"], row["outcome"]) == ("n2", "caller_hangup", "answered")
    kinds = n2.kinds(row["call_id"])
    assert "resumed" in kinds and kinds[-1] == "ended"
    resumed = [e for e in n2.events(row["call_id"]) if e["kind"] == "resumed"][0]
    assert resumed["data"]["taken_from"].startswith("n1/")
    assert n2.metric("ng911_cluster_takeovers_total", state="talking") == 1
    n2.assert_clean()
