"""Everything NG9-1-1 in an incoming request: what the controller stores and what it forwards.

`extract(request) -> EmergencyContent` reads, never raising on a peer's content:

* ``Geolocation`` (RFC 6442 §4.1): each ``<URI>;params`` value. A ``cid:`` URL is location by
  value and is resolved to the body part whose Content-ID it names (``cid:loc@bcf`` ↔
  ``Content-ID: <loc@bcf>``, RFC 2392); http:, https:, sip:, sips:, pres: — any other URI —
  is location by reference, kept for dereferencing elsewhere. ``Geolocation-Routing``: yes/no.
* every ``application/pidf+xml`` body part, referenced or not, parsed by `pidf.parse_pidf`;
  a part that does not parse is kept raw with the reason noted (the call goes on regardless).
* ``Call-Info`` (RFC 7852, NENA-STA-010.3): all entries; the NENA call and incident ids
  (purposes ``emergency-CallId`` / ``emergency-IncidentId``); the additional-data references
  (``purpose=EmergencyCallData.*``) by value (``cid:``, resolved like Geolocation) or by
  reference (http/https); plus ``application/EmergencyCallData.*`` parts no Call-Info names.
* ``Resource-Priority`` (RFC 4412, esnet of RFC 7135) and ``History-Info`` (RFC 7044).

Problems are collected in ``errors`` as short notes. `EmergencyContent.to_dict()` is the JSON
the store keeps.

`ensure_ids(headers, domain, mint)` adds the NENA call/incident id Call-Info values a request
lacks. `headers_to_forward(request)` lists the header lines the PSAP leg carries unchanged —
see `FORWARDED_HEADERS` for what and why; its History-Info lines are the received ones, which
the PSAP leg replaces by `append_history(...)` (re-exported here from `history`).
Sans-I/O: no Twisted, no network.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import unquote

from ng911.emergency.callinfo import (
    ADDITIONAL_DATA_PREFIX,
    PURPOSE_CALL_ID,
    PURPOSE_INCIDENT_ID,
    CallInfo,
    call_info_entries,
    echo,
    format_call_info,
    split_uri_value,
    uri_scheme,
)
from ng911.emergency.history import HistoryEntry, append_history, parse_history_info
from ng911.emergency.ids import CALL_ID, INCIDENT_ID, IdMinter, parse_emergency_id
from ng911.emergency.pidf import Location, PidfError, parse_pidf
from ng911.emergency.priority import ResourcePriority, parse_resource_priorities
from ng911.sip.body import MAX_DEPTH, BodyPart
from ng911.sip.errors import SipParseError
from ng911.sip.headers import split_values
from ng911.sip.message import Headers, Message, canonical_name
from ng911.sip.uri import Params

__all__ = [
    "FORWARDED_HEADERS",
    "AdditionalData",
    "EmergencyContent",
    "GeolocationRef",
    "LocationBody",
    "append_history",
    "ensure_ids",
    "extract",
    "headers_to_forward",
]

PIDF_TYPES = frozenset({"application/pidf+xml", "application/pidf-lo+xml"})
_ADDITIONAL_TYPE = "application/" + ADDITIONAL_DATA_PREFIX.lower()

# The header fields the PSAP leg carries exactly as received (every line, in order).
#
# Forwarded: the NG9-1-1 content (Geolocation, Geolocation-Routing, Call-Info,
# Resource-Priority, History-Info — the controller appends its own History-Info entry with
# `history.append_history`), what the call-taker sees of the caller's identity and wishes
# (P-Asserted-Identity and Privacy — the ESInet and the PSAP are one trust domain, RFC 3325;
# Priority; Accept-Language, which NENA uses for language routing; Subject), the access
# network's cell/line id (P-Access-Network-Info, RFC 7315: a location hint), and the caller's
# signed identity (Identity, RFC 8224, with the Date it is checked against) for the PSAP to
# verify or not.
#
# Not forwarded: what the controller sets per leg — Via, Route, Record-Route, Contact, From,
# To, Call-ID, CSeq, Max-Forwards, Content-* (the bodies are carried, their framing is the
# controller's), Supported/Require/Allow/Accept, Session-Expires/Min-SE, Session-ID
# (RFC 7989 identifiers are per leg), User-Agent; Reason (it explains *this* request's cause
# on CANCEL/BYE, it does not travel onto a new INVITE); and the other P- headers, which are
# hop- or network-specific (P-Charging-Vector, P-Visited-Network-ID, P-Called-Party-ID, …) and
# could mislead a PSAP, so they are not passed on by pattern.
FORWARDED_HEADERS: tuple[str, ...] = (
    "Geolocation",
    "Geolocation-Routing",
    "Call-Info",
    "Resource-Priority",
    "History-Info",
    "Priority",
    "P-Asserted-Identity",
    "Privacy",
    "P-Access-Network-Info",
    "Accept-Language",
    "Subject",
    "Identity",
    "Date",
)
_FORWARDED_KEYS = frozenset(canonical_name(n) for n in FORWARDED_HEADERS)


_BINARY = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _text(data: bytes) -> dict[str, str]:
    """A body for the JSON store: ``{"text": …}`` when it is UTF-8 text, else ``{"base64": …}``
    (binary blocks such as an eCall MSD; and PostgreSQL's jsonb refuses NUL in text)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or _BINARY.search(text):
        return {"base64": base64.b64encode(data).decode("ascii")}
    return {"text": text}


@dataclass(frozen=True, slots=True)
class GeolocationRef:
    """One Geolocation value. ``kind``: ``by-value`` (a cid: URL), ``by-reference`` (any other
    URI) or ``invalid``. For by-value, ``content_id`` is the Content-ID it names and ``found``
    whether the body has that part."""

    uri: str
    kind: str
    params: Params = ()
    content_id: str | None = None
    found: bool | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "kind": self.kind,
            "params": dict(self.params),
            "content_id": self.content_id,
            "found": self.found,
            "error": self.error,
        }


