"""Codec intersection (RFC 3725 §4.3: detect offers with no codec in common)."""

from __future__ import annotations

from ng911.sdp import have_common_codec, intersect, parse

from .samples import DESK_PHONE, IPV6_OPUS, TOTAL_CONVERSATION, WEBRTC_GATEWAY, sdp

C = "c=IN IP4 192.0.2.1"


def d(*lines: str):
    return parse(sdp(C, *lines))


def test_static_payload_types_compare_by_number() -> None:
    a = d("m=audio 1 RTP/AVP 0 8")
    b = d("m=audio 2 RTP/AVP 8 18")
    result = intersect(a, b)
    assert [(c.name, c.format_a, c.format_b) for c in result.streams[0].common] == [
        ("PCMA/8000", "8", "8")
    ]
    assert have_common_codec(a, b)


def test_dynamic_payload_types_compare_by_rtpmap_case_insensitively() -> None:
    a = d("m=audio 1 RTP/AVP 111", "a=rtpmap:111 opus/48000/2")
    b = d("m=audio 2 RTP/AVP 96", "a=rtpmap:96 OPUS/48000/2")
    common = intersect(a, b).streams[0].common
    assert [(c.format_a, c.format_b) for c in common] == [("111", "96")]


def test_dynamic_codec_with_other_clock_rate_or_channels_is_different() -> None:
    a = d("m=audio 1 RTP/AVP 111", "a=rtpmap:111 opus/48000/2")
    assert not have_common_codec(a, d("m=audio 2 RTP/AVP 111", "a=rtpmap:111 opus/48000/1"))
    assert not have_common_codec(a, d("m=audio 2 RTP/AVP 111", "a=rtpmap:111 opus/16000/2"))


def test_same_dynamic_number_with_other_encoding_is_not_common() -> None:
    a = d("m=audio 1 RTP/AVP 96", "a=rtpmap:96 AMR/8000")
    b = d("m=audio 2 RTP/AVP 96", "a=rtpmap:96 iLBC/8000")
    assert intersect(a, b).streams[0].common == ()


def test_missing_channels_means_one_channel() -> None:
    a = d("m=audio 1 RTP/AVP 97", "a=rtpmap:97 speex/16000")
    b = d("m=audio 2 RTP/AVP 98", "a=rtpmap:98 speex/16000/1")
    assert have_common_codec(a, b)


def test_telephone_event_alone_is_not_a_usable_codec() -> None:
    a = d("m=audio 1 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000")
    b = d("m=audio 2 RTP/AVP 8 100", "a=rtpmap:100 telephone-event/8000")
    stream = intersect(a, b).streams[0]
    assert [c.name for c in stream.common] == ["telephone-event/8000"]
    assert not stream.usable and not have_common_codec(a, b)


def test_comfort_noise_alone_is_not_a_usable_codec() -> None:
    assert not have_common_codec(d("m=audio 1 RTP/AVP 0 13"), d("m=audio 2 RTP/AVP 8 13"))


def test_disabled_streams_do_not_count() -> None:
    a = d("m=audio 0 RTP/AVP 0", "m=video 5 RTP/AVP 31")
    b = d("m=audio 2 RTP/AVP 0", "m=video 6 RTP/AVP 34")
    assert not have_common_codec(a, b)


def test_streams_pair_by_media_type_not_position() -> None:
    a = parse(TOTAL_CONVERSATION)
    b = d("m=text 9 RTP/AVP 99", "a=rtpmap:99 T140/1000", "m=audio 8 RTP/AVP 8")
    result = intersect(a, b)
    assert [(s.media, s.index_a, s.index_b) for s in result.streams] == [
        ("audio", 0, 1),
        ("text", 2, 0),
    ]
    assert [c.name for c in result.streams[1].common] == ["t140/1000"]
    assert result.has_common_codec


def test_real_world_pairs() -> None:
    assert have_common_codec(parse(DESK_PHONE), parse(WEBRTC_GATEWAY))  # G722, PCMU, PCMA
    assert have_common_codec(parse(IPV6_OPUS), parse(DESK_PHONE))  # PCMU
    g729_only = d("m=audio 1 RTP/AVP 18 101", "a=rtpmap:101 telephone-event/8000")
    assert not have_common_codec(g729_only, parse(IPV6_OPUS))


def test_non_rtp_formats_compare_as_tokens() -> None:
    a = d("m=image 1 udptl t38")
    b = d("m=image 2 udptl T38")
    assert have_common_codec(a, b)
    assert not have_common_codec(a, d("m=image 2 udptl t30"))


def test_no_media_has_no_common_codec() -> None:
    assert not have_common_codec(parse(sdp()), parse(DESK_PHONE))
