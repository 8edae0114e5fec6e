"""Operator commands through the database: an action on a call, issued from any host, run by
whichever node owns the call (DESIGN "Cluster": cross-node commands travel through PostgreSQL).

A command is addressed to the **call**, never to a node::

    issue ──▶ (not taken) ──take──▶ taken (by, epoch, at) ──finish──▶ done (ok, result)
                   ▲                        │
                   └── RETAKE_AFTER s, still not done (its node died, or the outcome was
                       not written: the database blipped) ──┘

- ``issue`` (``ng911 call release|move``, any host) writes a row for a live call.
- ``take`` (the owner, inside its heartbeat's transaction) marks and returns the commands of
  the live calls that (node, epoch) owns: when a survivor takes a call over, the call's pending
  commands follow it. ``FOR UPDATE SKIP LOCKED``: two takers never get one command.
- ``finish`` writes the outcome; ``get`` reads a command back (the CLI polls it).

Blocking functions on a ``Connection`` inside a transaction the caller opens (as ``sql``);
times are the database's (``now()``). A command runs at least once: one taken, run and not
recorded is run again when taken again (a ``release`` of a call that has ended since is not
taken: the call is no longer live).
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ng911.store import models as m

ACTIONS = m.COMMAND_ACTIONS
#: a command taken this many seconds ago and still not done is taken again (by the call's owner)
RETAKE_AFTER = 30.0


def issue(conn: Connection, call_id: str, action: str, *, args: dict[str, Any] | None = None,
          issued_by: str) -> int:
    """Write a command for a live call; its id. ``ValueError``: unknown action;
    ``LookupError``: no such call, or the call has ended."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r} (known: {', '.join(ACTIONS)})")
    c = m.calls.c
    row = conn.execute(sa.select(c.ended_at, c.end_reason).where(c.call_id == call_id)).first()
    if row is None:
        raise LookupError(f"no call {call_id!r}")
    if row.ended_at is not None:
        raise LookupError(f"call {call_id!r} is not live (ended: {row.end_reason or 'unknown reason'})")
    return int(conn.execute(
        sa.insert(m.commands)
        .values(call_id=call_id, action=action, args=args, issued_by=issued_by, issued_at=sa.func.now())
        .returning(m.commands.c.id)).scalar_one())


def take(conn: Connection, node: str, epoch: int, limit: int = 50, *,
         retake_after: float = RETAKE_AFTER) -> list[dict[str, Any]]:
    """Mark taken by (node, epoch) and return, in id order, the commands not done yet of the
    live calls (node, epoch) owns: those not taken, and those taken more than ``retake_after``
    seconds ago (by anyone, this node included) and still not done."""
    k, c = m.commands.c, m.calls.c
    now = sa.func.now()
    wanted = (
        sa.select(k.id)
        .join(m.calls, c.call_id == k.call_id)
        .where(k.done_at.is_(None), c.owner_node == node, c.owner_epoch == epoch, c.ended_at.is_(None),
               sa.or_(k.taken_at.is_(None), k.taken_at < now - timedelta(seconds=retake_after)))
        .order_by(k.id)
        .limit(limit)
        .with_for_update(of=m.commands, skip_locked=True)
        .scalar_subquery())
    rows = conn.execute(
        sa.update(m.commands)
        .where(k.id.in_(wanted))
        .values(taken_by=node, taken_epoch=epoch, taken_at=now)
        .returning(*m.commands.c))
    return sorted((dict(r._mapping) for r in rows), key=lambda r: r["id"])


def give_back(conn: Connection, command_id: int, node: str, epoch: int) -> bool:
    """Untake a command (node, epoch) took but could not run yet (its call still being taken
    over): the next heartbeat takes it again."""
    k = m.commands.c
    done = conn.execute(
        sa.update(m.commands)
        .where(k.id == command_id, k.taken_by == node, k.taken_epoch == epoch, k.done_at.is_(None))
        .values(taken_by=None, taken_epoch=None, taken_at=None))
    return done.rowcount == 1


def finish(conn: Connection, command_id: int, ok: bool, result: str) -> bool:
    """Write a command's outcome; False when it was done already (by an earlier taker)."""
    k = m.commands.c
    done = conn.execute(
        sa.update(m.commands)
        .where(k.id == command_id, k.done_at.is_(None))
        .values(done_at=sa.func.now(), ok=bool(ok), result=result))
    return done.rowcount == 1


def get(conn: Connection, command_id: int) -> dict[str, Any] | None:
    row = conn.execute(sa.select(m.commands).where(m.commands.c.id == command_id)).first()
    return None if row is None else dict(row._mapping)