@dataclass(frozen=True)
class LocationBody:
    """A PIDF-LO body part: its Content-ID, whether a Geolocation value points at it, the
    parsed `Location` (None when it did not parse, ``error`` then says why) and its octets."""

    content_id: str | None
    content_type: str
    referenced: bool
    location: Location | None
    error: str | None
    raw: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "content_id": self.content_id,
            "content_type": self.content_type,
            "referenced": self.referenced,
            "location": self.location.to_dict() if self.location is not None else None,
            "error": self.error,
            "body": _text(self.raw),
        }


@dataclass(frozen=True)
class AdditionalData:
    """An additional-data block (RFC 7852): ``purpose`` (``EmergencyCallData.DeviceInfo``);
    ``uri`` (None for a block in the body that no Call-Info names); by value (in this body,
    ``found`` says whether the part is there, ``raw`` holds it) or by reference."""

    purpose: str
    uri: str | None
    by_value: bool
    content_id: str | None = None
    content_type: str | None = None
    found: bool | None = None
    referenced: bool = True
    raw: bytes | None = None

    @property
    def block(self) -> str:
        """The block name after ``EmergencyCallData.`` (``DeviceInfo``, ``VEDS``, …)."""
        return self.purpose[len(ADDITIONAL_DATA_PREFIX) :]

    def to_dict(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "uri": self.uri,
            "by_value": self.by_value,
            "content_id": self.content_id,
            "content_type": self.content_type,
            "found": self.found,
            "referenced": self.referenced,
            "body": _text(self.raw) if self.raw is not None else None,
        }


