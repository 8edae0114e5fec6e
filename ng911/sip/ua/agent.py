"""The UA core's entry points: the handler interface, the port and clock it is given, and
`UserAgent` — transactions below, INVITE sessions (`ng911.sip.ua.session`) above."""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ng911.sip.body import sdp_of
from ng911.sip.builders import make_response, new_call_id, new_tag
from ng911.sip.dialog import CONFIRMED, Dialog, DialogError
from ng911.sip.errors import SipParseError
from ng911.sip.headers import Via
from ng911.sip.message import Headers, Request, Response, missing_mandatory
from ng911.sip.timers import TimerConfig
from ng911.sip.timerwheel import TimerWheel
from ng911.sip.transaction.actions import (
    CancelRequest,
    MergedRequest,
    Send,
    ToTU,
    TransactionTerminated,
    TransactionTimeout,
)
from ng911.sip.transaction.layer import TransactionLayer
from ng911.sip.ua.adopt import InviteAdoption
from ng911.sip.ua.binding import BOUND, UNBOUND, UNVERIFIABLE, check_source, peer_hosts
from ng911.sip.ua.common import (
    ALLOW,
    CSEQ_GAP,
    INCOMING,
    KNOWN_NOT_ALLOWED,
    SESSION_CONFIRMED,
    SESSION_EARLY,
    SUPPORTED,
    _ClientCtx,
    _is_reliable,
    _moved_to_tcp_for_size,
    _next_hop,
    _session_expires,
    _uas_response,
    new_via,
)
from ng911.sip.ua.session import Session
from ng911.sip.uri import SipUri, Uri, parse_uri

log = logging.getLogger("ng911.sip.ua")


class Clock(Protocol):
    def seconds(self) -> float: ...


class UaPort(Protocol):
    """What the UA core needs from its shell."""

    def send(self, message: Request | Response, dest: Any) -> None: ...

    def destination(self, request: Request, next_hop: Uri) -> Any: ...

    def local_address(self, dest: Any) -> tuple[str, str, int]:
        """(transport, host, port) to put in Via/Contact for a message to ``dest``."""
        ...


class UaHandler:
    """Application callbacks. Override what you need; the defaults keep a UA polite."""

    def on_invite(self, session: Session, request: Request) -> None:
        session.reject(480)

    def on_provisional(self, session: Session, response: Response) -> None: ...

    def on_answered(self, session: Session, response: Response) -> None: ...

    def on_failed(self, session: Session, response: Response | None, reason: str) -> None: ...

    def on_confirmed(self, session: Session, ack: Request | None) -> None: ...

    def on_reinvite(self, session: Session, request: Request) -> None:
        session.accept_update(session.local_sdp if request.body else session.local_sdp)

    def on_update(self, session: Session, request: Request) -> None:
        session.accept_update(session.local_sdp if request.body else None)

    def on_reinvite_answered(self, session: Session, response: Response) -> None: ...

    def on_terminated(self, session: Session, reason: str) -> None: ...

    def on_cancelled(self, session: Session, request: Request) -> None: ...

    def on_stray(self, request: Request, reply: Callable[..., None]) -> bool:
        """An in-dialog request for a dialog this UA does not have (not an ACK). True: the
        handler answers it (``reply``, now or later); False: 481."""
        return False

    def on_unbound(self, session: Session, request: Request, source: Any) -> None:
        """A request inside ``session``'s dialog came from someone other than its peer: it was
        answered 403 (an ACK dropped) and the dialog is untouched."""

    def on_request(self, session: Session | None, request: Request, reply: Callable[..., None]) -> None:
        """Other requests (INFO, MESSAGE, REFER, NOTIFY, out-of-dialog non-INVITE)."""
        reply(200 if session is not None or request.method in ("MESSAGE", "INFO") else 405)


@dataclass
class UaConfig:
    user: str = "ng911"
    user_agent: str = "ng911"
    timers: TimerConfig = field(default_factory=TimerConfig)
    session_expires: int = 1800  # RFC 4028 default interval we ask for
    min_se: int = 90
    prefer_100rel: bool = True  # send reliable provisionals when the peer supports them
    #: refuse in-dialog requests from anyone but the dialog's peer (ng911.sip.ua.binding): the
    #: controller's policy; a plain UA (a phone, a test peer) accepts them from anywhere
    bind_dialogs: bool = False


