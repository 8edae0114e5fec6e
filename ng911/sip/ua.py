"""The UA core (RFC 3261 §8, §12–§15) with 100rel (RFC 3262), UPDATE (RFC 3311) and session
timers (RFC 4028). Sans-I/O: time comes from an injected clock, bytes leave through an injected
port; the Twisted shell (`ng911.sip.stack`) only moves them.

It sits on the transaction layer and gives the application INVITE sessions — the same object
for both roles, as in reSIProcate's DUM — and a handler interface of neutral events. The call
controller (two sessions per call) is built on exactly this.

UAS session:  INCOMING ─ring()→ EARLY ─answer()→ ANSWERED(2xx retransmitted) ─ACK→ CONFIRMED
UAC session:  CALLING ─1xx→ EARLY ─2xx→ CONFIRMED (ACK sent; by the app for a delayed offer)
any state ─BYE / CANCEL / failure→ TERMINATED
"""
from __future__ import annotations

import logging
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ng911.sip.body import sdp_of
from ng911.sip.builders import make_response, new_branch, new_call_id, new_tag
from ng911.sip.dialog import CONFIRMED, EARLY, TERMINATED, Dialog, DialogError
from ng911.sip.errors import SipParseError
from ng911.sip.headers import NameAddr, Via
from ng911.sip.message import Headers, Request, Response, missing_mandatory
from ng911.sip.timers import TimerConfig
from ng911.sip.timerwheel import TimerHandle, TimerWheel
from ng911.sip.transaction.actions import (
    CancelRequest,
    MergedRequest,
    Send,
    ToTU,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from ng911.sip.transaction.errors import LocalProtocolError
from ng911.sip.transaction.layer import TransactionLayer
from ng911.sip.uri import SipUri, Uri, parse_uri

log = logging.getLogger("ng911.sip.ua")

ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "PRACK", "UPDATE", "INFO", "REFER", "NOTIFY", "MESSAGE")
SUPPORTED = ("100rel", "timer", "replaces")
KNOWN_NOT_ALLOWED = ("REGISTER", "SUBSCRIBE", "PUBLISH")
#: how far an adopted dialog's CSeq jumps past the stored one (DESIGN "Cluster")
CSEQ_GAP = 1000

# session states
INCOMING, CALLING, SESSION_EARLY, ANSWERED, SESSION_CONFIRMED, SESSION_TERMINATED = (
    "incoming",
    "calling",
    "early",
    "answered",
    "confirmed",
    "terminated",
)


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


@dataclass
class _ClientCtx:
    request: Request
    dest: Any
    on_response: Callable[[Response], None]
    on_failure: Callable[[str], None]
    # RFC 3261 §18.1.1: a request sent over TCP only because it is too large for UDP is sent
    # again over UDP when the TCP connection cannot be made. This is that UDP destination.
    udp_fallback: Any = None
    contact_added: bool = False


class UserAgent:
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
        via = Via(transport, host, port, (("branch", new_branch()), ("rport", None)))
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
    ) -> Session:
        """Take over a confirmed dialog stored by another UA (``Dialog.to_dict``): a session
        for it, registered so that the peer's in-dialog requests reach it. Our CSeq jumps
        ``cseq_gap`` past the stored one: the UA that stored it may have sent requests after
        its last write. Nothing is sent; a target refresh (``reinvite``) tells the peer our
        Contact."""
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
        session.dest = session.source = self.port.destination(probe, _next_hop(probe))
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
            if method == "ACK":
                if session is not None:
                    session._on_ack(request)
                return
            if session is None:
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


def _uas_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    headers: Any = (),
    to_tag: str | None = None,
) -> Response:
    """A response the UA core answers on its own. §8.2.6.2: a final response to a request
    without To tag gets one (a new one unless ``to_tag``); a To too broken to read is echoed."""
    try:
        return make_response(request, status, reason, to_tag=to_tag or new_tag(), headers=headers)
    except SipParseError:
        return make_response(request, status, reason, headers=headers)


def _next_hop(request: Request) -> Uri:
    """§8.1.2 / §12.2.1.1: the first Route when it is a loose router, else the Request-URI
    (which holds the strict router when the route set starts with one)."""
    routes = request.routes
    if routes and routes[0].uri.has_param("lr"):
        return routes[0].uri
    return request.uri


def _moved_to_tcp_for_size(hop: Any, dest: Any) -> bool:
    """Did the transport rules pick TCP only because the request is large (§18.1.1)? True
    when the next hop named no transport and is not sips: (which means TLS, never UDP)."""
    if getattr(dest, "transport", None) != "TCP" or not hasattr(dest, "host"):
        return False
    return isinstance(hop, SipUri) and hop.transport is None and not hop.is_secure


