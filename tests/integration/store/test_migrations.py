"""Alembic: upgrade on an empty database, schema_status, models == migrations, several nodes
migrating at once, and the way back."""
from __future__ import annotations

import multiprocessing
import shutil
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from ng911.store import migrate, schema_status
from ng911.store.db import downgrade, engine_for, migrations_dir
from ng911.store.models import metadata
from ng911.call.state import CallState
from ng911.store.models import CALL_STATES
from tests.pg import postgres_url

TABLES = {"nodes", "calls", "legs", "call_events", "answer_points", "ap_health_events",
          "abandoned_calls", "commands"}


def tables(url: str) -> set[str]:
    engine = engine_for(url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def diff(url: str) -> list[object]:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            mc = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True})
            return list(compare_metadata(mc, metadata))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path, pg_server: str):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/m.db"
    else:
        with postgres_url(pg_server) as url:
            yield url


HEAD = "0004"


def test_upgrade_an_empty_database_to_head(empty_url: str) -> None:
    assert schema_status(empty_url) == ("empty", None, HEAD)
    migrate(empty_url)
    assert schema_status(empty_url) == ("current", HEAD, HEAD)
    assert tables(empty_url) == TABLES
    migrate(empty_url)  # again: nothing to do
    assert schema_status(empty_url).state == "current"


def test_models_and_migrations_agree(empty_url: str) -> None:
    migrate(empty_url)
    assert diff(empty_url) == []


def test_downgrade_to_base_and_back(empty_url: str) -> None:
    migrate(empty_url)
    downgrade(empty_url, "base")
    assert tables(empty_url) == set()
    assert schema_status(empty_url).state == "empty"
    migrate(empty_url)
    assert tables(empty_url) == TABLES


def _node_migrates(url: str, barrier: Any, errors: Any) -> None:
    try:
        barrier.wait(30)
        migrate(url)
    except BaseException as e:  # noqa: BLE001 - reported to the test
        errors.put(repr(e))
        raise SystemExit(1) from None


def test_several_nodes_migrating_at_once_take_turns(pg_server: str) -> None:
    """Separate processes, as nodes are (forked: no second import of everything), released
    together by a barrier. Without env.py's advisory lock, one fails creating the tables."""
    ctx = multiprocessing.get_context("fork")
    with postgres_url(pg_server) as url:
        barrier, errors = ctx.Barrier(3), ctx.SimpleQueue()
        procs = [ctx.Process(target=_node_migrates, args=(url, barrier, errors))
                 for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        failures = []
        while not errors.empty():
            failures.append(errors.get())
        assert failures == []
        assert [p.exitcode for p in procs] == [0, 0, 0]
        assert schema_status(url).state == "current"
        assert diff(url) == []


def test_migrate_is_serialised_within_a_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    errors: list[BaseException] = []

    def node() -> None:
        try:
            migrate(url)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=node) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert schema_status(url).state == "current"


def test_status_behind_when_the_code_has_a_newer_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/b.db"
    migrate(url)
    newer = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), newer, ignore=shutil.ignore_patterns("__pycache__"))
    (newer / "versions" / "9999_more.py").write_text(
        f'revision = "9999"\ndown_revision = "{HEAD}"\nbranch_labels = None\n'
        'depends_on = None\n\n\ndef upgrade() -> None:\n    pass\n\n\n'
        'def downgrade() -> None:\n    pass\n')
    assert schema_status(url, script_location=newer) == ("behind", HEAD, "9999")
    migrate(url, script_location=newer)
    assert schema_status(url, script_location=newer) == ("current", "9999", "9999")
    # and the older code, facing a database migrated by newer code:
    assert schema_status(url) == ("unknown", "9999", HEAD)


def test_migrations_are_found_from_the_package() -> None:
    path = migrations_dir()
    assert (path / "env.py").is_file()
    assert sorted(p.name for p in (path / "versions").glob("*.py")) == ["0001_initial.py", "0002_call_state_check.py",
                                                                           "0003_cluster.py", "0004_commands.py"]


def test_a_call_row_holds_only_a_state_of_the_state_machine(empty_url: str) -> None:
    migrate(empty_url)
    engine = engine_for(empty_url)
    try:
        calls = sa.Table("calls", sa.MetaData(), autoload_with=engine)
        row = {"sip_call_id": "x", "kind": "emergency", "caller": "sip:a@b", "request_uri": "urn:service:sos",
               "additional_data": [], "headers": {}, "owner_node": "n1", "owner_epoch": 1}
        insert = calls.insert().values(**row)
        now = datetime.now(timezone.utc)
        with engine.begin() as conn:
            for state in CallState:
                conn.execute(insert, {"call_id": state.value, "state": state.value, "created_at": now, "updated_at": now})
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(insert, {"call_id": "bad", "state": "answered", "created_at": now, "updated_at": now})
    finally:
        engine.dispose()


def test_the_store_knows_every_call_state_by_its_one_word() -> None:
    assert CALL_STATES == tuple(s.value for s in CallState)
