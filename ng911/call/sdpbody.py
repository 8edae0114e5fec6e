"""Where the SDP sits in a SIP body, and the body an answer point gets without it.

An NG9-1-1 INVITE usually carries multipart/mixed: the SDP offer, a PIDF-LO, perhaps
additional data. The controller reads the SDP out of it, and when it re-routes a call with a
fresh INVITE *without* an offer (a failover, RFC 3725 flow I), it still sends the location
and additional data along: the same multipart minus its SDP part.
"""
from __future__ import annotations

from ng911.sip.body import build_multipart, sdp_of, walk
from ng911.sip.errors import SipParseError
from ng911.sip.message import Message

SDP = "application/sdp"

__all__ = ["sdp_of", "without_sdp"]


def without_sdp(msg: Message) -> tuple[bytes, str | None]:
    """(body, content type) of ``msg`` with every SDP part removed ('', None if nothing is left)."""
    ctype = (msg.content_type or "").split(";")[0].strip().lower()
    if not msg.body or ctype == SDP:
        return b"", None
    if not ctype.startswith("multipart/"):
        return msg.body, msg.content_type
    try:
        parts = [p for p in walk(msg) if p.mime_type != SDP]
    except SipParseError:
        return b"", None
    if not parts:
        return b"", None
    if len(parts) == 1:
        only = parts[0]
        return only.body, only.content_type
    boundary = "ng911-" + format(abs(hash(msg.body)) % (1 << 48), "x")
    return build_multipart(parts, boundary), f"multipart/mixed;boundary={boundary}"
