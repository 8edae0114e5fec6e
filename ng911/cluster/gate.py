"""Fencing on the wire: the last check before a request leaves the node.

The UA core sends every message through one port (``UserAgent.port.send``); the gate wraps it.
A *request* (responses always pass: a peer asked, so this node is its target) is

- **dropped** when its Call-ID belongs to a call this node lost (fenced): whatever is still
  in flight for that call — a retransmission, a refresh, a probe timer that fired late — never
  reaches the wire again;
- **held** while this node's lease is not confirmed and the Call-ID belongs to a call whose
  row is in the database (another node may have claimed it). A paused node resumed with
  SIGCONT runs its overdue timers before its first heartbeat can answer: what they send waits
  here. Only the latest copy per transaction is kept (a retransmission replaces it). When
  the heartbeat confirms the lease, what is held for calls still ours goes out in order; what
  is held for calls taken from us is dropped.

A fenced Call-ID is remembered while something on this node could still send on it: the call
was detached (its timers cancelled, its sessions forgotten), so only transactions already in
flight can, and they end within 64*T1 (32 s). ``FENCED_TTL`` keeps it ten times that, and
``FENCED_MEMORY`` bounds the count whatever the rate of takeovers (oldest forgotten first).

Calls whose row is not written yet (new calls while the database is away) are nobody else's:
their requests pass, so a database outage never stops a new emergency call.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any, Callable

from ng911.sip.message import Request

log = logging.getLogger("ng911.cluster")

#: fenced Call-IDs remembered (oldest forgotten first): far more than calls live on a node
FENCED_MEMORY = 100_000
#: seconds a fenced Call-ID is remembered: well past 64*T1, when its last transaction has ended
FENCED_TTL = 320.0
#: requests held at most; past it the oldest are dropped (their transactions retransmit over
#: UDP, or time out and are handled as any lost request)
HELD_MAX = 10_000
#: a request held longer than this is not sent at release: its transaction has timed out
#: (64*T1 with the default T1) and the node has moved on without it
HELD_MAX_AGE = 32.0


class SendGate:
    """A ``UserAgent`` port wrapper. ``may_send()``: this node's lease is confirmed;
    ``stored(call_id)``: the SIP Call-ID belongs to a call whose row exists (gated while the
    lease is not confirmed)."""

    def __init__(self, inner: Any, *, may_send: Callable[[], bool], stored: Callable[[str], bool],
                 clock: Callable[[], float] = time.monotonic, max_age: float = HELD_MAX_AGE,
                 fenced_ttl: float = FENCED_TTL) -> None:
        self.inner = inner
        self.may_send = may_send
        self.stored = stored
        self.clock = clock
        self.max_age = max_age
        self.fenced_ttl = fenced_ttl
        self._fenced: OrderedDict[str, float] = OrderedDict()  # Call-ID -> when fenced (in order)
        # (Call-ID, transaction) -> (request, destination, when first held)
        self._held: OrderedDict[tuple[str, str], tuple[Request, Any, float]] = OrderedDict()
        self.dropped = 0  # requests never sent: their call was taken from this node
        self.released = 0  # requests held, then sent

    def __getattr__(self, name: str) -> Any:  # the rest of the port (destination, ...) as is
        return getattr(self.inner, name)

    # --- the port -------------------------------------------------------------------------
    def send(self, message: Any, dest: Any) -> None:
        if isinstance(message, Request):
            call_id = message.call_id
            if call_id in self._fenced and not self._expired(call_id):
                self.dropped += 1
                return
            if not self.may_send() and self.stored(call_id):
                self._hold(message, dest)
                return
        self.inner.send(message, dest)

    def _hold(self, request: Request, dest: Any) -> None:
        key = (request.call_id, _transaction_of(request))
        previous = self._held.pop(key, None)
        self._held[key] = (request, dest, previous[2] if previous is not None else self.clock())
        while len(self._held) > HELD_MAX:
            self._held.popitem(last=False)

    # --- the member's verdicts --------------------------------------------------------------
    def fence(self, call_ids: Any) -> None:
        """These SIP Call-IDs are another node's now: never send a request on them again."""
        now = self.clock()
        fenced = self._fenced
        for call_id in call_ids:
            fenced[call_id] = now
            fenced.move_to_end(call_id)
        while len(fenced) > FENCED_MEMORY:
            fenced.popitem(last=False)
        self._forget_old(now)
        for key in [k for k in self._held if k[0] in self._fenced]:
            del self._held[key]
            self.dropped += 1

    def release(self) -> int:
        """The lease is confirmed: send what was held (for calls not fenced), in order."""
        if not self.may_send():
            return 0
        held, self._held = self._held, OrderedDict()
        sent = 0
        now = self.clock()
        for (call_id, _), (request, dest, since) in held.items():
            if call_id in self._fenced or now - since > self.max_age:
                self.dropped += 1
                continue
            self.inner.send(request, dest)
            sent += 1
        self.released += sent
        if sent:
            log.info("lease confirmed: sent %d held request(s)", sent)
        return sent

    def _expired(self, call_id: str) -> bool:
        now = self.clock()
        if now - self._fenced[call_id] <= self.fenced_ttl:
            return False
        self._forget_old(now)
        return True

    def _forget_old(self, now: float) -> None:
        fenced = self._fenced
        while fenced:
            call_id, since = next(iter(fenced.items()))
            if now - since <= self.fenced_ttl:
                break
            del fenced[call_id]

    @property
    def fenced(self) -> int:
        return len(self._fenced)

    @property
    def held(self) -> int:
        return len(self._held)

    def is_fenced(self, call_id: str) -> bool:
        return call_id in self._fenced and not self._expired(call_id)


def _transaction_of(request: Request) -> str:
    """What makes a retransmission the same request: its top Via branch and CSeq (an ACK for
    a 2xx has a branch of its own per CSeq)."""
    try:
        branch = request.branch or ""
    except ValueError:
        branch = ""
    return f"{branch} {request.headers.get('CSeq') or ''}"
