"""Answer point capacity counted cluster-wide: a seat is a PostgreSQL advisory lock.

A position of capacity N has N seats, ``(hash of its name, seat number)``. Before offering a call
to a position a node takes a free seat with ``pg_try_advisory_lock`` on a connection of its own,
and gives it back with ``pg_advisory_unlock`` when the call leaves the position. Two nodes can
never hold one seat, so a position is never offered more calls than its capacity by the whole
cluster. And since PostgreSQL releases a session's locks when the session ends, the seats of a
node that dies are free the moment its connection drops: nothing to sweep, no lease to wait for.

Every lock operation runs on one thread (the locks belong to one connection), in order. When the
database does not answer, a reservation is not refused: the node decides alone, as a single
node would (DESIGN: "a database outage degrades this to per-node decisions, never to refusing
calls"), and takes its seats back when the connection returns — a seat taken meanwhile by
another node is then counted anyway (logged), the position is briefly over its capacity.

A call already on a position (taken over from a dead node) holds a seat there without asking:
``held`` takes one if free, and otherwise keeps the call where it is.
"""
from __future__ import annotations

import logging
import select
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

log = logging.getLogger("ng911.cluster")

Holder = tuple[str, str]  # (call id, answer point name)
#: a younger call gives way to an older one of its queue waiting on another node for at most
#: this long (arrival order across the cluster, never starvation)
YIELD_FOR = 3.0
YIELDING_MEMORY = 10_000
#: the channel a freed seat is announced on (payload: the answer point's name)
CHANNEL = "ng911_seats"
#: after a lost connection, seats are decided alone for this long before trying again (a
#: hunt must not wait for a connect timeout at every reservation during an outage)
RECONNECT_AFTER = 2.0


def ap_key(name: str) -> int:
    """The advisory lock class of a position: a stable signed 32-bit hash of its name."""
    h = zlib.crc32(name.encode("utf-8"))
    return h - (1 << 32) if h >= (1 << 31) else h


