"""Fault injection for the call controller in memory: seeded random schedules and the invariants
of DESIGN "The caller is never dropped", checked after every schedule (issue 7's Proof).

A :class:`Schedule` is plain data — a dict literal that ``repr`` prints and ``eval`` reads back —
made by :func:`generate` from one seed: how many answer points and how each answers, when each
call is placed (with or without an SDP offer), and a list of ``(time, action, args)``. Actions:

=========================  =====================================================================
``ap_die`` / ``ap_revive``  unplug a position / plug a fresh one in (``ap``: a name, or ``"@<i>"``
                            — whichever position holds call *i* at that instant)
``ap_hangup``               the position hangs up call *i*'s leg (BYE)
``ap_hold``                 the position re-INVITEs (a=sendonly) — a relayed media change
``caller_hangup``           the caller hangs up call *i* (CANCEL before the answer, BYE after)
``caller_reinvite``         the caller re-INVITEs call *i* (``change``: new media, else a refresh)
``caller_next_reinvite``    how the caller answers its next re-INVITE on call *i*: ``status``
                            (200, 491, 488, 408, 481, 500, or None: never answers) after ``delay``
                            (``count``: the next so many);
                            a party that answers 481 forgets the dialog (it means "no such dialog")
``ap_next_reinvite``        the same for the position ``ap``
``drop``                    lose the next ``n`` packets matching ``src``/``dst``/``method``/``kind``
``db_cut``                  the store is unreachable for ``seconds`` (writes queue, as the
                            write-behind store queues them, and are replayed in order after)
``when``                    arm a one-shot trigger: when a packet matches ``match``, run ``then``
                            (an action) ``delay`` s later — ``"$src"``/``"$dst"`` name the packet's
                            parties. This is how a position dies *exactly* while ringing,
                            answering (its 200 in flight) or mid-move (the caller's re-INVITE out)
=========================  =====================================================================

:func:`run_schedule` builds a :class:`~ng911.testing.psap.PsapHarness` on the fake clock, places
the calls, plays the actions, then *heals* (no more loss, the database back, every party
well-behaved again — dead positions stay dead) and lets the controller settle for longer than
every RFC 3261 timer plus ``FailoverSpec.caller_reinvite_give_up``. It checks the live state,
then the caller hangs up every call it still has, and after a drain the rest is checked. The
result's ``violations`` are ``(category, message)`` pairs; :meth:`RunResult.report` prints the
schedule literal (replay it with ``run_schedule(Schedule.from_literal(...))`` or by seed) and the
tail of the packet trace.

The invariants (each a function over plain data, so each can be shown to fail on a made-up case):

- ``caller_bye``: the controller BYEs the caller only in a call whose ``ended`` event names a
  reason of ``BYE_CALLER_ALLOWED`` — and the reason's condition happened: an answer point's BYE
  for ``answer_point_hangup``, failed re-INVITEs of the caller for ``caller_unreachable`` (for at
  least the give-up limit), a 488 from the caller for ``no_compatible_media``, no ACK delivered
  for ``no_ack``; ``operator_release`` never (no operator in a schedule).
- ``invite_overlap``: on every dialog, the controller never sends an in-dialog INVITE while, as far
  as it can know, another INVITE transaction on that dialog is in progress: one it sent whose
  final response has not reached it (nor has its Timer B fired), or one it received and has not
  sent a final response to (RFC 3261 §14.1; a new INVITE after the final response, before the
  ACK, is allowed). ``unanswered_reinvite``: an in-dialog INVITE it received and never answered.
- ``terminal``: after the settle time every call is ended with both its dialogs terminated at the
  controller *and* at the caller (never a caller left in a dialog we forgot), or is live with the
  caller's dialog up and either TALKING on a confirmed PSAP leg to a live position, or (only if no
  live position is free) still hunting. No controller dialog outlives its call.
- ``occupancy``: after everyone has hung up, no live calls, no controller dialogs, every
  position's ``active`` back to zero, no position still holding a leg.
- ``event_log``: each call's events carry its states (``data["state"]``) along
  ``TRANSITIONS`` from ``routing``; every state the call was seen in (sampled after every clock
  step) is in that sequence; the last event is ``ended`` with an ``EndReason``; the row's
  ``state`` is the last state (and ``end_reason`` the ended event's).
- ``provisional_gap``: a caller waiting for an answer gets a provisional at least every 60 s.
- ``exception``: nothing raised on the clock, nothing logged at ERROR by ``ng911``.
"""
from __future__ import annotations

import logging
import math
import random
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from ng911 import sdp as sdplib
from ng911.call.sdpbody import sdp_of
from ng911.call.state import BYE_CALLER_ALLOWED, TRANSITIONS, CallState, EndReason
from ng911.routing.model import FailoverSpec
from ng911.sip.message import Request, Response
from ng911.sip.ua import Session
from ng911.testing.loop import Packet
from ng911.testing.psap import CALLER_HOST, ApScript, PsapHarness, answer_to, make_sdp

__all__ = [
    "Schedule",
    "RunResult",
    "OutageStore",
    "generate",
    "run_schedule",
    "check_invite_overlap",
    "check_caller_byes",
    "check_event_log",
    "REINVITE_STATUSES",
]

T1 = 0.5  # the harness's TimerConfig: Timer B = 64 * T1
TIMER_B = 64 * T1
REINVITE_STATUSES = (491, 488, 408, 481, 500)
CALLER = "esrp"
CTL = "ctl"
#: caller offers audio + real-time text, its own o= session 555
CALLER_MEDIA = ("audio", "text")

Action = tuple[float, str, dict[str, Any]]
Violation = tuple[str, str]


# --- schedules ---------------------------------------------------------------------------------


@dataclass
class Schedule:
    seed: int
    aps: int = 3
    scripts: dict[str, dict[str, Any]] = field(default_factory=dict)  # ApScript kwargs per AP
    calls: list[dict[str, Any]] = field(default_factory=list)  # {"at": s, "offer": bool}
    actions: list[Action] = field(default_factory=list)
    end: float = 60.0  # when the last action may happen; healing starts here

    def literal(self) -> str:
        """A Python literal: ``Schedule.from_literal(text)`` rebuilds this schedule."""
        d = {"seed": self.seed, "aps": self.aps, "scripts": self.scripts, "calls": self.calls,
             "actions": [tuple(a) for a in self.actions], "end": self.end}
        return repr(d)

    @classmethod
    def from_literal(cls, text: str | Mapping[str, Any]) -> Schedule:
        import ast

        d = ast.literal_eval(text) if isinstance(text, str) else dict(text)
        return cls(seed=d["seed"], aps=d["aps"], scripts=d["scripts"], calls=d["calls"],
                   actions=[(float(t), n, dict(a)) for t, n, a in d["actions"]], end=d["end"])


