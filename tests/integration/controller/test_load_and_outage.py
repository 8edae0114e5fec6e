"""7. Twenty calls at once all succeed with complete records; 8. a database cut mid-call: calls go
on (including new ones and hang-ups), writes queue, and every event lands once it is back."""
from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from tests.integration.conftest import wait_until
from tests.integration.store.tcpproxy import TcpProxy

from .conftest import Ap, expect_rc

pytestmark = pytest.mark.integration

FULL_LOG = ["received", "routing", "ap_invite", "ap_ringing", "answered", "caller_hangup", "ended"]


def test_twenty_concurrent_calls(node_factory, sipp):
    ap1 = Ap("ap1", capacity=20)
    ap = sipp.ap("ap_answer.xml", ap1, calls=20, timeout=60)
    node = node_factory.start([ap1])
    caller = sipp.caller("caller_basic.xml", node, calls=20, limit=20, rate=20, hold_ms=3000, timeout=60)
    expect_rc(caller, 0, 75)  # every one of the 20 calls: 200, ACK, 3 s, BYE, 200
    expect_rc(ap, 97, 30)  # the answer point saw 20 calls through to their BYE
    stats = caller.stats()
    assert (stats["SuccessfulCall(C)"], stats["FailedCall(C)"]) == ("20", "0"), stats

    assert len({m.header("Call-ID") for m in ap.received("INVITE")}) == 20
    assert len({m.header("Call-ID") for m in ap.received("BYE")}) == 20
    calls = node.wait_ended(20, timeout=30)
    assert {c["outcome"] for c in calls} == {"answered"} and {c["answer_point"] for c in calls} == {"ap1"}
    assert len({c["sip_call_id"] for c in calls}) == 20
    for c in calls:
        assert node.kinds(c["call_id"]) == FULL_LOG, c["call_id"]
    assert node.metric("ng911_calls_total", kind="emergency", outcome="answered") == 20
    assert node.metric("ng911_active_calls") == 0
    node.assert_clean()


def test_database_cut_mid_call(node_factory, sipp, db_url):
    u = make_url(db_url)
    proxy = TcpProxy(u.host or "127.0.0.1", u.port or 5432)
    proxy.restore()
    try:
        proxied = u.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
        ap1 = Ap("ap1", capacity=4)
        ap = sipp.ap("ap_answer.xml", ap1, calls=4, timeout=60)
        node = node_factory.start([ap1], db_url=proxied)  # migrated directly; serves through the proxy
        first = sipp.caller("caller_basic.xml", node, calls=3, limit=3, rate=10, hold_ms=4000, timeout=40)
        node.wait_calls(lambda cs: len(cs) == 3 and all(c["state"] == "talking" for c in cs), 15,
                        "3 calls talking in the database")

        proxy.cut()  # the node's connections drop; new ones are refused
        # a call placed during the outage is admitted and answered as well
        second = sipp.caller("caller_basic.xml", node, calls=1, hold_ms=500, timeout=30)
        expect_rc(second, 0, 40)
        expect_rc(first, 0, 40)  # hang-ups included
        expect_rc(ap, 97, 20)
        wait_until(lambda: node.metric("ng911_store_queue_depth") > 0, 10, "ng911_store_queue_depth > 0")
        # nothing of the hang-ups has reached the database yet: its rows are as the cut left them
        rows = node.all_calls()
        assert len(rows) == 3 and all(r["ended_at"] is None for r in rows), rows

        proxy.restore()
        wait_until(lambda: node.metric("ng911_store_queue_depth") == 0, 30, "the store queue to drain")
        calls = node.wait_ended(4, timeout=20)
        assert {c["outcome"] for c in calls} == {"answered"}
        for c in calls:
            assert node.kinds(c["call_id"]) == FULL_LOG, c["call_id"]
        assert node.metric("ng911_calls_total", kind="emergency", outcome="answered") == 4
        assert proxy.accepted >= 2  # the store reconnected through the proxy
        # the only complaints in the log are the store's, about the outage
        bad = [r for r in node.log_records() if r.get("level") in ("error", "critical")
               and not r.get("logger", "").startswith("ng911.store")]
        assert not bad, bad[:5]
    finally:
        proxy.cut()