def _is_reliable(dest: Any) -> bool:
    return bool(getattr(dest, "is_reliable", False))


def _is_sdp(msg: Request | Response) -> bool:
    """Does the message carry a session description (plain, or a part of a multipart)?"""
    return sdp_of(msg) is not None


def _session_expires_or_none(msg: Request | Response) -> tuple[int, str | None] | None:
    """`_session_expires` for a response: a malformed value is ignored, not raised."""
    try:
        return _session_expires(msg)
    except SipParseError:
        return None


def _session_expires(msg: Request | Response) -> tuple[int, str | None] | None:
    value = msg.headers.get("Session-Expires")
    if value is None:
        return None
    head, _, params = value.partition(";")
    if not head.strip().isdigit():
        raise SipParseError("Bad Session-Expires")
    refresher = None
    for p in params.split(";"):
        name, _, v = p.partition("=")
        if name.strip().lower() == "refresher":
            refresher = v.strip().lower()
    return int(head), refresher


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


class Session:
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
        #: "transport" or "expired" — read by the application instead of parsing text
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

    def __repr__(self) -> str:
        return f"<Session {self.role} {self.invite.call_id} {self.state}>"

    @property
    def call_id(self) -> str:
        return self.invite.call_id

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

    def _on_prack(self, request: Request, key: Any) -> None:
        rack = (request.headers.get("RAck") or "").split()
        if self._unacked_prov is not None and rack and rack[0].isdigit() and int(rack[0]) == self._unacked_prov[0]:
            self._unacked_prov = None
            self._stop(self._prov_retx)
            self.ua.respond(key, make_response(request, 200))
            return
        self.ua.respond(key, make_response(request, 481))

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

    def _is_1xx_retransmission(self, response: Response) -> bool:
        """RFC 3262 §4: a reliable 1xx whose RSeq we have seen already is not passed up again."""
        if "100rel" not in response.header_tokens("Require"):
            return False
        rseq = (response.headers.get("RSeq") or "").strip()
        return rseq.isdigit() and self._prack_rseq > 0 and int(rseq) <= self._prack_rseq

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
        self._terminate(reason, notify=False)
        self.ua.handler.on_failed(self, None, reason)

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
        via = Via(transport, host, port, (("branch", new_branch()), ("rport", None)))
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
    ) -> Any:
        """Send an in-dialog request. A final 408 or 481, a timeout or a transport error also
        ends the session (see `_failed`), after ``on_response`` / ``on_failure`` ran."""
        if self.dialog is None:
            raise RuntimeError("no dialog yet")
        extra = list(headers)
        if body and content_type:
            extra.append(("Content-Type", content_type))
        req = self.dialog.create_request(method, headers=tuple(extra), body=body)

        def response(resp: Response) -> None:
            if on_response is not None:
                on_response(resp)
            if resp.status in (408, 481):
                self._failed(f"{method} got {resp.status}", (method, str(resp.status)))

        def failure(reason: str) -> None:
            if on_failure is not None:
                on_failure(reason)
            self._failed(f"{method} {reason}", (method, _cause(reason)))

        return self.ua.send_request(req, response, failure, self._dest_for(req))

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
                self._failed(f"re-INVITE {reason}", ("INVITE", _cause(reason)))
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

    def update(self, sdp: bytes | None = None) -> None:
        """Send an UPDATE (RFC 3311), with an offer or as a bare session refresh."""
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

        def on_failure(reason: str) -> None:
            if sdp is not None:
                self._offer_out = False

        self.request(
            "UPDATE", body=sdp or b"", content_type="application/sdp" if sdp else None, headers=tuple(headers),
            on_response=on_response, on_failure=on_failure,
        )

    def _session_expires_from_2xx(self, resp: Response) -> None:
        """The 2xx to our refresh may change the interval or the refresher (RFC 4028 §7.4)."""
        se = _session_expires_or_none(resp)
        if se is not None and self.session_interval:
            self.session_interval = se[0]
            self.refresher = self._refresher_from(se[1], we_sent_request=True) or self.refresher

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
        if "update" in peer_allow:
            self.update(None)
        else:
            self.reinvite(self.local_sdp)

    def _expired(self) -> None:
        if self.state == SESSION_TERMINATED:
            return
        log.info("session %s expired without refresh", self.call_id)
        self.failure = ("", "expired")
        self.bye(reason="session expired")

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


def _cause(reason: str) -> str:
    """A transaction failure ("timeout", "transport error") as a ``Session.failure`` cause."""
    return "timeout" if "timeout" in reason else "transport"


__all__ = ["Session", "UaConfig", "UaHandler", "UaPort", "UserAgent", "NameAddr", "EARLY"]
