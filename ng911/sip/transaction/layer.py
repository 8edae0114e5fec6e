"""The transaction layer: every live transaction, keyed by RFC 3261 §17.1.3 / §17.2.3.

Sans-I/O. The shell feeds it messages and the time, and performs the actions it returns::

    actions = layer.receive(msg, source=flow, now=clock.seconds())
    ...
    deadline = layer.next_deadline()          # re-arm one reactor timer (aioquic pattern)
    reactor.callLater(max(0, deadline - reactor.seconds()), tick)
    def tick(): perform(layer.on_timer(reactor.seconds()))

Timers of all transactions share one heap of ``(deadline, seq, key)``. ``seq`` is unique and
doubles as the entry's generation: a transaction whose next deadline changes gets a new entry
and the old one becomes stale, to be skipped when it surfaces (lazy deletion). The heap is
rebuilt when stale entries outnumber live transactions, so it stays O(live) in size and every
operation is O(log n). A transaction reaching Terminated is dropped at once.

What the layer adds to the four machines:

- **Matching.** Responses by client key; requests by server key; an ACK finds the INVITE
  server transaction (an ACK for a 2xx never does with RFC 3261 branches, and goes to the TU
  as a stray, as does any response matching no client transaction).
- **CANCEL (server).** A CANCEL gets its own non-INVITE server transaction and is reported
  as :class:`CancelRequest` with the key of the INVITE server transaction it matches (the
  same key with method INVITE), so the TU answers 200 to the CANCEL and 487 to the INVITE.
- **CANCEL (client, §9.1).** :meth:`cancel` sends a CANCEL only once the INVITE got a
  provisional response; before that it is queued and sent when the first 1xx arrives, or
  dropped (with ``TransactionTerminated`` of its key) if the INVITE ends first.
- **Merged requests (§8.2.2.2).** A request without To tag whose From tag, Call-ID and CSeq
  match a live server transaction it does not belong to gets its own transaction and is
  reported as :class:`MergedRequest` so the TU answers 482.
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING, Any

from ng911.sip import builders
from ng911.sip.timers import TimerConfig
from ng911.sip.transaction.actions import (
    Action,
    CancelRequest,
    MergedRequest,
    Send,
    ToTU,
    TransactionTerminated,
)
from ng911.sip.transaction.base import (
    ClientTransaction,
    ServerTransaction,
    Transaction,
    TransactionState,
)
from ng911.sip.transaction.errors import LocalProtocolError
from ng911.sip.transaction.ict import InviteClientTransaction
from ng911.sip.transaction.ist import InviteServerTransaction
from ng911.sip.transaction.keys import (
    ClientKey,
    LegacyServerKey,
    TransactionKey,
    client_key,
    client_key_for_response,
    server_key,
    without_to_tag,
)
from ng911.sip.transaction.nict import NonInviteClientTransaction
from ng911.sip.transaction.nist import NonInviteServerTransaction

if TYPE_CHECKING:
    from ng911.sip.message import Request, Response

__all__ = ["TransactionLayer"]

S = TransactionState

#: Transports over which messages can be lost (RFC 3261 §17: "unreliable").
UNRELIABLE_TRANSPORTS = frozenset({"UDP"})

_MergeId = tuple[str, str, int, str]


class _Entry:
    """A live transaction and its place in the timer heap."""

    __slots__ = ("tsx", "deadline", "seq", "merge_id")

    def __init__(self, tsx: Transaction) -> None:
        self.tsx = tsx
        self.deadline: float | None = None
        self.seq = -1
        self.merge_id: _MergeId | None = None


class _PendingCancel:
    __slots__ = ("key", "request")

    def __init__(self, key: ClientKey, request: Request) -> None:
        self.key = key
        self.request = request


class TransactionLayer:
    """All client and server transactions of one SIP stack."""

    def __init__(self, config: TimerConfig | None = None) -> None:
        self.config = config if config is not None else TimerConfig()
        self._tsxs: dict[TransactionKey, _Entry] = {}
        self._heap: list[tuple[float, int, TransactionKey]] = []
        self._seq = itertools.count()
        self._merge_index: dict[_MergeId, TransactionKey] = {}
        self._pending_cancels: dict[ClientKey, _PendingCancel] = {}

    # --- introspection ----------------------------------------------------------------------
    def __len__(self) -> int:
        """Live transactions (a metric)."""
        return len(self._tsxs)

    def __contains__(self, key: object) -> bool:
        return key in self._tsxs

    def get(self, key: TransactionKey) -> Transaction | None:
        entry = self._tsxs.get(key)
        return entry.tsx if entry is not None else None

    def state(self, key: TransactionKey) -> TransactionState | None:
        """The transaction's state; None once it is gone (Terminated transactions are dropped)."""
        entry = self._tsxs.get(key)
        return entry.tsx.state if entry is not None else None

    @property
    def heap_size(self) -> int:
        """Timer heap entries, stale ones included (bounded by ~2x live transactions)."""
        return len(self._heap)

    # --- from the transport -----------------------------------------------------------------
    def receive(
        self, msg: Request | Response, source: Any, now: float, *, reliable: bool | None = None
    ) -> list[Action]:
        """A message arrived from the transport over the flow ``source``.

        ``reliable`` says whether a server transaction created by this request runs over a
        reliable transport; by default it is read from the top Via's transport (UDP: not).
        Responses to a new request are sent to ``source``.
        """
        if msg.is_request:
            return self._receive_request(msg, source, now, reliable)  # type: ignore[arg-type]
        return self._receive_response(msg, source, now)  # type: ignore[arg-type]

    def transport_error(self, key: TransactionKey, now: float, reason: str = "") -> list[Action]:
        """The transport failed to send a message of transaction ``key``.

        A key the layer no longer knows is ignored (the transaction ended meanwhile).
        """
        entry = self._tsxs.get(key)
        if entry is None:
            return []
        actions = entry.tsx.transport_error(now, reason)
        self._settle(key, entry, now, actions)
        return actions

    # --- from the TU ------------------------------------------------------------------------
    def send_request(
        self, request: Request, dest: Any, reliable: bool, now: float
    ) -> tuple[ClientKey | None, list[Action]]:
        """Start a client transaction for ``request``, sent to ``dest``.

        The top Via branch must carry the magic cookie and be new. An ACK (for a 2xx) is
        sent without a transaction: the key is None. A CANCEL is :meth:`cancel` with this
        request (it goes where its INVITE went; ``dest`` and ``reliable`` are not used).
        """
        if request.method == "ACK":
            return None, [Send(request, dest)]
        key = client_key(request)
        if request.method == "CANCEL":
            return self.cancel(ClientKey(key.branch, "INVITE"), now, request=request)
        if key in self._tsxs:
            raise LocalProtocolError(f"a transaction {key} already exists; use a new branch")
        cls = InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
        tsx = cls(key, request, dest, reliable=reliable, config=self.config)
        actions = tsx.start(now)
        entry = self._add(key, tsx)
        self._settle(key, entry, now, actions)
        return key, actions

    def send_response(self, key: TransactionKey, response: Response, now: float) -> list[Action]:
        """The TU answers on server transaction ``key``."""
        entry = self._tsxs.get(key)
        if entry is None or not isinstance(entry.tsx, ServerTransaction):
            raise LocalProtocolError(f"no server transaction {key}")
        actions = entry.tsx.send_response(response, now)
        self._settle(key, entry, now, actions)
        return actions

    def cancel(
        self, key: ClientKey, now: float, *, request: Request | None = None
    ) -> tuple[ClientKey, list[Action]]:
        """CANCEL the INVITE client transaction ``key`` (RFC 3261 §9.1).

        ``request`` is the CANCEL to send (default: ``builders.make_cancel`` of the INVITE).
        Sent at once if the INVITE is in Proceeding; queued if it is still Calling (sent on
        the first 1xx, dropped if a final response or a timeout comes first). Raises
        LocalProtocolError if the INVITE already has a final response or is unknown, or was
        cancelled already. Returns the CANCEL's client key.
        """
        entry = self._tsxs.get(key)
        if entry is None or not isinstance(entry.tsx, InviteClientTransaction):
            raise LocalProtocolError(f"no INVITE client transaction {key} to cancel")
        ict = entry.tsx
        if request is None:
            request = builders.make_cancel(ict.request)
        elif request.method != "CANCEL" or client_key(request) != ClientKey(key.branch, "CANCEL"):
            raise LocalProtocolError("a CANCEL must have method CANCEL and the INVITE's branch")
        cancel_key = ClientKey(key.branch, "CANCEL")
        if cancel_key in self._tsxs or key in self._pending_cancels:
            raise LocalProtocolError(f"{key} is already being cancelled")
        actions: list[Action] = []
        if ict.state is S.CALLING:
            self._pending_cancels[key] = _PendingCancel(cancel_key, request)
        elif ict.state is S.PROCEEDING:
            self._start_cancel(ict, _PendingCancel(cancel_key, request), now, actions)
        else:
            raise LocalProtocolError(f"{key} is {ict.state.name}: a final response came already")
        return cancel_key, actions

    # --- time -------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest time :meth:`on_timer` has work; None when no timer runs."""
        heap = self._heap
        while heap:
            deadline, seq, key = heap[0]
            entry = self._tsxs.get(key)
            if entry is not None and entry.seq == seq:
                return deadline
            heapq.heappop(heap)
        return None

    def on_timer(self, now: float) -> list[Action]:
        """Fire every timer due at ``now``, across all transactions, earliest first."""
        actions: list[Action] = []
        while self._heap and self._heap[0][0] <= now:  # _settle may compact: no local alias
            _deadline, seq, key = heapq.heappop(self._heap)
            entry = self._tsxs.get(key)
            if entry is None or entry.seq != seq:
                continue
            entry.deadline, entry.seq = None, -1
            fired = entry.tsx.on_timer(now)
            self._settle(key, entry, now, fired)
            actions += fired
        return actions

    # --- internals --------------------------------------------------------------------------
    def _receive_response(self, response: Response, source: Any, now: float) -> list[Action]:
        key = client_key_for_response(response)
        entry = self._tsxs.get(key) if key is not None else None
        if entry is None or not isinstance(entry.tsx, ClientTransaction):
            return [ToTU(response, None, source)]
        assert key is not None
        actions = entry.tsx.receive_response(response, now, source)
        self._settle(key, entry, now, actions)
        return actions

    def _receive_request(
        self, request: Request, source: Any, now: float, reliable: bool | None
    ) -> list[Action]:
        if request.method == "ACK":
            found = self._find_invite_for_ack(request)
            if found is None:
                return [ToTU(request, None, source)]
            key, entry = found
            actions = entry.tsx.receive_request(request, now, source)  # type: ignore[attr-defined]
            self._settle(key, entry, now, actions)
            return actions

        key = server_key(request)
        entry = self._tsxs.get(key)
        if entry is not None:  # a retransmission
            actions = entry.tsx.receive_request(request, now, source)  # type: ignore[attr-defined]
            self._settle(key, entry, now, actions)
            return actions

        if reliable is None:
            reliable = request.top_via.transport.upper() not in UNRELIABLE_TRANSPORTS
        cls = InviteServerTransaction if request.method == "INVITE" else NonInviteServerTransaction
        tsx = cls(key, request, source, reliable=reliable, config=self.config)
        actions = tsx.start(now)
        entry = self._add(key, tsx)
        if request.method == "CANCEL":
            invite_key = server_key(request, method="INVITE")
            invite = self._tsxs.get(invite_key)
            if invite is not None and isinstance(invite.tsx, InviteServerTransaction):
                actions.append(CancelRequest(request, key, invite_key, invite.tsx.pending, source))
            else:
                actions.append(CancelRequest(request, key, None, False, source))
        else:
            merge_id = _merge_id(request)
            original = self._merge_index.get(merge_id) if merge_id is not None else None
            if original is not None and request.to.tag is None:
                actions.append(MergedRequest(request, key, original, source))
            else:
                actions.append(ToTU(request, key, source))
                if merge_id is not None and original is None:
                    self._merge_index[merge_id] = key
                    entry.merge_id = merge_id
        self._settle(key, entry, now, actions)
        return actions

    def _find_invite_for_ack(self, ack: Request) -> tuple[TransactionKey, _Entry] | None:
        key = server_key(ack, method="INVITE")
        entry = self._tsxs.get(key)
        if entry is None and isinstance(key, LegacyServerKey) and key.to_tag is not None:
            # RFC 2543: the ACK carries the To tag of our response; the INVITE had none.
            bare = without_to_tag(key)
            candidate = self._tsxs.get(bare)
            if candidate is not None:
                last = candidate.tsx.last_response
                if last is not None and last.to.tag == key.to_tag:
                    key, entry = bare, candidate
        if entry is None or not isinstance(entry.tsx, InviteServerTransaction):
            return None
        return key, entry

    def _add(self, key: TransactionKey, tsx: Transaction) -> _Entry:
        entry = _Entry(tsx)
        self._tsxs[key] = entry
        return entry

    def _settle(self, key: TransactionKey, entry: _Entry, now: float, actions: list[Action]) -> None:
        """After any input: release or drop a queued CANCEL, forget or reschedule ``key``."""
        tsx = entry.tsx
        if self._pending_cancels and key in self._pending_cancels and tsx.state is not S.CALLING:
            pending = self._pending_cancels.pop(key)
            if tsx.state is S.PROCEEDING:
                self._start_cancel(tsx, pending, now, actions)  # type: ignore[arg-type]
            else:
                actions.append(TransactionTerminated(pending.key))
        if tsx.terminated:
            self._remove(key, entry)
        else:
            self._reschedule(key, entry)

    def _start_cancel(
        self, ict: InviteClientTransaction, pending: _PendingCancel, now: float, actions: list[Action]
    ) -> None:
        tsx = NonInviteClientTransaction(
            pending.key, pending.request, ict.dest, reliable=ict.reliable, config=self.config
        )
        started = tsx.start(now)
        entry = self._add(pending.key, tsx)
        self._settle(pending.key, entry, now, started)
        actions += started

    def _remove(self, key: TransactionKey, entry: _Entry) -> None:
        del self._tsxs[key]
        entry.seq = -1
        if entry.merge_id is not None and self._merge_index.get(entry.merge_id) == key:
            del self._merge_index[entry.merge_id]
        self._maybe_compact()

    def _reschedule(self, key: TransactionKey, entry: _Entry) -> None:
        deadline = entry.tsx.next_deadline()
        if deadline == entry.deadline:
            return
        entry.deadline = deadline
        if deadline is None:
            entry.seq = -1
        else:
            entry.seq = seq = next(self._seq)
            heapq.heappush(self._heap, (deadline, seq, key))
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        if len(self._heap) > 2 * len(self._tsxs) + 64:
            self._heap = [
                (e.deadline, e.seq, k) for k, e in self._tsxs.items() if e.deadline is not None and e.seq >= 0
            ]
            heapq.heapify(self._heap)


def _merge_id(request: Request) -> _MergeId | None:
    tag = request.from_.tag
    if tag is None:
        return None
    return (tag, request.call_id, request.cseq.seq, request.cseq.method)
