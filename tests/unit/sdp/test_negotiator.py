"""RFC 3264 offer/answer state per leg and the o= version rules (§8)."""

from __future__ import annotations

import pytest

from ng911.sdp import (
    GlareError,
    LocalOfferAnswerError,
    OaState,
    OfferAnswer,
    RemoteOfferAnswerError,
    SessionDescription,
    parse,
    subsequent_problems,
    versioned,
)

from .samples import sdp

OURS = "o=ctl 4000 1 IN IP4 192.0.2.50"
THEIRS = "o=peer 9000 5 IN IP4 192.0.2.60"


def ours(*lines: str, v: int = 1) -> SessionDescription:
    return parse(sdp(*lines, origin=OURS.replace(" 1 IN", f" {v} IN")))


def theirs(*lines: str, v: int = 5) -> SessionDescription:
    return parse(sdp(*lines, origin=THEIRS.replace(" 5 IN", f" {v} IN")))


AUDIO = ("c=IN IP4 192.0.2.50", "m=audio 4000 RTP/AVP 0")
AUDIO_B = ("c=IN IP4 192.0.2.60", "m=audio 6000 RTP/AVP 0")


def established() -> OfferAnswer:
    return OfferAnswer().send_offer(ours(*AUDIO)).receive_answer(theirs(*AUDIO_B))


def test_local_offer_then_remote_answer_reaches_done() -> None:
    oa = OfferAnswer()
    assert oa.state is OaState.NULL
    oa = oa.send_offer(ours(*AUDIO))
    assert oa.state is OaState.LOCAL_OFFER and oa.pending is not None
    oa = oa.receive_answer(theirs(*AUDIO_B))
    assert oa.state is OaState.DONE and oa.pending is None
    assert oa.local == ours(*AUDIO) and oa.remote == theirs(*AUDIO_B)


def test_remote_offer_then_local_answer_reaches_done() -> None:
    oa = OfferAnswer().receive_offer(theirs(*AUDIO_B))
    assert oa.state is OaState.REMOTE_OFFER
    oa = oa.send_answer(ours(*AUDIO))
    assert oa.state is OaState.DONE and oa.last_sent == ours(*AUDIO)


def test_remote_offer_while_local_offer_pending_is_glare_and_state_unchanged() -> None:
    oa = established().send_offer(ours("c=IN IP4 192.0.2.51", "m=audio 4000 RTP/AVP 0", v=2))
    with pytest.raises(GlareError) as info:
        oa.receive_offer(theirs(*AUDIO_B, v=6))
    assert info.value.status_hint == 491
    assert oa.state is OaState.LOCAL_OFFER


def test_second_remote_offer_while_one_is_unanswered_is_refused_with_500() -> None:
    oa = established().receive_offer(theirs(*AUDIO_B, v=6))
    with pytest.raises(RemoteOfferAnswerError) as info:
        oa.receive_offer(theirs(*AUDIO_B, v=7))
    assert info.value.status_hint == 500 and oa.state is OaState.REMOTE_OFFER


@pytest.mark.parametrize(
    ("setup", "call", "error"),
    [
        ("null", "send_answer", LocalOfferAnswerError),
        ("null", "receive_answer", RemoteOfferAnswerError),
        ("null", "cancel_offer", LocalOfferAnswerError),
        ("null", "reject_offer", LocalOfferAnswerError),
        ("done", "receive_answer", RemoteOfferAnswerError),
        ("done", "send_answer", LocalOfferAnswerError),
        ("local", "send_offer", LocalOfferAnswerError),
        ("local", "send_answer", LocalOfferAnswerError),
        ("remote", "send_offer", LocalOfferAnswerError),
        ("remote", "receive_answer", RemoteOfferAnswerError),
    ],
)
def test_illegal_transition_raises_and_leaves_state_unchanged(
    setup: str, call: str, error: type[Exception]
) -> None:
    oa = {
        "null": OfferAnswer(),
        "done": established(),
        "local": established().send_offer(ours(*AUDIO, "a=sendonly", v=2)),
        "remote": established().receive_offer(theirs(*AUDIO_B, v=6)),
    }[setup]
    before = oa
    method = getattr(oa, call)
    with pytest.raises(error):
        if call in ("cancel_offer", "reject_offer"):
            method()
        else:
            method(ours(*AUDIO, v=2))
    assert oa == before and oa.state is before.state


