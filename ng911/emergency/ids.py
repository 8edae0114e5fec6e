"""NENA i3 call and incident identifiers (NENA-STA-010.3 §2.1.6, §2.1.7).

    urn:emergency:uid:callid:<unique>:<domain>        Call-Info purpose=emergency-CallId
    urn:emergency:uid:incidentid:<unique>:<domain>    Call-Info purpose=emergency-IncidentId

The first i3 element that handles a call (usually the BCF) names it; the PSAP names the incident.
The controller keeps what it receives and makes an id only when one is missing: the unique part
is 128 random bits in hex (32 characters, the most NENA allows) and the domain is our own FQDN.
Randomness comes from an injected ``rng(bits) -> int`` (``secrets.randbits`` by default,
``random.Random(seed).getrandbits`` in tests) — nothing here reads a clock or a global RNG.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Callable

__all__ = [
    "CALL_ID",
    "INCIDENT_ID",
    "EmergencyId",
    "IdMinter",
    "Rng",
    "new_call_id",
    "new_incident_id",
    "parse_emergency_id",
]

CALL_ID = "callid"
INCIDENT_ID = "incidentid"
_PREFIX = "urn:emergency:uid:"
UNIQUE_BITS = 128
# The unique part: unreserved URN characters other than ':' (which ends it). NENA caps it at 32;
# what others send is read liberally, up to 64. The domain is a host name.
_UNIQUE = re.compile(r"[A-Za-z0-9\-._~%]{1,64}\Z")
_DOMAIN = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
                     r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.?\Z")

Rng = Callable[[int], int]


@dataclass(frozen=True, slots=True)
class EmergencyId:
    """A parsed ``urn:emergency:uid:<kind>:<unique>:<domain>``; ``kind`` lower-cased."""

    kind: str
    unique: str
    domain: str

    @property
    def uri(self) -> str:
        return f"{_PREFIX}{self.kind}:{self.unique}:{self.domain}"

    def __str__(self) -> str:
        return self.uri


def parse_emergency_id(uri: str, kind: str | None = None) -> EmergencyId | None:
    """The id a URI names, or None when it is not a well-formed NENA uid (of ``kind`` when
    given: ``CALL_ID`` or ``INCIDENT_ID``). The ``urn:emergency:uid:`` prefix and the kind
    compare case-insensitively; the unique part and domain are kept as written."""
    if uri[: len(_PREFIX)].lower() != _PREFIX:
        return None
    found, sep, rest = uri[len(_PREFIX) :].partition(":")
    unique, sep2, domain = rest.partition(":")
    found = found.lower()
    if not sep or not sep2 or (kind is not None and found != kind):
        return None
    if found not in (CALL_ID, INCIDENT_ID) or not _UNIQUE.match(unique) or not _DOMAIN.match(domain):
        return None
    return EmergencyId(found, unique, domain)


def _mint(kind: str, domain: str, rng: Rng | None) -> str:
    if not _DOMAIN.match(domain):
        raise ValueError(f"not a domain name for an emergency id: {domain!r}")
    bits = (rng or secrets.randbits)(UNIQUE_BITS)
    if not 0 <= bits < 1 << UNIQUE_BITS:
        raise ValueError("rng returned a value outside 128 bits")
    return f"{_PREFIX}{kind}:{bits:032x}:{domain}"


def new_call_id(domain: str, rng: Rng | None = None) -> str:
    """A fresh ``urn:emergency:uid:callid:<32 hex>:<domain>``. Raises ValueError for a bad domain."""
    return _mint(CALL_ID, domain, rng)


def new_incident_id(domain: str, rng: Rng | None = None) -> str:
    """A fresh ``urn:emergency:uid:incidentid:<32 hex>:<domain>``."""
    return _mint(INCIDENT_ID, domain, rng)


class IdMinter:
    """Makes call and incident ids from one injected random source (see `ensure_ids`)."""

    def __init__(self, rng: Rng | None = None) -> None:
        self.rng = rng

    def call_id(self, domain: str) -> str:
        return new_call_id(domain, self.rng)

    def incident_id(self, domain: str) -> str:
        return new_incident_id(domain, self.rng)
