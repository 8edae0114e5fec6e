"""RFC 3261 timer values (Appendix A, Table 4) and the RFC 6026 additions.

Timers carry their RFC letters. Values are pure functions of a :class:`TimerConfig` and of
whether the transaction runs over a reliable transport; nothing here reads a clock.

=========  ======================  ===========================================================
timer      value                   meaning
=========  ======================  ===========================================================
A          T1, doubling            INVITE request retransmit interval, unreliable only
B          64*T1                   INVITE client transaction timeout
C          > 3 min                 proxy / TU INVITE guard (not run by the transaction layer)
D          max(32 s, 64*T1) / 0    wait for response retransmits (unreliable / reliable)
E          T1, doubling to T2      non-INVITE request retransmit interval, unreliable only
F          64*T1                   non-INVITE client transaction timeout
G          T1, doubling to T2      INVITE final response retransmit interval, unreliable only
H          64*T1                   wait for ACK receipt
I          T4 / 0                  wait for ACK retransmits
J          64*T1 / 0               wait for non-INVITE request retransmits
K          T4 / 0                  wait for non-INVITE response retransmits
L          64*T1                   RFC 6026: wait for accepted INVITE request retransmits
M          64*T1                   RFC 6026: wait for retransmitted 2xx to an INVITE
TRYING     200 ms (configurable)   RFC 3261 §17.2.1: send 100 Trying if the TU has not
=========  ======================  ===========================================================
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["RETRANSMIT_TIMERS", "TimerConfig", "TimerName"]


class TimerName(enum.Enum):
    """Transaction timers by their RFC 3261 / RFC 6026 letters."""

    A = "A"
    B = "B"
    C = "C"
    D = "D"
    E = "E"
    F = "F"
    G = "G"
    H = "H"
    I = "I"  # noqa: E741 - the RFC's name
    J = "J"
    K = "K"
    L = "L"
    M = "M"
    #: Not lettered by the RFC: the IST's "send 100 if TU won't in 200 ms" (§17.2.1).
    TRYING = "TRYING"

    def __repr__(self) -> str:
        return f"TimerName.{self.name}"


#: Timers that only retransmit; they never run over a reliable transport.
RETRANSMIT_TIMERS = frozenset({TimerName.A, TimerName.E, TimerName.G})


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """T1/T2/T4 (RFC 3261 §17.1.1.1, §17.1.2.2) and the IST's automatic 100 Trying delay.

    ``trying_delay`` is how long an INVITE server transaction waits for the TU's first
    provisional response before sending 100 Trying itself; ``0`` sends it at once, ``None``
    never (the TU then promises to answer within 200 ms).
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    trying_delay: float | None = 0.2
    #: Timer C (RFC 3261 §16.6 bullet 11): for the TU's own use; the transaction layer
    #: never runs it.
    timer_c: float = 180.0

    def __post_init__(self) -> None:
        if not self.t1 > 0:
            raise ValueError(f"t1 must be > 0, got {self.t1!r}")
        if not self.t2 >= self.t1:
            raise ValueError(f"t2 must be >= t1, got t2={self.t2!r} t1={self.t1!r}")
        if not self.t4 >= 0:
            raise ValueError(f"t4 must be >= 0, got {self.t4!r}")
        if self.trying_delay is not None and not self.trying_delay >= 0:
            raise ValueError(f"trying_delay must be >= 0 or None, got {self.trying_delay!r}")
        if not self.timer_c > 0:
            raise ValueError(f"timer_c must be > 0, got {self.timer_c!r}")

    def duration(self, name: TimerName, *, reliable: bool) -> float | None:
        """The initial value of timer ``name``; ``None`` when it does not run at all.

        A value of ``0`` means "fires at once" (D, I, J, K over a reliable transport).
        """
        t1, t4 = self.t1, self.t4
        if name in RETRANSMIT_TIMERS:
            return None if reliable else t1
        if name in (TimerName.B, TimerName.F, TimerName.H, TimerName.L, TimerName.M):
            return 64 * t1
        if name is TimerName.D:
            return 0.0 if reliable else max(32.0, 64 * t1)
        if name is TimerName.J:
            return 0.0 if reliable else 64 * t1
        if name in (TimerName.I, TimerName.K):
            return 0.0 if reliable else t4
        if name is TimerName.TRYING:
            return self.trying_delay
        if name is TimerName.C:
            return self.timer_c
        raise AssertionError(f"unknown timer {name!r}")  # pragma: no cover

    def backoff(self, name: TimerName, previous: float) -> float:
        """The next interval of retransmit timer ``name`` after one that lasted ``previous``.

        A doubles without bound (§17.1.1.2); E and G double up to T2 (§17.1.2.2, §17.2.1).
        """
        if name is TimerName.A:
            return 2 * previous
        if name in (TimerName.E, TimerName.G):
            return min(2 * previous, self.t2)
        raise ValueError(f"timer {name!r} does not back off")
