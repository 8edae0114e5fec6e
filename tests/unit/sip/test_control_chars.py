"""Control characters in a message's start line and headers (RFC 3261 §25.1; issue 7, item 6).

The grammar's CTL (%x00-1F / %x7F) has three places in a header section: HTAB in LWS, CR LF as
line ends and folds, and any CTL but CR/LF escaped by a backslash inside a quoted-string (or a
comment) -- quoted-pair = "\\" (%x00-09 / %x0B-0C / %x0E-7F). Everything else is a 400 naming
the place; the body is never looked at. What the grammar allows is passed on only through
`printable_display_name` (the PSAP leg's From) and written back as a quoted-pair, never raw.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from ng911.call.controller import Controller
from ng911.sip.badrequest import best_effort_400
from ng911.sip.headers import parse_name_addr, printable_display_name, quote_string
from ng911.sip.message import SipParseError, parse_message

VIA = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK74bf9"
CALL_ID = "3848276298220188511@127.0.0.1"
HEADERS = {
    "Via": VIA,
    "Max-Forwards": "70",
    "From": '"Alice" <sip:alice@127.0.0.1>;tag=9fxced76sl',
    "To": "<urn:service:sos>",
    "Call-ID": CALL_ID,
    "CSeq": "1 INVITE",
    "Contact": "<sip:alice@127.0.0.1:5070>",
}


def invite(start: bytes = b"INVITE urn:service:sos SIP/2.0", extra: tuple[bytes, ...] = (),
           body: bytes = b"", eol: bytes = b"\r\n", **override: bytes) -> bytes:
    fields = {k: v.encode() for k, v in HEADERS.items()}
    fields.update({k.replace("_", "-"): v for k, v in override.items()})
    lines = [start, *(k.encode() + b": " + v for k, v in fields.items()), *extra,
             b"Content-Length: %d" % len(body)]
    return eol.join(lines) + eol + eol + body


def reason_of(data: bytes) -> str:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status_hint == 400
    return info.value.reason


CTLS = [c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)] + [0x7F]

# (id, message, the reason phrase)
REJECTED = [
    ("call-id", invite(Call_ID=b"38482762\x0098220188511@127.0.0.1"), "Control character in Call-ID"),
    ("call-id-end", invite(Call_ID=CALL_ID.encode() + b"\x00"), "Control character in Call-ID"),
    # Call-ID = word ["@" word]: no quoted-string, so not even an escaped one
    ("call-id-escaped", invite(Call_ID=b'"a\\\x00b"@127.0.0.1'), "Control character in Call-ID"),
    ("call-id-compact", invite(extra=(b"i: x\x00y",), Call_ID=b"").replace(b"Call-ID: \r\n", b""),
     "Control character in Call-ID"),
    ("from-display-unquoted", invite(From=b"Ali\x00ce <sip:alice@127.0.0.1>;tag=1"), "Control character in From header"),
    ("from-display-quoted-raw", invite(From=b'"Ali\x00ce" <sip:alice@127.0.0.1>;tag=1'),
     "Control character in From header"),
    ("from-quote-unterminated", invite(From=b'"Ali\\\x00ce <sip:alice@127.0.0.1>;tag=1'),
     "Control character in From header"),
    ("from-tag", invite(From=b"<sip:alice@127.0.0.1>;tag=1\x00"), "Control character in From header"),
    ("to-uri", invite(To=b"<sip:so\x00s@127.0.0.1>"), "Control character in To header"),
    # no URI grammar has a quoted-string: an "escaped" CTL inside <...> is still a raw one
    ("to-uri-quoted", invite(To=b'<sip:"a\\\x00"@127.0.0.1>'), "Control character in To header"),
    ("to-uri-param-quoted", invite(To=b'<sip:sos@127.0.0.1;x="\\\x00">'), "Control character in To header"),
    ("request-uri", invite(start=b"INVITE sip:so\x00s@127.0.0.1 SIP/2.0"), "Control character in Request-URI"),
    ("method", invite(start=b"INV\x01ITE sip:sos@127.0.0.1 SIP/2.0"), "Control character in Request-Line"),
    ("status-line", invite(start=b"SIP/2.0 200 O\x07K"), "Control character in Status-Line"),
    ("header-name", invite(extra=(b"X-F\x00oo: bar",)), "Control character in header name"),
    ("header-name-no-colon", invite(extra=(b"X-Foo\x00 bar",)), "Control character in header name"),
    ("header-value", invite(extra=(b"X-Foo: b\x01ar",)), "Control character in X-Foo header"),
    ("header-value-del", invite(extra=(b"Subject: b\x7far",)), "Control character in Subject header"),
    ("header-value-stray-cr", invite(extra=(b"Subject: a\rb",)), "Control character in Subject header"),
    ("header-value-folded", invite(extra=(b"Subject: one", b" two\x00three")), "Control character in Subject header"),
    ("via-host", invite(Via=b"SIP/2.0/UDP 127.0.0.1\x00:5070;branch=z9hG4bK1"), "Control character in Via header"),
    ("via-branch", invite(Via=b"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK\x001"), "Control character in Via header"),
    ("contact", invite(Contact=b"<sip:alice@127.0.0.1:5070>\x0c"), "Control character in Contact header"),
    ("cseq", invite(CSeq=b"1\x0b INVITE"), "Control character in CSeq header"),
    # a comment (User-Agent, Server) takes escaped CTLs, a raw one never
    ("user-agent-comment-raw", invite(extra=(b"User-Agent: x (y \x00)",)), "Control character in User-Agent header"),
    # other headers have no comment: the parentheses are plain characters there
    ("subject-parentheses", invite(extra=(b"Subject: x (y \\\x00)",)), "Control character in Subject header"),
    # a bare-LF message (the other path of the parser)
    ("call-id-lf", invite(Call_ID=b"a\x00b", eol=b"\n"), "Control character in Call-ID"),
    ("header-value-lf-stray-cr", invite(extra=(b"Subject: a\rb",), eol=b"\n"), "Control character in Subject header"),
]


@pytest.mark.parametrize("data,reason", [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED])
def test_a_control_character_where_the_grammar_has_none_is_a_400_naming_the_place(data: bytes, reason: str) -> None:
    assert reason_of(data) == reason


@pytest.mark.parametrize("ctl", CTLS, ids=[f"0x{c:02x}" for c in CTLS])
def test_every_ctl_is_refused_in_a_call_id_and_a_token(ctl: int) -> None:
    c = bytes([ctl])
    assert reason_of(invite(Call_ID=b"abc" + c + b"@127.0.0.1")) == "Control character in Call-ID"
    assert reason_of(invite(extra=(b"Supported: time" + c + b"r",))) == "Control character in Supported header"
    assert reason_of(invite(From=b'"Ali' + c + b'ce" <sip:alice@127.0.0.1>;tag=1')) == "Control character in From header"


@pytest.mark.parametrize("ctl", CTLS, ids=[f"0x{c:02x}" for c in CTLS])
def test_every_escapable_ctl_is_legal_as_a_quoted_pair_in_a_display_name(ctl: int) -> None:
    msg = parse_message(invite(From=b'"Ali\\' + bytes([ctl]) + b'ce" <sip:alice@127.0.0.1>;tag=1'))
    assert msg.from_.display_name == "Ali" + chr(ctl) + "ce"
    assert printable_display_name(msg.from_.display_name) == "Alice"


def test_an_escaped_nul_in_a_quoted_display_name_is_legal() -> None:
    msg = parse_message(invite(From=b'"Caller \\\x00One" <sip:caller@127.0.0.1>;tag=1',
                               To=b'"PSAP\\\x00" <urn:service:sos>'))
    assert msg.from_.display_name == "Caller \x00One"
    assert msg.to.display_name == "PSAP\x00"
    assert str(msg.from_.uri) == "sip:caller@127.0.0.1" and msg.from_.tag == "1"
    # written back as the quoted-pair it came as (never a raw NUL inside quotes), and so parseable
    out = msg.to_bytes()
    assert b'From: "Caller \\\x00One" <sip:caller@127.0.0.1>;tag=1\r\n' in out
    assert parse_message(out).from_.display_name == "Caller \x00One"
    assert parse_name_addr(str(msg.from_)) == msg.from_


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param((b'Via: SIP/2.0/UDP 127.0.0.2;branch=z9hG4bK2;x="\\\x00"',), id="via-quoted-param"),
        pytest.param((b'Contact: "\\\x1b[2J" <sip:b@127.0.0.1>;q=0.5;x="a\\\x7fb"',), id="contact-display-and-param"),
        pytest.param((b"User-Agent: softphone/1 (build \\\x00 (nested \\\x07))",), id="user-agent-comment"),
        pytest.param((b"Server: x (\\\x00)",), id="server-comment"),
        pytest.param((b'Reason: SIP;cause=200;text="\\\x00"',), id="reason-text"),
        pytest.param((b'X-Quoted: "a\\\x00b", "c"',), id="extension-header-quoted-string"),
        pytest.param((b"Subject: a\tb", b"\tfolded"), id="htab-and-fold"),
        pytest.param((b'Subject: "one', b' \\\x00two"'), id="quoted-string-across-a-fold"),
        pytest.param(("Subject: caf\u00e9 \u2603".encode(),), id="utf8"),
    ],
)
def test_what_the_grammar_allows_parses(extra: tuple[bytes, ...]) -> None:
    parse_message(invite(extra=extra))


def test_the_body_is_never_scanned() -> None:
    body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\x00\x01\x7f\r\ns=\x00\r\n"
    msg = parse_message(invite(extra=(b"Content-Type: application/sdp",), body=body))
    assert msg.body == body
    assert parse_message(invite(body=b"\x00" * 100, eol=b"\n")).body == b"\x00" * 100


def test_a_message_full_of_quoted_pairs_costs_linear_time() -> None:
    def cost(n: int) -> float:
        data = invite(extra=tuple(b'X-H%d: "\\\x00"' % i for i in range(n)) + (b'X-Long: "' + b"\\\x00" * n * 10 + b'"',))
        t0 = time.perf_counter()
        parse_message(data)
        return time.perf_counter() - t0

    cost(50)
    small, big = min(cost(500) for _ in range(3)), min(cost(5000) for _ in range(3))
    assert big < small * 10 * 4, (small, big)  # 10x the input, well under 40x the time


# --- the 400 ------------------------------------------------------------------------------------


def parse_reply(reply: bytes) -> dict[str, str]:
    head = reply.decode().split("\r\n\r\n")[0].split("\r\n")
    return {"start": head[0], **{line.partition(":")[0]: line.partition(":")[2].strip() for line in head[1:]}}


def test_the_400_names_the_problem_and_echoes_the_call_id_without_its_ctl() -> None:
    data = invite(Call_ID=CALL_ID.encode() + b"\x00")
    reply = best_effort_400(data, reason_of(data))
    assert reply is not None and b"\x00" not in reply
    got = parse_reply(reply)
    assert got["start"] == "SIP/2.0 400 Control character in Call-ID"
    assert got["Via"] == VIA and got["Call-ID"] == CALL_ID and got["CSeq"] == "1 INVITE"
    assert ";tag=" in got["To"]
    parse_message(reply)  # a valid response


def test_a_400_for_a_ctl_in_the_via_still_goes_back_and_holds_none() -> None:
    data = invite(Via=b"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK\x0074bf9")
    reason = reason_of(data)
    reply = best_effort_400(data, reason)
    assert reply is not None
    assert parse_reply(reply)["Via"] == VIA
    assert not any(c in reply for c in bytes(CTLS))


def test_an_unparseable_response_or_ack_is_dropped() -> None:
    assert best_effort_400(invite(start=b"SIP/2.0 200 OK", Call_ID=b"a\x00b"), "Control character in Call-ID") is None
    assert best_effort_400(invite(start=b"ACK sip:a@127.0.0.1 SIP/2.0", Call_ID=b"a\x00b"), "x") is None


# --- passing on what the grammar allows -------------------------------------------------------------


@pytest.mark.parametrize(
    "name,want",
    [
        (None, None),
        ("Alice", "Alice"),
        ("Zo\u00eb \u2603", "Zo\u00eb \u2603"),
        ("A\u00a0B", "A\u00a0B"),  # a no-break space is not a control
        ("Caller \x00One", "Caller One"),
        ("\x00Caller\x1b[2J\x7f", "Caller[2J"),
        ("tab\there", "tab here"),
        ("c1 \x85 \x9f!", "c1  !"),
        ("not utf-8 \udcff", "not utf-8 \ufffd"),
        ("\x00 \x00", None),
        ("", ""),  # as it came: nothing was removed
    ],
)
def test_printable_display_name(name: str | None, want: str | None) -> None:
    assert printable_display_name(name) == want


def test_printable_display_name_is_the_identity_on_a_usual_name() -> None:
    name = "Caller One"
    assert printable_display_name(name) is name


def test_quote_string_writes_an_escapable_ctl_as_a_quoted_pair() -> None:
    assert quote_string('a\x00b\t"c\\') == '"a\\\x00b\t\\"c\\\\"'
    assert parse_name_addr(quote_string("x\x07y") + " <sip:a@127.0.0.1>").display_name == "x\x07y"


def test_the_psap_leg_from_drops_the_control_characters_of_the_display_name() -> None:
    msg = parse_message(invite(From=b'"Caller \\\x00One" <sip:caller@127.0.0.1;user=phone>;tag=abc'))
    call = SimpleNamespace(request=msg)
    from_ = Controller.psap_from(None, call)  # type: ignore[arg-type]  # uses the call alone
    assert from_ == "Caller One <sip:caller@127.0.0.1;user=phone>"  # token words: no quotes needed
    assert "\x00" not in from_
    plain = parse_message(invite())
    assert Controller.psap_from(None, SimpleNamespace(request=plain)) == "Alice <sip:alice@127.0.0.1>"  # type: ignore[arg-type]
    only_ctl = parse_message(invite(From=b'"\\\x00" <sip:caller@127.0.0.1>;tag=abc'))
    assert Controller.psap_from(None, SimpleNamespace(request=only_ctl)) == "<sip:caller@127.0.0.1>"  # type: ignore[arg-type]


def test_a_stray_cr_ending_the_last_header_line_is_refused_not_kept() -> None:
    """``From: ...\\r\\r\\n\\r\\n``: the last header line ends in a bare CR before its CRLF (found
    by test_parser_fuzz: the message parsed, and its re-serialised form did not)."""
    data = (b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
            b"To: <sip:a@example.com>\r\nCall-ID: x@192.0.2.1\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n"
            b"From: <sip:a@example.com>;tag=1\r\r\n\r\n")
    with pytest.raises(SipParseError, match="Control character in From header"):
        parse_message(data)
