"""Answer a request we could not parse (RFC 3261 §8.2, §21.4.1): a best-effort 400.

When the parser rejects a message, the headers a response needs (Via, From, To, Call-ID,
CSeq) may still be readable. If the start line looks like a request and a Via line is there,
we echo those lines into a 400 carrying the parser's reason; otherwise the message is dropped
(a response is never answered, an ACK never). Pure: bytes in, bytes (or None) out.
"""
from __future__ import annotations

from ng911.sip.builders import new_tag

_ECHO = {"via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To",
         "call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq"}


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
