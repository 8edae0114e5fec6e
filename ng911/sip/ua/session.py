"""An INVITE session (RFC 3261 §12–§15) for either role: the dialog, its answer, ACK,
CANCEL and BYE. Re-INVITE/UPDATE (§14, RFC 3311), reliable provisionals (RFC 3262) and
session timers (RFC 4028) are mixed in from their own modules.

UAS session:  INCOMING ─ring()→ EARLY ─answer()→ ANSWERED(2xx retransmitted) ─ACK→ CONFIRMED
UAC session:  CALLING ─1xx→ EARLY ─2xx→ CONFIRMED (ACK sent; by the app for a delayed offer)
any state ─BYE / CANCEL / failure→ TERMINATED
"""
from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from ng911.sip.body import sdp_of
from ng911.sip.builders import make_response, new_tag
from ng911.sip.dialog import CONFIRMED, TERMINATED, Dialog
from ng911.sip.message import Request, Response
from ng911.sip.timerwheel import TimerHandle
from ng911.sip.transaction.errors import LocalProtocolError
from ng911.sip.ua.common import (
    ALLOW,
    ANSWERED,
    CALLING,
    INCOMING,
    SESSION_CONFIRMED,
    SESSION_EARLY,
    SESSION_TERMINATED,
    SUPPORTED,
    _ClientCtx,
    _is_reliable,
    _is_sdp,
    _next_hop,
    _session_expires,
    _session_expires_or_none,
    failure_cause,
    new_via,
)
from ng911.sip.ua.prack import ReliableProvisionals
from ng911.sip.ua.reinvite import Reinvites, _Reinvite
from ng911.sip.ua.session_timer import SessionTimers

if TYPE_CHECKING:
    from ng911.sip.ua.agent import UserAgent

log = logging.getLogger("ng911.sip.ua")

#: ACKs a session remembers, by CSeq, to answer a retransmitted 2xx (see Session._send_ack)
ACKS_KEPT = 4

class _Retransmission:
    """One retransmission schedule (a 2xx until ACK, a reliable 1xx until PRACK).

    An object with a method rather than a closure that re-schedules itself: such a closure
    refers to its own cell, a reference cycle that outlives the call and leaves every
    finished schedule to the cyclic GC (measured: full collections of 0.5 s under load).
    """

    __slots__ = ("session", "attr", "send", "cap", "on_give_up", "give_up", "interval")

    def __init__(self, session: Session, attr: str, send: Callable[[], bool], cap: float | None,
                 on_give_up: Callable[[], None] | None, give_up: float) -> None:
        self.session, self.attr, self.send, self.cap = session, attr, send, cap
        self.on_give_up, self.give_up = on_give_up, give_up
        self.interval = 0.0

    def arm(self, now: float, interval: float) -> None:
        self.interval = interval
        timers = self.session.ua.timers
        setattr(self.session, self.attr, timers.call_at(min(now + interval, self.give_up), self.fire))

    def fire(self, at: float) -> None:
        setattr(self.session, self.attr, None)
        if at >= self.give_up:
            if self.on_give_up is not None:
                self.on_give_up()
            return
        if not self.send():
            return
        nxt = self.interval * 2 if self.cap is None else min(self.interval * 2, self.cap)
        self.arm(at, nxt)


