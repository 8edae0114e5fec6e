"""Errors that carry their meaning on the wire (STYLE habit 6)."""
from __future__ import annotations


class SipParseError(ValueError):
    """A message (or a part of one) that is not valid SIP.

    ``reason`` is short and printable, fit for a 400 reason phrase; ``status_hint`` is the
    response a UAS should send when it can still answer (400, or 505 for a foreign version).
    """

    def __init__(self, reason: str, status_hint: int = 400) -> None:
        super().__init__(reason)
        self.reason = _phrase(reason)
        self.status_hint = status_hint


def _phrase(text: str) -> str:
    # A reason phrase is one line of printable text; never echo raw peer bytes back unbounded.
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    return cleaned[:120]
