"""`ng911 status` shows the cluster's nodes (``ng911.cluster.view``), against real PostgreSQL.

A throwaway database migrated to head holds, with lease times written relative to the
database's own ``now()``:

- ``alpha`` epoch 3, lease alive: two live calls of epoch 3, one ended call, and one live call
  of epoch 2 (stranded by its previous life);
- ``bravo`` epoch 5, lease expired with a live call still owned: TAKEOVER PENDING;
- ``charlie`` epoch 2, lease expired, no live call: nothing pending;
- ``delta`` epoch 1, no lease (a single node), no SIP address;
- a live call owned by ``ghost``, a node with no row.

``nodes_overview`` is checked directly, then the real CLI runs as a subprocess with a copy of
``deploy/examples/cluster-node1.toml`` (its ports moved to free ones: no node listens there,
so the local node is "not running here" and the exit status is 0).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlalchemy as sa

from ng911.cluster.view import nodes_overview, owned_counts, takeover_pending
from ng911.store import migrate
from ng911.store import models as m
from ng911.store.db import engine_for
from tests.integration.conftest import free_port
from tests.pg import pg_server, pg_url  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
NG911 = str(Path(sys.executable).parent / "ng911")

NODES = [
    # name, epoch, lease (seconds from the database's now(); None: no lease), sip_uri
    ("alpha", 3, 60, "sip:alpha@127.0.0.1:5060"),
    ("bravo", 5, -30, "sip:bravo@127.0.0.1:5062"),
    ("charlie", 2, -120, "sip:charlie@127.0.0.1:5064"),
    ("delta", 1, None, None),
]
CALLS = [
    # call_id, owner, epoch, ended
    ("a-1", "alpha", 3, False),
    ("a-2", "alpha", 3, False),
    ("a-ended", "alpha", 3, True),
    ("a-old", "alpha", 2, False),
    ("b-1", "bravo", 5, False),
    ("c-ended", "charlie", 2, True),
    ("g-1", "ghost", 1, False),
]


def _insert(conn: sa.Connection, *, pg: bool) -> None:
    now = time.time()
    for name, epoch, lease, sip_uri in NODES:
        if pg:  # every time by the database's clock
            conn.execute(sa.text(
                "INSERT INTO nodes (name, epoch, started_at, heartbeat_at, lease_expires_at, sip_uri) "
                "VALUES (:name, :epoch, now() - interval '600 seconds', "
                "now() - make_interval(secs => :beat), "
                "CASE WHEN CAST(:lease AS float) IS NULL THEN NULL "
                "ELSE now() + make_interval(secs => CAST(:lease AS float)) END, :sip_uri)"),
                dict(name=name, epoch=epoch, beat=max(0, -(lease or 0)) + 1, lease=lease, sip_uri=sip_uri))
        else:
            conn.execute(sa.insert(m.nodes).values(
                name=name, epoch=epoch, started_at=now - 600, heartbeat_at=now - max(0, -(lease or 0)) - 1,
                lease_expires_at=None if lease is None else now + lease, sip_uri=sip_uri))
    for call_id, owner, epoch, ended in CALLS:
        conn.execute(sa.insert(m.calls).values(
            call_id=call_id, sip_call_id=f"{call_id}@127.0.0.1", kind="emergency",
            state="ended" if ended else "talking", caller="sip:caller@127.0.0.1",
            request_uri="urn:service:sos", additional_data=[], headers={},
            created_at=now - 60, updated_at=now - 1, ended_at=now - 1 if ended else None,
            owner_node=owner, owner_epoch=epoch))


@pytest.fixture(scope="module")
def cluster_db(pg_url: str) -> Iterator[str]:  # noqa: F811
    migrate(pg_url)
    engine = engine_for(pg_url)
    try:
        with engine.begin() as conn:
            _insert(conn, pg=True)
    finally:
        engine.dispose()
    yield pg_url


def _by_name(nodes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in nodes}


def _check_overview(nodes: list[dict[str, Any]]) -> None:
    assert [n["name"] for n in nodes] == ["alpha", "bravo", "charlie", "delta"]
    by = _by_name(nodes)
    assert {k: (v["epoch"], v["lease"], v["calls_owned"], v["calls_stranded"]) for k, v in by.items()} == {
        "alpha": (3, "alive", 2, 1),
        "bravo": (5, "expired", 1, 0),
        "charlie": (2, "expired", 0, 0),
        "delta": (1, "none", 0, 0),
    }
    assert 0 < by["alpha"]["lease_remaining"] <= 60
    assert by["bravo"]["lease_remaining"] < 0 and by["charlie"]["lease_remaining"] < 0
    assert by["delta"]["lease_remaining"] is None and by["delta"]["lease_expires_at"] is None
    assert by["alpha"]["sip_uri"] == "sip:alpha@127.0.0.1:5060" and by["delta"]["sip_uri"] is None
    for n in nodes:
        assert all(isinstance(n[k], float) for k in ("started_at", "heartbeat_at", "heartbeat_age"))
        assert n["started_at"] < n["heartbeat_at"]
    assert isinstance(by["alpha"]["lease_expires_at"], float)
    assert [n["name"] for n in nodes if takeover_pending(n)] == ["bravo"]


def test_nodes_overview_on_postgresql(cluster_db: str) -> None:
    engine = engine_for(cluster_db)
    try:
        _check_overview(nodes_overview(engine))
        with engine.connect() as conn:  # a Connection works as well as an Engine
            _check_overview(nodes_overview(conn))
            assert owned_counts(conn) == {("alpha", 3): 2, ("alpha", 2): 1, ("bravo", 5): 1, ("ghost", 1): 1}
    finally:
        engine.dispose()


def test_nodes_overview_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ng911.db"
    migrate(url)
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            _insert(conn, pg=False)
        _check_overview(nodes_overview(engine))
        assert owned_counts(engine)[("alpha", 2)] == 1
    finally:
        engine.dispose()


def test_nodes_overview_of_an_empty_cluster(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/empty.db"
    migrate(url)
    engine = engine_for(url)
    try:
        assert nodes_overview(engine) == [] and owned_counts(engine) == {}
    finally:
        engine.dispose()


def _config(tmp_path: Path) -> Path:
    """cluster-node1.toml with its SIP, API and metrics ports moved to free ones."""
    text = (ROOT / "deploy" / "examples" / "cluster-node1.toml").read_text()
    for old in ("port = 5060", "port = 8911", "port = 9911"):
        text, count = re.subn(rf"(?m)^{re.escape(old)}\b", f"port = {free_port()}", text)
        assert count == 1, old
    path = tmp_path / "node1.toml"
    path.write_text(text)
    return path


def _status(config: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NG911_DATABASE_URL": url}
    return subprocess.run([NG911, "status", "--config", str(config), *extra], capture_output=True,
                          text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)


def test_status_text_lists_the_nodes(cluster_db: str, tmp_path: Path) -> None:
    res = _status(_config(tmp_path), cluster_db)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[1] == "database: up" and lines[2] == "nodes: 4", res.stdout
    rows = {line.split()[0]: line for line in lines[3:7]}
    assert list(rows) == ["alpha", "bravo", "charlie", "delta"], res.stdout
    assert re.search(r"epoch 3 +alive \(\d+\.\ds left\) +heartbeat \d+\.\ds ago +owns 2 "
                     r"\+ 1 stranded \(older epoch\) +sip:alpha@127\.0\.0\.1:5060$", rows["alpha"]), rows["alpha"]
    assert re.search(r"epoch 5 +EXPIRED \(\d+\.\ds ago\) .* owns 1 +sip:bravo@127\.0\.0\.1:5062  "
                     r"TAKEOVER PENDING$", rows["bravo"]), rows["bravo"]
    assert "EXPIRED" in rows["charlie"] and "owns 0" in rows["charlie"]
    assert re.search(r"epoch 1 +no lease .* owns 0 +-$", rows["delta"]), rows["delta"]
    assert sum("TAKEOVER PENDING" in line for line in lines) == 1
    assert lines[7] == "  live calls owned by no known node: ghost@1", res.stdout
    assert lines[8] == "live calls: 5", res.stdout
    assert all(re.search(r" talking +\d+s  ap=", line) for line in lines[9:14]), res.stdout  # ages shown


def test_status_json_has_the_nodes(cluster_db: str, tmp_path: Path) -> None:
    res = _status(_config(tmp_path), cluster_db, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["database"] == "up" and out["node"]["running"] is False
    _check_overview(out["nodes"])
    assert len(out["calls"]) == 5


def test_status_json_with_the_database_unreachable(tmp_path: Path) -> None:
    res = _status(_config(tmp_path), f"postgresql://postgres@127.0.0.1:{free_port()}/ng911", "--json")
    assert res.returncode == 4, res.stderr
    out = json.loads(res.stdout)
    assert out["database"] == "unreachable" and out["nodes"] is None
