"""Is this call an emergency call, a test call, or neither? (RFC 5031, RFC 6881 §15)

    emergency   Request-URI or To is ``urn:service:sos`` or any ``sos.`` sub-service
                (``sos.fire``, ``sos.police``, ``sos.ambulance``, ``sos.poison``, ``sos.marine``,
                ``sos.mountain``, ``sos.animal-control``, ``sos.physician``, and any later one);
                or the Request-URI or To is one of the PSAP's own URIs (configured).
    test        Request-URI or To is ``urn:service:test.sos`` or a child of it
                (``test.sos.fire``), and nothing says ``sos``.
    other       anything else (an administrative line, a misdialled URI, ``urn:service:911``).

Rules, in order — a real emergency must never be taken for anything else:

1. ``sos`` in the Request-URI *or* the To wins: an ESRP rewrites the Request-URI to the PSAP's
   URI and leaves the service URN in To, so To counts as much as the Request-URI.
2. Then a test URN in either: the ESRP hands a test call on the same way, so a PSAP URI in the
   Request-URI with ``test.sos`` in To is a test call, not an emergency.
3. Then a PSAP URI in the Request-URI or To.

Service URNs compare case-insensitively (RFC 5031 §3: scheme, ``service`` and the service
labels alike). ``urn:service:test:sos`` (a colon where RFC 6881 has a dot) is read as a test
call: the ng911-dev conformance lab sends exactly that for its test calls. PSAP URIs match on
user, host (case-insensitive; IPv6 by address) and port, an absent port being the scheme's
default (5060 for sip:, 5061 for sips:); other URI parameters are ignored.
"""
from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Iterable, Literal
from urllib.parse import unquote

from ng911.sip.errors import SipParseError
from ng911.sip.message import Request
from ng911.sip.uri import AbsoluteUri, SipUri, Uri, parse_uri

__all__ = [
    "EMERGENCY",
    "OTHER",
    "TEST",
    "CallKind",
    "classify",
    "is_emergency_service",
    "is_test_service",
    "parse_psap_uris",
    "same_target",
    "service_of",
]

CallKind = Literal["emergency", "test", "other"]
EMERGENCY: CallKind = "emergency"
TEST: CallKind = "test"
OTHER: CallKind = "other"
_DEFAULT_PORT = {"sip": 5060, "sips": 5061}


def service_of(uri: Uri | None) -> str | None:
    """The service of a service URN lower-cased (``sos.fire`` for ``URN:Service:SOS.Fire``),
    else None."""
    if not isinstance(uri, AbsoluteUri) or uri.scheme.lower() != "urn":
        return None
    nid, sep, service = uri.opaque.partition(":")
    if not sep or nid.lower() != "service" or not service:
        return None
    return service.lower()


def is_emergency_service(service: str | None) -> bool:
    return service is not None and (service == "sos" or service.startswith("sos."))


def is_test_service(service: str | None) -> bool:
    if service is None:
        return False
    for root in ("test.sos", "test:sos"):
        if service == root or service.startswith(root + "."):
            return True
    return False


def _host_key(host: str) -> str:
    if host.startswith("["):
        try:
            return ipaddress.IPv6Address(host[1:-1]).compressed
        except ValueError:
            pass
    return host.lower().rstrip(".")


def same_target(a: Uri, b: Uri) -> bool:
    """Do two URIs name the same PSAP target? SIP/SIPS: same user (after unescaping), same
    host (case-insensitive), same port with an absent port read as the scheme's default.
    Other URIs: RFC 3986-style equality, case-insensitive."""
    if isinstance(a, SipUri) and isinstance(b, SipUri):
        if unquote(a.user or "") != unquote(b.user or ""):
            return False
        if _host_key(a.host) != _host_key(b.host):
            return False
        port_a = a.port if a.port is not None else _DEFAULT_PORT[a.scheme.lower()]
        port_b = b.port if b.port is not None else _DEFAULT_PORT[b.scheme.lower()]
        return port_a == port_b
    if isinstance(a, AbsoluteUri) and isinstance(b, AbsoluteUri):
        return a.equivalent(b)
    return False


@lru_cache(maxsize=256)
def _parse_psap(text: str) -> Uri:
    try:
        return parse_uri(text.strip())
    except SipParseError as exc:
        raise ValueError(f"bad PSAP URI {text!r}: {exc.reason}") from None


def parse_psap_uris(uris: Iterable[str | Uri]) -> tuple[Uri, ...]:
    """Parse configured PSAP URIs; raise ValueError naming the first bad one (for config
    checking at start-up, so `classify` never meets one)."""
    return tuple(u if isinstance(u, (SipUri, AbsoluteUri)) else _parse_psap(u) for u in uris)


def _to_uri(request: Request) -> Uri | None:
    try:
        return request.to.uri
    except SipParseError:  # no To: classify on the Request-URI alone
        return None


def classify(request: Request, psap_uris: Iterable[str | Uri] = ()) -> CallKind:
    """'emergency', 'test' or 'other' for an incoming request (see the module docstring).

    ``psap_uris``: the PSAP's own URIs, as strings or parsed URIs. A string that is not a URI
    raises ValueError — check configuration with `parse_psap_uris` first.
    """
    targets = [request.uri]
    to = _to_uri(request)
    if to is not None:
        targets.append(to)
    services = [service_of(uri) for uri in targets]
    if any(is_emergency_service(s) for s in services):
        return EMERGENCY
    if any(is_test_service(s) for s in services):
        return TEST
    psaps = parse_psap_uris(psap_uris)
    if any(same_target(uri, psap) for uri in targets for psap in psaps):
        return EMERGENCY
    return OTHER
