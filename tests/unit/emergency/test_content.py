"""extract / ensure_ids / headers_to_forward on hand-made requests: each rule on its own."""
from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ng911.emergency.content import FORWARDED_HEADERS, ensure_ids, extract, headers_to_forward
from ng911.emergency.ids import IdMinter
from ng911.sip.message import Headers, Request, parse_message
from ng911.sip.uri import parse_uri

HEAD = [
    "INVITE urn:service:sos SIP/2.0",
    "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1",
    "From: <sip:+12025551212@127.0.0.1>;tag=1",
    "To: <urn:service:sos>",
    "Call-ID: c1@127.0.0.1",
    "CSeq: 1 INVITE",
    "Max-Forwards: 70",
]
PIDF = (b'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
        b'xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10" xmlns:gml="http://www.opengis.net/gml" entity="pres:a@b">'
        b'<tuple id="t"><status><gp:geopriv><gp:location-info><gml:Point><gml:pos>%s</gml:pos></gml:Point>'
        b"</gp:location-info></gp:geopriv></status></tuple></presence>")
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"


def part(ctype: str, body: bytes, cid: str | None = None, *more: str) -> bytes:
    lines = [f"Content-Type: {ctype}"] + ([f"Content-ID: <{cid}>"] if cid else []) + list(more)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def multipart(boundary: str, *parts: bytes) -> bytes:
    return b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts) + b"--" + boundary.encode() + b"--\r\n"


def request(*headers: str, body: bytes = b"", ctype: str | None = None) -> Request:
    lines = HEAD + list(headers)
    if ctype:
        lines.append(f"Content-Type: {ctype}")
    lines.append(f"Content-Length: {len(body)}")
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert isinstance(msg, Request)
    return msg


def mixed(*parts: bytes) -> tuple[bytes, str]:
    return multipart("b1", *parts), "multipart/mixed; boundary=b1"


def test_a_plain_request_has_nothing_to_say() -> None:
    got = extract(request())
    assert got.to_dict() == {
        "geolocation": [], "geolocation_routing": None, "locations": [], "call_info": [], "call_id": None,
        "incident_id": None, "additional_data": [], "resource_priority": [], "history_info": [], "errors": []}
    assert got.location is None and got.location_references == ()


# --- Geolocation -----------------------------------------------------------------------------------


def test_geolocation_values_by_value_and_by_reference() -> None:
    body, ctype = mixed(part("application/sdp", SDP), part("application/pidf+xml", PIDF % b"1 2", "loc@bcf.example"))
    got = extract(request(
        "Geolocation: <cid:loc%40bcf.example>;inserted-by=bcf.example, <sips:lis@lis.example>",
        "Geolocation: <https://lis.example/loc/1>;loc-src=lis.example",
        "geolocation: <pres:alice@example.net>",
        "Geolocation-Routing: no",
        body=body, ctype=ctype))
    assert [(g.kind, g.uri) for g in got.geolocation] == [
        ("by-value", "cid:loc%40bcf.example"), ("by-reference", "sips:lis@lis.example"),
        ("by-reference", "https://lis.example/loc/1"), ("by-reference", "pres:alice@example.net")]
    assert got.geolocation[0].content_id == "loc@bcf.example" and got.geolocation[0].found
    assert dict(got.geolocation[0].params) == {"inserted-by": "bcf.example"}
    assert got.location_references == ("sips:lis@lis.example", "https://lis.example/loc/1", "pres:alice@example.net")
    assert got.geolocation_routing is False and got.errors == ()
    assert got.location is not None and got.location.shape is not None and got.location.shape.points == ((1.0, 2.0),)
    assert got.body_for(got.geolocation[0]) is got.locations[0] and got.body_for(got.geolocation[1]) is None


def test_cid_lookup_is_exact_then_case_insensitive() -> None:
    body, ctype = mixed(part("application/pidf+xml", PIDF % b"1 2", "Loc@BCF"))
    got = extract(request("Geolocation: <cid:loc@bcf>", body=body, ctype=ctype))
    assert got.geolocation[0].found and got.locations[0].referenced


@pytest.mark.parametrize(("geo", "error"), [
    ("<cid:missing@bcf>", "Geolocation cid:missing@bcf: no body part with that Content-ID"),
    ("<cid:sdp@bcf>", "Geolocation cid:sdp@bcf: names a application/sdp part"),
    ("LIS_URL", "Geolocation LIS_URL: not of the form <URI>"),
    ("<LOCATION>", "Geolocation <LOCATION>: URI without a scheme"),
])
def test_bad_geolocation_is_noted(geo: str, error: str) -> None:
    body, ctype = mixed(part("application/sdp", SDP, "sdp@bcf"))
    got = extract(request(f"Geolocation: {geo}", body=body, ctype=ctype))
    assert got.errors == (error,)


