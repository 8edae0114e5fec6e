"""The NG9-1-1 INVITEs of the ng911-dev conformance lab (NENA-STA-010.3 elements: BCF, ESRP,
OSP) through classify / extract / ensure_ids / headers_to_forward.

Each scenario that carries a PIDF-LO has its location checked (shape and coordinates, or the
civic fields); the ids and additional-data references are checked against the headers; the
garbled PIDF-LO yields a noted error with its part kept raw; nested multiparts are walked.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ng911.emergency import classify, ensure_ids, extract, headers_to_forward
from ng911.emergency.content import EmergencyContent
from ng911.emergency.ids import IdMinter, parse_emergency_id
from ng911.emergency.pidf import PidfError, parse_pidf
from ng911.sip.body import part_by_cid, walk
from ng911.sip.message import Request, SipParseError, parse_message

from .sipp import SIPP_INVITES, scenarios, sipp_message

pytestmark = pytest.mark.skipif(not SIPP_INVITES.is_dir(), reason="conformance scenarios not present")

PSAP_URIS = ["sip:sos@127.0.0.1:5060"]
LAB_CALL_ID = "urn:emergency:uid:callid:123ABCdefg123ABCdefg123ABCdefg12:test.com"
LAB_INCIDENT_ID = "urn:emergency:uid:incidentid:123ABCdefg123ABCdefg123ABCdefg12:test.com"
NYC = (40.71668300756087, -73.99069756654683)
EPSG_4326 = "urn:ogc:def:crs:EPSG::4326"
# Request-URIs (and To) that are not URIs at all: the parser turns these away with a 400
UNPARSEABLE = {"SIP_INVITE_from_BCF_incorrect.xml", "SIP_INVITE_from_OSP_incorrect_1.xml",
               "SIP_INVITE_from_OSP_incorrect_2.xml"}
PARSEABLE = [p for p in scenarios() if p.name not in UNPARSEABLE]


def invite(name: str) -> Request:
    msg = parse_message(sipp_message(name))
    assert isinstance(msg, Request)
    return msg


def content(name: str) -> EmergencyContent:
    return extract(invite(name))


def expected_kind(path: Path) -> str:
    if path.name in ("SIP_INVITE_regular_URI_admin_line.xml", "SIP_INVITE_from_OSP_incorrect_3.xml"):
        return "other"  # sip:admin@example.com; urn:service:911
    return "test" if "urn:service:test:sos" in path.read_text("iso-8859-1") else "emergency"


# --- every scenario ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PARSEABLE, ids=lambda p: p.stem)
def test_every_scenario_extracts_and_stores_as_json(path: Path) -> None:
    request = parse_message(sipp_message(path))
    assert isinstance(request, Request)
    got = extract(request)
    stored = json.loads(json.dumps(got.to_dict()))
    assert stored["call_id"] == got.call_id and len(stored["locations"]) == len(got.locations)
    assert classify(request, PSAP_URIS) == expected_kind(path)
    # what goes to the PSAP leg is exactly the received NG9-1-1 lines, in order
    forwarded = headers_to_forward(request)
    assert forwarded == [(n, v) for n, v in request.headers if (n, v) in forwarded]
    assert not {n.lower() for n, _ in forwarded} & {"via", "contact", "cseq", "call-id", "from", "to",
                                                     "max-forwards", "content-type", "content-length", "route"}


@pytest.mark.parametrize("name", sorted(UNPARSEABLE))
def test_scenarios_without_a_uri_never_reach_extract(name: str) -> None:
    with pytest.raises(SipParseError):
        parse_message(sipp_message(name))


@pytest.mark.parametrize("path", PARSEABLE, ids=lambda p: p.stem)
def test_every_pidf_part_is_accounted_for(path: Path) -> None:
    request = invite(path.name)
    pidf_parts = [p for p in walk(request) if p.mime_type == "application/pidf+xml"]
    got = extract(request)
    assert [b.raw for b in got.locations] == [p.body for p in pidf_parts]


# --- location by value ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "SIP_INVITE_location_PIDF-LO_Boundary1.xml",
    "SIP_INVITE_location_PIDF-LO_Boundary1_without_identifiers.xml",
    "SIP_INVITE_with_existing_Route_header.xml",
    "SIP_INVITE_regular_URI_admin_line.xml",
])
def test_point_in_a_tuple(name: str) -> None:
    got = content(name)
    assert [(g.kind, g.content_id, g.found) for g in got.geolocation] == [("by-value", "defaultlocation@127.0.0.1", True)]
    assert got.geolocation_routing is True
    (body,) = got.locations
    assert body.referenced and body.error is None and body.content_id == "defaultlocation@127.0.0.1"
    loc = got.location
    assert loc is not None and loc.entity == "sip:SENDER@127.0.0.1"
    (info,) = loc.infos
    assert (info.owner, info.owner_id, info.timestamp) == ("tuple", "0", "2050-05-15T12:30:00Z")
    (shape,) = info.shapes
    assert (shape.kind, shape.srs, shape.points) == ("Point", EPSG_4326, (NYC,))
    assert (shape.latitude, shape.longitude) == NYC and shape.raw.startswith("<gml:Point ")
    assert got.errors == ()


def test_civic_address_in_a_tuple() -> None:
    got = content("SIP_INVITE_location_PIDF-LO.xml")
    loc = got.location
    assert loc is not None and loc.shape is None
    assert loc.civic == {"country": "US", "A1": "MD", "A3": "Laurel", "HNO": "10", "RD": "TEST",
                         "STS": "Ave", "NAM": "TEST", "PC": "1234"}
    assert loc.timestamp == "2026-09-23T12:00:00.03"
    assert got.locations[0].referenced and got.errors == ()


@pytest.mark.parametrize("name", ["SIP_INVITE_from_BCF_with_SDP_PIDF-LO_NG-AACS.xml",
                                  "SIP_INVITE_from_OSP_with_SDP_PIDF-LO_NG-AACS.xml"])
def test_point_of_a_device_with_additional_data_by_value(name: str) -> None:
    request = invite(name)
    got = extract(request)
    assert [(g.uri, g.found) for g in got.geolocation] == [("cid:2222@ng911.example.com", True)]
    loc = got.location
    assert loc is not None and loc.entity == "pres:SENDER@127.0.0.1"
    (info,) = loc.infos
    assert (info.owner, info.owner_id, info.timestamp) == ("device", "SENDER", "2050-05-15T12:30:00Z")
    assert loc.shape is not None and loc.shape.points == (NYC,)
    # five additional-data blocks, each by value and each found in the body, none left over
    assert [(a.block, a.content_id, a.found, a.referenced) for a in got.additional_data] == [
        ("DeviceInfo", "3333@ng911.example.com", True, True),
        ("ProviderInfo", "4444@ng911.example.com", True, True),
        ("ServiceInfo", "5555@ng911.example.com", True, True),
        ("Control", "6666@ng911.example.com", True, True),
        ("VEDS", "7777@ng911.example.com", True, True),
    ]
    for block in got.additional_data:
        part = part_by_cid(request, block.uri or "")
        assert part is not None and block.raw == part.body and block.content_type == part.content_type
    assert got.errors == ()


def test_complex_esrp_invite() -> None:
    got = content("SIP_INVITE_from_ESRP_with_complex_multipart_mixed_SDP_PIDFLO_AddData_NGAACN.xml")
    assert (got.call_id, got.incident_id) == (LAB_CALL_ID, LAB_INCIDENT_ID)
    assert [str(r) for r in got.resource_priority] == ["esnet.1"]
    loc = got.location
    assert loc is not None and loc.entity == "pres:+12025551212@test.com"
    assert loc.infos[0].owner == "tuple" and loc.infos[0].owner_id == "location-data"
    assert loc.shape is not None and loc.shape.points == ((50.6199, 26.2516),)
    # Control and VEDS are named by Call-Info; ProviderInfo, DeviceInfo, SubscriberInfo are in
    # the body with no Call-Info naming them: kept, marked unreferenced
    assert [(a.purpose, a.by_value, a.found, a.referenced) for a in got.additional_data] == [
        ("EmergencyCallData.Control", True, True, True),
        ("EmergencyCallData.VEDS", True, True, True),
        ("EmergencyCallData.ProviderInfo", True, True, False),
        ("EmergencyCallData.DeviceInfo", True, True, False),
        ("EmergencyCallData.SubscriberInfo", True, True, False),
    ]
    assert got.errors == ()


def test_garbled_pidf_lo_is_noted_and_kept_raw() -> None:
    request = invite("SIP_INVITE_location_garbled_PIDF-LO_body.xml")
    part = part_by_cid(request, "cid:1729610060@test.com")
    assert part is not None
    with pytest.raises(PidfError, match="not well-formed XML"):
        parse_pidf(part.body)
    got = extract(request)  # the call goes on: everything else is read
    assert (got.call_id, got.incident_id) == (LAB_CALL_ID, LAB_INCIDENT_ID)
    assert [(g.kind, g.found) for g in got.geolocation] == [("by-value", True)]
    (body,) = got.locations
    assert body.location is None and body.referenced and body.raw == part.body
    assert body.error is not None and "mismatched tag" in body.error
    assert got.location is None
    assert got.errors == (f"PIDF-LO 1729610060@test.com: {body.error}",)
    stored = got.to_dict()["locations"][0]
    assert stored["error"] == body.error and stored["body"]["text"] == part.body.decode()


# --- nested multiparts ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["SIP_INVITE_from_BCF_with_nested_multipart_body.xml",
                                  "SIP_INVITE_from_OSP_with_nested_multipart_body.xml"])
def test_nested_multipart_additional_data(name: str) -> None:
    got = content(name)
    assert [(a.block, a.content_id, a.by_value, a.found, a.referenced) for a in got.additional_data] == [
        ("VEDS", "1111@ng911.example.com", True, True, False),
        ("Control", "2222@ng911.example.com", True, True, False),
    ]
    assert got.additional_data[0].raw is not None and b"<AutomatedCrashNotification" in got.additional_data[0].raw
    assert got.locations == () and got.errors == ()


def test_nested_multipart_with_an_empty_pidf_lo() -> None:
    got = content("SIP_INVITE_from_ESRP_with_nested_multipart_mixed.xml")
    (body,) = got.locations
    assert body.content_id == "location@ng911.test" and not body.referenced  # no Geolocation header
    assert body.location is not None and body.location.is_empty
    assert body.location.infos[0].owner == "tuple" and body.location.infos[0].owner_id == "location-data"
    assert got.errors == ("PIDF-LO location@ng911.test: no shape or civic address in it",)
    assert [(a.block, a.content_id, a.referenced) for a in got.additional_data] == [
        ("DeviceInfo", "device@ng911.test", False)]


# --- by reference and bad references ---------------------------------------------------------------


def test_additional_data_by_reference() -> None:
    got = content("SIP_INVITE_from_BCF_3x_ADR_references.xml")
    assert [(a.block, a.uri, a.by_value) for a in got.additional_data] == [
        ("DeviceInfo", "https://adr.example.net/DeviceInfo/4242", False),
        ("ProviderInfo", "https://adr.example.net/ProviderInfo/4242", False),
        ("ServiceInfo", "https://adr.example.net/ServiceInfo/4242", False),
    ]
    # <source_id_…@test.system.bcf>;purpose=emergency-source: not a URI, kept and noted
    odd = got.call_info[-1]
    assert odd.purpose == "emergency-source" and odd.error == "URI without a scheme"
    assert got.errors == (f"Call-Info {odd.raw}: URI without a scheme",)
    assert (got.call_id, got.incident_id) == (LAB_CALL_ID, LAB_INCIDENT_ID)


@pytest.mark.parametrize("name", ["SIP_INVITE_location_reference.xml",
                                  "SIP_INVITE_incorrect_geolocation_for_dereference.xml"])
def test_location_by_reference(name: str) -> None:
    got = content(name)
    assert got.location_references == ("https://127.0.0.1/location",)
    assert got.geolocation_routing is True and got.locations == () and got.errors == ()


@pytest.mark.parametrize(("name", "error"), [
    ("SIP_INVITE_geolocation_HELD.xml", "not of the form <URI>"),
    ("SIP_INVITE_geolocation_SIP.xml", "URI without a scheme"),
])
def test_geolocation_that_is_not_a_uri(name: str, error: str) -> None:
    got = content(name)
    (geo,) = got.geolocation
    assert geo.kind == "invalid" and geo.error == error
    assert got.location_references == () and len(got.errors) == 1


def test_bad_resource_priority_is_noted() -> None:
    got = content("SIP_INVITE_from_OSP_incorrect_3.xml")
    assert got.resource_priority == ()
    assert got.errors == ("Resource-Priority test_incorrect: not namespace.priority",)


# --- ids -------------------------------------------------------------------------------------------


def test_ids_are_minted_when_absent_and_kept_when_present() -> None:
    request = invite("SIP_INVITE_from_OSP_with_SDP_PIDF-LO_NG-AACS.xml")
    assert extract(request).call_id is None
    headers = ensure_ids(request.headers, "ng911.example.net", IdMinter(random.Random(7).getrandbits))
    got = extract(request.replace(headers=headers))
    call_id = parse_emergency_id(got.call_id or "", "callid")
    incident_id = parse_emergency_id(got.incident_id or "", "incidentid")
    assert call_id is not None and incident_id is not None
    assert call_id.domain == incident_id.domain == "ng911.example.net"
    assert len(call_id.unique) == 32 and call_id.unique != incident_id.unique
    # the additional-data Call-Info lines stay as they were, in front of the new ones
    assert headers.get_all("Call-Info")[:5] == request.headers.get_all("Call-Info")

    present = invite("SIP_INVITE_location_PIDF-LO.xml")
    assert ensure_ids(present.headers, "ng911.example.net") == present.headers
