"""Store pieces that need no database: the twins, the epoch type, URLs, error classes."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite

from ng911.store import CallStore, MemoryStore, NullStore, SqlStore
from ng911.store.db import migrations_dir, normalise_url
from ng911.store.models import EpochSeconds
from ng911.store.store import _by_kind, _Op, _retryable

REC = {
    "call_id": "c1", "sip_call_id": "x@h", "kind": "emergency", "state": "new",
    "caller": "sip:a@b", "request_uri": "urn:service:sos", "created_at": 1.5,
    "owner_node": "n1", "owner_epoch": 1,
}


def test_twins_satisfy_the_protocol() -> None:
    assert isinstance(MemoryStore(), CallStore)
    assert isinstance(NullStore(), CallStore)


def test_memory_store_refuses_what_a_database_could_not_store_at_the_call_site() -> None:
    store = MemoryStore()
    store.call_created(REC)
    with pytest.raises(TypeError):
        store.event("c1", ("n1", 1), "x", 2.0, {"bad": object()})
    assert store.events("c1") == []


def test_memory_store_json_round_trips_and_hands_out_copies() -> None:
    store = MemoryStore()
    store.call_created({**REC, "location": {"point": (1.0, 2.0)}})
    call = store.call("c1")
    assert call is not None and call["location"] == {"point": [1.0, 2.0]}
    call["location"]["point"].append(3.0)
    call["state"] = "mutated"
    again = store.call("c1")
    assert again is not None
    assert again["location"] == {"point": [1.0, 2.0]} and again["state"] == "new"


def test_memory_store_fences_synchronously_once_per_call() -> None:
    store = MemoryStore()
    fenced: list[str] = []
    store.on_fenced = fenced.append
    store.call_created(REC)
    store.call_updated("c1", ("n1", 0), state="x")
    assert fenced == ["c1"]
    store.event("c1", ("n2", 1), "x", 2.0, {})
    assert fenced == ["c1"]
    assert store.call("c1")["state"] == "new"  # type: ignore[index]


def test_null_store_accepts_everything_and_remembers_nothing() -> None:
    store = NullStore()
    store.start()
    assert store.register_node("n1") == 1 and store.register_node("n1") == 2
    store.call_created(REC)
    store.call_updated("c1", ("n1", 1), state="x")
    store.leg_saved("c1", ("n1", 1), "psap", None, None, None, None)
    store.event("c1", ("n1", 1), "x", 1.0, {})
    store.ap_health("ap1", "sip:ap1@h", True, 1.0)
    store.abandoned("c1", ("n1", 1), "sip:a@b", None, 1.0)
    assert store.flush() and store.queue_depth == 0
    assert (store.live_calls(), store.call("c1"), store.events("c1"), store.answer_points(),
            store.ap_health_events(), store.abandoned_calls()) == ([], None, [], [], [], [])
    store.stop()


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()])
def test_epoch_seconds_round_trip(dialect: object) -> None:
    t = EpochSeconds()
    bound = t.process_bind_param(1_790_000_000.123456, dialect)  # type: ignore[arg-type]
    assert bound == datetime(2026, 9, 21, 14, 13, 20, 123456, tzinfo=timezone.utc)
    assert t.process_result_value(bound, dialect) == pytest.approx(  # type: ignore[arg-type]
        1_790_000_000.123456, abs=1e-6)
    naive_utc = bound.replace(tzinfo=None)  # what SQLite hands back
    assert t.process_result_value(naive_utc, dialect) == pytest.approx(  # type: ignore[arg-type]
        1_790_000_000.123456, abs=1e-6)
    other_zone = bound.astimezone(timezone(timedelta(hours=-5)))
    assert t.process_bind_param(other_zone, dialect) == bound  # type: ignore[arg-type]
    assert t.process_bind_param(None, dialect) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="naive"):
        t.process_bind_param(naive_utc, dialect)  # type: ignore[arg-type]


def test_database_urls() -> None:
    assert normalise_url("postgres://u@h:5/db").drivername == "postgresql+psycopg2"
    assert normalise_url("postgresql://u@h/db").drivername == "postgresql+psycopg2"
    assert normalise_url("sqlite:////var/lib/ng911/ng911.db").database == "/var/lib/ng911/ng911.db"
    with pytest.raises(ValueError, match="in-memory"):
        normalise_url("sqlite://")
    with pytest.raises(ValueError, match="unsupported"):
        normalise_url("mysql://u@h/db")


def test_sql_store_takes_a_url_or_an_engine() -> None:
    with pytest.raises(TypeError):
        SqlStore()
    with pytest.raises(TypeError):
        SqlStore("sqlite:///x.db", engine=object())  # type: ignore[arg-type]


def test_a_batch_is_applied_by_kind_rows_first_each_kind_in_its_order() -> None:
    kinds = ["event", "created", "event", "updated", "event", "leg", "updated", "leg"]
    ops = [_Op(k, f"c{i}", None) for i, k in enumerate(kinds)]
    grouped = list(_by_kind(ops))
    assert [(k, len(r)) for k, r in grouped] == [("created", 1), ("updated", 2), ("leg", 2), ("event", 3)]
    for kind, run in grouped:
        assert run == [op for op in ops if op.kind == kind]  # order kept within a kind


def test_only_connection_trouble_is_retried() -> None:
    orig = Exception("boom")
    assert _retryable(exc.OperationalError("SELECT 1", {}, orig))
    assert _retryable(exc.InterfaceError("SELECT 1", {}, orig))
    assert _retryable(exc.DBAPIError("SELECT 1", {}, orig, connection_invalidated=True))
    assert not _retryable(exc.IntegrityError("INSERT", {}, orig))
    assert not _retryable(exc.DataError("INSERT", {}, orig))
    assert not _retryable(exc.StatementError("bind", "INSERT", {}, TypeError("json")))
    assert not _retryable(KeyError("x"))


def test_migrations_are_found_next_to_the_package(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    assert migrations_dir() == Path(__file__).resolve().parents[3] / "migrations"
    (tmp_path / "env.py").write_text("")
    monkeypatch.setenv("NG911_MIGRATIONS", str(tmp_path))
    assert migrations_dir() == tmp_path


def test_a_deep_write_queue_raises_the_alarm_once(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    store = SqlStore(f"sqlite:///{tmp_path}/never-opened.db", high_water=100)  # not started
    for i in range(150):
        store.ap_health("ap1", "sip:ap1@h", bool(i % 2), float(i))
    assert store.queue_depth == 150 and store.backlogged
    assert [r.message for r in caplog.records] == [
        "store backlog is 100 writes (high-water 100): the database is slow or down; "
        "coalescing, shedding event details and non-emergency events, refusing new "
        "non-emergency calls"]
    store.stop()
