"""Stream framing (RFC 3261 §18.3, RFC 5626 §3.5.1): pure, no reactor."""

from __future__ import annotations

import pytest

from ng911.sip.transport.framing import (
    PING,
    PONG,
    FramingError,
    Message,
    StreamFramer,
    content_length,
)

INVITE = (
    b"INVITE sip:sos@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK1\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 12\r\n"
    b"\r\n"
    b"v=0\r\no=- 1 1"
)
BYE = (
    b"BYE sip:sos@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK2\r\n"
    b"l: 0\r\n"
    b"\r\n"
)


def messages(framer: StreamFramer, *segments: bytes) -> list[object]:
    out: list[object] = []
    for segment in segments:
        out.extend(framer.feed(segment))
    return out


def datas(events: list[object]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, Message)]


def test_invite_fixture_has_exact_body() -> None:
    assert INVITE.endswith(b"\r\n\r\n" + INVITE[-12:])
    assert content_length(INVITE.split(b"\r\n\r\n")[0]) == 12


def test_two_messages_in_one_segment() -> None:
    assert datas(messages(StreamFramer(), INVITE + BYE)) == [INVITE, BYE]


def test_many_messages_in_one_segment() -> None:
    assert datas(messages(StreamFramer(), (INVITE + BYE) * 50)) == [INVITE, BYE] * 50


@pytest.mark.parametrize("cut", range(1, len(INVITE + BYE)))
def test_two_messages_split_at_every_byte_boundary(cut: int) -> None:
    stream = INVITE + BYE
    framer = StreamFramer()
    assert datas(messages(framer, stream[:cut], stream[cut:])) == [INVITE, BYE]
    assert framer.idle


def test_one_byte_at_a_time() -> None:
    stream = INVITE + b"\r\n\r\n" + BYE
    framer = StreamFramer()
    events = messages(framer, *(stream[i:i + 1] for i in range(len(stream))))
    assert events == [Message(INVITE), PING, Message(BYE)]


def test_message_is_not_returned_before_its_body_is_complete() -> None:
    framer = StreamFramer()
    assert list(framer.feed(INVITE[:-1])) == []
    assert framer.buffered == len(INVITE) - 1
    assert datas(list(framer.feed(INVITE[-1:]))) == [INVITE]
    assert framer.buffered == 0


# -- keep-alives (RFC 5626 §3.5.1) ------------------------------------------------------------


def test_double_crlf_between_messages_is_a_ping() -> None:
    assert messages(StreamFramer(), INVITE + b"\r\n\r\n" + BYE) == [Message(INVITE), PING, Message(BYE)]


def test_double_crlf_alone_is_a_ping_and_two_are_two() -> None:
    assert messages(StreamFramer(), b"\r\n\r\n") == [PING]
    assert messages(StreamFramer(), b"\r\n\r\n\r\n\r\n") == [PING, PING]


def test_ping_split_across_segments() -> None:
    framer = StreamFramer()
    assert messages(framer, b"\r\n\r") == []
    assert messages(framer, b"\n") == [PING]
    assert framer.idle


def test_single_crlf_before_a_message_is_a_pong() -> None:
    assert messages(StreamFramer(), b"\r\n" + BYE) == [PONG, Message(BYE)]


def test_single_crlf_waits_until_it_cannot_be_half_a_ping() -> None:
    framer = StreamFramer()
    assert messages(framer, b"\r\n") == []
    assert messages(framer, BYE) == [PONG, Message(BYE)]


def test_crlf_inside_a_body_is_body_not_keepalive() -> None:
    body = b"\r\n\r\n\r\n"
    msg = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 6\r\n\r\n" + body
    assert messages(StreamFramer(), msg + BYE) == [Message(msg), Message(BYE)]


# -- Content-Length forms ------------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    b"Content-Length: 3",
    b"content-length: 3",
    b"CONTENT-LENGTH:3",
    b"l: 3",
    b"L:3",
    b"Content-Length  :   3  ",
    b"Content-Length\t:\t3",
    b"Content-Length:\r\n 3",
    b"Content-Length:\r\n\t  3",
])
def test_content_length_forms(line: bytes) -> None:
    msg = b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKx\r\n" + line + b"\r\n\r\nabc"
    assert datas(messages(StreamFramer(), msg + BYE)) == [msg, BYE]


def test_header_named_like_l_prefix_is_not_content_length() -> None:
    head = b"MESSAGE sip:a@b SIP/2.0\r\nLocation-Info: 99\r\nl: 2"
    assert content_length(head) == 2


