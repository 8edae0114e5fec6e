"""The call store: a write-behind writer thread in front of SQLAlchemy (DESIGN "State and
persistence", STYLE habit 9: the database stays off the reactor thread).

``CallStore`` is the contract the controller uses; ``SqlStore`` is the real one (PostgreSQL or
SQLite), ``MemoryStore`` and ``NullStore`` (``ng911.store.memory``) its twins.

How a write travels::

    reactor thread                        writer thread                       database
    store.event(...) ── append ──▶ [ deque ] ── up to batch_size ops ──▶ one transaction
      returns at once  (coalesced,  (Condition)  or after `linger` s          (Core, executemany)
                        shed when                 │ OperationalError / disconnect
                        backlogged)               └─ retry the same ops, backoff 0.1 s → 2 s, forever

- **Order.** One thread applies the ops in the order they were made, a batch by kind (rows
  first, then updates, legs, events ...), so the order per call (and overall) of each kind is
  preserved and the committed result is what applying them one by one would give.
- **Storable values.** Every string going to a text or JSON column is made storable first
  (``storable``): PostgreSQL text and JSONB cannot hold NUL, so ``"\\x00"`` becomes
  ``NUL_REPLACEMENT`` (U+2400 SYMBOL FOR NULL, "␀": visible in ``psql``, deterministic, and
  distinct from U+FFFD); a lone surrogate (undecodable bytes kept by ``surrogateescape``)
  becomes U+FFFD; a non-finite float inside JSON becomes its text (``"nan"``, ``"inf"``).
  The in-memory twin applies the same function, so the contract suite sees the same rows.
- **Nothing an emergency call needs is dropped while the process lives.** A connection failure
  rolls the batch back and retries it until the database returns. An op the database rejects
  for what it *is* (a permanent error: integrity, data, a bug) costs that op only: the batch is
  replayed one op per transaction, the bad op is retried once in a *degraded* form (a call row
  or an event without its JSON detail, marked ``{"unstorable": ...}``) and otherwise dropped;
  either way it is logged with its call id and counted in ``write_errors[(kind, outcome)]``
  (``ng911_store_write_errors_total``). A call whose row could not be written at all is
  remembered as *unstored*: its later writes match no row, and that is **not** an ownership
  loss (no ``on_fenced``): the call carries on, only its record is missing (and logged).
- **Bounded backlog** (DESIGN: "Memory stays bounded"). The queue coalesces as it goes: a
  call's queued updates merge into one (never into its row: an update the database refuses
  must not cost the call its row), a leg's queued saves keep only the last. Past ``high_water`` queued ops the store is
  *backlogged*: an alarm (``backlogged``, a warning log; cleared below ``low_water``), the
  controller refuses new non-emergency calls (``OverloadGuard``), new events of
  non-emergency calls (kind ``other``/``test``) are shed, and new events of emergency calls
  keep their kind and time but lose their detail (``data`` = ``SHED_DATA``). Past
  ``max_queue`` every write of a non-emergency call is shed (its call becomes *unstored*), and
  so are answer-point health reports. An emergency call's record -- its row, its legs, the
  existence, kind and order of its events -- is never shed: past ``max_queue`` it alone still
  queues (an error log says so). Sheds are counted in ``shed[what]``
  (``ng911_store_shed_total``), merges in ``coalesced``.
- **Fencing.** Every write of a call is conditional on its owner ``(node, epoch)``: an UPDATE
  ``WHERE call_id AND owner_node AND owner_epoch``; legs, events and the abandoned-call row are
  written only for the calls whose row matches, checked in the same transaction under
  ``SELECT ... FOR SHARE`` (so a takeover's UPDATE of the owner waits for our commit). A write
  that matches no row is not retried; ``on_fenced(call_id)`` is called once per call -- unless
  the call is *unstored* (above): ownership is lost only when a row exists and is not ours, or
  was never ours to write.
- **Lazy registration** (a node starts while its database is down). Built with ``node=``, the
  writer itself registers the node (``register_node``: a new epoch) before it writes anything,
  retrying until the database answers, after checking the schema (``check_schema``) when asked
  to. Until then writes carry the placeholder owner ``(node, PENDING_EPOCH)``; the writer
  resolves it to ``(node, epoch)`` as it writes them (the ``call_created`` row's owner_epoch
  too), so every write of this node is fenced by the epoch it registered, whenever that was.
  ``on_registered(epoch)`` then tells the caller, which switches to the real owner; ``up`` says
  whether the last database round trip succeeded.
- **At least once.** If the connection drops *during* COMMIT the outcome is unknown and the batch
  is replayed: every write is idempotent (upserts, ``ON CONFLICT DO NOTHING``) except the two
  append-only logs (``call_events``, ``ap_health_events``), which may then hold a duplicate.

Callbacks (``on_batch``, ``on_fenced``, ``on_registered``) run on the writer thread; the
service marshals them with ``reactor.callFromThread``. Reads are blocking and meant for the CLI
and tests.
"""
from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, runtime_checkable

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from ng911.store import models as m
from ng911.store.db import SchemaNotCurrent, engine_for