class Session(Reinvites, SessionTimers, ReliableProvisionals):
    """One INVITE-created session (a dialog plus its offer/answer and timers)."""

    def __init__(self, ua: UserAgent, *, role: str, invite: Request) -> None:
        self.ua = ua
        self.role = role
        self.invite = invite
        self.state = CALLING if role == "uac" else INCOMING
        self.dialog: Dialog | None = None
        self.local_sdp: bytes | None = None
        self.remote_sdp: bytes | None = None
        self.invite_key: Any = None
        self.source: Any = None
        self.dest: Any = None
        self.last_ack: Request | None = None
        self._acks: dict[int, Request] = {}  # UAC: the ACK sent for each CSeq's 2xx (re-sent on a retransmission)
        self.user_data: dict[str, Any] = {}
        self.terminated_reason: str | None = None
        # UAS 2xx retransmission (§13.3.1.4) and reliable provisionals (RFC 3262)
        self._final_2xx: Response | None = None
        self._retx: TimerHandle | None = None
        self._rseq = 0
        self._unacked_prov: tuple[int, Response] | None = None
        self._prov_retx: TimerHandle | None = None
        self._prack_rseq: int = 0  # UAC: last RSeq we PRACKed
        # re-INVITE / UPDATE handling
        self._pending_in: tuple[Request, Any, Any] | None = None  # incoming re-INVITE/UPDATE (request, key, source)
        self._reinvite_out = False
        self._offer_out = False  # our re-INVITE/UPDATE carrying an offer awaits its answer (glare)
        # §14.1: one INVITE transaction at a time on the dialog, either direction. Our
        # re-INVITEs wait here, in order, until the dialog is free; a 491 puts ours back at
        # the head after the back-off (``_glare``).
        self._reinvites: deque[_Reinvite] = deque()
        self._glare: TimerHandle | None = None
        #: why the session failed: (method, cause) with cause "408", "481", "timeout",
        #: "transport", "expired" or "no_ack" — read by the application instead of parsing text
        self.failure: tuple[str, str] | None = None
        self._reinvite_final: Response | None = None
        self._reinvite_retx: TimerHandle | None = None
        # RFC 4028
        self.session_interval: int | None = None
        self.refresher: str | None = None  # "uac" | "uas"
        self._st_timer: TimerHandle | None = None
        self._cancel_requested = False
        self._cancel_guard: TimerHandle | None = None
        self._reinvite_ack_seq: int | None = None  # offerless re-INVITE: 2xx waiting for ack(answer)
        #: RFC 4028 §10 ends a session whose refresh fails (408, 481, timeout): BYE. A session
        #: that must not be given up on that fast (the caller's, in an emergency call) tolerates
        #: this many failed refreshes in a row, each retried soon; a 481 still ends it at once.
        self.refresh_failures_tolerated = 0
        self._refresh_failures = 0

    def __repr__(self) -> str:
        return f"<Session {self.role} {self.invite.call_id} {self.state}>"

    @property
    def call_id(self) -> str:
        return self.invite.call_id


    def _dest_for(self, request: Request) -> Any:
        """§12.2.1.1 / §13.2.2.4: an in-dialog request (ACK included) goes to the first loose
        route or the Request-URI — the remote target, or the strict router — not to wherever
        the INVITE went or came from (those only coincide without proxies)."""
        try:
            return self.ua.port.destination(request, _next_hop(request))
        except ValueError:  # e.g. a tel: remote target: fall back on the INVITE's peer
            return self.dest

    def _retransmit(
        self, attr: str, send: Callable[[], bool], *, cap: float | None, on_give_up: Callable[[], None] | None
    ) -> None:
        """Call ``send`` at T1 and then at intervals doubling (up to ``cap`` when given) while it
        returns True; at exactly 64*T1 after now, stop and call ``on_give_up``. The current
        timer handle is kept in ``self.<attr>`` so it can be cancelled."""
        t = self.ua.config.timers
        _Retransmission(self, attr, send, cap, on_give_up, self.ua.now() + 64 * t.t1).arm(self.ua.now(), t.t1)

    # --- UAS side -------------------------------------------------------------------
    def _local_tag(self) -> str:
        if self.dialog is None:
            tag = new_tag()
            self.dialog = Dialog.from_uas_request(self.invite, tag)
            self.ua.dialogs[self.dialog.id] = self
        return self.dialog.local_tag

    def ensure_local_tag(self) -> str:
        """Our To-tag for this INVITE, chosen now if not yet (the early dialog starts here)."""
        return self._local_tag()

    def _contact(self) -> str:
        transport, host, port = self.ua.port.local_address(self.source)
        return f"<{self.ua.contact_uri(transport, host, port)}>"

    def ring(self, status: int = 180, sdp: bytes | None = None, *, reliable: bool | None = None) -> None:
        if self.state not in (INCOMING, SESSION_EARLY):
            return
        tag = self._local_tag()
        headers: list[tuple[str, str]] = [*self._record_routes(), ("Contact", self._contact())]
        peer = self.invite.header_tokens("Supported") | self.invite.header_tokens("Require")
        if reliable is None:
            reliable = self.ua.config.prefer_100rel and "100rel" in peer and sdp is not None
        if reliable and "100rel" in peer and self._unacked_prov is None:
            self._rseq += 1
            headers += [("Require", "100rel"), ("RSeq", str(self._rseq))]
        else:
            reliable = False
        if sdp is not None:
            self.local_sdp = sdp
        response = make_response(
            self.invite, status, to_tag=tag, headers=headers, body=sdp or b"", content_type="application/sdp" if sdp else None
        )
        self.state = SESSION_EARLY
        self.ua.respond(self.invite_key, response)
        if reliable:
            self._unacked_prov = (self._rseq, response)
            self._arm_prov_retx()

    def _record_routes(self) -> list[tuple[str, str]]:
        """§12.1.1: a response that establishes a dialog carries the request's Record-Route
        values, in order — the UAC builds its route set from them."""
        return [("Record-Route", value) for value in self.invite.headers.get_all("Record-Route")]


    def answer(self, sdp: bytes | None, headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Accept the INVITE with 200 (SDP: our answer, or our offer when the INVITE had none)."""
        if self.state not in (INCOMING, SESSION_EARLY):
            return
        tag = self._local_tag()
        if sdp is not None:
            self.local_sdp = sdp
        extra: list[tuple[str, str]] = [
            *self._record_routes(),
            ("Contact", self._contact()),
            ("Allow", ", ".join(ALLOW)),
            ("Supported", ", ".join(SUPPORTED)),
        ]
        extra += self._session_timer_headers_for_2xx()
        extra += list(headers)
        response = make_response(
            self.invite, 200, to_tag=tag, headers=extra, body=sdp or b"", content_type="application/sdp" if sdp else None
        )
        self._unacked_prov = None
        self._stop(self._prov_retx)
        self.state = ANSWERED
        assert self.dialog is not None
        self.dialog.state = CONFIRMED
        self._final_2xx = response
        self.ua.respond(self.invite_key, response)
        self._start_2xx_retx(response, lambda: self._ack_timeout())


    def _start_2xx_retx(self, response: Response, on_timeout: Callable[[], None]) -> None:
        """§13.3.1.4: retransmit the 2xx at T1, 2*T1, ... capped at T2 until the ACK; no ACK
        64*T1 after the first send → ``on_timeout`` (exactly then: the last interval is clipped)."""
        t = self.ua.config.timers
        if _is_reliable(self.source):
            # Still bounded: no ACK within 64*T1 ends the session.
            self._retx = self.ua.timers.call_at(self.ua.now() + 64 * t.t1, lambda at: on_timeout())
            return

        def send() -> bool:
            self.ua.port.send(response, self.source)
            return True

        self._retransmit("_retx", send, cap=t.t2, on_give_up=on_timeout)

    def _ack_timeout(self) -> None:
        log.info("no ACK for 2xx on %s: ending session", self.call_id)
        self.failure = ("", "no_ack")
        self._retx = None
        self.bye(reason="no ACK")

    def reject(self, status: int, reason: str | None = None, headers: tuple[tuple[str, str], ...] = ()) -> None:
        if self.state not in (INCOMING, SESSION_EARLY):
            return
        self._final(status, reason, headers)
        self._terminate(f"rejected {status}")

    def _final(self, status: int, reason: str | None = None, headers: tuple[tuple[str, str], ...] = ()) -> None:
        tag = self.dialog.local_tag if self.dialog else new_tag()
        self.ua.respond(self.invite_key, make_response(self.invite, status, reason, to_tag=tag, headers=headers))

    def _on_ack(self, ack: Request) -> None:
        if self._reinvite_final is not None and ack.cseq.seq == self._reinvite_final.cseq.seq:
            self._stop(self._reinvite_retx)
            self._reinvite_final = None
            if ack.body and _is_sdp(ack):
                self.remote_sdp = sdp_of(ack)
            return
        if self.state != ANSWERED:
            return
        self._stop(self._retx)
        self._retx = None
        if ack.body and _is_sdp(ack):
            self.remote_sdp = sdp_of(ack)
        self.state = SESSION_CONFIRMED
        self._start_session_timer()
        self.ua.handler.on_confirmed(self, ack)
        self._pump_reinvites()

    # --- in-dialog requests we receive ----------------------------------------------
    def _on_in_dialog_request(self, request: Request, key: Any, source: Any) -> None:
        method = request.method
        if method == "BYE":
            self.ua.respond(key, make_response(request, 200))
            if self.state in (INCOMING, SESSION_EARLY) and self.role == "uas":
                self._final(487)
            self._terminate("remote BYE")
            return
        if method == "PRACK":
            self._on_prack(request, key)
            return
        if method in ("INVITE", "UPDATE"):
            # Glare: §14.2 (a re-INVITE while ours is pending) and RFC 3311 §5.2 (an offer
            # while an offer of ours, in a re-INVITE or an UPDATE, awaits its answer).
            if (method == "INVITE" and (self._reinvite_out or self._offer_out)) or (
                method == "UPDATE" and _is_sdp(request) and self._offer_out
            ):
                self.ua.respond(key, make_response(request, 491))
                return
            if self._pending_in is not None:
                self.ua.respond(key, make_response(request, 500, headers=[("Retry-After", "1")]))
                return
            st = _session_expires(request)
            if st is not None and self.session_interval is not None:
                self.session_interval = st[0]
                self.refresher = self._refresher_from(st[1], we_sent_request=False) or self.refresher
            self._pending_in = (request, key, source)
            if request.body and _is_sdp(request):
                self.remote_sdp = sdp_of(request)
            self._restart_session_timer()
            if method == "INVITE":
                self.ua.handler.on_reinvite(self, request)
            else:
                self.ua.handler.on_update(self, request)
            return
        if method == "OPTIONS":
            self.ua.respond(key, self.ua._options_response(request))
            return
        if method in ALLOW:
            self.ua.handler.on_request(self, request, self.ua._replier(request, key))
            return
        self.ua.respond(key, make_response(request, 501, headers=[("Allow", ", ".join(ALLOW))]))


    # --- UAC side -------------------------------------------------------------------
    def _send_invite(self, request: Request) -> None:
        self.invite = request
        self.invite_key = self.ua.send_request(request, self._on_invite_response, self._on_invite_failure, self.dest)
        if self.dest is None:
            self.dest = self.ua.port.destination(request, _next_hop(request))

    def _on_invite_response(self, response: Response) -> None:
        status = response.status
        if self.state == SESSION_TERMINATED:
            # Never revive an ended session. A 2xx retransmission after our BYE means our ACK
            # was lost: send it again (the BYE is on its way). A 2xx to an INVITE we gave up on
            # still makes a dialog at the peer: ACK it and BYE it.
            if 200 <= status < 300 and response.to.tag:
                ack = self._acks.get(response.cseq.seq)
                if ack is not None and self.dialog is not None and self.dialog.remote_tag == response.to.tag:
                    self.ua.send_ack(ack, self._dest_for(ack))
                else:
                    self._ack_and_bye_fork(response)
            return
        if status < 200:
            if status == 100 or self._is_1xx_retransmission(response):
                return
            if response.to.tag and self.dialog is None:
                self.dialog = Dialog.from_uac_response(self.invite, response)
                self.ua.dialogs[self.dialog.id] = self
            if self.state == CALLING:
                self.state = SESSION_EARLY
            if response.body and _is_sdp(response):
                self.remote_sdp = sdp_of(response)
            self._maybe_prack(response)
            self.ua.handler.on_provisional(self, response)
            return
        if status < 300:
            if self.dialog is None or self.dialog.remote_tag != response.to.tag:
                if self.dialog is not None and self.dialog.state == CONFIRMED:
                    self._ack_and_bye_fork(response)
                    return
                if self.dialog is not None:
                    self.ua.dialogs.pop(self.dialog.id, None)
                self.dialog = Dialog.from_uac_response(self.invite, response)
                self.ua.dialogs[self.dialog.id] = self
            else:
                self.dialog.update_from_response(self.invite, response)
            if self.state == SESSION_CONFIRMED:
                # A retransmission of the 2xx: our ACK was lost; send it again (§13.2.2.4).
                ack = self._acks.get(response.cseq.seq)
                if ack is not None:
                    self.ua.send_ack(ack, self._dest_for(ack))
                return
            self.ua._early.pop((self.call_id, self.dialog.local_tag), None)
            self._stop(self._cancel_guard)
            if response.body and _is_sdp(response):
                self.remote_sdp = sdp_of(response)
            self.user_data["peer_allow"] = response.header_tokens("Allow")
            se = _session_expires_or_none(response)
            if se is not None:
                self.session_interval = se[0]
                self.refresher = self._refresher_from(se[1], we_sent_request=True) or "uac"
            self.state = SESSION_CONFIRMED
            if self._cancel_requested:
                # CANCEL crossed the 2xx (§9.1): the dialog exists; ACK it, then BYE it.
                self._send_ack(self.invite.cseq.seq)
                self.bye(reason="cancelled")
                return
            self.ua.handler.on_answered(self, response)
            # Our INVITE held the offer: the 2xx holds the answer and we ACK at once. Without an
            # offer (none, or a body of other parts such as a PIDF-LO) the 2xx holds the
            # peer's offer, and the application ACKs with its answer: ack(sdp).
            if _is_sdp(self.invite) and self.last_ack is None and self.state == SESSION_CONFIRMED:
                self.ack()
            return
        # final failure
        self.ua._early.pop((self.call_id, self.invite.from_.tag or ""), None)
        if status == 422 and not self.user_data.get("retried_422"):
            min_se = response.headers.get("Min-SE")
            if min_se and min_se.split(";")[0].strip().isdigit():
                self.user_data["retried_422"] = True
                self._resend_with(session_expires=int(min_se.split(";")[0]))
                return
        self._terminate(f"{status} {response.reason}", notify=False)
        self.ua.handler.on_failed(self, response, f"{status} {response.reason}")


    def _resend_with(self, *, session_expires: int) -> None:
        headers = self.invite.headers.remove("Via").set("Session-Expires", str(session_expires))
        headers = headers.set("Min-SE", str(session_expires))
        seq = self.invite.cseq.seq + 1
        headers = headers.set("CSeq", f"{seq} INVITE")
        if self.dialog is not None:
            self.ua.dialogs.pop(self.dialog.id, None)
            self.dialog = None
        self.state = CALLING
        self.ua._early[(self.call_id, self.invite.from_.tag or "")] = self
        self._send_invite(self.invite.replace(headers=headers))

    def _on_invite_failure(self, reason: str) -> None:
        self.ua._early.pop((self.call_id, self.invite.from_.tag or ""), None)
        if self.state == SESSION_TERMINATED:
            return
        if self.state == SESSION_CONFIRMED:
            # The INVITE was answered (its client transaction lingers, RFC 6026 Accepted) and
            # now the transport says the peer is gone (an ICMP unreachable, a reset): the
            # session has failed, like any in-dialog request meeting a transport error.
            self._failed(f"INVITE {reason}", ("INVITE", failure_cause(reason)))
            return
        self._terminate(reason, notify=False)
        self.ua.handler.on_failed(self, None, reason)


    def _ack_and_bye_fork(self, response: Response) -> None:
        """§13.2.2.4: ACK a 2xx we do not want (another fork, or an INVITE we gave up on) and
        BYE its dialog; a retransmission of that 2xx only gets the ACK again."""
        forks: dict[str, Request] = self.user_data.setdefault("_fork_acks", {})
        tag = response.to.tag or ""
        if tag in forks:
            self.ua.send_ack(forks[tag], self._dest_for(forks[tag]))
            return
        fork = Dialog.from_uac_response(self.invite, response)
        ack = fork.create_request("ACK", cseq=self.invite.cseq.seq)
        dest = self._dest_for(ack)
        forks[tag] = ack = self._with_via(ack, dest)
        self.ua.send_ack(ack, dest)
        bye = fork.create_request("BYE")
        self.ua.send_request(bye, lambda r: None, lambda reason: None, self._dest_for(bye))

    def _with_via(self, request: Request, dest: Any) -> Request:
        transport, host, port = self.ua.port.local_address(dest)
        via = new_via(transport, host, port)
        return request.replace(headers=request.headers.prepend("Via", str(via)))

    def _send_ack(self, seq: int, sdp: bytes | None = None) -> Request:
        """Build, remember (for 2xx retransmissions) and send the ACK for the 2xx of CSeq ``seq``."""
        assert self.dialog is not None
        body = sdp or b""
        headers = (("Content-Type", "application/sdp"),) if body else ()
        ack = self.dialog.create_request("ACK", cseq=seq, headers=headers, body=body)
        dest = self._dest_for(ack)
        ack = self._with_via(ack, dest)
        self._acks[seq] = ack
        if len(self._acks) > ACKS_KEPT:
            # A 2xx is retransmitted for 64*T1 at most and re-INVITEs never overlap: the first
            # INVITE's ACK and the last few are all a long call with many refreshes needs.
            del self._acks[min(k for k in self._acks if k != self.invite.cseq.seq)]
        if seq == self.invite.cseq.seq:
            self.last_ack = ack
        self.ua.send_ack(ack, dest)
        return ack

    def ack(self, sdp: bytes | None = None) -> None:
        """Send the ACK for the 2xx (with the answer, for a delayed-offer INVITE — or for an
        offerless re-INVITE, whose 2xx waits for this call)."""
        if self.dialog is None or self.state == SESSION_TERMINATED:
            return
        if sdp is not None:
            self.local_sdp = sdp
        if self._reinvite_ack_seq is not None:
            seq, self._reinvite_ack_seq = self._reinvite_ack_seq, None
            self._send_ack(seq, sdp)
            self._pump_reinvites()
            return
        if self.last_ack is not None:
            self.ua.send_ack(self.last_ack, self._dest_for(self.last_ack))
            return
        self._send_ack(self.invite.cseq.seq, sdp)
        if self.state == SESSION_CONFIRMED:
            self._start_session_timer()
            self.ua.handler.on_confirmed(self, None)

    def cancel(self) -> None:
        """CANCEL a pending outgoing INVITE (sent once a provisional has arrived, §9.1).

        The INVITE then ends with ``on_failed`` (487, or "timeout" when no final response
        comes within 64*T1 of the CANCEL); if a 2xx crossed the CANCEL the session is ACKed
        and BYEd and ends with ``on_terminated(.., "cancelled")``.
        """
        if self.role != "uac" or self.state not in (CALLING, SESSION_EARLY):
            if self.state == SESSION_CONFIRMED:
                self.bye(reason="cancelled")
            return
        self._cancel_requested = True
        self._send_cancel()

    def _send_cancel(self) -> None:
        if self.user_data.get("cancel_sent"):
            return
        self.user_data["cancel_sent"] = True
        try:
            # The layer sends it once a provisional has arrived, or holds it until one does.
            key, actions = self.ua.layer.cancel(self.invite_key, self.ua.now())
        except LocalProtocolError:
            return  # a final response came first; the 2xx path BYEs if needed
        self.ua._clients[key] = _ClientCtx(self.invite, self.dest, lambda r: None, lambda reason: None)
        t = self.ua.config.timers
        self._cancel_guard = self.ua.timers.call_at(self.ua.now() + 64 * t.t1, lambda at: self._cancel_timeout())
        self.ua._perform(actions)

    def _cancel_timeout(self) -> None:
        """§9.1: no final response 64*T1 after our CANCEL: consider the INVITE dead. (An ICT
        in Proceeding runs no timer of its own; Timer C is the TU's.)"""
        if self.state not in (CALLING, SESSION_EARLY):
            return
        key = self.invite_key
        self.ua._clients.pop(key, None)
        # The layer has no "abandon" input; a transport error ends the ICT from any state.
        self.ua._perform(self.ua.layer.transport_error(key, self.ua.now(), "no final response after CANCEL"))
        self._on_invite_failure("timeout")

    # --- requests we send within the dialog -----------------------------------------
    def request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        on_response: Callable[[Response], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
        fail_session: bool = True,
    ) -> Any:
        """Send an in-dialog request. A final 408 or 481, a timeout or a transport error also
        ends the session (see `_failed`), after ``on_response`` / ``on_failure`` ran — unless
        ``fail_session`` is False: then the caller of this decides."""
        if self.dialog is None:
            raise RuntimeError("no dialog yet")
        extra = list(headers)
        if body and content_type:
            extra.append(("Content-Type", content_type))
        req = self.dialog.create_request(method, headers=tuple(extra), body=body)

        def response(resp: Response) -> None:
            if on_response is not None:
                on_response(resp)
            if resp.status in (408, 481) and fail_session:
                self._failed(f"{method} got {resp.status}", (method, str(resp.status)))

        def failure(reason: str) -> None:
            if on_failure is not None:
                on_failure(reason)
            if fail_session:
                self._failed(f"{method} {reason}", (method, failure_cause(reason)))

        return self.ua.send_request(req, response, failure, self._dest_for(req))


    def bye(self, reason: str = "local BYE", *, on_done: Callable[[int | None], None] | None = None) -> None:
        """End the session: BYE when confirmed; CANCEL an outgoing INVITE still pending (even
        with an early dialog: a BYE there would leave the INVITE to be answered); 480 to an
        incoming INVITE not answered yet. The session ends at once; ``on_done`` later gets the
        BYE's final status, or None when it timed out or could not be sent."""
        if self.state == SESSION_TERMINATED:
            return
        if self.role == "uac" and self.state in (CALLING, SESSION_EARLY):
            self.cancel()
            return
        if self.role == "uas" and self.state in (INCOMING, SESSION_EARLY):
            self.reject(480)
            return
        if self.dialog is None:
            return
        if on_done is None:
            self.request("BYE")
        else:
            self.request(
                "BYE",
                on_response=lambda resp: on_done(resp.status) if resp.status >= 200 else None,
                on_failure=lambda why: on_done(None),
            )
        self._terminate(reason)

    def _failed(self, reason: str, cause: tuple[str, str] | None = None) -> None:
        """The peer is gone: end the session (no BYE) and report ``on_terminated(reason)``.

        Covered — every in-dialog request we send (``request``, ``reinvite``, ``update``,
        session refreshes) whose final response is 408 or 481 (RFC 3261 §12.2.1.2), or that
        times out (Timer B/F) or meets a transport error. Reasons read "<METHOD> got 481",
        "UPDATE timeout", "re-INVITE got 408", "OPTIONS transport error". Not covered: PRACK
        and BYE (the session is ending anyway), and the initial INVITE (``on_failed``).
        """
        if self.state == SESSION_TERMINATED:
            return
        log.info("session %s failed: %s", self.call_id, reason)
        self.failure = cause
        self._terminate(reason)

    def forget(self, reason: str) -> None:
        """End the session without a word to the peer (its dialog is known to be gone, e.g.
        it answered 481) and without telling the handler: the application decided it."""
        self._terminate(reason, notify=False)


    # --- ending ---------------------------------------------------------------------
    @staticmethod
    def _stop(handle: TimerHandle | None) -> None:
        if handle is not None:
            handle.cancel()

    def _terminate(self, reason: str, notify: bool = True) -> None:
        if self.state == SESSION_TERMINATED:
            return
        self.state = SESSION_TERMINATED
        self.terminated_reason = reason
        for h in (self._retx, self._prov_retx, self._st_timer, self._reinvite_retx, self._cancel_guard, self._glare):
            self._stop(h)
        self._glare = None
        queued, self._reinvites = list(self._reinvites), deque()
        if self._pending_in is not None:
            # §15.1.2: requests pending on a dialog that ends are answered 487.
            request, key, _source = self._pending_in
            self._pending_in = None
            self.ua.respond(key, make_response(request, 487, to_tag=self.dialog.local_tag if self.dialog else None))
        if self.dialog is not None:
            self.dialog.state = TERMINATED
            self.ua.dialogs.pop(self.dialog.id, None)
        self.ua._early.pop((self.call_id, self.invite.from_.tag or ""), None)
        if notify:
            self.ua.handler.on_terminated(self, reason)
        for item in queued:
            item.done(None)


