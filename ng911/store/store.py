"""The call store: a write-behind writer thread in front of SQLAlchemy (DESIGN "State and
persistence", STYLE habit 9: the database stays off the reactor thread).

``CallStore`` is the contract the controller uses; ``SqlStore`` is the real one (PostgreSQL or
SQLite), ``MemoryStore`` and ``NullStore`` (``ng911.store.memory``) its twins.

How a write travels::

    reactor thread                        writer thread                       database
    store.event(...) ── append ──▶ [ deque ] ── up to batch_size ops ──▶ one transaction
      returns at once      (Condition)        or after `linger` s             (Core, executemany)
                                                  │ OperationalError / disconnect
                                                  └─ retry the same ops, backoff 0.1 s → 2 s, forever

- **Order.** One thread applies the ops in the order they were made; within a batch, runs of
  consecutive ops of one type go to the database as one ``executemany`` where the type allows,
  so the order per call (and overall) is preserved.
- **Nothing dropped while the process lives.** A connection failure rolls the batch back and
  retries it until the database returns; meanwhile the queue grows (unbounded; its depth is the
  ``queue_depth`` metric, with a warning past ``QUEUE_WARN_DEPTH``). Only an op the database
  rejects for what it *is* (an integrity or data error -- a bug, never an outage) is dropped:
  the batch is then replayed one op per transaction so that just the bad op is lost, and it is
  logged and counted in ``dropped``.
- **Fencing.** Every write of a call is conditional on its owner ``(node, epoch)``: an UPDATE
  ``WHERE call_id AND owner_node AND owner_epoch``; legs, events and the abandoned-call row are
  written only for the calls whose row matches, checked in the same transaction under
  ``SELECT ... FOR SHARE`` (so a takeover's UPDATE of the owner waits for our commit). A write
  that matches no row is not retried; ``on_fenced(call_id)`` is called once per call.
- **At least once.** If the connection drops *during* COMMIT the outcome is unknown and the batch
  is replayed: every write is idempotent (upserts, ``ON CONFLICT DO NOTHING``) except the two
  append-only logs (``call_events``, ``ap_health_events``), which may then hold a duplicate.

Callbacks (``on_batch``, ``on_fenced``) run on the writer thread; the controller marshals them
with ``reactor.callFromThread``. Reads are blocking and meant for the CLI and tests.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, runtime_checkable

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from ng911.store import models as m
from ng911.store.db import engine_for

log = logging.getLogger("ng911.store")

Owner = tuple[str, int]

CALL_KINDS = m.CALL_KINDS
LEG_ROLES = m.LEG_ROLES
#: what ``call_created`` takes; missing optional keys default to None ([] / {} for the JSON ones)
CALL_FIELDS = (
    "call_id", "sip_call_id", "nena_call_id", "nena_incident_id", "kind", "state", "caller",
    "caller_display", "request_uri", "queue", "location", "additional_data", "headers",
    "created_at", "owner_node", "owner_epoch",
)
#: what ``call_updated`` may change
UPDATABLE_FIELDS = frozenset(
    {"state", "queue", "answer_point", "answered_at", "ended_at", "outcome", "end_reason",
     "location", "updated_at"}
)
QUEUE_WARN_DEPTH = 10_000


@runtime_checkable
class CallStore(Protocol):
    """The write-behind store. Every write method returns at once and never blocks the
    reactor; ``register_node`` and the reads block (start-up, CLI, tests)."""

    #: called after each committed batch with (seconds in the transaction, ops written)
    on_batch: Callable[[float, int], None] | None
    #: called once per call whose conditional write matched no row (ownership lost)
    on_fenced: Callable[[str], None] | None

    def start(self) -> None: ...
    def stop(self, timeout: float = 5.0) -> None: ...
    def flush(self, timeout: float = 5.0) -> bool: ...
    def register_node(self, node: str) -> int: ...

    def call_created(self, rec: Mapping[str, Any]) -> None: ...
    def call_updated(self, call_id: str, owner: Owner, **fields: Any) -> None: ...
    def leg_saved(self, call_id: str, owner: Owner, role: str, dialog: dict[str, Any] | None,
                  local_sdp: bytes | None, remote_sdp: bytes | None,
                  answer_point: str | None) -> None: ...
    def event(self, call_id: str, owner: Owner, kind: str, at: float,
              data: dict[str, Any]) -> None: ...
    def ap_health(self, name: str, uri: str, up: bool, at: float) -> None: ...
    def abandoned(self, call_id: str, owner: Owner, caller: str,
                  location: dict[str, Any] | None, at: float) -> None: ...

    @property
    def queue_depth(self) -> int: ...

    def live_calls(self) -> list[dict[str, Any]]: ...
    def call(self, call_id: str) -> dict[str, Any] | None: ...
    def events(self, call_id: str) -> list[dict[str, Any]]: ...
    def answer_points(self) -> list[dict[str, Any]]: ...
    def ap_health_events(self, name: str | None = None) -> list[dict[str, Any]]: ...
    def abandoned_calls(self) -> list[dict[str, Any]]: ...


# --- argument checks shared by every implementation -----------------------------------------


def call_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A full ``calls`` row from a ``call_created`` record (raises ValueError on a bad one)."""
    unknown = set(rec) - set(CALL_FIELDS)
    if unknown:
        raise ValueError(f"call_created: unknown keys {sorted(unknown)}")
    missing = {"call_id", "sip_call_id", "kind", "state", "caller", "request_uri",
               "created_at", "owner_node", "owner_epoch"} - set(rec)
    if missing:
        raise ValueError(f"call_created: missing keys {sorted(missing)}")
    if rec["kind"] not in CALL_KINDS:
        raise ValueError(f"call_created: kind must be one of {CALL_KINDS}, not {rec['kind']!r}")
    row = {k: rec.get(k) for k in CALL_FIELDS}
    if row["additional_data"] is None:
        row["additional_data"] = []
    if row["headers"] is None:
        row["headers"] = {}
    row.update(answer_point=None, answered_at=None, ended_at=None, outcome=None,
               end_reason=None, updated_at=rec["created_at"])
    return row


