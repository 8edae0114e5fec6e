"""Shared bits of the call controller tests (imported relatively, like tests/unit/sdp/samples.py)."""
from __future__ import annotations

from ng911 import sdp as sdplib
from ng911.call.sdpbody import sdp_of
from ng911.sip.body import walk
from ng911.sip.message import Message
from ng911.testing.psap import CALLER_HOST, make_sdp

#: the caller's offer in most tests: audio + real-time text, its own o= session 555
CALLER_OFFER = make_sdp(CALLER_HOST, 4000, user="caller", sess_id=555, media=("audio", "text"))


def parsed(msg: Message) -> sdplib.SessionDescription:
    """The SDP of a message (alone or in a multipart body), parsed."""
    body = sdp_of(msg)
    assert body is not None, f"no SDP in {msg!r}"
    return sdplib.parse(body)


def part_types(msg: Message) -> list[str]:
    return [p.mime_type or "" for p in walk(msg)]


def ports(desc: sdplib.SessionDescription) -> list[tuple[str, int]]:
    return [(m.media, m.port) for m in desc.media]