@dataclass(frozen=True)
class EmergencyContent:
    """The NG9-1-1 content of one request (see the module docstring)."""

    geolocation: tuple[GeolocationRef, ...] = ()
    geolocation_routing: bool | None = None
    locations: tuple[LocationBody, ...] = ()
    call_info: tuple[CallInfo, ...] = ()
    call_id: str | None = None
    incident_id: str | None = None
    additional_data: tuple[AdditionalData, ...] = ()
    resource_priority: tuple[ResourcePriority, ...] = ()
    history_info: tuple[HistoryEntry, ...] = ()
    errors: tuple[str, ...] = ()

    @property
    def location(self) -> Location | None:
        """The location to show first: the first parsed PIDF-LO a Geolocation value points
        at, else the first parsed one in the body."""
        parsed = [b for b in self.locations if b.location is not None]
        for body in parsed:
            if body.referenced:
                return body.location
        return parsed[0].location if parsed else None

    def body_for(self, ref: GeolocationRef) -> LocationBody | None:
        """The PIDF-LO body part a by-value Geolocation value names, if the body has it."""
        if ref.content_id is None:
            return None
        cid = ref.content_id.lower()
        return next((b for b in self.locations if b.content_id and b.content_id.lower() == cid), None)

    @property
    def location_references(self) -> tuple[str, ...]:
        """The by-reference Geolocation URIs, in order (to dereference elsewhere)."""
        return tuple(g.uri for g in self.geolocation if g.kind == "by-reference")

    def to_dict(self) -> dict[str, Any]:
        return {
            "geolocation": [g.to_dict() for g in self.geolocation],
            "geolocation_routing": self.geolocation_routing,
            "locations": [b.to_dict() for b in self.locations],
            "call_info": [c.to_dict() for c in self.call_info],
            "call_id": self.call_id,
            "incident_id": self.incident_id,
            "additional_data": [a.to_dict() for a in self.additional_data],
            "resource_priority": [str(r) for r in self.resource_priority],
            "history_info": [h.to_dict() for h in self.history_info],
            "errors": list(self.errors),
        }


# --- body parts --------------------------------------------------------------------------------


def _leaves(msg: Message, errors: list[str]) -> list[BodyPart]:
    """The leaf parts of the body, depth-first in order; a malformed multipart (at any depth)
    is noted and skipped without hiding its well-formed siblings."""
    if not msg.body:
        return []
    out: list[BodyPart] = []
    stack: list[tuple[Iterator[BodyPart], int]] = [(iter((BodyPart.from_message(msg),)), 0)]
    while stack:
        it, depth = stack[-1]
        part = next(it, None)
        if part is None:
            stack.pop()
            continue
        try:
            if part.is_multipart:
                if depth >= MAX_DEPTH:
                    errors.append("body: multipart nested too deep")
                    continue
                stack.append((iter(part.parts), depth + 1))
                continue
        except SipParseError as exc:
            errors.append(f"body: {exc.reason} ({echo(part.content_type or 'no Content-Type')})")
            continue
        out.append(part)
    return out


def _mime(part: BodyPart) -> str | None:
    try:
        return part.mime_type
    except SipParseError:
        return None


class _Cids:
    """Content-ID → part, for cid: URLs (RFC 2392: ``cid:`` + the %-encoded Content-ID)."""

    def __init__(self, parts: list[BodyPart]) -> None:
        self.exact: dict[str, BodyPart] = {}
        self.folded: dict[str, BodyPart] = {}
        for part in parts:
            cid = part.content_id
            if cid:
                self.exact.setdefault(cid, part)
                self.folded.setdefault(cid.lower(), part)

    @staticmethod
    def content_id(uri: str) -> str:
        return unquote(uri[4:]).strip("<> \t")

    def find(self, uri: str) -> BodyPart | None:
        cid = self.content_id(uri)
        return self.exact.get(cid) or self.folded.get(cid.lower())


# --- extract -----------------------------------------------------------------------------------


