"""What the UA core's modules share: the methods it allows, session states, a client
transaction's context and small helpers over messages."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ng911.sip.body import sdp_of
from ng911.sip.builders import make_response, new_branch, new_tag
from ng911.sip.errors import SipParseError
from ng911.sip.headers import Via
from ng911.sip.message import Request, Response
from ng911.sip.uri import SipUri, Uri

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


def new_via(transport: str, host: str, port: int) -> Via:
    """Our Via for a new request: a fresh branch, ``rport`` (RFC 3581), and over TLS ``alias``
    (RFC 5923: the far end may send its own requests back over the connection we open)."""
    params: tuple[tuple[str, str | None], ...] = (("branch", new_branch()), ("rport", None))
    if transport == "TLS":
        params += (("alias", None),)
    return Via(transport, host, port, params)


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


def failure_cause(reason: str) -> str:
    """A transaction failure as the UA core reports it ("timeout", "transport error") as a
    ``Session.failure`` cause: "timeout" or "transport"."""
    return "timeout" if "timeout" in reason else "transport"


