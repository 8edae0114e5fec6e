"""The write queue's coalescing and shedding, and the backlog signal, without a database (an
unstarted ``SqlStore``: nothing drains, so what ``_put`` keeps is what stays queued)."""
from __future__ import annotations

from pathlib import Path

import pytest

from ng911.call.overload import OverloadGuard
from ng911.store import SqlStore
from ng911.store.store import SHED_DATA, storable

REC = {
    "call_id": "c1", "sip_call_id": "x@h", "kind": "emergency", "state": "routing",
    "caller": "sip:a@b", "request_uri": "urn:service:sos", "created_at": 1.5,
    "owner_node": "n1", "owner_epoch": 1,
}
OWNER = ("n1", 1)


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = SqlStore(f"sqlite:///{tmp_path}/never-opened.db", high_water=20, max_queue=40)
    yield s
    s.stop(timeout=0.1)


def queued(store: SqlStore) -> list[tuple[str, str | None]]:
    return [(op.kind, op.call_id) for op in store._queue]


def test_a_calls_updates_merge_into_one_and_a_legs_saves_keep_the_last(store) -> None:
    store.call_created(REC)
    store.call_updated("c1", OWNER, state="ringing", answer_point="ap1")
    store.leg_saved("c1", OWNER, "psap", {"n": 1}, None, None, "ap1")
    store.event("c1", OWNER, "answered", 2.0, {})
    store.call_updated("c1", OWNER, state="talking")
    store.leg_saved("c1", OWNER, "psap", {"n": 2}, None, b"v=0", "ap2")
    store.call_updated("c1", ("n1", 9), state="stale")  # another owner: never merged
    assert queued(store) == [("created", "c1"), ("updated", "c1"), ("leg", "c1"), ("event", "c1"),
                             ("updated", "c1")]
    row, upd, leg = (op.values for op in list(store._queue)[:3])
    assert row["state"] == "routing"  # the row as created: updates never merge into it
    assert (upd["state"], upd["answer_point"]) == ("talking", "ap1")
    assert (leg["dialog"], leg["answer_point"], leg["remote_sdp"]) == ({"n": 2}, "ap2", b"v=0")
    assert store.coalesced == 2 and store.queue_depth == 5


def test_past_high_water_events_lose_detail_and_non_emergency_events_go(store) -> None:
    store.call_created(dict(REC, call_id="other", kind="other"))
    store.call_created(REC)
    for i in range(18):
        store.event("c1", OWNER, "tick", float(i), {"i": i})
    assert store.queue_depth == 20 and store.backlogged
    store.event("c1", OWNER, "answered", 30.0, {"ap": "ap1"})
    store.event("other", OWNER, "answered", 30.0, {"ap": "ap1"})
    assert store._queue[-1].values["data"] is SHED_DATA and store._queue[-1].call_id == "c1"
    assert store.shed == {"event_detail": 1, "event": 1}


def test_past_the_hard_limit_only_emergency_records_queue(store) -> None:
    store.call_created(REC)
    for i in range(39):
        store.event("c1", OWNER, "tick", float(i), {})
    assert store.queue_depth == 40
    store.call_created(dict(REC, call_id="other", kind="test"))
    store.call_updated("other", OWNER, state="ended", ended_at=9.0)
    store.ap_health("ap1", "sip:ap1@h", False, 9.0)
    store.event("c1", OWNER, "ended", 40.0, {"why": "bye"})
    store.call_updated("c1", OWNER, state="ended", ended_at=9.0)  # an emergency call's row
    assert store.queue_depth == 42 and queued(store)[-2:] == [("event", "c1"), ("updated", "c1")]
    assert store.shed == {"call": 1, "updated": 1, "health": 1, "event_detail": 1}
    assert "other" in store._unstored  # its later writes will not read as a lost ownership


def test_storable_is_deterministic_and_leaves_clean_values_alone() -> None:
    clean = {"a": [1, 2.5, None, True, "x"], "b": {"c": "é"}}
    assert storable(clean) == clean
    assert storable({"k\x00": ["\x00", float("inf"), "\udcff"]}) == {
        "k\u2400": ["\u2400", "inf", "\ufffd"]}


def test_a_backlogged_store_overloads_the_guard_until_it_clears() -> None:
    backlog = [False]
    guard = OverloadGuard(backlogged=lambda: backlog[0])
    assert not guard.overloaded(1.0)
    backlog[0] = True
    assert guard.overloaded(1.0)
    backlog[0] = False
    assert not guard.overloaded(1.0)
