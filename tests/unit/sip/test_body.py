"""Content-Type and multipart bodies (RFC 2045/2046, RFC 5621): the NG9-1-1 INVITE with SDP,
PIDF-LO and additional data, nested multiparts, and the RFC 4475 multipart message.

The NG9-1-1 INVITEs come from the SIPp scenarios of the ng911-dev conformance lab, read in place
from ../shared/conformance; SIPp's keywords are filled with loopback values.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ng911.sip.body import (
    MAX_DEPTH,
    BodyPart,
    ContentType,
    build_multipart,
    parse_content_type,
    part_by_cid,
    split_multipart,
    walk,
)
from ng911.sip.message import Headers, Request, SipParseError, parse_message

CONFORMANCE = Path(__file__).resolve().parents[3].parent / "shared" / "conformance"
SIPP_INVITES = CONFORMANCE / "ng911-dev" / "SIP_INVITE"
PIDF_NS = "{urn:ietf:params:xml:ns:pidf}"

# SIPp keywords -> plausible loopback values
SIPP_VALUES = {
    "local_ip": "127.0.0.1", "local_port": "5061", "remote_ip": "127.0.0.1", "remote_port": "5060",
    "transport": "UDP", "call_number": "1", "call_id": "1-4242@127.0.0.1", "branch": "z9hG4bK-4242-1-0",
    "media_ip": "127.0.0.1", "media_ip_type": "4", "local_ip_type": "4", "media_port": "6000",
    "peer_tag_param": "",
}


def sipp_message(path: Path) -> bytes:
    """The first message a SIPp scenario sends, as SIPp would put it on the wire: each line's
    leading blanks dropped, CRLF line ends, keywords filled in, [len] = the body's length."""
    text = path.read_text("iso-8859-1")
    m = re.search(r"<send[^>]*>\s*<!\[CDATA\[(.*?)\]\]>", text, re.S)
    assert m, path
    lines = [line.lstrip(" \t").rstrip("\r") for line in m.group(1).split("\n")]
    msg = "\r\n".join(lines).strip("\r\n \t") + "\r\n"
    msg = re.sub(r"\[(\w+)\]", lambda k: SIPP_VALUES.get(k.group(1), k.group(0)), msg)
    head, sep, body = msg.partition("\r\n\r\n")
    raw = body.encode("iso-8859-1")
    return (head.replace("[len]", str(len(raw))) + sep).encode("iso-8859-1") + raw


def _scenarios(pattern: str = "*.xml") -> list[Path]:
    return sorted(SIPP_INVITES.glob(pattern))


MULTIPART_SCENARIOS = [p for p in _scenarios() if "multipart/mixed" in p.read_text("iso-8859-1")]
BAD_RURI_SCENARIOS = {"SIP_INVITE_from_BCF_incorrect.xml", "SIP_INVITE_from_OSP_incorrect_1.xml",
                      "SIP_INVITE_from_OSP_incorrect_2.xml"}


# --- Content-Type -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "mime", "params"),
    [
        ("application/sdp", "application/sdp", ()),
        ("  Application/SDP  ", "application/sdp", ()),
        ("multipart/mixed;boundary=7a9cbec02ceef655", "multipart/mixed", (("boundary", "7a9cbec02ceef655"),)),
        ("multipart/mixed; boundary=outer-boundary", "multipart/mixed", (("boundary", "outer-boundary"),)),
        ('Multipart/Mixed; BOUNDARY="simple boundary"; Charset=UTF-8', "multipart/mixed",
         (("boundary", "simple boundary"), ("charset", "UTF-8"))),
        ('multipart/related ; type="application/pidf+xml" ; boundary="a\\"b"', "multipart/related",
         (("type", "application/pidf+xml"), ("boundary", 'a"b'))),
        ("application/EmergencyCallData.DeviceInfo+xml", "application/emergencycalldata.deviceinfo+xml", ()),
        ("text / plain ; charset = us-ascii", "text/plain", (("charset", "us-ascii"),)),
    ],
)
def test_parse_content_type(value: str, mime: str, params: tuple) -> None:  # type: ignore[type-arg]
    ct = parse_content_type(value)
    assert ct.mime_type == mime and ct.params == params
    assert ct.param("BOUNDARY") == ct.param("boundary") == ct.boundary == dict(params).get("boundary")
    assert parse_content_type(str(ct)) == ct


