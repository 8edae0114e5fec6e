"""Hold and un-hold (RFC 3264 §8.4), old c=0.0.0.0 form included."""

from __future__ import annotations

import pytest

from ng911.sdp import (
    Connection,
    Direction,
    HoldState,
    effective_direction,
    hold,
    hold_state,
    is_held,
    parse,
    unhold,
)

from .samples import DESK_PHONE, LEGACY_HOLD_LF, TOTAL_CONVERSATION, sdp

C = "c=IN IP4 192.0.2.1"


@pytest.mark.parametrize(
    ("attr", "state"),
    [
        ("a=sendrecv", HoldState.ACTIVE),
        ("a=sendonly", HoldState.ON_HOLD),
        ("a=inactive", HoldState.ON_HOLD),
        ("a=recvonly", HoldState.RECVONLY),
    ],
)
def test_hold_state_follows_direction_attribute(attr: str, state: HoldState) -> None:
    desc = parse(sdp(C, "m=audio 4000 RTP/AVP 0", attr))
    assert hold_state(desc, 0) is state and hold_state(desc) is state


def test_stream_without_direction_attribute_is_active() -> None:
    assert hold_state(parse(sdp(C, "m=audio 4000 RTP/AVP 0"))) is HoldState.ACTIVE


def test_session_level_direction_applies_when_media_has_none() -> None:
    desc = parse(sdp(C, "a=sendonly", "m=audio 4000 RTP/AVP 0"))
    assert is_held(desc, 0)


def test_media_level_direction_overrides_session_level() -> None:
    desc = parse(sdp(C, "a=sendonly", "m=audio 4000 RTP/AVP 0", "a=sendrecv"))
    assert hold_state(desc, 0) is HoldState.ACTIVE


def test_null_connection_reads_as_hold() -> None:
    desc = parse(LEGACY_HOLD_LF)
    assert is_held(desc) and effective_direction(desc, 0) is Direction.SENDONLY
    desc = parse(sdp("c=IN IP4 0.0.0.0", "m=audio 4000 RTP/AVP 0", "a=recvonly"))
    assert effective_direction(desc, 0) is Direction.INACTIVE


def test_media_level_null_connection_holds_only_that_stream() -> None:
    desc = parse(sdp(C, "m=audio 4000 RTP/AVP 0", "m=video 4002 RTP/AVP 31", "c=IN IP4 0.0.0.0"))
    assert hold_state(desc, 0) is HoldState.ACTIVE and hold_state(desc, 1) is HoldState.ON_HOLD
    assert hold_state(desc) is HoldState.MIXED and not is_held(desc)


def test_disabled_streams_do_not_count() -> None:
    desc = parse(sdp(C, "m=audio 4000 RTP/AVP 0", "a=sendonly", "m=video 0 RTP/AVP 31"))
    assert hold_state(desc, 1) is HoldState.DISABLED and is_held(desc)
    assert hold_state(parse(sdp())) is HoldState.DISABLED


def test_hold_marks_sendrecv_streams_sendonly_and_recvonly_streams_inactive() -> None:
    desc = parse(sdp(C, "m=audio 4000 RTP/AVP 0", "m=video 4002 RTP/AVP 31", "a=recvonly"))
    held = hold(desc)
    assert held.media[0].direction is Direction.SENDONLY
    assert held.media[1].direction is Direction.INACTIVE
    assert is_held(held)


def test_hold_can_force_inactive_or_recvonly() -> None:
    desc = parse(TOTAL_CONVERSATION)
    assert {m.direction for m in hold(desc, Direction.INACTIVE).media} == {Direction.INACTIVE}
    assert hold_state(hold(desc, Direction.RECVONLY)) is HoldState.RECVONLY
    with pytest.raises(ValueError):
        hold(desc, Direction.SENDRECV)


def test_hold_replaces_existing_attribute_in_place_and_keeps_other_lines() -> None:
    desc = parse(TOTAL_CONVERSATION)
    held = hold(desc)
    for before, after in zip(desc.media, held.media):
        assert [type(x) for x in before.lines] == [type(x) for x in after.lines]
        assert before.formats == after.formats and before.port == after.port


def test_hold_with_null_address_writes_rfc2543_form() -> None:
    held = hold(parse(DESK_PHONE), null_address=True)
    assert held.connection.is_null and held.media[0].direction is Direction.SENDONLY
    assert parse(bytes(held)).connection == Connection("IN", "IP4", "0.0.0.0")


def test_unhold_restores_sendrecv() -> None:
    desc = parse(DESK_PHONE)
    back = unhold(hold(desc))
    assert hold_state(back) is HoldState.ACTIVE


def test_unhold_of_null_connection_needs_an_address() -> None:
    desc = parse(LEGACY_HOLD_LF)
    with pytest.raises(ValueError):
        unhold(desc)
    back = unhold(desc, connection=Connection("IN", "IP4", "192.0.2.99"))
    assert back.connection.address == "192.0.2.99" and not is_held(back)