@pytest.mark.parametrize(("values", "routing", "errors"), [
    (["Geolocation-Routing: yes"], True, 0), (["Geolocation-Routing: No"], False, 0),
    (["Geolocation-Routing: maybe"], None, 1), (["Geolocation-Routing: yes", "Geolocation-Routing: no"], True, 1),
])
def test_geolocation_routing(values: list[str], routing: bool | None, errors: int) -> None:
    got = extract(request(*values))
    assert got.geolocation_routing is routing and len(got.errors) == errors


def test_the_referenced_location_is_preferred() -> None:
    body, ctype = mixed(part("application/pidf+xml", PIDF % b"1 1", "a@x"), part("application/pidf+xml", PIDF % b"2 2", "b@x"))
    got = extract(request("Geolocation: <cid:b@x>", body=body, ctype=ctype))
    assert [b.referenced for b in got.locations] == [False, True]
    assert got.location is not None and got.location.shape is not None and got.location.shape.points == ((2.0, 2.0),)
    unreferenced = extract(request(body=body, ctype=ctype)).location
    assert unreferenced is not None and unreferenced.shape is not None and unreferenced.shape.points == ((1.0, 1.0),)


def test_a_pidf_body_on_its_own() -> None:
    got = extract(request("Content-ID: <l@x>", "Geolocation: <cid:l@x>", body=PIDF % b"3 4", ctype="application/pidf+xml"))
    assert got.locations[0].content_id == "l@x" and got.locations[0].referenced and got.errors == ()


def test_a_bad_pidf_is_kept_raw_and_a_non_utf8_one_stored_as_base64() -> None:
    bad = b"<presence \xff"
    body, ctype = mixed(part("application/pidf+xml", bad, "l@x"))
    got = extract(request("Geolocation: <cid:l@x>", body=body, ctype=ctype))
    (loc,) = got.locations
    assert loc.location is None and loc.raw == bad and loc.error is not None
    stored = json.loads(json.dumps(got.to_dict()))
    assert stored["locations"][0]["body"] == {"base64": "PHByZXNlbmNlIP8="}
    assert stored["errors"] == [f"PIDF-LO l@x: {loc.error}"]


# --- bodies ----------------------------------------------------------------------------------------


def test_a_malformed_multipart_costs_only_the_body() -> None:
    got = extract(request("Resource-Priority: esnet.2", "Geolocation: <cid:l@x>",
                          body=b"--b1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n", ctype="multipart/mixed; boundary=b1"))
    assert [str(r) for r in got.resource_priority] == ["esnet.2"]
    assert got.errors == ("body: Bad multipart body (multipart/mixed; boundary=b1)",
                          "Geolocation cid:l@x: no body part with that Content-ID")


def test_a_bad_nested_multipart_does_not_hide_its_siblings() -> None:
    inner_bad = part("multipart/mixed; boundary=zz", b"--zz\r\nno close")
    body, ctype = mixed(part("application/sdp", SDP), inner_bad, part("application/pidf+xml", PIDF % b"5 6", "l@x"))
    got = extract(request("Geolocation: <cid:l@x>", body=body, ctype=ctype))
    assert got.locations[0].location is not None and got.geolocation[0].found
    assert got.errors == ("body: Bad multipart body (multipart/mixed; boundary=zz)",)


def test_deep_nesting_is_bounded() -> None:
    body = part("application/pidf+xml", PIDF % b"1 1", "deep@x")
    for n in range(12):
        body = part(f"multipart/mixed; boundary=n{n}", multipart(f"n{n}", body))
    head, _, inner = body.partition(b"\r\n\r\n")
    got = extract(request(body=inner, ctype=head.decode().partition(": ")[2]))
    assert got.locations == () and got.errors == ("body: multipart nested too deep",)


def test_a_bad_content_type_is_noted() -> None:
    got = extract(request(body=b"xx", ctype="garbage"))
    assert got.errors == ("body: Bad Content-Type (garbage)",)


# --- Call-Info: ids and additional data ---------------------------------------------------------------


