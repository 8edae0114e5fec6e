"""The SDP rewrites of third-party call control (RFC 3725 §4, §8; RFC 3264 §8).

* :func:`black_hole` / :func:`black_hole_offer` — the held, ``c=0.0.0.0`` descriptions
  of Flow II (sdp1) and Flow III (answer1).
* :func:`no_media_offer` — Flow IV's offer1 with no m-lines.
* :func:`reoffer` — one side's description re-offered into the other side's existing
  session (Flows II-IV offer2', DESIGN step 5 failover): that session's ``o=`` with
  version + 1, its m-lines kept in number and order, new streams appended.
* :func:`align_answer` — the answer to that re-offer trimmed and reordered back onto
  the offer it answers (Flow III/IV answer2' → answer2).

Both directions pair streams with one rule (:func:`~ng911.sdp.matching.match_streams`),
so ``align_answer(answer_to(reoffer(S, X)), X)`` lines up with ``X``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .codecs import STATIC_PAYLOAD_TYPES
from .matching import match_streams
from .model import (
    NULL_ADDRESS,
    Attribute,
    Connection,
    Field,
    Line,
    MediaSection,
    Origin,
    SessionDescription,
    make_media,
)
from .negotiator import versioned

__all__ = [
    "align_answer",
    "black_hole",
    "black_hole_offer",
    "no_media_offer",
    "reoffer",
    "reoffer_mapping",
]

NULL_CONNECTION = Connection("IN", "IP4", NULL_ADDRESS)

# One codec per media type for a black-hole offer built from nothing (RFC 3725 §4.2).
_BLACK_HOLE_FORMATS: dict[str, tuple[str, str, str]] = {
    "audio": ("RTP/AVP", "0", f"0 {STATIC_PAYLOAD_TYPES[0][0]}/{STATIC_PAYLOAD_TYPES[0][1]}"),
    "video": ("RTP/AVP", "34", f"34 {STATIC_PAYLOAD_TYPES[34][0]}/{STATIC_PAYLOAD_TYPES[34][1]}"),
    "text": ("RTP/AVP", "98", "98 t140/1000"),  # RFC 4103 real-time text
}


def _session_lines(origin: Origin, name: str, connection: Connection | None) -> tuple[Line, ...]:
    lines: list[Line] = [Field("v", "0"), origin, Field("s", name)]
    if connection is not None:
        lines.append(connection)
    lines.append(Field("t", "0 0"))
    return tuple(lines)


def black_hole(sdp: SessionDescription, *, origin: Origin | None = None) -> SessionDescription:
    """``sdp`` with the same media composition but every ``c=`` at 0.0.0.0 (RFC 3725 §4.3).

    Flow III's answer1: it accepts A's offer1 while no media flows. Pass the
    controller's ``origin`` when the result is sent as the controller's own SDP.
    """
    media = [m.with_connection(NULL_CONNECTION) if m.connections else m for m in sdp.media]
    out = sdp.with_media(media)
    if out.connection is not None:
        out = out.with_connection(NULL_CONNECTION)
    return out if origin is None else out.with_origin(origin)


def black_hole_offer(
    origin: Origin,
    media: Sequence[str] = ("audio",),
    *,
    port: int = 9,
    name: str = "-",
) -> SessionDescription:
    """Flow II's sdp1 (RFC 3725 §4.2): one m-line per type, one codec, port not 0, 0.0.0.0.

    ``media`` lists the types wanted (audio, video, text), e.g. those of the SDP the
    participant will later be re-INVITEd with. The port should be a random non-zero
    one chosen by the caller; 9 (discard) is the default.
    """
    if port == 0:
        raise ValueError("a black-hole stream needs a non-zero port (RFC 3725 §4.2)")
    sections = []
    for kind in media:
        try:
            proto, fmt, rtpmap = _BLACK_HOLE_FORMATS[kind]
        except KeyError:
            raise ValueError(f"no black-hole codec known for media type {kind!r}") from None
        sections.append(make_media(kind, port, proto, (fmt,), Attribute("rtpmap", rtpmap)))
    return SessionDescription(_session_lines(origin, name, NULL_CONNECTION), tuple(sections))


def no_media_offer(
    origin: Origin, *, name: str = "-", connection: Connection | None = None
) -> SessionDescription:
    """Flow IV's offer1 (RFC 3725 §4.4): a valid SDP with no m-lines at all."""
    return SessionDescription(_session_lines(origin, name, connection))


def reoffer_mapping(
    session: SessionDescription, new: SessionDescription
) -> tuple[int | None, ...]:
    """For each m-line of ``session``, the stream of ``new`` that takes its place, or None.

    Each slot takes the first unused *enabled* stream of ``new`` with the same media
    type; disabled streams of ``new`` carry nothing and are never placed.
    """
    return match_streams(session.media, new.media, skip_disabled_streams=True)


def reoffer(session: SessionDescription, new: SessionDescription) -> SessionDescription:
    """``new`` rewritten as the next offer in ``session`` (RFC 3725 §4.3, RFC 3264 §8).

    ``session`` is the last SDP we sent on the receiving leg. The result keeps its ``o=``
    (username, sess-id, address; version + 1, or unchanged — and then ``session`` itself —
    when nothing differs), keeps its m-lines in number and order, fills each with the
    matching stream of ``new`` (:func:`reoffer_mapping`), disables (port 0, same
    type/proto, one format) those without one and appends the remaining enabled streams
    of ``new`` at the end. Session-level lines come from ``new``.
    """
    mapping = reoffer_mapping(session, new)
    media = [
        new.media[j] if j is not None else slot.disabled()
        for slot, j in zip(session.media, mapping)
    ]
    used = set(mapping)
    media.extend(m for j, m in enumerate(new.media) if m.enabled and j not in used)
    return versioned(session, new.with_media(media))


def align_answer(answer: SessionDescription, offer: SessionDescription) -> SessionDescription:
    """``answer`` trimmed and reordered so its m-lines match ``offer`` (RFC 3725 §4.3).

    Same count and order as ``offer``; each enabled offer stream takes the first unused
    answer stream of its type (the pairing :func:`reoffer` used); disabled or unmatched
    offer streams are answered with port 0. The answer's ``o=`` is kept: on a leg that
    already has a session, pass the result through :func:`~ng911.sdp.versioned` (or
    ``OfferAnswer.prepare``) with the last SDP sent there.
    """
    mapping = match_streams(offer.media, answer.media, skip_disabled_slots=True)
    if mapping == tuple(range(len(answer.media))):
        return answer
    media: list[MediaSection] = [
        answer.media[j] if j is not None else slot.disabled()
        for slot, j in zip(offer.media, mapping)
    ]
    return answer.with_media(media)
