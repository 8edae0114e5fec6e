"""The cluster as the database has it: blocking reads for ``ng911 status`` and tests.

SQLAlchemy Core on an ``Engine`` or ``Connection`` (PostgreSQL, or the single node's SQLite
file). Never called on the reactor thread.

A node's **lease** is judged by the *database's* clock (``now()``), the one clock every node of
the cluster shares -- never by the clock of the host that runs the query:

- ``alive``: ``lease_expires_at`` is in the future;
- ``expired``: it is in the past: survivors are taking (or have taken) the node's calls;
- ``none``: ``lease_expires_at`` is NULL: a single node, or one not yet in its cluster.

A live call (``ended_at IS NULL``) owned by ``(name, epoch)`` with the node's current epoch is
**owned**; one owned by the node's name with an *older* epoch is **stranded**: a previous life
of the node left it, and it waits to be claimed.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ng911.store import models as m

LEASE_ALIVE, LEASE_EXPIRED, LEASE_NONE = "alive", "expired", "none"


def _db_now(dialect: str) -> sa.ColumnElement[float]:
    """The database's current time as float epoch seconds."""
    if dialect == "sqlite":
        return sa.cast((sa.func.julianday("now") - 2440587.5) * 86400.0, sa.Float)
    return sa.cast(sa.extract("epoch", sa.func.now()), sa.Float)


def _run(bind: Engine | Connection, query: sa.Select[Any]) -> list[sa.Row[Any]]:
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return list(conn.execute(query))
    return list(bind.execute(query))


def nodes_overview(bind: Engine | Connection) -> list[dict[str, Any]]:
    """Every node row, ordered by name, with its lease state and its live calls (one query).

    Each dict: ``name``, ``epoch``, ``started_at``, ``heartbeat_at``, ``lease_expires_at``
    (float epoch seconds or None), ``sip_uri``, ``lease`` (``alive`` | ``expired`` | ``none``),
    ``lease_remaining`` (seconds by the database's clock, negative once expired, None without
    a lease), ``heartbeat_age`` (seconds since the last heartbeat, by the database's clock),
    ``calls_owned`` (live calls owned by ``(name, epoch)``) and ``calls_stranded`` (live calls
    owned by ``name`` with an older epoch).
    """
    n, c = m.nodes, m.calls
    live = n.outerjoin(c, sa.and_(c.c.owner_node == n.c.name, c.c.ended_at.is_(None)))

    def count_where(cond: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.coalesce(sa.func.sum(sa.case((cond, 1), else_=0)), 0)

    dialect = bind.dialect.name
    query = (
        sa.select(
            n.c.name, n.c.epoch, n.c.started_at, n.c.heartbeat_at, n.c.lease_expires_at,
            n.c.sip_uri,
            _db_now(dialect).label("db_now"),
            count_where(c.c.owner_epoch == n.c.epoch).label("calls_owned"),
            count_where(c.c.owner_epoch < n.c.epoch).label("calls_stranded"),
        )
        .select_from(live)
        .group_by(n.c.name, n.c.epoch, n.c.started_at, n.c.heartbeat_at, n.c.lease_expires_at,
                  n.c.sip_uri)
        .order_by(n.c.name)
    )
    out: list[dict[str, Any]] = []
    for row in _run(bind, query):
        now = float(row.db_now)
        expires = row.lease_expires_at
        if expires is None:
            lease, remaining = LEASE_NONE, None
        else:
            remaining = expires - now
            lease = LEASE_EXPIRED if remaining < 0 else LEASE_ALIVE  # as the claim (cluster.sql) judges it
        out.append({
            "name": row.name, "epoch": int(row.epoch), "started_at": row.started_at,
            "heartbeat_at": row.heartbeat_at, "lease_expires_at": expires, "sip_uri": row.sip_uri,
            "lease": lease, "lease_remaining": remaining,
            "heartbeat_age": None if row.heartbeat_at is None else now - row.heartbeat_at,
            "calls_owned": int(row.calls_owned), "calls_stranded": int(row.calls_stranded),
        })
    return out


def owned_counts(bind: Engine | Connection) -> dict[tuple[str, int], int]:
    """Live calls per owner ``(node, epoch)`` (one query), including owners with no node row."""
    c = m.calls
    query = (sa.select(c.c.owner_node, c.c.owner_epoch, sa.func.count())
             .where(c.c.ended_at.is_(None))
             .group_by(c.c.owner_node, c.c.owner_epoch))
    return {(node, int(epoch)): int(count) for node, epoch, count in _run(bind, query)}


def takeover_pending(node: dict[str, Any]) -> bool:
    """An expired lease with live calls still under the node's name: survivors must claim them."""
    return node["lease"] == LEASE_EXPIRED and (node["calls_owned"] + node["calls_stranded"]) > 0