def test_ids_first_one_wins_and_bad_ones_are_noted() -> None:
    got = extract(request(
        "Call-Info: <urn:emergency:uid:callid:aaa:bcf.example>;purpose=Emergency-CallID",
        "Call-Info: <urn:emergency:uid:callid:bbb:esrp.example>;purpose=emergency-CallId",
        "Call-Info: <urn:emergency:uid:incident:ccc:psap.example>;purpose=emergency-IncidentId"))
    assert got.call_id == "urn:emergency:uid:callid:aaa:bcf.example"
    assert got.incident_id == "urn:emergency:uid:incident:ccc:psap.example"  # kept as sent
    assert got.errors == (
        "Call-Info: more than one emergency-CallId; the first is used",
        "Call-Info emergency-IncidentId urn:emergency:uid:incident:ccc:psap.example: not a NENA incidentid URN")


def test_additional_data_references() -> None:
    body, ctype = mixed(part("application/sdp", SDP),
                        part("application/EmergencyCallData.Comment+xml", b"<c/>", "c@x"),
                        part("application/EmergencyCallData.eCall.MSD", b"\x01\x02", "msd@x"))
    got = extract(request(
        "Call-Info: <cid:c@x>;purpose=EmergencyCallData.Comment",
        "Call-Info: <https://adr.example/sub/1>;purpose=EmergencyCallData.SubscriberInfo",
        "Call-Info: <sip:adr@adr.example>;purpose=EmergencyCallData.ServiceInfo",
        "Call-Info: <cid:gone@x>;purpose=EmergencyCallData.DeviceInfo",
        "Call-Info: <http://example.com/photo.jpg>;purpose=icon",
        body=body, ctype=ctype))
    assert [(a.purpose, a.uri, a.by_value, a.found, a.referenced) for a in got.additional_data] == [
        ("EmergencyCallData.Comment", "cid:c@x", True, True, True),
        ("EmergencyCallData.SubscriberInfo", "https://adr.example/sub/1", False, None, True),
        ("EmergencyCallData.ServiceInfo", "sip:adr@adr.example", False, None, True),
        ("EmergencyCallData.DeviceInfo", "cid:gone@x", True, False, True),
        ("EmergencyCallData.eCall.MSD", None, True, True, False),
    ]
    assert got.additional_data[0].raw == b"<c/>" and got.additional_data[-1].block == "eCall.MSD"
    assert got.errors == ("Call-Info sip:adr@adr.example: additional data by reference is not http(s)",
                          "Call-Info cid:gone@x: no body part with that Content-ID")
    stored = json.loads(json.dumps(got.to_dict()))
    assert stored["additional_data"][-1]["body"] == {"base64": "AQI="}
    assert stored["additional_data"][1]["body"] is None
    assert [c["purpose"] for c in stored["call_info"]][-1] == "icon"


def test_priority_and_history_in_content() -> None:
    got = extract(request("Resource-Priority: esnet.0, wps.1", "Resource-Priority: bogus",
                          "History-Info: <urn:service:sos>;index=1, <sip:psap@p.example>;index=1.1;mp=1",
                          "History-Info: junk"))
    assert [str(r) for r in got.resource_priority] == ["esnet.0", "wps.1"]
    assert [h.index for h in got.history_info] == ["1", "1.1", None]
    assert got.errors == ("Resource-Priority bogus: not namespace.priority", "History-Info junk: not of the form <URI>")
    assert got.to_dict()["resource_priority"] == ["esnet.0", "wps.1"]


def test_errors_do_not_echo_a_peer_unbounded() -> None:
    # (not a raw CTL at the end: the parser refuses one now, RFC 3261 §25.1)
    got = extract(request("Geolocation: " + "x" * 5000 + "\u00e9"))
    (error,) = got.errors
    assert len(error) < 150 and error.endswith(": not of the form <URI>")


# --- ensure_ids ------------------------------------------------------------------------------------


def test_ensure_ids_adds_what_is_missing() -> None:
    headers = Headers.of(("Call-Info", "<cid:c@x>;purpose=EmergencyCallData.Comment"))
    out = ensure_ids(headers, "ng911.example.net", IdMinter(random.Random(1).getrandbits))
    rng = random.Random(1)
    call_bits, incident_bits = rng.getrandbits(128), rng.getrandbits(128)
    assert list(out) == [
        ("Call-Info", "<cid:c@x>;purpose=EmergencyCallData.Comment"),
        ("Call-Info", f"<urn:emergency:uid:callid:{call_bits:032x}:ng911.example.net>;purpose=emergency-CallId"),
        ("Call-Info", f"<urn:emergency:uid:incidentid:{incident_bits:032x}:ng911.example.net>;purpose=emergency-IncidentId"),
    ]
    assert ensure_ids(out, "ng911.example.net") == out  # idempotent


