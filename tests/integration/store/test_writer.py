"""The write-behind writer on real databases: batching, a database outage (cut with a TCP
proxy), stop() during an outage, a poison write, and fencing after a takeover."""
from __future__ import annotations

import logging
import time
from typing import Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ng911.store import SqlStore
from ng911.store.db import engine_for
from tests.integration.store.tcpproxy import TcpProxy
from tests.integration.store.test_contract import T0, make_call, settle


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.fixture
def proxy(pg_empty: str) -> Iterator[TcpProxy]:
    u = make_url(pg_empty)
    with TcpProxy(u.host or "127.0.0.1", u.port or 5432) as p:
        yield p


def via(proxy: TcpProxy, url: str) -> str:
    return make_url(url).set(host=proxy.host, port=proxy.port).render_as_string(
        hide_password=False)


def test_writes_are_batched_into_few_transactions(pg_empty: str) -> None:
    store = SqlStore(pg_empty, batch_size=200, linger=0.05)
    batches: list[int] = []
    store.on_batch = lambda seconds, rows: batches.append(rows)
    store.start()
    try:
        epoch = store.register_node("n1")
        store.call_created(make_call("c1", "n1", epoch))
        for n in range(1000):
            store.event("c1", ("n1", epoch), "tick", T0 + n, {"n": n})
        settle(store)
        assert sum(batches) == 1001
        assert max(batches) == 200 and len(batches) <= 10
        assert [e["data"]["n"] for e in store.events("c1")] == list(range(1000))
    finally:
        store.stop()


def test_database_outage_writes_queue_and_all_land_in_order_after(
        pg_empty: str, proxy: TcpProxy, caplog: pytest.LogCaptureFixture) -> None:
    store = SqlStore(via(proxy, pg_empty))
    store.start()
    reader = SqlStore(pg_empty)  # reads straight from the server, not through the proxy
    try:
        epoch = store.register_node("n1")
        owner = ("n1", epoch)
        store.call_created(make_call("c1", "n1", epoch))
        store.event("c1", owner, "created", T0, {"n": -1})
        settle(store)
        assert proxy.accepted >= 1

        proxy.cut()
        retries_before = store.retries
        slowest = 0.0
        issued = 0
        for n in range(300):
            t = time.perf_counter()
            store.event("c1", owner, "tick", T0 + n, {"n": n})
            issued += 1
            if n % 50 == 0:
                store.call_updated("c1", owner, state="talking" if n == 250 else "moving",
                                   queue=f"q{n}")
                store.leg_saved("c1", owner, "psap", {"n": n}, None, b"v=%d" % n, "ap1")
                issued += 2
            slowest = max(slowest, time.perf_counter() - t)
        assert slowest < 0.05, "a store call blocked during the outage"
        wait_for(lambda: store.retries >= retries_before + 2)  # it tried, failed, backs off
        # a call's queued updates merge into one, a leg's queued saves keep only the last
        assert 0 < store.coalesced <= 10 and store.queue_depth == issued - store.coalesced
        assert store.flush(0.2) is False
        assert reader.events("c1")[-1]["kind"] == "created"  # nothing got through

        proxy.restore()
        assert store.flush(15.0)
        assert store.queue_depth == 0
        events = reader.events("c1")
        assert [e["data"]["n"] for e in events] == list(range(-1, 300))
        call = reader.call("c1")
        assert call is not None and (call["state"], call["queue"]) == ("talking", "q250")
        assert call["legs"]["psap"]["remote_sdp"] == b"v=250"
        assert "retrying" in caplog.text
    finally:
        store.stop()
        reader.stop()


def test_stop_gives_up_after_its_timeout_while_the_database_is_down(
        pg_empty: str, proxy: TcpProxy, caplog: pytest.LogCaptureFixture) -> None:
    store = SqlStore(via(proxy, pg_empty))
    store.start()
    epoch = store.register_node("n1")
    store.call_created(make_call("c1", "n1", epoch))
    settle(store)
    proxy.cut()
    for n in range(10):
        store.event("c1", ("n1", epoch), "tick", T0 + n, {"n": n})
    t = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="ng911.store"):
        store.stop(timeout=0.3)
    assert time.monotonic() - t < 5.0
    assert "10 writes not persisted" in caplog.text


def test_after_a_takeover_the_old_owner_is_fenced_and_the_new_one_writes(
        pg_empty: str) -> None:
    a, b = SqlStore(pg_empty), SqlStore(pg_empty)
    fenced: list[str] = []
    a.on_fenced = fenced.append
    a.start()
    b.start()
    try:
        ea, eb = a.register_node("a"), b.register_node("b")
        a.call_created(make_call("c1", "a", ea))
        a.event("c1", ("a", ea), "created", T0, {})
        settle(a)
        engine = engine_for(pg_empty)  # what the cluster's takeover will do
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE calls SET owner_node = 'b', owner_epoch = :e "
                                 "WHERE call_id = 'c1'"), {"e": eb})
        engine.dispose()
        a.event("c1", ("a", ea), "late", T0 + 1, {})
        a.call_updated("c1", ("a", ea), state="stale")
        b.event("c1", ("b", eb), "taken_over", T0 + 2, {})
        b.call_updated("c1", ("b", eb), state="talking")
        settle(a)
        settle(b)
        assert fenced == ["c1"]
        assert [e["kind"] for e in a.events("c1")] == ["created", "taken_over"]
        assert a.call("c1")["state"] == "talking"  # type: ignore[index]
    finally:
        a.stop()
        b.stop()


def test_sqlite_store_survives_a_reader_holding_the_file(sqlite_url: str) -> None:
    """WAL: a long read transaction does not stop the writer."""
    store = SqlStore(sqlite_url)
    store.start()
    engine = engine_for(sqlite_url)
    try:
        epoch = store.register_node("n1")
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT count(*) FROM calls")).scalar_one()  # in a txn now
            store.call_created(make_call("c1", "n1", epoch))
            for n in range(50):
                store.event("c1", ("n1", epoch), "tick", T0 + n, {"n": n})
            settle(store)
        assert len(store.events("c1")) == 50
    finally:
        store.stop()
        engine.dispose()


def test_repeated_cuts_mid_traffic_lose_nothing_and_keep_order(
        pg_empty: str, proxy: TcpProxy) -> None:
    """Cuts may land inside a transaction or its COMMIT: every event still lands, in order;
    an ambiguous COMMIT may replay a batch (at least once), never reorder one."""
    store = SqlStore(via(proxy, pg_empty), retry_max=0.2, linger=0.001)
    store.start()
    reader = SqlStore(pg_empty)
    try:
        epoch = store.register_node("n1")
        store.call_created(make_call("c1", "n1", epoch))
        n = 0
        for _cut in range(3):
            for _ in range(100):
                store.event("c1", ("n1", epoch), "tick", T0 + n, {"n": n})
                n += 1
                if n % 10 == 0:
                    time.sleep(0.002)  # let batches commit while we go on
            proxy.cut()
            time.sleep(0.05)
            proxy.restore()
        assert store.flush(15.0)
        seen: list[int] = [e["data"]["n"] for e in reader.events("c1")]
        assert set(seen) == set(range(n))
        first = [x for i, x in enumerate(seen) if x not in seen[:i]]
        assert first == list(range(n))
    finally:
        store.stop()
        reader.stop()
