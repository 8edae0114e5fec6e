"""Seats at the positions on a real PostgreSQL: advisory locks, one session per node."""
from __future__ import annotations

import queue
from typing import Any

import pytest

from ng911.cluster.seats import SeatKeeper
from ng911.store.db import dbapi_connect, engine_for
from tests.integration.controller.conftest import db_url, pg_server  # noqa: F401  (fixtures)


def _connector(url: str) -> Any:
    return lambda: dbapi_connect(url)


class Node:
    """A SeatKeeper whose 'reactor' is the test thread: answers are waited for in order."""

    def __init__(self, connect: Any) -> None:
        self.answers: queue.Queue[bool] = queue.Queue()
        self.keeper = SeatKeeper(connect, lambda fn, *a: fn(*a))

    def reserve(self, call: str, ap: str, capacity: int = 1) -> bool:
        self.keeper.reserve(call, ap, capacity, self.answers.put)
        return self.answers.get(timeout=10)

    def sync(self) -> None:
        """Wait until every operation submitted so far ran (the seats' thread is in order)."""
        self.keeper._pool.submit(lambda: None).result(timeout=10)


@pytest.fixture
def nodes(db_url: str):  # noqa: F811
    made: list[Node] = []

    def make(connect: Any = None) -> Node:
        node = Node(connect or _connector(db_url))
        made.append(node)
        return node

    yield make
    for node in made:
        node.keeper.stop()
        if node.keeper._conn is not None:
            node.keeper._conn.close()


def test_a_seat_held_by_one_node_is_refused_to_another_until_freed(nodes):
    a, b = nodes(), nodes()
    assert a.reserve("c1", "ap1")
    assert not b.reserve("c2", "ap1")
    assert b.reserve("c2", "ap2")  # another position: its own seats
    a.keeper.free("c1", "ap1")
    a.sync()
    assert b.reserve("c3", "ap1")


def test_one_node_does_not_get_a_seat_twice_for_two_calls(nodes):
    a = nodes()
    assert a.reserve("c1", "ap1", capacity=1)
    assert not a.reserve("c2", "ap1", capacity=1)  # (advisory locks are re-entrant per session)
    assert a.reserve("c2", "ap1", capacity=2)
    assert a.reserve("c1", "ap1", capacity=1)  # the same call asking again: it has its seat


def test_the_seats_of_a_node_whose_session_ends_are_free_at_once(nodes):
    a, b = nodes(), nodes()
    assert a.reserve("c1", "ap1")
    a.keeper._conn.close()  # the node's connection goes (a process killed: its socket closes)
    assert b.reserve("c2", "ap1")


def test_a_call_already_on_a_full_position_is_held_there_beyond_capacity(nodes):
    a, b = nodes(), nodes()
    assert a.reserve("c1", "ap1")
    b.keeper.held("c9", "ap1", 1)  # a call taken over onto ap1: kept there, counted
    b.sync()
    assert ("c9", "ap1") in b.keeper.holders
    assert b.keeper._locks[("c9", "ap1")] is None


def test_without_the_database_a_node_decides_alone(nodes):
    def refused() -> Any:
        raise OSError("connection refused")

    a = nodes(refused)
    assert a.reserve("c1", "ap1") and a.reserve("c2", "ap1")  # never refused for want of a database
    assert a.keeper.alone == 2


def test_a_younger_call_gives_way_to_an_older_one_waiting_elsewhere_but_not_forever(nodes, db_url, monkeypatch):  # noqa: F811
    import time

    import sqlalchemy as sa

    from ng911.cluster import seats
    from ng911.store import models
    from ng911.store.db import migrate

    migrate(db_url)
    engine = engine_for(db_url)
    now = time.time()
    with engine.begin() as conn:
        conn.execute(sa.insert(models.nodes).values(name="n2", epoch=1, started_at=now, heartbeat_at=now,
                                                    lease_expires_at=now + 60))
        conn.execute(sa.insert(models.calls).values(
            call_id="older", sip_call_id="x", kind="emergency", state="queued", caller="sip:a@127.0.0.1",
            request_uri="urn:service:sos", queue="main", additional_data=[], headers={}, created_at=now - 10,
            updated_at=now, owner_node="n2", owner_epoch=1))
    engine.dispose()
    monkeypatch.setattr(seats, "YIELD_FOR", 0.3)
    a = nodes()
    a.keeper.node = "n1"
    answers: queue.Queue[bool] = queue.Queue()
    a.keeper.reserve("younger", "ap1", 1, answers.put, queue="main", created=now)
    assert answers.get(timeout=10) is False  # the older call on n2 goes first
    a.keeper.reserve("other-queue", "ap1", 1, answers.put, queue="side", created=now)
    assert answers.get(timeout=10) is True  # another queue: no one to give way to
    a.keeper.free("other-queue", "ap1")
    time.sleep(0.4)
    a.keeper.reserve("younger", "ap1", 1, answers.put, queue="main", created=now)
    assert answers.get(timeout=10) is True  # it gave way long enough: never starved
