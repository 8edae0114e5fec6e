"""RFC 3725 flows I-IV and §8 early media, step by step.

Each participant's SDP is written here as that participant would send it; the controller's
SDP comes from the toolkit. Every SDP the controller sends is checked the way the
receiving participant checks it: the participant's own offer/answer machine accepts it
(m-line counts, RFC 3264 §6/§8) and, after the first, it continues the o= the participant
has seen from the controller (``subsequent_problems``). Assertions are on parsed fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ng911.sdp import (
    EarlyMediaTracker,
    OfferAnswer,
    Origin,
    SdpRole,
    SessionDescription,
    align_answer,
    black_hole,
    black_hole_offer,
    have_common_codec,
    is_held,
    no_media_offer,
    parse,
    reoffer,
    subsequent_problems,
)

from .samples import crlf

CTL_A = Origin("controller", "8001", 1, "IN", "IP4", "192.0.2.1")


@dataclass
class Participant:
    """A plain RFC 3264 user agent as seen from its side of the leg."""

    name: str
    oa: OfferAnswer = field(default_factory=OfferAnswer)
    seen: SessionDescription | None = None  # last SDP received from the controller

    def _accept(self, desc: SessionDescription) -> None:
        if self.seen is not None:
            assert subsequent_problems(self.seen, desc) == (), f"{self.name} rejects {desc.origin}"
        self.seen = parse(bytes(desc))
        assert self.seen == desc  # what goes on the wire parses back to the same description

    def receives_offer(self, desc: SessionDescription) -> None:
        self._accept(desc)
        self.oa = self.oa.receive_offer(desc)

    def receives_answer(self, desc: SessionDescription) -> None:
        self._accept(desc)
        self.oa = self.oa.receive_answer(desc)

    def sends_offer(self, raw: bytes) -> SessionDescription:
        desc = parse(raw)
        self.oa = self.oa.send_offer(desc)
        return desc

    def sends_answer(self, raw: bytes) -> SessionDescription:
        desc = parse(raw)
        self.oa = self.oa.send_answer(desc)
        return desc


def layout(desc: SessionDescription) -> list[tuple[str, int]]:
    return [(m.media, m.port) for m in desc.media]


# --- the participants' SDPs -------------------------------------------------------------

A_OFFER1 = crlf(  # A: audio + video
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 198.51.100.10",
    "s=-",
    "c=IN IP4 198.51.100.10",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0 8 101",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "m=video 51372 RTP/AVP 96",
    "a=rtpmap:96 H264/90000",
    "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1",
)

B_ANSWER1 = crlf(  # B answers A's offer1 (Flow I)
    "v=0",
    "o=bob 2808844564 2808844564 IN IP4 203.0.113.20",
    "s=-",
    "c=IN IP4 203.0.113.20",
    "t=0 0",
    "m=audio 60000 RTP/AVP 0 101",
    "a=rtpmap:101 telephone-event/8000",
    "m=video 0 RTP/AVP 96",
)

B_OFFER2 = crlf(  # B (an answer point): real-time text first, then audio; no video
    "v=0",
    "o=ap1 1122334455 1 IN IP4 203.0.113.20",
    "s=-",
    "c=IN IP4 203.0.113.20",
    "t=0 0",
    "m=text 60002 RTP/AVP 98",
    "a=rtpmap:98 t140/1000",
    "m=audio 60000 RTP/AVP 8 0 101",
    "a=rtpmap:101 telephone-event/8000",
)


# --- Flow I: INVITE without SDP, offer in 200, answer in ACK ----------------------------


def test_flow_i_controller_relays_offer_and_answer_unchanged() -> None:
    a, b = Participant("A"), Participant("B")
    offer1 = a.sends_offer(A_OFFER1)  # (2) 200 offer1
    b.receives_offer(offer1)  # (3) INVITE offer1
    answer1 = b.sends_answer(B_ANSWER1)  # (4) 200 answer1
    a.receives_answer(answer1)  # (6) ACK answer1
    assert bytes(offer1) == A_OFFER1 and bytes(answer1) == B_ANSWER1
    assert a.oa.state == b.oa.state == "done"
    assert have_common_codec(offer1, answer1)
    assert layout(answer1) == [("audio", 60000), ("video", 0)]


# --- Flow II: black-hole offer, then re-INVITE A with B's SDP ---------------------------

A_ANSWER_SDP2 = crlf(  # A's answer to the black-hole sdp1: one audio line
    "v=0",
    "o=alice 2890844527 2890844527 IN IP4 198.51.100.10",
    "s=-",
    "c=IN IP4 198.51.100.10",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0",
)

B_ANSWER_SDP3 = crlf(  # B answers sdp2 (A's SDP used as an offer)
    "v=0",
    "o=bob 2808844565 2808844565 IN IP4 203.0.113.20",
    "s=-",
    "c=IN IP4 203.0.113.20",
    "t=0 0",
    "m=audio 60000 RTP/AVP 0",
)

A_ANSWER_SDP2B = crlf(  # A answers the re-INVITE; its media did not change
    "v=0",
    "o=alice 2890844527 2890844527 IN IP4 198.51.100.10",
    "s=-",
    "c=IN IP4 198.51.100.10",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0",
)


def test_flow_ii_black_hole_then_reinvite_with_bs_sdp() -> None:
    a, b = Participant("A"), Participant("B")
    sdp1 = black_hole_offer(CTL_A, ("audio",), port=31114)  # (1) INVITE sdp1
    a.receives_offer(sdp1)
    assert sdp1.connection.is_null and is_held(sdp1)
    assert layout(sdp1) == [("audio", 31114)] and len(sdp1.media[0].formats) == 1
    sdp2 = a.sends_answer(A_ANSWER_SDP2)  # (2) 200 sdp2
    b.receives_offer(sdp2)  # (4) INVITE sdp2
    sdp3 = b.sends_answer(B_ANSWER_SDP3)  # (5) 200 sdp3
    offer = reoffer(sdp1, sdp3)  # (7) INVITE sdp3 (as A's session)
    a.receives_offer(offer)
    assert offer.origin.same_session(CTL_A) and offer.origin.sess_version == 2
    assert layout(offer) == [("audio", 60000)]
    assert offer.connection.address == "203.0.113.20" and not is_held(offer)
    a.sends_answer(A_ANSWER_SDP2B)  # (8) 200 sdp2
    assert a.oa.state == "done" and a.oa.remote == offer


# --- Flow III: held answer1, then offer2' / answer2 rewrites ----------------------------

A_ANSWER2P = crlf(  # A answers offer2' (audio, video port 0, text appended) — no text support
    "v=0",
    "o=alice 2890844526 2890844527 IN IP4 198.51.100.10",
    "s=-",
    "c=IN IP4 198.51.100.10",
    "t=0 0",
    "m=audio 49170 RTP/AVP 8 101",
    "a=rtpmap:101 telephone-event/8000",
    "m=video 0 RTP/AVP 96",
    "m=text 0 RTP/AVP 98",
)


def test_flow_iii_reorder_and_trim_between_a_and_b() -> None:
    a, b = Participant("A"), Participant("B")
    offer1 = a.sends_offer(A_OFFER1)  # (2) 200 offer1
    answer1 = black_hole(offer1, origin=CTL_A)  # (3) ACK answer1: held, same composition
    a.receives_answer(answer1)
    assert layout(answer1) == layout(offer1)
    assert answer1.connection.is_null and answer1.origin == CTL_A
    offer2 = b.sends_offer(B_OFFER2)  # (5) 200 offer2
    assert have_common_codec(offer1, offer2)  # else: terminate the call
    offer2p = reoffer(answer1, offer2)  # (6) INVITE offer2'
    a.receives_offer(offer2p)
    assert offer2p.origin.same_session(CTL_A) and offer2p.origin.sess_version == 2
    assert layout(offer2p) == [("audio", 60000), ("video", 0), ("text", 60002)]
    assert offer2p.media[1].proto == "RTP/AVP" and offer2p.media[1].formats == ("96",)
    assert offer2p.connection.address == "203.0.113.20"
    answer2p = a.sends_answer(A_ANSWER2P)  # (7) 200 answer2'
    answer2 = align_answer(answer2p, offer2)  # (8) ACK answer2
    b.receives_answer(answer2)
    assert layout(answer2) == [("text", 0), ("audio", 49170)]
    assert answer2.stream_connection(1).address == "198.51.100.10"
    assert answer2.media[0].media == "text" and answer2.media[0].proto == "RTP/AVP"
    assert a.oa.state == b.oa.state == "done"


def test_flow_iii_controller_detects_offers_with_no_codec_in_common() -> None:
    g729_only = parse(
        crlf(
            "v=0",
            "o=ap2 1 1 IN IP4 203.0.113.30",
            "s=-",
            "c=IN IP4 203.0.113.30",
            "t=0 0",
            "m=audio 60000 RTP/AVP 18 101",
            "a=rtpmap:101 telephone-event/8000",
        )
    )
    assert not have_common_codec(parse(A_OFFER1), g729_only)


# --- Flow IV: offer1 without m-lines; offer2' only changes the o= line ------------------

A_ANSWER1_NO_MEDIA = crlf(
    "v=0",
    "o=alice 2890844530 2890844530 IN IP4 198.51.100.10",
    "s=-",
    "t=0 0",
)

A_ANSWER2P_IV = crlf(
    "v=0",
    "o=alice 2890844530 2890844531 IN IP4 198.51.100.10",
    "s=-",
    "c=IN IP4 198.51.100.10",
    "t=0 0",
    "m=text 0 RTP/AVP 98",
    "m=audio 49170 RTP/AVP 8",
)


def test_flow_iv_no_media_offer_then_origin_only_rewrite() -> None:
    a, b = Participant("A"), Participant("B")
    offer1 = no_media_offer(CTL_A)  # (1) INVITE offer1, no m-lines
    a.receives_offer(offer1)
    assert offer1.media == ()
    a.sends_answer(A_ANSWER1_NO_MEDIA)  # (2) 200 answer1, no media
    offer2 = b.sends_offer(B_OFFER2)  # (5) 200 offer2
    offer2p = reoffer(offer1, offer2)  # (6) INVITE offer2'
    a.receives_offer(offer2p)
    assert offer2p.origin.same_session(CTL_A) and offer2p.origin.sess_version == 2
    assert offer2p.content() == offer2.content()  # nothing but o= changed
    assert layout(offer2p) == layout(offer2)
    answer2p = a.sends_answer(A_ANSWER2P_IV)  # (7) 200 answer2'
    answer2 = align_answer(answer2p, offer2)  # (8) ACK answer2
    b.receives_answer(answer2)
    assert answer2 is answer2p and layout(answer2) == [("text", 0), ("audio", 49170)]


# --- §8 early media: reliable 183s, UPDATE to A, answer in PRACK to B --------------------

A_EARLY_ANSWER1 = crlf(
    "v=0",
    "o=alice 2890844540 2890844540 IN IP4 198.51.100.10",
    "s=-",
    "t=0 0",
)

A_UPDATE_ANSWER = crlf(
    "v=0",
    "o=alice 2890844540 2890844541 IN IP4 198.51.100.10",
    "s=-",
    "c=IN IP4 198.51.100.10",
    "t=0 0",
    "m=text 0 RTP/AVP 98",
    "m=audio 49170 RTP/AVP 0",
)


def test_early_media_flow_through_reliable_provisionals() -> None:
    a, b = Participant("A"), Participant("B")
    offer1 = no_media_offer(CTL_A)  # (1) INVITE offer1 (no media) to A
    a.receives_offer(offer1)
    track_a = EarlyMediaTracker(invite_had_offer=True)
    track_a, d = track_a.on_response(183, a.sends_answer(A_EARLY_ANSWER1), reliable=True)
    assert d.role is SdpRole.ANSWER and d.definitive  # (2) reliable 183 answer1
    track_b = EarlyMediaTracker(invite_had_offer=False)  # (4) INVITE to B without SDP
    track_b, d = track_b.on_response(183, b.sends_offer(B_OFFER2), reliable=True)
    assert d.role is SdpRole.OFFER  # (5) reliable 183 offer2
    offer2p = reoffer(offer1, track_b.sdp)  # (6) UPDATE offer2' to A
    a.receives_offer(offer2p)
    assert offer2p.origin.sess_version == 2 and layout(offer2p) == [("text", 60002), ("audio", 60000)]
    answer2 = align_answer(a.sends_answer(A_UPDATE_ANSWER), track_b.sdp)  # (7) 200 UPDATE
    b.receives_answer(answer2)  # (8) PRACK answer2
    assert layout(answer2) == [("text", 0), ("audio", 49170)]
    _, d = track_b.on_response(200, None)  # B answers the call: 200 without SDP
    assert d.role is SdpRole.NONE and d.definitive
    _, d = track_a.on_response(200, parse(A_EARLY_ANSWER1))  # A's 200 repeats answer1
    assert d.role is SdpRole.IGNORE and not d.differs


@pytest.mark.parametrize("reliable", [False, True])
def test_early_answer_from_answer_point_is_kept_and_200_repeat_ignored(reliable: bool) -> None:
    caller_offer = parse(A_OFFER1)  # caller's INVITE offer, passed to the AP unchanged
    ap = Participant("AP")
    ap.receives_offer(caller_offer)
    early = ap.sends_answer(B_ANSWER1)
    track = EarlyMediaTracker(invite_had_offer=True)
    track, d = track.on_response(183, early, reliable=reliable)
    assert d.role is SdpRole.ANSWER and d.definitive is reliable and track.sdp == early
    track, d = track.on_response(200, parse(B_ANSWER1))
    assert d.role is SdpRole.IGNORE and not d.differs and track.definitive
