"""The call's vocabulary: its states and their transition table, why a call ends, why a PSAP
leg is moved. One word each, the same in code, the ``calls.state`` column, metric labels and
the call event log — a stored row maps back to exactly one state.

    ROUTING ──AP 1xx──▶ RINGING ──AP 200──▶ TALKING ──PSAP leg fails / REFER──▶ MOVING
       │ ▲                 │                   ▲  ▲                              │  │
       │ └──AP fails───────┘                   │  └───────new AP in / transfer back┘  │
       └──nobody free──▶ QUEUED ──woken──▶ ROUTING                                   │
    any state but ENDED ──caller/AP hang-up, operator, bounded give-up──▶ ENDED ◀─────┘

The table is checked at import (every state reachable from ROUTING, ENDED terminal, every
live state able to end), like the transaction machines' tables.
"""
from __future__ import annotations

import enum


class CallState(str, enum.Enum):
    ROUTING = "routing"  # an INVITE to an answer point is being placed (no 1xx yet)
    RINGING = "ringing"  # an answer point rings (or sends early media); caller not answered
    QUEUED = "queued"  # nobody free: waiting for a position, caller hears ringing
    TALKING = "talking"  # both legs confirmed
    MOVING = "moving"  # answered call whose PSAP leg is being replaced (failover, transfer)
    ENDED = "ended"

    def __str__(self) -> str:
        return self.value


S = CallState

TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    S.ROUTING: frozenset({S.RINGING, S.QUEUED, S.TALKING, S.ROUTING, S.ENDED}),
    S.RINGING: frozenset({S.ROUTING, S.QUEUED, S.TALKING, S.ENDED}),
    S.QUEUED: frozenset({S.ROUTING, S.ENDED}),
    S.TALKING: frozenset({S.MOVING, S.ENDED}),
    S.MOVING: frozenset({S.TALKING, S.ENDED}),
    S.ENDED: frozenset(),
}

#: states in which the caller has not been answered yet (its INVITE transaction is pending)
UNANSWERED = frozenset({S.ROUTING, S.RINGING, S.QUEUED})
LIVE = frozenset(s for s in S if s is not S.ENDED)


class IllegalTransition(RuntimeError):
    pass


def check(current: CallState, new: CallState) -> None:
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"call state {current.value} -> {new.value} is not in the table")


def _verify_table() -> None:
    assert set(TRANSITIONS) == set(S), "every state has a row"
    seen, todo = {S.ROUTING}, [S.ROUTING]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(S), f"unreachable states: {set(S) - seen}"
    assert not TRANSITIONS[S.ENDED], "ENDED is terminal"
    assert all(S.ENDED in TRANSITIONS[s] for s in LIVE), "every live call can end"


_verify_table()


class EndReason(str, enum.Enum):
    """Why a call ended (the ``ended`` event's ``reason``, ``calls.end_reason``)."""

    CALLER_HANGUP = "caller_hangup"  # BYE from the caller
    ABANDONED = "abandoned"  # the caller CANCELled before answer
    AP_HANGUP = "answer_point_hangup"  # the call-taker hung up (BYE from the PSAP leg)
    OPERATOR = "operator_release"  # an operator or a drill released the call
    CALLER_GONE = "caller_dialog_gone"  # the caller side answered 481: its dialog no longer exists
    # The bounded give-up rules: the only ends other than a hang-up that BYE the caller.
    CALLER_UNREACHABLE = "caller_unreachable"  # a move's re-INVITE kept failing past the limit
    NO_COMPATIBLE_MEDIA = "no_compatible_media"  # the caller refused every position's media
    NO_ACK = "no_ack"  # our 200 to the caller was never ACKed (RFC 3261 §13.3.1.4)
    SESSION_EXPIRED = "session_expired"  # the caller stopped refreshing (RFC 4028 §10)

    def __str__(self) -> str:
        return self.value


#: end reasons under which the caller may be sent a BYE by us; any other end never BYEs it
BYE_CALLER_ALLOWED = frozenset({EndReason.AP_HANGUP, EndReason.OPERATOR, EndReason.CALLER_UNREACHABLE,
                                EndReason.NO_COMPATIBLE_MEDIA, EndReason.NO_ACK, EndReason.SESSION_EXPIRED})


class FailoverCause(str, enum.Enum):
    """Why a PSAP leg was moved (``ng911_failovers_total{reason}``, the ``failover`` event)."""

    IN_DIALOG_408 = "in_dialog_408"
    IN_DIALOG_481 = "in_dialog_481"
    SESSION_TIMER = "session_timer"
    TRANSPORT_ERROR = "transport_error"
    OPTIONS_TIMEOUT = "options_timeout"
    AP_DOWN = "ap_down"  # health probes marked the position down
    AP_FAILED = "ap_failed"  # anything else the PSAP leg died of
    TRANSFER = "transfer"
    OPERATOR = "operator"

    def __str__(self) -> str:
        return self.value