class UserAgent(InviteAdoption):
    def __init__(self, port: UaPort, clock: Clock, handler: UaHandler | None = None, config: UaConfig | None = None):
        self.port = port
        self.clock = clock
        self.handler = handler or UaHandler()
        self.config = config or UaConfig()
        self.layer = TransactionLayer(self.config.timers)
        self.timers = TimerWheel(getattr(port, "wake", None))
        self.dialogs: dict[tuple[str, str, str], Session] = {}
        self.sessions_by_invite: dict[Any, Session] = {}  # server tsx key → UAS session
        self._early: dict[tuple[str, str], Session] = {}  # (Call-ID, local tag) → UAC session
        self._clients: dict[Any, _ClientCtx] = {}
        self.stats = {"received": 0, "bad_requests": 0, "dropped": 0}
        #: §14.1 glare back-off draws from this (a test seeds it for replayable schedules)
        self.rng = random.Random()
        #: a source that may act in a dialog it did not set up: a TLS peer whose certificate
        #: the handler trusts (an upstream element's redundant partner taking over its calls)
        self.vouch: Callable[[Any], bool] = lambda source: False

    # --- shell entry points -----------------------------------------------------------
    def now(self) -> float:
        return self.clock.seconds()

    def next_deadline(self) -> float | None:
        a, b = self.layer.next_deadline(), self.timers.next_deadline()
        if a is None:
            return b
        return a if b is None else min(a, b)

    def on_timer(self) -> None:
        now = self.now()
        self._perform(self.layer.on_timer(now))
        self.timers.fire(now)

    def receive(self, msg: Request | Response, source: Any) -> None:
        """A parsed message from the transport (after received/rport stamping)."""
        self.stats["received"] += 1
        missing = missing_mandatory(msg)
        if missing:
            self._reject_malformed(msg, source, f"Missing {missing} header")
            return
        try:
            actions = self.layer.receive(msg, source, self.now())
        except SipParseError as exc:
            self._reject_malformed(msg, source, exc.reason)
            return
        self._perform(actions)

    def transport_error(self, dest: Any, reason: str) -> None:
        """The transport could not deliver to ``dest``: fail the transactions bound to it, or
        (§18.1.1) send a request moved to TCP for its size again over UDP."""
        for key, ctx in list(self._clients.items()):
            if ctx.dest != dest:
                continue
            if ctx.udp_fallback is not None:
                self._retry_over_udp(key, ctx, reason)
            else:
                self._perform(self.layer.transport_error(key, self.now()))

    def _retry_over_udp(self, key: Any, ctx: _ClientCtx, reason: str) -> None:
        log.info("TCP to %s failed (%s): sending %s %s over UDP (RFC 3261 §18.1.1)",
                 ctx.dest, reason, ctx.request.method, ctx.request.uri)
        del self._clients[key]
        # End the TCP transaction quietly: with no context left, its TransportError is dropped.
        self._perform(self.layer.transport_error(key, self.now()))
        dest = ctx.udp_fallback
        transport, host, port = self.port.local_address(dest)
        via = Via("UDP", host, port, ctx.request.top_via.params)  # same branch: same transaction key
        headers = ctx.request.headers.remove_first_value("Via").prepend("Via", str(via))
        if ctx.contact_added:
            headers = headers.set("Contact", f"<{self.contact_uri(transport, host, port)}>")
        request = ctx.request.replace(headers=headers)
        new_key, actions = self.layer.send_request(request, dest, False, self.now())
        self._clients[new_key] = _ClientCtx(request, dest, ctx.on_response, ctx.on_failure)
        self._perform(actions)

    def _reject_malformed(self, msg: Request | Response, source: Any, reason: str) -> None:
        if not msg.is_request or msg.method == "ACK" or "via" not in msg.headers:  # type: ignore[attr-defined]
            self.stats["dropped"] += 1
            return
        self.stats["bad_requests"] += 1
        log.info("bad request from %s: %s", source, reason)
        try:
            self.port.send(_uas_response(msg, 400, reason), source)  # type: ignore[arg-type]
        except SipParseError:
            self.stats["dropped"] += 1

    def _perform(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.port.send(action.message, action.dest)
            elif isinstance(action, ToTU):
                self._to_tu(action)
            elif isinstance(action, CancelRequest):
                self._on_cancel(action)
            elif isinstance(action, MergedRequest):
                self.respond(action.key, _uas_response(action.message, 482))
            elif isinstance(action, TransactionTerminated):
                self._clients.pop(action.key, None)
                self.sessions_by_invite.pop(action.key, None)

    def _to_tu(self, action: ToTU) -> None:
        msg = action.message
        if isinstance(msg, Request):
            try:
                self._on_request(msg, action.key, action.source)
            except (SipParseError, DialogError) as exc:
                if msg.method != "ACK" and action.key is not None:
                    status = getattr(exc, "status", None) or getattr(exc, "status_hint", 400)
                    self.respond(action.key, _uas_response(msg, status, getattr(exc, "reason", str(exc))))
            except Exception:
                # A bug in a handler must not leave the peer unanswered (it would retransmit
                # for 32 s and give up) nor take other calls down with it: log, answer 500.
                log.exception("handler failed on %s %s call-id=%s", msg.method, msg.uri, msg.call_id)
                self.stats["handler_errors"] = self.stats.get("handler_errors", 0) + 1
                if msg.method != "ACK" and action.key is not None:
                    try:
                        self.respond(action.key, _uas_response(msg, 500, "Server Internal Error"))
                    except Exception:  # the handler may have answered already
                        log.debug("no 500 sent for %s", msg.call_id)
            return
        if isinstance(msg, Response):
            if action.key is None:
                self._on_stray_response(msg)
                return
            ctx = self._clients.get(action.key)
            if ctx is not None:
                if msg.status >= 200 and not (msg.cseq.method == "INVITE" and msg.status < 300):
                    self._clients.pop(action.key, None)
                if msg.status >= 100:
                    # Answered: the peer is there over this transport. A later transport error
                    # (the RFC 6026 Accepted state lasts 64*T1) must not re-send it over UDP.
                    ctx.udp_fallback = None
                ctx.on_response(msg)
            return
        ctx = self._clients.pop(action.key, None)
        if ctx is not None:
            reason = "timeout" if isinstance(msg, TransactionTimeout) else "transport error"
            ctx.on_failure(reason)
        elif action.key in self.sessions_by_invite and isinstance(msg, TransactionTimeout):
            # Timer H (no ACK for our non-2xx): nothing more to do.
            self.sessions_by_invite.pop(action.key, None)

    # --- sending --------------------------------------------------------------------
    def respond(self, key: Any, response: Response) -> None:
        self._perform(self.layer.send_response(key, response, self.now()))

    def send_request(
        self,
        request: Request,
        on_response: Callable[[Response], None],
        on_failure: Callable[[str], None],
        dest: Any = None,
    ) -> Any:
        """Add Via (and Contact for dialog-creating/target-refresh requests) and send."""
        udp_fallback = None
        if dest is None:
            hop = _next_hop(request)
            dest = self.port.destination(request, hop)
            if _moved_to_tcp_for_size(hop, dest):
                udp_fallback = type(dest)("UDP", dest.host, dest.port)
        transport, host, port = self.port.local_address(dest)
        via = new_via(transport, host, port)
        headers = request.headers.prepend("Via", str(via))
        contact_added = False
        if request.method in ("INVITE", "UPDATE", "SUBSCRIBE", "REFER", "NOTIFY") and "contact" not in headers:
            headers = headers.add("Contact", f"<{self.contact_uri(transport, host, port)}>")
            contact_added = True
        if "user-agent" not in headers:
            headers = headers.add("User-Agent", self.config.user_agent)
        request = request.replace(headers=headers)
        key, actions = self.layer.send_request(request, dest, _is_reliable(dest), self.now())
        self._clients[key] = _ClientCtx(request, dest, on_response, on_failure, udp_fallback, contact_added)
        self._perform(actions)
        return key

    def contact_uri(self, transport: str, host: str, port: int) -> SipUri:
        params = (("transport", transport.lower()),) if transport != "UDP" else ()
        return SipUri("sip", self.config.user, None, host, port, params)

    def send_ack(self, ack: Request, dest: Any) -> None:
        """ACK for a 2xx: end to end, outside any transaction (§13.2.2.4)."""
        self.port.send(ack, dest)

    # --- UAC ------------------------------------------------------------------------
    def invite(
        self,
        target: str | Uri,
        *,
        from_uri: str,
        to_uri: str | None = None,
        sdp: bytes | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes | None = None,
        content_type: str = "application/sdp",
        call_id: str | None = None,
        session_timer: bool = True,
        dest: Any = None,
    ) -> Session:
        """Start an outgoing INVITE session. ``sdp`` None: delayed offer (answer in our ACK)."""
        uri = parse_uri(target) if isinstance(target, str) else target
        host = uri.host if isinstance(uri, SipUri) else "ng911.invalid"
        tag = new_tag()
        payload = body if body is not None else (sdp or b"")
        items = [
            ("Max-Forwards", "70"),
            ("From", f"{from_uri};tag={tag}"),
            ("To", to_uri or f"<{uri}>"),
            ("Call-ID", call_id or new_call_id(host)),
            ("CSeq", "1 INVITE"),
            ("Allow", ", ".join(ALLOW)),
            ("Supported", ", ".join(SUPPORTED)),
        ]
        if session_timer:
            items += [("Session-Expires", str(self.config.session_expires)), ("Min-SE", str(self.config.min_se))]
        items.extend(headers)
        if payload:
            items.append(("Content-Type", content_type))
        request = Request("INVITE", uri, Headers(items), payload)
        session = Session(self, role="uac", invite=request)
        session.local_sdp = sdp if sdp is not None else sdp_of(request)
        session.dest = dest
        self._early[(request.call_id, tag)] = session
        session._send_invite(request)
        return session

    def adopt(
        self,
        dialog: dict[str, Any],
        *,
        local_sdp: bytes | None,
        remote_sdp: bytes | None,
        cseq_gap: int = CSEQ_GAP,
        session_interval: int | None = None,
        peer_allow: frozenset[str] | set[str] = frozenset(),
        source: Any = None,
    ) -> Session:
        """Take over a confirmed dialog stored by another UA (``Dialog.to_dict``): a session
        for it, registered so that the peer's in-dialog requests reach it. Our CSeq jumps
        ``cseq_gap`` past the stored one: the UA that stored it may have sent requests after
        its last write. Nothing is sent; a target refresh (``reinvite``) tells the peer our
        Contact. ``source``: the leg's stored flow (``flow_from_dict``), which sets the
        transport of our Contact and whether our 2xx are retransmitted; by default, the
        destination of the remote target. An INVITE still unanswered is ``adopt_invite``."""
        d = Dialog.from_dict(dialog)
        d.state = CONFIRMED
        d.local_seq = (d.local_seq or 0) + cseq_gap
        # The dialog-creating INVITE as the session knows it: its Call-ID and tags, from the
        # side that sent it (role uac: us).
        local = f"{d.local_uri};tag={d.local_tag}"
        remote = f"{d.remote_uri};tag={d.remote_tag}"
        from_, to = (local, remote) if d.is_uac else (remote, local)
        items = [("From", from_), ("To", to), ("Call-ID", d.call_id), ("CSeq", "1 INVITE")]
        if peer_allow and not d.is_uac:
            items.append(("Allow", ", ".join(sorted(m.upper() for m in peer_allow))))
        invite = Request("INVITE", parse_uri(d.remote_target),
                         Headers(items), b"")
        session = Session(self, role="uac" if d.is_uac else "uas", invite=invite)
        session.dialog = d
        session.state = SESSION_CONFIRMED
        session.local_sdp, session.remote_sdp = local_sdp, remote_sdp
        if d.is_uac and peer_allow:
            session.user_data["peer_allow"] = frozenset(m.lower() for m in peer_allow)
        probe = d.create_request("OPTIONS", cseq=d.local_seq)
        session.dest = session.source = source if source is not None else self.port.destination(probe, _next_hop(probe))
        if session_interval:
            session.session_interval, session.refresher = session_interval, session.role  # we refresh
        self.dialogs[d.id] = session
        session._start_session_timer()
        return session

    def _on_stray_response(self, response: Response) -> None:
        # A 2xx retransmission (or a 2xx from another fork) after the INVITE tsx ended.
        if response.cseq.method != "INVITE" or not 200 <= response.status < 300:
            return
        session = self.dialogs.get((response.call_id, response.from_.tag or "", response.to.tag or ""))
        if session is not None:
            # The ACK we sent for this very 2xx (the INVITE's or a re-INVITE's: same CSeq).
            ack = session._acks.get(response.cseq.seq)
            if ack is not None:
                self.send_ack(ack, session._dest_for(ack))
            return
        early = self._early.get((response.call_id, response.from_.tag or ""))
        if early is not None and early.dialog is not None and early.dialog.remote_tag != response.to.tag:
            # §13.2.2.4: a second fork answered: ACK it and BYE it.
            early._ack_and_bye_fork(response)

    # --- UAS ------------------------------------------------------------------------
    def _on_request(self, request: Request, key: Any, source: Any) -> None:
        method = request.method
        to_tag = request.to.tag
        if to_tag:
            session = self.dialogs.get((request.call_id, to_tag, request.from_.tag or ""))
            if session is not None and not self._from_peer(session, request, source):
                if method != "ACK":
                    self.respond(key, _uas_response(request, 403, "Forbidden: not this dialog's peer"))
                return
            if method == "ACK":
                if session is not None:
                    session._on_ack(request)
                return
            if session is None:
                if not self.handler.on_stray(request, self._replier(request, key)):
                    self.respond(key, make_response(request, 481))
                return
            if self._reject_unsupported(request, key):
                return
            session.dialog.check_request(request)  # type: ignore[union-attr]
            session._on_in_dialog_request(request, key, source)
            return
        if method == "ACK":
            return  # ACK for a non-2xx is absorbed by the transaction; stray ones dropped
        if method in ALLOW and self._reject_unsupported(request, key):
            return
        if method == "INVITE":
            self._on_new_invite(request, key, source)
        elif method == "OPTIONS":
            self.respond(key, self._options_response(request))
        elif method in ("BYE", "PRACK", "UPDATE"):
            self.respond(key, _uas_response(request, 481))
        elif method in ALLOW:
            self.handler.on_request(None, request, self._replier(request, key))
        elif method in KNOWN_NOT_ALLOWED:
            self.respond(key, _uas_response(request, 405, headers=[("Allow", ", ".join(ALLOW))]))
        else:
            self.respond(key, _uas_response(request, 501, headers=[("Allow", ", ".join(ALLOW))]))

    def _from_peer(self, session: Session, request: Request, source: Any) -> bool:
        """Is ``source`` the dialog's peer (``ng911.sip.ua.binding``)? A stranger's request is
        refused and the handler told; the call carries on."""
        if not self.config.bind_dialogs:
            return True
        verdict = check_source(session, source)
        if verdict == BOUND or (verdict == UNBOUND and self.vouch(source)):
            return True
        self.stats[verdict] = self.stats.get(verdict, 0) + 1
        if verdict == UNVERIFIABLE:
            return True
        log.warning("%s from %s refused: not this dialog's peer (%s) call-id=%s", request.method,
                    getattr(source, "remote", source), ", ".join(sorted(peer_hosts(session))), request.call_id)
        self.handler.on_unbound(session, request, source)
        return False

    def _replier(self, request: Request, key: Any) -> Callable[..., None]:
        def reply(status: int, reason: str | None = None, headers=(), body: bytes = b"", content_type=None) -> None:  # type: ignore[no-untyped-def]
            tag = request.to.tag or new_tag()
            self.respond(key, make_response(request, status, reason, to_tag=tag, headers=headers, body=body, content_type=content_type))

        return reply

    def _options_response(self, request: Request) -> Response:
        return make_response(
            request,
            200,
            to_tag=new_tag(),
            headers=[
                ("Allow", ", ".join(ALLOW)),
                ("Accept", "application/sdp, application/pidf+xml, multipart/mixed"),
                ("Supported", ", ".join(SUPPORTED)),
                ("User-Agent", self.config.user_agent),
            ],
        )

    def _reject_unsupported(self, request: Request, key: Any) -> bool:
        """§8.2.2.3: a Require naming an extension we lack gets 420 with Unsupported (any
        method but ACK and CANCEL, which never reach here)."""
        unsupported = request.header_tokens("Require") - set(SUPPORTED)
        if not unsupported:
            return False
        self.respond(key, _uas_response(request, 420, headers=[("Unsupported", ", ".join(sorted(unsupported)))]))
        return True

    def _on_new_invite(self, request: Request, key: Any, source: Any) -> None:
        se = _session_expires(request)
        if se is not None and se[0] < self.config.min_se:
            self.respond(key, _uas_response(request, 422, headers=[("Min-SE", str(self.config.min_se))]))
            return
        session = Session(self, role="uas", invite=request)
        session.invite_key = key
        session.source = source
        session.dest = source
        session.remote_sdp = sdp_of(request)
        self.sessions_by_invite[key] = session
        self.handler.on_invite(session, request)

    def _on_cancel(self, action: CancelRequest) -> None:
        session = self.sessions_by_invite.get(action.invite_key) if action.invite_key is not None else None
        if session is not None and action.source is not None and not self._from_peer(session, action.message, action.source):
            # A CANCEL must come the INVITE's way (§9.1: to the same address, hop by hop).
            self.respond(action.key, _uas_response(action.message, 403, "Forbidden: not this INVITE's peer"))
            return
        # §9.2: the CANCEL's response SHOULD carry the To tag of the INVITE's response.
        tag = session.dialog.local_tag if session is not None and session.dialog is not None else None
        status = 200 if action.invite_key is not None else 481
        self.respond(action.key, _uas_response(action.message, status, to_tag=tag))
        if action.invite_key is None or not action.invite_pending:
            return
        if session is not None and session.state in (INCOMING, SESSION_EARLY):
            session._final(487)
            self.handler.on_cancelled(session, action.message)
            session._terminate("cancelled")


