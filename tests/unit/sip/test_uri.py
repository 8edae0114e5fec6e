"""SIP and absolute URIs: RFC 3261 §19.1 syntax, §19.1.4 comparison; RFC 5118/5954 IPv6."""
from __future__ import annotations

import pytest

from ng911.sip.message import SipParseError
from ng911.sip.uri import AbsoluteUri, SipUri, parse_uri


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("sip:alice@atlanta.com", ("sip", "alice", None, "atlanta.com", None, (), ())),
        ("sips:alice@atlanta.com:5061", ("sips", "alice", None, "atlanta.com", 5061, (), ())),
        ("sip:alice:secretword@atlanta.com;transport=tcp",
         ("sip", "alice", "secretword", "atlanta.com", None, (("transport", "tcp"),), ())),
        ("sip:+1-212-555-1212:1234@gateway.com;user=phone",
         ("sip", "+1-212-555-1212", "1234", "gateway.com", None, (("user", "phone"),), ())),
        ("sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
         ("sip", None, None, "atlanta.com", None, (("method", "REGISTER"),), (("to", "alice%40atlanta.com"),))),
        ("sip:alice;day=tuesday@atlanta.com", ("sip", "alice;day=tuesday", None, "atlanta.com", None, (), ())),
        ("sip:sips%3Auser%40example.com@example.net",
         ("sip", "sips%3Auser%40example.com", None, "example.net", None, (), ())),
        ("sip:%61lice@atlanta.com", ("sip", "%61lice", None, "atlanta.com", None, (), ())),
        ("sip:user@[2001:db8::10]:5070", ("sip", "user", None, "[2001:db8::10]", 5070, (), ())),
        ("sip:[::ffff:192.0.2.1];maddr=[2001:db8::1]",
         ("sip", None, None, "[::ffff:192.0.2.1]", None, (("maddr", "[2001:db8::1]"),), ())),
        ("SIP:ALICE@ATLANTA.COM;LR", ("SIP", "ALICE", None, "ATLANTA.COM", None, (("LR", None),), ())),
        ("sip:p1.example.com;lr;ftag=x",
         ("sip", None, None, "p1.example.com", None, (("lr", None), ("ftag", "x")), ())),
        ("sip:a@b?subject=project%20x&priority=urgent",
         ("sip", "a", None, "b", None, (), (("subject", "project%20x"), ("priority", "urgent")))),
        ("sip:_sip._udp.host_name.example:5060", ("sip", None, None, "_sip._udp.host_name.example", 5060, (), ())),
        ("sip:a@b;x=%41;y=1:2", ("sip", "a", None, "b", None, (("x", "%41"), ("y", "1:2")), ())),
    ],
)
def test_sip_uri_fields_and_round_trip(text: str, fields: tuple) -> None:  # type: ignore[type-arg]
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port, uri.params, uri.headers) == fields
    assert str(uri) == text  # kept as written, escapes included
    assert uri == SipUri(*fields)


@pytest.mark.parametrize(
    "text",
    [
        "urn:service:sos",
        "urn:service:sos.fire",
        "urn:service:sos.ambulance",
        "urn:service:test.sos",
        "urn:service:test.sos.police",
        "urn:nena:service:sos.psap",
        "URN:Service:SOS",
        "tel:+1-201-555-0123",
        "tel:911;phone-context=+1",
        "tel:7042;phone-context=example.com",
        "cid:loc%40x@example.net",
        "http://lis.example.com/loc?id=1",
        "im:alice@example.com",
        "mailto:a@b.c",
    ],
)
def test_absolute_uris_are_kept_opaque(text: str) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, AbsoluteUri)
    assert str(uri) == text
    scheme, _, rest = text.partition(":")
    assert (uri.scheme, uri.opaque) == (scheme, rest)
    assert uri.param("transport") is None and not uri.has_param("lr")


def test_service_urns() -> None:
    for text in ["urn:service:sos", "urn:service:sos.fire", "urn:service:test.sos", "URN:SERVICE:SOS"]:
        assert parse_uri(text).is_service_urn  # type: ignore[union-attr]
    assert not parse_uri("urn:nena:callid:1").is_service_urn  # type: ignore[union-attr]
    assert not parse_uri("tel:911").is_service_urn  # type: ignore[union-attr]
    # service URNs compare case-insensitively (RFC 5031 §3)
    assert parse_uri("urn:service:SOS.fire").equivalent(parse_uri("URN:Service:sos.FIRE"))
    assert not parse_uri("urn:service:sos").equivalent(parse_uri("urn:service:sos.fire"))
    assert not parse_uri("urn:service:sos").equivalent(parse_uri("sip:sos@example.com"))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip",
        ":foo",
        "sip:",
        "1sip:a@b",
        "sip:a b@c",
        "sip:a@b\t",
        "sip:@host",
        "sip:a@",
        "sip:a@ho st",
        "sip:a@host:port",
        "sip:a@host:65536",
        "sip:a@host:\u0665\u0660",
        "sip:a@[2001:db8::1",
        "sip:a@[2001:db8::1]5060",
        "sip:a@[zz::1]",
        "sip:a@b;=1",
        "sip:a@b;x=",
        "sip:a@b;;x",
        "sip:a@b?x",
        "sip:a@b?=1",
        "tel: 911",
        "sip:a@h\u00e9st",
    ],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_param_lookup_is_case_insensitive() -> None:
    uri = parse_uri("sip:a@b;Transport=TCP;LR;MAddr=239.255.255.1")
    assert uri.param("transport") == uri.param("TRANSPORT") == "TCP"
    assert uri.transport == "TCP" and parse_uri("sip:a@b;transport=udp").transport == "UDP"
    assert uri.param("lr") == "" and uri.has_param("Lr")
    assert uri.param("maddr") == "239.255.255.1"
    assert uri.param("user") is None and not uri.has_param("user") and parse_uri("sip:a@b").transport is None


