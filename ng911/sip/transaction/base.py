"""The engine shared by the four RFC 3261 §17 transaction machines.

Everything that affects a machine lives in three tables its module declares:

``TRANSITIONS``
    ``{state: {input: (next_state, (effect, ...))}}``. An input is an :class:`Input` (a
    message class or a TU call) or a :class:`~ng911.sip.timers.TimerName` (a timer expiry is
    an input like a message). An input absent from the current state's row raises
    :class:`LocalProtocolError` and leaves the machine untouched. Every row covers every input
    a *peer* can cause, so remote input never raises: unwanted messages map to a self-loop
    with no effect (absorbed). States only move forward (checked at import).
``ENTRY_TIMERS``
    timers armed on entering a state (a timer that does not run on this transport is skipped;
    one whose value is 0 fires at once, before the input returns).
``KEEP_TIMERS``
    timers that survive entering a state; every other running timer is stopped.

Effects run in table order, then the state is entered, so a ``ToTU`` precedes the
``TransactionTerminated`` of the same step.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from ng911.sip import builders
from ng911.sip.timers import TimerConfig, TimerName
from ng911.sip.transaction.actions import (
    Action,
    Send,
    ToTU,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from ng911.sip.transaction.errors import LocalProtocolError

if TYPE_CHECKING:
    from ng911.sip.message import Request, Response
    from ng911.sip.transaction.keys import TransactionKey

__all__ = ["Fx", "Input", "Transaction", "TransactionState", "Transitions"]


class TransactionState(enum.IntEnum):
    """States of all four machines, in the only order they may be visited."""

    CALLING = 1  # ICT
    TRYING = 2  # NICT, NIST
    PROCEEDING = 3
    COMPLETED = 4
    CONFIRMED = 5  # IST
    ACCEPTED = 6  # ICT, IST (RFC 6026)
    TERMINATED = 7

    def __repr__(self) -> str:
        return f"TransactionState.{self.name}"


class Input(enum.Enum):
    """Message and TU inputs; timer inputs are the :class:`TimerName` members themselves."""

    RESP_1XX = "1xx from TL"
    RESP_2XX = "2xx from TL"
    RESP_3XX_6XX = "300-699 from TL"
    REQUEST = "request retransmission from TL"
    ACK = "ACK from TL"
    TU_1XX = "1xx from TU"
    TU_2XX = "2xx from TU"
    TU_3XX_6XX = "300-699 from TU"
    TRANSPORT_ERROR = "transport error"

    def __repr__(self) -> str:
        return f"Input.{self.name}"


class Fx(enum.Enum):
    """Effects a transition performs, in the order listed."""

    SEND_REQUEST = "(re)send the request"
    BACKOFF = "re-arm the firing retransmit timer at its next interval"
    REARM_E_AT_T2 = "re-arm Timer E at T2"
    RESPONSE_TO_TU = "pass the response to the TU"
    STRAY_TO_TU = "pass the message to the TU outside the transaction"
    SEND_ACK = "send the ACK for the non-2xx final response"
    TIMEOUT_TO_TU = "report TransactionTimeout(timer) to the TU"
    ERROR_TO_TU = "report TransportError to the TU"
    SEND_RESPONSE = "send the TU's response"
    RESEND_RESPONSE = "resend the last response sent"
    RESEND_PROVISIONAL = "resend the last provisional, or send 100 Trying now"
    SEND_TRYING = "send 100 Trying unless a provisional went out"
    STOP_TRYING = "stop the automatic 100 Trying"


Event: TypeAlias = Input | TimerName
Transition: TypeAlias = tuple[TransactionState, tuple[Fx, ...]]
Transitions: TypeAlias = Mapping[TransactionState, Mapping[Event, Transition]]

S = TransactionState


def check_table(
    name: str,
    transitions: Transitions,
    remote_inputs: frozenset[Input],
    entry_timers: Mapping[TransactionState, tuple[TimerName, ...]],
    keep_timers: Mapping[TransactionState, frozenset[TimerName]],
) -> None:
    """Import-time sanity of a machine's tables (see the module docstring)."""
    for state, row in transitions.items():
        if state is S.TERMINATED:
            raise AssertionError(f"{name}: Terminated takes no input")
        missing = remote_inputs - row.keys()
        if missing:
            raise AssertionError(f"{name}: {state.name} does not cover {sorted(i.name for i in missing)}")
        live = set(entry_timers.get(state, ())) | keep_timers.get(state, frozenset())
        for event, (target, _effects) in row.items():
            if target < state:
                raise AssertionError(f"{name}: {state.name} --{event}--> {target.name} goes backwards")
            if isinstance(event, TimerName) and event not in live:
                raise AssertionError(f"{name}: {event!r} can never fire in {state.name}")
            if target not in transitions and target is not S.TERMINATED:
                raise AssertionError(f"{name}: {target.name} has no row")


