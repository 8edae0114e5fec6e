"""Emergency, test or other: service URNs (RFC 5031, RFC 6881 §15) and configured PSAP URIs."""
from __future__ import annotations

import pytest

from ng911.emergency.classify import (
    classify,
    is_emergency_service,
    is_test_service,
    parse_psap_uris,
    same_target,
    service_of,
)
from ng911.sip.message import Headers, Request
from ng911.sip.uri import parse_uri

PSAP = ["sip:sos@127.0.0.1:5060", "sips:psap@Psap.Example.NET"]


def request(ruri: str, to: str | None = None) -> Request:
    headers = Headers() if to is None else Headers.of(("To", to))
    return Request("INVITE", parse_uri(ruri), headers)


@pytest.mark.parametrize("urn", [
    "urn:service:sos", "URN:Service:SOS", "urn:SERVICE:sos.fire", "urn:service:sos.police",
    "urn:service:sos.ambulance", "urn:service:sos.poison", "urn:service:sos.marine",
    "urn:service:sos.mountain", "urn:service:sos.animal-control", "urn:service:sos.physician",
    "urn:service:sos.gas", "urn:service:SOS.Fire.Brigade",
])
def test_sos_and_every_sub_service_is_an_emergency(urn: str) -> None:
    assert classify(request(urn)) == "emergency"
    assert classify(request("sip:psap@10.0.0.1", f"<{urn}>")) == "emergency"  # ESRP kept it in To


@pytest.mark.parametrize("urn", ["urn:service:test.sos", "URN:SERVICE:TEST.SOS", "urn:service:test.sos.fire",
                                 "urn:service:test.sos.animal-control", "urn:service:test:sos"])
def test_test_sos_and_children_are_test_calls(urn: str) -> None:
    assert classify(request(urn, urn)) == "test"
    # the usual i3 shape: the ESRP routed it to the PSAP URI and left the URN in To
    assert classify(request("sip:sos@127.0.0.1:5060", urn), PSAP) == "test"


@pytest.mark.parametrize("ruri", ["urn:service:sosx", "urn:service:911", "urn:service:test",
                                  "urn:service:counseling", "urn:service:test.sosx", "urn:nena:service:sos",
                                  "sip:admin@example.com", "tel:911", "urn:service:x"])
def test_other(ruri: str) -> None:
    assert classify(request(ruri, "<sip:admin@example.com>"), PSAP) == "other"


def test_a_real_emergency_is_never_taken_for_a_test() -> None:
    assert classify(request("urn:service:test.sos", "<urn:service:sos>")) == "emergency"
    assert classify(request("urn:service:sos", "<urn:service:test.sos>")) == "emergency"


@pytest.mark.parametrize(("ruri", "kind"), [
    ("sip:sos@127.0.0.1:5060", "emergency"),
    ("sip:sos@127.0.0.1", "emergency"),              # absent port = 5060
    ("sip:sos@127.0.0.1:5060;transport=tcp;lr", "emergency"),  # URI parameters ignored
    ("sip:sos@127.0.0.1:5062", "other"),
    ("sip:SOS@127.0.0.1:5060", "other"),             # the user part is case-sensitive
    ("sip:sos@127.0.0.2:5060", "other"),
    ("sip:127.0.0.1:5060", "other"),
    ("sips:psap@psap.example.net", "emergency"),
    ("sips:psap@PSAP.example.net:5061", "emergency"),  # sips default port, host case
    ("sip:psap@psap.example.net:5061", "emergency"),
    ("sip:psap@psap.example.net", "other"),            # sip: defaults to 5060
    ("sip:p%73ap@psap.example.net:5061", "emergency"),  # escapes compare unescaped
])
def test_psap_uri_match(ruri: str, kind: str) -> None:
    assert classify(request(ruri, "<tel:+12025551212>"), PSAP) == kind


def test_psap_uri_in_to_and_ipv6() -> None:
    assert classify(request("sip:ap1@10.0.0.7", "<sip:sos@127.0.0.1>"), PSAP) == "emergency"
    assert classify(request("sip:psap@[::1]"), ["sip:psap@[0:0::1]:5060"]) == "emergency"
    assert classify(request("tel:+15551234"), ["tel:+15551234"]) == "emergency"
    assert classify(request("tel:+15551234"), ["sip:sos@127.0.0.1"]) == "other"


def test_without_to_the_request_uri_decides() -> None:
    assert classify(request("urn:service:sos")) == "emergency"
    assert classify(request("sip:x@example.com"), PSAP) == "other"


def test_bad_psap_uri_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="bad PSAP URI"):
        parse_psap_uris(["sip:sos@127.0.0.1", "not a uri"])
    with pytest.raises(ValueError, match="bad PSAP URI"):
        classify(request("sip:x@example.com"), ["nouri"])
    parsed = parse_psap_uris(PSAP)
    assert classify(request("sip:sos@127.0.0.1"), parsed) == "emergency"


def test_helpers() -> None:
    assert service_of(parse_uri("URN:Service:SOS.Fire")) == "sos.fire"
    assert service_of(parse_uri("urn:nena:x")) is None and service_of(parse_uri("sip:a@b")) is None
    assert service_of(None) is None
    assert is_emergency_service("sos.x") and not is_emergency_service("sosx") and not is_emergency_service(None)
    assert is_test_service("test.sos.x") and not is_test_service("test") and not is_test_service(None)
    assert same_target(parse_uri("sip:a@H"), parse_uri("sip:a@h:5060"))
    assert not same_target(parse_uri("sip:a@h"), parse_uri("tel:123"))