def test_content_type_str_quotes_what_is_not_a_token() -> None:
    ct = ContentType("multipart", "mixed", (("boundary", "simple boundary"),))
    assert str(ct) == 'multipart/mixed;boundary="simple boundary"' and ct.is_multipart
    assert not parse_content_type("application/sdp").is_multipart


@pytest.mark.parametrize("value", ["", "application", "application/", "/sdp", "app lication/sdp",
                                   "text/plain;", "text/plain; charset=", "text/plain charset=x",
                                   'multipart/mixed; boundary="open'])
def test_bad_content_types(value: str) -> None:
    with pytest.raises(SipParseError, match="Bad Content-Type"):
        parse_content_type(value)


# --- splitting --------------------------------------------------------------------------------

RFC2046_EXAMPLE = (
    b"This is the preamble.  It is to be ignored, though it\r\n"
    b"is a handy place for composition agents to include an\r\n"
    b"explanatory note to non-MIME conformant readers.\r\n"
    b"\r\n"
    b"--simple boundary\r\n"
    b"\r\n"
    b"This is implicitly typed plain US-ASCII text.\r\n"
    b"It does NOT end with a linebreak.\r\n"
    b"--simple boundary\r\n"
    b"Content-type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"This is explicitly typed plain US-ASCII text.\r\n"
    b"It DOES end with a linebreak.\r\n"
    b"\r\n"
    b"--simple boundary--\r\n"
    b"\r\n"
    b"This is the epilogue.  It is also to be ignored.\r\n"
)


def test_rfc2046_example_preamble_epilogue_and_line_ends() -> None:
    first, second = split_multipart(RFC2046_EXAMPLE, "simple boundary")
    assert first.headers == Headers() and first.content_type is None
    assert first.body == b"This is implicitly typed plain US-ASCII text.\r\nIt does NOT end with a linebreak."
    assert second.content_type == "text/plain; charset=us-ascii"  # part headers are case-insensitive too
    assert second.mime_type == "text/plain"
    assert second.body == b"This is explicitly typed plain US-ASCII text.\r\nIt DOES end with a linebreak.\r\n"


def test_lf_only_multipart_and_transport_padding() -> None:
    body = b"--b  \t\nContent-Type: text/plain\n\nhello\n--b\n\nworld\n--b-- \nepilogue"
    parts = split_multipart(body, "b")
    assert [p.body for p in parts] == [b"hello", b"world"]
    assert parts[0].mime_type == "text/plain" and parts[1].mime_type is None


def test_delimiter_lookalikes_are_content() -> None:
    body = (b"--b\r\nContent-Type: text/plain\r\n\r\n"
            b"x --b inside a line\r\n--bb is another boundary\r\n--b-not-a-delimiter\r\nend"
            b"\r\n--b--")
    (part,) = split_multipart(body, "b")
    assert part.body == b"x --b inside a line\r\n--bb is another boundary\r\n--b-not-a-delimiter\r\nend"


def test_binary_and_empty_parts() -> None:
    body = b"--b\r\nContent-Type: application/octet-stream\r\n\r\n\x00\r\n\xff--\r\n\r\n--b\r\n--b--\r\n"
    bin_part, empty = split_multipart(body, "b")
    assert bin_part.body == b"\x00\r\n\xff--\r\n"
    assert empty.body == b"" and empty.headers == Headers()


def test_part_headers_fold_and_headers_only_parts() -> None:
    body = b"--b\r\nContent-Type: text/plain;\r\n charset=utf-8\r\nContent-ID: <x@y>\r\n--b--"
    (part,) = split_multipart(body, "b")
    assert part.content_type == "text/plain; charset=utf-8" and part.body == b""
    assert part.media_type == ContentType("text", "plain", (("charset", "utf-8"),))
    assert part.content_id == "x@y"


