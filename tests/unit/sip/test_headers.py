"""Headers (the ordered collection) and the structured values: Via, name-addr, CSeq, lists, params."""
from __future__ import annotations

import pytest

from ng911.sip.headers import (
    CSeq,
    NameAddr,
    Via,
    parse_cseq,
    parse_name_addr,
    parse_name_addrs,
    parse_params,
    parse_via,
    quote_string,
    split_values,
    unquote_string,
)
from ng911.sip.message import Headers, SipParseError
from ng911.sip.uri import AbsoluteUri, SipUri, parse_uri

H = Headers.of(
    ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"),
    ("v", "SIP/2.0/UDP c;branch=z9hG4bK3"),
    ("To", "<sip:bob@biloxi.com>"),
    ("Route", "<sip:p1;lr>"),
    ("Supported", "timer"),
    ("route", "<sip:p2;lr>"),
)


# --- Headers ----------------------------------------------------------------------------------


def test_get_get_all_values_count() -> None:
    assert H.get("VIA") == "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"
    assert H.get_all("via") == [H.get("Via"), "SIP/2.0/UDP c;branch=z9hG4bK3"]
    assert H.values("Via") == [
        "SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b;branch=z9hG4bK2", "SIP/2.0/UDP c;branch=z9hG4bK3"
    ]
    assert H.count("v") == 2 and H.count("Route") == 2 and H.count("Contact") == 0
    assert H.get("Contact") is None and H.get_all("Contact") == [] and H.values("Contact") == []
    assert "t" in H and "Contact" not in H and len(H) == 6


def test_values_skip_empty_elements_and_respect_quotes_and_brackets() -> None:
    h = Headers.of(("Contact", '"a, b" <sip:x@y;p="1,2">, , <sip:z@w>'), ("Allow", "INVITE,,ACK"))
    assert h.values("Contact") == ['"a, b" <sip:x@y;p="1,2">', "<sip:z@w>"]
    assert h.values("Allow") == ["INVITE", "ACK"]


def test_set_replaces_every_line_at_the_first_ones_place_keeping_its_spelling() -> None:
    h = H.set("ROUTE", "<sip:p3;lr>")
    assert [n for n, _ in h] == ["Via", "v", "To", "Route", "Supported"]
    assert h.get_all("Route") == ["<sip:p3;lr>"]
    assert H.set("Contact", "<sip:me@here>").get_all("Contact") == ["<sip:me@here>"]
    assert list(H.set("Contact", "x"))[-1] == ("Contact", "x")
    assert list(H.set("v", "SIP/2.0/TCP d"))[0] == ("Via", "SIP/2.0/TCP d")


def test_add_appends_and_prepend_goes_before_the_first_line_of_that_header() -> None:
    assert list(H.add("Route", "<sip:p9>"))[-1] == ("Route", "<sip:p9>")
    pre = H.prepend("Via", "SIP/2.0/UDP me;branch=z9hG4bK0")
    assert list(pre)[0] == ("Via", "SIP/2.0/UDP me;branch=z9hG4bK0")
    assert [n for n, _ in H.prepend("Route", "<sip:p0;lr>")][3:5] == ["Route", "Route"]
    assert H.prepend("Route", "<sip:p0;lr>").get_all("Route")[0] == "<sip:p0;lr>"
    assert list(H.prepend("Record-Route", "<sip:rr>"))[0] == ("Record-Route", "<sip:rr>")


def test_remove_drops_every_line_in_any_spelling() -> None:
    h = H.remove("VIA")
    assert "Via" not in h and len(h) == 4
    assert H.remove("Contact") == H


def test_remove_first_value_pops_the_top_via() -> None:
    h = H.remove_first_value("Via")
    assert h.values("Via") == ["SIP/2.0/UDP b;branch=z9hG4bK2", "SIP/2.0/UDP c;branch=z9hG4bK3"]
    h = h.remove_first_value("via")
    assert h.get_all("Via") == ["SIP/2.0/UDP c;branch=z9hG4bK3"]  # the emptied line went
    h = h.remove_first_value("Via")
    assert "Via" not in h
    assert h.remove_first_value("Via") == h


def test_headers_are_immutable_values() -> None:
    before = list(H)
    H.set("To", "x").add("A", "b").remove("Route").prepend("Via", "y")
    assert list(H) == before
    assert Headers(before) == H and Headers(before[:2]) != H
    assert "Headers(" in repr(H)


# --- split_values / params / quoted strings ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("a", ["a"]),
        ("a, b ,c", ["a", "b", "c"]),
        ('"x,y" <sip:a@b>, <sip:c,d@e>', ['"x,y" <sip:a@b>', "<sip:c,d@e>"]),
        (r'"a\",b", c', [r'"a\",b"', "c"]),
        ("a,,b", ["a", "", "b"]),
        ("a,", ["a", ""]),
    ],
)
def test_split_values(value: str, parts: list[str]) -> None:
    assert split_values(value) == parts


