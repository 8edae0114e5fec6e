"""The cluster's SQL: a node's heartbeat, and the claim of a dead node's calls (PostgreSQL).

Blocking functions on a ``Connection`` inside a transaction the caller opens; the member runs
them on a thread of its own with an engine of its own, so that a heartbeat never waits behind
the store's write-behind queue. Times that decide leases are the database's (``now()``): one
clock for every node.

Locks, and why they cannot deadlock with the store's writer: a claim share-locks the claimer's
``nodes`` row, then locks the dead node's row, then the call rows (``FOR UPDATE SKIP LOCKED``).
A writer takes its own ``nodes`` row (creating calls) before any call row, so a claim and the
dead node's last writer meet on the ``nodes`` row first, never crosswise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ng911.cluster.lease import Dead, NodeKey
from ng911.store import models as m


@dataclass(slots=True)
class Beat:
    """What a successful heartbeat read."""

    nodes: list[dict[str, Any]]  # every node row, with ``lease_expired`` by the database's clock
    owned: set[str]  # live calls owned by this node's (name, epoch)
    live_by_owner: dict[NodeKey, int] = field(default_factory=dict)  # live calls per owner
    commands: list[dict[str, Any]] = field(default_factory=list)  # operator commands taken (cluster.commands)


def _lease_expired() -> sa.ColumnElement[bool]:
    """A node's lease ran out, by the database's clock (no lease: not a cluster member)."""
    n = m.nodes.c
    return sa.case((n.lease_expires_at.is_(None), False), else_=n.lease_expires_at < sa.func.now())


def _lease_released() -> sa.ColumnElement[bool]:
    """A node gave its lease back on purpose (it ends at its last heartbeat: ``release``)."""
    n = m.nodes.c
    return sa.case((n.lease_expires_at.is_(None), False), else_=n.lease_expires_at <= n.heartbeat_at)


def heartbeat(conn: Connection, node: str, epoch: int, lease: float, sip_uri: str | None) -> Beat | None:
    """Renew this node's lease; None when (node, epoch) is no longer the node's row (another
    process registered under the same name since: this one must stop)."""
    n, c = m.nodes.c, m.calls.c
    now = sa.func.now()
    renewed = conn.execute(
        sa.update(m.nodes)
        .where(n.name == node, n.epoch == epoch)
        .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease), sip_uri=sip_uri))
    if renewed.rowcount == 0:
        return None
    rows = conn.execute(sa.select(
        n.name, n.epoch, n.heartbeat_at, n.lease_expires_at, n.sip_uri,
        _lease_expired().label("lease_expired"), _lease_released().label("lease_released")))
    nodes = [dict(r._mapping) for r in rows]
    live = conn.execute(
        sa.select(c.owner_node, c.owner_epoch, sa.func.count())
        .where(c.ended_at.is_(None))
        .group_by(c.owner_node, c.owner_epoch))
    live_by_owner = {(r[0], int(r[1])): int(r[2]) for r in live}
    owned: set[str] = set()
    if live_by_owner.get((node, epoch)):
        owned = set(conn.execute(
            sa.select(c.call_id).where(c.owner_node == node, c.owner_epoch == epoch, c.ended_at.is_(None))
        ).scalars())
    return Beat(nodes, owned, live_by_owner)


def release(conn: Connection, node: str, epoch: int) -> bool:
    """A node stopping on purpose gives its lease back (it ends at its last heartbeat): the
    survivors take its calls at their next heartbeat instead of a lease later."""
    n = m.nodes.c
    done = conn.execute(sa.update(m.nodes).where(n.name == node, n.epoch == epoch)
                        .values(lease_expires_at=n.heartbeat_at))
    return done.rowcount == 1


def live_call_with_sip_call_id(conn: Connection, sip_call_id: str) -> bool:
    """Is there a live call with a leg of this SIP Call-ID (the caller's, or a position's)?"""
    c, leg = m.calls.c, m.legs.c
    by_caller = sa.select(c.call_id).where(c.sip_call_id == sip_call_id, c.ended_at.is_(None)).limit(1)
    if conn.execute(by_caller).first() is not None:
        return True
    by_leg = (sa.select(leg.call_id).join(m.calls, m.calls.c.call_id == leg.call_id)
              .where(leg.dialog["call_id"].astext == sip_call_id, c.ended_at.is_(None)).limit(1))
    return conn.execute(by_leg).first() is not None


def orphans(beat: Beat) -> list[Dead]:
    """Owners of live calls that are no node's current (name, epoch): a node restarted (its
    old epoch's calls are left), or its row is gone. Dead by definition: epochs only grow."""
    current = {(str(r["name"]), int(r["epoch"])) for r in beat.nodes}
    return [Dead(name, epoch, None) for (name, epoch) in sorted(beat.live_by_owner)
            if (name, epoch) not in current]


def claim(conn: Connection, me: str, my_epoch: int, dead: Dead, limit: int) -> list[dict[str, Any]]:
    """Take up to ``limit`` live calls of ``dead`` (oldest first; rows another claimer has
    locked are skipped), if this node is still itself and ``dead`` has not beaten since it
    was seen dead. Returns the claimed calls rows, each with its ``legs`` by role."""
    n, c = m.nodes.c, m.calls.c
    mine = conn.execute(sa.select(n.epoch).where(n.name == me).with_for_update(read=True)).scalar()
    if mine != my_epoch:
        return []
    row = conn.execute(
        sa.select(n.epoch, n.heartbeat_at,
                  sa.or_(_lease_expired(), _lease_released()).label("expired"))
        .where(n.name == dead.name).with_for_update()).first()
    if row is not None and int(row.epoch) == dead.epoch:
        if not row.expired or row.heartbeat_at != dead.heartbeat_at:
            return []  # it came back (or never was in a cluster)
    # (a newer epoch, or no row: the calls of ``dead.epoch`` are left over from a previous life)
    wanted = (
        sa.select(c.call_id)
        .where(c.owner_node == dead.name, c.owner_epoch == dead.epoch, c.ended_at.is_(None))
        .order_by(c.created_at, c.call_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery())
    claimed = conn.execute(
        sa.update(m.calls)
        .where(c.call_id.in_(wanted))
        .values(owner_node=me, owner_epoch=my_epoch, updated_at=sa.func.now())
        .returning(*m.calls.c))
    calls = {r.call_id: dict(r._mapping) | {"legs": {}} for r in claimed}
    if calls:
        legs = conn.execute(sa.select(m.legs).where(m.legs.c.call_id.in_(list(calls))))
        for leg in legs:
            calls[leg.call_id]["legs"][leg.role] = dict(leg._mapping)
    return sorted(calls.values(), key=lambda r: (r["created_at"], r["call_id"]))