def _pick(rng: random.Random, weighted: Sequence[tuple[Any, float]]) -> Any:
    items, weights = zip(*weighted)
    return rng.choices(items, weights)[0]


def generate(seed: int) -> Schedule:
    """A random schedule, the same for the same seed."""
    rng = random.Random(seed)
    n_aps = _pick(rng, [(1, 1), (2, 3), (3, 4), (4, 2)])
    n_calls = _pick(rng, [(1, 6), (2, 3), (3, 1)])
    names = [f"ap{i + 1}" for i in range(n_aps)]
    scripts: dict[str, dict[str, Any]] = {}
    for name in names:
        kind = _pick(rng, [("normal", 10), ("slow", 2), ("silent", 1), ("reject", 1), ("early", 1)])
        if kind == "normal":
            scripts[name] = {"answer_after": round(rng.uniform(0.2, 3.0), 3)}
        elif kind == "slow":  # rings long, past the ring timeout sometimes
            scripts[name] = {"answer_after": round(rng.uniform(5.0, 25.0), 3)}
        elif kind == "silent":  # no provisional: the no-1xx timer
            scripts[name] = {"provisional": None, "answer_after": round(rng.uniform(0.5, 4.0), 3)}
        elif kind == "reject":
            scripts[name] = {"reject": rng.choice([486, 480, 503, 603]), "reject_after": round(rng.uniform(0, 2), 3)}
        else:
            scripts[name] = {"provisional": 183, "early": True, "answer_after": round(rng.uniform(0.5, 3.0), 3)}
    end = round(rng.uniform(15.0, 70.0), 3)
    # ng911: a multipart INVITE with a PIDF-LO (too big for UDP: the dialog runs over TCP, where
    # nothing is lost), else a plain SDP INVITE (UDP: where packets get lost)
    calls = [{"at": 0.0 if i == 0 else round(rng.uniform(0.0, end * 0.6), 3), "offer": rng.random() > 0.15,
              "ng911": rng.random() < 0.4} for i in range(n_calls)]

    def ap_ref() -> str:
        return f"@{rng.randrange(n_calls)}" if rng.random() < 0.6 else rng.choice(names)

    def status() -> int | None:
        return _pick(rng, [(491, 3), (488, 3), (408, 2), (481, 2), (500, 2), (None, 1), (200, 1)])

    def one_action() -> tuple[str, dict[str, Any]]:
        i = rng.randrange(n_calls)
        kind = _pick(rng, [
            ("ap_die", 10), ("ap_revive", 4), ("ap_hangup", 2), ("ap_hold", 3), ("caller_hangup", 2),
            ("caller_reinvite", 8), ("caller_next_reinvite", 8), ("ap_next_reinvite", 4), ("drop", 6),
            ("db_cut", 3), ("when", 10),
        ])
        if kind == "ap_die":
            return kind, {"ap": ap_ref()}
        if kind == "ap_revive":
            return kind, {"ap": rng.choice(names)}
        if kind in ("ap_hangup", "ap_hold"):
            return kind, {"ap": f"@{i}"}
        if kind == "caller_hangup":
            return kind, {"call": i}
        if kind == "caller_reinvite":
            return kind, {"call": i, "change": rng.random() < 0.5}
        if kind == "caller_next_reinvite":
            # count > 1: a caller that keeps failing (the give-up rule's case)
            return kind, {"call": i, "status": status(), "delay": rng.choice([0.0, 0.0, 0.05, 1.0, 5.0]),
                          "count": _pick(rng, [(1, 6), (3, 1), (50, 2)])}
        if kind == "ap_next_reinvite":
            return kind, {"ap": ap_ref(), "status": status(), "delay": rng.choice([0.0, 0.05, 1.0])}
        if kind == "drop":
            src, dst = _pick(rng, [((CALLER, CTL), 3), ((CTL, CALLER), 3), (("ap*", CTL), 2), ((CTL, "ap*"), 2)])
            method = _pick(rng, [("INVITE", 4), ("ACK", 2), ("BYE", 1), ("OPTIONS", 1), ("UPDATE", 1), (None, 1)])
            return kind, {"n": rng.randint(1, 4), "src": src, "dst": dst, "method": method,
                          "kind": _pick(rng, [("response", 3), ("request", 2), (None, 1)])}
        if kind == "db_cut":
            return kind, {"seconds": round(rng.uniform(0.5, 30.0), 3)}
        # a trigger: the instant that makes the fault interesting
        trig = _pick(rng, [("ringing", 3), ("answering", 3), ("move", 4), ("caller_reinvite", 2), ("ap_invite", 2)])
        if trig == "ringing":  # the position dies while it rings
            match = {"src": "ap*", "dst": CTL, "method": "INVITE", "status": [180, 183]}
            then = ["ap_die", {"ap": "$src"}]
        elif trig == "answering":  # its 200 is on the wire: the ACK will find nobody
            match = {"src": "ap*", "dst": CTL, "method": "INVITE", "status": [200]}
            then = ["ap_die", {"ap": "$src"}]
        elif trig == "move":  # the caller is being re-INVITEd: the new position dies, or the caller acts
            match = {"src": CTL, "dst": CALLER, "method": "INVITE", "in_dialog": True, "kind": "request"}
            then = _pick(rng, [(["ap_die", {"ap": f"@{i}"}], 3), (["caller_reinvite", {"call": i, "change": True}], 2),
                               (["caller_hangup", {"call": i}], 1), (["ap_hangup", {"ap": f"@{i}"}], 1)])
        elif trig == "caller_reinvite":  # the caller's own re-INVITE is out when the position dies
            match = {"src": CALLER, "dst": CTL, "method": "INVITE", "in_dialog": True, "kind": "request"}
            then = ["ap_die", {"ap": f"@{i}"}]
        else:  # a position is invited (a hunt or a move): the caller re-INVITEs or the position dies
            match = {"src": CTL, "dst": "ap*", "method": "INVITE", "in_dialog": False, "kind": "request"}
            then = _pick(rng, [(["caller_reinvite", {"call": i, "change": rng.random() < 0.5}], 1),
                               (["ap_die", {"ap": "$dst"}], 1)])
        return "when", {"match": match, "then": then, "delay": rng.choice([0.0, 0.0, 0.005, 0.02, 0.3])}

    actions: list[Action] = []
    # The classic: the position dies while talking, now and then with the caller re-INVITEing.
    if rng.random() < 0.5:
        at = round(rng.uniform(2.0, end), 3)
        if rng.random() < 0.5:  # and the caller answers the move badly
            actions.append((at, "caller_next_reinvite", {"call": 0, "status": status(), "delay": rng.choice([0.0, 1.0])}))
        actions.append((at, "ap_die", {"ap": "@0"}))
        if rng.random() < 0.3:
            actions.append((at, "caller_reinvite", {"call": 0, "change": rng.random() < 0.5}))
    for _ in range(rng.randint(2, 12)):
        name, args = one_action()
        actions.append((round(rng.uniform(0.0, end), 3), name, args))
    actions.sort(key=lambda a: a[0])
    return Schedule(seed=seed, aps=n_aps, scripts=scripts, calls=calls, actions=actions, end=end)


