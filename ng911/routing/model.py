"""What the configuration says about queues and answer points: plain, frozen data.

`ng911.config` builds these from TOML; the controller and the hunt use them. Times in seconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AnswerPointSpec:
    """One call-taker position (or a trunk to another PSAP)."""

    name: str
    uri: str  # where its PSAP leg INVITE goes, e.g. sip:ap1@127.0.0.1:5070
    ring_timeout: float = 20.0  # CANCEL and hunt on when it rings this long unanswered
    no_provisional_timeout: float = 2.0  # ...or gives no provisional response this fast
    capacity: int = 1  # calls at once: 1 for a position, more for a trunk


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    answer_points: tuple[AnswerPointSpec, ...]
    alternates: tuple[str, ...] = ()  # queues tried, in order, when this one is exhausted


@dataclass(frozen=True, slots=True)
class HealthSpec:
    """Out-of-dialog OPTIONS to every answer point (DESIGN "A call's life", step 4)."""

    options_interval: float = 5.0
    options_timeout: float = 2.0  # no answer within this counts as a failure
    down_after: int = 2  # consecutive failures that mark an AP down
    up_after: int = 1  # consecutive successes that mark it up again


@dataclass(frozen=True, slots=True)
class FailoverSpec:
    """How fast a dead PSAP leg is noticed and how the hunt backs off."""

    session_expires: int = 90  # RFC 4028 interval asked for on the PSAP leg (we refresh)
    min_se: int = 90
    in_dialog_options_interval: float = 10.0  # 0 disables the in-dialog OPTIONS probe
    hunt_backoff_initial: float = 0.5  # every AP tried: wait, then hunt again...
    hunt_backoff_max: float = 5.0  # ...backing off to this; an emergency call is never rejected
    queue_provisional_interval: float = 45.0  # a waiting caller gets a provisional this often (<= 60)
    caller_reinvite_give_up: float = 30.0  # a move whose re-INVITEs of the caller keep failing BYEs after this


@dataclass(frozen=True, slots=True)
class RoutingSpec:
    queues: tuple[QueueSpec, ...]
    psap_uris: tuple[str, ...] = ()  # Request-URIs (besides urn:service:sos*) that are emergency calls
    emergency_queue: str = "main"
    test_queue: str | None = None  # urn:service:test.sos; None: the emergency queue answers tests
    other_queue: str | None = None  # non-emergency calls; None: rejected with 404
    health: HealthSpec = field(default_factory=HealthSpec)
    failover: FailoverSpec = field(default_factory=FailoverSpec)

    def queue(self, name: str) -> QueueSpec:
        for q in self.queues:
            if q.name == name:
                return q
        raise KeyError(name)
