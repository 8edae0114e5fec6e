"""Hold and un-hold (RFC 3264 §8.4), including the RFC 2543 ``c=0.0.0.0`` form.

Directions are read from the SDP author's point of view: an SDP that says ``sendonly``
(or ``inactive``) puts the peer on hold; ``recvonly`` is the usual answer to that hold.
The old form ``c=IN IP4 0.0.0.0`` means "do not send to me" and is folded into the
direction: sendrecv + 0.0.0.0 reads as sendonly, recvonly + 0.0.0.0 as inactive.
"""

from __future__ import annotations

import enum

from .model import NULL_ADDRESS, Connection, Direction, SessionDescription

__all__ = [
    "HoldState",
    "effective_direction",
    "hold",
    "hold_state",
    "is_held",
    "unhold",
]


class HoldState(enum.StrEnum):
    ACTIVE = "active"  # sendrecv
    ON_HOLD = "on-hold"  # the author holds: sendonly, inactive, or c=0.0.0.0
    RECVONLY = "recvonly"  # the author only listens (the answer to a hold)
    DISABLED = "disabled"  # port 0, or a description with no enabled stream
    MIXED = "mixed"  # description level only: streams disagree


def effective_direction(sdp: SessionDescription, index: int) -> Direction:
    """The direction stream ``index`` really has, ``c=0.0.0.0`` folded in (RFC 3264 §8.4)."""
    direction = sdp.stream_direction(index)
    conn = sdp.stream_connection(index)
    if conn is not None and conn.is_null:
        return Direction.of(sends=direction.sends, receives=False)
    return direction


def _stream_state(sdp: SessionDescription, index: int) -> HoldState:
    if not sdp.media[index].enabled:
        return HoldState.DISABLED
    d = effective_direction(sdp, index)
    if d is Direction.SENDRECV:
        return HoldState.ACTIVE
    if d is Direction.RECVONLY:
        return HoldState.RECVONLY
    return HoldState.ON_HOLD


def hold_state(sdp: SessionDescription, index: int | None = None) -> HoldState:
    """Hold state of one stream, or of the description (its enabled streams' common state)."""
    if index is not None:
        return _stream_state(sdp, index)
    states = {_stream_state(sdp, i) for i in range(len(sdp.media))} - {HoldState.DISABLED}
    if not states:
        return HoldState.DISABLED
    return states.pop() if len(states) == 1 else HoldState.MIXED


def is_held(sdp: SessionDescription, index: int | None = None) -> bool:
    """True when the author puts the stream (or every enabled stream) on hold."""
    return hold_state(sdp, index) is HoldState.ON_HOLD


def hold(
    sdp: SessionDescription,
    direction: Direction | None = None,
    *,
    null_address: bool = False,
) -> SessionDescription:
    """Put every enabled stream on hold (RFC 3264 §8.4).

    By default sendrecv/sendonly become ``sendonly`` and recvonly/inactive ``inactive``;
    pass ``direction`` to force one value (sendonly, recvonly or inactive). With
    ``null_address`` the RFC 2543 form is written too: every ``c=`` becomes 0.0.0.0.
    """
    if direction is Direction.SENDRECV:
        raise ValueError("sendrecv is not a hold direction")
    media = list(sdp.media)
    for i, m in enumerate(media):
        if not m.enabled:
            continue
        current = sdp.stream_direction(i)
        target = direction
        if target is None:
            target = Direction.SENDONLY if current.sends else Direction.INACTIVE
        if target is not current:
            m = m.with_direction(target)
        if null_address and m.connections:
            m = m.with_connection(_null_like(m.connections[0]))
        media[i] = m
    out = sdp.with_media(media)
    if null_address and out.connection is not None:
        out = out.with_connection(_null_like(out.connection))
    return out


def unhold(
    sdp: SessionDescription,
    direction: Direction = Direction.SENDRECV,
    *,
    connection: Connection | None = None,
) -> SessionDescription:
    """Take every enabled stream off hold: set ``direction`` (default sendrecv).

    A ``c=0.0.0.0`` (session or media level) is replaced by ``connection``; without one,
    such an SDP cannot be un-held and ``ValueError`` is raised.
    """
    media = list(sdp.media)
    for i, m in enumerate(media):
        if not m.enabled:
            continue
        if sdp.stream_direction(i) is not direction:
            m = m.with_direction(direction)
        if m.connection is not None and m.connection.is_null:
            if connection is None:
                raise ValueError("cannot un-hold c=0.0.0.0 without a connection address")
            m = m.with_connection(connection)
        media[i] = m
    out = sdp.with_media(media)
    if out.connection is not None and out.connection.is_null:
        if connection is None:
            raise ValueError("cannot un-hold c=0.0.0.0 without a connection address")
        out = out.with_connection(connection)
    return out


def _null_like(conn: Connection) -> Connection:
    if conn.is_null:
        return conn
    return Connection(conn.nettype, "IP4", NULL_ADDRESS)
