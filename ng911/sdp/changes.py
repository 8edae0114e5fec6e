"""What a new SDP changes from the previous one of the same side (RFC 3264 §8, RFC 3725 §6).

Streams compare by position, as m-lines do in a re-offer (RFC 3264 §8). The kinds are
the rows of RFC 3725's participant list — a changed port, a changed connection address,
an added or removed (port 0) stream, an added codec — plus codec removal, direction
changes and hold/un-hold (``c=0.0.0.0`` counts as hold, see :mod:`ng911.sdp.hold`), so a
controller can log the change and decide what to do with it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .codecs import codec_key, codec_name
from .hold import HoldState, hold_state
from .model import MediaSection, SessionDescription

__all__ = ["Change", "ChangeKind", "classify_change", "diff"]


class ChangeKind(enum.StrEnum):
    ADDRESS = "address"  # connection address of an enabled stream (0.0.0.0 is hold instead)
    PORT = "port"
    STREAM_ADDED = "stream-added"  # new m-line, or a port-0 slot enabled again
    STREAM_REMOVED = "stream-removed"  # port set to 0 (or the m-line missing)
    MEDIA_TYPE = "media-type"
    CODEC_ADDED = "codec-added"
    CODEC_REMOVED = "codec-removed"
    DIRECTION = "direction"  # the direction attribute in force
    HOLD = "hold"
    UNHOLD = "unhold"
    OTHER = "other"  # anything else (crypto keys, bandwidth, other attributes, ...)


@dataclass(frozen=True, slots=True)
class Change:
    kind: ChangeKind
    stream: int | None  # m-line index, None for the session level
    detail: str


def _codecs(m: MediaSection) -> dict[object, str]:
    out: dict[object, str] = {}
    for fmt in m.formats:
        key = codec_key(m, fmt) or ("fmt", fmt)
        out.setdefault(key, codec_name(m, fmt))
    return out


def _stream_changes(
    old: SessionDescription, new: SessionDescription, i: int
) -> list[Change]:
    om = old.media[i] if i < len(old.media) else None
    nm = new.media[i] if i < len(new.media) else None
    if om is None or not om.enabled:
        if nm is not None and nm.enabled:
            return [Change(ChangeKind.STREAM_ADDED, i, f"{nm.media} port {nm.port}")]
        return []
    if nm is None or not nm.enabled:
        return [Change(ChangeKind.STREAM_REMOVED, i, f"{om.media} port {om.port}")]
    out: list[Change] = []
    if om.media != nm.media:
        out.append(Change(ChangeKind.MEDIA_TYPE, i, f"{om.media} -> {nm.media}"))
    if om.port != nm.port:
        out.append(Change(ChangeKind.PORT, i, f"{om.port} -> {nm.port}"))
    oc, nc = old.stream_connection(i), new.stream_connection(i)
    if (
        oc is not None
        and nc is not None
        and not oc.is_null
        and not nc.is_null
        and (oc.addrtype, oc.address) != (nc.addrtype, nc.address)
    ):
        out.append(Change(ChangeKind.ADDRESS, i, f"{oc.address} -> {nc.address}"))
    before, after = _codecs(om), _codecs(nm)
    added = [name for key, name in after.items() if key not in before]
    removed = [name for key, name in before.items() if key not in after]
    if added:
        out.append(Change(ChangeKind.CODEC_ADDED, i, " ".join(added)))
    if removed:
        out.append(Change(ChangeKind.CODEC_REMOVED, i, " ".join(removed)))
    od, nd = old.stream_direction(i), new.stream_direction(i)
    if od is not nd:
        out.append(Change(ChangeKind.DIRECTION, i, f"{od} -> {nd}"))
    was_held = hold_state(old, i) is HoldState.ON_HOLD
    now_held = hold_state(new, i) is HoldState.ON_HOLD
    if now_held and not was_held:
        out.append(Change(ChangeKind.HOLD, i, "on hold"))
    elif was_held and not now_held:
        out.append(Change(ChangeKind.UNHOLD, i, "off hold"))
    if not out and om != nm:
        out.append(Change(ChangeKind.OTHER, i, "other media-level lines"))
    return out


def diff(old: SessionDescription, new: SessionDescription) -> tuple[Change, ...]:
    """Every classified change from ``old`` to ``new``, stream by stream, in m-line order."""
    changes: list[Change] = []
    for i in range(max(len(old.media), len(new.media))):
        changes.extend(_stream_changes(old, new, i))
    if not changes and old.content() != new.content():
        changes.append(Change(ChangeKind.OTHER, None, "other session-level lines"))
    return tuple(changes)


def classify_change(old: SessionDescription, new: SessionDescription) -> frozenset[ChangeKind]:
    """The kinds of change from ``old`` to ``new`` (empty: the same session description)."""
    return frozenset(c.kind for c in diff(old, new))