def _geolocation(headers: Headers, cids: _Cids, errors: list[str]) -> tuple[GeolocationRef, ...]:
    out = []
    for line in headers.get_all("Geolocation"):
        for element in split_values(line):
            if not element:
                continue
            uri, params, _, error = split_uri_value(element)
            scheme = uri_scheme(uri) if error is None else None
            if error is None and scheme is None:
                error = "URI without a scheme"
            if error is not None:
                errors.append(f"Geolocation {echo(element)}: {error}")
                out.append(GeolocationRef(uri, "invalid", params, error=error))
            elif scheme == "cid":
                part = cids.find(uri)
                if part is None:
                    errors.append(f"Geolocation {echo(uri)}: no body part with that Content-ID")
                elif _mime(part) not in PIDF_TYPES:
                    errors.append(f"Geolocation {echo(uri)}: names a {echo(part.content_type or 'untyped')} part")
                out.append(GeolocationRef(uri, "by-value", params, cids.content_id(uri), part is not None))
            else:
                out.append(GeolocationRef(uri, "by-reference", params))
    return tuple(out)


def _geolocation_routing(headers: Headers, errors: list[str]) -> bool | None:
    values = headers.values("Geolocation-Routing")
    if not values:
        return None
    if len(values) > 1:
        errors.append("Geolocation-Routing: more than one value; the first is used")
    value = values[0].lower()
    if value in ("yes", "no"):
        return value == "yes"
    errors.append(f"Geolocation-Routing {echo(values[0])}: neither yes nor no")
    return None


def _locations(parts: list[BodyPart], geo: tuple[GeolocationRef, ...], errors: list[str]) -> tuple[LocationBody, ...]:
    pointed = {g.content_id.lower() for g in geo if g.content_id}
    out = []
    for part in parts:
        mime = _mime(part)
        if mime not in PIDF_TYPES:
            continue
        cid = part.content_id
        referenced = cid is not None and cid.lower() in pointed
        name = echo(cid or "(no Content-ID)")
        try:
            location: Location | None = parse_pidf(part.body)
            error = None
        except PidfError as exc:
            location, error = None, exc.reason
            errors.append(f"PIDF-LO {name}: {error}")
        if location is not None and location.is_empty:
            errors.append(f"PIDF-LO {name}: no shape or civic address in it")
        out.append(LocationBody(cid, mime, referenced, location, error, part.body))
    return tuple(out)


def _ids(entries: tuple[CallInfo, ...], errors: list[str]) -> tuple[str | None, str | None]:
    found: dict[str, str | None] = {CALL_ID: None, INCIDENT_ID: None}
    for kind, purpose in ((CALL_ID, PURPOSE_CALL_ID), (INCIDENT_ID, PURPOSE_INCIDENT_ID)):
        for entry in entries:
            if not entry.has_purpose(purpose):
                continue
            if found[kind] is None:
                found[kind] = entry.uri
                if parse_emergency_id(entry.uri, kind) is None:
                    errors.append(f"Call-Info {purpose} {echo(entry.uri)}: not a NENA {kind} URN")
            elif entry.uri != found[kind]:
                errors.append(f"Call-Info: more than one {purpose}; the first is used")
    return found[CALL_ID], found[INCIDENT_ID]


def _additional_data(entries: tuple[CallInfo, ...], parts: list[BodyPart], cids: _Cids,
                     errors: list[str]) -> tuple[AdditionalData, ...]:
    out: list[AdditionalData] = []
    named: set[int] = set()
    for entry in entries:
        if not entry.is_additional_data or entry.error:
            continue
        purpose = entry.purpose or ""
        if entry.is_by_value:
            part = cids.find(entry.uri)
            if part is None:
                errors.append(f"Call-Info {echo(entry.uri)}: no body part with that Content-ID")
            else:
                named.add(id(part))
            out.append(AdditionalData(
                purpose, entry.uri, True, _Cids.content_id(entry.uri),
                part.content_type if part else None, part is not None, True,
                part.body if part else None,
            ))
        else:
            if entry.scheme not in ("http", "https"):
                errors.append(f"Call-Info {echo(entry.uri)}: additional data by reference is not http(s)")
            out.append(AdditionalData(purpose, entry.uri, False))
    for part in parts:
        mime = _mime(part)
        if mime is None or not mime.startswith(_ADDITIONAL_TYPE) or id(part) in named:
            continue
        # application/EmergencyCallData.DeviceInfo+xml -> EmergencyCallData.DeviceInfo, as written
        written = (part.content_type or "").split(";")[0].strip().partition("/")[2]
        block = written[: -len("+xml")] if written.lower().endswith("+xml") else written
        out.append(AdditionalData(block, None, True, part.content_id, part.content_type, True, False, part.body))
    return tuple(out)