class SeatKeeper:
    """``connect()`` gives a DBAPI connection (autocommit); ``call_in_reactor`` runs a
    callable on the reactor thread (``reactor.callFromThread``)."""

    def __init__(self, connect: Callable[[], Any], call_in_reactor: Callable[..., None], *,
                 node: str = "") -> None:
        self.node = node
        self._yielding: dict[str, float] = {}  # call id -> when it first gave way to an older call
        self.yielded = 0  # reservations that gave way to an older call waiting on another node
        self.connect = connect
        self.call_in_reactor = call_in_reactor
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ng911-seats")
        self._conn: Any = None
        # thread side: holder -> seat number (None: held without a lock, decided alone)
        self._locks: dict[Holder, int | None] = {}
        # reactor side: holders asked for (so held/free are idempotent)
        self.holders: set[Holder] = set()
        self.refused = 0  # reservations refused: every seat held by some node
        self.alone = 0  # reservations decided without the database
        self._retry_at = 0.0  # after a lost connection: no new one before this (monotonic)

    # --- reactor side ---------------------------------------------------------------------
    def reserve(self, call_id: str, ap: str, capacity: int, done: Callable[[bool], None], *,
                queue: str | None = None, created: float | None = None) -> None:
        """Take a free seat at ``ap`` for ``call_id`` (``done(True)``), or say none is free to
        it (``done(False)``): every seat is held, or — for a call of ``queue`` that arrived at
        ``created`` — an older call of that queue waits on another node, which gets the seat
        first (for at most ``YIELD_FOR`` seconds of this call's waiting: never starved)."""
        holder = (call_id, ap)
        if holder in self.holders:
            done(True)
            return
        self.holders.add(holder)

        def finish(ok: bool) -> None:
            if not ok:
                self.holders.discard(holder)
            done(ok)

        self._submit(finish, self._take, holder, capacity, False, queue, created)

    def held(self, call_id: str, ap: str, capacity: int) -> None:
        holder = (call_id, ap)
        if holder not in self.holders:
            self.holders.add(holder)
            self._submit(None, self._take, holder, capacity, True)

    def free(self, call_id: str, ap: str) -> None:
        holder = (call_id, ap)
        if holder in self.holders:
            self.holders.discard(holder)
            self._submit(None, self._give, holder)

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _submit(self, done: Callable[[bool], None] | None, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the seats' thread, in order; ``done`` gets its answer on the
        reactor."""
        future = self._pool.submit(fn, *args)
        if done is not None:
            future.add_done_callback(lambda f: self.call_in_reactor(done, _result(f)))

    # --- the seats' thread ------------------------------------------------------------------
    def _cursor(self) -> Any:
        if self._conn is None:
            if time.monotonic() < self._retry_at:
                raise ConnectionError("database unreachable a moment ago")
            self._conn = self.connect()
            self._relock()
        return self._conn.cursor()

    def _relock(self) -> None:
        """A new connection: take again the seats this node holds (its old session's locks
        went with it)."""
        cur = self._conn.cursor()
        for holder, seat in list(self._locks.items()):
            if seat is None:
                continue
            cur.execute("SELECT pg_try_advisory_lock(%s, %s)", (ap_key(holder[1]), seat))
            if not cur.fetchone()[0]:
                log.warning("seat %d of answer point %s was taken by another node while this one was "
                            "cut from the database: call %s stays there (over capacity for now)",
                            seat, holder[1], holder[0])
                self._locks[holder] = None

    def _take(self, holder: Holder, capacity: int, force: bool, queue: str | None = None,
              created: float | None = None) -> bool:
        try:
            cur = self._cursor()
            if queue is not None and created is not None and self._older_waits(cur, holder[0], queue, created):
                return False
            key = ap_key(holder[1])
            # (advisory locks are re-entrant within a session: a seat this node holds for one
            # call would be granted again for another — skip ours)
            ours = {seat for (_, ap), seat in self._locks.items() if ap == holder[1]}
            for seat in range(capacity):
                if seat in ours:
                    continue
                cur.execute("SELECT pg_try_advisory_lock(%s, %s)", (key, seat))
                if cur.fetchone()[0]:
                    self._locks[holder] = seat
                    return True
        except Exception as e:
            self._lost(e)
            self._locks[holder] = None
            self.alone += 1
            return True  # no database: this node decides alone
        if force:
            self._locks[holder] = None
            log.warning("call %s is on answer point %s beyond its capacity (every seat held)", *holder)
            return True
        self.refused += 1
        return False

    def _older_waits(self, cur: Any, call_id: str, queue: str, created: float) -> bool:
        """Does an older call of ``queue`` wait on another live node (it should get the seat
        first)? Yes at most ``YIELD_FOR`` s after this call first gave way."""
        cur.execute(
            "SELECT 1 FROM calls c JOIN nodes n ON n.name = c.owner_node AND n.epoch = c.owner_epoch"
            " WHERE c.queue = %s AND c.state = 'queued' AND c.ended_at IS NULL"
            " AND c.created_at < to_timestamp(%s) AND c.call_id <> %s AND c.owner_node <> %s"
            " AND n.lease_expires_at > now() LIMIT 1",
            (queue, created, call_id, self.node))
        if cur.fetchone() is None:
            self._yielding.pop(call_id, None)
            return False
        now = time.monotonic()
        first = self._yielding.setdefault(call_id, now)
        while len(self._yielding) > YIELDING_MEMORY:
            self._yielding.pop(next(iter(self._yielding)))
        if now - first >= YIELD_FOR:
            return False  # waited long enough behind it: take the seat
        self.yielded += 1
        return True

    def _give(self, holder: Holder) -> None:
        seat = self._locks.pop(holder, None)
        if seat is None or self._conn is None:
            return
        try:
            cur = self._conn.cursor()
            cur.execute("SELECT pg_advisory_unlock(%s, %s)", (ap_key(holder[1]), seat))
            # the other nodes' waiting calls hunt again now (SeatListener), not at their next retry
            cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, holder[1]))
        except Exception as e:
            self._lost(e)

    def _lost(self, e: Exception) -> None:
        first = self._retry_at == 0.0 or self._conn is not None
        self._retry_at = time.monotonic() + RECONNECT_AFTER
        if first:
            log.warning("answer point seats: database connection lost (%s); deciding alone until it returns",
                        str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        try:
            if self._conn is not None:
                self._conn.close()
        except Exception:
            pass
        self._conn = None


def _result(future: Any) -> bool:
    try:
        return bool(future.result())
    except Exception:
        log.exception("answer point seats: unexpected failure; deciding alone")
        return True


class SeatListener:
    """Hears the seats other nodes free (``LISTEN ng911_seats``) on a connection and a thread of
    its own, and tells the reactor (``on_freed(answer point)``): waiting calls hunt again at
    once. Without it they would find the seat at their next retry."""

    def __init__(self, connect: Callable[[], Any], call_in_reactor: Callable[..., None],
                 on_freed: Callable[[str], None]) -> None:
        self.connect = connect
        self.call_in_reactor = call_in_reactor
        self.on_freed = on_freed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ng911-seat-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = self.connect()
                    conn.cursor().execute(f"LISTEN {CHANNEL}")
                raw = conn
                if select.select([raw], [], [], 1.0)[0]:
                    raw.poll()
                    while raw.notifies:
                        note = raw.notifies.pop(0)
                        self.call_in_reactor(self.on_freed, note.payload)
            except Exception:
                try:
                    if conn is not None:
                        conn.close()
                except Exception:
                    pass
                conn = None
                self._stop.wait(RECONNECT_AFTER)
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass
