"""Parse/serialise (RFC 8866): lossless round trips, typed access, one clear error."""

from __future__ import annotations

import dataclasses

import pytest

from ng911.sdp import (
    Attribute,
    Bandwidth,
    Connection,
    Direction,
    MediaLine,
    Origin,
    SdpParseError,
    parse,
    serialize,
)

from .samples import (
    DESK_PHONE,
    IPV6_OPUS,
    LEGACY_HOLD_LF,
    MULTICAST,
    REALISTIC,
    SRTP_BCF,
    TOTAL_CONVERSATION,
    TRAILING_BLANK,
    WEBRTC_GATEWAY,
    sdp,
)


@pytest.mark.parametrize("name", sorted(REALISTIC))
def test_unchanged_sdp_serialises_byte_for_byte(name: str) -> None:
    raw = REALISTIC[name]
    assert serialize(parse(raw)) == raw


@pytest.mark.parametrize("name", sorted(REALISTIC))
def test_str_input_round_trips_like_bytes(name: str) -> None:
    raw = REALISTIC[name]
    assert parse(raw.decode()).to_str() == raw.decode()


@pytest.mark.parametrize("name", sorted(REALISTIC))
def test_reparse_of_serialised_sdp_is_equal(name: str) -> None:
    desc = parse(REALISTIC[name])
    assert parse(bytes(desc)) == desc


def test_non_utf8_octets_survive_round_trip() -> None:
    raw = sdp("c=IN IP4 192.0.2.1", "m=audio 1 RTP/AVP 0").replace(b"s=-", b"s=caf\xe9")
    assert serialize(parse(raw)) == raw


def test_origin_fields_are_typed() -> None:
    o = parse(SRTP_BCF).origin
    assert o == Origin("bcf", "1700000000", 1700000001, "IN", "IP4", "198.51.100.7")
    assert o.sess_version == 1700000001


def test_session_and_media_connections_are_typed() -> None:
    desc = parse(SRTP_BCF)
    assert desc.connection == Connection("IN", "IP4", "198.51.100.7")
    assert desc.media[0].connection == Connection("IN", "IP4", "198.51.100.8")
    assert desc.stream_connection(0).address == "198.51.100.8"


def test_ipv6_connection_is_typed() -> None:
    desc = parse(IPV6_OPUS)
    assert desc.connection == Connection("IN", "IP6", "::1")
    assert desc.origin.addrtype == "IP6"
    assert not desc.connection.is_null


def test_multiple_media_level_connections_are_kept_in_order() -> None:
    desc = parse(MULTICAST)
    audio = desc.media[0]
    assert [c.address for c in audio.connections] == ["233.252.0.2/127/2", "233.252.0.4/127"]
    assert audio.connections[0].host == "233.252.0.2"
    assert audio.port_count == 2
    assert desc.stream_connection(1).address == "233.252.0.1/127"


def test_media_line_fields_are_typed() -> None:
    m = parse(TOTAL_CONVERSATION).media
    assert [x.media for x in m] == ["audio", "video", "text"]
    assert m[1].line == MediaLine("video", 5006, "RTP/AVP", ("96", "97"))
    assert m[0].port == 5004 and m[0].proto == "RTP/AVP" and m[0].formats == ("0", "8", "101")


def test_rtpmap_fmtp_ptime_are_typed() -> None:
    m = parse(TOTAL_CONVERSATION).media
    assert m[0].ptime == 20
    assert m[1].rtpmaps["96"].encoding == "H264"
    assert m[1].rtpmaps["96"].clock_rate == 90000
    assert m[1].fmtps["96"] == "profile-level-id=42e01f;packetization-mode=1;max-br=1920"
    assert m[2].rtpmaps["98"].encoding == "t140" and m[2].rtpmaps["98"].clock_rate == 1000
    opus = parse(IPV6_OPUS).media[0]
    assert opus.rtpmaps["111"].channels == 2 and opus.maxptime == 40


def test_bandwidth_is_typed_at_both_levels() -> None:
    desc = parse(SRTP_BCF)
    assert desc.bandwidths == (Bandwidth("AS", 84),)
    assert desc.media[0].bandwidths == (Bandwidth("AS", 64), Bandwidth("TIAS", 64000))


def test_direction_is_read_at_session_and_media_level() -> None:
    desk = parse(DESK_PHONE)
    assert desk.direction is Direction.SENDRECV and desk.media[0].direction is None
    assert desk.stream_direction(0) is Direction.SENDRECV
    tc = parse(TOTAL_CONVERSATION)
    assert tc.direction is None and tc.media[2].direction is Direction.SENDRECV
    assert parse(IPV6_OPUS).stream_direction(0) is Direction.SENDRECV  # default


def test_unknown_attributes_are_carried_in_order() -> None:
    audio = parse(WEBRTC_GATEWAY).media[0]
    names = [a.name for a in audio.attributes]
    assert names[:3] == ["candidate", "sendrecv", "extmap"]
    assert names[-2:] == ["setup", "ssrc"]
    assert audio.attribute("ssrc") == "2655508255 cname:{c2a5}"
    assert audio.has_attribute("rtcp-mux") and audio.attribute("rtcp-mux") == ""


def test_crypto_and_rtcp_attributes_are_readable() -> None:
    audio = parse(SRTP_BCF).media[0]
    assert len(audio.attribute_values("crypto")) == 2
    assert audio.attribute("rtcp") == "40001"


