"""SDP in responses to an INVITE (RFC 3261 §13.2.1, RFC 3262 §5)."""

from __future__ import annotations

import pytest

from ng911.sdp import EarlyMediaTracker, SdpRole, early_media_answer, parse

from .samples import sdp

R = SdpRole

# invite_had_offer, status, has_sdp, reliable, already_have_answer -> role, definitive
TABLE = [
    ("first SDP in unreliable 183 is the answer", (True, 183, True, False, False), R.ANSWER, False),
    ("first SDP in reliable 183 is the definitive answer", (True, 183, True, True, False), R.ANSWER, True),
    ("first SDP in 180 is the answer too", (True, 180, True, False, False), R.ANSWER, False),
    ("answer in the 2xx", (True, 200, True, False, False), R.ANSWER, True),
    ("later SDP in 183 is ignored", (True, 183, True, False, True), R.IGNORE, False),
    ("later SDP in 2xx is ignored", (True, 200, True, False, True), R.IGNORE, True),
    ("18x without SDP", (True, 180, False, False, False), R.NONE, False),
    ("2xx without the answer", (True, 200, False, False, False), R.MISSING, True),
    ("2xx without SDP after an early answer", (True, 200, False, False, True), R.NONE, True),
    ("offerless: reliable 183 carries the offer", (False, 183, True, True, False), R.OFFER, True),
    ("offerless: 2xx carries the offer", (False, 200, True, False, False), R.OFFER, True),
    ("offerless: unreliable 183 cannot carry the offer", (False, 183, True, False, False), R.IGNORE, False),
    ("offerless: 2xx without the offer", (False, 200, False, False, False), R.MISSING, True),
    ("SDP in 100 Trying means nothing", (True, 100, True, False, False), R.IGNORE, False),
    ("SDP in a failure means nothing", (True, 486, True, False, False), R.IGNORE, False),
    ("failure without SDP", (True, 486, False, False, False), R.NONE, False),
]


@pytest.mark.parametrize(("rule", "args", "role", "definitive"), TABLE, ids=[t[0] for t in TABLE])
def test_early_media_answer_table(rule: str, args: tuple, role: SdpRole, definitive: bool) -> None:
    decision = early_media_answer(*args)
    assert (decision.role, decision.definitive) == (role, definitive)
    assert decision.reason


A1 = parse(sdp("c=IN IP4 192.0.2.7", "m=audio 7000 RTP/AVP 0", origin="o=b 1 1 IN IP4 192.0.2.7"))
A2 = parse(sdp("c=IN IP4 192.0.2.8", "m=audio 7002 RTP/AVP 0", origin="o=b 1 2 IN IP4 192.0.2.7"))


def test_tracker_keeps_first_unreliable_answer_and_ignores_identical_repeat() -> None:
    t, first = EarlyMediaTracker(invite_had_offer=True).on_response(183, A1)
    assert first.role is R.ANSWER and t.sdp == A1 and not t.definitive
    t, again = t.on_response(183, parse(bytes(A1)))
    assert again.role is R.IGNORE and not again.differs and t.sdp == A1
    t, final = t.on_response(200, A1)
    assert final.role is R.IGNORE and t.definitive and t.sdp == A1


def test_tracker_reports_a_later_different_sdp_but_keeps_the_first() -> None:
    t, _ = EarlyMediaTracker(invite_had_offer=True).on_response(183, A1)
    t, later = t.on_response(200, A2)
    assert later.role is R.IGNORE and later.differs and t.sdp == A1


def test_tracker_answer_in_reliable_183_is_definitive() -> None:
    t, d = EarlyMediaTracker(invite_had_offer=True).on_response(183, A1, reliable=True)
    assert d.role is R.ANSWER and d.definitive and t.definitive


def test_tracker_offerless_invite_takes_offer_from_reliable_183_only() -> None:
    t0 = EarlyMediaTracker(invite_had_offer=False)
    t, d = t0.on_response(183, A1)
    assert d.role is R.IGNORE and t.sdp is None
    t, d = t.on_response(183, A1, reliable=True)
    assert d.role is R.OFFER and t.role is R.OFFER and t.sdp == A1
    t, d = t.on_response(200, A1)
    assert d.role is R.IGNORE and t.definitive


def test_tracker_provisional_without_sdp_does_not_change_state() -> None:
    t0 = EarlyMediaTracker(invite_had_offer=True)
    t, d = t0.on_response(180, None)
    assert d.role is R.NONE and t == t0
