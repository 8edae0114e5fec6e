"""What a `Call` needs from the node around it, and nothing more: the seam that lets a call be
driven by the controller, rebuilt by a node that takes it over, or run against a test double.

The controller implements it (`Controller` is a `CallPort`); `Call` never sees the UA core,
the store or the metrics except through these members.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

from ng911.routing.model import RoutingSpec
from ng911.routing.pool import AnswerPoint, Pool
from ng911.sip.timerwheel import TimerHandle

if TYPE_CHECKING:
    from ng911.call.call import Call
    from ng911.call.observer import CallObserver
    from ng911.sip.ua import Session


class CallPort(Protocol):
    routing: RoutingSpec  # queues, timers of the hunt and of failure detection
    pool: Pool  # answer points, their occupancy and health
    observer: CallObserver  # the call log, metrics and logs (the event sink)

    def now(self) -> float: ...

    def call_at(self, when: float, fn: Callable[[float], None]) -> TimerHandle: ...

    def invite(self, target: str, **kwargs: Any) -> Session:
        """A new outgoing INVITE session (the PSAP leg), as `UserAgent.invite`."""
        ...

    def psap_from(self, call: Call) -> str: ...

    def history_for(self, call: Call, target: str) -> list[tuple[str, str]]: ...

    def save_legs(self, call: Call) -> None: ...

    def queue_wait_started(self, call: Call) -> None: ...

    def queue_wait_ended(self, call: Call) -> None: ...

    def call_ended(self, call: Call, outcome: str, reason: str) -> None: ...

    def reserve(self, call: Call, ap: AnswerPoint, done: Callable[[bool], None]) -> None:
        """Take a seat at ``ap`` for ``call`` before offering it (cluster-wide capacity);
        ``done(False)``: every seat is held elsewhere. May answer at once (one node)."""
        ...

    def seat_held(self, call: Call, ap: AnswerPoint) -> None:
        """``call`` is on ``ap``: hold a seat there (taken already by ``reserve``, or now)."""
        ...

    def seat_freed(self, call: Call, ap: AnswerPoint) -> None:
        """``call`` left ``ap``: its seat is free for any node."""
        ...

    def may_act(self, call: Call) -> bool:
        """False while another node may own ``call`` (this node's cluster lease is not
        confirmed): start nothing on it that a silence would be read against (a probe)."""
        ...


#: the members of the port, for tests that hold a call to them
MEMBERS = frozenset({"routing", "pool", "observer", "now", "call_at", "invite", "psap_from", "history_for",
                     "save_legs", "queue_wait_started", "queue_wait_ended", "call_ended", "may_act",
                     "reserve", "seat_held", "seat_freed"})
