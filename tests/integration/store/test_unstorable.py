"""Input a database cannot hold does not take a call's record down (issue 7, item 6).

- Contract (MemoryStore, SQLite, PostgreSQL): a NUL byte, a lone surrogate or a non-finite float
  anywhere in a call's text or JSON is stored, deterministically replaced (NUL → U+2400 "␀",
  surrogate → U+FFFD, NaN → "nan"), and the call's later writes land: nothing is fenced.
- Writer (SQLite, PostgreSQL): an op the database refuses for good -- here a CHECK constraint or
  trigger added to the real schema, the way a value the database cannot take fails -- costs that
  op only: it is retried without its detail ("degraded") or dropped, logged with its call id and
  counted; the rest of the batch lands, and the call is never reported as fenced.
"""
from __future__ import annotations

import logging
from typing import Iterator

import pytest
import sqlalchemy as sa

from ng911.store import CallStore, SqlStore
from ng911.store.db import engine_for
from ng911.store.store import NUL_REPLACEMENT
from tests.integration.store.test_contract import T0, make_call, settle

NUL = "\x00"
R = NUL_REPLACEMENT


def test_nul_surrogates_and_nan_are_stored_and_the_call_goes_on(store: CallStore) -> None:
    fenced: list[str] = []
    store.on_fenced = fenced.append
    epoch = store.register_node("n1")
    owner = ("n1", epoch)
    store.call_created(make_call(
        "c1", "n1", epoch, sip_call_id=f"a{NUL}b@esrp", caller=f"sip:x{NUL}@carrier.example",
        caller_display=f"Evil{NUL}Name\udcff", request_uri=f"urn:service:sos{NUL}",
        headers={f"X-{NUL}": f"v{NUL}", "Call-Info": ["<cid:1>", f"<cid:{NUL}>"]},
        location={"point": [1.0, float("nan")], "text": f"1 Main{NUL}St"}))
    store.call_updated("c1", owner, state="ringing", answer_point=f"ap{NUL}1")
    store.leg_saved("c1", owner, "upstream", {"call_id": f"a{NUL}b@esrp", "remote_tag": NUL},
                    b"v=0\x00\r\n", None, None)
    store.event("c1", owner, "received", T0, {"caller": f"x{NUL}", f"k{NUL}": [NUL]})
    store.event("c1", owner, "answered", T0 + 1, {"ap": "ap1"})
    store.abandoned("c1", owner, f"<sip:x{NUL}@carrier.example>", {"t": NUL}, T0 + 2)
    settle(store)

    assert fenced == []
    call = store.call("c1")
    assert call is not None
    assert call["sip_call_id"] == f"a{R}b@esrp"
    assert call["caller"] == f"sip:x{R}@carrier.example"
    assert call["caller_display"] == f"Evil{R}Name\ufffd"
    assert call["request_uri"] == f"urn:service:sos{R}"
    assert call["headers"] == {f"X-{R}": f"v{R}", "Call-Info": ["<cid:1>", f"<cid:{R}>"]}
    assert call["location"] == {"point": [1.0, "nan"], "text": f"1 Main{R}St"}
    assert (call["state"], call["answer_point"]) == ("ringing", f"ap{R}1")
    assert call["legs"]["upstream"]["dialog"] == {"call_id": f"a{R}b@esrp", "remote_tag": R}
    assert call["legs"]["upstream"]["local_sdp"] == b"v=0\x00\r\n"  # bytes are stored as they are
    events = store.events("c1")
    assert [e["kind"] for e in events] == ["received", "answered"]
    assert events[0]["data"] == {"caller": f"x{R}", f"k{R}": [R]}
    assert [(a["caller"], a["location"]) for a in store.abandoned_calls()] == [
        (f"<sip:x{R}@carrier.example>", {"t": R})]


# --- permanent errors on a real database ------------------------------------------------------


def refuse(url: str, name: str, table: str, condition: str) -> None:
    """Make the database refuse rows of ``table`` matching the SQL ``condition`` (PostgreSQL: a
    CHECK constraint; SQLite: a trigger, as it cannot add one to an existing table)."""
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text(f"ALTER TABLE {table} ADD CONSTRAINT {name} "
                                     f"CHECK (NOT ({condition}))"))
            else:
                for op in ("INSERT", "UPDATE"):
                    conn.execute(sa.text(
                        f"CREATE TRIGGER {name}_{op.lower()} BEFORE {op} ON {table} "
                        f"WHEN {condition.replace('NEW.', 'NEW.')} "
                        f"BEGIN SELECT RAISE(ABORT, '{name}'); END"))
    finally:
        engine.dispose()