def test_with_and_without_params() -> None:
    uri = parse_uri("sip:ap1@127.0.0.1:5070;Transport=udp;lr")
    tcp = uri.with_params(transport="tcp")  # type: ignore[union-attr]
    assert str(tcp) == "sip:ap1@127.0.0.1:5070;lr;transport=tcp"
    assert str(uri.without_params("LR", "transport")) == "sip:ap1@127.0.0.1:5070"  # type: ignore[union-attr]
    assert uri.is_secure is False and parse_uri("SIPS:a@b").is_secure  # type: ignore[union-attr]
    assert uri.host_port == "127.0.0.1:5070"  # type: ignore[union-attr]


# --- RFC 3261 §19.1.4 comparison --------------------------------------------------------------

EQUIVALENT = [
    # the RFC's own examples
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
     "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
    ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
     "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
    # parameter values and names compare case-insensitively, escapes resolved
    ("sip:a@b;transport=UDP", "sip:a@b;transport=udp"),
    ("sip:a@b;user=phone;ttl=5;method=INVITE", "sip:a@b;METHOD=invite;TTL=5;User=Phone"),
    ("sip:a@b;maddr=239.255.255.1", "sip:a@b;maddr=239.255.255.1;lr"),
    ("sip:a@b;x=%41", "sip:a@b;x=a"),
    # escaped unreserved characters in the user part
    ("sip:%41lice@h", "sip:Alice@h"),
    ("sip:a%2db@h", "sip:a-b@h"),
    ("sip:a%3bb@h", "sip:a%3Bb@h"),  # reserved stays escaped, hex case aside
    ("sip:u:p%61ss@h", "sip:u:pass@h"),
    # scheme case; IPv6 references as addresses (RFC 5954 §4)
    ("SIP:a@b", "sip:a@b"),
    ("sip:a@[2001:db8::1]:5060", "sip:a@[2001:DB8:0:0::1]:5060"),
    ("sip:[::ffff:192.0.2.1]", "sip:[::FFFF:C000:0201]"),
]

NOT_EQUIVALENT = [
    # the RFC's own examples
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),  # user is case-sensitive
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
    # user, ttl, method, maddr (and transport) present in only one never match
    ("sip:a@b;user=phone", "sip:a@b"),
    ("sip:a@b;ttl=1", "sip:a@b"),
    ("sip:a@b;method=INVITE", "sip:a@b"),
    ("sip:a@b;maddr=239.255.255.1", "sip:a@b"),
    ("sip:a@b;transport=udp", "sip:a@b"),
    # a flag is not a value
    ("sip:a@b;x", "sip:a@b;x=1"),
    # an escaped reserved character is not the character (§19.1.4: reserved set excepted)
    ("sip:alice;day=tuesday@atlanta.com", "sip:alice%3Bday=tuesday@atlanta.com"),
    ("sip:a%40b@h", "sip:a%2540b@h"),
    # sip vs sips; password present in one
    ("sips:a@b", "sip:a@b"),
    ("sip:a:p@b", "sip:a@b"),
    # headers are never ignored
    ("sip:a@b?x=1", "sip:a@b?x=2"),
    ("sip:a@b?x=1&x=2", "sip:a@b?x=1"),
    ("sip:a@[2001:db8::1]", "sip:a@[2001:db8::2]"),
]


@pytest.mark.parametrize(("a", "b"), EQUIVALENT)
def test_equivalent(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert ua.equivalent(ub) and ub.equivalent(ua)


@pytest.mark.parametrize(("a", "b"), NOT_EQUIVALENT)
def test_not_equivalent(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert not ua.equivalent(ub) and not ub.equivalent(ua)


def test_equivalent_is_not_equality() -> None:
    a, b = parse_uri("sip:a@b;transport=UDP"), parse_uri("sip:a@b;transport=udp")
    assert a != b and a.equivalent(b)
    assert not a.equivalent("sip:a@b;transport=UDP")
    assert not parse_uri("tel:911").equivalent(a)


def test_parse_results_are_shared_and_immutable() -> None:
    a = parse_uri("sip:ap1@127.0.0.1:5070")
    assert parse_uri("sip:ap1@127.0.0.1:5070") is a  # cached by text
    with pytest.raises(AttributeError):
        a.host = "evil"  # type: ignore[misc]
    assert hash(a) == hash(SipUri("sip", "ap1", None, "127.0.0.1", 5070))


def test_long_uris_are_parsed_but_not_kept() -> None:
    # The parse caches are bounded in entries and in the size of what they keep.
    text = "sip:" + "a" * 600 + "@example.com"
    first, second = parse_uri(text), parse_uri(text)
    assert first == second and first is not second
