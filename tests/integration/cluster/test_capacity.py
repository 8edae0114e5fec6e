"""Answer point capacity is counted cluster-wide: with three nodes taking calls at once, a
position of capacity 1 never has two calls (seats are PostgreSQL advisory locks)."""
from __future__ import annotations

from tests.integration.cluster.nodes import (  # noqa: F401  (fixtures)
    Ap, cluster, db_url, pg_server, sipp,
)

from tests.integration.controller.conftest import SCENARIOS as CONTROLLER_SCENARIOS


def _busy_intervals(ap_proc) -> list[tuple[float, float, str]]:
    """(first INVITE received, BYE received, Call-ID) of every call the position took."""
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    for m in ap_proc.received(None):
        cid = m.header("Call-ID")
        if m.method == "INVITE" and "tag=" not in (m.header("To") or ""):
            start.setdefault(cid, m.at)
        elif m.method == "BYE":
            end.setdefault(cid, m.at)
    return sorted((start[c], end.get(c, float("inf")), c) for c in start)


def test_two_positions_of_capacity_one_and_three_nodes_are_never_double_booked(cluster, sipp):
    ap1, ap2 = Ap("ap1", capacity=1), Ap("ap2", capacity=1)
    ap_procs = [sipp.ap(CONTROLLER_SCENARIOS / "ap_answer.xml", ap, calls=100, timeout=120) for ap in (ap1, ap2)]
    nodes = cluster.start(["n1", "n2", "n3"], [ap1, ap2])
    callers = [sipp.caller(CONTROLLER_SCENARIOS / "caller_basic.xml", node, calls=3, limit=3, rate=10,
                           hold_ms=2000, timeout=120) for node in nodes]
    for caller in callers:
        assert caller.wait(120) == 0, caller.summary()
    rows = nodes[0].wait_ended(9, timeout=30)
    assert {r["outcome"] for r in rows} == {"answered"} and {r["end_reason"] for r in rows} == {"caller_hangup"}
    taken = 0
    for ap, proc in zip((ap1, ap2), ap_procs):
        intervals = _busy_intervals(proc)
        taken += len(intervals)
        for (s1, e1, c1), (s2, _e2, c2) in zip(intervals, intervals[1:]):
            assert s2 >= e1, f"{ap.name} offered {c2} at {s2:.3f} while {c1} was on it until {e1:.3f}"
    assert taken == 9  # every call went to a position exactly once (no retry, no double offer)
    refused = sum(1 for r in rows for e in nodes[0].events(r["call_id"]) if e["kind"] == "ap_busy_elsewhere")
    print(f"9 calls over 3 nodes on 2 positions of capacity 1: {refused} offers refused for a seat held elsewhere")
    for node in nodes:
        node.assert_clean()


def test_waiting_calls_are_offered_in_arrival_order_across_nodes(cluster, sipp):
    """One position, two nodes: A talks on it (n1); B arrives at n2 and waits; C arrives later at
    n1 and waits. When A ends, n1 frees the position — its own C would get it first if each node
    only looked at its own queue — but B, older, gets it (C gives way to it)."""
    ap = Ap("ap1", capacity=1)
    sipp.ap(CONTROLLER_SCENARIOS / "ap_answer.xml", ap, calls=100, timeout=120)
    n1, n2 = cluster.start(["n1", "n2"], [ap])
    a = sipp.caller(CONTROLLER_SCENARIOS / "caller_basic.xml", n1, hold_ms=5000, timeout=60)
    n1.wait_calls(lambda cs: len(cs) == 1 and cs[0]["state"] == "talking", 15, "A talking")
    b = sipp.caller(CONTROLLER_SCENARIOS / "caller_basic.xml", n2, hold_ms=500, timeout=60)
    n1.wait_calls(lambda cs: len(cs) == 2 and any(c["state"] == "queued" for c in cs), 15, "B waiting")
    c = sipp.caller(CONTROLLER_SCENARIOS / "caller_basic.xml", n1, hold_ms=500, timeout=60)
    n1.wait_calls(lambda cs: len(cs) == 3 and sum(c["state"] == "queued" for c in cs) == 2, 15, "B and C waiting")
    for caller in (a, b, c):
        assert caller.wait(60) == 0, caller.summary()
    rows = n1.wait_ended(3, timeout=30)
    first, second, third = sorted(rows, key=lambda r: r["created_at"])
    assert (first["owner_node"], second["owner_node"], third["owner_node"]) == ("n1", "n2", "n1")
    assert first["answered_at"] < second["answered_at"] < third["answered_at"], \
        "the older waiting call (on the other node) was not answered first"