@pytest.mark.parametrize(
    ("body", "boundary"),
    [
        (b"no delimiter at all", "b"),
        (b"--b\r\nContent-Type: text/plain\r\n\r\nunterminated", "b"),  # no close delimiter
        (b"--b--\r\n", "b"),  # no part
        (b"--b\r\nNot a header line\r\n\r\nx\r\n--b--", "b"),
        (b"--b\r\n folded first\r\n\r\nx\r\n--b--", "b"),
        (b"--b\r\nBad Name: x\r\n\r\nx\r\n--b--", "b"),
        (b"--b\r\n\r\nx\r\n--b--", ""),
        (b"--b\r\n\r\nx\r\n--b--", "b\r\n"),
        (b"--bx\r\n\r\nx\r\n--bx--", "b"),  # every lookalike, no delimiter
    ],
)
def test_malformed_multiparts(body: bytes, boundary: str) -> None:
    with pytest.raises(SipParseError) as info:
        split_multipart(body, boundary)
    assert info.value.reason == "Bad multipart body"


# --- nesting and walking ----------------------------------------------------------------------


def _nested(depth: int) -> BodyPart:
    part = BodyPart(Headers.of(("Content-Type", "text/plain")), b"leaf")
    for level in range(depth):
        b = f"level{level}"
        part = BodyPart(Headers.of(("Content-Type", f"multipart/mixed; boundary={b}")), build_multipart([part], b))
    return part


def test_nested_parts_and_walk_order() -> None:
    inner = build_multipart([
        BodyPart(Headers.of(("Content-Type", "application/pidf+xml"), ("Content-ID", "<loc@x>")), b"<presence/>"),
        BodyPart(Headers.of(("Content-Type", "application/EmergencyCallData.DeviceInfo+xml")), b"<dev/>"),
    ], "inner")
    outer = build_multipart([
        BodyPart(Headers.of(("Content-Type", "application/sdp")), b"v=0\r\n"),
        BodyPart(Headers.of(("Content-Type", 'multipart/mixed; boundary="inner"')), inner),
        BodyPart(Headers.of(("Content-Type", "text/plain")), b"last"),
    ], "outer")
    root = BodyPart(Headers.of(("Content-Type", "multipart/mixed;boundary=outer")), outer)
    assert [p.mime_type for p in root.parts] == ["application/sdp", "multipart/mixed", "text/plain"]
    assert root.parts[1].is_multipart and [p.body for p in root.parts[1].parts] == [b"<presence/>", b"<dev/>"]
    assert root.parts[0].parts == ()
    assert [p.body for p in walk(root)] == [b"v=0\r\n", b"<presence/>", b"<dev/>", b"last"]
    assert part_by_cid(root, "cid:loc@x") is root.parts[1].parts[0]
    assert part_by_cid(root, "<loc@x>") is root.parts[1].parts[0] and part_by_cid(root, "nope@x") is None


def test_walk_depth_is_bounded() -> None:
    assert [p.body for p in walk(_nested(MAX_DEPTH))] == [b"leaf"]
    with pytest.raises(SipParseError, match="Bad multipart body"):
        list(walk(_nested(MAX_DEPTH + 1)))


def test_a_bad_nested_multipart_does_not_hide_its_siblings() -> None:
    body = build_multipart([
        BodyPart(Headers.of(("Content-Type", "application/sdp")), b"v=0\r\n"),
        BodyPart(Headers.of(("Content-Type", "multipart/mixed; boundary=gone")), b"--gone\r\n\r\ntruncated"),
    ], "o")
    sdp, broken = split_multipart(body, "o")
    assert sdp.body == b"v=0\r\n"
    with pytest.raises(SipParseError, match="Bad multipart body"):
        broken.parts  # noqa: B018
    with pytest.raises(SipParseError):
        BodyPart(Headers.of(("Content-Type", "multipart/mixed")), b"--x\r\n\r\n\r\n--x--").parts  # noqa: B018


