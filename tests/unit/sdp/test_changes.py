"""Re-INVITE changes a participant must accept (RFC 3725 §6 list, as in the 2020 IMG table)."""

from __future__ import annotations

import pytest

from ng911.sdp import (
    ChangeKind as K,
    OfferAnswer,
    classify_change,
    diff,
    parse,
)

from .samples import sdp

BASE = ("c=IN IP4 192.0.2.10", "m=audio 4000 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000")


def v(n: int, *lines: str):
    return parse(sdp(*lines, origin=f"o=peer 42 {n} IN IP4 192.0.2.10"))


# (row of the participant table, new description, expected kinds)
ROWS = [
    (
        "re-INVITE that changes the port to which media should be sent",
        ("c=IN IP4 192.0.2.10", "m=audio 4002 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000"),
        {K.PORT},
    ),
    (
        "re-INVITE that changes the connection address",
        ("c=IN IP4 192.0.2.11", "m=audio 4000 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000"),
        {K.ADDRESS},
    ),
    (
        "re-INVITE that adds a media stream",
        (*BASE, "m=video 4002 RTP/AVP 31"),
        {K.STREAM_ADDED},
    ),
    (
        "re-INVITE that removes a media stream (port zero)",
        ("c=IN IP4 192.0.2.10", "m=audio 0 RTP/AVP 0"),
        {K.STREAM_REMOVED},
    ),
    (
        "re-INVITE that adds a codec amongst the set in a media stream",
        ("c=IN IP4 192.0.2.10", "m=audio 4000 RTP/AVP 0 8 101", "a=rtpmap:101 telephone-event/8000"),
        {K.CODEC_ADDED},
    ),
    (
        "re-INVITE that removes a codec",
        ("c=IN IP4 192.0.2.10", "m=audio 4000 RTP/AVP 0"),
        {K.CODEC_REMOVED},
    ),
    (
        "connection address of zero (old hold)",
        ("c=IN IP4 0.0.0.0", "m=audio 4000 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000"),
        {K.HOLD},
    ),
    (
        "hold with sendonly",
        (*BASE, "a=sendonly"),
        {K.DIRECTION, K.HOLD},
    ),
    (
        "listen-only with recvonly is a direction change, not a hold",
        (*BASE, "a=recvonly"),
        {K.DIRECTION},
    ),
    (
        "other attribute changed",
        (*BASE, "a=ptime:30"),
        {K.OTHER},
    ),
    (
        "IPv6 move changes the address",
        ("c=IN IP6 2001:db8::10", "m=audio 4000 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000"),
        {K.ADDRESS},
    ),
]


@pytest.mark.parametrize(("row", "lines", "kinds"), ROWS, ids=[r[0] for r in ROWS])
def test_participant_table_row_is_classified(row: str, lines: tuple[str, ...], kinds: set) -> None:
    assert classify_change(v(1, *BASE), v(2, *lines)) == kinds


@pytest.mark.parametrize(("row", "lines", "kinds"), ROWS, ids=[r[0] for r in ROWS])
def test_participant_table_row_is_a_valid_reoffer(row: str, lines: tuple[str, ...], kinds: set) -> None:
    leg = OfferAnswer().receive_offer(v(1, *BASE)).send_answer(
        parse(sdp("c=IN IP4 192.0.2.50", "m=audio 6000 RTP/AVP 0", origin="o=ctl 1 1 IN IP4 192.0.2.50"))
    )
    assert leg.receive_offer(v(2, *lines)).pending == v(2, *lines)


def test_unhold_is_classified() -> None:
    held = v(2, *BASE, "a=sendonly")
    assert classify_change(held, v(3, *BASE)) == {K.DIRECTION, K.UNHOLD}
    legacy = v(2, "c=IN IP4 0.0.0.0", *BASE[1:])
    assert classify_change(legacy, v(3, *BASE)) == {K.UNHOLD}


def test_reenabled_slot_is_a_stream_added() -> None:
    old = v(1, *BASE, "m=video 0 RTP/AVP 31")
    assert classify_change(old, v(2, *BASE, "m=video 4002 RTP/AVP 31")) == {K.STREAM_ADDED}


def test_same_description_has_no_change_whatever_the_version() -> None:
    assert classify_change(v(1, *BASE), v(2, *BASE)) == frozenset()


def test_diff_names_stream_and_detail() -> None:
    changes = diff(v(1, *BASE), v(2, "c=IN IP4 192.0.2.11", "m=audio 4002 RTP/AVP 8"))
    assert [(c.kind, c.stream) for c in changes] == [
        (K.PORT, 0), (K.ADDRESS, 0), (K.CODEC_ADDED, 0), (K.CODEC_REMOVED, 0),
    ]
    assert changes[1].detail == "192.0.2.10 -> 192.0.2.11"
    assert changes[2].detail == "PCMA/8000"
    assert changes[3].detail == "PCMU/8000 telephone-event/8000"


def test_session_level_change_without_stream_change_is_other() -> None:
    changes = diff(v(1, *BASE), v(2, "c=IN IP4 192.0.2.10", "b=AS:64", *BASE[1:]))
    assert [(c.kind, c.stream) for c in changes] == [(K.OTHER, None)]