# --- the store with an outage switch ------------------------------------------------------------


class OutageStore:
    """A ``CallStore`` in front of a :class:`~ng911.store.memory.MemoryStore` whose database
    can be cut: while :attr:`down`, writes queue (as the write-behind store's queue grows while
    it retries); :meth:`restore` replays them in order. Reads go straight through."""

    WRITES = ("call_created", "call_updated", "leg_saved", "event", "ap_health", "abandoned")

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False
        self.backlog: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.max_backlog = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in self.WRITES:
            return attr

        def write(*args: Any, **kwargs: Any) -> None:
            if self.down:
                self.backlog.append((name, args, kwargs))
                self.max_backlog = max(self.max_backlog, len(self.backlog))
                return
            attr(*args, **kwargs)

        return write

    @property
    def queue_depth(self) -> int:
        return len(self.backlog)

    def cut(self) -> None:
        self.down = True

    def restore(self) -> None:
        self.down = False
        backlog, self.backlog = self.backlog, []
        for name, args, kwargs in backlog:
            getattr(self.inner, name)(*args, **kwargs)


# --- wire helpers ------------------------------------------------------------------------------


def _party_matches(pattern: str | None, name: str) -> bool:
    if pattern is None:
        return True
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return name == pattern


def _is_in_dialog_invite(p: Packet) -> bool:
    return isinstance(p.message, Request) and p.message.method == "INVITE" and bool(p.message.to.tag)


def packet_matches(p: Packet, match: Mapping[str, Any]) -> bool:
    """``match``: src, dst (names, ``"ap*"`` for any position), method, kind (request/response),
    status (a list), in_dialog (To tag present)."""
    msg = p.message
    if msg is None:
        return False
    if not _party_matches(match.get("src"), p.src_name) or not _party_matches(match.get("dst"), p.dst_name):
        return False
    if match.get("method") is not None and p.method != match["method"]:
        return False
    kind = match.get("kind")
    if kind == "request" and not p.is_request or kind == "response" and p.is_request:
        return False
    if match.get("status") is not None and p.status not in match["status"]:
        return False
    if match.get("in_dialog") is not None and p.is_request and bool(msg.to.tag) != match["in_dialog"]:
        return False
    return True


def _send_point(p: Packet) -> tuple[float, float]:
    return (p.sent_at, float(p.seq))


def _delivery_point(p: Packet) -> tuple[float, float] | None:
    if p.delivered_at is None:
        return None
    return (p.delivered_at, getattr(p, "delivered_order", float("inf")))


@dataclass
class InviteTx:
    """One in-dialog INVITE transaction as one party (``owner``) sees it."""

    call_id: str
    sender: str
    cseq: int
    start: tuple[float, float]
    end: tuple[float, float]
    sent_by_owner: bool
    answered: bool


def invite_transactions(packets: Sequence[Packet], party: str, *, timer_b: float = TIMER_B) -> dict[str, list[InviteTx]]:
    """Every in-dialog INVITE transaction on each dialog (Call-ID) of ``party``, as it sees them:
    one it sent lasts from its first transmission until a final response reaches it (or its
    Timer B fires); one it received lasts from its first arrival until it sends a final
    response (forever when it never does)."""
    sent: dict[tuple[str, int], Packet] = {}
    received: dict[tuple[str, Any, int], Packet] = {}
    finals_in: dict[tuple[str, int], tuple[float, float]] = {}
    finals_out: dict[tuple[str, Any, int], tuple[float, float]] = {}
    for p in packets:
        msg = p.message
        if msg is None or msg.cseq.method != "INVITE":
            continue
        if isinstance(msg, Request):
            if not msg.to.tag:
                continue
            if p.src_name == party:
                sent.setdefault((msg.call_id, msg.cseq.seq), p)
            elif p.dst_name == party and p.delivered_at is not None:
                key = (msg.call_id, p.src, msg.cseq.seq)
                if key not in received or _delivery_point(p) < _delivery_point(received[key]):  # type: ignore[operator]
                    received[key] = p
        elif isinstance(msg, Response) and msg.status >= 200:
            if p.dst_name == party and p.delivered_at is not None:
                key2 = (msg.call_id, msg.cseq.seq)
                point = _delivery_point(p)
                if key2 not in finals_in or point < finals_in[key2]:  # type: ignore[operator]
                    finals_in[key2] = point  # type: ignore[assignment]
            elif p.src_name == party:
                key3 = (msg.call_id, p.dst, msg.cseq.seq)
                finals_out.setdefault(key3, _send_point(p))
    out: dict[str, list[InviteTx]] = defaultdict(list)
    for (cid, seq), p in sent.items():
        start = _send_point(p)
        timeout = (p.sent_at + timer_b, 0.0)
        final = finals_in.get((cid, seq))
        # Only a response to *our* INVITE: the same CSeq number from the peer's space is keyed
        # by direction (ours are matched by responses delivered to us).
        end = min(final, timeout) if final is not None else timeout
        out[cid].append(InviteTx(cid, party, seq, start, end, True, final is not None))
    for (cid, sender, seq), p in received.items():
        start = _delivery_point(p)
        final = finals_out.get((cid, sender, seq))
        end = final if final is not None else (math.inf, math.inf)
        out[cid].append(InviteTx(cid, p.src_name, seq, start, end, False, final is not None))  # type: ignore[arg-type]
    return out


def check_invite_overlap(packets: Sequence[Packet], party: str = CTL, *, timer_b: float = TIMER_B,
                         horizon: float | None = None, category: str = "invite_overlap",
                         unanswered: bool = True) -> list[Violation]:
    """RFC 3261 §14.1 as ``party`` must keep it: no in-dialog INVITE sent while another INVITE
    transaction on the dialog is in progress (in either direction, as far as ``party`` knows);
    every in-dialog INVITE it received is answered (``horizon``: the time the capture ends;
    a request that arrived within 1 s of it may still be pending)."""
    out: list[Violation] = []
    for cid, txs in invite_transactions(packets, party, timer_b=timer_b).items():
        for tx in txs:
            if not tx.sent_by_owner:
                if unanswered and not tx.answered and (horizon is None or tx.start[0] < horizon - 1.0):
                    out.append(("unanswered_reinvite", f"{party} never answered the re-INVITE CSeq {tx.cseq} "
                                f"{tx.sender} sent on {cid} (arrived t={tx.start[0]:.3f})"))
                continue
            for other in txs:
                if other is tx:
                    continue
                if other.start < tx.start < other.end:
                    what = (f"its own re-INVITE CSeq {other.cseq} (sent t={other.start[0]:.3f}, "
                            + ("final response" if other.answered else "no final response, Timer B")
                            + f" at t={other.end[0]:.3f})") if other.sent_by_owner else (
                        f"{other.sender}'s re-INVITE CSeq {other.cseq} (arrived t={other.start[0]:.3f}, "
                        + (f"answered t={other.end[0]:.3f})" if other.answered else "never answered)"))
                    out.append((category, f"{party} sent re-INVITE CSeq {tx.cseq} on {cid} at t={tx.start[0]:.3f} "
                                f"while {what} was in progress"))
                    break
    return out