def test_walk_a_plain_message_and_an_empty_one() -> None:
    sdp = parse_message(b"INVITE sip:a@b SIP/2.0\r\nc: application/sdp\r\nContent-Disposition: session\r\n"
                        b"Content-Length: 5\r\n\r\nv=0\r\n")
    (part,) = walk(sdp)
    assert part.mime_type == "application/sdp" and part.body == b"v=0\r\n"
    assert part.disposition_type == "session"
    assert "Content-Length" not in part.headers  # it framed the SIP message, not this entity
    empty = parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n")
    assert list(walk(empty)) == []
    bad_type = parse_message(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Type: text\r\nContent-Length: 1\r\n\r\nx")
    with pytest.raises(SipParseError, match="Bad Content-Type"):
        list(walk(bad_type))


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(st.tuples(
    st.lists(st.tuples(st.sampled_from(["Content-Type", "Content-ID", "X-Other"]),
                       st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20)),
             max_size=3),
    st.binary(max_size=60),
), min_size=1, max_size=5))
def test_build_then_split_gives_back_the_parts(specs: list) -> None:  # type: ignore[type-arg]
    boundary = "zz-boundary-zz"
    parts = [BodyPart(Headers(hs), body) for hs, body in specs if boundary.encode() not in body]
    if not parts:
        return
    assert split_multipart(build_multipart(parts, boundary), boundary) == parts


# --- RFC 4475 §3.1.1.11 -----------------------------------------------------------------------


def test_rfc4475_mpart01() -> None:
    msg = parse_message((CONFORMANCE / "rfc4475" / "mpart01.dat").read_bytes())
    ct = parse_content_type(msg.content_type or "")
    assert ct.mime_type == "multipart/mixed" and ct.boundary == "7a9cbec02ceef655"
    text, binary = split_multipart(msg.body, ct.boundary)
    assert text.mime_type == "text/plain" and text.body == b"Hello"
    assert text.headers.get("Content-Transfer-Encoding") == "binary"
    assert binary.mime_type == "application/octet-stream"
    # a DER SEQUENCE with a two-octet length: the whole part is exactly that structure
    assert binary.body[:2] == b"\x30\x82" and len(binary.body) == 4 + int.from_bytes(binary.body[2:4], "big")
    assert [p.body for p in walk(msg)] == [text.body, binary.body]


# --- NG9-1-1 INVITEs (SIPp scenarios) ---------------------------------------------------------


def _pidf_text(data: bytes) -> list[bytes]:
    """The PIDF-LO documents in a message, found without the multipart parser: each from its
    XML declaration up to </presence> and the line end that ends its last line."""
    return re.findall(rb"<\?xml[^>]*\?>\r\n\s*<presence\b.*?</presence>\r\n", data, re.S)


@pytest.mark.parametrize("path", _scenarios(), ids=lambda p: p.name)
def test_every_sipp_invite_parses(path: Path) -> None:
    data = sipp_message(path)
    if path.name in BAD_RURI_SCENARIOS:  # "INVITE test_incorrect SIP/2.0": no scheme, a 400
        with pytest.raises(SipParseError) as info:
            parse_message(data)
        assert info.value.status_hint == 400
        return
    msg = parse_message(data)
    assert isinstance(msg, Request) and msg.method == "INVITE"
    assert msg.uri.scheme in ("urn", "sip")
    assert msg.from_.tag == "1" and msg.call_id == "1-4242@127.0.0.1"
    leaves = list(walk(msg))
    assert leaves and all(p.mime_type for p in leaves)
    assert "application/sdp" in [p.mime_type for p in leaves]
    # the body is forwarded as received: re-serialising keeps it byte for byte
    assert parse_message(msg.to_bytes()).body == msg.body