def check_update(fields: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - UPDATABLE_FIELDS
    if unknown:
        raise ValueError(f"call_updated: cannot set {sorted(unknown)}")
    values = dict(fields)
    values.setdefault("updated_at", time.time())
    return values


def check_role(role: str) -> None:
    if role not in LEG_ROLES:
        raise ValueError(f"leg_saved: role must be one of {LEG_ROLES}, not {role!r}")


def check_json(*values: Any) -> None:
    """Raise TypeError now, at the call site, for a value a JSON column could not store (the
    writer thread would otherwise have to drop the write later)."""
    for value in values:
        json.dumps(value)


def owner_of(owner: Owner) -> Owner:
    node, epoch = owner
    return str(node), int(epoch)


# --- the SQL store ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Op:
    kind: str  # created | updated | leg | event | health | abandoned
    call_id: str | None
    owner: Owner | None
    values: dict[str, Any] = field(default_factory=dict)


class SqlStore:
    """Write-behind store on PostgreSQL or SQLite (``url``) or a given ``engine``.

    ``batch_size`` ops at most per transaction; the writer waits up to ``linger`` seconds for a
    batch to fill once the first op arrived. Backoff after a failed batch starts at
    ``retry_initial`` s and doubles up to ``retry_max`` s.
    """

    def __init__(self, url: str | None = None, *, engine: Engine | None = None,
                 batch_size: int = 500, linger: float = 0.002,
                 retry_initial: float = 0.1, retry_max: float = 2.0) -> None:
        if (url is None) == (engine is None):
            raise TypeError("SqlStore needs exactly one of url or engine")
        self._own_engine = engine is None
        self.engine: Engine = engine if engine is not None else engine_for(url)  # type: ignore[arg-type]
        self.batch_size = batch_size
        self.linger = linger
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.on_batch: Callable[[float, int], None] | None = None
        self.on_fenced: Callable[[str], None] | None = None
        #: ops the database refused (integrity/data errors): logged and dropped
        self.dropped = 0
        #: batches that failed on a connection error and were retried
        self.retries = 0
        self._queue: deque[_Op] = deque()
        self._cond = threading.Condition()
        self._inflight = 0
        self._stopping = False
        self._abort = False
        self._warned = False
        self._fenced: set[str] = set()
        self._thread: threading.Thread | None = None
        pg = self.engine.dialect.name == "postgresql"
        self._insert = postgresql.insert if pg else sqlite.insert

    # lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("SqlStore already started")
        self._thread = threading.Thread(target=self._run, name="ng911-store-writer",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (for up to ``timeout`` s), then stop the writer thread."""
        thread = self._thread
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                with self._cond:
                    self._abort = True
                    self._cond.notify_all()
                thread.join(1.0)
            lost = self.queue_depth
            if lost:
                log.error("store stopped with %d writes not persisted (database unreachable)",
                          lost)
        if self._own_engine:
            self.engine.dispose()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every write made so far is committed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._cond.wait(remaining)
        return True

    @property
    def queue_depth(self) -> int:
        """Writes accepted and not yet committed (queued + in the batch being written)."""
        return len(self._queue) + self._inflight

    # start-up ----------------------------------------------------------------------------

    def register_node(self, node: str) -> int:
        """Blocking: insert this node or bump its epoch; returns the new epoch."""
        now = time.time()
        t = m.nodes
        stmt = self._insert(t).values(name=node, epoch=1, started_at=now, heartbeat_at=now,
                                      lease_expires_at=None)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.name],
            set_={"epoch": t.c.epoch + 1, "started_at": stmt.excluded.started_at,
                  "heartbeat_at": stmt.excluded.heartbeat_at, "lease_expires_at": None},
        ).returning(t.c.epoch)
        with self.engine.begin() as conn:
            return int(conn.execute(stmt).scalar_one())

    # writes (any thread, never block) ------------------------------------------------------

    def call_created(self, rec: Mapping[str, Any]) -> None:
        row = call_row(rec)
        check_json(row["location"], row["additional_data"], row["headers"])
        self._put(_Op("created", row["call_id"], None, row))

    def call_updated(self, call_id: str, owner: Owner, **fields: Any) -> None:
        values = check_update(fields)
        check_json(values.get("location"))
        self._put(_Op("updated", call_id, owner_of(owner), values))

    def leg_saved(self, call_id: str, owner: Owner, role: str, dialog: dict[str, Any] | None,
                  local_sdp: bytes | None, remote_sdp: bytes | None,
                  answer_point: str | None) -> None:
        check_role(role)
        check_json(dialog)
        self._put(_Op("leg", call_id, owner_of(owner), {
            "call_id": call_id, "role": role, "dialog": dialog,
            "local_sdp": None if local_sdp is None else bytes(local_sdp),
            "remote_sdp": None if remote_sdp is None else bytes(remote_sdp),
            "answer_point": answer_point, "updated_at": time.time()}))

    def event(self, call_id: str, owner: Owner, kind: str, at: float,
              data: dict[str, Any]) -> None:
        check_json(data)
        self._put(_Op("event", call_id, owner_of(owner),
                      {"call_id": call_id, "at": at, "kind": kind, "data": data}))

    def ap_health(self, name: str, uri: str, up: bool, at: float) -> None:
        self._put(_Op("health", None, None, {"name": name, "uri": uri, "up": bool(up), "at": at}))

    def abandoned(self, call_id: str, owner: Owner, caller: str,
                  location: dict[str, Any] | None, at: float) -> None:
        check_json(location)
        self._put(_Op("abandoned", call_id, owner_of(owner), {
            "call_id": call_id, "caller": caller, "location": location, "at": at,
            "called_back_at": None}))

    def _put(self, op: _Op) -> None:
        with self._cond:
            self._queue.append(op)
            depth = len(self._queue) + self._inflight
            if depth > QUEUE_WARN_DEPTH and not self._warned:
                self._warned = True
                log.warning("store write queue is %d deep: the database is slow or down", depth)
            self._cond.notify_all()

    # the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        pending: list[_Op] = []
        delay = self.retry_initial
        while True:
            with self._cond:
                if not pending:
                    self._inflight = 0
                    self._cond.notify_all()  # wake flush()
                    if not self._take(pending):
                        return
                if self._abort:
                    return
            started = time.perf_counter()
            count = len(pending)
            try:
                self._write(pending)
            except Exception as e:  # only retryable errors get here
                self.retries += 1
                log.warning("store: batch of %d writes failed (%s); retrying in %.1f s",
                            len(pending), _brief(e), delay)
                with self._cond:
                    if not self._abort:
                        self._cond.wait(delay)
                    if self._abort:
                        return
                delay = min(delay * 2, self.retry_max)
                continue
            delay = self.retry_initial
            elapsed = time.perf_counter() - started
            pending.clear()
            with self._cond:
                if self._warned and len(self._queue) < QUEUE_WARN_DEPTH // 2:
                    self._warned = False
                    log.warning("store write queue drained to %d", len(self._queue))
            self._callback(self.on_batch, elapsed, count)

    def _take(self, pending: list[_Op]) -> bool:
        """Under the lock: move the next batch into ``pending``; False when it is time to stop."""
        while not self._queue:
            if self._stopping or self._abort:
                return False
            self._cond.wait()
        if self.linger > 0 and len(self._queue) < self.batch_size and not self._stopping:
            deadline = time.monotonic() + self.linger
            while len(self._queue) < self.batch_size and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        n = min(self.batch_size, len(self._queue))
        pending.extend(self._queue.popleft() for _ in range(n))
        self._inflight = n
        return True

    def _write(self, pending: list[_Op]) -> None:
        """Commit ``pending`` in one transaction. A retryable error propagates with
        ``pending`` holding the ops still to write; any other error isolates the bad op."""
        try:
            fenced = self._apply(pending)
        except Exception as e:
            if _retryable(e):
                raise
            log.error("store: batch of %d writes rejected (%s); writing them one by one",
                      len(pending), _brief(e))
        else:
            self._report_fenced(fenced)
            return
        for i, op in enumerate(list(pending)):
            try:
                fenced = self._apply([op])
            except Exception as e:
                if _retryable(e):
                    del pending[:i]
                    raise
                self.dropped += 1
                log.error("store: dropped %s write for call %s: %s", op.kind, op.call_id,
                          _brief(e), exc_info=not isinstance(e, exc.DBAPIError))
            else:
                self._report_fenced(fenced)

    def _apply(self, ops: list[_Op]) -> list[str]:
        fenced: list[str] = []
        with self.engine.begin() as conn:
            for kind, run in _by_kind(ops):
                fenced.extend(self._APPLY[kind](self, conn, run))
        return fenced

    def _report_fenced(self, call_ids: Iterable[str]) -> None:
        for call_id in call_ids:
            if call_id in self._fenced:
                continue
            self._fenced.add(call_id)
            log.warning("store: call %s is no longer ours (fenced write); forgetting it",
                        call_id)
            self._callback(self.on_fenced, call_id)

    @staticmethod
    def _callback(fn: Callable[..., None] | None, *args: Any) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:
            log.exception("store: callback %r failed", fn)

    # one handler per op kind: (conn, run of consecutive ops) -> fenced call ids ------------

    def _apply_created(self, conn: Connection, run: list[_Op]) -> list[str]:
        stmt = self._insert(m.calls).on_conflict_do_nothing(index_elements=["call_id"])
        conn.execute(stmt, [op.values for op in run])
        return []

    def _apply_updated(self, conn: Connection, run: list[_Op]) -> list[str]:
        # One UPDATE per call and owner: its updates in this batch merged in order (a later
        # value of a field wins), as if they had been applied one by one.
        merged: dict[tuple[str, Any], dict[str, Any]] = {}
        for op in run:
            assert op.owner is not None
            merged.setdefault((op.call_id, op.owner), {}).update(op.values)
        fenced = []
        c = m.calls.c
        for (call_id, (node, epoch)), values in merged.items():
            result = conn.execute(
                sa.update(m.calls)
                .where(c.call_id == call_id, c.owner_node == node, c.owner_epoch == epoch)
                .values(values))
            if result.rowcount == 0:
                fenced.append(call_id)
        return fenced

    def _owned(self, conn: Connection, run: list[_Op]) -> tuple[list[_Op], list[str]]:
        """Split ``run`` into the ops whose call is owned by their owner, and the fenced call
        ids. The call rows stay share-locked (PostgreSQL) until the batch commits."""
        c = m.calls.c
        ids = sorted({op.call_id for op in run if op.call_id is not None})
        rows = conn.execute(
            sa.select(c.call_id, c.owner_node, c.owner_epoch)
            .where(c.call_id.in_(ids))
            .with_for_update(read=True))
        owners = {r.call_id: (r.owner_node, r.owner_epoch) for r in rows}
        owned, fenced = [], []
        for op in run:
            if owners.get(op.call_id) == op.owner:
                owned.append(op)
            else:
                fenced.append(op.call_id)
        return owned, fenced

    def _apply_leg(self, conn: Connection, run: list[_Op]) -> list[str]:
        owned, fenced = self._owned(conn, run)
        # a leg row is replaced whole: the last save of each (call, role) in the run wins
        last = {(op.call_id, op.values["role"]): op.values for op in owned}
        if last:
            stmt = self._insert(m.legs)
            stmt = stmt.on_conflict_do_update(
                index_elements=["call_id", "role"],
                set_={k: stmt.excluded[k] for k in
                      ("dialog", "local_sdp", "remote_sdp", "answer_point", "updated_at")})
            conn.execute(stmt, list(last.values()))
        return fenced

    def _apply_event(self, conn: Connection, run: list[_Op]) -> list[str]:
        owned, fenced = self._owned(conn, run)
        if owned:
            conn.execute(sa.insert(m.call_events), [op.values for op in owned])
        return fenced

    def _apply_abandoned(self, conn: Connection, run: list[_Op]) -> list[str]:
        owned, fenced = self._owned(conn, run)
        first: dict[str, dict[str, Any]] = {}
        for op in owned:
            first.setdefault(op.values["call_id"], op.values)
        if first:
            stmt = self._insert(m.abandoned_calls).on_conflict_do_nothing(
                index_elements=["call_id"])
            conn.execute(stmt, list(first.values()))
        return fenced

    def _apply_health(self, conn: Connection, run: list[_Op]) -> list[str]:
        t = m.answer_points
        for op in run:  # each report in turn: changed_at moves only on a transition
            v = op.values
            stmt = self._insert(t).values(name=v["name"], uri=v["uri"], up=v["up"],
                                          changed_at=v["at"])
            stmt = stmt.on_conflict_do_update(
                index_elements=["name"],
                set_={"uri": stmt.excluded.uri, "up": stmt.excluded.up,
                      "changed_at": sa.case((t.c.up != stmt.excluded.up,
                                             stmt.excluded.changed_at),
                                            else_=t.c.changed_at)})
            conn.execute(stmt)
        conn.execute(sa.insert(m.ap_health_events), [op.values for op in run])
        return []

    _APPLY: dict[str, Callable[[SqlStore, Connection, list[_Op]], list[str]]] = {
        "created": _apply_created,
        "updated": _apply_updated,
        "leg": _apply_leg,
        "event": _apply_event,
        "abandoned": _apply_abandoned,
        "health": _apply_health,
    }

    # reads (blocking) ----------------------------------------------------------------------

    def live_calls(self) -> list[dict[str, Any]]:
        c = m.calls.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(m.calls).where(c.ended_at.is_(None))
                                .order_by(c.created_at, c.call_id))
            return [dict(r._mapping) for r in rows]

    def call(self, call_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(m.calls).where(m.calls.c.call_id == call_id)).first()
            if row is None:
                return None
            legs = conn.execute(sa.select(m.legs).where(m.legs.c.call_id == call_id))
            out = dict(row._mapping)
            out["legs"] = {r.role: dict(r._mapping) for r in legs}
            return out

    def events(self, call_id: str) -> list[dict[str, Any]]:
        t = m.call_events
        return self._rows(sa.select(t).where(t.c.call_id == call_id).order_by(t.c.id))

    def answer_points(self) -> list[dict[str, Any]]:
        t = m.answer_points
        return self._rows(sa.select(t).order_by(t.c.name))

    def ap_health_events(self, name: str | None = None) -> list[dict[str, Any]]:
        t = m.ap_health_events
        q = sa.select(t).order_by(t.c.id)
        if name is not None:
            q = q.where(t.c.name == name)
        return self._rows(q)

    def abandoned_calls(self) -> list[dict[str, Any]]:
        t = m.abandoned_calls
        return self._rows(sa.select(t).order_by(t.c.at, t.c.call_id))

    def _rows(self, query: sa.Select[Any]) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]


# The order a batch is applied in, by kind. Within a kind the ops keep their order (so the
# event log keeps its order, and the last update or leg save of a call wins); across kinds,
# rows are created before anything refers to them. One transaction holds the whole batch, so
# the result is what applying the ops one by one would give — with a handful of statements
# per batch instead of one or two per op (measured: the writer fell behind at 50 calls/s
# when a call's interleaved updates and events each took their own statement).
KIND_ORDER = ("created", "updated", "leg", "event", "abandoned", "health")


def _by_kind(ops: list[_Op]) -> Iterator[tuple[str, list[_Op]]]:
    """The ops of each kind, in their order, kinds in `KIND_ORDER`."""
    groups: dict[str, list[_Op]] = {}
    for op in ops:
        groups.setdefault(op.kind, []).append(op)
    for kind in KIND_ORDER:
        if kind in groups:
            yield kind, groups[kind]


def _retryable(e: BaseException) -> bool:
    """A connection or server-availability problem: the same write may succeed later."""
    if isinstance(e, exc.DBAPIError):
        return e.connection_invalidated or isinstance(
            e, (exc.OperationalError, exc.InterfaceError))
    return isinstance(e, (exc.DisconnectionError, exc.TimeoutError))


def _brief(e: BaseException) -> str:
    if isinstance(e, exc.DBAPIError) and e.orig is not None:
        text = str(e.orig).strip().splitlines()
        return f"{type(e.orig).__name__}: {text[0] if text else ''}"
    return f"{type(e).__name__}: {e}"
