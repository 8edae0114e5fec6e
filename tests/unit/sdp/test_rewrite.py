"""3pcc rewrites: black hole, no-media offer, re-offer into a session, answer alignment."""

from __future__ import annotations

import pytest

from ng911.sdp import (
    Direction,
    OfferAnswer,
    Origin,
    align_answer,
    black_hole,
    black_hole_offer,
    is_held,
    no_media_offer,
    parse,
    reoffer,
    reoffer_mapping,
    subsequent_problems,
)

from .samples import DESK_PHONE, IPV6_OPUS, SRTP_BCF, TOTAL_CONVERSATION, sdp

CTL = Origin("ctl", "777", 1, "IN", "IP4", "192.0.2.50")


def session_with(*lines: str, v: int = 10):  # the SDP last sent to the receiving side
    return parse(sdp(*lines, origin=f"o=caller 555 {v} IN IP4 203.0.113.5"))


def from_ap(*lines: str):  # the new side's description
    return parse(sdp(*lines, origin="o=ap 9 1 IN IP4 192.0.2.70"))


def test_black_hole_keeps_media_composition_with_null_addresses() -> None:
    src = parse(SRTP_BCF)
    out = black_hole(src)
    assert out.connection.is_null and out.media[0].connection.is_null
    assert [(m.media, m.port, m.formats) for m in out.media] == [
        (m.media, m.port, m.formats) for m in src.media
    ]
    assert is_held(out)


def test_black_hole_of_ipv6_sdp_uses_ipv4_null_address() -> None:
    out = black_hole(parse(IPV6_OPUS), origin=CTL)
    assert out.connection.addrtype == "IP4" and out.connection.address == "0.0.0.0"
    assert out.origin == CTL


def test_black_hole_offer_has_one_codec_nonzero_port_and_null_address() -> None:
    offer = black_hole_offer(CTL, ("audio", "video", "text"), port=30000)
    again = parse(bytes(offer))
    assert again == offer
    assert [m.media for m in again.media] == ["audio", "video", "text"]
    assert all(len(m.formats) == 1 and m.port == 30000 for m in again.media)
    assert again.connection.is_null and again.origin == CTL
    assert again.media[2].rtpmaps["98"].encoding == "t140"


def test_black_hole_offer_refuses_port_zero_and_unknown_media() -> None:
    with pytest.raises(ValueError):
        black_hole_offer(CTL, port=0)
    with pytest.raises(ValueError):
        black_hole_offer(CTL, ("message",))


def test_no_media_offer_has_no_m_lines_and_reparses() -> None:
    offer = no_media_offer(CTL)
    assert parse(bytes(offer)) == offer and offer.media == () and offer.origin == CTL


def test_reoffer_keeps_session_id_and_bumps_version() -> None:
    session = session_with("c=IN IP4 203.0.113.5", "m=audio 5004 RTP/AVP 0")
    new = from_ap("c=IN IP4 192.0.2.70", "m=audio 7000 RTP/AVP 8")
    out = reoffer(session, new)
    assert out.origin.same_session(session.origin)
    assert out.origin.sess_version == 11
    assert out.connection.address == "192.0.2.70" and out.media[0].port == 7000


def test_reoffer_of_identical_content_is_the_session_itself() -> None:
    session = session_with("c=IN IP4 192.0.2.70", "m=audio 7000 RTP/AVP 8")
    new = from_ap("c=IN IP4 192.0.2.70", "m=audio 7000 RTP/AVP 8")
    assert reoffer(session, new) is session


def test_reoffer_maps_streams_by_type_onto_existing_order() -> None:
    session = session_with(
        "c=IN IP4 203.0.113.5", "m=audio 1 RTP/AVP 0", "m=video 2 RTP/AVP 31", "m=text 3 RTP/AVP 98",
        "a=rtpmap:98 t140/1000",
    )
    new = from_ap(
        "c=IN IP4 192.0.2.70", "m=text 70 RTP/AVP 98", "a=rtpmap:98 t140/1000",
        "m=video 71 RTP/AVP 31", "m=audio 72 RTP/AVP 0",
    )
    out = reoffer(session, new)
    assert [(m.media, m.port) for m in out.media] == [("audio", 72), ("video", 71), ("text", 70)]
    assert reoffer_mapping(session, new) == (2, 1, 0)


