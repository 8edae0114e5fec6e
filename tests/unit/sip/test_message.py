"""bytes ⇄ Request/Response: RFC 3261 §7 (message syntax) and §25 (grammar) as the parser applies them."""
from __future__ import annotations

import pytest

from ng911.sip.headers import NameAddr
from ng911.sip.message import (
    COMPACT,
    Headers,
    Request,
    Response,
    SipParseError,
    canonical_name,
    missing_mandatory,
    parse_message,
)
from ng911.sip.uri import AbsoluteUri, SipUri, parse_uri

BASE = [
    "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@biloxi.com>",
    "From: Alice <sip:alice@atlanta.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.atlanta.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@pc33.atlanta.com>",
]


def raw(start: str = "INVITE sip:bob@biloxi.com SIP/2.0", headers: list[str] = BASE, body: bytes = b"",
        eol: str = "\r\n", length: int | None = -1) -> bytes:
    """A message; ``length`` -1 writes a correct Content-Length, None writes none."""
    lines = [start, *headers]
    if length is not None:
        lines.append(f"Content-Length: {len(body) if length == -1 else length}")
    return (eol.join(lines) + eol + eol).encode() + body


def test_request_line_and_mandatory_headers() -> None:
    msg = parse_message(raw())
    assert isinstance(msg, Request) and msg.is_request
    assert msg.method == "INVITE"
    assert msg.uri == SipUri("sip", "bob", None, "biloxi.com")
    assert msg.call_id == "a84b4c76e66710@pc33.atlanta.com"
    assert (msg.cseq.seq, msg.cseq.method) == (314159, "INVITE")
    assert msg.branch == "z9hG4bK776asdhds"
    assert msg.from_.tag == "1928301774" and msg.from_.display_name == "Alice"
    assert msg.to.tag is None and msg.to.uri == parse_uri("sip:bob@biloxi.com")
    assert msg.max_forwards == 70
    assert missing_mandatory(msg) is None


def test_status_line() -> None:
    msg = parse_message(raw("SIP/2.0 180 Ringing", BASE[:1] + BASE[2:]))
    assert isinstance(msg, Response) and not msg.is_request
    assert (msg.status, msg.reason) == (180, "Ringing")
    assert parse_message(raw("SIP/2.0 200 OK, really  ", BASE)).reason == "OK, really  "


@pytest.mark.parametrize("start", ["SIP/2.0 99 Low", "SIP/2.0 700 High", "SIP/2.0 2000 OK", "SIP/2.0 2x0 OK"])
def test_bad_status_code(start: str) -> None:
    with pytest.raises(SipParseError, match="Bad status code"):
        parse_message(raw(start))


def test_non_ascii_digits_are_not_numbers() -> None:
    # str.isdigit() and \d accept Arabic-Indic digits; the wire grammar is DIGIT = %x30-39.
    with pytest.raises(SipParseError):
        parse_message(raw("SIP/2.0 \u0662\u0660\u0660 OK"))
    with pytest.raises(SipParseError, match="Content-Length"):
        parse_message(raw(headers=BASE + ["Content-Length: \u0663"], length=None, body=b"abc"))
    with pytest.raises(SipParseError, match="CSeq"):
        parse_message(raw(headers=[h if not h.startswith("CSeq") else "CSeq: \u0661 INVITE" for h in BASE]))
    with pytest.raises(SipParseError, match="Max-Forwards"):
        parse_message(raw(headers=[h if not h.startswith("Max") else "Max-Forwards: \u0667\u0660" for h in BASE]))
    with pytest.raises(SipParseError):
        parse_message(raw("INVITE sip:bob@biloxi.com:\u0665\u0660\u0666\u0660 SIP/2.0"))


def test_version_other_than_2_0_hints_505() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(raw("INVITE sip:bob@biloxi.com SIP/7.0"))
    assert info.value.status_hint == 505
    assert parse_message(raw("INVITE sip:bob@biloxi.com sip/2.0")).method == "INVITE"  # case-insensitive