def test_cancel_offer_rolls_back_to_the_session() -> None:
    base = established()
    oa = base.send_offer(ours(*AUDIO, "a=sendonly", v=2)).cancel_offer()
    assert oa.state is OaState.DONE
    assert oa.local == base.local and oa.remote == base.remote
    assert oa.last_sent == ours(*AUDIO, "a=sendonly", v=2)


def test_cancel_of_initial_offer_returns_to_null() -> None:
    oa = OfferAnswer().send_offer(ours(*AUDIO)).cancel_offer()
    assert oa.state is OaState.NULL and oa.local is None


def test_reject_remote_offer_rolls_back_to_the_session() -> None:
    base = established()
    oa = base.receive_offer(theirs(*AUDIO_B, v=6)).reject_offer()
    assert oa.state is OaState.DONE and oa.remote == base.remote


def test_offer_after_cancelled_offer_still_bumps_past_it() -> None:
    oa = established()
    held = oa.prepare(ours(*AUDIO, "a=sendonly"))
    assert held.origin.sess_version == 2
    oa = oa.send_offer(held).cancel_offer()
    again = oa.prepare(ours(*AUDIO, "a=inactive"))
    assert again.origin.sess_version == 3
    assert oa.send_offer(again).state is OaState.LOCAL_OFFER


def test_answer_with_wrong_m_line_count_is_rejected() -> None:
    oa = OfferAnswer().send_offer(ours(*AUDIO, "m=video 4002 RTP/AVP 31"))
    with pytest.raises(RemoteOfferAnswerError):
        oa.receive_answer(theirs(*AUDIO_B))
    assert oa.state is OaState.LOCAL_OFFER
    remote = OfferAnswer().receive_offer(theirs(*AUDIO_B))
    with pytest.raises(LocalOfferAnswerError):
        remote.send_answer(ours(*AUDIO, "m=video 0 RTP/AVP 31"))


def test_remote_reoffer_with_fewer_m_lines_is_rejected_with_488() -> None:
    oa = OfferAnswer().send_offer(ours(*AUDIO, "m=video 4002 RTP/AVP 31"))
    oa = oa.receive_answer(theirs(*AUDIO_B, "m=video 6002 RTP/AVP 31"))
    with pytest.raises(RemoteOfferAnswerError) as info:
        oa.receive_offer(theirs(*AUDIO_B, v=6))
    assert info.value.status_hint == 488


def test_local_sdp_that_breaks_origin_continuity_is_refused() -> None:
    oa = established()
    with pytest.raises(LocalOfferAnswerError):
        oa.send_offer(ours(*AUDIO, "a=sendonly", v=1))  # changed but same version
    with pytest.raises(LocalOfferAnswerError):
        oa.send_offer(ours(*AUDIO, "a=sendonly", v=3))  # skipped a version
    with pytest.raises(LocalOfferAnswerError):
        oa.send_offer(theirs(*AUDIO, v=2))  # another session id


def test_versioned_bumps_only_when_content_changed() -> None:
    last = ours(*AUDIO, v=7)
    assert versioned(last, ours(*AUDIO, v=1)) is last
    changed = versioned(last, theirs("c=IN IP4 192.0.2.99", "m=audio 4000 RTP/AVP 0"))
    assert changed.origin.sess_version == 8
    assert changed.origin.same_session(last.origin)
    assert changed.connection.address == "192.0.2.99"


def test_versioned_without_previous_sdp_keeps_the_description() -> None:
    desc = theirs(*AUDIO_B)
    assert versioned(None, desc) is desc


def test_subsequent_problems_accepts_identical_sdp_with_same_or_next_version() -> None:
    prev = ours(*AUDIO, v=3)
    assert subsequent_problems(prev, ours(*AUDIO, v=3)) == ()
    assert subsequent_problems(prev, ours(*AUDIO, v=4)) == ()
    assert subsequent_problems(prev, ours(*AUDIO, "a=sendonly", v=4)) == ()
    assert len(subsequent_problems(prev, ours(*AUDIO, "a=sendonly", v=3))) == 1


def test_subsequent_problems_flags_dropped_m_lines() -> None:
    prev = ours(*AUDIO, "m=video 1 RTP/AVP 31", v=3)
    assert any("m-lines" in p for p in subsequent_problems(prev, ours(*AUDIO, v=4)))
