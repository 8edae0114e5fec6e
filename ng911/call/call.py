"""One emergency call: the caller's upstream leg, the replaceable PSAP leg, and their flows.

RFC 3725 third-party call control with the caller's leg as the fixed point:

    ROUTING ──AP answers──▶ TALKING ──PSAP leg fails / REFER──▶ MOVING ──new AP in──▶ TALKING
       │  (hunt: next AP on error, no 1xx, ring timeout; back off, never reject)            │
       └──caller CANCEL──▶ ENDED (abandoned)          caller BYE / AP BYE ──▶ ENDED ◀──────┘

Routing an offer (flow "caller with SDP"): INVITE AP with the caller's body → 18x relayed →
AP's 200 answer to the caller; delayed offer: INVITE AP without SDP → its 200 offer goes up in
our 200 → the caller's ACK answer goes down in the AP's ACK. A move (DESIGN step 5, RFC 3725
flow I): INVITE the new AP *without* SDP → its 200 offer, rewritten onto the caller's session
(`sdp.reoffer`: same o= session, version + 1, same m-lines) → re-INVITE the caller → its 200
answer, aligned to the AP's m-lines → ACK the AP. The caller never sees a BYE.

No I/O here: the UA core sends, its timer wheel keeps time, `CallObserver` records.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ng911 import sdp as sdplib
from ng911.call.sdpbody import sdp_of, without_sdp
from ng911.routing.pool import AnswerPoint
from ng911.sip.message import Request, Response
from ng911.sip.timerwheel import TimerHandle
from ng911.sip.ua import Session

if TYPE_CHECKING:
    from ng911.call.controller import Controller

log = logging.getLogger("ng911.call")

ROUTING, TALKING, MOVING, ENDED = "routing", "talking", "moving", "ended"


@dataclass
class Attempt:
    """One INVITE to one answer point."""

    ap: AnswerPoint
    leg: Session
    started: float
    timers: list[TimerHandle] = field(default_factory=list)
    provisional: bool = False
    abandoned: bool = False  # we gave up on it (timeout / caller gone); ignore what it says

    def stop_timers(self) -> None:
        for t in self.timers:
            t.cancel()
        self.timers.clear()


class Call:
    def __init__(self, controller: Controller, upstream: Session, request: Request, *, call_id: str,
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
        self.state = ROUTING
        self.created = controller.now()
        self.answered_at: float | None = None
        self.caller_offer = sdp_of(request)  # None: delayed offer
        self.attempt: Attempt | None = None  # the INVITE in progress (routing or moving)
        self.psap: Session | None = None  # the connected PSAP leg
        self.psap_ap: AnswerPoint | None = None
        self.last_sent_up: bytes | None = None  # last SDP we sent the caller
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

    # --- routing / hunting ------------------------------------------------------------------
    def start(self) -> None:
        self.event("routing", queue=self.queue)
        self.hunt()

    def hunt(self) -> None:
        """Try the next free answer point; when none is left, wait and try again."""
        if self.ended or self.attempt is not None:
            return
        if self.state == TALKING and self.transfer is None:
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
        candidates = self.c.pool.candidates(queue, exclude)
        if candidates:
            self._invite(candidates[0], candidates[0].spec.uri)
            return
        if self.transfer is not None:
            self._transfer_failed(self.transfer.get("why") or "no answer point free")
            return
        # Nobody free (all tried, busy or down): an emergency call waits — ringing — and
        # hunts again when a position frees up or after a back-off, whichever comes first.
        self._ring_upstream()
        self.tried.clear()
        initial, cap = self.c.routing.failover.hunt_backoff_initial, self.c.routing.failover.hunt_backoff_max
        self.backoff = initial if self.backoff == 0 else min(cap, self.backoff * 2)
        self.event("waiting", backoff=self.backoff)
        self.c.queue_wait_started(self)
        self._retry = self.c.ua.timers.call_at(self.c.now() + self.backoff, lambda at: self._wake())
        self._unwait = self.c.pool.wait(self._wake)

    def _wake(self) -> None:
        self._cancel_wait()
        if not self.ended and self.attempt is None:
            self.c.ua.timers.call_at(self.c.now(), lambda at: self.hunt())

    def _cancel_wait(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._unwait is not None:
            self._unwait()
            self._unwait = None

    def _ring_upstream(self) -> None:
        if not self.rang_upstream and self.state == ROUTING:
            self.rang_upstream = True
            self.upstream.ring(180)

    def _invite(self, ap: AnswerPoint | None, target: str) -> None:
        with_offer = self.state == ROUTING and self.caller_offer is not None
        if with_offer:
            body, ctype = self.request.body, self.request.content_type
        else:
            body, ctype = without_sdp(self.request)
        headers = list(self.forward_headers)
        history = self.c.history_for(self, target)
        if history:
            headers = [h for h in headers if h[0].lower() != "history-info"] + history
        from_addr = self.c.psap_from(self)
        leg = self.c.ua.invite(
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
            self.c.pool.acquire(ap)
            self.tried.add(ap.name)
        self.attempt = attempt
        self.event("ap_invite", answer_point=attempt.ap.name, target=target, offer=with_offer)
        spec = attempt.ap.spec
        now = self.c.now()
        attempt.timers.append(self.c.ua.timers.call_at(now + spec.no_provisional_timeout,
                                                       lambda at: self._attempt_timeout(attempt, "no provisional")))
        attempt.timers.append(self.c.ua.timers.call_at(now + spec.ring_timeout,
                                                       lambda at: self._attempt_timeout(attempt, "ring timeout")))

    def _attempt_timeout(self, attempt: Attempt, why: str) -> None:
        if attempt is not self.attempt:
            return
        if why == "no provisional" and attempt.provisional:
            return
        self.event("ap_timeout", answer_point=attempt.ap.name, reason=why)
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
            self.c.pool.release(attempt.ap)

    # --- PSAP leg events (from the controller) ----------------------------------------------
    def on_leg_provisional(self, leg: Session, response: Response) -> None:
        attempt = self.attempt
        if attempt is None or attempt.leg is not leg:
            return
        attempt.provisional = True
        if self.state != ROUTING:
            return  # a move: the caller is talking to nobody, nothing to relay
        early = sdp_of(response)
        if early is not None and self.caller_offer is not None:
            self.last_sent_up = early
            self.upstream.ring(response.status if response.status != 180 else 183, early)
            self.rang_upstream = True
            self.event("early_media", answer_point=attempt.ap.name)
        elif not self.rang_upstream:
            self.rang_upstream = True
            self.upstream.ring(180)
        self.event("ap_ringing", answer_point=attempt.ap.name, status=response.status)

    def on_leg_answered(self, leg: Session, response: Response) -> None:
        attempt = self.attempt
        if attempt is None or attempt.leg is not leg or attempt.abandoned:
            # Answered after we gave up on it: ACK (§13.2.2.4: a valid answer, refusing every
            # stream, when the 200 holds an offer) and BYE.
            _ack_and_bye(leg, sdp_of(response))
            return
        attempt.stop_timers()
        ap_sdp = sdp_of(response)
        if self.state == ROUTING:
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
        self.event("ap_failed", answer_point=attempt.ap.name, reason=reason)
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
                self.c.pool.release(self.psap_ap)
            return
        if reason == "remote BYE":
            self.event("ap_hangup", answer_point=self.psap_ap.name if self.psap_ap else None)
            self.end("answer point hung up", bye_upstream=True)
            return
        if reason in ("local BYE", "not wanted"):
            return
        self.fail_over(_failover_reason(reason))

    # --- connecting -----------------------------------------------------------------------
    def _connect(self, attempt: Attempt, leg: Session, ap_sdp: bytes | None) -> None:
        self._set_psap(attempt, leg)
        self.state = TALKING
        self.answered_at = self.c.now()
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
        self.event("answered", answer_point=attempt.ap.name, seconds=round(self.answered_at - self.created, 3))
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
    def fail_over(self, reason: str) -> None:
        """The PSAP leg is gone or judged failed: move the call to another answer point."""
        if self.ended or self.state != TALKING:
            return
        old, old_ap = self.psap, self.psap_ap
        self.event("failover", reason=reason, answer_point=old_ap.name if old_ap else None)
        self.c.observer.failover_started(self, reason)
        self._stop_probe()
        self.psap = None
        if old_ap is not None and old_ap.name in self.c.pool.aps:
            self.c.pool.release(old_ap)
        if old is not None and old.state != "terminated":
            old.bye(reason="failed over")
        self.state = MOVING
        self.move_reason = reason
        self.move_started = self.c.now()
        self.tried = {old_ap.name} if old_ap is not None else set()
        self.hunt()

    def start_transfer(self, referrer: Session, target: str, queue: str | None, notify: Any) -> None:
        """Blind transfer (REFER from the AP leg): move the caller to ``target`` / ``queue``."""
        self.transfer = {"referrer": referrer, "uri": None if queue else target, "queue": queue, "notify": notify}
        self.event("transfer", target=target, queue=queue)
        self.c.observer.failover_started(self, "transfer")
        self.move_reason = "transfer"
        self.move_started = self.c.now()
        self.tried = {self.psap_ap.name} if self.psap_ap else set()
        self.state = MOVING
        self._stop_probe()
        self.hunt()

    def _transfer_failed(self, why: str) -> None:
        transfer, self.transfer = self.transfer, None
        self.event("transfer_failed", reason=why)
        if transfer:
            # RFC 3515 §2.4.5: the final NOTIFY carries how the INVITE to the target ended.
            status, reason = transfer.get("status") or (503, "Service Unavailable")
            transfer["notify"](status, reason, final=True)
        if self.psap is None:
            # The transferor has hung up meanwhile: nobody to go back to. Hunt the call's own
            # queue like a failover (its old position last), never drop the caller.
            self.state = MOVING
            self.event("failover", reason="transfer", answer_point=self.psap_ap.name if self.psap_ap else None)
            self.tried = {self.psap_ap.name} if self.psap_ap is not None else set()
            self.hunt()
            return
        self.state = TALKING
        self._start_probe()

    def _complete_move(self, attempt: Attempt, leg: Session, ap_offer: bytes | None) -> None:
        if ap_offer is None:
            # The new AP sent no offer in its 200: nothing to move the caller's media to.
            self._move_failed(attempt, "no SDP offer in 200", None)
            return
        try:
            offer_up = _reoffer(self.last_sent_up, ap_offer)
        except (sdplib.SdpParseError, ValueError) as exc:
            self._move_failed(attempt, f"bad SDP: {exc}", ap_offer)
            return
        self.last_sent_up = offer_up
        self._reinvite_caller(attempt, ap_offer, offer_up)

    def _reinvite_caller(self, attempt: Attempt, ap_offer: bytes, offer_up: bytes) -> None:
        # A bound method and a lambda, not a closure that names itself for the 491 retry:
        # such a closure is a reference cycle only the cyclic GC frees.
        self.upstream.reinvite(offer_up, on_done=lambda resp: self._caller_answered(attempt, ap_offer, offer_up, resp))

    def _caller_answered(self, attempt: Attempt, ap_offer: bytes, offer_up: bytes, resp: Response | None) -> None:
        leg = attempt.leg
        if self.ended or attempt is not self.attempt:
            # The call ended (end() has BYEd this leg and freed its position), or the new
            # leg died while the caller was being re-INVITEd (it was dropped and the hunt
            # went on): nothing left to do with this answer.
            _ack_and_bye(leg, ap_offer)
            return
        if resp is None or not 200 <= resp.status < 300:
            status = resp.status if resp is not None else None
            if status == 491:
                # Glare with the caller's own re-INVITE: RFC 3261 §14.1 back-off, then retry.
                delay = random.uniform(2.1, 4.0)
                self.c.ua.timers.call_at(self.c.now() + delay,
                                         lambda at: self._retry_reinvite_caller(attempt, ap_offer, offer_up))
                return
            self._move_failed(attempt, f"caller re-INVITE got {status}", ap_offer)
            return
        self.attempt = None
        caller_answer = sdp_of(resp) or self.upstream.remote_sdp
        to_ap = _align(caller_answer, ap_offer)
        self.last_sent_ap = to_ap
        leg.user_data["last_offer"] = ap_offer
        leg.ack(to_ap)
        self._finish_move(attempt, leg)

    def _retry_reinvite_caller(self, attempt: Attempt, ap_offer: bytes, offer_up: bytes) -> None:
        if not self.ended and attempt is self.attempt:
            self._reinvite_caller(attempt, ap_offer, offer_up)

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
        self.state = TALKING
        duration = self.c.now() - (self.move_started or self.c.now())
        reason = self.move_reason or "unknown"
        self.event("moved", answer_point=attempt.ap.name, reason=reason, seconds=round(duration, 3))
        self.c.observer.failover_done(self, reason, duration)
        transfer, self.transfer = self.transfer, None
        if transfer is not None:
            transfer["notify"](200, "OK", final=True)
        if old is not None and old is not leg:
            if old.state != "terminated":
                old.bye(reason="transferred" if transfer is not None else "failed over")
            if old_ap is not None and old_ap.name in self.c.pool.aps:
                self.c.pool.release(old_ap)
        leg.user_data["ap"] = attempt.ap.name
        self.c.save_legs(self)
        self._start_probe()

    # --- in-dialog OPTIONS probe of the PSAP leg ----------------------------------------------
    def _start_probe(self) -> None:
        interval = self.c.routing.failover.in_dialog_options_interval
        if interval <= 0 or self.psap is None:
            return
        self._stop_probe()
        self._probe = self.c.ua.timers.call_at(self.c.now() + interval, lambda at: self._send_probe())

    def _stop_probe(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None

    def _send_probe(self) -> None:
        leg = self.psap
        if leg is None or self.ended or self.state != TALKING:
            return
        settled = {"done": False}
        timeout = self.c.routing.health.options_timeout

        def result(ok: bool, why: str) -> None:
            if settled["done"]:
                return
            settled["done"] = True
            guard.cancel()
            if leg is not self.psap:
                return
            if ok:
                self._start_probe()
            else:
                self.fail_over(why)

        guard = self.c.ua.timers.call_at(self.c.now() + timeout, lambda at: result(False, "options_timeout"))

        def on_response(resp: Response) -> None:
            if resp.status < 200:
                return
            if resp.status == 408:
                result(False, "in_dialog_408")
            elif resp.status == 481:
                result(False, "in_dialog_481")
            else:
                result(True, "")

        leg.request("OPTIONS", on_response=on_response, on_failure=lambda why: result(False, _failover_reason(why)))

    # --- media changes from either side ------------------------------------------------------
    def on_reoffer(self, leg: Session, request: Request) -> None:
        """A re-INVITE or UPDATE with or without SDP from the caller or the AP."""
        other = self.psap if leg is self.upstream else self.upstream
        offer = sdp_of(request)
        mine = self.last_sent_up if leg is self.upstream else self.last_sent_ap
        if offer is None or other is None or self.state != TALKING or _same_session_content(leg.user_data.get("last_offer"), offer):
            # Session refresh (or we cannot relay now): answer with what we last sent.
            leg.accept_update(mine if request.method == "INVITE" or offer is not None else None)
            return
        towards_other_last = self.last_sent_ap if leg is self.upstream else self.last_sent_up
        try:
            relayed = _reoffer(towards_other_last, offer)
        except (sdplib.SdpParseError, ValueError):
            leg.reject_update(488)
            return

        def done(resp: Response | None) -> None:
            if resp is None or not 200 <= resp.status < 300 or sdp_of(resp) is None:
                leg.reject_update(488 if resp is None else resp.status if resp.status >= 400 else 500)
                return
            answer = _align(sdp_of(resp), offer)  # type: ignore[arg-type]
            answer = _versioned(mine, answer)
            leg.user_data["last_offer"] = offer
            if leg is self.upstream:
                self.last_sent_ap, self.last_sent_up = relayed, answer
            else:
                self.last_sent_up, self.last_sent_ap = relayed, answer
            leg.accept_update(answer)
            self.c.save_legs(self)  # a takeover re-INVITEs with these SDPs and versions

        self.event("media_change", by="caller" if leg is self.upstream else "answer point")
        other.reinvite(relayed, on_done=done)

    # --- ending -------------------------------------------------------------------------------
    def caller_cancelled(self) -> None:
        if self.ended:
            return
        self.event("abandoned")
        self.c.observer.abandoned(self)
        self.end("caller hung up before answer", bye_upstream=False, outcome="abandoned")

    def caller_hung_up(self) -> None:
        self.event("caller_hangup")
        self.end("caller hung up", bye_upstream=False)

    def end(self, reason: str, *, bye_upstream: bool, outcome: str | None = None) -> None:
        if self.ended:
            return
        previous = self.state
        self.state = ENDED
        self._cancel_wait()
        self._stop_probe()
        self.c.queue_wait_ended(self)
        attempt, self.attempt = self.attempt, None
        if attempt is not None:
            self._drop_attempt(attempt)
            if attempt.leg.state == "confirmed":
                # A move's new leg, answered, waiting for the caller's answer to ACK with.
                _ack_and_bye(attempt.leg, attempt.leg.remote_sdp)
            else:
                attempt.leg.cancel()
        if self.psap is not None:
            if self.psap.state != "terminated":
                self.psap.bye(reason="call ended")
            if self.psap_ap is not None and self.psap_ap.name in self.c.pool.aps:
                self.c.pool.release(self.psap_ap)
        if bye_upstream and self.upstream.state != "terminated":
            self.upstream.bye(reason="call ended")
        if outcome is None:
            outcome = "answered" if self.answered_at is not None else ("failed" if previous == ROUTING else "answered")
        self.event("ended", reason=reason, outcome=outcome)
        self.c.call_ended(self, outcome, reason)


_REASONS = {408: "Request Timeout", 480: "Temporarily Unavailable", 486: "Busy Here", 487: "Request Terminated",
            488: "Not Acceptable Here", 503: "Service Unavailable", 603: "Decline"}


class _ExternalAp(AnswerPoint):
    """A transfer target outside the configured queues (another PSAP, say)."""


def _external(uri: str) -> AnswerPoint:
    from ng911.routing.model import AnswerPointSpec

    return _ExternalAp(AnswerPointSpec(name=uri, uri=uri, ring_timeout=30.0, no_provisional_timeout=5.0, capacity=1000))


def _ack_and_bye(leg: Session, offer: bytes | None) -> None:
    """ACK a 2xx we do not want (with an answer refusing every stream when it held an offer
    we have not answered) and BYE it (RFC 3261 §13.2.2.4, §15)."""
    if leg.state == "terminated":
        return
    if leg.last_ack is None:
        leg.ack(_all_rejected(offer) if offer is not None and sdp_of(leg.invite) is None else None)
    leg.bye(reason="not wanted")


def _failover_reason(reason: str) -> str:
    """The ``ng911_failovers_total`` reason for a PSAP leg's end (``Session._failed`` reasons
    read "OPTIONS timeout", "UPDATE got 481", "re-INVITE transport error", "session expired")."""
    r = reason.lower()
    if "408" in r:
        return "in_dialog_408"
    if "481" in r:
        return "in_dialog_481"
    if "expired" in r:
        return "session_timer"
    if "transport" in r:
        return "transport_error"
    if "timeout" in r:
        # Only our OPTIONS probe sends OPTIONS; an UPDATE or re-INVITE that goes unanswered
        # is a session refresh (RFC 4028) or a relayed offer: the session is what failed.
        return "options_timeout" if r.startswith("options") or r == "timeout" else "session_timer"
    return "ap_failed"


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