@pytest.mark.parametrize(
    "start",
    [
        "INVITE  sip:bob@biloxi.com SIP/2.0",  # two SP
        "INVITE sip:bob@biloxi.com SIP/2.0 ",  # trailing SP
        "INVITE <sip:bob@biloxi.com> SIP/2.0",
        "INVITE sip:bob@biloxi.com",
        "IN(VITE sip:bob@biloxi.com SIP/2.0",
    ],
)
def test_malformed_request_lines(start: str) -> None:
    with pytest.raises(SipParseError):
        parse_message(raw(start))


def test_extension_method_and_cseq_must_agree() -> None:
    msg = parse_message(raw("NEWMETHOD.x-1 sip:bob@biloxi.com SIP/2.0",
                            [h if not h.startswith("CSeq") else "CSeq: 1 NEWMETHOD.x-1" for h in BASE]))
    assert msg.method == "NEWMETHOD.x-1"
    with pytest.raises(SipParseError, match="CSeq method"):
        parse_message(raw("OPTIONS sip:bob@biloxi.com SIP/2.0"))
    # methods are case-sensitive
    with pytest.raises(SipParseError, match="CSeq method"):
        parse_message(raw("invite sip:bob@biloxi.com SIP/2.0"))


# --- header lines ---------------------------------------------------------------------------


def test_header_folding_joins_continuation_lines_with_one_space() -> None:
    msg = parse_message(raw(headers=BASE + [
        "Subject: I know you're there,",
        "   pick up the phone",
        "\tand talk to me!",
        "X-Empty-Start:",
        "  continued",
    ]))
    assert msg.headers.get("Subject") == "I know you're there, pick up the phone and talk to me!"
    assert msg.headers.get("X-Empty-Start") == "continued"


def test_folded_structured_header_parses() -> None:
    hs = [h for h in BASE if not h.startswith("From")]
    msg = parse_message(raw(headers=hs + ["From: Alice", " <sip:alice@atlanta.com>", " ;tag=88"]))
    assert msg.from_.display_name == "Alice" and msg.from_.tag == "88"


def test_continuation_before_any_header_is_rejected() -> None:
    with pytest.raises(SipParseError, match="Continuation"):
        parse_message(raw(headers=["  folded"] + BASE))


def test_whitespace_around_the_colon() -> None:
    msg = parse_message(raw(headers=[h.replace(":", " \t:   ", 1) for h in BASE]))
    assert [n for n, _ in msg.headers][:2] == ["Via", "Max-Forwards"]
    assert msg.max_forwards == 70 and msg.cseq.seq == 314159


@pytest.mark.parametrize("line", ["NoColonHere", "Bad Name: x", "Bad@Name: x", ": empty"])
def test_bad_header_lines(line: str) -> None:
    with pytest.raises(SipParseError):
        parse_message(raw(headers=BASE + [line]))


@pytest.mark.parametrize(("short", "long"), sorted(COMPACT.items()))
def test_every_compact_form_is_the_long_name(short: str, long: str) -> None:
    assert canonical_name(short) == canonical_name(short.upper()) == long
    h = Headers.of((short, "x"))
    assert h.get(long) == "x" and h.get(long.upper()) == "x" and long.title() in h


def test_compact_forms_in_a_message() -> None:
    data = raw(headers=[
        "v: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds",
        "t: <sip:bob@biloxi.com>",
        "f: <sip:alice@atlanta.com>;tag=1",
        "i: abc@pc33",
        "CSeq: 1 INVITE",
        "m: <sip:alice@pc33.atlanta.com>",
        "c: application/sdp",
        "k: 100rel, timer",
        "s: hello",
        "Max-Forwards: 70",
    ], body=b"v=0\r\n", length=None) + b""
    data = data.replace(b"\r\n\r\n", b"\r\nl: 5\r\n\r\n", 1)
    msg = parse_message(data)
    assert msg.call_id == "abc@pc33" and msg.to.uri == parse_uri("sip:bob@biloxi.com")
    assert msg.content_type == "application/sdp" and msg.body == b"v=0\r\n"
    assert msg.header_tokens("Supported") == {"100rel", "timer"}
    assert msg.contacts[0].uri.host == "pc33.atlanta.com"
    assert msg.headers.get("Subject") == "hello"
    # names are kept as written, so the message logs as received
    assert [n for n, _ in msg.headers][:3] == ["v", "t", "f"]