log = logging.getLogger("ng911.store")

Owner = tuple[str, int]

CALL_KINDS = m.CALL_KINDS
LEG_ROLES = m.LEG_ROLES
#: what ``call_created`` takes; missing optional keys default to None ([] / {} for the JSON ones)
CALL_FIELDS = (
    "call_id", "sip_call_id", "nena_call_id", "nena_incident_id", "kind", "state", "caller",
    "caller_display", "request_uri", "queue", "location", "additional_data", "headers",
    "created_at", "owner_node", "owner_epoch", "upstream_invite", "upstream_flow",
)
#: what ``call_updated`` may change
UPDATABLE_FIELDS = frozenset(
    {"state", "queue", "answer_point", "answered_at", "ended_at", "outcome", "end_reason",
     "location", "updated_at", "move"}
)
#: the epoch of writes made before the node is registered (resolved by the writer)
PENDING_EPOCH = 0
#: default backlog limits (ops queued): alarm + shedding of detail, and the hard limit
HIGH_WATER = 10_000
MAX_QUEUE = 50_000
#: what a shed event's ``data`` becomes
SHED_DATA: dict[str, Any] = {"shed": True}
#: calls whose kind may be shed under backlog (never ``emergency``)
SHEDDABLE_KINDS = frozenset({"other", "test"})
#: what a NUL character is stored as (PostgreSQL text/JSONB cannot hold U+0000)
NUL_REPLACEMENT = "\u2400"
QUEUE_WARN_DEPTH = HIGH_WATER  # kept for callers of the old name

_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(s: str) -> str:
    """``s`` as PostgreSQL can store it: NUL → U+2400, lone surrogates → U+FFFD."""
    if "\x00" in s:
        s = s.replace("\x00", NUL_REPLACEMENT)
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            s = _SURROGATE.sub("\ufffd", s)
    return s


def storable(value: Any) -> Any:
    """A JSON-able value with every string (keys too) made storable and non-finite floats
    made text. Deterministic: the same input always gives the same stored value."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(k) if isinstance(k, str) else k: storable(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def storable_row(values: Mapping[str, Any]) -> dict[str, Any]:
    """A row's values made storable; top-level numbers (times, epochs) and bytes as they are."""
    return {k: v if isinstance(v, (int, float, bytes)) or v is None else storable(v)
            for k, v in values.items()}



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
    return storable_row(row)


