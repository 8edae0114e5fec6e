"""Message builders for the transaction tests: every message goes through parse_message."""

from __future__ import annotations

from ng911.sip import builders
from ng911.sip.message import Request, Response, parse_message

DEST = ("192.0.2.10", 5060, "UDP")  # an opaque destination/flow object, as the shell passes


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKabc1",
    via: str = "client.example.com:5060",
    transport: str = "UDP",
    uri: str = "sip:bob@example.com",
    from_tag: str | None = "ft1",
    to_tag: str | None = None,
    call_id: str = "call-1@client.example.com",
    cseq: int = 1,
    cseq_method: str | None = None,
) -> Request:
    params = f";branch={branch}" if branch is not None else ""
    from_ = "<sip:alice@example.com>" + (f";tag={from_tag}" if from_tag else "")
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {via}{params}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {from_}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def response(req: Request, status: int, *, to_tag: str | None = "tt1") -> Response:
    """What the peer would send back, serialised and parsed again."""
    built = builders.make_response(req, status, to_tag=None if status == 100 else to_tag)
    msg = parse_message(built.to_bytes())
    assert isinstance(msg, Response)
    return msg


def ack_for(invite: Request, final: Response) -> Request:
    """The ACK a peer's INVITE client transaction sends for our non-2xx ``final``."""
    msg = parse_message(builders.make_ack_for_non2xx(invite, final).to_bytes())
    assert isinstance(msg, Request)
    return msg
