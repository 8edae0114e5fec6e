"""Reliable provisional responses (RFC 3262): our reliable 1xx retransmitted until PRACKed,
the peer's PRACKed once each.
"""
from __future__ import annotations

import logging
from typing import Any

from ng911.sip.builders import make_response
from ng911.sip.dialog import Dialog
from ng911.sip.message import Request, Response
from ng911.sip.ua.common import SESSION_EARLY

log = logging.getLogger("ng911.sip.ua")


class ReliableProvisionals:
    """Part of `Session` (see `ng911.sip.ua.session`); uses its state."""

    def _arm_prov_retx(self) -> None:
        """RFC 3262 §3: retransmit the reliable 1xx at T1, 2*T1, 4*T1... (no T2 cap, unlike a
        2xx) until PRACKed; after 64*T1 without PRACK reject the INVITE with a 5xx."""

        def send() -> bool:
            if self._unacked_prov is None or self.state != SESSION_EARLY:
                return False
            self.ua.port.send(self._unacked_prov[1], self.source)
            return True

        def give_up() -> None:
            if self._unacked_prov is None or self.state != SESSION_EARLY:
                return
            self._unacked_prov = None
            self._final(504, "No PRACK")
            self._terminate("no PRACK")

        self._retransmit("_prov_retx", send, cap=None, on_give_up=give_up)

    def _on_prack(self, request: Request, key: Any) -> None:
        rack = (request.headers.get("RAck") or "").split()
        if self._unacked_prov is not None and rack and rack[0].isdigit() and int(rack[0]) == self._unacked_prov[0]:
            self._unacked_prov = None
            self._stop(self._prov_retx)
            self.ua.respond(key, make_response(request, 200))
            return
        self.ua.respond(key, make_response(request, 481))

    def _maybe_prack(self, response: Response) -> None:
        if "100rel" not in response.header_tokens("Require"):
            return
        rseq = (response.headers.get("RSeq") or "").strip()
        if not rseq.isdigit() or self.dialog is None:
            return
        n = int(rseq)
        if self._prack_rseq and n <= self._prack_rseq:
            return  # retransmission: our PRACK is on its way (the NICT retransmits it)
        self._prack_rseq = n
        dialog = Dialog.from_uac_response(self.invite, response) if self.dialog.remote_tag != response.to.tag else self.dialog
        prack = dialog.create_request("PRACK", headers=(("RAck", f"{n} {self.invite.cseq.seq} INVITE"),))
        self.ua.send_request(prack, lambda r: None, lambda reason: None, self._dest_for(prack))

    def _is_1xx_retransmission(self, response: Response) -> bool:
        """RFC 3262 §4: a reliable 1xx whose RSeq we have seen already is not passed up again."""
        if "100rel" not in response.header_tokens("Require"):
            return False
        rseq = (response.headers.get("RSeq") or "").strip()
        return rseq.isdigit() and self._prack_rseq > 0 and int(rseq) <= self._prack_rseq

