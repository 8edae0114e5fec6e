"""A store that falls behind (issue 7, item 8) and a node that starts without its database
(item 7), on real PostgreSQL behind a TCP proxy we cut.

- The writer fed a sustained stream of calls while the database is unreachable keeps its queue
  under its bound (coalescing, shedding what neither a takeover nor an audit needs) and its
  memory with it; every emergency call's record (row, legs, the kinds of its events in order)
  lands once the database is back; the alarm is raised and cleared.
- A store built with ``node=`` registers the node itself once the database answers, and the
  writes made before carry the epoch it registered.
"""
from __future__ import annotations

import gc
import logging
import tracemalloc
from typing import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ng911.store import SqlStore, models
from ng911.store.db import require_current_schema
from ng911.store.store import PENDING_EPOCH, SHED_DATA
from tests.integration.store.tcpproxy import TcpProxy
from tests.integration.store.test_contract import T0, make_call

EVENT_KINDS = ["received", "routing", "ap_invite", "ap_ringing", "answered", "media_change",
               "caller_hangup", "ended"]
STATES = ["routing", "ringing", "talking", "moving"]
DETAIL = {"reason": "x" * 120, "ap": "ap1", "sip_call_id": "y" * 40}


@pytest.fixture
def cut_proxy(pg_empty: str) -> Iterator[tuple[TcpProxy, str]]:
    """A proxy to the database, closed (connections refused) until the test restores it."""
    u = make_url(pg_empty)
    proxy = TcpProxy(u.host or "127.0.0.1", u.port or 5432)
    proxy.restore()
    proxy.cut()
    try:
        yield proxy, u.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
    finally:
        proxy.cut()


def one_call(store: SqlStore, call_id: str, kind: str, owner: tuple[str, int], n: int) -> int:
    """What the controller writes for one answered call; returns the number of writes."""
    store.call_created(make_call(call_id, owner[0], owner[1], kind=kind, created_at=T0 + n))
    writes = 1
    for i, ev in enumerate(EVENT_KINDS):
        store.event(call_id, owner, ev, T0 + n + i, dict(DETAIL, i=i))
        store.call_updated(call_id, owner, state=STATES[i % len(STATES)], updated_at=T0 + n + i)
        store.leg_saved(call_id, owner, "upstream", {"cseq": i, "call_id": call_id}, b"v=0 up",
                        b"v=0 caller", None)
        store.leg_saved(call_id, owner, "psap", {"cseq": i}, b"v=0 ap", b"v=0 psap", "ap1")
        writes += 4
    store.call_updated(call_id, owner, state="ended", ended_at=T0 + n + 9, outcome="answered")
    return writes + 1


