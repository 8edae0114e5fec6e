"""What a stranger can cost the node (issue 9: limits and shedding). Pure: the clock is passed in.

- :class:`RateLimiter` — pike-like token buckets: one per untrusted source address (the
  ``tracked_sources`` most recently seen; the least recent is forgotten) and one for all
  untrusted sources together, so a flood spread over many addresses is bounded too.
- :class:`ConnectionCounter` — stream connections at once: in total and per untrusted address.
- :class:`LogThrottle` — one log line per interval for events a flood repeats thousands of times.

Trusted peers (upstream, answer points) never meet these: the shell asks only for strangers.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from ng911.sip.errors import SipParseError
from ng911.sip.message import missing_mandatory

__all__ = ["SHED_REASONS", "ConnectionCounter", "LogThrottle", "RateLimiter", "Refusal",
           "UNTRUSTED_IDLE_TIMEOUT", "refusal"]

#: why a message or connection was refused: the ``reason`` label of ``ng911_sip_shed_total``
SHED_REASONS = (
    "rate_source",              # one untrusted address over its rate: dropped unread
    "rate_total",               # all untrusted addresses together over theirs: dropped unread
    "untrusted_stateless_403",  # an untrusted out-of-dialog INVITE: one 403, no transaction
    "untrusted_stateless",      # another untrusted request answered statelessly (403/481)
    "untrusted_stray",          # an untrusted ACK or response matching nothing: dropped
    "untrusted_malformed",      # an untrusted request without its mandatory headers: dropped
    "transactions_cap",         # limits.max_transactions reached: stateless 503
    "dialogs_cap",              # limits.max_dialogs reached: stateless 503 (not emergency calls)
    "connections_cap",          # limits.max_connections reached: connection closed at once
    "connections_per_source",   # limits.max_connections_per_source reached: closed at once
    "buffer",                   # a connection buffering past limits.stream_buffer: closed
    "first_message_timeout",    # no whole message within limits.handshake_timeout: closed
    "handshakes_cap",           # TLS handshakes under way at the connection caps: closed at once
)

#: an untrusted stream connection idle this long is closed (a trusted one after the transport's
#: idle timeout, 300 s): 64*T1, the longest a transaction it carried can still need it
UNTRUSTED_IDLE_TIMEOUT = 32.0


class _Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class RateLimiter:
    """``admit(source, now)``: None when the message may be read, else the shed reason.

    A source starts with ``burst`` tokens and earns ``rate`` per second up to ``burst``; each
    message admitted costs one token from its bucket and one from the shared bucket (``total_rate``
    per second, one second's worth of burst). A refused message costs nothing, so a source that
    stops flooding is served again after 1/rate seconds. A source keeps its place in the memory
    while it floods (it is seen): forgetting it would hand it a fresh burst.
    """

    def __init__(self, rate: float, burst: float, total_rate: float, tracked_sources: int) -> None:
        self.rate = float(rate)
        self.burst = max(1.0, float(burst))
        self.total_rate = float(total_rate)
        self.total_burst = max(self.burst, self.total_rate)
        self.tracked_sources = max(1, int(tracked_sources))
        self._sources: OrderedDict[str, _Bucket] = OrderedDict()
        self._total: _Bucket | None = None
        self.forgotten = 0  # sources evicted to stay within tracked_sources

    def __len__(self) -> int:
        """Sources remembered (a gauge)."""
        return len(self._sources)

    def admit(self, source: str, now: float) -> str | None:
        sources = self._sources
        bucket = sources.get(source)
        if bucket is None:
            if len(sources) >= self.tracked_sources:
                sources.popitem(last=False)
                self.forgotten += 1
            bucket = sources[source] = _Bucket(self.burst, now)
        else:
            sources.move_to_end(source)
            if now > bucket.stamp:
                bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
                bucket.stamp = now
        if bucket.tokens < 1.0:
            return "rate_source"
        total = self._total
        if total is None:
            total = self._total = _Bucket(self.total_burst, now)
        elif now > total.stamp:
            total.tokens = min(self.total_burst, total.tokens + (now - total.stamp) * self.total_rate)
            total.stamp = now
        if total.tokens < 1.0:
            return "rate_total"
        bucket.tokens -= 1.0
        total.tokens -= 1.0
        return None


class ConnectionCounter:
    """Stream connections held, shared by every stream transport (TCP, TLS).

    ``admit(host, trusted)``: None and counted, or the shed reason (the caller closes it). A
    trusted peer's connection is always admitted (counted all the same): a flood must never lock
    out the ESInet or a position. ``release(host)`` when an admitted connection closes.
    """

    def __init__(self, max_total: int, max_per_source: int) -> None:
        self.max_total = max_total
        self.max_per_source = max_per_source
        self.total = 0
        self._per_source: dict[str, int] = {}  # only addresses holding a connection: bounded

    def admit(self, host: str, trusted: bool) -> str | None:
        held = self._per_source.get(host, 0)
        if not trusted:
            if self.total >= self.max_total:
                return "connections_cap"
            if held >= self.max_per_source:
                return "connections_per_source"
        self._per_source[host] = held + 1
        self.total += 1
        return None

    def release(self, host: str) -> None:
        held = self._per_source.get(host, 0)
        if held <= 1:
            self._per_source.pop(host, None)
        else:
            self._per_source[host] = held - 1
        self.total = max(0, self.total - 1)

    def held(self, host: str) -> int:
        return self._per_source.get(host, 0)


class LogThrottle:
    """``ready(now)``: True at most once per ``interval`` s; ``suppressed`` says how many were
    skipped since the last True (the caller puts it in its line)."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._next = float("-inf")
        self.suppressed = 0

    def ready(self, now: float) -> bool:
        if now < self._next:
            self.suppressed += 1
            return False
        self._next = now + self.interval
        return True

    def take_suppressed(self) -> int:
        n, self.suppressed = self.suppressed, 0
        return n


# --- after parsing: who gets state, who gets one stateless answer ---------------------------------


@dataclass(frozen=True, slots=True)
class Refusal:
    """A message not given to the UA core: ``reason`` (a :data:`SHED_REASONS` word) and the
    stateless response to send back over the flow it came on (``status`` None: drop it)."""

    reason: str
    status: int | None = None
    phrase: str = ""
    retry_after: int | None = None


RETRY_AFTER = 5  # s, in a 503 for a cap: the caps are about bursts, not a long outage
#: past this many times limits.max_transactions, even the methods spared at the cap are refused
#: (every growing structure has a bound), new emergency calls from trusted peers excepted
HARD_CAP_FACTOR = 2

_FORBIDDEN = Refusal("untrusted_stateless", 403, "Forbidden: untrusted peer")
_FORBIDDEN_INVITE = Refusal("untrusted_stateless_403", 403, "Forbidden: untrusted peer")
_NO_DIALOG = Refusal("untrusted_stateless", 481, "Call/Transaction Does Not Exist")
_STRAY = Refusal("untrusted_stray")
_MALFORMED = Refusal("untrusted_malformed")
_TRANSACTIONS = Refusal("transactions_cap", 503, "Service Unavailable", RETRY_AFTER)
_DIALOGS = Refusal("dialogs_cap", 503, "Service Unavailable", RETRY_AFTER)

#: requests of a trusted peer that pass the transaction cap: new calls, and what ends a call
#: (refusing those would keep its state longer)
_TRUSTED_PAST_CAP = frozenset({"INVITE", "BYE", "CANCEL"})


def refusal(msg: Any, *, exempt: bool, trusted: bool, dialog_known: Callable[[Any], bool],
            transaction_known: Callable[[Any], bool], transactions: int, dialogs: int,
            max_transactions: int, max_dialogs: int,
            is_emergency: Callable[[Any], bool]) -> Refusal | None:
    """Whether a parsed message goes to the UA core (None) or is refused, and how.

    ``exempt``: the source is never shed (a trusted upstream peer or an answer point's host);
    ``trusted``: it may send calls (``TrustPolicy``). ``dialog_known(msg)``: an in-dialog
    request's dialog exists; ``transaction_known(msg)``: a request retransmits a live server
    transaction, or a response answers a live client transaction.

    A stranger gets no state: an out-of-dialog request is answered statelessly (403; an INVITE
    has its own reason), an in-dialog one for a dialog we lack gets 481, an ACK or response
    that matches nothing is dropped. Then the caps, for everyone: past ``max_transactions`` a
    new request gets 503 (INVITE, BYE and CANCEL from an exempt source excepted: emergency calls
    are served first, and what ends a call frees state), past ``max_dialogs`` a new INVITE gets 503 unless it is an emergency call
    from a trusted peer.
    """
    if not msg.is_request:
        if not exempt and not transaction_known(msg):
            return _STRAY
        return None
    method = msg.method
    if not exempt:
        if missing_mandatory(msg):
            return _MALFORMED
        try:
            to_tag = msg.to.tag
        except (SipParseError, ValueError):
            return _MALFORMED
        if method == "ACK":
            return None if to_tag and dialog_known(msg) else _STRAY
        if to_tag is None:
            if method == "INVITE":
                return _FORBIDDEN_INVITE
            return _FORBIDDEN
        if not dialog_known(msg) and not transaction_known(msg):
            return _NO_DIALOG
    if method == "ACK":
        return None
    if transactions >= max_transactions and not transaction_known(msg):
        if not (exempt and method in _TRUSTED_PAST_CAP):
            return _TRANSACTIONS
        if transactions >= HARD_CAP_FACTOR * max_transactions and not (
                method == "INVITE" and trusted and _new_emergency(msg, is_emergency)):
            # The spared methods are bounded too (a trusted address can still be spoofed, or
            # misbehave): past twice the cap only new emergency calls from trusted peers pass.
            return _TRANSACTIONS
    if method == "INVITE" and dialogs >= max_dialogs:
        try:
            new = msg.to.tag is None
        except (SipParseError, ValueError):
            new = True
        if new and not (trusted and is_emergency(msg)) and not transaction_known(msg):
            return _DIALOGS
    return None


def _new_emergency(msg: Any, is_emergency: Callable[[Any], bool]) -> bool:
    try:
        return msg.to.tag is None and is_emergency(msg)
    except (SipParseError, ValueError):
        return False