def check_update(fields: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - UPDATABLE_FIELDS
    if unknown:
        raise ValueError(f"call_updated: cannot set {sorted(unknown)}")
    values = storable_row(fields)
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


class _RecentSet:
    """A set that forgets its oldest members past ``limit`` (call ids the writer remembers
    about calls long gone must not grow without end)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._d: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> None:
        self._d[key] = None
        self._d.move_to_end(key)
        if len(self._d) > self.limit:
            self._d.popitem(last=False)

    def discard(self, key: str) -> None:
        self._d.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._d

    def __len__(self) -> int:
        return len(self._d)


class SqlStore:
    """Write-behind store on PostgreSQL or SQLite (``url``) or a given ``engine``.

    ``batch_size`` ops at most per transaction; the writer waits up to ``linger`` seconds for a
    batch to fill once the first op arrived. Backoff after a failed batch starts at
    ``retry_initial`` s and doubles up to ``retry_max`` s. ``high_water`` / ``low_water`` /
    ``max_queue``: the backlog limits (module docstring). ``node``: register lazily, from the
    writer thread (module docstring); ``check_schema``: before that, check that the schema is
    at head (``SchemaNotCurrent`` holds the writes until it is).
    """

    def __init__(self, url: str | None = None, *, engine: Engine | None = None,
                 batch_size: int = 500, linger: float = 0.002,
                 retry_initial: float = 0.1, retry_max: float = 2.0,
                 high_water: int = HIGH_WATER, low_water: int | None = None,
                 max_queue: int = MAX_QUEUE, node: str | None = None,
                 check_schema: Callable[[Connection], None] | None = None) -> None:
        if (url is None) == (engine is None):
            raise TypeError("SqlStore needs exactly one of url or engine")
        if not 0 < high_water <= max_queue:
            raise ValueError("SqlStore needs 0 < high_water <= max_queue")
        self._own_engine = engine is None
        self.engine: Engine = engine if engine is not None else engine_for(url)  # type: ignore[arg-type]
        self.batch_size = batch_size
        self.linger = linger
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.high_water = high_water
        self.low_water = high_water // 2 if low_water is None else low_water
        self.max_queue = max_queue
        self.node = node
        self.check_schema = check_schema
        self.on_batch: Callable[[float, int], None] | None = None
        self.on_fenced: Callable[[str], None] | None = None
        self.on_registered: Callable[[int], None] | None = None
        #: called after a commit with the ids of the calls whose row it created (from then on
        #: another node could claim them)
        self.on_stored: Callable[[list[str]], None] | None = None
        #: the epoch this store registered (lazy registration), None until then
        self.epoch: int | None = None
        #: the last database round trip succeeded (False until a lazy registration succeeds)
        self.up = node is None
        #: past ``high_water`` until back under ``low_water`` (the backlog alarm)
        self.backlogged = False
        #: ops the database refused for what they are: (op kind, "degraded" | "dropped") -> n
        self.write_errors: dict[tuple[str, str], int] = {}
        #: ops or details shed under backlog: what -> n (event_detail, event, call, update, leg,
        #: abandoned, health)
        self.shed: dict[str, int] = {}
        #: writes merged into one already queued
        self.coalesced = 0
        #: batches that failed on a connection error and were retried
        self.retries = 0
        self._queue: deque[_Op] = deque()
        self._cond = threading.Condition()
        self._registered = threading.Event()
        self._inflight = 0
        self._stopping = False
        self._abort = False
        self._over_limit = False
        self._fenced = _RecentSet()
        self._unstored = _RecentSet()  # calls whose row could not be written (or was shed)
        self._sheddable = _RecentSet()  # live non-emergency calls
        # coalescing: the still-queued op a new write of the same thing merges into
        self._row_ops: dict[str, _Op] = {}
        self._update_ops: dict[tuple[str, Owner], _Op] = {}
        self._leg_ops: dict[tuple[str, str, Owner], _Op] = {}
        self._thread: threading.Thread | None = None
        self._created_now: list[str] = []  # writer thread: rows created in this transaction
        self._schema_complained = False
        pg = self.engine.dialect.name == "postgresql"
        self._insert = postgresql.insert if pg else sqlite.insert

    @property
    def dropped(self) -> int:
        """Ops lost to a permanent database error (the sum of the ``dropped`` write errors)."""
        return sum(n for (_, outcome), n in self.write_errors.items() if outcome == "dropped")

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

    def wait_registered(self, timeout: float) -> int | None:
        """Block up to ``timeout`` s for the lazy registration; the epoch, or None."""
        self._registered.wait(timeout)
        return self.epoch

    @property
    def queue_depth(self) -> int:
        """Writes accepted and not yet committed (queued + in the batch being written)."""
        return len(self._queue) + self._inflight

    # start-up ----------------------------------------------------------------------------

    def register_node(self, node: str) -> int:
        """Blocking: insert this node or bump its epoch; returns the new epoch."""
        with self.engine.begin() as conn:
            return self._register(conn, node)

    def _register(self, conn: Connection, node: str) -> int:
        now = time.time()
        t = m.nodes
        stmt = self._insert(t).values(name=node, epoch=1, started_at=now, heartbeat_at=now,
                                      lease_expires_at=None)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.name],
            set_={"epoch": t.c.epoch + 1, "started_at": stmt.excluded.started_at,
                  "heartbeat_at": stmt.excluded.heartbeat_at, "lease_expires_at": None},
        ).returning(t.c.epoch)
        return int(conn.execute(stmt).scalar_one())

    # writes (any thread, never block) ------------------------------------------------------

    def call_created(self, rec: Mapping[str, Any]) -> None:
        row = call_row(rec)
        check_json(row["location"], row["additional_data"], row["headers"])
        self._put(_Op("created", row["call_id"], None, row))

    def call_updated(self, call_id: str, owner: Owner, **fields: Any) -> None:
        values = check_update(fields)
        check_json(values.get("location"))
        self._put(_Op("updated", storable_text(call_id), owner_of(owner), values))

    def leg_saved(self, call_id: str, owner: Owner, role: str, dialog: dict[str, Any] | None,
                  local_sdp: bytes | None, remote_sdp: bytes | None,
                  answer_point: str | None) -> None:
        check_role(role)
        check_json(dialog)
        call_id = storable_text(call_id)
        self._put(_Op("leg", call_id, owner_of(owner), {
            "call_id": call_id, "role": role, "dialog": storable(dialog),
            "local_sdp": None if local_sdp is None else bytes(local_sdp),
            "remote_sdp": None if remote_sdp is None else bytes(remote_sdp),
            "answer_point": None if answer_point is None else storable_text(answer_point),
            "updated_at": time.time()}))

    def event(self, call_id: str, owner: Owner, kind: str, at: float,
              data: dict[str, Any]) -> None:
        check_json(data)
        call_id = storable_text(call_id)
        self._put(_Op("event", call_id, owner_of(owner),
                      {"call_id": call_id, "at": at, "kind": storable_text(kind),
                       "data": storable(data)}))

    def ap_health(self, name: str, uri: str, up: bool, at: float) -> None:
        self._put(_Op("health", None, None, {"name": storable_text(name),
                                             "uri": storable_text(uri), "up": bool(up),
                                             "at": at}))

    def abandoned(self, call_id: str, owner: Owner, caller: str,
                  location: dict[str, Any] | None, at: float) -> None:
        check_json(location)
        call_id = storable_text(call_id)
        self._put(_Op("abandoned", call_id, owner_of(owner), {
            "call_id": call_id, "caller": storable_text(caller), "location": storable(location),
            "at": at, "called_back_at": None}))

    def _put(self, op: _Op) -> None:
        with self._cond:
            self._enqueue(op)
            if op.kind == "updated" and op.values.get("ended_at") is not None:
                self._sheddable.discard(op.call_id)  # type: ignore[arg-type]

    def _enqueue(self, op: _Op) -> None:
        """Under the lock: coalesce, shed or queue ``op``."""
        if self._coalesce(op):
            self.coalesced += 1
            return
        depth = len(self._queue) + self._inflight
        if (self.backlogged or depth >= self.high_water) and not self._shed_op(op, depth):
            return
        self._queue.append(op)
        self._index(op)
        if depth + 1 >= self.high_water and not self.backlogged:
            self.backlogged = True
            log.warning(
                "store backlog is %d writes (high-water %d): the database is slow or down;"
                " coalescing, shedding event details and non-emergency events, refusing"
                " new non-emergency calls", depth + 1, self.high_water)
        self._cond.notify_all()

    # coalescing and shedding (under the lock) ----------------------------------------------

    def _coalesce(self, op: _Op) -> bool:
        """Merge ``op`` into a still-queued op it supersedes; True when merged."""
        if op.kind == "updated":
            assert op.call_id is not None and op.owner is not None
            # (never merged into a queued call_created row: an update the database refuses
            # must not cost the call its row)
            queued = self._update_ops.get((op.call_id, op.owner))
            if queued is not None:
                queued.values.update(op.values)
                return True
        elif op.kind == "leg":
            assert op.call_id is not None and op.owner is not None
            queued = self._leg_ops.get((op.call_id, op.values["role"], op.owner))
            if queued is not None:
                queued.values = op.values  # a leg row is replaced whole: the last save wins
                return True
        elif op.kind == "created":
            if op.values["kind"] in SHEDDABLE_KINDS:
                self._sheddable.add(op.values["call_id"])
        return False

    def _index(self, op: _Op) -> None:
        if op.kind == "created":
            self._row_ops[op.values["call_id"]] = op
        elif op.kind == "updated":
            self._update_ops[(op.call_id, op.owner)] = op  # type: ignore[index]
        elif op.kind == "leg":
            self._leg_ops[(op.call_id, op.values["role"], op.owner)] = op  # type: ignore[index]

    def _unindex(self, op: _Op) -> None:
        if op.kind == "created":
            key: Any = op.values["call_id"]
            index: dict[Any, _Op] = self._row_ops
        elif op.kind == "updated":
            key, index = (op.call_id, op.owner), self._update_ops
        elif op.kind == "leg":
            key, index = (op.call_id, op.values["role"], op.owner), self._leg_ops
        else:
            return
        if index.get(key) is op:
            del index[key]

    def _shed_op(self, op: _Op, depth: int) -> bool:
        """Backlogged: shed what ``op`` carries that no takeover or audit needs. True when
        (what is left of) ``op`` must still be queued."""
        call_id = op.call_id if op.kind != "created" else op.values["call_id"]
        sheddable = op.kind == "health" or (call_id is not None and (
            call_id in self._sheddable or call_id in self._unstored))
        if depth >= self.max_queue:
            if not self._over_limit:
                self._over_limit = True
                log.error("store backlog reached its limit of %d writes: shedding every write"
                          " but emergency call records", self.max_queue)
            if sheddable:
                self._count_shed(op.kind if op.kind != "created" else "call")
                if op.kind == "created" and call_id is not None:
                    self._unstored.add(call_id)
                return False
        if op.kind == "event":
            if sheddable:
                self._count_shed("event")
                return False
            if op.values["data"]:
                op.values["data"] = SHED_DATA
                self._count_shed("event_detail")
        return True

    def _count_shed(self, what: str) -> None:
        self.shed[what] = self.shed.get(what, 0) + 1

    def _count_error(self, kind: str, outcome: str) -> None:
        with self._cond:
            self.write_errors[(kind, outcome)] = self.write_errors.get((kind, outcome), 0) + 1

    def _check_backlog(self) -> None:
        """Under the lock, after a batch: clear the alarm once under ``low_water``."""
        depth = len(self._queue) + self._inflight
        if self._over_limit and depth < self.max_queue:
            self._over_limit = False
        if self.backlogged and depth <= self.low_water:
            self.backlogged = False
            log.warning("store backlog down to %d writes (low-water %d): alarm cleared;"
                        " shed so far: %s", depth, self.low_water,
                        ", ".join(f"{k}={v}" for k, v in sorted(self.shed.items())) or "nothing")

    # the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        pending: list[_Op] = []
        delay = self.retry_initial
        while True:
            with self._cond:
                if self._abort:
                    return
                if self.epoch is None and self.node is not None:
                    if self._stopping and not self._queue:
                        return  # nothing to write: no need to register
                elif not pending:
                    self._inflight = 0
                    self._check_backlog()
                    self._cond.notify_all()  # wake flush()
                    if not self._take(pending):
                        return
                    if self._abort:
                        return
            started = time.perf_counter()
            count = len(pending)
            try:
                if self.epoch is None and self.node is not None:
                    self._prepare(self.node)
                    delay = self.retry_initial
                    continue
                self._write(pending)
            except Exception as e:
                self.retries += 1
                self.up = False
                if isinstance(e, SchemaNotCurrent):
                    if not self._schema_complained:
                        self._schema_complained = True
                        log.error("store: %s; holding %d writes until it is migrated "
                                  "(ng911 migrate)", e, self.queue_depth)
                    delay = self.retry_max
                elif pending:
                    log.warning("store: batch of %d writes failed (%s); retrying in %.1f s",
                                len(pending), _brief(e), delay,
                                exc_info=not _retryable(e))
                else:
                    log.warning("store: cannot register node %s (%s); %d writes queued, "
                                "retrying in %.1f s", self.node, _brief(e), self.queue_depth,
                                delay, exc_info=not _retryable(e))
                if not self._sleep(delay):
                    return
                delay = min(delay * 2, self.retry_max)
                continue
            if not self.up:
                self.up = True
                log.warning("store: database reachable again; %d writes to go", self.queue_depth)
            delay = self.retry_initial
            elapsed = time.perf_counter() - started
            pending.clear()
            self._callback(self.on_batch, elapsed, count)

    def _sleep(self, delay: float) -> bool:
        """Back off ``delay`` s (new writes do not cut it short); False once aborted."""
        deadline = time.monotonic() + delay
        with self._cond:
            while not self._abort:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                self._cond.wait(remaining)
        return False

    def _prepare(self, node: str) -> None:
        """Writer thread, before the first write of a lazily registered node: check the schema
        (when asked), register the node, resolve the placeholder epoch from now on."""
        with self.engine.begin() as conn:
            if self.check_schema is not None:
                self.check_schema(conn)
            epoch = self._register(conn, node)
        self.epoch = epoch
        self.up = True
        self._registered.set()
        log.info("store: node %s registered with epoch %d; %d writes queued", node, epoch,
                 self.queue_depth)
        self._callback(self.on_registered, epoch)

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
        for _ in range(n):
            op = self._queue.popleft()
            self._unindex(op)
            pending.append(op)
        self._inflight = n
        return True

    def _resolve(self, pending: list[_Op]) -> None:
        """Give the writes made before registration this node's epoch."""
        node, epoch = self.node, self.epoch
        if node is None or epoch is None:
            return
        placeholder = (node, PENDING_EPOCH)
        for op in pending:
            if op.owner == placeholder:
                op.owner = (node, epoch)
            elif (op.kind == "created" and op.values["owner_node"] == node
                  and op.values["owner_epoch"] == PENDING_EPOCH):
                op.values["owner_epoch"] = epoch

    def _write(self, pending: list[_Op]) -> None:
        """Commit ``pending`` in one transaction. A retryable error propagates with
        ``pending`` holding the ops still to write; any other error isolates the bad op."""
        self._resolve(pending)
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
                try:
                    self._rejected(op, e)
                except Exception:
                    del pending[:i]
                    raise
            else:
                self._report_fenced(fenced)

    def _rejected(self, op: _Op, e: BaseException) -> None:
        """A permanent error on ``op`` alone: try it once without its detail (an update: field
        by field), else drop it."""
        if op.kind == "updated" and len(op.values) > 2:
            stamp = {k: v for k, v in op.values.items() if k == "updated_at"}
            kept = 0
            for key, value in op.values.items():
                if key == "updated_at":
                    continue
                try:
                    self._report_fenced(self._apply([_Op(op.kind, op.call_id, op.owner,
                                                         {key: value, **stamp})]))
                    kept += 1
                except Exception as e2:
                    if _retryable(e2):
                        raise
            if kept:
                self._count_error(op.kind, "degraded")
                log.error("store: update of call %s stored in part (%d of %d fields): %s",
                          op.call_id, kept, len(op.values) - len(stamp), _brief(e))
                return
        reduced = _degraded(op, _brief(e))
        if reduced is not None:
            try:
                fenced = self._apply([reduced])
            except Exception as e2:
                if _retryable(e2):
                    raise
            else:
                self._count_error(op.kind, "degraded")
                log.error("store: %s write for call %s stored without its detail: %s",
                          op.kind, op.call_id, _brief(e), exc_info=not isinstance(e, exc.DBAPIError))
                self._report_fenced(fenced)
                return
        self._count_error(op.kind, "dropped")
        if op.kind == "created" and op.call_id is not None:
            self._unstored.add(op.call_id)
        log.error("store: dropped %s write for call %s: %s", op.kind, op.call_id,
                  _brief(e), exc_info=not isinstance(e, exc.DBAPIError))

    def _apply(self, ops: list[_Op]) -> list[str]:
        fenced: list[str] = []
        self._created_now = []
        with self.engine.begin() as conn:
            for kind, run in _by_kind(ops):
                fenced.extend(self._APPLY[kind](self, conn, run))
        if self._created_now:
            created, self._created_now = self._created_now, []
            self._callback(self.on_stored, created)
        return fenced

    def _report_fenced(self, call_ids: Iterable[str]) -> None:
        for call_id in call_ids:
            if call_id in self._fenced:
                continue
            self._fenced.add(call_id)
            if call_id in self._unstored:
                log.error("store: call %s has no row (its creation was refused or shed): its "
                          "later writes are lost; the call itself carries on", call_id)
                continue
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
        # Creation is fenced too: a node's rows are written only while (node, epoch) is its
        # registered row, checked under a share lock in this transaction (a process whose name
        # was registered again since, or a zombie of an earlier life, writes nothing). A name
        # with no nodes row at all (a store used without registering) is not fenced.
        n = m.nodes.c
        names = sorted({op.values["owner_node"] for op in run})
        epochs = dict(conn.execute(sa.select(n.name, n.epoch).where(n.name.in_(names))
                                   .with_for_update(read=True)).all())
        rows, fenced = [], []
        for op in run:
            v = op.values
            current = epochs.get(v["owner_node"])
            if current is None or int(current) == int(v["owner_epoch"]):
                rows.append(v)
            else:
                fenced.append(v["call_id"])
        if rows:
            stmt = self._insert(m.calls).on_conflict_do_nothing(index_elements=["call_id"])
            conn.execute(stmt, rows)
            self._created_now.extend(v["call_id"] for v in rows)
        return fenced

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


def _escaped(value: Any) -> Any:
    """Text reduced to printable ASCII (backslash escapes): what any text column takes."""
    return value.encode("unicode_escape").decode("ascii") if isinstance(value, str) else value


def _degraded(op: _Op, reason: str) -> _Op | None:
    """``op`` without what may have made the database refuse it (its JSON detail, non-ASCII
    text), keeping what a takeover or an audit needs (the row, the event's kind and time); None
    when nothing useful is left."""
    note = {"unstorable": storable_text(reason)}
    v = dict(op.values)
    if op.kind == "created":
        for key in ("sip_call_id", "nena_call_id", "nena_incident_id", "state", "caller",
                    "request_uri", "queue", "answer_point", "outcome", "end_reason"):
            v[key] = _escaped(v.get(key))
        v.update(caller_display=None, location=None, additional_data=[], headers=note)
    elif op.kind == "updated":
        v.pop("location", None)
        v = {k: _escaped(x) for k, x in v.items()}
        if set(v) <= {"updated_at"}:
            return None
    elif op.kind == "event":
        v.update(kind=_escaped(v["kind"]), data=note)
    elif op.kind == "leg":
        v.update(dialog=note, answer_point=_escaped(v.get("answer_point")))
    elif op.kind == "abandoned":
        v.update(caller=_escaped(v["caller"]), location=None)
    else:
        return None
    return _Op(op.kind, op.call_id, op.owner, v)
