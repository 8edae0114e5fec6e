"""Build the messages RFC 3261 derives from others: responses, ACK for non-2xx, CANCEL."""
from __future__ import annotations

import secrets
from typing import Iterable

from ng911.sip.headers import split_values
from ng911.sip.message import Headers, Request, Response

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 417: "Unknown Resource-Priority", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete",
    485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending",
    493: "Undecipherable", 494: "Security Agreement Required",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

MAGIC_COOKIE = "z9hG4bK"


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    """96 random bits (RFC 3261 §19.3 asks for 32): a dialog's tags must not be guessable, or
    anyone could forge requests inside it (issue 9)."""
    return secrets.token_hex(12)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """A response to ``request`` per RFC 3261 §8.2.6.

    Via (every line, in order), From, Call-ID and CSeq are copied; To is copied and gets
    ``to_tag`` when it has none (never for 100 Trying, §8.2.6.2). A 100 echoes Timestamp.
    """
    items: list[tuple[str, str]] = []
    for name, value in request.headers:
        key = name.lower()
        if key in ("via", "v", "from", "f", "call-id", "i", "cseq"):
            items.append((name, value))
        elif key in ("to", "t"):
            if to_tag and status != 100 and request.to.tag is None:
                value = f"{value};tag={to_tag}"
            items.append((name, value))
        elif key == "timestamp" and status == 100:
            items.append((name, value))
    items.extend(headers)
    if body and content_type:
        items.append(("Content-Type", content_type))
    return Response(status, reason if reason is not None else REASONS.get(status, ""), Headers(items), body)


def make_ack_for_non2xx(invite: Request, response: Response) -> Request:
    """The ACK the INVITE client transaction sends for a 3xx–6xx (RFC 3261 §17.1.1.3).

    Same Request-URI, Call-ID, From, top Via (so the same branch) and Route as the INVITE;
    To from the response (with its tag); CSeq number of the INVITE with method ACK.
    """
    items: list[tuple[str, str]] = [("Via", _top_via_text(invite))]
    for name in ("Route",):
        for value in invite.headers.get_all(name):
            items.append((name, value))
    items += [
        ("Max-Forwards", "70"),
        ("From", invite.headers.get("From") or ""),
        ("To", response.headers.get("To") or invite.headers.get("To") or ""),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.seq} ACK"),
    ]
    return Request("ACK", invite.uri, Headers(items))


def make_cancel(invite: Request) -> Request:
    """CANCEL for a pending INVITE (RFC 3261 §9.1): same Request-URI, Call-ID, To, From,
    CSeq number and top Via (branch) as the INVITE; Route copied."""
    items: list[tuple[str, str]] = [("Via", _top_via_text(invite))]
    for value in invite.headers.get_all("Route"):
        items.append(("Route", value))
    items += [
        ("Max-Forwards", "70"),
        ("From", invite.headers.get("From") or ""),
        ("To", invite.headers.get("To") or ""),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.seq} CANCEL"),
    ]
    return Request("CANCEL", invite.uri, Headers(items))


def _top_via_text(request: Request) -> str:
    """The top Via value exactly as the request carries it ("equal to the top Via header
    field of the original request", §17.1.1.3 and §9.1) -- not re-serialised."""
    request.top_via  # noqa: B018 - raises SipParseError when there is none
    return split_values(request.headers.get("Via") or "")[0]
