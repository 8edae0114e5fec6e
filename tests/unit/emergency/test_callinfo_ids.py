"""Call-Info values (RFC 7852, NENA-STA-010.3) and the NENA call / incident ids."""
from __future__ import annotations

import random

import pytest

from ng911.emergency.callinfo import (
    CallInfo,
    call_info_entries,
    format_call_info,
    parse_call_info,
    split_uri_value,
    uri_scheme,
)
from ng911.emergency.ids import (
    EmergencyId,
    IdMinter,
    new_call_id,
    new_incident_id,
    parse_emergency_id,
)
from ng911.sip.message import Headers

# --- the <URI>;params splitter -------------------------------------------------------------------


@pytest.mark.parametrize(("value", "uri", "params", "error"), [
    ("<cid:loc@bcf.example.net>", "cid:loc@bcf.example.net", (), None),
    ('  <https://a.example/x?y=1>;purpose=EmergencyCallData.DeviceInfo ; x="a;b"', "https://a.example/x?y=1",
     (("purpose", "EmergencyCallData.DeviceInfo"), ("x", "a;b")), None),
    ("<sip:a@b>;inserted-by=esrp.example;used-for-routing", "sip:a@b",
     (("inserted-by", "esrp.example"), ("used-for-routing", None)), None),
    ("LIS_LOCATION_REFERENCE_URL", "LIS_LOCATION_REFERENCE_URL", (), "not of the form <URI>"),
    ("<sip:a@b", "<sip:a@b", (), "unterminated <URI>"),
    ("< >;purpose=x", "< >;purpose=x", (), "empty <URI>"),
    ("<sip:a@b>;=x", "sip:a@b", (), "bad parameters (Empty or bad header parameter)"),
])
def test_split_uri_value(value: str, uri: str, params: tuple, error: str | None) -> None:  # type: ignore[type-arg]
    got = split_uri_value(value)
    assert (got[0], got[1], got[3]) == (uri, params, error)


def test_uri_scheme() -> None:
    assert uri_scheme("CID:x@y") == "cid" and uri_scheme("https://x") == "https"
    assert uri_scheme("source_id@bcf") is None and uri_scheme("") is None


# --- Call-Info -------------------------------------------------------------------------------------


def test_parse_call_info_purposes_and_kinds() -> None:
    entries = parse_call_info([
        "<urn:emergency:uid:callid:abc:bcf.example.net>;purpose=emergency-CallId, "
        "<urn:emergency:uid:incidentid:def:psap.example.net>;purpose=Emergency-IncidentID",
        "<cid:dev@bcf>;purpose=EmergencyCallData.DeviceInfo",
        "<https://adr.example/sub>;purpose=emergencycalldata.SubscriberInfo;token=1",
        "<http://www.example.com/alice/photo.jpg> ;purpose=icon,",
        "<source_id_9876@bcf>;purpose=emergency-source",
    ])
    assert [e.uri for e in entries] == [
        "urn:emergency:uid:callid:abc:bcf.example.net", "urn:emergency:uid:incidentid:def:psap.example.net",
        "cid:dev@bcf", "https://adr.example/sub", "http://www.example.com/alice/photo.jpg", "source_id_9876@bcf"]
    assert entries[0].has_purpose("emergency-callid") and entries[1].has_purpose("emergency-IncidentId")
    assert [e.is_additional_data for e in entries] == [False, False, True, True, False, False]
    assert entries[2].is_by_value and not entries[3].is_by_value
    assert entries[3].param("TOKEN") == "1" and entries[3].param("nope") is None
    assert entries[5].error == "URI without a scheme" and entries[5].purpose == "emergency-source"
    assert entries[4].to_dict() == {"uri": "http://www.example.com/alice/photo.jpg", "purpose": "icon", "params": {}}
    assert entries[5].to_dict()["raw"] == "<source_id_9876@bcf>;purpose=emergency-source"


