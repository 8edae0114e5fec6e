"""Operator commands through the database (``ng911.cluster.commands``, ``ng911 call``).

First the SQL against real PostgreSQL (a database of the module's, migrated to head, call rows
written by hand): issue, take, finish, retake, a command following its call to a new owner.
Then end to end with two real nodes: ``ng911 call release|move`` run with the *other* node's
config acts on a call owned by the first; what the caller received is what is asserted."""
from __future__ import annotations

import json
import subprocess
import time
from typing import Any, Iterator

import pytest
import sqlalchemy as sa

from ng911.cluster import commands
from ng911.store import models as m
from ng911.store.db import engine_for, migrate
from tests.integration.cluster.nodes import (  # noqa: F401  (fixtures)
    Ap, cluster, db_url, pg_server, sipp, sipp_ap, sipp_caller,
)
from tests.integration.cluster.nodes import SCENARIOS
from tests.integration.conftest import wait_until
from tests.integration.controller.conftest import NG911
from tests.pg import pg_url  # noqa: F401  (fixture)

CONTROLLER_SCENARIOS = SCENARIOS.parent.parent / "controller" / "scenarios"


# --- the SQL -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine(pg_url: str) -> Iterator[sa.engine.Engine]:  # noqa: F811
    migrate(pg_url)
    engine = engine_for(pg_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def db(engine: sa.engine.Engine) -> Iterator[sa.engine.Engine]:
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE calls CASCADE"))
    yield engine


def add_call(engine: sa.engine.Engine, call_id: str, owner: str = "n1", epoch: int = 1, *,
             ended: bool = False) -> None:
    now = time.time()
    with engine.begin() as conn:
        conn.execute(sa.insert(m.calls).values(
            call_id=call_id, sip_call_id=f"sip-{call_id}", kind="emergency", state="ended" if ended else "talking",
            caller="sip:+15550001@example.net", request_uri="urn:service:sos", additional_data=[], headers={},
            created_at=now, updated_at=now, ended_at=now if ended else None,
            end_reason="caller_hangup" if ended else None, owner_node=owner, owner_epoch=epoch))


def issue(engine: sa.engine.Engine, call_id: str, action: str = "release", by: str = "alice") -> int:
    with engine.begin() as conn:
        return commands.issue(conn, call_id, action, issued_by=by)


def take(engine: sa.engine.Engine, node: str, epoch: int, **kw: Any) -> list[dict[str, Any]]:
    with engine.begin() as conn:
        return commands.take(conn, node, epoch, **kw)


def get(engine: sa.engine.Engine, command_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = commands.get(conn, command_id)
    assert row is not None
    return row


def test_issue_take_finish(db):
    add_call(db, "c1")
    add_call(db, "c2")
    first, second = issue(db, "c1", "release"), issue(db, "c2", "move", "bob")
    row = get(db, first)
    assert (row["call_id"], row["action"], row["issued_by"], row["taken_by"], row["done_at"]) == (
        "c1", "release", "alice", None, None)
    assert isinstance(row["issued_at"], float)
    taken = take(db, "n1", 1)
    assert [t["id"] for t in taken] == [first, second]  # in id order
    assert {(t["taken_by"], t["taken_epoch"]) for t in taken} == {("n1", 1)}
    assert take(db, "n1", 1) == []  # taken: not again (until RETAKE_AFTER)
    with db.begin() as conn:
        assert commands.finish(conn, first, True, "released")
        assert not commands.finish(conn, first, False, "late")  # done once
    row = get(db, first)
    assert (row["ok"], row["result"]) == (True, "released") and row["done_at"] is not None
    assert [t["id"] for t in take(db, "n1", 1, retake_after=0)] == [second]  # the done one: never again
    with db.connect() as conn:
        assert commands.get(conn, 999_999) is None


def test_only_the_owner_epoch_takes_a_calls_commands(db):
    add_call(db, "c1", "n1", 2)
    cid = issue(db, "c1")
    assert take(db, "n2", 1) == []
    assert take(db, "n1", 1) == []  # an older epoch of the owner's name is not the owner
    assert [t["id"] for t in take(db, "n1", 2)] == [cid]


def test_a_command_taken_and_not_done_is_taken_again_after_retake_after(db):
    add_call(db, "c1")
    cid = issue(db, "c1")
    assert [t["id"] for t in take(db, "n1", 1)] == [cid]
    assert take(db, "n1", 1) == []  # RETAKE_AFTER (30 s) not passed
    again = take(db, "n1", 1, retake_after=0)  # the node that took it "died" before finishing
    assert [t["id"] for t in again] == [cid]
    with db.begin() as conn:
        commands.finish(conn, cid, True, "released")
    assert take(db, "n1", 1, retake_after=0) == []  # done: never again


def test_a_command_follows_its_call_to_a_new_owner(db):
    add_call(db, "c1", "n1", 1)
    cid = issue(db, "c1", "move")
    assert [t["id"] for t in take(db, "n1", 1)] == [cid]  # n1 took it ... and died
    with db.begin() as conn:  # a survivor claims the call (as sql.claim does)
        conn.execute(sa.update(m.calls).where(m.calls.c.call_id == "c1").values(owner_node="n2", owner_epoch=5))
    assert take(db, "n1", 1, retake_after=0) == []  # not n1's call any more
    (t,) = take(db, "n2", 5, retake_after=0)
    assert (t["id"], t["taken_by"], t["taken_epoch"]) == (cid, "n2", 5)


def test_a_command_not_taken_yet_follows_its_call_at_once(db):
    add_call(db, "c1", "n1", 1)
    cid = issue(db, "c1")
    with db.begin() as conn:
        conn.execute(sa.update(m.calls).where(m.calls.c.call_id == "c1").values(owner_node="n2", owner_epoch=5))
    assert [t["id"] for t in take(db, "n2", 5)] == [cid]


def test_given_back_it_is_taken_at_the_next_beat(db):
    add_call(db, "c1")
    cid = issue(db, "c1")
    take(db, "n1", 1)
    with db.begin() as conn:
        assert not commands.give_back(conn, cid, "n2", 1)  # only the taker gives it back
        assert commands.give_back(conn, cid, "n1", 1)
    assert [t["id"] for t in take(db, "n1", 1)] == [cid]


def test_commands_of_ended_calls_are_not_taken(db):
    add_call(db, "c1")
    cid = issue(db, "c1")
    with db.begin() as conn:
        conn.execute(sa.update(m.calls).where(m.calls.c.call_id == "c1").values(ended_at=time.time()))
    assert take(db, "n1", 1) == []
    assert get(db, cid)["taken_by"] is None


def test_issue_refuses_a_call_not_live_and_an_unknown_action(db):
    add_call(db, "gone", ended=True)
    add_call(db, "c1")
    with pytest.raises(LookupError, match="not live"):
        issue(db, "gone")
    with pytest.raises(LookupError, match="no call"):
        issue(db, "nope")
    with pytest.raises(ValueError, match="unknown action"):
        issue(db, "c1", "hold")
    with db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(m.commands)).scalar() == 0


def test_take_is_bounded_and_skips_rows_another_taker_holds(db):
    add_call(db, "c1")
    ids = [issue(db, "c1") for _ in range(5)]
    assert [t["id"] for t in take(db, "n1", 1, limit=2)] == ids[:2]
    with db.connect() as other:  # another transaction holds the third row locked
        with other.begin():
            other.execute(sa.select(m.commands).where(m.commands.c.id == ids[2]).with_for_update())
            assert [t["id"] for t in take(db, "n1", 1)] == ids[3:]
    assert [t["id"] for t in take(db, "n1", 1)] == [ids[2]]


# --- end to end: two nodes, the command issued with the other node's config -----------------------

def ng911_call(node, action: str, call_id: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([NG911, "call", action, call_id, "--config", str(node.config), *args],
                          env=node.env, capture_output=True, text=True, timeout=timeout, cwd=node.workdir)


def test_release_from_another_nodes_config_ends_the_call_with_a_bye_to_the_caller(cluster, sipp):
    ap = Ap("ap1")
    ap_proc = sipp_ap(sipp, "tk_ap.xml", ap)
    n1, n2 = cluster.start(["n1", "n2"], [ap])
    # answers re-INVITEs 503, takes a BYE with 200; hangs up itself only after 15 s of silence
    caller = sipp.caller(CONTROLLER_SCENARIOS / "nd_caller_refuses_reinvites.xml", n1, timeout=60)
    (call,) = n1.wait_talking()
    assert call["owner_node"] == "n1"

    issued = time.time()
    res = ng911_call(n2, "release", call["call_id"], "--by", "supervisor-7")
    assert res.returncode == 0, res.stdout + res.stderr
    print(res.stdout.strip())
    assert "released" in res.stdout and "n1/" in res.stdout

    assert caller.wait(30) == 0, caller.summary()
    assert ap_proc.wait(30) == 97, ap_proc.summary()
    [bye] = caller.received("BYE")
    assert f":{n1.sip_port}" in (bye.header("Via") or "")
    (row,) = n1.wait_ended(1, timeout=15)
    assert (row["owner_node"], row["end_reason"]) == ("n1", "operator_release")
    [cmd] = [e for e in n1.events(row["call_id"]) if e["kind"] == "operator_command"]
    assert (cmd["data"]["action"], cmd["data"]["issued_by"]) == ("release", "supervisor-7")
    # the command's row: done by the owner
    with n1.engine.connect() as conn:
        (done,) = [dict(r._mapping) for r in conn.execute(sa.select(m.commands))]
    assert (done["taken_by"], done["ok"], done["result"], done["issued_by"]) == ("n1", True, "released", "supervisor-7")
    print(f"ng911 call release → caller's BYE: {bye.at - issued:.2f} s from the CLI's start, "
          f"{bye.at - done['issued_at']:.2f} s from the command's row (heartbeat 0.5 s)")
    # the call is not live any more: a second release is refused as "no such live call" (exit 2)
    again = ng911_call(n2, "release", call["call_id"], "--json")
    assert again.returncode == 2, again.stdout + again.stderr
    assert json.loads(again.stdout)["status"] == "error"
    n1.assert_clean()
    n2.assert_clean()


def test_move_from_another_nodes_config_moves_the_call_to_the_other_position(cluster, sipp):
    ap1, ap2 = Ap("ap1"), Ap("ap2")
    ap1_proc = sipp_ap(sipp, "tk_ap.xml", ap1)
    ap2_proc = sipp_ap(sipp, "tk_ap.xml", ap2)
    n1, n2 = cluster.start(["n1", "n2"], [ap1, ap2])
    caller = sipp_caller(sipp, "tk_caller_moves.xml", n1.sip_port, timeout=90)
    (call,) = n1.wait_talking()
    first_ap = call["answer_point"]
    assert call["owner_node"] == "n1" and first_ap in ("ap1", "ap2")

    res = ng911_call(n2, "move", call["call_id"], "--json", "--by", "supervisor-7")
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    print(out["message"])
    assert out["status"] == "done" and out["command"]["taken_by"] == "n1"

    assert caller.wait(60) == 0, caller.summary()  # re-INVITEd once, then hung up itself
    assert ap1_proc.wait(30) == 97, ap1_proc.summary()
    assert ap2_proc.wait(30) == 97, ap2_proc.summary()
    assert caller.received("BYE") == []
    assert len(caller.received("INVITE")) == 1
    (row,) = n1.wait_ended(1, timeout=15)
    assert row["end_reason"] == "caller_hangup"
    assert row["answer_point"] not in (None, first_ap)
    [cmd] = [e for e in n1.events(row["call_id"]) if e["kind"] == "operator_command"]
    assert (cmd["data"]["action"], cmd["data"]["issued_by"]) == ("move", "supervisor-7")
    n1.assert_clean()
    n2.assert_clean()


def test_cli_bad_arguments_and_unknown_call_exit_2(cluster):
    (n1,) = cluster.start(["n1"], [Ap("ap1")])
    res = ng911_call(n1, "release", "no-such-call")
    assert res.returncode == 2 and "no call" in res.stderr, res.stdout + res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = ng911_call(n1, "move", "x", "--timeout", "-1")
    assert res.returncode == 2, res.stdout + res.stderr
    res = subprocess.run([NG911, "call", "hold", "x", "--config", str(n1.config)], env=n1.env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2


def test_cli_exits_4_when_the_owner_does_not_run_it_in_time(cluster, sipp):
    ap = Ap("ap1")
    ap_proc = sipp_ap(sipp, "tk_ap.xml", ap)
    n1, n2 = cluster.start(["n1", "n2"], [ap], lease=30.0)  # a long lease: no takeover in this test
    caller = sipp.caller(CONTROLLER_SCENARIOS / "nd_caller_refuses_reinvites.xml", n1, timeout=60)
    (call,) = n1.wait_talking()
    n1.pause()  # alive by its lease, beating no more
    try:
        res = ng911_call(n2, "release", call["call_id"], "--timeout", "1")
        assert res.returncode == 4, res.stdout + res.stderr
        print(res.stdout.strip())
        assert "not done in 1 s" in res.stdout and "n1/" in res.stdout
    finally:
        n1.resume()
    # the command was not lost: n1 runs it at its next beat
    wait_until(lambda: n1.all_calls()[0]["end_reason"] == "operator_release", 15, "the release, late")
    assert caller.wait(30) == 0, caller.summary()
    assert len(caller.received("BYE")) == 1
    assert ap_proc.wait(30) == 97, ap_proc.summary()
    n1.assert_clean()
