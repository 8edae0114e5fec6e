"""A tiny deadline queue for the UA core: schedule callbacks at absolute times, no I/O.

The shell asks `next_deadline()` after every input and arms one reactor timer for it (STYLE
habit 3); `fire(now)` runs what is due. Cancellation is lazy (a cancelled entry is skipped
when it surfaces), so scheduling and cancelling are O(log n) and O(1).
"""
from __future__ import annotations

import heapq
import itertools
from typing import Any, Callable


class TimerHandle:
    __slots__ = ("deadline", "callback", "cancelled")

    def __init__(self, deadline: float, callback: Callable[[float], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = _noop  # drop references early: less garbage kept alive


_COMPACT_MIN = 1024


def _noop(now: float) -> None:
    return None


class TimerWheel:
    def __init__(self, on_schedule: Callable[[], None] | None = None) -> None:
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._on_schedule = on_schedule  # the shell re-arms its one reactor timer
        self._compact_at = _COMPACT_MIN

    def call_at(self, deadline: float, callback: Callable[[float], None]) -> TimerHandle:
        handle = TimerHandle(deadline, callback)
        heapq.heappush(self._heap, (deadline, next(self._seq), handle))
        if len(self._heap) > self._compact_at:
            self._compact()
        if self._on_schedule is not None:
            self._on_schedule()
        return handle

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def fire(self, now: float) -> int:
        """Run every callback due at ``now``; return how many ran."""
        ran = 0
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, handle = heapq.heappop(heap)
            if handle.cancelled:
                continue
            # Drop the handle's reference to its callback before running it: an owner that
            # keeps the handle would otherwise form a cycle (owner → handle → bound method →
            # owner) that only the cyclic GC could free.
            callback, handle.callback = handle.callback, _noop
            handle.cancelled = True
            callback(now)
            ran += 1
        return ran

    def __len__(self) -> int:
        return sum(1 for _, _, h in self._heap if not h.cancelled)

    def _compact(self) -> None:
        """Drop cancelled entries (a refresh cancels a timer far in the future: without this they
        would stay until their deadline). Amortised O(1): the next pass waits for twice the size."""
        self._heap = [e for e in self._heap if not e[2].cancelled]
        heapq.heapify(self._heap)
        self._compact_at = max(_COMPACT_MIN, 2 * len(self._heap))


class Alarm:
    """One clock call kept at the earliest deadline asked for: the shell's single timer
    (STYLE habit 3, the aioquic pattern). ``clock`` is an IReactorTime: the reactor, or a
    ``task.Clock`` in tests. ``arm(deadline)`` never moves the call later; ``callback`` runs
    once the deadline passes, and the owner re-arms it for the next one."""

    __slots__ = ("clock", "callback", "_call", "_at")

    def __init__(self, clock: Any, callback: Callable[[], None]) -> None:
        self.clock = clock
        self.callback = callback
        self._call: Any = None
        self._at: float | None = None

    def arm(self, deadline: float | None) -> None:
        if deadline is None:
            return
        if self._call is not None and self._call.active():
            if self._at is not None and self._at <= deadline:
                return
            self._call.cancel()
        self._at = deadline
        self._call = self.clock.callLater(max(0.0, deadline - self.clock.seconds()), self._fire)

    def cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = self._at = None

    def _fire(self) -> None:
        self._call = self._at = None
        self.callback()
