"""Answer a request we could not parse (RFC 3261 §8.2, §21.4.1): a best-effort 400.

When the parser rejects a message, the headers a response needs (Via, From, To, Call-ID,
CSeq) may still be readable. If the start line looks like a request and a Via line is there,
we echo those lines into a 400 carrying the parser's reason; otherwise the message is dropped
(a response is never answered, an ACK never). Pure: bytes in, bytes (or None) out.

A line echoed loses its control characters (but HTAB): the parser refuses a request for a raw
NUL in its Call-ID, say ("Control character in Call-ID"), and the 400 must not carry one back.
The Call-ID so echoed is the request's without its CTLs: RFC 3261 §8.2.6.2 wants it equal,
which a valid response cannot be; this is the nearest, and lets a sender that keys its calls
on the Call-ID it meant (SIPp, for one) match the 400. The response goes to the address the
request came from in any case (ng911.sip.stack), never to the echoed Via.
"""
from __future__ import annotations

import re

from ng911.sip.builders import new_tag

_ECHO = {"via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To",
         "call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq"}
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CTL but HTAB (a CR of a CRLF is gone by now)


def best_effort_400(data: bytes, reason: str) -> bytes | None:
    """A 400 for unparseable ``data`` echoing its Via/From/To/Call-ID/CSeq lines, or None."""
    text = data[:65536].decode("utf-8", "replace")
    lines = text.replace("\r\n", "\n").split("\n")
    first = lines[0].strip()
    parts = first.split()
    if not parts or first.upper().startswith("SIP/") or parts[0].upper() == "ACK":
        return None
    echoed: list[str] = []
    for line in lines[1:]:
        if not line.strip():
            break
        if line[:1] in (" ", "\t"):
            continue  # folded values: keep it simple, the first line is enough to route back
        name, colon, value = line.partition(":")
        canon = _ECHO.get(name.strip().lower())
        if colon and canon:
            value = _CTL.sub("", value)
        if colon and canon and _printable(value):
            value = value.strip()
            if canon == "To" and ";tag=" not in value.replace(" ", "").lower():
                value = f"{value};tag={new_tag()}"  # a final response carries a To tag (§8.2.6.2)
            echoed.append(f"{canon}: {value}")
    if not any(line.startswith("Via:") for line in echoed):
        return None
    reason = "".join(c if c.isprintable() else "?" for c in reason)[:120] or "Bad Request"
    head = [f"SIP/2.0 400 {reason}", *echoed, "Content-Length: 0", "", ""]
    return "\r\n".join(head).encode("utf-8")


def _printable(value: str) -> bool:
    return all(c.isprintable() or c == "\t" for c in value) and len(value) < 2048