def test_call_info_from_headers_and_no_purpose() -> None:
    headers = Headers.of(("Call-Info", "<sip:x@y>"), ("Via", "SIP/2.0/UDP h"), ("call-info", "<tel:1>;purpose=info"))
    entries = call_info_entries(headers)
    assert [e.uri for e in entries] == ["sip:x@y", "tel:1"]
    assert entries[0].purpose is None and not entries[0].has_purpose("info") and not entries[0].is_additional_data
    assert CallInfo("cid:a").scheme == "cid"


def test_format_call_info() -> None:
    assert format_call_info("urn:emergency:uid:callid:1:h", "emergency-CallId") == \
        "<urn:emergency:uid:callid:1:h>;purpose=emergency-CallId"
    assert format_call_info("https://x", "EmergencyCallData.Comment", ("note", "two words"), ("flag", None)) == \
        '<https://x>;purpose=EmergencyCallData.Comment;note="two words";flag'
    for bad in ("", "a b", "<x>"):
        with pytest.raises(ValueError):
            format_call_info(bad, "x")
    with pytest.raises(ValueError):
        format_call_info("sip:a@b", "x", ("bad name", "v"))
    (round_trip,) = parse_call_info([format_call_info("cid:a@b", "EmergencyCallData.VEDS")])
    assert round_trip.uri == "cid:a@b" and round_trip.purpose == "EmergencyCallData.VEDS"


# --- ids -------------------------------------------------------------------------------------------


def test_mint_with_an_injected_rng() -> None:
    rng = random.Random(42).getrandbits
    expected = random.Random(42).getrandbits(128)
    call_id = new_call_id("ng911.example.net", rng)
    assert call_id == f"urn:emergency:uid:callid:{expected:032x}:ng911.example.net"
    incident = new_incident_id("ng911.example.net", rng)
    assert incident.startswith("urn:emergency:uid:incidentid:") and incident != call_id.replace("callid", "incidentid")
    assert new_call_id("h.example", lambda bits: 0) == "urn:emergency:uid:callid:" + "0" * 32 + ":h.example"
    minter = IdMinter(lambda bits: (1 << bits) - 1)
    assert minter.call_id("h") == "urn:emergency:uid:callid:" + "f" * 32 + ":h"
    assert minter.incident_id("h") == "urn:emergency:uid:incidentid:" + "f" * 32 + ":h"
    a, b = IdMinter().call_id("h"), IdMinter().call_id("h")  # secrets by default
    assert a != b and parse_emergency_id(a) is not None


def test_mint_refuses_a_bad_domain_or_rng() -> None:
    for domain in ("", "a b", "x:y", "-bad.example", "a" * 64 + ".example"):
        with pytest.raises(ValueError, match="not a domain name"):
            new_call_id(domain)
    with pytest.raises(ValueError, match="outside 128 bits"):
        new_call_id("h", lambda bits: 1 << bits)


@pytest.mark.parametrize(("uri", "kind", "parsed"), [
    ("urn:emergency:uid:callid:123ABCdefg123ABCdefg123ABCdefg12:test.com", None,
     EmergencyId("callid", "123ABCdefg123ABCdefg123ABCdefg12", "test.com")),
    ("URN:Emergency:UID:CallId:12345678901:test.system.bcf", "callid",
     EmergencyId("callid", "12345678901", "test.system.bcf")),
    ("urn:emergency:uid:incidentid:abc:psap.example.net", "incidentid", EmergencyId("incidentid", "abc", "psap.example.net")),
    ("urn:emergency:uid:incidentid:abc:psap.example.net", "callid", None),
    ("urn:emergency:uid:callid:abc", None, None),
    ("urn:emergency:uid:callid::h", None, None),
    ("urn:emergency:uid:callid:a b:h", None, None),
    ("urn:emergency:uid:other:abc:h", None, None),
    ("urn:emergency:uid:callid:abc:bad domain", None, None),
    ("urn:emergency:uid:callid:abc:h:extra", None, None),
    ("https://x", None, None),
])
def test_parse_emergency_id(uri: str, kind: str | None, parsed: EmergencyId | None) -> None:
    assert parse_emergency_id(uri, kind) == parsed
    if parsed is not None:
        assert str(parsed) == parsed.uri and parse_emergency_id(parsed.uri) == parsed