def test_header_names_are_case_insensitive() -> None:
    msg = parse_message(raw(headers=[h.replace("Call-ID", "cALL-iD").replace("CSeq", "cseq") for h in BASE]))
    assert msg.call_id == "a84b4c76e66710@pc33.atlanta.com"
    assert msg.headers.get("CALL-ID") == msg.headers.get("call-id") == msg.headers.get("i")
    assert msg.cseq.seq == 314159


def test_repeated_single_value_headers_are_rejected() -> None:
    for extra in ["Call-ID: other", "i: other", "CSeq: 1 INVITE", "t: <sip:x@y>", "From: <sip:x@y>;tag=2",
                  "Max-Forwards: 1"]:
        with pytest.raises(SipParseError, match="Repeated"):
            parse_message(raw(headers=BASE + [extra]))
    with pytest.raises(SipParseError, match="Repeated"):
        parse_message(raw(headers=BASE + ["l: 0"]))


def test_comma_joined_list_headers_equal_separate_lines() -> None:
    common = [h for h in BASE[1:] if not h.startswith("Contact")]
    joined = parse_message(raw(headers=[
        "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP b.example.com:5061;branch=z9hG4bK2",
        *common,
        'Contact: "Doe, John" <sip:j@a.example.com>;q=0.5, <sip:k@b.example.com>',
        "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
        "Supported: 100rel,timer",
    ]))
    separate = parse_message(raw(headers=[
        "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1",
        "Via: SIP/2.0/TCP b.example.com:5061;branch=z9hG4bK2",
        *common,
        'Contact: "Doe, John" <sip:j@a.example.com>;q=0.5',
        "Contact: <sip:k@b.example.com>",
        "Route: <sip:p1.example.com;lr>",
        "Route: <sip:p2.example.com;lr>",
        "Supported: 100rel",
        "Supported: timer",
    ]))
    for msg in (joined, separate):
        assert [v.branch for v in msg.vias] == ["z9hG4bK1", "z9hG4bK2"]
        assert [v.transport for v in msg.vias] == ["UDP", "TCP"]
        assert msg.vias[1].sent_by == ("b.example.com", 5061)
        assert [c.display_name for c in msg.contacts] == ["Doe, John", None]
        assert msg.contacts[0].param("q") == "0.5"
        assert [str(r.uri) for r in msg.routes] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
        assert msg.headers.values("Supported") == ["100rel", "timer"]
    assert joined.vias == separate.vias
    assert len(joined.headers.get_all("Via")) == 1 and len(separate.headers.get_all("Via")) == 2


def test_contact_star() -> None:
    msg = parse_message(raw("REGISTER sip:registrar.biloxi.com SIP/2.0",
                            [h.replace("INVITE", "REGISTER") for h in BASE if not h.startswith("Contact")]
                            + ["Contact: *", "Expires: 0"]))
    assert msg.contacts == ()


def test_quoted_display_names_with_escapes() -> None:
    hs = [h for h in BASE if not h.startswith(("From", "To"))]
    msg = parse_message(raw(headers=hs + [
        r'From: "Alice \"The Caller\" \\ Smith" <sip:alice@atlanta.com>;tag=1',
        'To: "Bob; <not a uri>, really" <sip:bob@biloxi.com>',
    ]))
    assert msg.from_.display_name == 'Alice "The Caller" \\ Smith'
    assert msg.to.display_name == "Bob; <not a uri>, really" and msg.to.uri.host == "biloxi.com"
    again = parse_message(msg.to_bytes())
    assert again.from_ == msg.from_ and again.to == msg.to


def test_unterminated_quoted_display_name_is_rejected() -> None:
    hs = [h for h in BASE if not h.startswith("From")]
    with pytest.raises(SipParseError):
        parse_message(raw(headers=hs + ['From: "Alice <sip:alice@atlanta.com>;tag=1']))


def test_addr_spec_parameters_belong_to_the_header() -> None:
    hs = [h for h in BASE if not h.startswith(("From", "To"))]
    msg = parse_message(raw(headers=hs + [
        "From: sip:alice@atlanta.com;transport=tcp;tag=abc",
        "To: <sip:bob@biloxi.com;transport=tcp>;tag=xyz",
    ]))
    assert msg.from_.tag == "abc" and msg.from_.param("transport") == "tcp"
    assert msg.from_.uri.params == ()
    assert msg.to.uri.transport == "TCP" and msg.to.param("transport") is None and msg.to.tag == "xyz"


