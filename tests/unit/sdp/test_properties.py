"""Properties over generated valid SDPs: round trips, re-offers, alignment, classification."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ng911.sdp import (
    ChangeKind,
    HoldState,
    OfferAnswer,
    SessionDescription,
    align_answer,
    classify_change,
    have_common_codec,
    hold,
    hold_state,
    parse,
    reoffer,
    serialize,
    subsequent_problems,
)

from .strategies import descriptions

# Generating two descriptions costs ~40 ms an example; 100 examples keep this file ~15 s.
SDP = settings(max_examples=100, deadline=None)


@SDP
@given(descriptions(), st.booleans())
def test_serialise_parse_round_trip_is_identity(desc: SessionDescription, lf_only: bool) -> None:
    wire = serialize(desc)
    if lf_only:
        wire = wire.replace(b"\r\n", b"\n")
    parsed = parse(wire)
    assert parsed == desc
    assert serialize(parsed) == wire


@SDP
@given(descriptions(), descriptions())
def test_reoffer_is_a_valid_offer_for_the_receiving_session(
    session: SessionDescription, new: SessionDescription
) -> None:
    out = reoffer(session, new)
    # re-parseable, and the round trip is the identity
    wire = serialize(out)
    again = parse(wire)
    assert again == out and serialize(again) == wire
    # o=: same session, version strictly greater unless nothing changed at all
    assert out.origin.same_session(session.origin)
    assert out.origin.sess_id == session.origin.sess_id
    if out.content() == session.content():
        assert out is session
    else:
        assert out.origin.sess_version == session.origin.sess_version + 1
    # pre-existing m-lines kept in number and order
    assert len(out.media) >= len(session.media)
    assert [m.media for m in out.media[: len(session.media)]] == [m.media for m in session.media]
    assert subsequent_problems(session, out) == ()
    # every enabled stream of the new side is offered exactly once, unchanged
    offered = [m for m in out.media if m.enabled]
    assert sorted(map(bytes_of, offered)) == sorted(bytes_of(m) for m in new.media if m.enabled)
    # the receiving side's offer/answer machine accepts it as a re-offer
    leg = OfferAnswer().send_offer(session).receive_answer(session)
    assert leg.receive_offer(out).pending == out


@SDP
@given(descriptions(), descriptions())
def test_align_answer_puts_each_stream_back_where_the_offer_had_it(
    session: SessionDescription, new: SessionDescription
) -> None:
    echoed = reoffer(session, new)  # stands in for the answer: same layout as the re-offer
    aligned = align_answer(echoed, new)
    assert [m.media for m in aligned.media] == [m.media for m in new.media]
    for mine, theirs in zip(aligned.media, new.media):
        if theirs.enabled:
            assert mine == theirs
        else:
            assert mine.port == 0
    assert parse(serialize(aligned)) == aligned


@SDP
@given(descriptions(), descriptions())
def test_common_codec_check_is_symmetric(a: SessionDescription, b: SessionDescription) -> None:
    assert have_common_codec(a, b) == have_common_codec(b, a)


@SDP
@given(descriptions())
def test_hold_is_classified_as_hold_and_nothing_else(desc: SessionDescription) -> None:
    assert classify_change(desc, desc) == frozenset()
    kinds = classify_change(desc, hold(desc))
    assert kinds <= {ChangeKind.DIRECTION, ChangeKind.HOLD}
    active = any(
        hold_state(desc, i) in (HoldState.ACTIVE, HoldState.RECVONLY) for i in range(len(desc.media))
    )
    assert (ChangeKind.HOLD in kinds) == active
    assert hold_state(hold(desc)) in (HoldState.ON_HOLD, HoldState.DISABLED)


def bytes_of(section: object) -> bytes:
    return SessionDescription((), (section,)).to_bytes()  # type: ignore[arg-type]
