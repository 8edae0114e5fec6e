"""Errors of the SDP layer, each carrying the SIP status it maps to on the wire."""

from __future__ import annotations

__all__ = [
    "SdpParseError",
    "OfferAnswerError",
    "LocalOfferAnswerError",
    "RemoteOfferAnswerError",
    "GlareError",
]


class SdpParseError(ValueError):
    """A session description that is not valid SDP (RFC 8866 §5, §9).

    ``lineno`` is 1-based; ``line`` is the offending line without its line ending.
    """

    status_hint = 400

    def __init__(self, reason: str, lineno: int, line: str) -> None:
        self.reason = reason
        self.lineno = lineno
        self.line = line
        super().__init__(f"bad SDP at line {lineno}: {reason}: {line!r}")


class OfferAnswerError(Exception):
    """An offer/answer transition that RFC 3264 (or RFC 3261 §13.2.1/§14) forbids."""

    status_hint = 500

    def __init__(self, reason: str, *, status_hint: int | None = None) -> None:
        self.reason = reason
        if status_hint is not None:
            self.status_hint = status_hint
        super().__init__(reason)


class LocalOfferAnswerError(OfferAnswerError):
    """We misused the offer/answer API (a bug on our side, never the peer's)."""


class RemoteOfferAnswerError(OfferAnswerError):
    """The peer broke the offer/answer rules; ``status_hint`` is the response to send."""

    status_hint = 488


class GlareError(RemoteOfferAnswerError):
    """A remote offer arrived while our own offer is pending (RFC 3261 §14.2: answer 491)."""

    status_hint = 491