def test_parse_params() -> None:
    assert parse_params("") == ()
    assert parse_params(";a=1;B;c=x") == (("a", "1"), ("B", None), ("c", "x"))
    assert parse_params(' ; a = 1 ; b ; c="x;y \\" z"') == (("a", "1"), ("b", None), ("c", '"x;y \\" z"'))
    assert parse_params(";received=[2001:db8::1]") == (("received", "[2001:db8::1]"),)
    for bad in [";", ";a=", "; =1", "a=1", ';a="open', ";a;;b", ";a b=1"]:
        with pytest.raises(SipParseError):
            parse_params(bad)


def test_quoting() -> None:
    assert quote_string('a "b" \\c') == r'"a \"b\" \\c"'
    assert unquote_string(quote_string('a "b" \\c')) == 'a "b" \\c'
    assert unquote_string('""') == ""


# --- CSeq -------------------------------------------------------------------------------------


def test_cseq() -> None:
    assert parse_cseq("  4711   INVITE ") == CSeq(4711, "INVITE")
    assert str(CSeq(1, "ACK")) == "1 ACK"
    assert parse_cseq("2147483647 X") == CSeq(2**31 - 1, "X")
    for bad in ["2147483648 INVITE", "INVITE", "1", "-1 INVITE", "1 INV ITE", "99999999999 A", "1\u00a0INVITE"]:
        with pytest.raises(SipParseError):
            parse_cseq(bad)


# --- Via --------------------------------------------------------------------------------------


def test_via_fields_and_params() -> None:
    (via,) = parse_via("SIP/2.0/udp pc33.atlanta.com:5066;BRANCH=z9hG4bK77;Received=1.2.3.4;rport=5070;maddr=224.2.0.1")
    assert (via.protocol, via.transport, via.host, via.port) == ("SIP/2.0", "UDP", "pc33.atlanta.com", 5066)
    assert via.branch == "z9hG4bK77" and via.param("branch") == "z9hG4bK77"
    assert via.received == "1.2.3.4" and via.rport == 5070 and via.has_rport and via.maddr == "224.2.0.1"
    assert via.sent_by == ("pc33.atlanta.com", 5066)
    assert str(via) == "SIP/2.0/UDP pc33.atlanta.com:5066;BRANCH=z9hG4bK77;Received=1.2.3.4;rport=5070;maddr=224.2.0.1"


def test_via_with_lws_everywhere_it_may_be() -> None:
    (via,) = parse_via("SIP / 2.0 / TCP  host.example.com : 5061 ; branch = z9hG4bKx ; rport")
    assert (via.transport, via.host, via.port, via.branch, via.rport, via.has_rport) == (
        "TCP", "host.example.com", 5061, "z9hG4bKx", None, True)
    (v6,) = parse_via("SIP/2.0/TLS [2001:db8::1] : 5061;branch=z9hG4bKy")
    assert v6.sent_by == ("[2001:db8::1]", 5061)


def test_via_unknown_transport_kept_upper_case() -> None:
    vias = parse_via("SIP/2.0/SCTP a;branch=z9hG4bK1, SIP/2.0/newtransport b;branch=z9hG4bK2")
    assert [v.transport for v in vias] == ["SCTP", "NEWTRANSPORT"]


def test_via_with_param_keeps_position_and_adds_flags() -> None:
    via = Via("UDP", "a.example.com", None, (("branch", "z9hG4bK1"), ("rport", None)))
    assert str(via) == "SIP/2.0/UDP a.example.com;branch=z9hG4bK1;rport"
    filled = via.with_param("RPORT", "5090").with_param("received", "10.0.0.1")
    assert str(filled) == "SIP/2.0/UDP a.example.com;branch=z9hG4bK1;rport=5090;received=10.0.0.1"
    assert filled.rport == 5090 and via.rport is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "SIP/2.0/UDP",
        "SIP/2.0 UDP host",
        "HTTP/1.1/TCP host",
        "SIP/2.0/UDP host;branch",  # fine: a flag; checked separately below
        "SIP/2.0/UDP ho st;branch=z9hG4bK1",
        "SIP/2.0/UDP host:99999;branch=z9hG4bK1",
        "SIP/2.0/UDP host:\u0665;branch=z9hG4bK1",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP a;branch=z9hG4bK1,,SIP/2.0/UDP b",
    ],
)
def test_bad_vias(value: str) -> None:
    if value.endswith(";branch"):
        assert parse_via(value)[0].branch == ""
        return
    with pytest.raises(SipParseError):
        parse_via(value)