# --- per-call facts and the checks over them --------------------------------------------------------


@dataclass
class CallFacts:
    """What a check needs to know of one placed call, gathered from the wire, the store and the
    parties (plain data: a check can be fed a made-up one)."""

    index: int
    sip_call_id: str  # the caller's dialog
    call_id: str | None = None  # the controller's id (None: the call was never admitted)
    nena_call_id: str | None = None
    psap_call_ids: set[str] = field(default_factory=set)
    events: list[dict[str, Any]] = field(default_factory=list)
    row: dict[str, Any] | None = None
    observed_states: list[str] = field(default_factory=list)
    current_state: str | None = None  # the controller's Call.state now


def _ended_event(events: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    found = [e for e in events if e["kind"] == "ended"]
    return found[-1] if found else None


def check_caller_byes(facts: CallFacts, packets: Sequence[Packet], *, give_up: float,
                      operator: bool = False) -> list[Violation]:
    """A BYE from the controller to the caller only under a reason of ``BYE_CALLER_ALLOWED``
    whose condition did happen."""
    byes = [p for p in packets if p.src_name == CTL and p.dst_name == CALLER and p.method == "BYE"
            and p.is_request and p.message is not None and p.message.call_id == facts.sip_call_id]
    if not byes:
        return []
    bye_at = byes[0].sent_at
    tag = f"call {facts.index} ({facts.call_id}, {facts.sip_call_id})"
    ended = _ended_event(facts.events)
    if ended is None:
        return [("caller_bye", f"{tag}: the caller got a BYE at t={bye_at:.3f} but the call has no ended event")]
    reason = ended["data"].get("reason")
    allowed = {r.value for r in BYE_CALLER_ALLOWED}
    if reason not in allowed:
        return [("caller_bye", f"{tag}: the caller got a BYE at t={bye_at:.3f}; the call ended with reason "
                 f"{reason!r}, not one of {sorted(allowed)}")]
    mine = [p for p in packets if p.message is not None and p.message.call_id == facts.sip_call_id]
    if reason == EndReason.AP_HANGUP.value:
        ap_byes = [p for p in packets if p.src_name.startswith("ap") and p.dst_name == CTL and p.is_request
                   and p.method == "BYE" and p.message is not None and p.message.call_id in facts.psap_call_ids
                   and p.delivered_at is not None and p.delivered_at <= bye_at]
        if not ap_byes:
            return [("caller_bye", f"{tag}: ended as {reason} (caller BYE'd t={bye_at:.3f}) but no position's BYE "
                     "on its PSAP legs reached the controller before")]
    elif reason == EndReason.OPERATOR.value:
        if not operator:
            return [("caller_bye", f"{tag}: ended as {reason} but nobody released it")]
    elif reason == EndReason.CALLER_UNREACHABLE.value:
        reinvites = [p for p in mine if p.src_name == CTL and _is_in_dialog_invite(p) and p.sent_at <= bye_at]
        finals = {p.message.cseq.seq: p.status for p in mine  # type: ignore[union-attr]
                  if p.dst_name == CTL and p.status is not None and p.status >= 200 and p.method == "INVITE"
                  and p.delivered_at is not None and p.delivered_at <= bye_at}
        failed = [p for p in reinvites if not 200 <= (finals.get(p.message.cseq.seq) or 0) < 300]  # type: ignore[union-attr]
        if not failed:
            return [("caller_bye", f"{tag}: ended as {reason} (BYE t={bye_at:.3f}) without a failed re-INVITE of the caller")]
        first = min(p.sent_at for p in failed)
        if bye_at - first < give_up - 1.0:
            return [("give_up_early", f"{tag}: ended as {reason} {bye_at - first:.3f} s after the first failed "
                     f"re-INVITE (t={first:.3f}); the limit is {give_up} s")]
    elif reason == EndReason.NO_COMPATIBLE_MEDIA.value:
        refused = [p for p in mine if p.src_name == CALLER and p.status in (488, 606) and p.method == "INVITE"
                   and p.sent_at <= bye_at]
        if not refused:
            return [("caller_bye", f"{tag}: ended as {reason} but the caller never answered 488/606")]
    elif reason == EndReason.NO_ACK.value:
        initial_seq = next((p.message.cseq.seq for p in mine if p.src_name == CALLER and p.is_request  # type: ignore[union-attr]
                            and p.method == "INVITE" and not p.message.to.tag), None)  # type: ignore[union-attr]
        acked = [p for p in mine if p.src_name == CALLER and p.method == "ACK" and p.delivered_at is not None
                 and p.delivered_at <= bye_at and p.message.cseq.seq == initial_seq]  # type: ignore[union-attr]
        if acked:
            return [("caller_bye", f"{tag}: ended as {reason} but the caller's ACK reached the controller "
                     f"at t={acked[0].delivered_at:.3f}")]
    return []


def check_provisionals(facts: CallFacts, packets: Sequence[Packet], *, every: float = 60.0,
                       until: float | None = None) -> list[Violation]:
    """A caller waiting for an answer gets a provisional (other than 100) at least every
    ``every`` seconds (RFC 3261 §13.3.1.1; DESIGN) until its INVITE's final response."""
    mine = [p for p in packets if p.message is not None and p.message.call_id == facts.sip_call_id]
    invite = next((p for p in mine if p.src_name == CALLER and p.is_request and p.method == "INVITE"
                   and not p.message.to.tag), None)  # type: ignore[union-attr]
    if invite is None or invite.delivered_at is None:
        return []
    seq = invite.message.cseq.seq  # type: ignore[union-attr]
    final = next((p.sent_at for p in mine if p.src_name == CTL and p.method == "INVITE" and p.status is not None
                  and p.status >= 200 and p.message.cseq.seq == seq), None)  # type: ignore[union-attr]
    end = final if final is not None else until
    if end is None:
        return []
    # the caller's CANCEL ends the wait too
    cancel = next((p.delivered_at for p in mine if p.src_name == CALLER and p.method == "CANCEL"
                   and p.delivered_at is not None), None)
    if cancel is not None:
        end = min(end, cancel)
    marks = [invite.delivered_at] + [p.sent_at for p in mine if p.src_name == CTL and p.method == "INVITE"
                                     and p.status is not None and 100 < p.status < 200
                                     and p.message.cseq.seq == seq] + [end]  # type: ignore[union-attr]
    marks.sort()
    gaps = [b - a for a, b in zip(marks, marks[1:]) if b <= end]
    worst = max(gaps) if gaps else 0.0
    if worst > every:
        return [("provisional_gap", f"call {facts.index} ({facts.call_id}): waited {worst:.1f} s without a provisional "
                 f"(limit {every:.0f} s) before its INVITE's final response")]
    return []


def check_event_log(facts: CallFacts, *, final: bool) -> list[Violation]:
    """The event log holds every transition (``final``: the call must have ended by now)."""
    out: list[Violation] = []
    tag = f"call {facts.index} ({facts.call_id})"
    states = [e["data"]["state"] for e in facts.events if isinstance(e.get("data"), dict) and "state" in e["data"]]
    valid = {s.value for s in CallState}
    if not facts.events:
        return [("event_log", f"{tag}: no events at all")]
    if not states:
        return [("event_log", f"{tag}: no event carries a state (kinds {[e['kind'] for e in facts.events]})")]
    bad = [s for s in states if s not in valid]
    if bad:
        out.append(("event_log", f"{tag}: states not in CallState: {bad}"))
        return out
    if states[0] != CallState.ROUTING.value:
        out.append(("event_log", f"{tag}: the first state is {states[0]!r}, not 'routing'"))
    for a, b in zip(states, states[1:]):
        if CallState(b) not in TRANSITIONS[CallState(a)]:
            out.append(("event_log", f"{tag}: transition {a} -> {b} is not in the table (states {states})"))
            break
    # Every state the call was seen in, in order, is in the logged sequence.
    it = iter(states)
    if not all(any(s == x for x in it) for s in facts.observed_states):
        out.append(("event_log", f"{tag}: states seen {facts.observed_states} are not a subsequence of the "
                    f"logged {states}"))
    ended = _ended_event(facts.events)
    if final or ended is not None:
        if ended is None:
            out.append(("event_log", f"{tag}: no ended event (last events {[e['kind'] for e in facts.events[-4:]]})"))
        else:
            if facts.events[-1] is not ended:
                out.append(("event_log", f"{tag}: events after ended: {[e['kind'] for e in facts.events[facts.events.index(ended) + 1:]]}"))
            if sum(1 for e in facts.events if e["kind"] == "ended") > 1:
                out.append(("event_log", f"{tag}: more than one ended event"))
            reason = ended["data"].get("reason")
            if reason not in {r.value for r in EndReason}:
                out.append(("end_reason", f"{tag}: ended with reason {reason!r}, not an EndReason"))
            if states[-1] != CallState.ENDED.value:
                out.append(("event_log", f"{tag}: ended event but last logged state {states[-1]!r}"))
            if facts.row is not None and facts.row.get("end_reason") not in (None, reason):
                out.append(("event_log", f"{tag}: row end_reason {facts.row.get('end_reason')!r} != ended event's {reason!r}"))
    if facts.current_state is not None and facts.current_state != states[-1]:
        out.append(("event_log", f"{tag}: the call is {facts.current_state} but its last logged state is {states[-1]!r}"))
    if facts.row is None:
        out.append(("event_log", f"{tag}: no call row in the store"))
    elif facts.row.get("state") != states[-1]:
        out.append(("event_log", f"{tag}: row state {facts.row.get('state')!r} != last logged state {states[-1]!r}"))
    return out


# --- running a schedule ----------------------------------------------------------------------------


@dataclass
class RunResult:
    schedule: Schedule
    violations: list[Violation]
    trace: list[str]
    packets: int
    sim_seconds: float
    coverage: dict[str, int] = field(default_factory=dict)

    @property
    def categories(self) -> list[str]:
        return sorted({c for c, _ in self.violations})

    def report(self, tail: int = 60) -> str:
        lines = [f"seed {self.schedule.seed}: {len(self.violations)} violation(s) "
                 f"[{', '.join(self.categories)}]"]
        lines += [f"  - {c}: {m}" for c, m in self.violations[:30]]
        if len(self.violations) > 30:
            lines.append(f"  ... {len(self.violations) - 30} more")
        lines.append("replay: NG911_FAULT_SEED=%d, or run_schedule(Schedule.from_literal(%r))" % (
            self.schedule.seed, self.schedule.literal()))
        lines.append(f"packet trace (last {tail} of {len(self.trace)}; 'x' = lost):")
        lines += ["  " + t for t in (self.trace[-tail:] if tail > 0 else [])]
        return "\n".join(lines)


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))[-1500:]
        self.records.append(text)


