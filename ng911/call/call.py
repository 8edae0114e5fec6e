"""One emergency call: the caller's upstream leg, the replaceable PSAP leg, and their flows.

RFC 3725 third-party call control with the caller's leg as the fixed point. Its states and
their table are in `ng911.call.state` (routing → ringing/queued → talking ⇄ moving → ended);
every change goes through `Call._to`, which checks the table and records the event.

Routing an offer (flow "caller with SDP"): INVITE AP with the caller's body → 18x relayed →
AP's 200 answer to the caller; delayed offer: INVITE AP without SDP → its 200 offer goes up in
our 200 → the caller's ACK answer goes down in the AP's ACK. A move (DESIGN step 5, RFC 3725
flow I): INVITE the new AP *without* SDP → its 200 offer, rewritten onto the caller's session
(`sdp.reoffer`: same o= session, version + 1, same m-lines) → re-INVITE the caller → its 200
answer, aligned to the AP's m-lines → ACK the AP. The caller never sees a BYE.

When the caller's re-INVITE fails (DESIGN "A call's life", step 5): 481 — its dialog is gone,
the call ends without a BYE to it; 408, 5xx, a timeout or a transport error — the new AP is
ACKed at once with the caller's current media (kept on the line) and the re-INVITE retried
with back-off, until ``caller_reinvite_give_up`` after the first one, then the call ends with a
BYE (``caller_unreachable``); any other refusal (488...) — the offer, not the AP, was refused:
once, the caller is re-INVITEd without SDP and its offer carried to the AP; refused again, the
move is retried with the same AP (no other call-taker is rung) like a failure above, and the
give-up ends the call with ``no_compatible_media``. Re-INVITEs on a
dialog never overlap: the UA core queues them (RFC 3261 §14.1); a re-INVITE of the caller
that is pending when its AP dies is answered before the move's goes out.

No I/O here: the UA core sends, its timer wheel keeps time, `CallObserver` records.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ng911 import sdp as sdplib
from ng911.call.sdpbody import sdp_of, without_sdp
from ng911.call.state import (
    BYE_CALLER_ALLOWED,
    UNANSWERED,
    CallState,
    EndReason,
    FailoverCause,
    check,
)
from ng911.routing.pool import AnswerPoint
from ng911.sip.headers import quote_string
from ng911.sip.message import Headers, Request, Response
from ng911.sip.timerwheel import TimerHandle
from ng911.sip.ua import Session, failure_cause
from ng911.sip.uri import parse_uri

if TYPE_CHECKING:
    from ng911.call.port import CallPort

log = logging.getLogger("ng911.call")

ROUTING, RINGING, QUEUED, TALKING, MOVING, ENDED = (
    CallState.ROUTING, CallState.RINGING, CallState.QUEUED, CallState.TALKING, CallState.MOVING, CallState.ENDED)


@dataclass
class Attempt:
    """One INVITE to one answer point."""

    ap: AnswerPoint
    leg: Session
    started: float
    timers: list[TimerHandle] = field(default_factory=list)
    provisional: bool = False
    abandoned: bool = False  # we gave up on it (timeout / caller gone); ignore what it says
    # a move's new leg, answered: its offer, and how far the caller has got with it
    ap_offer: bytes | None = None
    acked: bytes | None = None  # what the AP's 200 was ACKed with (None: not ACKed yet)
    reinvite_started: float | None = None  # the first re-INVITE of the caller for this leg
    caller_failures: int = 0
    offerless_tried: bool = False
    refused: bool = False  # the caller's last word was a refusal (488...), not silence

    def stop_timers(self) -> None:
        for t in self.timers:
            t.cancel()
        self.timers.clear()


class Call:
    def __init__(self, controller: CallPort, upstream: Session, request: Request, *, call_id: str,
                 kind: str, queue: str, content: dict[str, Any], forward_headers: list[tuple[str, str]]) -> None:
        self.c = controller
        self.upstream = upstream
        self.request = request
        self.call_id = call_id
        self.kind = kind
        self.queue = queue
        self.content = content
        self.forward_headers = forward_headers
        self.nena_call_id: str | None = content.get("nena_call_id")
        self.state: CallState = ROUTING
        self.created = controller.now()
        self.answered_at: float | None = None
        self.caller_offer = sdp_of(request)  # None: delayed offer
        self.attempt: Attempt | None = None  # the INVITE in progress (routing or moving)
        self.psap: Session | None = None  # the connected PSAP leg
        self.psap_ap: AnswerPoint | None = None
        self.last_sent_up: bytes | None = None  # last SDP we sent the caller
        # The caller's session is what it accepted (last_sent_up); an offer it refused leaves
        # that as it was (RFC 3264 §8), but its o= version is not used again for new content.
        self.refused_up: bytes | None = None
        self.last_sent_ap: bytes | None = None  # last SDP we sent the current AP
        self.tried: set[str] = set()
        self.backoff = 0.0
        self._retry: TimerHandle | None = None
        self._unwait: Any = None
        self._probe: TimerHandle | None = None
        self.rang_upstream = False
        self.move_reason: str | None = None
        self.move_started: float | None = None
        self.transfer: dict[str, Any] | None = None  # pending REFER: referrer leg, target
        self.strangers_seen: set[str] = set()  # methods refused from a non-peer (logged once each)
        self._relay: object | None = None  # token of the offer being relayed between the legs
        self._keepalive: TimerHandle | None = None
        self._last_provisional = self.created
        #: its row is committed in the database (another node could claim it from now on)
        self.stored = False
        #: our CSeq on (caller leg, position leg) when the legs were last saved
        self.saved_cseq: tuple[int, int] | None = None
        #: positions whose every seat other nodes hold (skipped until the next round)
        self.busy_elsewhere: set[str] = set()
        self._reserving = False  # a seat asked for, the answer not in yet

    # --- rebuilt from the store (a node taking a call over) ---------------------------------
    @classmethod
    def restore(cls, port: CallPort, row: dict[str, Any], *, upstream: Session, psap: Session,
                request: Request | None = None, forward_headers: list[tuple[str, str]] = ()) -> Call:  # type: ignore[assignment]
        """The call of a stored ``row`` (``calls`` + its ``legs``), around two adopted
        sessions (`UserAgent.adopt`): a TALKING call (a call not answered yet is rebuilt by
        `restore_unanswered`; a MOVING one is restored as TALKING by the controller). The
        caller's INVITE is ``request``, the stored one (its body and the NG9-1-1
        ``forward_headers`` travel on later moves); rows written before it was stored give
        identity and ids only."""
        state = CallState(row["state"])
        if state is not TALKING:
            raise ValueError(f"a call in state {state.value} cannot be restored yet")
        call = cls(port, upstream, request or _invite_of_row(row, upstream), call_id=row["call_id"],
                   kind=row["kind"], queue=row["queue"], content=_content_of_row(row),
                   forward_headers=list(forward_headers))
        call.state = TALKING
        call.stored = True
        call.created, call.answered_at = row["created_at"], row.get("answered_at")
        legs = row.get("legs", {})
        call.caller_offer = (legs.get("upstream") or {}).get("remote_sdp")
        call.last_sent_up, call.last_sent_ap = upstream.local_sdp, psap.local_sdp
        call.rang_upstream = True
        call.psap = psap
        call.psap_ap = port.pool.aps.get(row.get("answer_point") or "")
        if call.psap_ap is not None:
            call._take(call.psap_ap)
            psap.user_data["ap"] = call.psap_ap.name
        upstream.user_data.update(call=call, role="upstream", last_offer=upstream.remote_sdp)
        psap.user_data.update(call=call, last_offer=psap.remote_sdp)
        return call

    @classmethod
    def restore_unanswered(cls, port: CallPort, row: dict[str, Any], *, upstream: Session,
                           forward_headers: list[tuple[str, str]]) -> Call:
        """The call of a stored ``row`` not answered yet (routing, ringing or queued), around the
        caller's INVITE adopted on its original transaction (`UserAgent.adopt_invite`). Hunted
        again from the start (`resume_hunt`); the position the dead node was ringing is not
        told (its INVITE's transaction died with that node)."""
        state = CallState(row["state"])
        if state not in UNANSWERED:
            raise ValueError(f"a call in state {state.value} is not unanswered")
        call = cls(port, upstream, upstream.invite, call_id=row["call_id"], kind=row["kind"], queue=row["queue"],
                   content=_content_of_row(row), forward_headers=forward_headers)
        call.state = state
        call.stored = True
        call.created = row["created_at"]
        call.rang_upstream = state is not ROUTING
        upstream.user_data.update(call=call, role="upstream")
        return call

    def resume_hunt(self, *, taken_from: str | None = None) -> None:
        """Carry on a restored unanswered call: the caller hears from this node at once (a
        180 on its INVITE, with the To-tag it had), and the hunt starts again."""
        self.event("resumed", taken_from=taken_from, state=self.state.value)
        if self.rang_upstream:
            self._send_provisional(180)
        self._arm_keepalive()
        self.hunt()

    def resume(self, *, taken_from: str | None = None) -> None:
        """Carry on a restored call: a target refresh of both legs (re-INVITE with our
        Contact and the last SDP, version + 1), so the peers' in-dialog requests come here."""
        self.event("resumed", answer_point=self.psap_ap.name if self.psap_ap else None, taken_from=taken_from)
        for leg, last in ((self.upstream, self.last_sent_up), (self.psap, self.last_sent_ap)):
            if leg is None or last is None:
                continue
            offer = _versioned_always(last)
            leg.reinvite(offer, fail_session=leg is not self.upstream,
                         on_done=lambda resp, leg=leg: self._refreshed(leg, resp))
        self._start_probe()

    def _refreshed(self, leg: Session, resp: Response | None) -> None:
        if resp is None or not 200 <= resp.status < 300:
            if leg is self.upstream and resp is not None and resp.status == 481:
                self.upstream.forget("481 to the target refresh")
                self.end(EndReason.CALLER_GONE)
            return
        if leg is self.upstream:
            self.last_sent_up = leg.local_sdp
        else:
            self.last_sent_ap = leg.local_sdp
        self.c.save_legs(self)

    # --- helpers --------------------------------------------------------------------------
    def event(self, kind: str, /, **data: Any) -> None:
        self.c.observer.event(self, kind, **data)

    def legs(self) -> list[Session]:
        out = [self.upstream]
        if self.psap is not None:
            out.append(self.psap)
        if self.attempt is not None:
            out.append(self.attempt.leg)
        return out

    @property
    def ended(self) -> bool:
        return self.state == ENDED

    def _to(self, new: CallState, kind: str, /, **data: Any) -> None:
        """Move to state ``new`` (checked against the table) and record event ``kind`` with
        the new state in it; staying in the same state records the event alone."""
        if new is not self.state:
            check(self.state, new)
            old, self.state = self.state, new
            data["state"] = new.value
            self.c.observer.state_changed(self, old, new)
        self.event(kind, **data)

    # --- routing / hunting ------------------------------------------------------------------
    def start(self) -> None:
        self.event("routing", queue=self.queue, state=self.state.value)
        self._arm_keepalive()
        self.hunt()

    def _arm_keepalive(self) -> None:
        interval = self.c.routing.failover.queue_provisional_interval
        self._keepalive = self.c.call_at(self.c.now() + interval, lambda at: self._provisional_due())

    def _provisional_due(self) -> None:
        """RFC 3261 §13.3.1.1: a caller not answered yet hears from us at least every minute,
        or a proxy on the way gives up on its INVITE."""
        self._keepalive = None
        if self.state not in UNANSWERED:
            return
        interval = self.c.routing.failover.queue_provisional_interval
        if self.c.now() - self._last_provisional >= interval / 2:
            early = self.last_sent_up if self.rang_upstream and self.last_sent_up is not None else None
            self._send_provisional(183 if early is not None else 180, early)
        self._arm_keepalive()

    def _send_provisional(self, status: int, sdp: bytes | None = None) -> None:
        self._last_provisional = self.c.now()
        self.upstream.ring(status, sdp)

    def hunt(self) -> None:
        """Try the next free answer point; when none is left, wait and try again."""
        if self._reserving or not self._wants_a_position():
            return
        self._cancel_wait()
        queue = self.transfer["queue"] if self.transfer and self.transfer.get("queue") else self.queue
        exclude = set(self.tried)
        if self.transfer is not None and self.psap_ap is not None:
            exclude.add(self.psap_ap.name)  # never transfer a call back to the position it leaves
        # (A failed-over call does not try its old position in the first round — fail_over
        # puts it in ``tried`` — but may go back to it once it is up again after a wait: in a
        # one-position PSAP nothing else would ever take the call.)
        if self.transfer and self.transfer.get("uri"):
            # One target, one try: hunting again would re-INVITE a refusing target forever.
            if self.transfer.get("tried"):
                self._transfer_failed(self.transfer.get("why") or "target failed")
                return
            self.transfer["tried"] = True
            self._invite(None, self.transfer["uri"])
            return
        candidates = self.c.pool.candidates(queue, exclude | self.busy_elsewhere)
        if candidates:
            self._reserve_and_invite(candidates[0])
            return
        if self.transfer is not None:
            self._transfer_failed(self.transfer.get("why") or "no answer point free")
            return
        # Nobody free (all tried, busy or down): an emergency call waits — ringing — and
        # hunts again when a position frees up or after a back-off, whichever comes first.
        self._ring_upstream()
        self.tried.clear()
        self.busy_elsewhere.clear()
        initial, cap = self.c.routing.failover.hunt_backoff_initial, self.c.routing.failover.hunt_backoff_max
        self.backoff = initial if self.backoff == 0 else min(cap, self.backoff * 2)
        self._to(QUEUED if self.state in UNANSWERED else self.state, "waiting", backoff=self.backoff)
        self.c.queue_wait_started(self)
        self._retry = self.c.call_at(self.c.now() + self.backoff, lambda at: self._wake())
        self._unwait = self.c.pool.wait(self._wake)

    def _wants_a_position(self) -> bool:
        """Live, no offer in progress, and not talking (unless a transfer looks for a target)."""
        return not self.ended and self.attempt is None and not (self.state == TALKING and self.transfer is None)

    def _reserve_and_invite(self, ap: AnswerPoint) -> None:
        """Take a seat at ``ap`` (its capacity is counted cluster-wide), then offer it the call;
        a position whose every seat another node holds is skipped until the next round."""
        self._reserving = True

        def reserved(ok: bool) -> None:
            self._reserving = False
            wanted = self._wants_a_position()
            if ok and wanted:
                self._invite(ap, ap.spec.uri)
                return
            if ok:
                self.c.seat_freed(self, ap)
                return
            if wanted:
                self.event("ap_busy_elsewhere", answer_point=ap.name)
                self.busy_elsewhere.add(ap.name)
                self.hunt()

        self.c.reserve(self, ap, reserved)

    def _take(self, ap: AnswerPoint) -> None:
        """The call is on ``ap`` (an offer, or a call taken over there): counted here and in
        the cluster."""
        self.c.pool.acquire(ap)
        self.c.seat_held(self, ap)

    def _free(self, ap: AnswerPoint) -> None:
        self.c.pool.release(ap)
        self.c.seat_freed(self, ap)

    def _wake(self) -> None:
        self._cancel_wait()
        if not self.ended and self.attempt is None:
            self.c.call_at(self.c.now(), lambda at: self.hunt())

    def _cancel_wait(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._unwait is not None:
            self._unwait()
            self._unwait = None

    def _ring_upstream(self) -> None:
        if not self.rang_upstream and self.state in UNANSWERED:
            self.rang_upstream = True
            self._send_provisional(180)

    def _invite(self, ap: AnswerPoint | None, target: str) -> None:
        with_offer = self.state in UNANSWERED and self.caller_offer is not None
        if with_offer:
            body, ctype = self.request.body, self.request.content_type
        else:
            body, ctype = without_sdp(self.request)
        headers = list(self.forward_headers)
        history = self.c.history_for(self, target)
        if history:
            headers = [h for h in headers if h[0].lower() != "history-info"] + history
        from_addr = self.c.psap_from(self)
        leg = self.c.invite(
            target,
            from_uri=from_addr,
            to_uri=f"<{target}>",
            body=body or None,
            sdp=None,
            content_type=ctype or "application/sdp",
            headers=tuple(headers),
        )
        leg.user_data["call"] = self
        if ap is None:
            ap = self.c.pool.by_uri(target)
        attempt = Attempt(ap, leg, self.c.now()) if ap is not None else Attempt(_external(target), leg, self.c.now())
        if ap is not None:
            self._take(ap)
            self.tried.add(ap.name)
        self.attempt = attempt
        self._to(ROUTING if self.state in UNANSWERED else self.state, "ap_invite",
                 answer_point=attempt.ap.name, target=target, offer=with_offer)
        spec = attempt.ap.spec
        now = self.c.now()
        attempt.timers.append(self.c.call_at(now + spec.no_provisional_timeout,
                                                       lambda at: self._attempt_timeout(attempt, "no provisional")))
        attempt.timers.append(self.c.call_at(now + spec.ring_timeout,
                                                       lambda at: self._attempt_timeout(attempt, "ring timeout")))

    def _attempt_timeout(self, attempt: Attempt, why: str) -> None:
        if attempt is not self.attempt:
            return
        if why == "no provisional" and attempt.provisional:
            return
        self.event("ap_timeout", answer_point=attempt.ap.name, reason=why,
                   result="no_provisional" if why == "no provisional" else "ring_timeout")
        self._note_transfer_failure(408, "Request Timeout", why)
        self._drop_attempt(attempt)
        attempt.leg.cancel()
        self.hunt()

    def _drop_attempt(self, attempt: Attempt) -> None:
        attempt.abandoned = True
        attempt.stop_timers()
        if self.attempt is attempt:
            self.attempt = None
        if attempt.ap.name in self.c.pool.aps:
            self._free(attempt.ap)

    # --- PSAP leg events (from the controller) ----------------------------------------------
    def on_leg_provisional(self, leg: Session, response: Response) -> None:
        attempt = self.attempt
        if attempt is None or attempt.leg is not leg:
            return
        attempt.provisional = True
        if self.state not in UNANSWERED:
            return  # a move: the caller is talking to nobody, nothing to relay
        early = sdp_of(response)
        if early is not None and self.caller_offer is not None:
            self.last_sent_up = early
            self._send_provisional(response.status if response.status != 180 else 183, early)
            self.rang_upstream = True
            self.event("early_media", answer_point=attempt.ap.name)
        elif not self.rang_upstream:
            self.rang_upstream = True
            self._send_provisional(180)
        self._to(RINGING, "ap_ringing", answer_point=attempt.ap.name, status=response.status)

    def on_leg_answered(self, leg: Session, response: Response) -> None:
        attempt = self.attempt
        if attempt is None or attempt.leg is not leg or attempt.abandoned:
            # Answered after we gave up on it: ACK (§13.2.2.4: a valid answer, refusing every
            # stream, when the 200 holds an offer) and BYE.
            _ack_and_bye(leg, sdp_of(response))
            return
        attempt.stop_timers()
        ap_sdp = sdp_of(response)
        if self.state in UNANSWERED:
            self.attempt = None
            self._connect(attempt, leg, ap_sdp)
        else:
            # The attempt stays current until the caller has answered the re-INVITE: if the
            # call ends meanwhile, end() BYEs this leg and frees its position.
            self._complete_move(attempt, leg, ap_sdp)

    def on_leg_failed(self, leg: Session, response: Response | None, reason: str) -> None:
        attempt = self.attempt
        if attempt is None or attempt.leg is not leg:
            return
        if response is not None:
            result = "rejected"
        else:
            result = "transport_error" if failure_cause(reason) == "transport" else "timeout"
        self.event("ap_failed", answer_point=attempt.ap.name, reason=reason, result=result)
        if response is not None:
            self._note_transfer_failure(response.status, response.reason, reason)
        else:
            self._note_transfer_failure(408 if "timeout" in reason else 503, None, reason)
        self._drop_attempt(attempt)
        self.hunt()

    def _note_transfer_failure(self, status: int, reason: str | None, why: str) -> None:
        """Remember how a transfer's last try ended, for the final NOTIFY's sipfrag."""
        if self.transfer is not None:
            self.transfer["status"] = (status, reason or _REASONS.get(status, "Service Unavailable"))
            self.transfer["why"] = why

    def on_leg_terminated(self, leg: Session, reason: str) -> None:
        if self.attempt is not None and self.attempt.leg is leg:
            self.on_leg_failed(leg, None, reason)
            return
        if leg is not self.psap or self.ended:
            return
        if self.transfer is not None and leg is self.transfer["referrer"]:
            # Blind transfer: the transferor may hang up as soon as its REFER is accepted
            # (RFC 5589 §6.1). That ends its leg, not the call: the transfer goes on.
            self.event("transferor_gone", answer_point=self.psap_ap.name if self.psap_ap else None, reason=reason)
            self.psap = None
            if self.psap_ap is not None and self.psap_ap.name in self.c.pool.aps:
                self._free(self.psap_ap)
            return
        if reason == "remote BYE":
            self.event("ap_hangup", answer_point=self.psap_ap.name if self.psap_ap else None)
            self.end(EndReason.AP_HANGUP)
            return
        if reason in ("local BYE", "not wanted"):
            return
        self.fail_over(_failover_cause(leg.failure))

    # --- connecting -----------------------------------------------------------------------
    def _connect(self, attempt: Attempt, leg: Session, ap_sdp: bytes | None) -> None:
        self._set_psap(attempt, leg)
        self.answered_at = self.c.now()
        self._stop_keepalive()
        # With an offer from the caller, the AP's 200 holds the answer; with a delayed offer it
        # holds the AP's offer, and the caller's answer comes back in its ACK (on_caller_ack).
        self.last_sent_up = ap_sdp
        self.last_sent_ap = self.caller_offer
        self.upstream.user_data["last_offer"] = self.caller_offer
        leg.user_data["last_offer"] = ap_sdp
        if self.caller_offer is not None and leg.local_sdp is None:
            # The offer went inside a multipart body, which the UA core does not read as
            # ours: without this, a session refresh by re-INVITE (an AP without UPDATE) goes
            # out offerless and its 2xx — holding an offer nobody answers — is never ACKed.
            leg.local_sdp = self.caller_offer
        leg.user_data["ap"] = attempt.ap.name
        self.upstream.answer(ap_sdp)
        self.c.observer.answered(self)
        self._to(TALKING, "answered", answer_point=attempt.ap.name, seconds=round(self.answered_at - self.created, 3))
        self.c.save_legs(self)
        self._start_probe()

    def on_caller_ack(self, ack: Request | None) -> None:
        """The caller confirmed our 200: for a delayed offer its answer goes to the AP's ACK."""
        if self.psap is None or self.caller_offer is not None:
            return
        answer = sdp_of(ack) if ack is not None else None
        if answer is None:
            answer = self.upstream.remote_sdp
        self.last_sent_ap = answer
        self.psap.ack(answer)
        self.c.save_legs(self)  # both SDPs are known only now

    def _set_psap(self, attempt: Attempt, leg: Session) -> None:
        self.psap = leg
        self.psap_ap = attempt.ap
        self.tried.clear()
        self.backoff = 0.0
        self.c.queue_wait_ended(self)

    # --- failover / transfer ---------------------------------------------------------------
    def fail_over(self, reason: FailoverCause | str) -> None:
        """The PSAP leg is gone or judged failed: move the call to another answer point."""
        if self.ended or self.state != TALKING:
            return
        reason = FailoverCause(reason)
        old, old_ap = self.psap, self.psap_ap
        self._to(MOVING, "failover", reason=reason.value, answer_point=old_ap.name if old_ap else None)
        self.c.observer.failover_started(self, reason.value)
        self._stop_probe()
        self.psap = None
        self._answer_pending_caller_request()
        if old_ap is not None and old_ap.name in self.c.pool.aps:
            self._free(old_ap)
        if old is not None and old.state != "terminated":
            old.bye(reason="failed over")
        self.move_reason = reason.value
        self.move_started = self.c.now()
        self.tried = {old_ap.name} if old_ap is not None else set()
        self.hunt()

    def start_transfer(self, referrer: Session, target: str, queue: str | None, notify: Any) -> None:
        """Blind transfer (REFER from the AP leg): move the caller to ``target`` / ``queue``."""
        self.transfer = {"referrer": referrer, "uri": None if queue else target, "queue": queue, "notify": notify}
        self._to(MOVING, "transfer", target=target, queue=queue)
        self.c.observer.failover_started(self, FailoverCause.TRANSFER.value)
        self.move_reason = FailoverCause.TRANSFER.value
        self.move_started = self.c.now()
        self.tried = {self.psap_ap.name} if self.psap_ap else set()
        self._stop_probe()
        self._answer_pending_caller_request()
        self.hunt()

    def _transfer_failed(self, why: str) -> None:
        transfer, self.transfer = self.transfer, None
        back = self.psap is not None  # the transferor is still there: the call goes back to it
        self._to(TALKING if back else self.state, "transfer_failed", reason=why)
        if transfer:
            # RFC 3515 §2.4.5: the final NOTIFY carries how the INVITE to the target ended.
            status, reason = transfer.get("status") or (503, "Service Unavailable")
            transfer["notify"](status, reason, final=True)
        if not back:
            # The transferor has hung up meanwhile: nobody to go back to. Hunt the call's own
            # queue like a failover (its old position last), never drop the caller.
            self.event("failover", reason=FailoverCause.TRANSFER.value,
                       answer_point=self.psap_ap.name if self.psap_ap else None)
            self.tried = {self.psap_ap.name} if self.psap_ap is not None else set()
            self.hunt()
            return
        self._start_probe()

    def _complete_move(self, attempt: Attempt, leg: Session, ap_offer: bytes | None) -> None:
        if ap_offer is None:
            # The new AP sent no offer in its 200: nothing to move the caller's media to.
            self._move_failed(attempt, "no SDP offer in 200", None)
            return
        try:
            _reoffer(self.last_sent_up, ap_offer)
        except (sdplib.SdpParseError, ValueError) as exc:
            self._move_failed(attempt, f"bad SDP: {exc}", ap_offer)
            return
        attempt.ap_offer = ap_offer
        now = attempt.reinvite_started = self.c.now()
        attempt.timers.append(self.c.call_at(now + KEEP_POSITION_AFTER, lambda at: self._keep_position(attempt)))
        limit = self.c.routing.failover.caller_reinvite_give_up
        attempt.timers.append(self.c.call_at(now + limit, lambda at: self._give_up_on_caller(attempt)))
        self._reinvite_caller(attempt)

    def _move_offer(self, attempt: Attempt) -> bytes | None:
        """The offer for the caller, built when the re-INVITE actually leaves (it may have
        waited behind another INVITE transaction that changed the caller's session)."""
        assert attempt.ap_offer is not None
        try:
            offer = _reoffer(self.last_sent_up, attempt.ap_offer)
        except (sdplib.SdpParseError, ValueError):
            return attempt.ap_offer
        if self.refused_up is not None and not _same_session_content(self.refused_up, offer):
            offer = _versioned(self.refused_up, offer) or offer
        elif self.refused_up is not None:
            offer = self.refused_up  # the same offer again: the same version
        return offer

    def _reinvite_caller(self, attempt: Attempt) -> None:
        # Bound methods and lambdas, not closures that name themselves: such a closure is a
        # reference cycle only the cyclic GC frees.
        self.upstream.reinvite(lambda: self._move_offer(attempt), fail_session=False,
                               on_done=lambda resp: self._caller_answered(attempt, resp))

    def _caller_answered(self, attempt: Attempt, resp: Response | None) -> None:
        ok = resp is not None and 200 <= resp.status < 300
        if ok:
            self.last_sent_up = self.upstream.local_sdp  # the caller's session is that offer now
            self.refused_up = None
        elif resp is not None and attempt.ap_offer is not None:
            self.refused_up = self._move_offer(attempt)  # what it saw and refused
        if self.ended or attempt is not self.attempt:
            # The call ended (end() has BYEd this leg and freed its position), or the new
            # leg died while the caller was being re-INVITEd (it was dropped and the hunt
            # went on): nothing left to do with this answer.
            _ack_and_bye(attempt.leg, attempt.ap_offer)
            if ok:
                self.c.save_legs(self)
            return
        assert attempt.ap_offer is not None
        if ok:
            self._moved_media(attempt, sdp_of(resp) or self.upstream.remote_sdp)  # type: ignore[arg-type]
            return
        status = resp.status if resp is not None else None
        if status == 481:
            self._caller_gone(attempt)
        elif status is None or status in _TRANSIENT or status >= 500 and status != 580:
            self._caller_failed(attempt, resp, refused=False)
        elif not attempt.offerless_tried:
            # The caller refused this offer, not the position: ask for its offer instead and
            # carry that to the position (RFC 3725 flow III's order), once.
            attempt.offerless_tried = True
            self.event("move_offer_refused", answer_point=attempt.ap.name, status=status)
            self.upstream.reinvite(None, fail_session=False, on_done=lambda r: self._caller_offered(attempt, r))
        else:
            self._caller_failed(attempt, resp, refused=True)

    def _caller_offered(self, attempt: Attempt, resp: Response | None) -> None:
        """The answer to our offerless re-INVITE: a 2xx holds the caller's offer."""
        ok = resp is not None and 200 <= resp.status < 300
        caller_offer = sdp_of(resp) if ok else None  # type: ignore[arg-type]
        if self.ended or attempt is not self.attempt or caller_offer is None:
            if ok:
                # The caller waits for our ACK with an answer: give it one that keeps its
                # session as it was (the refused streams off), then deal with the rest.
                answer = _align(self.last_sent_up, caller_offer) if caller_offer is not None else None
                self.upstream.ack(answer)
                self.last_sent_up = self.upstream.local_sdp
            if self.ended or attempt is not self.attempt:
                _ack_and_bye(attempt.leg, attempt.ap_offer)
            elif resp is not None and resp.status == 481:
                self._caller_gone(attempt)
            else:
                transient = resp is None or resp.status in _TRANSIENT or resp.status >= 500
                self._caller_failed(attempt, resp, refused=not transient)
            return
        assert attempt.ap_offer is not None
        # Answer the caller with the position's media, lined up on the caller's offer and
        # under the session the caller knows (version + 1)...
        up_answer = _align(self._move_offer(attempt), caller_offer) or attempt.ap_offer
        self.upstream.ack(up_answer)
        self.last_sent_up = up_answer
        # ...and the position with the caller's media lined up on the position's offer.
        self._moved_media(attempt, caller_offer)

    def _moved_media(self, attempt: Attempt, caller_sdp: bytes | None) -> None:
        """The caller has the position's media: give the position the caller's, and the move
        is done."""
        assert attempt.ap_offer is not None
        leg = attempt.leg
        to_ap = _align(caller_sdp, attempt.ap_offer)
        if attempt.acked is None:
            leg.ack(to_ap)
            self.last_sent_ap = to_ap
        elif to_ap is not None and not _same_session_content(attempt.acked, to_ap):
            # The position was ACKed early with the caller's old media: tell it the new.
            offer = _versioned(attempt.acked, to_ap)
            self.last_sent_ap = offer
            leg.reinvite(offer)
        else:
            self.last_sent_ap = attempt.acked
        leg.user_data["last_offer"] = attempt.ap_offer
        self.attempt = None
        self._finish_move(attempt, leg)

    def _keep_position(self, attempt: Attempt) -> None:
        """ACK the new position's 200 now (it would give up after 32 s of unACKed 200s) with
        the media the caller has today: it can send to the caller at once."""
        if attempt.acked is not None or attempt.ap_offer is None or attempt is not self.attempt or self.ended:
            return
        current = self.upstream.remote_sdp or self.caller_offer
        attempt.acked = _align(current, attempt.ap_offer) or _all_rejected(attempt.ap_offer)
        attempt.leg.ack(attempt.acked)
        self.last_sent_ap = attempt.acked

    def _caller_failed(self, attempt: Attempt, resp: Response | None, *, refused: bool) -> None:
        """The move's re-INVITE of the caller failed — 408, 5xx, a timeout or a transport
        error, or (``refused``) its media refused even offerless: keep the position, retry
        with back-off within the give-up limit. Never another call-taker rung for it."""
        if self.upstream.state == "terminated":  # gone under us: on_terminated ends the call
            return
        attempt.caller_failures += 1
        attempt.refused = refused
        status = resp.status if resp is not None else None
        self.event("caller_reinvite_failed", answer_point=attempt.ap.name, status=status,
                   attempt=attempt.caller_failures)
        self._keep_position(attempt)
        limit = self.c.routing.failover.caller_reinvite_give_up
        started = attempt.reinvite_started if attempt.reinvite_started is not None else self.c.now()
        if self.c.now() - started >= limit:
            self._give_up_on_caller(attempt)
            return
        delay = min(8.0, 0.5 * 2 ** (attempt.caller_failures - 1))
        retry_after = resp.headers.get("Retry-After") if resp is not None else None
        if retry_after and retry_after.split(";")[0].strip().isdigit():
            delay = max(delay, float(retry_after.split(";")[0].strip()))
        delay = min(delay, max(0.0, started + limit - self.c.now()))
        attempt.timers.append(self.c.call_at(self.c.now() + delay, lambda at: self._retry_caller(attempt)))

    def _give_up_on_caller(self, attempt: Attempt) -> None:
        if self.ended or attempt is not self.attempt:
            return
        reason = EndReason.NO_COMPATIBLE_MEDIA if attempt.refused else EndReason.CALLER_UNREACHABLE
        self.end(reason, detail=f"the move's re-INVITE of the caller did not succeed within "
                                f"{self.c.routing.failover.caller_reinvite_give_up:g} s "
                                f"({attempt.caller_failures} failed)")

    def _retry_caller(self, attempt: Attempt) -> None:
        if not self.ended and attempt is self.attempt:
            self._reinvite_caller(attempt)

    def _caller_gone(self, attempt: Attempt) -> None:
        """481: the caller side no longer knows the dialog — nobody to keep on the line."""
        self.event("caller_dialog_gone", answer_point=attempt.ap.name)
        self.upstream.forget("481 to re-INVITE")
        self.end(EndReason.CALLER_GONE)

    def _move_failed(self, attempt: Attempt, why: str, ap_offer: bytes | None) -> None:
        """The new leg is up but cannot carry the call: ACK and BYE it, hunt on."""
        self.event("move_failed", answer_point=attempt.ap.name, reason=why)
        self._note_transfer_failure(488, "Not Acceptable Here", why)
        self._drop_attempt(attempt)
        _ack_and_bye(attempt.leg, ap_offer)
        if not self.ended:
            self.hunt()

    def _finish_move(self, attempt: Attempt, leg: Session) -> None:
        # The leg being replaced: the transferor's (a failover has let go of its leg already,
        # and so has a transferor that hung up: self.psap is None then).
        old, old_ap = self.psap, self.psap_ap
        self._set_psap(attempt, leg)
        duration = self.c.now() - (self.move_started or self.c.now())
        reason = self.move_reason or "unknown"
        self._to(TALKING, "moved", answer_point=attempt.ap.name, reason=reason, seconds=round(duration, 3))
        self.c.observer.failover_done(self, reason, duration)
        transfer, self.transfer = self.transfer, None
        if transfer is not None:
            transfer["notify"](200, "OK", final=True)
        if old is not None and old is not leg:
            if old.state != "terminated":
                old.bye(reason="transferred" if transfer is not None else "failed over")
            if old_ap is not None and old_ap.name in self.c.pool.aps:
                self._free(old_ap)
        leg.user_data["ap"] = attempt.ap.name
        self.c.save_legs(self)
        self._start_probe()

    # --- in-dialog OPTIONS probe of the PSAP leg ----------------------------------------------
    def _start_probe(self) -> None:
        interval = self.c.routing.failover.in_dialog_options_interval
        if interval <= 0 or self.psap is None:
            return
        self._stop_probe()
        self._probe = self.c.call_at(self.c.now() + interval, lambda at: self._send_probe())

    def _stop_probe(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None

    def _send_probe(self) -> None:
        leg = self.psap
        if leg is None or self.ended or self.state != TALKING:
            return
        if not self.c.may_act(self):
            # This node's lease is not confirmed (paused, or cut from its database): another
            # node may own the call by now. A probe would be held and then time out, which
            # is no evidence against the position: look again later.
            self._start_probe()
            return
        settled = {"done": False}
        timeout = self.c.routing.health.options_timeout

        def result(ok: bool, why: FailoverCause | None) -> None:
            if settled["done"]:
                return
            settled["done"] = True
            guard.cancel()
            if leg is not self.psap:
                return
            if ok:
                self._start_probe()
            elif why is not None:
                self.fail_over(why)

        guard = self.c.call_at(self.c.now() + timeout,
                                         lambda at: result(False, FailoverCause.OPTIONS_TIMEOUT))

        def on_response(resp: Response) -> None:
            if resp.status < 200:
                return
            if resp.status == 408:
                result(False, FailoverCause.IN_DIALOG_408)
            elif resp.status == 481:
                result(False, FailoverCause.IN_DIALOG_481)
            else:
                result(True, None)

        leg.request("OPTIONS", on_response=on_response,
                    on_failure=lambda why: result(False, _failover_cause(("OPTIONS", failure_cause(why)))))

    # --- media changes from either side ------------------------------------------------------
    def on_reoffer(self, leg: Session, request: Request) -> None:
        """A re-INVITE or UPDATE with or without SDP from the caller or the AP."""
        other = self.psap if leg is self.upstream else self.upstream
        offer = sdp_of(request)
        mine = self.last_sent_up if leg is self.upstream else self.last_sent_ap
        if offer is None or _same_session_content(leg.user_data.get("last_offer"), offer):
            # Session refresh: answer with what we last sent.
            leg.accept_update(mine if request.method == "INVITE" or offer is not None else None)
            return
        if other is None or self.state != TALKING:
            # A new offer while the other side is being replaced: nothing to relay it to. The
            # session stays as it is; 491 asks the peer to try again after a back-off, by
            # when the move is done (RFC 3261 §14.2 / RFC 3311 §5.2).
            leg.reject_update(491)
            return
        towards_other_last = self.last_sent_ap if leg is self.upstream else self.last_sent_up
        try:
            relayed = _reoffer(towards_other_last, offer)
        except (sdplib.SdpParseError, ValueError):
            leg.reject_update(488)
            return
        token = self._relay = object()

        def done(resp: Response | None) -> None:
            ok = resp is not None and 200 <= resp.status < 300 and sdp_of(resp) is not None
            if ok:
                # The far side's session is the relayed offer now, whatever becomes of ours.
                if other is self.upstream:
                    self.last_sent_up = relayed
                else:
                    self.last_sent_ap = relayed
            status = resp.status if resp is not None else None
            if other is self.upstream and status == 481 and not self.ended:
                # The caller's dialog is gone: nobody to keep on the line.
                self.upstream.forget("481 to a relayed re-INVITE")
                self.end(EndReason.CALLER_GONE)
                return
            if token is not self._relay:
                return  # answered already (a move started meanwhile)
            self._relay = None
            if not ok:
                # The offer failed on the far side; this side's session stays as it was. A
                # 408/481/5xx or no answer is not passed on as such (it would end this dialog
                # at its peer): 500 with Retry-After says "not now".
                leg.reject_update(500 if status is None or status in (408, 481) or status >= 500
                                  else status if status >= 400 else 500)
                return
            answer = _align(sdp_of(resp), offer)  # type: ignore[arg-type]
            answer = _versioned(mine, answer)
            leg.user_data["last_offer"] = offer
            if leg is self.upstream:
                self.last_sent_up = answer
            else:
                self.last_sent_ap = answer
            leg.accept_update(answer)
            self.c.save_legs(self)  # a takeover re-INVITEs with these SDPs and versions

        self.event("media_change", by="caller" if leg is self.upstream else "answer point")
        # A relay to the caller is not allowed to end its leg: a failed relay refuses the
        # position's offer, and the caller stays.
        other.reinvite(relayed, on_done=done, fail_session=other is not self.upstream)

    def _answer_pending_caller_request(self) -> None:
        """The PSAP leg is going: a re-INVITE/UPDATE of the caller's that waits for it (being
        relayed) is answered now — a refresh with our last SDP, a new offer with 491 — so
        that the move's own re-INVITE can go (RFC 3261 §14.1)."""
        self._relay = None
        request = self.upstream.pending_request
        if request is None:
            return
        offer = sdp_of(request)
        if offer is None or _same_session_content(self.upstream.user_data.get("last_offer"), offer):
            self.upstream.accept_update(self.last_sent_up if request.method == "INVITE" or offer is not None else None)
        else:
            self.upstream.reject_update(491)

    # --- ending -------------------------------------------------------------------------------
    def caller_cancelled(self) -> None:
        if self.ended:
            return
        self.event("abandoned")
        self.c.observer.abandoned(self)
        self.end(EndReason.ABANDONED, outcome="abandoned")

    def caller_hung_up(self) -> None:
        self.event("caller_hangup")
        self.end(EndReason.CALLER_HANGUP)

    def release(self) -> None:
        """An operator (or a drill) ends the call: both legs get a BYE."""
        self.end(EndReason.OPERATOR)

    def end(self, reason: EndReason, *, detail: str | None = None, outcome: str | None = None) -> None:
        """End the call. The caller gets a BYE only under the reasons that allow it (a hang-up
        on the PSAP side, an operator, a bounded give-up rule): `state.BYE_CALLER_ALLOWED`."""
        if self.ended:
            return
        attempt = self._halt()
        self.c.queue_wait_ended(self)
        if attempt is not None:
            if attempt.leg.state == "confirmed":
                # A move's new leg, answered, waiting for the caller's answer to ACK with.
                _ack_and_bye(attempt.leg, attempt.leg.remote_sdp)
            else:
                attempt.leg.cancel()
        if self.psap is not None:
            if self.psap.state != "terminated":
                self.psap.bye(reason="call ended")
            if self.psap_ap is not None and self.psap_ap.name in self.c.pool.aps:
                self._free(self.psap_ap)
        if self.upstream.state != "terminated":
            if reason in BYE_CALLER_ALLOWED:
                self.upstream.bye(reason=reason.value)  # (480 to an INVITE not answered yet)
            else:
                # Every other end is the caller's own doing (the UA core has answered its
                # CANCEL or BYE) or its dialog is gone already.
                self.upstream.forget(reason.value)
        if outcome is None:
            outcome = "answered" if self.answered_at is not None else "failed"
        self.event("ended", reason=reason.value, outcome=outcome, detail=detail, state=ENDED.value)
        self.c.call_ended(self, outcome, reason.value)

    def _halt(self) -> Attempt | None:
        """The call stops here (ended, or fenced): state ENDED, every timer and wait cancelled,
        the attempt in progress dropped (its position freed) and returned to be settled."""
        previous, self.state = self.state, ENDED
        self.c.observer.state_changed(self, previous, ENDED)
        self._cancel_wait()
        self._stop_probe()
        self._stop_keepalive()
        self._relay = None
        attempt, self.attempt = self.attempt, None
        if attempt is not None:
            self._drop_attempt(attempt)
        return attempt

    def detach(self, why: str) -> None:
        """Fenced: another node owns this call now (DESIGN "Cluster": fencing is total). Stop
        at once and send nothing more on it: every timer cancelled, every leg forgotten (no
        BYE, no CANCEL; the UA core stops their retransmissions and refreshes), the position
        freed here (its new owner counts it). Nothing is written: the row is not ours."""
        if self.ended:
            return
        attempt = self._halt()
        if self.psap_ap is not None and self.psap_ap.name in self.c.pool.aps:
            self._free(self.psap_ap)
        for leg in [self.upstream, self.psap] + ([attempt.leg] if attempt is not None else []):
            if leg is not None and leg.state != "terminated":
                leg.forget(why)

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None


_REASONS = {408: "Request Timeout", 480: "Temporarily Unavailable", 486: "Busy Here", 487: "Request Terminated",
            488: "Not Acceptable Here", 503: "Service Unavailable", 603: "Decline"}


class _ExternalAp(AnswerPoint):
    """A transfer target outside the configured queues (another PSAP, say)."""


def _external(uri: str) -> AnswerPoint:
    from ng911.routing.model import AnswerPointSpec

    return _ExternalAp(AnswerPointSpec(name=uri, uri=uri, ring_timeout=30.0, no_provisional_timeout=5.0, capacity=1000))


#: a caller's answers to a move's re-INVITE that say "not now", not "not this media": 408, a
#: 487 after our CANCEL of an unanswered re-INVITE, a 491 left after the UA core's glare retries
_TRANSIENT = frozenset({408, 487, 491})

#: a caller that has not answered the move's re-INVITE this fast: ACK the new position anyway
#: (with the caller's current media) so it stays on the line while we wait or retry
KEEP_POSITION_AFTER = 2.0


def _ack_and_bye(leg: Session, offer: bytes | None) -> None:
    """ACK a 2xx we do not want (with an answer refusing every stream when it held an offer
    we have not answered) and BYE it (RFC 3261 §13.2.2.4, §15)."""
    if leg.state == "terminated":
        return
    if leg.last_ack is None:
        leg.ack(_all_rejected(offer) if offer is not None and sdp_of(leg.invite) is None else None)
    leg.bye(reason="not wanted")


def _failover_cause(failure: tuple[str, str] | None) -> FailoverCause:
    """Why a PSAP leg died, from the UA core's ``Session.failure`` (method, cause)."""
    if failure is None:
        return FailoverCause.AP_FAILED
    method, cause = failure
    if cause == "408":
        return FailoverCause.IN_DIALOG_408
    if cause == "481":
        return FailoverCause.IN_DIALOG_481
    if cause == "transport":
        return FailoverCause.TRANSPORT_ERROR
    if cause == "expired":
        return FailoverCause.SESSION_TIMER
    if cause == "timeout":
        # Only our OPTIONS probe sends OPTIONS; an UPDATE or re-INVITE that goes unanswered
        # is a session refresh (RFC 4028) or a relayed offer: the session is what failed.
        return FailoverCause.OPTIONS_TIMEOUT if method == "OPTIONS" else FailoverCause.SESSION_TIMER
    return FailoverCause.AP_FAILED


def _reoffer(last_sent: bytes | None, new: bytes) -> bytes:
    new_desc = sdplib.parse(new)
    if last_sent is None:
        return new
    return sdplib.reoffer(sdplib.parse(last_sent), new_desc).to_bytes()


def _align(answer: bytes | None, offer: bytes) -> bytes | None:
    if answer is None:
        return None
    try:
        return sdplib.align_answer(sdplib.parse(answer), sdplib.parse(offer)).to_bytes()
    except (sdplib.SdpParseError, ValueError):
        return answer


def _versioned(last_sent: bytes | None, desc: bytes | None) -> bytes | None:
    if desc is None or last_sent is None:
        return desc
    try:
        return sdplib.versioned(sdplib.parse(last_sent), sdplib.parse(desc)).to_bytes()
    except (sdplib.SdpParseError, ValueError):
        return desc


def _versioned_always(desc: bytes) -> bytes:
    """The same description, o= version + 1 (a target refresh re-offers what the peer has)."""
    try:
        parsed = sdplib.parse(desc)
        return parsed.with_origin(parsed.origin.next_version()).to_bytes()
    except (sdplib.SdpParseError, ValueError, AttributeError):
        return desc


def _content_of_row(row: dict[str, Any]) -> dict[str, Any]:
    """A call's NG9-1-1 content as its stored row holds it."""
    return {k: row.get(k) for k in ("nena_call_id", "nena_incident_id", "location", "additional_data", "headers")}


def _invite_of_row(row: dict[str, Any], upstream: Session) -> Request:
    """The caller's INVITE as far as a stored call row tells it (identity and ids, no body)."""
    display = row.get("caller_display")
    caller = f"{quote_string(display)} <{row['caller']}>" if display else f"<{row['caller']}>"
    headers = Headers([("From", f"{caller};tag={upstream.dialog.remote_tag if upstream.dialog else 'x'}"),
                       ("To", f"<{row['request_uri']}>"), ("Call-ID", row["sip_call_id"]), ("CSeq", "1 INVITE")])
    return Request("INVITE", parse_uri(row["request_uri"]), headers, b"")


def _all_rejected(offer: bytes) -> bytes | None:
    """An answer that refuses every stream of ``offer`` (port 0): a valid way to say no."""
    try:
        desc = sdplib.parse(offer)
        for i in range(len(desc.media)):
            desc = desc.with_stream(i, desc.media[i].disabled())
        return desc.to_bytes()
    except (sdplib.SdpParseError, ValueError, AttributeError, TypeError):
        return None


def _same_session_content(previous: bytes | None, offer: bytes) -> bool:
    if previous is None:
        return False
    try:
        return sdplib.parse(previous).content() == sdplib.parse(offer).content()
    except (sdplib.SdpParseError, ValueError):
        return False