def test_urn_and_tel_in_from_to_and_request_uri() -> None:
    hs = [h for h in BASE if not h.startswith(("From", "To"))]
    msg = parse_message(raw("INVITE urn:service:sos SIP/2.0", hs + [
        "From: <tel:+12025551212;phone-context=+1>;tag=1",
        "To: urn:service:sos",
    ]))
    assert msg.uri == AbsoluteUri("urn", "service:sos") and msg.uri.is_service_urn
    assert msg.to.uri == msg.uri and msg.to.tag is None
    assert msg.from_.uri == AbsoluteUri("tel", "+12025551212;phone-context=+1")


def test_ipv6_references_in_uri_and_via() -> None:
    hs = [h for h in BASE if not h.startswith("Via")]
    msg = parse_message(raw("INVITE sip:bob@[2001:db8::10]:5070 SIP/2.0", hs + [
        "Via: SIP/2.0/UDP [2001:db8::9:1]:5060;branch=z9hG4bKas3;received=[2001:db8::9:255];rport",
    ]))
    assert (msg.uri.host, msg.uri.port) == ("[2001:db8::10]", 5070)
    assert msg.top_via.sent_by == ("[2001:db8::9:1]", 5060)
    assert msg.top_via.received == "[2001:db8::9:255]" and msg.top_via.has_rport and msg.top_via.rport is None


# --- framing and the body -------------------------------------------------------------------


def test_content_length_frames_the_body_and_trailing_octets_are_ignored() -> None:
    msg = parse_message(raw(headers=BASE + ["Content-Type: text/plain"], body=b"hello", length=5) + b"GARBAGE")
    assert msg.body == b"hello"


def test_content_length_larger_than_the_body_is_rejected() -> None:
    with pytest.raises(SipParseError, match="larger"):
        parse_message(raw(body=b"hello", length=6))