def extract(request: Message) -> EmergencyContent:
    """The NG9-1-1 content of ``request`` (normally an INVITE; any message works). Never
    raises for a peer's content: what cannot be read is noted in ``errors``."""
    errors: list[str] = []
    headers = request.headers
    parts = _leaves(request, errors)
    cids = _Cids(parts)
    geo = _geolocation(headers, cids, errors)
    routing = _geolocation_routing(headers, errors)
    locations = _locations(parts, geo, errors)
    entries = call_info_entries(headers)
    for entry in entries:
        if entry.error:
            errors.append(f"Call-Info {echo(entry.raw)}: {entry.error}")
    call_id, incident_id = _ids(entries, errors)
    additional = _additional_data(entries, parts, cids, errors)
    priorities, bad = parse_resource_priorities(headers.get_all("Resource-Priority"))
    errors.extend(f"Resource-Priority {echo(b)}: not namespace.priority" for b in bad)
    history = parse_history_info(headers.get_all("History-Info"))
    errors.extend(f"History-Info {echo(h.raw)}: {h.error}" for h in history if h.error)
    return EmergencyContent(
        geolocation=geo,
        geolocation_routing=routing,
        locations=locations,
        call_info=entries,
        call_id=call_id,
        incident_id=incident_id,
        additional_data=additional,
        resource_priority=priorities,
        history_info=history,
        errors=tuple(errors),
    )


# --- ids and forwarding --------------------------------------------------------------------------


def ensure_ids(headers: Headers, domain: str, mint: IdMinter | None = None) -> Headers:
    """``headers`` with a ``Call-Info: <urn:emergency:uid:callid:…:domain>;purpose=emergency-CallId``
    line added when no Call-Info has that purpose, and likewise for the incident id. An id that
    is present — even one not well formed — is the caller's and is left alone (downstream logs
    already know the call by it). ``domain``: our FQDN; ``mint`` makes the ids (an `IdMinter`
    over an injected rng in tests). Raises ValueError for a bad ``domain``."""
    mint = mint or IdMinter()
    entries = call_info_entries(headers)
    new: list[tuple[str, str]] = []
    if not any(e.has_purpose(PURPOSE_CALL_ID) for e in entries):
        new.append(("Call-Info", format_call_info(mint.call_id(domain), PURPOSE_CALL_ID)))
    if not any(e.has_purpose(PURPOSE_INCIDENT_ID) for e in entries):
        new.append(("Call-Info", format_call_info(mint.incident_id(domain), PURPOSE_INCIDENT_ID)))
    if not new:
        return headers
    # after the last Call-Info line, so the header reads in one piece; else at the end
    items = list(headers)
    at = max((i + 1 for i, (name, _) in enumerate(items) if canonical_name(name) == "call-info"), default=len(items))
    return Headers(items[:at] + new + items[at:])


def headers_to_forward(request: Message) -> list[tuple[str, str]]:
    """The ``(name, value)`` lines of ``request`` the PSAP leg carries unchanged: those of
    `FORWARDED_HEADERS`, every line, in the order received, names as written."""
    return [(name, value) for name, value in request.headers if canonical_name(name) in _FORWARDED_KEYS]