def test_agreeing_duplicate_content_length_is_accepted() -> None:
    assert content_length(b"X sip:a SIP/2.0\r\nContent-Length: 4\r\nl: 4") == 4


# -- framing errors ------------------------------------------------------------------------------


def test_missing_content_length_is_a_framing_error_with_head() -> None:
    msg = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKx\r\n\r\n"
    framer = StreamFramer()
    with pytest.raises(FramingError) as info:
        messages(framer, msg)
    assert info.value.status_hint == 400
    assert "Content-Length" in info.value.reason
    assert info.value.head == msg[:-4]


@pytest.mark.parametrize("value", [b"abc", b"-1", b"1 2", b"", b"0x10", b"9999999999999"])
def test_bad_content_length_is_a_framing_error(value: bytes) -> None:
    msg = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: " + value + b"\r\n\r\n"
    with pytest.raises(FramingError) as info:
        messages(StreamFramer(), msg)
    assert info.value.status_hint == 400


def test_conflicting_content_length_is_a_framing_error() -> None:
    with pytest.raises(FramingError):
        content_length(b"X sip:a SIP/2.0\r\nContent-Length: 4\r\nl: 5")


def test_a_broken_stream_stays_broken() -> None:
    framer = StreamFramer()
    with pytest.raises(FramingError):
        messages(framer, b"OPTIONS sip:a SIP/2.0\r\n\r\n")
    with pytest.raises(FramingError):
        messages(framer, BYE)
    with pytest.raises(FramingError):
        framer.next_event()


def test_messages_before_the_broken_one_are_delivered_first() -> None:
    framer = StreamFramer()
    got: list[object] = []
    with pytest.raises(FramingError):
        for event in framer.feed(BYE + INVITE + b"OPTIONS sip:a SIP/2.0\r\n\r\n"):
            got.append(event)
    assert datas(got) == [BYE, INVITE]


def test_oversize_header_is_an_error_not_unbounded_growth() -> None:
    framer = StreamFramer(max_header_size=1024)
    start = b"INVITE sip:a SIP/2.0\r\n"
    framer.receive_data(start)
    assert framer.next_event() is None
    chunk = b"X-Filler: " + b"a" * 90 + b"\r\n"
    with pytest.raises(FramingError) as info:
        for _ in range(20):
            framer.receive_data(chunk)
            assert framer.next_event() is None
            assert framer.buffered <= 1024 + len(chunk)
    assert info.value.status_hint == 513
    assert framer.buffered == 0


def test_oversize_body_is_refused_before_it_arrives() -> None:
    framer = StreamFramer(max_body_size=1000)
    with pytest.raises(FramingError) as info:
        messages(framer, b"MESSAGE sip:a SIP/2.0\r\nContent-Length: 1001\r\n\r\nabc")
    assert info.value.status_hint == 413
    assert info.value.head is not None


def test_body_at_the_limit_is_accepted() -> None:
    msg = b"MESSAGE sip:a SIP/2.0\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
    assert datas(messages(StreamFramer(max_body_size=1000), msg)) == [msg]


def test_default_bounds() -> None:
    framer = StreamFramer()
    assert framer.max_header_size == 64 * 1024
    assert framer.max_body_size == 1024 * 1024


# -- linear work ---------------------------------------------------------------------------------


def test_header_search_resumes_where_it_stopped() -> None:
    """Small segments must not make the framer re-scan the whole buffer each time."""
    framer = StreamFramer()
    head = b"INVITE sip:a SIP/2.0\r\n" + b"X-Pad: " + b"p" * 5000 + b"\r\n"
    for i in range(len(head)):
        framer.receive_data(head[i:i + 1])
        assert framer.next_event() is None
        assert framer._scan == max(0, i + 1 - 3)  # noqa: SLF001 - the property under test
    framer.receive_data(b"l: 0\r\n\r\n")
    assert datas([framer.next_event()]) == [head + b"l: 0\r\n\r\n"]


def test_body_wait_does_not_rescan_the_header() -> None:
    framer = StreamFramer()
    framer.receive_data(b"MESSAGE sip:a SIP/2.0\r\nl: 10000\r\n\r\n")
    assert framer.next_event() is None
    need = framer._need  # noqa: SLF001
    for _ in range(9999):
        framer.receive_data(b"x")
        assert framer.next_event() is None
        assert framer._need == need  # noqa: SLF001
    framer.receive_data(b"x")
    assert isinstance(framer.next_event(), Message)
