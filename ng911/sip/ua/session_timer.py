"""Session timers (RFC 4028): who refreshes, the refresh itself and the BYE when the session
expires unrefreshed.
"""
from __future__ import annotations

import logging

from ng911.sip.message import Response
from ng911.sip.ua.common import (
    SESSION_CONFIRMED,
    SESSION_TERMINATED,
    _session_expires,
    _session_expires_or_none,
)

log = logging.getLogger("ng911.sip.ua")


class SessionTimers:
    """Part of `Session` (see `ng911.sip.ua.session`); uses its state."""

    @property
    def we_refresh(self) -> bool:
        return self.refresher is not None and self.refresher == self.role

    @property
    def _peer_role(self) -> str:
        return "uas" if self.role == "uac" else "uac"

    # RFC 4028 §4/§7.4/§9: the refresher parameter names the UAC or UAS *of the transaction
    # carrying it*; self.refresher names the role in the dialog-creating INVITE. They agree on
    # the initial INVITE only: a refresh the original UAS sends ("uac" = the sender) must be
    # translated both ways, or each side ends up waiting for the other to refresh.
    def _refresher_param(self, *, we_send_request: bool) -> str:
        """Our self.refresher, spelt for a message of a transaction we are the UAC of
        (``we_send_request``) or the UAS of."""
        sender = self.role if we_send_request else self._peer_role
        return "uac" if self.refresher == sender else "uas"

    def _refresher_from(self, param: str | None, *, we_sent_request: bool) -> str | None:
        """A refresher parameter received in a transaction we are the UAC of (or the UAS of),
        as a dialog role."""
        if param not in ("uac", "uas"):
            return None
        request_sender = self.role if we_sent_request else self._peer_role
        other = self._peer_role if request_sender == self.role else self.role
        return request_sender if param == "uac" else other

    def _session_timer_headers_for_2xx(self) -> list[tuple[str, str]]:
        se = _session_expires(self.invite)
        peer_supports = "timer" in (self.invite.header_tokens("Supported") | self.invite.header_tokens("Require"))
        if se is None:
            # The UAC did not ask; we may still run the timer and refresh ourselves (§9).
            interval, refresher = self.ua.config.session_expires, "uas"
        else:
            interval, refresher = se[0], se[1] or ("uac" if peer_supports else "uas")
        if not peer_supports:
            refresher = "uas"
        self.session_interval, self.refresher = interval, refresher
        out = [("Session-Expires", f"{interval};refresher={refresher}")]
        if peer_supports:
            out.append(("Require", "timer"))
        return out

    def _session_expires_from_2xx(self, resp: Response) -> None:
        """The 2xx to our refresh may change the interval or the refresher (RFC 4028 §7.4)."""
        se = _session_expires_or_none(resp)
        if se is not None and self.session_interval:
            self.session_interval = se[0]
            self.refresher = self._refresher_from(se[1], we_sent_request=True) or self.refresher

    # --- session timers (RFC 4028) ------------------------------------------------------
    def _start_session_timer(self) -> None:
        self._restart_session_timer()

    def _restart_session_timer(self) -> None:
        self._stop(self._st_timer)
        if not self.session_interval or self.state == SESSION_TERMINATED:
            return
        now = self.ua.now()
        if self.we_refresh:
            self._st_timer = self.ua.timers.call_at(now + self.session_interval / 2, lambda at: self._refresh())
        else:
            # §10: the non-refresher sends BYE if no refresh by interval - min(32, interval/3).
            wait = self.session_interval - min(32, self.session_interval / 3)
            self._st_timer = self.ua.timers.call_at(now + wait, lambda at: self._expired())

    def _refresh(self) -> None:
        if self.state != SESSION_CONFIRMED:
            return
        if self.invite_in_progress or self._reinvites:
            self._restart_session_timer()  # a re-INVITE on its way refreshes the session too
            return
        peer_allow = self.user_data.get("peer_allow")
        if peer_allow is None:
            peer_allow = self.invite.header_tokens("Allow") if self.role == "uas" else set()
        tolerant = self.refresh_failures_tolerated > 0
        if "update" in peer_allow:
            self.update(None, fail_session=not tolerant, on_done=self._refreshed if tolerant else None)
        else:
            self.reinvite(self.local_sdp, fail_session=not tolerant, on_done=self._refreshed if tolerant else None)

    def _refreshed(self, resp: Response | None) -> None:
        """The outcome of a refresh on a session that tolerates failed refreshes."""
        if self.state == SESSION_TERMINATED:
            return
        status = resp.status if resp is not None else None
        if status is not None and status not in (408, 481) and status < 500:
            self._refresh_failures = 0  # answered: the peer is there (a 4xx refusal included)
            return
        if status == 481:
            self._failed("refresh got 481", ("", "481"))
            return
        self._refresh_failures += 1
        if self._refresh_failures > self.refresh_failures_tolerated:
            log.info("session %s: %d refreshes failed: ending it", self.call_id, self._refresh_failures)
            self.failure = ("", "expired")
            self.bye(reason="session expired")  # RFC 4028 §10
            return
        log.info("session %s: refresh failed (%s), trying again", self.call_id,
                 resp.status if resp is not None else "no answer")
        self._stop(self._st_timer)
        retry = min(10.0, (self.session_interval or 90) / 4)
        self._st_timer = self.ua.timers.call_at(self.ua.now() + retry, lambda at: self._refresh())

    def _expired(self) -> None:
        if self.state == SESSION_TERMINATED:
            return
        log.info("session %s expired without refresh", self.call_id)
        self.failure = ("", "expired")
        self.bye(reason="session expired")