@pytest.mark.parametrize("value", ["-1", "five", "5 5", "0x5", ""])
def test_bad_content_length(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_message(raw(headers=BASE + [f"Content-Length: {value}"], length=None, body=b"hello"))


def test_missing_content_length_on_a_datagram_means_the_rest() -> None:
    msg = parse_message(raw(body=b"v=0\r\nrest\r\n", length=None))
    assert msg.body == b"v=0\r\nrest\r\n"
    assert "Content-Length" not in msg.headers
    assert b"Content-Length: 11\r\n" in msg.to_bytes()


def test_body_may_hold_blank_lines_and_any_octets() -> None:
    body = b"\r\n\r\n\x00\xff\n\n--"
    assert parse_message(raw(body=body)).body == body


def test_lf_only_line_endings() -> None:
    msg = parse_message(raw(headers=BASE + ["Subject: a", " b"], body=b"v=0\n", eol="\n"))
    assert msg.method == "INVITE" and msg.call_id == "a84b4c76e66710@pc33.atlanta.com"
    assert msg.headers.get("Subject") == "a b"
    assert msg.body == b"v=0\n"


def test_mixed_line_endings_find_the_first_blank_line() -> None:
    # LF-only headers, CRLF in the body: the body's blank line is not the end of the headers.
    body = b"v=0\r\n\r\nx"
    msg = parse_message(raw(body=body, eol="\n"))
    assert msg.body == body and msg.cseq.seq == 314159
    # and a CRLF message with one stray LF line end still parses
    data = raw(body=b"abc").replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\n")
    assert parse_message(data).max_forwards == 70


def test_leading_crlfs_before_the_start_line_are_ignored() -> None:
    assert parse_message(b"\r\n\r\n\n" + raw()).method == "INVITE"


def test_no_blank_line_is_rejected() -> None:
    with pytest.raises(SipParseError, match="blank line"):
        parse_message(raw()[:-2])
    with pytest.raises(SipParseError):
        parse_message(b"")


def test_oversized_message_hints_513() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(raw(body=b"x" * (1 << 20)))
    assert info.value.status_hint == 513


def test_missing_mandatory_headers_still_parse() -> None:
    msg = parse_message(raw(headers=[h for h in BASE if not h.startswith("Call-ID")]))
    assert missing_mandatory(msg) == "Call-ID"
    with pytest.raises(SipParseError, match="Missing Call-ID"):
        msg.call_id  # noqa: B018


def test_parse_errors_have_printable_bounded_reasons() -> None:
    err = SipParseError("bad \x00\r\n" + "x" * 500)
    assert err.reason.isprintable() and len(err.reason) == 120 and err.status_hint == 400
    assert isinstance(err, ValueError)


# --- serialising ----------------------------------------------------------------------------


def _same_meaning(a: Request | Response, b: Request | Response) -> None:
    assert type(a) is type(b)
    assert list(a.headers.remove("Content-Length")) == list(b.headers.remove("Content-Length"))
    assert a.body == b.body
    if isinstance(a, Request):
        assert (a.method, str(a.uri)) == (b.method, str(b.uri))  # type: ignore[union-attr]
    else:
        assert (a.status, a.reason) == (b.status, b.reason)  # type: ignore[union-attr]
    assert (a.vias, a.cseq, a.call_id, a.from_, a.to) == (b.vias, b.cseq, b.call_id, b.from_, b.to)


@pytest.mark.parametrize("eol", ["\r\n", "\n"])
def test_round_trip_keeps_the_meaning(eol: str) -> None:
    msg = parse_message(raw(headers=BASE + ["Subject: folded", " line", "v: SIP/2.0/TCP x.example.com;branch=z9hG4bKa"],
                            body=b"v=0\r\n", eol=eol))
    out = msg.to_bytes()
    assert out.count(b"\r\n\r\n") == 1 and b"\n" not in out.replace(b"\r\n", b"")
    again = parse_message(out)
    _same_meaning(msg, again)
    assert again.to_bytes() == out  # a fixed point after one trip


def test_to_bytes_writes_a_matching_content_length_once_in_place() -> None:
    msg = parse_message(raw(headers=BASE[:2] + ["l: 5"] + BASE[2:], body=b"hello", length=None))
    changed = msg.replace(body=b"hi")
    out = changed.to_bytes()
    assert b"\r\nl: 2\r\n" in out and out.count(b"Content-Length") == 0
    assert out.endswith(b"\r\n\r\nhi")
    doubled = changed.replace(headers=changed.headers.add("Content-Length", "99"))
    assert doubled.to_bytes() == out


def test_messages_are_immutable_and_replace_derives() -> None:
    msg = parse_message(raw())
    with pytest.raises(AttributeError):
        msg.method = "BYE"  # type: ignore[misc]
    bye = msg.replace(method="BYE", headers=msg.headers.set("CSeq", "314160 BYE"))
    assert (bye.method, bye.cseq.seq, msg.method, msg.cseq.seq) == ("BYE", 314160, "INVITE", 314159)


def test_built_message_serialises() -> None:
    req = Request("OPTIONS", parse_uri("sip:ap1@127.0.0.1:5070"), Headers.of(
        ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx"),
        ("From", "<sip:ng911@127.0.0.1>;tag=a"),
        ("To", "<sip:ap1@127.0.0.1:5070>"),
        ("Call-ID", "c1"),
        ("CSeq", "1 OPTIONS"),
        ("Max-Forwards", "70"),
    ))
    out = req.to_bytes()
    assert out.startswith(b"OPTIONS sip:ap1@127.0.0.1:5070 SIP/2.0\r\nVia: ")
    assert out.endswith(b"Content-Length: 0\r\n\r\n")
    assert parse_message(out).to == NameAddr(None, parse_uri("sip:ap1@127.0.0.1:5070"))


def test_to_bytes_refuses_a_line_break_inside_a_value() -> None:
    msg = parse_message(raw())
    for bad in (msg.replace(headers=msg.headers.set("Subject", "hi\r\nInjected: yes")),
                msg.replace(headers=msg.headers.add("X-Bad\n", "v")),
                Response(400, "Bad\nRequest", msg.headers)):
        with pytest.raises(ValueError, match="Line break"):
            bad.to_bytes()
    # a bare CR inside a value is a CTL the grammar has no room for: refused at the parser
    # (it used to be kept and written back as it came), so none can reach to_bytes
    with pytest.raises(SipParseError, match="Control character in Subject"):
        parse_message(raw(headers=BASE + ["Subject: a\rb"]))
