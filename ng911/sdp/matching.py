"""Pairing the streams of two descriptions by media type (RFC 3725 §4.3 "reorder and trim").

One rule serves the re-offer, the answer alignment and the codec check, so they agree:
each slot, in order, takes the first not-yet-used stream of the same media type.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from .model import MediaSection

__all__ = ["match_streams"]


def match_streams(
    slots: Sequence[MediaSection],
    streams: Sequence[MediaSection],
    *,
    skip_disabled_slots: bool = False,
    skip_disabled_streams: bool = False,
) -> tuple[int | None, ...]:
    """For each slot, the index into ``streams`` of its counterpart, or None.

    Media types compare case-insensitively. Disabled (port 0) slots or streams take
    part unless skipped: a skipped slot gets None, a skipped stream is never chosen.
    """
    free: dict[str, deque[int]] = {}
    for j, s in enumerate(streams):
        if skip_disabled_streams and not s.enabled:
            continue
        free.setdefault(s.media.lower(), deque()).append(j)
    out: list[int | None] = []
    for slot in slots:
        queue = free.get(slot.media.lower())
        if not queue or (skip_disabled_slots and not slot.enabled):
            out.append(None)
        else:
            out.append(queue.popleft())
    return tuple(out)