class FaultRun:
    """One schedule on one harness (see :func:`run_schedule`)."""

    def __init__(self, schedule: Schedule, *, failover: FailoverSpec | None = None, settle: float | None = None,
                 drain: float = 40.0) -> None:
        self.s = schedule
        self.failover = failover or FailoverSpec(in_dialog_options_interval=5.0)
        self.give_up = float(getattr(self.failover, "caller_reinvite_give_up", 30.0))
        # Long enough for every transaction timer, the give-up limit, a hunt's back-off and a move.
        self.settle = settle if settle is not None else self.give_up + 2 * TIMER_B + 40.0
        self.drain = drain
        self.violations: list[Violation] = []
        self.rng = random.Random(schedule.seed ^ 0x5EED)
        scripts = {}
        for name, kw in schedule.scripts.items():
            kw = dict(kw)
            early = kw.pop("early", False)
            scripts[name] = ApScript(**kw)
            if early:
                n = int(name[2:])
                scripts[name].early_sdp = make_sdp(f"10.0.1.{n}", 6000 + 100 * n, user=name, sess_id=1000 + n,
                                                   media=("audio", "text"))
        self.h = PsapHarness(aps=schedule.aps, failover=self.failover, scripts=scripts)
        h = self.h
        self.store = OutageStore(h.store)
        h.observer.store = self.store
        self.calls: list[Any] = []  # the controller's Call objects, kept after they end
        created = h.observer.created

        def on_created(call: Any) -> None:
            self.calls.append(call)
            created(call)

        h.observer.created = on_created  # type: ignore[method-assign]
        self.alive = set(h.answer_points)
        self.ap_sessions: list[tuple[str, Session]] = []
        for ap in h.answer_points.values():
            invite_hook = ap.hooks.get("on_invite")

            def on_invite(session: Session, request: Request, _ap: Any = ap, _hook: Any = invite_hook) -> None:
                self.ap_sessions.append((_ap.name, session))
                if _hook is not None:
                    _hook(session, request)

            ap.hooks["on_invite"] = on_invite
            ap.hooks["on_reinvite"] = lambda s, r, _ap=ap: self._answer_reinvite(("ap", _ap.name), s, r)
        h.caller.hooks["on_reinvite"] = lambda s, r: self._answer_reinvite(("caller", s.call_id), s, r)
        self.next_answer: dict[tuple[str, str], list[tuple[int | None, float]]] = defaultdict(list)
        self.drops: list[dict[str, Any]] = []
        self.triggers: list[dict[str, Any]] = []
        h.net.drop = self._on_packet
        deliver = h.net._deliver

        def delivered(packet: Packet) -> None:
            packet.delivered_order = h.net._seq + 0.5  # type: ignore[attr-defined]
            deliver(packet)

        h.net._deliver = delivered  # type: ignore[method-assign]
        self.sessions: list[Session | None] = [None] * len(schedule.calls)
        self.observed: dict[str, list[str]] = defaultdict(list)
        self.db_cuts = 0
        self.coverage: Counter[str] = Counter()

    # --- the parties' behaviour ---------------------------------------------------------------
    def _answer_reinvite(self, who: tuple[str, str], session: Session, request: Request) -> None:
        queue = self.next_answer.get(who)
        if queue:
            status, delay = queue.pop(0)
        else:
            status, delay = 200, 0.0
        if status is None:
            return  # never answers
        if who[0] == "caller":
            own = self.h.caller.offers.get(session.call_id)
        else:
            ap = self.h.ap(who[1])
            own = ap.script.reinvite_sdp or ap.sdp

        def answer() -> None:
            if session.state == "terminated":
                return
            if status == 200:
                offer = sdp_of(request)
                if offer is None or own is None:
                    session.accept_update(session.local_sdp)
                else:
                    session.accept_update(answer_to(offer, own, session.local_sdp))
            else:
                session.reject_update(status)
                if status == 481:
                    # A party saying "no such dialog" must mean it: it forgets the dialog (a
                    # rebooted phone, a restarted ESRP), and later requests on it get 481 too.
                    _forget(session)

        if delay > 0:
            self.h.clock.callLater(delay, self._guard, answer)
        else:
            answer()

    def _on_packet(self, p: Packet) -> bool:
        for t in list(self.triggers):
            if packet_matches(p, t["match"]):
                self.triggers.remove(t)
                name, args = t["then"]
                args = {k: (p.src_name if v == "$src" else p.dst_name if v == "$dst" else v) for k, v in args.items()}
                self.h.clock.callLater(t["delay"], self._guard, lambda n=name, a=args: self._do(n, a))
        for rule in self.drops:
            # Only datagrams get lost: a TCP connection delivers what it accepted, or breaks.
            if rule["n"] > 0 and p.transport == "UDP" and packet_matches(p, rule):
                rule["n"] -= 1
                return True
        return False

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            self.violations.append(("exception", "in a scheduled action:\n" + traceback.format_exc()[-2000:]))

    # --- resolving names -----------------------------------------------------------------------
    def _sip_call_id(self, i: int) -> str | None:
        s = self.sessions[i] if 0 <= i < len(self.sessions) else None
        return s.call_id if s is not None else None

    def _controller_call(self, sip_call_id: str) -> Any:
        for call in self.calls:
            if call.request.call_id == sip_call_id:
                return call
        return None

    def _nena_of(self, i: int) -> str | None:
        cid = self._sip_call_id(i)
        call = self._controller_call(cid) if cid else None
        return getattr(call, "nena_call_id", None) if call is not None else None

    def _ap_sessions_of(self, i: int) -> list[tuple[str, Session]]:
        nena = self._nena_of(i)
        if nena is None:
            return []
        return [(n, s) for n, s in self.ap_sessions
                if any(nena in v for v in s.invite.headers.get_all("Call-Info"))]

    def _resolve_ap(self, ref: str) -> str | None:
        if not ref.startswith("@"):
            return ref if ref in self.h.answer_points else None
        live = [(n, s) for n, s in self._ap_sessions_of(int(ref[1:])) if s.state != "terminated"]
        return live[-1][0] if live else None

    # --- actions -------------------------------------------------------------------------------
    def _do(self, name: str, args: dict[str, Any]) -> None:
        h = self.h
        if name == "call":
            i = args["call"]
            self.sessions[i] = h.place_call(offer=make_sdp(CALLER_HOST, 4000 + 10 * i, user="caller", sess_id=555 + i,
                                                          media=CALLER_MEDIA),
                                            with_offer=args.get("offer", True), ng911=args.get("ng911", True))
        elif name == "ap_die":
            ap = self._resolve_ap(args["ap"])
            if ap is not None and ap in self.alive:
                self.coverage["ap_dies_" + self._phase(ap)] += 1
                self.alive.discard(ap)
                h.ap(ap).die()
        elif name == "ap_revive":
            ap = args["ap"]
            if ap not in self.alive:
                self.alive.add(ap)
                h.ap(ap).revive()
        elif name in ("ap_hangup", "ap_hold"):
            ap = self._resolve_ap(args["ap"])
            if ap is None or ap not in self.alive:
                return
            sessions = [s for n, s in self._ap_sessions_of(int(args["ap"][1:])) if n == ap and s.state == "confirmed"] \
                if args["ap"].startswith("@") else [s for n, s in self.ap_sessions if n == ap and s.state == "confirmed"]
            if not sessions:
                return
            session = sessions[-1]
            if name == "ap_hangup":
                session.bye()
            elif not self._busy(ap, session.call_id):
                point = h.ap(ap)
                held = sdplib.hold(sdplib.parse(point.sdp))
                session.reinvite(sdplib.versioned(sdplib.parse(session.local_sdp or point.sdp), held).to_bytes())
        elif name == "caller_hangup":
            s = self.sessions[args["call"]]
            if s is not None and s.state != "terminated":
                s.bye()
        elif name == "caller_reinvite":
            s = self.sessions[args["call"]]
            if s is None or s.state != "confirmed" or self._busy(CALLER, s.call_id):
                return
            offer = h.caller.offers[s.call_id]
            if args.get("change"):
                port = 4000 + 10 * args["call"] + 100 * self.rng.randint(1, 9)
                new = make_sdp(CALLER_HOST, port, user="caller", sess_id=555 + args["call"], media=CALLER_MEDIA)
                base = s.local_sdp or offer
                try:
                    new = sdplib.versioned(sdplib.parse(base), sdplib.parse(new)).to_bytes()
                except (sdplib.SdpParseError, ValueError):
                    pass
                h.caller.offers[s.call_id] = new
                s.reinvite(new)
            else:
                s.reinvite(s.local_sdp or offer)
        elif name == "caller_next_reinvite":
            cid = self._sip_call_id(args["call"])
            if cid is not None:
                self.next_answer[("caller", cid)] += [(args["status"], args.get("delay", 0.0))] * args.get("count", 1)
        elif name == "ap_next_reinvite":
            ap = self._resolve_ap(args["ap"])
            if ap is not None:
                self.next_answer[("ap", ap)].append((args["status"], args.get("delay", 0.0)))
        elif name == "drop":
            self.drops.append(dict(args))
        elif name == "db_cut":
            self.db_cuts += 1
            self.store.cut()
            cut = self.db_cuts

            def back() -> None:
                if self.db_cuts == cut:
                    self.store.restore()

            h.clock.callLater(args["seconds"], self._guard, back)
        elif name == "when":
            self.triggers.append({"match": args["match"], "then": args["then"], "delay": args.get("delay", 0.0)})
        else:  # pragma: no cover - a schedule from elsewhere
            raise ValueError(f"unknown action {name!r}")

    def _phase(self, ap: str) -> str:
        """What the position is doing as it dies (for the coverage count)."""
        states = [(s.state, s) for n, s in self.ap_sessions if n == ap and s.ua is self.h.ap(ap).port.ua
                  and s.state != "terminated"]
        for state, s in states:
            if state == "answered":
                moving = sdp_of(s.invite) is None and any(self._busy(CTL, c.call_id) for c in self.sessions if c)
                return "mid_move" if moving else "answering"
        if any(state in ("incoming", "early") for state, _ in states):
            return "ringing"
        if any(state == "confirmed" for state, _ in states):
            return "talking"
        return "idle"

    def _busy(self, party: str, call_id: str) -> bool:
        """Whether ``party`` has an INVITE transaction in progress on dialog ``call_id`` as far
        as it knows (then a well-behaved UA does not send another, RFC 3261 §14.1)."""
        now = (self.h.now(), math.inf)
        pkts = [p for p in self.h.net.packets if p.message is not None and p.message.call_id == call_id]
        return any(tx.start <= now < tx.end for tx in invite_transactions(pkts, party).get(call_id, []))

    # --- time ----------------------------------------------------------------------------------
    def _run(self, seconds: float) -> None:
        net, clock = self.h.net, self.h.clock
        end = clock.seconds() + seconds
        for _ in range(2_000_000):
            pending = [c.getTime() for c in clock.getDelayedCalls()]
            due = min(pending) if pending else None
            if due is None or due > end:
                break
            try:
                net._advance_to(due)
            except Exception:
                self.violations.append(("exception", f"raised on the clock at t={clock.seconds():.3f}:\n"
                                        + traceback.format_exc()[-2000:]))
            self._observe()
        else:  # pragma: no cover
            self.violations.append(("runaway", "more than 2,000,000 clock steps"))
        if clock.seconds() < end:
            net._advance_to(end)
            self._observe()

    def _observe(self) -> None:
        for call in self.calls:
            seen = self.observed[call.call_id]
            state = str(call.state)
            if not seen or seen[-1] != state:
                seen.append(state)

    # --- the whole thing -----------------------------------------------------------------------
    def run(self) -> RunResult:
        errors = _ErrorLog()
        logger = logging.getLogger("ng911")
        logger.addHandler(errors)
        state = random.getstate()
        random.seed(self.s.seed)  # the code under test draws its §14.1 back-off from `random`
        try:
            self._play()
        finally:
            random.setstate(state)
            logger.removeHandler(errors)
        for text in errors.records:
            self.violations.append(("exception", "logged: " + text))
        return RunResult(self.s, _dedupe(self.violations), self.h.net.trace(), len(self.h.net.packets), self.h.now(),
                         self._coverage())

    def _coverage(self) -> dict[str, int]:
        cov = Counter(self.coverage)
        cov[f"calls_{len(self.s.calls)}"] += 1
        reinvites = {(p.message.call_id, p.message.cseq.seq) for p in self.h.net.packets  # type: ignore[union-attr]
                     if _is_in_dialog_invite(p)}
        for p in self.h.net.packets:
            if p.drop_reason == "dropped by rule":
                cov["lost_" + ("response" if p.status else "request")] += 1
            if p.message is None or p.method != "INVITE":
                continue
            if p.is_request and p.message.to.tag:
                if p.src_name == CTL and p.dst_name == CALLER:
                    cov["reinvite_of_caller"] += 1
                elif p.src_name == CALLER:
                    cov["reinvite_by_caller"] += 1
                elif p.src_name.startswith("ap"):
                    cov["reinvite_by_ap"] += 1
            elif p.status is not None and p.status >= 200 and (p.message.call_id, p.message.cseq.seq) in reinvites \
                    and p.src_name in (CALLER, *self.h.answer_points):
                side = "caller" if p.src_name == CALLER else "ap"
                if p.status != 200:
                    cov[f"{side}_answered_reinvite_{p.status}"] += 1
        if self.store.max_backlog:
            cov["db_cut_with_writes"] += 1
        return dict(cov)

    def _play(self) -> None:
        h, s = self.h, self.s
        for i, c in enumerate(s.calls):
            h.clock.callLater(c["at"], self._guard, lambda i=i, c=c: self._do("call", {"call": i, **c}))
        for at, name, args in s.actions:
            h.clock.callLater(at, self._guard, lambda n=name, a=args: self._do(n, a))
        self._run(s.end + 0.001)
        self._heal()
        self._run(self.settle)
        self.violations += self._check_settled()
        for session in self.sessions:
            if session is not None and session.state != "terminated":
                session.bye()
        self._run(self.drain)
        self.violations += self._check_final()

    def _heal(self) -> None:
        """The end of the faults: no loss, the database back, everybody well-behaved (positions
        that died stay dead)."""
        self.drops.clear()
        self.triggers.clear()
        self.next_answer.clear()
        self.db_cuts += 1
        self.store.restore()
        for ap in self.h.answer_points.values():
            ap.script = ApScript(answer_after=1.0)

    # --- checks ----------------------------------------------------------------------------------
    def _facts(self) -> list[CallFacts]:
        out = []
        packets = self.h.net.packets
        for i, session in enumerate(self.sessions):
            if session is None:
                continue
            f = CallFacts(i, session.call_id)
            call = self._controller_call(session.call_id)
            if call is not None:
                f.call_id = call.call_id
                f.nena_call_id = getattr(call, "nena_call_id", None)
                f.events = self.h.store.events(call.call_id)
                f.row = self.h.store.call(call.call_id)
                f.observed_states = list(self.observed.get(call.call_id, []))
                f.current_state = str(call.state)
                if f.nena_call_id:
                    f.psap_call_ids = {p.message.call_id for p in packets  # type: ignore[union-attr]
                                       if p.src_name == CTL and p.is_request and p.method == "INVITE"
                                       and not p.message.to.tag  # type: ignore[union-attr]
                                       and any(f.nena_call_id in v for v in p.message.headers.get_all("Call-Info"))}  # type: ignore[union-attr]
            out.append(f)
        return out

    def _ctl_sessions(self) -> list[Session]:
        ua = self.h.ctl.ua
        return [s for s in ua.dialogs.values() if s.state != "terminated"]

    def _check_settled(self) -> list[Violation]:
        out: list[Violation] = []
        h = self.h
        live = dict(h.controller.calls)
        ctl_open = self._ctl_sessions()
        facts = self._facts()
        # positions a waiting call could have: alive and not holding a leg
        busy = {n for n, s in self.ap_sessions if n in self.alive and s.state not in ("terminated",)
                and s.ua is h.ap(n).port.ua}
        free = sorted(self.alive - busy)
        for f in facts:
            session = self.sessions[f.index]
            assert session is not None
            tag = f"call {f.index} ({f.call_id}, {f.sip_call_id})"
            call = self._controller_call(f.sip_call_id)
            if call is None:
                if session.state != "terminated":
                    out.append(("terminal", f"{tag}: the caller's session is {session.state} but the controller "
                                "never made a call of it"))
                continue
            state = str(call.state)
            mine = [c for c in ctl_open if c.call_id == f.sip_call_id or c.call_id in f.psap_call_ids]
            if call.call_id not in live:
                if state != CallState.ENDED.value:
                    out.append(("terminal", f"{tag}: gone from controller.calls in state {state}"))
                if session.state != "terminated":
                    out.append(("caller_forgotten", f"{tag}: the call ended at the controller "
                                f"({_reason(f.events)}) but the caller's dialog is still {session.state}"))
                for leg in mine:
                    out.append(("terminal", f"{tag}: ended, but the controller's dialog {leg.call_id} is still {leg.state}"))
                for n, ap_s in self.ap_sessions:
                    if ap_s.call_id in f.psap_call_ids and ap_s.state == "confirmed" and n in self.alive \
                            and ap_s.ua is h.ap(n).port.ua:
                        out.append(("ap_leg_forgotten", f"{tag}: ended, but {n} still holds its leg {ap_s.call_id}"))
                continue
            # live
            if state == CallState.ENDED.value:
                out.append(("terminal", f"{tag}: ended but still in controller.calls"))
            if session.state == "terminated":
                out.append(("terminal", f"{tag}: live in state {state} but the caller's dialog is gone "
                            f"({session.terminated_reason})"))
                continue
            if state == CallState.TALKING.value:
                psap = getattr(call, "psap", None)
                ap = getattr(getattr(call, "psap_ap", None), "name", None)
                if psap is None or psap.state != "confirmed":
                    out.append(("terminal", f"{tag}: talking without a confirmed PSAP leg ({psap})"))
                elif ap not in self.alive:
                    out.append(("stuck_on_dead_position", f"{tag}: talking to {ap}, dead for the whole settle time"))
                else:
                    at_ap = [s for n, s in self.ap_sessions if s.call_id == psap.call_id and n == ap]
                    if not at_ap or at_ap[-1].state != "confirmed":
                        out.append(("terminal", f"{tag}: talking to {ap}, which holds no such dialog"))
            elif free:
                out.append(("not_connected", f"{tag}: still {state} after {self.settle:.0f} s of calm while "
                            f"{free} are up and free"))
        for f in facts:
            if f.call_id is not None:
                out += check_event_log(f, final=False)
        # controller dialogs that belong to no live call
        known: set[str] = set()
        for f in facts:
            if f.call_id in live:
                call = live[f.call_id]
                known |= {leg.call_id for leg in _legs(call)}
        for leg in ctl_open:
            if leg.call_id not in known:
                out.append(("dialog_leak", f"the controller still has dialog {leg.call_id} ({leg.role}, {leg.state}) "
                            "of no live call"))
        for name, ap in h.controller.pool.aps.items():
            cap = ap.spec.capacity
            if ap.active > cap or ap.active < 0:
                out.append(("occupancy", f"{name}: active {ap.active} outside 0..{cap}"))
        return out

    def _check_final(self) -> list[Violation]:
        out: list[Violation] = []
        h = self.h
        packets = h.net.packets
        for f in self._facts():
            out += check_caller_byes(f, packets, give_up=self.give_up)
            out += check_provisionals(f, packets, until=h.now())
            if f.call_id is not None:
                out += check_event_log(f, final=True)
        out += check_invite_overlap(packets, CTL, horizon=h.now())
        # the parties are the harness's: an overlap of theirs is a bug of this module
        out += check_invite_overlap(packets, CALLER, category="harness_overlap", unanswered=False)
        for name in h.answer_points:
            out += check_invite_overlap(packets, name, category="harness_overlap", unanswered=False)
        if h.controller.calls:
            out.append(("occupancy", f"calls still live after everyone hung up: "
                        f"{ {cid: str(c.state) for cid, c in h.controller.calls.items()} }"))
        for leg in self._ctl_sessions():
            out.append(("dialog_leak", f"after the drain the controller still has dialog {leg.call_id} ({leg.role}, {leg.state})"))
        for name, ap in h.controller.pool.aps.items():
            if ap.active != 0:
                out.append(("occupancy", f"{name}: active {ap.active} after every call ended"))
        for n, s in self.ap_sessions:
            if n in self.alive and s.ua is h.ap(n).port.ua and s.state == "confirmed":
                out.append(("ap_leg_forgotten", f"{n} still holds leg {s.call_id} after every call ended"))
        for i, s in enumerate(self.sessions):
            if s is not None and s.state != "terminated":
                out.append(("caller_forgotten", f"call {i}: the caller's dialog is still {s.state} after it hung up"))
        return out


def _forget(session: Session) -> None:
    terminate = getattr(session, "_terminate", None)
    if terminate is not None:
        terminate("forgot the dialog (answered 481)", notify=False)
    elif session.dialog is not None:  # pragma: no cover - a UA core without _terminate
        session.ua.dialogs.pop(session.dialog.id, None)


def _legs(call: Any) -> list[Session]:
    legs = getattr(call, "legs", None)
    if callable(legs):
        return list(legs())
    return [s for s in (getattr(call, "upstream", None), getattr(call, "psap", None)) if s is not None]


def _reason(events: Sequence[Mapping[str, Any]]) -> str:
    ended = _ended_event(events)
    return f"reason {ended['data'].get('reason')!r}" if ended else "no ended event"


def _dedupe(violations: Iterable[Violation]) -> list[Violation]:
    seen: set[Violation] = set()
    out = []
    for v in violations:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def run_schedule(schedule: Schedule | int, **kwargs: Any) -> RunResult:
    """Play a schedule (or the one :func:`generate` makes from a seed) and check it."""
    if isinstance(schedule, int):
        schedule = generate(schedule)
    return FaultRun(schedule, **kwargs).run()