@pytest.mark.parametrize("path", MULTIPART_SCENARIOS, ids=lambda p: p.name)
def test_multipart_sipp_invites_keep_every_part_intact(path: Path) -> None:
    data = sipp_message(path)
    msg = parse_message(data)
    assert (msg.content_type or "").startswith("multipart/mixed")
    leaves = list(walk(msg))
    delimiter = b"\n--" + (parse_content_type(msg.content_type or "").boundary or "").encode()
    # every leaf's bytes are a slice of the datagram, and no delimiter leaked into a part
    for part in leaves:
        assert part.body and part.body in msg.body
        assert delimiter not in part.body and not part.body.startswith(delimiter[1:])
    pidfs = [p for p in leaves if p.mime_type == "application/pidf+xml"]
    assert [p.body for p in pidfs] == _pidf_text(msg.body)
    assert len(pidfs) == msg.body.count(b"Content-Type: application/pidf+xml")
    for part in pidfs:
        assert part.content_id
        if "garbled" in path.name:
            with pytest.raises(ET.ParseError):
                ET.fromstring(part.body)
        else:
            assert ET.fromstring(part.body).tag == PIDF_NS + "presence"
    for part in leaves:
        if part.mime_type.startswith("application/emergencycalldata."):
            assert part.content_id
            ET.fromstring(part.body)  # well-formed XML, bytes intact


def test_ng911_invite_sdp_pidf_and_additional_data() -> None:
    msg = parse_message(sipp_message(SIPP_INVITES / "SIP_INVITE_from_BCF_with_SDP_PIDF-LO_NG-AACS.xml"))
    assert str(msg.uri) == "urn:service:sos" and msg.uri.is_service_urn  # type: ignore[union-attr]
    assert [p.mime_type for p in walk(msg)] == [
        "application/sdp",
        "application/pidf+xml",
        "application/emergencycalldata.deviceinfo+xml",
        "application/emergencycalldata.providerinfo+xml",
        "application/emergencycalldata.serviceinfo+xml",
        "application/emergencycalldata.control+xml",
        "application/emergencycalldata.veds+xml",
    ]
    # Geolocation and Call-Info point at parts by cid: URL (RFC 6442, RFC 7852)
    geo = msg.headers.get("Geolocation") or ""
    pidf = part_by_cid(msg, geo.strip("<>"))
    assert pidf is not None and pidf.mime_type == "application/pidf+xml"
    assert pidf.body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\r\n<presence')
    assert pidf.body.endswith(b"</presence>\r\n")
    pos = ET.fromstring(pidf.body).find(".//{http://www.opengis.net/gml}pos")
    assert pos is not None and pos.text == "40.71668300756087 -73.99069756654683"
    for value in msg.headers.values("Call-Info"):
        uri = value[1 : value.index(">")]
        if uri.startswith("cid:"):
            part = part_by_cid(msg, uri)
            purpose = value.split("purpose=")[1]
            assert part is not None and part.mime_type == f"application/{purpose}+xml".lower()
    control = part_by_cid(msg, "cid:6666@ng911.example.com")
    assert control is not None and control.disposition_type == "by-reference"


def test_ng911_nested_multipart() -> None:
    msg = parse_message(sipp_message(SIPP_INVITES / "SIP_INVITE_from_ESRP_with_nested_multipart_mixed.xml"))
    assert str(msg.uri) == "urn:service:test:sos"
    top = BodyPart.from_message(msg).parts
    assert [p.mime_type for p in top] == ["application/sdp", "multipart/mixed"]
    assert top[1].media_type.boundary == "inner-boundary"  # type: ignore[union-attr]
    assert [p.mime_type for p in top[1].parts] == ["application/pidf+xml",
                                                   "application/emergencycalldata.deviceinfo+xml"]
    assert [p.content_id for p in walk(msg)] == [None, "location@ng911.test", "device@ng911.test"]
    sdp = top[0].body
    assert sdp.startswith(b"v=0\r\n") and sdp.endswith(b"a=sendrecv\r\n")

    bcf = parse_message(sipp_message(SIPP_INVITES / "SIP_INVITE_from_BCF_with_nested_multipart_body.xml"))
    assert [(p.mime_type, p.disposition_type) for p in walk(bcf)] == [
        ("application/sdp", None),
        ("application/emergencycalldata.veds+xml", "by-reference"),
        ("application/emergencycalldata.control+xml", "by-reference"),
    ]