# --- name-addr / addr-spec --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "display", "uri", "params"),
    [
        ("<sip:a@b>", None, "sip:a@b", ()),
        ("Bob <sip:bob@biloxi.com>;tag=a6c85cf", "Bob", "sip:bob@biloxi.com", (("tag", "a6c85cf"),)),
        ("caller<sip:caller@example.com>;tag=323", "caller", "sip:caller@example.com", (("tag", "323"),)),
        ('"" <sip:a@b>', "", "sip:a@b", ()),
        ('"Quoted \\"x\\"" <sip:a@b>', 'Quoted "x"', "sip:a@b", ()),
        ("  The   Operator   <sip:op@psap.example.net>", "The   Operator", "sip:op@psap.example.net", ()),
        ("sip:a@b;tag=1;x", None, "sip:a@b", (("tag", "1"), ("x", None))),
        ("sip:a@b ; tag = 1", None, "sip:a@b", (("tag", "1"),)),
        ("<sip:a@b;lr;transport=tcp>;x=\"q;r\"", None, "sip:a@b;lr;transport=tcp", (("x", '"q;r"'),)),
        ("<urn:service:sos.fire>", None, "urn:service:sos.fire", ()),
        ("tel:+1-201-555-0123", None, "tel:+1-201-555-0123", ()),
        ("<sip:[2001:db8::1]:5060>;tag=v6", None, "sip:[2001:db8::1]:5060", (("tag", "v6"),)),
        ('"Joe <the> Caller" <sip:j@x>', "Joe <the> Caller", "sip:j@x", ()),
    ],
)
def test_name_addr_shapes(value: str, display: str | None, uri: str, params: tuple) -> None:  # type: ignore[type-arg]
    na = parse_name_addr(value)
    assert (na.display_name, str(na.uri), na.params) == (display, uri, params)
    assert parse_name_addr(str(na)) == na  # str() is parseable back to the same meaning


@pytest.mark.parametrize(
    "value",
    ["", "   ", '"unterminated <sip:a@b>', '"Name" sip:a@b', "<sip:a@b", "<sip:a@b>;", "<sip:a@b>;tag=",
     "<>", "<no-scheme>", "Bob <sip:a b@c>"],
)
def test_bad_name_addrs(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(value)


def test_name_addr_with_tag_and_str() -> None:
    na = NameAddr("Alice Smith", parse_uri("sip:alice@atlanta.com"))
    assert str(na) == "Alice Smith <sip:alice@atlanta.com>"
    tagged = na.with_tag("88sja8x").with_tag("99")
    assert tagged.tag == "99" and str(tagged) == "Alice Smith <sip:alice@atlanta.com>;tag=99"
    assert str(NameAddr("A, B", na.uri)) == '"A, B" <sip:alice@atlanta.com>'
    assert str(NameAddr('say "hi"', na.uri)) == r'"say \"hi\"" <sip:alice@atlanta.com>'
    assert na.with_param("expires", "60").param("EXPIRES") == "60"


def test_addr_spec_with_uri_params_serialises_in_angle_brackets() -> None:
    # In addr-spec form ;params are header params; in <> they'd be URI params — str() keeps the meaning.
    na = parse_name_addr("sip:bob@biloxi.com;transport=tcp")
    assert na.uri == SipUri("sip", "bob", None, "biloxi.com") and na.param("transport") == "tcp"
    assert str(na) == "<sip:bob@biloxi.com>;transport=tcp"


def test_name_addr_list() -> None:
    nas = parse_name_addrs('"A, B" <sip:a@x>;q=1, sip:b@y;expires=5, <urn:service:sos>')
    assert [n.display_name for n in nas] == ["A, B", None, None]
    assert nas[1].param("expires") == "5" and nas[2].uri == AbsoluteUri("urn", "service:sos")
    with pytest.raises(SipParseError):
        parse_name_addrs("<sip:a@x>, , <sip:b@y>")


def test_parse_results_are_cached_by_text_and_immutable() -> None:
    value = '"Caller" <sip:+12025551212@bcf.example.net>;tag=f1'
    assert parse_name_addr(value) is parse_name_addr(value)
    assert parse_via("SIP/2.0/UDP a;branch=z9hG4bK9") is parse_via("SIP/2.0/UDP a;branch=z9hG4bK9")
    with pytest.raises(AttributeError):
        parse_name_addr(value).display_name = "x"  # type: ignore[misc]
    long_value = '"' + "x" * 600 + '" <sip:a@b>'
    assert parse_name_addr(long_value) == parse_name_addr(long_value)
    assert parse_name_addr(long_value) is not parse_name_addr(long_value)
    # a failure is not cached: it fails again, the same way
    for _ in range(2):
        with pytest.raises(SipParseError):
            parse_name_addr('"open <sip:a@b>')
