"""Is this node overloaded? Judged by how late the reactor runs its timers (event-loop lag),
and by whether its store has fallen behind (the write-behind backlog past its high-water mark).

Under overload an emergency call keeps priority over everything else the node does: new
non-emergency calls are turned away with 503 + Retry-After while emergency and test calls are
always admitted (they are never rejected for want of capacity, only queued). Pure: the shell
feeds lag samples and the backlog signal; time comes from the caller.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


def _never() -> bool:
    return False


@dataclass
class OverloadGuard:
    lag_threshold: float = 0.2  # a timer firing this late (s) means the reactor is saturated
    hold: float = 5.0  # stay in overload this long after the last late sample
    _until: float = 0.0
    late_samples: int = 0
    #: True while the store is backlogged (the service wires the store's alarm in)
    backlogged: Callable[[], bool] = field(default=_never)

    def sample(self, lag: float, now: float) -> None:
        if lag > self.lag_threshold:
            self.late_samples += 1
            self._until = now + self.hold

    def overloaded(self, now: float) -> bool:
        return now < self._until or self.backlogged()
