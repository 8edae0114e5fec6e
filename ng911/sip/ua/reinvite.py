"""Re-INVITE and UPDATE on an established dialog (RFC 3261 §14, RFC 3311): one INVITE
transaction at a time in either direction, our re-INVITEs queued in order, 491 retried after
the §14.1 back-off, offers committed on a 2xx only (RFC 3264 §8), the peer's answered.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from ng911.sip.body import sdp_of
from ng911.sip.builders import make_response
from ng911.sip.message import Request, Response
from ng911.sip.timerwheel import TimerHandle
from ng911.sip.transaction.errors import LocalProtocolError
from ng911.sip.ua.common import (
    ALLOW,
    SESSION_CONFIRMED,
    SESSION_TERMINATED,
    SUPPORTED,
    _ClientCtx,
    _is_reliable,
    _is_sdp,
    failure_cause,
)

log = logging.getLogger("ng911.sip.ua")

GLARE_RETRIES = 5  # 491s in a row before a re-INVITE is reported as refused


@dataclass(eq=False)
class _Reinvite:
    """A re-INVITE waiting for the dialog (or for its 491 back-off)."""

    sdp: bytes | None | Callable[[], bytes | None]
    on_done: Callable[[Response | None], None] | None
    fail_session: bool
    glare_tries: int = 0

    def done(self, resp: Response | None) -> None:
        on_done, self.on_done = self.on_done, None  # at most once; and no cycle kept
        if on_done is not None:
            on_done(resp)



class Reinvites:
    """Part of `Session` (see `ng911.sip.ua.session`); uses its state."""

    def accept_update(self, sdp: bytes | None, headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Answer the pending re-INVITE/UPDATE with 200 (and ``sdp``)."""
        if self._pending_in is None:
            return
        request, key, source = self._pending_in
        self._pending_in = None
        if sdp is not None:
            self.local_sdp = sdp
        extra: list[tuple[str, str]] = [("Contact", self._contact())]
        if self.session_interval:
            param = self._refresher_param(we_send_request=False)
            extra.append(("Session-Expires", f"{self.session_interval};refresher={param}"))
            if param == "uac":  # RFC 4028 §9: the requester refreshes, so it must support timer
                extra.append(("Require", "timer"))
        extra += list(headers)
        response = make_response(
            request, 200, to_tag=self.dialog.local_tag if self.dialog else None, headers=extra,
            body=sdp or b"", content_type="application/sdp" if sdp else None,
        )
        self.ua.respond(key, response)
        if request.method == "INVITE":
            self._reinvite_final = response
            self._start_reinvite_2xx_retx(response, source)
        self._pump_reinvites()

    def _start_reinvite_2xx_retx(self, response: Response, source: Any) -> None:
        """The re-INVITE's 2xx, like the INVITE's, is retransmitted until its ACK — back over
        the flow the re-INVITE came from."""
        self._stop(self._reinvite_retx)
        if _is_reliable(source):
            return

        def send() -> bool:
            if self._reinvite_final is not response or self.state == SESSION_TERMINATED:
                return False
            self.ua.port.send(response, source)
            return True

        self._retransmit("_reinvite_retx", send, cap=self.ua.config.timers.t2, on_give_up=None)

    def reject_update(self, status: int = 488, reason: str | None = None) -> None:
        if self._pending_in is None:
            return
        request, key, _source = self._pending_in
        self._pending_in = None
        headers = [("Retry-After", "1")] if status == 500 else []
        self.ua.respond(key, make_response(request, status, reason, headers=headers))
        self._pump_reinvites()

    @property
    def pending_request(self) -> Request | None:
        """The peer's re-INVITE or UPDATE we have not answered yet."""
        return self._pending_in[0] if self._pending_in is not None else None

    def reinvite(
        self,
        sdp: bytes | None | Callable[[], bytes | None],
        *,
        on_done: Callable[[Response | None], None] | None = None,
        fail_session: bool = True,
    ) -> None:
        """Send a re-INVITE (``sdp`` None: offerless; the 2xx carries the peer's offer and
        ``on_reinvite_answered`` must call ``ack(answer)``; else the ACK goes at once).

        RFC 3261 §14.1: while an INVITE transaction is in progress on the dialog in either
        direction (or the peer's offer in a 2xx waits for our ACK) the re-INVITE waits its
        turn, in order. ``sdp`` may be a function, called when the request is actually sent,
        so that a queued offer is built on the session as it is by then. A 491 is retried
        after the §14.1 back-off (2.1–4 s when we own the Call-ID, else 0–2 s) up to
        ``GLARE_RETRIES`` times. The offer becomes our session description only on a 2xx
        (RFC 3264 §8: a rejected offer changes nothing). ``on_done`` gets the final response,
        or None on a timeout, a transport error, or when the session ended first.
        ``fail_session=False``: a 408/481/timeout/transport error does not end the session —
        the application decides (the caller's leg is never given up on silently)."""
        if self.dialog is None or self.state == SESSION_TERMINATED:
            if on_done is not None:
                on_done(None)
            return
        self._reinvites.append(_Reinvite(sdp, on_done, fail_session))
        self._pump_reinvites()

    @property
    def invite_in_progress(self) -> bool:
        """An INVITE transaction is in progress on the dialog (either direction), a 491
        back-off runs, or an offer from the peer's 2xx waits for our ACK."""
        if self._reinvite_out or self._glare is not None or self._reinvite_ack_seq is not None:
            return True
        if self.state != SESSION_CONFIRMED:
            return True
        return self._pending_in is not None and self._pending_in[0].method == "INVITE"

    @property
    def reinvites_queued(self) -> int:
        return len(self._reinvites)

    def _pump_reinvites(self) -> None:
        if self._reinvites and not self.invite_in_progress:
            self._send_reinvite(self._reinvites.popleft())

    def _glare_over(self, item: _Reinvite) -> None:
        self._glare = None
        if self.state == SESSION_TERMINATED:
            return
        self._reinvites.appendleft(item)
        self._pump_reinvites()

    def _send_reinvite(self, item: _Reinvite) -> None:
        assert self.dialog is not None
        sdp = item.sdp() if callable(item.sdp) else item.sdp
        self._reinvite_out = True
        self._offer_out = sdp is not None
        headers: list[tuple[str, str]] = [("Allow", ", ".join(ALLOW)), ("Supported", ", ".join(SUPPORTED))]
        if self.session_interval:
            param = self._refresher_param(we_send_request=True)
            headers.append(("Session-Expires", f"{self.session_interval};refresher={param}"))
        answered = False
        guards: list[TimerHandle] = []

        def on_response(resp: Response) -> None:
            nonlocal answered
            if resp.status < 200:
                return
            seq = req.cseq.seq
            if answered:
                # A retransmission of the 2xx (our ACK was lost): ACK again, report nothing.
                # (A 2xx after we gave up on the re-INVITE gets its ACK too: §13.2.2.4.)
                ack = self._acks.get(seq)
                if 200 <= resp.status < 300:
                    if ack is not None:
                        self.ua.send_ack(ack, self._dest_for(ack))
                    elif self.dialog is not None:
                        self._send_ack(seq)
                return
            answered = True
            for g in guards:
                g.cancel()
            self._reinvite_out = self._offer_out = False
            if self.state == SESSION_TERMINATED:
                if 200 <= resp.status < 300:
                    self._send_ack(seq)  # the peer has a dialog until our BYE lands: §13.2.2.4
                item.done(None)
                return
            if 200 <= resp.status < 300:
                assert self.dialog is not None
                self.dialog.update_from_response(req, resp)
                if sdp is not None:
                    self.local_sdp = sdp  # the offer is the session now (RFC 3264 §8)
                if resp.body and _is_sdp(resp):
                    self.remote_sdp = sdp_of(resp)
                self._session_expires_from_2xx(resp)
                if sdp is None and _is_sdp(resp):
                    self._reinvite_ack_seq = seq  # the app answers with ack(sdp)
                else:
                    self._send_ack(seq)
                self._restart_session_timer()
            elif resp.status == 491 and item.glare_tries < GLARE_RETRIES:
                item.glare_tries += 1
                owner = self.role == "uac"  # we made the Call-ID (§14.1)
                delay = self.ua.rng.uniform(2.1, 4.0) if owner else self.ua.rng.uniform(0.0, 2.0)
                delay = round(delay, 2)  # "in units of 10 ms"
                self._glare = self.ua.timers.call_at(self.ua.now() + delay, lambda at: self._glare_over(item))
                return
            elif resp.status in (408, 481) and item.fail_session:
                self._failed(f"re-INVITE got {resp.status}", ("INVITE", str(resp.status)))
            self.ua.handler.on_reinvite_answered(self, resp)
            item.done(resp)
            self._pump_reinvites()

        def on_failure(reason: str) -> None:
            nonlocal answered
            if answered:
                return
            answered = True
            for g in guards:
                g.cancel()
            self._reinvite_out = self._offer_out = False
            if item.fail_session:
                self._failed(f"re-INVITE {reason}", ("INVITE", failure_cause(reason)))
            item.done(None)
            self._pump_reinvites()

        def no_final_response() -> None:
            # A peer that sent a 1xx and nothing more holds the ICT in Proceeding, where no
            # RFC 3261 timer runs: after 64*T1, CANCEL the re-INVITE (its 487 ends it), and
            # 64*T1 after that give up on it as timed out (as for an initial INVITE, §9.1).
            if answered or self.state == SESSION_TERMINATED:
                return
            try:
                cancel_key, actions = self.ua.layer.cancel(key, self.ua.now())
            except LocalProtocolError:
                actions = []
            else:
                self.ua._clients[cancel_key] = _ClientCtx(req, self._dest_for(req), lambda r: None, lambda why: None)
            self.ua._perform(actions)
            guards.append(self.ua.timers.call_at(self.ua.now() + 64 * self.ua.config.timers.t1,
                                                 lambda at: abandon()))

        def abandon() -> None:
            if answered:
                return
            self.ua._clients.pop(key, None)
            self.ua._perform(self.ua.layer.transport_error(key, self.ua.now()))
            on_failure("timeout")

        req = self.dialog.create_request(
            "INVITE", headers=tuple(headers) + ((("Content-Type", "application/sdp"),) if sdp else ()), body=sdp or b""
        )
        key = self.ua.send_request(req, on_response, on_failure, self._dest_for(req))
        guards.append(self.ua.timers.call_at(self.ua.now() + 64 * self.ua.config.timers.t1,
                                             lambda at: no_final_response()))

    def update(self, sdp: bytes | None = None, *, on_done: Callable[[Response | None], None] | None = None,
               fail_session: bool = True) -> None:
        """Send an UPDATE (RFC 3311), with an offer or as a bare session refresh. ``on_done``
        gets the final response (None: timeout or transport error); ``fail_session`` as for
        `request`."""
        if self.dialog is None or self.state == SESSION_TERMINATED:
            return
        headers: list[tuple[str, str]] = []
        if self.session_interval:
            param = self._refresher_param(we_send_request=True)
            headers.append(("Session-Expires", f"{self.session_interval};refresher={param}"))
        if sdp is not None:
            self._offer_out = True

        def on_response(resp: Response) -> None:
            if resp.status < 200:
                return
            if sdp is not None:
                self._offer_out = False
            if 200 <= resp.status < 300:
                if sdp is not None:
                    self.local_sdp = sdp  # committed on the 2xx only (RFC 3264 §8)
                if resp.body and _is_sdp(resp):
                    self.remote_sdp = sdp_of(resp)
                self._session_expires_from_2xx(resp)
                self._restart_session_timer()
            if on_done is not None:
                on_done(resp)

        def on_failure(reason: str) -> None:
            if sdp is not None:
                self._offer_out = False
            if on_done is not None:
                on_done(None)

        self.request(
            "UPDATE", body=sdp or b"", content_type="application/sdp" if sdp else None, headers=tuple(headers),
            on_response=on_response, on_failure=on_failure, fail_session=fail_session,
        )