def test_a_stalled_database_keeps_the_queue_bounded_and_every_emergency_record(
        pg_empty: str, cut_proxy: tuple[TcpProxy, str], caplog: pytest.LogCaptureFixture) -> None:
    proxy, url = cut_proxy
    high, limit = 2_000, 8_000
    store = SqlStore(url, node="n1", high_water=high, max_queue=limit, retry_max=0.5)
    fenced: list[str] = []
    store.on_fenced = fenced.append
    owner = ("n1", PENDING_EPOCH)
    emergency: list[str] = []
    store.start()
    try:
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        peak_depth, issued = 0, 0
        with caplog.at_level(logging.WARNING, logger="ng911.store"):
            for n in range(5_000):  # one emergency call in twenty, the rest other calls
                kind = "emergency" if n % 20 == 0 else "other"
                call_id = f"{kind[0]}{n}"
                issued += one_call(store, call_id, kind, owner, n)
                if kind == "emergency":
                    emergency.append(call_id)
                peak_depth = max(peak_depth, store.queue_depth)
            grown = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        assert store.up is False and store.epoch is None  # the database never answered

        # the bound: every write of a non-emergency call past max_queue is shed; what queues
        # beyond it is emergency records only: a row, its updates merged in one, two legs, the
        # events, which lost their detail once past high-water
        per_emergency_call = 1 + 1 + 2 + len(EVENT_KINDS)
        assert peak_depth <= limit + per_emergency_call * len(emergency), peak_depth
        assert issued > 10 * peak_depth  # what it would have held without a bound
        assert store.backlogged
        assert store.shed["event"] > 0 and store.shed["event_detail"] > 0
        assert store.shed.get("call", 0) > 0
        assert store.coalesced > 0
        # memory: about 1 KB per queued write at most (the payloads are ~300 bytes)
        assert grown < 1_100 * peak_depth, (grown, peak_depth)
        print(f"\nissued {issued} writes for 5000 calls; peak queue {peak_depth} "
              f"(high-water {high}, limit {limit}); traced memory +{grown / 1e6:.1f} MB; "
              f"shed {store.shed}; coalesced {store.coalesced}")
        messages = [r.message for r in caplog.records]
        assert sum("store backlog is" in m for m in messages) == 1
        assert sum("reached its limit" in m for m in messages) == 1

        proxy.restore()
        assert store.flush(60.0), "the backlog did not drain"
        assert store.up and store.epoch == 1 and not store.backlogged
        assert "alarm cleared" in caplog.text
        assert fenced == []  # shedding a record never costs the call its owner
        reader = SqlStore(pg_empty)
        for call_id in emergency:
            call = reader.call(call_id)
            assert call is not None, call_id
            assert (call["state"], call["outcome"], call["owner_epoch"]) == ("ended", "answered", 1)
            assert set(call["legs"]) == {"upstream", "psap"}
            assert call["legs"]["psap"]["dialog"] == {"cseq": len(EVENT_KINDS) - 1}
            events = reader.events(call_id)
            assert [e["kind"] for e in events] == EVENT_KINDS, call_id
            assert all(e["data"] in (SHED_DATA, dict(DETAIL, i=i)) for i, e in enumerate(events))
        with reader.engine.connect() as conn:
            assert conn.execute(sa.select(models.nodes.c.name, models.nodes.c.epoch)).all() == [
                ("n1", 1)]
        reader.stop()
    finally:
        store.stop(timeout=1.0)


def test_a_node_registers_once_its_database_answers_and_its_writes_get_that_epoch(
        pg_empty: str, cut_proxy: tuple[TcpProxy, str]) -> None:
    proxy, url = cut_proxy
    setup = SqlStore(pg_empty)
    assert setup.register_node("n1") == 1  # an earlier life of the node
    setup.stop()
    store = SqlStore(url, node="n1", check_schema=require_current_schema, retry_max=0.2)
    registered: list[int] = []
    store.on_registered = registered.append
    fenced: list[str] = []
    store.on_fenced = fenced.append
    store.start()
    try:
        pending = ("n1", PENDING_EPOCH)
        store.call_created(make_call("c1", "n1", PENDING_EPOCH))
        store.event("c1", pending, "received", T0, {})
        store.leg_saved("c1", pending, "upstream", {"x": 1}, None, None, None)
        assert store.wait_registered(0.5) is None and not store.up
        assert store.flush(0.3) is False
        proxy.restore()
        assert store.wait_registered(10.0) == 2
        assert registered == [2]
        # the caller now writes with the real epoch; both kinds of owner land as one
        store.event("c1", ("n1", 2), "answered", T0 + 1, {})
        store.call_updated("c1", ("n1", 2), state="talking")
        assert store.flush(10.0)
        call = store.call("c1")
        assert call is not None and (call["owner_epoch"], call["state"]) == (2, "talking")
        assert [e["kind"] for e in store.events("c1")] == ["received", "answered"]
        assert "upstream" in call["legs"] and fenced == []
    finally:
        store.stop()


def test_writes_are_held_while_the_schema_is_behind(
        pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    from ng911.store.db import downgrade, migrate

    downgrade(pg_url, "base")
    store = SqlStore(pg_url, node="n1", check_schema=require_current_schema, retry_max=0.2)
    store.start()
    try:
        store.call_created(make_call("c1", "n1", PENDING_EPOCH))
        with caplog.at_level(logging.ERROR, logger="ng911.store"):
            assert store.flush(1.0) is False
        assert "database schema is empty" in caplog.text and store.queue_depth == 1
        migrate(pg_url)
        assert store.flush(10.0) and store.epoch == 1
        assert store.call("c1")["owner_epoch"] == 1  # type: ignore[index]
    finally:
        store.stop()
        migrate(pg_url)