def test_lf_only_input_is_accepted() -> None:
    desc = parse(LEGACY_HOLD_LF)
    assert desc.media[0].rtpmaps["101"].encoding == "telephone-event"


def test_changed_line_is_reserialised_with_crlf_and_the_rest_kept() -> None:
    desc = parse(LEGACY_HOLD_LF)
    changed = desc.with_stream(0, desc.media[0].with_port(18002))
    out = serialize(changed)
    assert out == LEGACY_HOLD_LF.replace(b"m=audio 18000 RTP/AVP 18 101\n", b"m=audio 18002 RTP/AVP 18 101\r\n")


def test_line_appended_after_unterminated_last_line_gets_a_line_break() -> None:
    desc = parse(LEGACY_HOLD_LF)
    out = serialize(desc.with_stream(0, desc.media[0].with_attribute(Attribute("ptime", "20"))))
    assert out == LEGACY_HOLD_LF + b"\r\na=ptime:20\r\n"
    assert parse(out).media[0].ptime == 20


def test_trailing_blank_line_is_kept() -> None:
    desc = parse(TRAILING_BLANK)
    assert desc.trailer == "\r\n"
    assert serialize(desc) == TRAILING_BLANK


def test_replace_on_a_line_reserialises_only_that_line() -> None:
    desc = parse(DESK_PHONE)
    bumped = desc.with_origin(dataclasses.replace(desc.origin, sess_version=3891474222))
    assert serialize(bumped) == DESK_PHONE.replace(
        b"o=- 3891474221 3891474221", b"o=- 3891474221 3891474222"
    )


def test_equality_ignores_formatting() -> None:
    a = parse(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n")
    b = parse(b"v=0\no=-  1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n")
    assert a == b and bytes(a) != bytes(b)


def test_with_formats_drops_rtpmap_and_fmtp_of_removed_codecs() -> None:
    video = parse(TOTAL_CONVERSATION).media[1].with_formats(["96"])
    assert video.formats == ("96",)
    assert set(video.rtpmaps) == {"96"} and set(video.fmtps) == {"96"}
    assert video.attribute_values("rtcp-fb") == ("* nack pli", "96 ccm fir")


def test_disabled_stream_keeps_type_and_proto_with_one_format() -> None:
    off = parse(TOTAL_CONVERSATION).media[1].disabled()
    assert off.line == MediaLine("video", 0, "RTP/AVP", ("96",))
    assert off.lines == (off.line,) and not off.enabled


def test_no_media_description_is_valid() -> None:
    desc = parse(sdp())
    assert desc.media == () and desc.connection is None


BAD = [
    (b"", 1, "empty"),
    (b"o=- 1 1 IN IP4 h\r\n", 1, "v=0"),
    (b"v=0\r\ns=-\r\nt=0 0\r\n", 2, "missing o="),
    (b"v=0\r\no=- 1 IN IP4 h\r\ns=-\r\n", 2, "o= needs 6 fields"),
    (b"v=0\r\no=- 1 x IN IP4 h\r\ns=-\r\n", 2, "sess-version"),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4\r\n", 4, "c= needs 3 fields"),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\nbogus\r\n", 3, "<type>=<value>"),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\n\r\ns=-\r\n", 3, "empty line"),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nb=AS\r\n", 4, "b= must be"),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio x RTP/AVP 0\r\n", 4, "port"),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio 70000 RTP/AVP 0\r\n", 4, "port"),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio 1\r\n", 4, "m= needs"),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 1 RTP/AVP 0\r\n", 3, "no c="),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio 1 RTP/AVP 96\r\na=rtpmap:96 opus\r\n", 5, "rtpmap"),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio 1 RTP/AVP 0\r\na=ptime:abc\r\n", 5, "ptime"),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio 1 RTP/AVP 0\r\no=- 1 1 IN IP4 h\r\n", 5, "session level"),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\no=- 1 1 IN IP4 h\r\n", 3, "more than one o="),
    (b"v=0\r\no=- 1 1 IN IP4 h\r\na=:x\r\n", 3, "without an attribute name"),
]


@pytest.mark.parametrize(("raw", "lineno", "words"), BAD)
def test_bad_sdp_raises_one_error_naming_line_number_and_line(
    raw: bytes, lineno: int, words: str
) -> None:
    with pytest.raises(SdpParseError) as info:
        parse(raw)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.lineno == lineno
    assert words in str(err)
    assert f"line {lineno}" in str(err)
    lines = raw.decode().split("\n")
    if lineno <= len(lines):
        assert err.line == lines[lineno - 1].rstrip("\r")


def test_disabled_stream_without_connection_is_accepted() -> None:
    desc = parse(b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=video 0 RTP/AVP 31\r\n")
    assert not desc.media[0].enabled


def test_unknown_attribute_with_odd_name_is_carried_not_rejected() -> None:
    raw = sdp("c=IN IP4 192.0.2.1", "m=audio 1 RTP/AVP 0", "a=X Vendor Thing:on", "a=sendonly ")
    desc = parse(raw)
    assert desc.media[0].attribute("X Vendor Thing") == "on"
    assert desc.media[0].direction is Direction.SENDONLY
    assert serialize(desc) == raw


def test_rtpmap_with_extra_spaces_is_tolerated() -> None:
    desc = parse(sdp("c=IN IP4 192.0.2.1", "m=audio 1 RTP/AVP 96", "a=rtpmap: 96  opus/48000/2 "))
    assert desc.media[0].rtpmaps["96"].channels == 2