def test_ensure_ids_puts_new_lines_after_the_last_call_info() -> None:
    headers = Headers.of(("Call-Info", "<cid:a@x>;purpose=EmergencyCallData.Comment"), ("Priority", "emergency"),
                         ("call-info", "<cid:b@x>;purpose=EmergencyCallData.VEDS"), ("Content-Type", "application/sdp"))
    out = ensure_ids(headers, "h.example", IdMinter(lambda bits: 1))
    assert [name for name, _ in out] == ["Call-Info", "Priority", "call-info", "Call-Info", "Call-Info", "Content-Type"]
    assert [name for name, _ in ensure_ids(Headers.of(("Priority", "emergency")), "h.example")] == [
        "Priority", "Call-Info", "Call-Info"]


def test_ensure_ids_keeps_what_is_there() -> None:
    headers = Headers.of(("Call-Info", "<urn:emergency:uid:callid:x:bcf>;purpose=emergency-callid"))
    out = ensure_ids(headers, "ng911.example.net", IdMinter(lambda bits: 5))
    assert out.get_all("Call-Info") == [
        "<urn:emergency:uid:callid:x:bcf>;purpose=emergency-callid",
        "<urn:emergency:uid:incidentid:00000000000000000000000000000005:ng911.example.net>;purpose=emergency-IncidentId"]
    with pytest.raises(ValueError):
        ensure_ids(Headers(), "not a domain")


# --- forwarding ------------------------------------------------------------------------------------


def test_headers_to_forward() -> None:
    req = request(
        "Geolocation: <cid:l@x>", "Geolocation-Routing: yes", "Route: <sip:esrp@example;lr>",
        "Call-Info: <urn:emergency:uid:callid:a:b>;purpose=emergency-CallId", "Contact: <sip:a@127.0.0.1>",
        "Resource-Priority: esnet.1", "History-Info: <urn:service:sos>;index=1", "Priority: emergency",
        "P-Asserted-Identity: <sip:+12025551212@bcf.example>", "P-Asserted-Identity: <tel:+12025551212>",
        "Privacy: none", "P-Access-Network-Info: 3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=3114500011",
        "P-Charging-Vector: icid-value=1", "P-Preferred-Identity: <sip:x@y>", "Accept-Language: es, en;q=0.5",
        "Subject: help", "Identity: abc;info=<https://cert.example/c.pem>", "Date: Sat, 09 May 2026 12:00:00 GMT",
        "Reason: SIP;cause=200", "Session-ID: ab30317f1a784dc48ff824d0d3715d86", "User-Agent: phone",
        "Supported: 100rel", "Accept: application/sdp", "Content-Disposition: session", "s: compact subject",
    )
    assert headers_to_forward(req) == [
        ("Geolocation", "<cid:l@x>"), ("Geolocation-Routing", "yes"),
        ("Call-Info", "<urn:emergency:uid:callid:a:b>;purpose=emergency-CallId"),
        ("Resource-Priority", "esnet.1"), ("History-Info", "<urn:service:sos>;index=1"), ("Priority", "emergency"),
        ("P-Asserted-Identity", "<sip:+12025551212@bcf.example>"), ("P-Asserted-Identity", "<tel:+12025551212>"),
        ("Privacy", "none"), ("P-Access-Network-Info", "3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=3114500011"),
        ("Accept-Language", "es, en;q=0.5"), ("Subject", "help"),
        ("Identity", "abc;info=<https://cert.example/c.pem>"), ("Date", "Sat, 09 May 2026 12:00:00 GMT"),
        ("s", "compact subject"),
    ]
    assert "Via" not in FORWARDED_HEADERS and "Reason" not in FORWARDED_HEADERS
    assert headers_to_forward(request()) == []


# --- robustness --------------------------------------------------------------------------------------

_HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"), max_size=80)


@settings(max_examples=300, deadline=None)
@given(geo=_HEADER_TEXT, info=_HEADER_TEXT, rp=_HEADER_TEXT, hist=_HEADER_TEXT, routing=_HEADER_TEXT,
       body=st.binary(max_size=300), boundary=st.sampled_from(["b1", "x", "--"]))
def test_extract_never_raises(geo: str, info: str, rp: str, hist: str, routing: str, body: bytes, boundary: str) -> None:
    headers = Headers.of(("Geolocation", geo), ("Call-Info", info), ("Resource-Priority", rp), ("History-Info", hist),
                         ("Geolocation-Routing", routing), ("Content-Type", f"multipart/mixed; boundary={boundary}"))
    req = Request("INVITE", parse_uri("urn:service:sos"), headers, body)
    got = extract(req)
    json.dumps(got.to_dict())
    headers_to_forward(req)
    ensure_ids(req.headers, "h.example", IdMinter(lambda bits: 3))