def unrefuse(url: str, name: str, table: str) -> None:
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}"))
            else:
                for op in ("insert", "update"):
                    conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {name}_{op}"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest) -> Iterator[str]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_empty")
    yield url
    for name, table in (("poison_kind", "call_events"), ("poison_caller", "calls"),
                        ("poison_header", "calls"), ("poison_data", "call_events")):
        unrefuse(url, name, table)


def _cond(url: str, pg: str, lite: str) -> str:
    return pg if url.startswith("postgresql") else lite


def test_a_permanent_error_costs_one_op_and_never_the_call(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    refuse(db, "poison_kind", "call_events", _cond(db, "kind = 'poison'", "NEW.kind = 'poison'"))
    refuse(db, "poison_data", "call_events",
           _cond(db, "data ? 'poison'", "json_extract(NEW.data, '$.poison') IS NOT NULL"))
    refuse(db, "poison_header", "calls",
           _cond(db, "headers ? 'X-Poison'", "json_extract(NEW.headers, '$.X-Poison') IS NOT NULL"))
    refuse(db, "poison_caller", "calls",
           _cond(db, "caller = 'sip:poison@x'", "NEW.caller = 'sip:poison@x'"))
    store = SqlStore(db, linger=0.05)
    fenced: list[str] = []
    store.on_fenced = fenced.append
    store.start()
    try:
        epoch = store.register_node("n1")
        owner = ("n1", epoch)
        # c1: its row carries a header the database refuses -> stored without its JSON detail
        store.call_created(make_call("c1", "n1", epoch, headers={"X-Poison": "1"}))
        # c2: its row is refused whatever we do -> dropped; its later writes are not "fenced"
        store.call_created(make_call("c2", "n1", epoch, caller="sip:poison@x"))
        store.event("c1", owner, "before", T0, {"n": 1})
        store.event("c1", owner, "poison", T0 + 1, {})  # refused whole: dropped
        store.event("c1", owner, "detail", T0 + 2, {"poison": True})  # kept without its data
        store.event("c2", owner, "orphan", T0 + 3, {})
        store.call_updated("c2", owner, state="talking")
        store.call_updated("c1", owner, state="talking")
        store.event("c1", owner, "after", T0 + 4, {"n": 2})
        with caplog.at_level(logging.ERROR, logger="ng911.store"):
            settle(store)
        assert fenced == []  # nobody lost a call: only records are missing
        c1 = store.call("c1")
        assert c1 is not None and c1["state"] == "talking"
        assert c1["headers"] == {"unstorable": c1["headers"]["unstorable"]}
        assert c1["caller_display"] is None and c1["location"] is None
        assert [(e["kind"], e["data"]) for e in store.events("c1")] == [
            ("before", {"n": 1}), ("detail", {"unstorable": store.events("c1")[1]["data"]["unstorable"]}),
            ("after", {"n": 2})]
        assert store.call("c2") is None
        assert store.write_errors == {("created", "degraded"): 1, ("created", "dropped"): 1,
                                      ("event", "dropped"): 1, ("event", "degraded"): 1}
        assert store.dropped == 2
        assert "dropped created write for call c2" in caplog.text
        assert "dropped event write for call c1" in caplog.text
        assert "call c2 has no row" in caplog.text
        # the writer goes on: later writes land, still nothing fenced
        store.event("c1", owner, "later", T0 + 5, {})
        settle(store)
        assert store.events("c1")[-1]["kind"] == "later" and fenced == []
    finally:
        store.stop()


def test_an_update_the_database_refuses_is_stored_field_by_field_and_never_costs_the_row(
        db: str) -> None:
    # calls.state is CHECKed to the state machine's words: "bogus" is refused for good
    store = SqlStore(db, linger=0.05)
    fenced: list[str] = []
    store.on_fenced = fenced.append
    store.start()
    try:
        epoch = store.register_node("n1")
        owner = ("n1", epoch)
        store.call_created(make_call("c1", "n1", epoch))
        store.call_updated("c1", owner, state="talking")
        store.call_updated("c1", owner, state="bogus", queue="q9")  # merged with the one above
        store.event("c1", owner, "after", T0, {})
        settle(store)
        call = store.call("c1")
        assert call is not None and (call["state"], call["queue"]) == ("routing", "q9")
        assert [e["kind"] for e in store.events("c1")] == ["after"]
        assert store.write_errors == {("updated", "degraded"): 1} and fenced == []
    finally:
        store.stop()