class Transaction:
    """One transaction. Subclasses declare the tables and the initial state."""

    KIND: ClassVar[str]
    INITIAL: ClassVar[TransactionState]
    TRANSITIONS: ClassVar[Transitions]
    ENTRY_TIMERS: ClassVar[Mapping[TransactionState, tuple[TimerName, ...]]]
    KEEP_TIMERS: ClassVar[Mapping[TransactionState, frozenset[TimerName]]]

    __slots__ = (
        "key",
        "request",
        "dest",
        "reliable",
        "config",
        "state",
        "last_response",
        "_ack",
        "_deadlines",
        "_intervals",
        "_immediate",
    )

    def __init__(
        self,
        key: TransactionKey,
        request: Request,
        dest: Any,
        *,
        reliable: bool,
        config: TimerConfig,
    ) -> None:
        self.key = key
        self.request = request
        self.dest = dest
        self.reliable = reliable
        self.config = config
        self.state = self.INITIAL
        #: Server: the last response sent (for retransmissions). Client: unused.
        self.last_response: Response | None = None
        self._ack: Request | None = None
        self._deadlines: dict[TimerName, float] = {}
        self._intervals: dict[TimerName, float] = {}
        self._immediate: list[TimerName] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key} {self.state.name}>"

    # --- the public surface -----------------------------------------------------------------
    @property
    def terminated(self) -> bool:
        return self.state is S.TERMINATED

    def timers(self) -> dict[TimerName, float]:
        """Running timers and their deadlines (a copy, for tests and introspection)."""
        return dict(self._deadlines)

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` next has something to do; None when no timer runs."""
        return min(self._deadlines.values()) if self._deadlines else None

    def on_timer(self, now: float) -> list[Action]:
        """Fire every timer due at ``now``, earliest first; each is an input."""
        actions: list[Action] = []
        deadlines = self._deadlines
        while deadlines and not self.terminated:
            timer = min(deadlines, key=deadlines.__getitem__)  # ties: the one armed first
            if deadlines[timer] > now:
                break
            del deadlines[timer]
            actions += self._step(timer, now)
        return actions

    def transport_error(self, now: float, reason: str = "") -> list[Action]:
        """The transport failed to send one of this transaction's messages."""
        return self._step(Input.TRANSPORT_ERROR, now, TransportError(reason))

    def start(self, now: float) -> list[Action]:
        """Enter the initial state: arm its timers (a client also sends its request)."""
        actions: list[Action] = []
        self._arm_entry(self.INITIAL, now)
        self._fire_immediate(now, actions)
        return actions

    # --- the engine -------------------------------------------------------------------------
    def _step(self, event: Event, now: float, message: Any = None, source: Any = None) -> list[Action]:
        row = self.TRANSITIONS.get(self.state, {})
        try:
            target, effects = row[event]
        except KeyError:
            raise LocalProtocolError(
                f"{self.KIND} {self.state.name}: {event.value if isinstance(event, Input) else 'Timer ' + event.value}"
                " is not allowed"
            ) from None
        actions: list[Action] = []
        for fx in effects:
            self._effect(fx, event, now, message, source, actions)
        if target is not self.state:
            self._enter(target, now, actions)
        self._fire_immediate(now, actions)
        return actions

    def _enter(self, target: TransactionState, now: float, actions: list[Action]) -> None:
        self.state = target
        if target is S.TERMINATED:
            self._deadlines.clear()
            self._intervals.clear()
            self._immediate.clear()
            actions.append(TransactionTerminated(self.key))
            return
        keep = self.KEEP_TIMERS.get(target, frozenset())
        for timer in [t for t in self._deadlines if t not in keep]:
            del self._deadlines[timer]
        self._arm_entry(target, now)

    def _arm_entry(self, state: TransactionState, now: float) -> None:
        for timer in self.ENTRY_TIMERS.get(state, ()):
            self._arm(timer, now)

    def _arm(self, timer: TimerName, now: float, interval: float | None = None) -> None:
        if interval is None:
            interval = self.config.duration(timer, reliable=self.reliable)
            if interval is None:
                return
        self._intervals[timer] = interval
        self._deadlines[timer] = now + interval
        if interval == 0:
            self._immediate.append(timer)

    def _fire_immediate(self, now: float, actions: list[Action]) -> None:
        while self._immediate and not self.terminated:
            timer = self._immediate.pop(0)
            if self._deadlines.get(timer) == now:
                del self._deadlines[timer]
                actions += self._step(timer, now)

    def _effect(
        self, fx: Fx, event: Event, now: float, message: Any, source: Any, actions: list[Action]
    ) -> None:
        if fx is Fx.SEND_REQUEST:
            actions.append(Send(self.request, self.dest))
        elif fx is Fx.BACKOFF:
            assert isinstance(event, TimerName)
            self._arm(event, now, self.config.backoff(event, self._intervals[event]))
        elif fx is Fx.REARM_E_AT_T2:
            if not self.reliable:
                self._arm(TimerName.E, now, self.config.t2)
        elif fx is Fx.RESPONSE_TO_TU:
            actions.append(ToTU(message, self.key, source))
        elif fx is Fx.STRAY_TO_TU:
            actions.append(ToTU(message, None, source))
        elif fx is Fx.SEND_ACK:
            if self._ack is None:
                self._ack = builders.make_ack_for_non2xx(self.request, message)
            actions.append(Send(self._ack, self.dest))
        elif fx is Fx.TIMEOUT_TO_TU:
            assert isinstance(event, TimerName)
            actions.append(ToTU(TransactionTimeout(event), self.key))
        elif fx is Fx.ERROR_TO_TU:
            actions.append(ToTU(message, self.key))
        elif fx is Fx.SEND_RESPONSE:
            self.last_response = message
            actions.append(Send(message, self.dest))
        elif fx is Fx.RESEND_RESPONSE:
            if self.last_response is not None:
                actions.append(Send(self.last_response, self.dest))
        elif fx is Fx.RESEND_PROVISIONAL:
            if self.last_response is not None:
                actions.append(Send(self.last_response, self.dest))
            else:
                self._effect(Fx.SEND_TRYING, event, now, message, source, actions)
                self._deadlines.pop(TimerName.TRYING, None)
        elif fx is Fx.SEND_TRYING:
            if self.last_response is None:
                self.last_response = builders.make_response(self.request, 100)
                actions.append(Send(self.last_response, self.dest))
        elif fx is Fx.STOP_TRYING:
            self._deadlines.pop(TimerName.TRYING, None)
        else:  # pragma: no cover - every Fx is handled above
            raise AssertionError(fx)


class ClientTransaction(Transaction):
    """ICT and NICT: created by the TU's request, fed responses from the transport."""

    __slots__ = ()

    def start(self, now: float) -> list[Action]:
        actions: list[Action] = [Send(self.request, self.dest)]
        return actions + super().start(now)

    def receive_response(self, response: Response, now: float, source: Any = None) -> list[Action]:
        """A response matching this transaction arrived from the transport."""
        status = response.status
        if 100 <= status < 200:
            event = Input.RESP_1XX
        elif 200 <= status < 300:
            event = Input.RESP_2XX
        elif 300 <= status < 700:
            event = Input.RESP_3XX_6XX
        else:
            return []  # not a SIP status; the parser should not have let it through
        return self._step(event, now, response, source)


class ServerTransaction(Transaction):
    """IST and NIST: created by a peer's request, fed the TU's responses."""

    __slots__ = ()

    def receive_request(self, request: Request, now: float, source: Any = None) -> list[Action]:
        """A retransmission of our request (or, for the IST, an ACK) arrived."""
        if request.method == "ACK" and self.request.method == "INVITE":
            event = Input.ACK
        elif request.method == self.request.method:
            event = Input.REQUEST
        else:
            raise LocalProtocolError(f"{request.method} does not belong to {self.KIND} {self.key}")
        return self._step(event, now, request, source)

    def send_response(self, response: Response, now: float) -> list[Action]:
        """The TU answers; raises LocalProtocolError if the state does not allow it."""
        if response.cseq.method != self.request.method:
            raise LocalProtocolError(
                f"response to {response.cseq.method} sent on the {self.request.method} transaction {self.key}"
            )
        status = response.status
        if 100 <= status < 200:
            event = Input.TU_1XX
        elif 200 <= status < 300:
            event = Input.TU_2XX
        elif 300 <= status < 700:
            event = Input.TU_3XX_6XX
        else:
            raise LocalProtocolError(f"status {status} is not 100-699")
        return self._step(event, now, response)
