"""Codec intersection of two descriptions (RFC 3725 §4.3: detect "no codec in common").

RTP formats compare as RFC 3551 defines them: static payload types (0-34) by number,
the others by their rtpmap encoding name, clock rate and channels, case-insensitively.
Non-RTP formats (``t38``, ``*``, ...) compare as tokens. Streams are paired by media type
(:func:`~ng911.sdp.matching.match_streams`); only streams enabled on both sides count.
Formats that carry no media of their own (telephone-event, comfort noise, redundancy,
retransmission, FEC) never make a stream usable on their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from .matching import match_streams
from .model import MediaSection, Rtpmap, SessionDescription

__all__ = [
    "AUXILIARY_ENCODINGS",
    "STATIC_PAYLOAD_TYPES",
    "CommonCodec",
    "CodecIntersection",
    "StreamCodecs",
    "codec_key",
    "codec_name",
    "have_common_codec",
    "intersect",
]

#: RFC 3551 §6 static payload types: number -> (encoding, clock rate, channels).
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CelB", 90000, 1),
    26: ("JPEG", 90000, 1),
    28: ("nv", 90000, 1),
    31: ("H261", 90000, 1),
    32: ("MPV", 90000, 1),
    33: ("MP2T", 90000, 1),
    34: ("H263", 90000, 1),
}
_LAST_STATIC = 34

#: Encodings that are not a usable codec by themselves (lower case).
AUXILIARY_ENCODINGS = frozenset(
    {"telephone-event", "cn", "red", "rtx", "ulpfec", "flexfec", "ulpfec-03"}
)

CodecKey = tuple[object, ...]


def codec_key(section: MediaSection, fmt: str) -> CodecKey | None:
    """What makes ``fmt`` the same codec on both sides; None when it cannot be known."""
    return _key(section, fmt, section.rtpmaps if section.is_rtp else {})


def codec_name(section: MediaSection, fmt: str) -> str:
    """A display name: ``PCMU/8000``, ``H264/90000``, ``opus/48000/2``, or the token itself."""
    return _name(section, fmt, section.rtpmaps if section.is_rtp else {})


def _key(section: MediaSection, fmt: str, rtpmaps: dict[str, Rtpmap]) -> CodecKey | None:
    if not section.is_rtp:
        return ("fmt", fmt.lower())
    if not fmt.isdigit():
        return None
    pt = int(fmt)
    if pt <= _LAST_STATIC:
        return ("pt", pt)
    rtpmap = rtpmaps.get(fmt)
    if rtpmap is None:
        return None
    return ("rtpmap", rtpmap.encoding.lower(), rtpmap.clock_rate, rtpmap.channels)


def _name(section: MediaSection, fmt: str, rtpmaps: dict[str, Rtpmap]) -> str:
    if section.is_rtp and fmt.isdigit():
        r = rtpmaps.get(fmt)
        if r is not None:
            return f"{r.encoding}/{r.clock_rate}" + ("" if r.params is None else f"/{r.params}")
        static = STATIC_PAYLOAD_TYPES.get(int(fmt))
        if static is not None:
            return f"{static[0]}/{static[1]}"
    return fmt


@dataclass(frozen=True, slots=True)
class CommonCodec:
    """A codec both sides offer, with each side's format (payload type) for it."""

    name: str
    format_a: str
    format_b: str
    usable: bool


@dataclass(frozen=True, slots=True)
class StreamCodecs:
    """Codecs shared by stream ``index_a`` of A and ``index_b`` of B."""

    media: str
    index_a: int
    index_b: int
    common: tuple[CommonCodec, ...]

    @property
    def usable(self) -> bool:
        """At least one shared codec that carries media (not only telephone-event etc.)."""
        return any(c.usable for c in self.common)


@dataclass(frozen=True, slots=True)
class CodecIntersection:
    streams: tuple[StreamCodecs, ...]

    @property
    def has_common_codec(self) -> bool:
        return any(s.usable for s in self.streams)


def _usable(key: CodecKey) -> bool:
    if key[0] == "pt":
        static = STATIC_PAYLOAD_TYPES.get(key[1])  # type: ignore[arg-type]
        return static is None or static[0].lower() not in AUXILIARY_ENCODINGS
    return key[1] not in AUXILIARY_ENCODINGS


def _stream_common(a: MediaSection, b: MediaSection) -> tuple[CommonCodec, ...]:
    maps_a = a.rtpmaps if a.is_rtp else {}
    maps_b = b.rtpmaps if b.is_rtp else {}
    b_keys: dict[CodecKey, str] = {}
    for fmt in b.formats:
        key = _key(b, fmt, maps_b)
        if key is not None:
            b_keys.setdefault(key, fmt)
    out: list[CommonCodec] = []
    for fmt in a.formats:
        key = _key(a, fmt, maps_a)
        if key is None or key not in b_keys:
            continue
        out.append(CommonCodec(_name(a, fmt, maps_a), fmt, b_keys.pop(key), _usable(key)))
    return tuple(out)


def intersect(a: SessionDescription, b: SessionDescription) -> CodecIntersection:
    """Per pair of active streams (paired by media type), the codecs A and B share."""
    mapping = match_streams(a.media, b.media, skip_disabled_slots=True, skip_disabled_streams=True)
    streams = tuple(
        StreamCodecs(a.media[i].media, i, j, _stream_common(a.media[i], b.media[j]))
        for i, j in enumerate(mapping)
        if j is not None
    )
    return CodecIntersection(streams)


def have_common_codec(a: SessionDescription, b: SessionDescription) -> bool:
    """False when no active stream pair shares a usable codec: the call cannot have media."""
    return intersect(a, b).has_common_codec
