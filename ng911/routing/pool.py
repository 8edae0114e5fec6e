"""Answer points at run time: up or down, how many calls each carries, who waits for one.

Pure state, no I/O. The hunt asks `candidates(queue)` for the order to try; calls waiting for
a free position register a waker that runs when one frees up or comes back up.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

from ng911.routing.model import AnswerPointSpec, QueueSpec, RoutingSpec


@dataclass
class AnswerPoint:
    spec: AnswerPointSpec
    up: bool = True  # optimistic until the health check says otherwise
    active: int = 0  # PSAP legs ringing or connected on it
    failures: int = 0  # consecutive health failures
    successes: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def free(self) -> bool:
        return self.up and self.active < self.spec.capacity


@dataclass
class Pool:
    routing: RoutingSpec
    aps: dict[str, AnswerPoint] = field(default_factory=dict)
    _waiters: list[Callable[[], None]] = field(default_factory=list)
    on_change: Callable[[AnswerPoint], None] | None = None  # health change hook (metrics, store)

    def __post_init__(self) -> None:
        for queue in self.routing.queues:
            for spec in queue.answer_points:
                self.aps.setdefault(spec.name, AnswerPoint(spec))

    def queue_chain(self, name: str) -> Iterator[QueueSpec]:
        """The queue and its alternates, breadth-first, each once."""
        seen: set[str] = set()
        todo = [name]
        while todo:
            current = todo.pop(0)
            if current in seen:
                continue
            seen.add(current)
            try:
                queue = self.routing.queue(current)
            except KeyError:
                continue
            yield queue
            todo.extend(queue.alternates)

    def candidates(self, queue: str, exclude: set[str] = frozenset()) -> list[AnswerPoint]:  # type: ignore[assignment]
        """Free answer points in hunt order (queue order, then alternates), minus ``exclude``."""
        out = []
        for q in self.queue_chain(queue):
            for spec in q.answer_points:
                ap = self.aps[spec.name]
                if ap.name not in exclude and ap.free and ap not in out:
                    out.append(ap)
        return out

    def by_uri(self, uri: str) -> AnswerPoint | None:
        for ap in self.aps.values():
            if ap.spec.uri == uri:
                return ap
        return None

    # --- occupancy ------------------------------------------------------------------------
    def acquire(self, ap: AnswerPoint) -> None:
        ap.active += 1

    def release(self, ap: AnswerPoint) -> None:
        ap.active = max(0, ap.active - 1)
        if ap.free:
            self._wake()

    def wait(self, waker: Callable[[], None]) -> Callable[[], None]:
        """Run ``waker`` once when a position may have freed up; returns a canceller."""
        self._waiters.append(waker)

        def cancel() -> None:
            if waker in self._waiters:
                self._waiters.remove(waker)

        return cancel

    def freed_elsewhere(self, name: str) -> None:
        """Another node freed a seat at answer point ``name``: waiting calls look again."""
        ap = self.aps.get(name)
        if ap is not None and ap.free:
            self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waker in waiters:
            waker()

    # --- health ---------------------------------------------------------------------------
    def health_result(self, ap: AnswerPoint, ok: bool) -> bool:
        """Record one OPTIONS outcome; True when the AP changed between up and down."""
        health = self.routing.health
        if ok:
            ap.failures, ap.successes = 0, ap.successes + 1
            if not ap.up and ap.successes >= health.up_after:
                ap.up = True
                self._changed(ap)
                self._wake()
                return True
        else:
            ap.successes, ap.failures = 0, ap.failures + 1
            if ap.up and ap.failures >= health.down_after:
                ap.up = False
                self._changed(ap)
                return True
        return False

    def _changed(self, ap: AnswerPoint) -> None:
        if self.on_change is not None:
            self.on_change(ap)