def test_reoffer_disables_lines_without_counterpart_keeping_type_and_proto() -> None:
    session = parse(TOTAL_CONVERSATION)
    new = from_ap("c=IN IP4 192.0.2.70", "m=audio 7000 RTP/AVP 0")
    out = reoffer(session, new)
    assert [(m.media, m.port, m.proto, len(m.formats)) for m in out.media] == [
        ("audio", 7000, "RTP/AVP", 1),
        ("video", 0, "RTP/AVP", 1),
        ("text", 0, "RTP/AVP", 1),
    ]
    assert out.media[1].formats == ("96",) and out.media[2].formats == ("100",)


def test_reoffer_appends_new_streams_at_the_end() -> None:
    session = session_with("c=IN IP4 203.0.113.5", "m=audio 1 RTP/AVP 0")
    new = from_ap(
        "c=IN IP4 192.0.2.70", "m=video 71 RTP/AVP 31", "m=audio 72 RTP/AVP 0",
        "m=audio 73 RTP/AVP 8",
    )
    out = reoffer(session, new)
    assert [(m.media, m.port) for m in out.media] == [("audio", 72), ("video", 71), ("audio", 73)]


def test_reoffer_ignores_disabled_streams_of_the_new_side() -> None:
    session = session_with("c=IN IP4 203.0.113.5", "m=audio 1 RTP/AVP 0")
    new = from_ap("c=IN IP4 192.0.2.70", "m=audio 0 RTP/AVP 0", "m=video 0 RTP/AVP 31",
                  "m=audio 74 RTP/AVP 0")
    out = reoffer(session, new)
    assert [(m.media, m.port) for m in out.media] == [("audio", 74)]


def test_reoffer_reuses_a_disabled_slot_of_the_same_type() -> None:
    session = session_with("c=IN IP4 203.0.113.5", "m=audio 1 RTP/AVP 0", "m=video 0 RTP/AVP 31")
    new = from_ap("c=IN IP4 192.0.2.70", "m=audio 72 RTP/AVP 0", "m=video 75 RTP/AVP 34")
    out = reoffer(session, new)
    assert [(m.media, m.port) for m in out.media] == [("audio", 72), ("video", 75)]


def test_reoffer_keeps_new_sides_lines_byte_identical() -> None:
    session = session_with("c=IN IP4 203.0.113.5", "m=audio 1 RTP/AVP 0")
    new = parse(DESK_PHONE)
    body = bytes(reoffer(session, new))
    assert body == DESK_PHONE.replace(
        b"o=- 3891474221 3891474221 IN IP4 192.0.2.10", b"o=caller 555 11 IN IP4 203.0.113.5"
    )


def test_reoffer_is_accepted_by_the_receiving_legs_negotiator() -> None:
    session = parse(TOTAL_CONVERSATION)
    leg = OfferAnswer().send_offer(session).receive_answer(
        parse(sdp("c=IN IP4 1.1.1.1", "m=audio 1 RTP/AVP 0", "m=video 0 RTP/AVP 96",
                  "m=text 0 RTP/AVP 100"))
    )
    out = reoffer(session, parse(DESK_PHONE))
    assert subsequent_problems(session, out) == ()
    assert leg.send_offer(out).pending == out


def test_align_answer_trims_and_reorders_to_the_offer() -> None:
    offer = from_ap("c=IN IP4 192.0.2.70", "m=video 71 RTP/AVP 31", "m=audio 72 RTP/AVP 0")
    answer = session_with(
        "c=IN IP4 203.0.113.5", "m=audio 5004 RTP/AVP 0", "m=video 5006 RTP/AVP 31",
        "m=text 0 RTP/AVP 98",
    )
    out = align_answer(answer, offer)
    assert [(m.media, m.port) for m in out.media] == [("video", 5006), ("audio", 5004)]
    assert out.origin == answer.origin


def test_align_answer_rejects_missing_and_disabled_offer_streams_with_port_zero() -> None:
    offer = from_ap("c=IN IP4 192.0.2.70", "m=audio 0 RTP/AVP 0", "m=video 71 RTP/AVP 31",
                    "m=audio 72 RTP/AVP 8")
    answer = session_with("c=IN IP4 203.0.113.5", "m=audio 5004 RTP/AVP 8")
    out = align_answer(answer, offer)
    assert [(m.media, m.port) for m in out.media] == [("audio", 0), ("video", 0), ("audio", 5004)]


def test_align_answer_that_already_matches_is_unchanged() -> None:
    offer = from_ap("c=IN IP4 192.0.2.70", "m=audio 72 RTP/AVP 0")
    answer = session_with("c=IN IP4 203.0.113.5", "m=audio 5004 RTP/AVP 0", "a=recvonly")
    assert align_answer(answer, offer) is answer
    assert align_answer(answer, offer).media[0].direction is Direction.RECVONLY
