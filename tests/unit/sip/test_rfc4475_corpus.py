"""The RFC 4475 torture messages and RFC 5118 IPv6 messages against our parser.

Read in place from ../shared/conformance (never copied into the repo). Each message that must
parse is also serialised and re-parsed: the meaning survives a round trip.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from ng911.sip.message import SipParseError, missing_mandatory, parse_message

CONFORMANCE = Path(__file__).resolve().parents[3].parent / "shared" / "conformance"
RFC4475 = CONFORMANCE / "rfc4475"
RFC5118 = CONFORMANCE / "rfc5118"

# RFC 4475 §3.4.1 says an RFC 2543-syntax INVITE "should be accepted by RFC 3261 elements that
# want to maintain backwards compatibility"; the php-sip column of index.tsv rejects it. We follow
# the RFC: the transaction layer keys branch-less requests the RFC 2543 way.
ACCEPT_DESPITE_INDEX = {"inv2543.dat"}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _cases_4475() -> list[tuple[str, bool]]:
    out = []
    for row in _rows(RFC4475 / "index.tsv"):
        verdict = row["php-sip_test"]
        if verdict == "-":
            continue
        must_parse = verdict.startswith("testShouldParse") or row["file"] in ACCEPT_DESPITE_INDEX
        out.append((row["file"], must_parse))
    return out


def _roundtrip(msg):  # type: ignore[no-untyped-def]
    again = parse_message(msg.to_bytes())
    assert type(again) is type(msg)
    # to_bytes() always writes a Content-Length matching the body (added when it was absent).
    assert list(again.headers.remove("Content-Length")) == list(msg.headers.remove("Content-Length"))
    assert again.headers.get("Content-Length") == str(len(msg.body))
    assert again.body == msg.body
    if msg.is_request:
        assert (again.method, str(again.uri)) == (msg.method, str(msg.uri))
    else:
        assert (again.status, again.reason) == (msg.status, msg.reason)


@pytest.mark.parametrize(("name", "must_parse"), _cases_4475())
def test_rfc4475_message_parses_or_is_rejected_as_indexed(name: str, must_parse: bool) -> None:
    data = (RFC4475 / name).read_bytes()
    if must_parse:
        msg = parse_message(data)
        _roundtrip(msg)
    else:
        with pytest.raises(SipParseError) as info:
            parse_message(data)
        assert info.value.reason
        assert len(info.value.reason) <= 120


def test_missing_required_headers_parse_and_are_named() -> None:
    msg = parse_message((RFC4475 / "insuf.dat").read_bytes())
    assert missing_mandatory(msg) == "Call-ID"


def test_unknown_version_hints_505() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message((RFC4475 / "badvers.dat").read_bytes())
    assert info.value.status_hint == 505


def test_tortuous_invite_fields() -> None:
    msg = parse_message((RFC4475 / "wsinv.dat").read_bytes())
    assert msg.method == "INVITE"
    assert msg.cseq.seq == 9 and msg.cseq.method == "INVITE"
    assert msg.max_forwards == 68
    assert msg.to.tag == "1918181833n"
    assert msg.from_.display_name == 'J Rosenberg \\"'
    assert msg.from_.tag == "98asjd8"
    assert [v.transport for v in msg.vias] == ["UDP", "TCP", "UDP"]
    assert msg.vias[2].branch == "z9hG4bK30239"
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.contacts[0].display_name == 'Quoted string ""'
    assert msg.contacts[0].param("q") == "0.33"
    assert msg.routes[0].uri.has_param("lr")
    assert len(msg.body) == 150


@pytest.mark.parametrize("row", _rows(RFC5118 / "index.tsv"), ids=lambda r: r["file"])
def test_rfc5118_ipv6_messages(row: dict[str, str]) -> None:
    data = (RFC5118 / row["file"]).read_bytes()
    if row["rfc_expectation"] == "INVALID":
        with pytest.raises(SipParseError):
            parse_message(data)
    else:
        _roundtrip(parse_message(data))


def test_rfc5118_ipv6_reference_keeps_brackets_and_port() -> None:
    msg = parse_message((RFC5118 / "port-unambiguous.dat").read_bytes())
    assert msg.uri.host == "[2001:db8::10]" and msg.uri.port == 5070
    ambiguous = parse_message((RFC5118 / "port-ambiguous.dat").read_bytes())
    assert ambiguous.uri.host == "[2001:db8::10:5070]" and ambiguous.uri.port is None
