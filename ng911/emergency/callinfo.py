"""Call-Info entries (RFC 3261 §20.9, RFC 7852 §4.1, NENA-STA-010.3 call and incident ids).

An NG9-1-1 INVITE carries several Call-Info values; their ``purpose`` says what each is:

    Call-Info: <urn:emergency:uid:callid:3f…:esrp.example.net>;purpose=emergency-CallId
    Call-Info: <urn:emergency:uid:incidentid:9a…:psap.example.net>;purpose=emergency-IncidentId
    Call-Info: <cid:dev@bcf.example.net>;purpose=EmergencyCallData.DeviceInfo      (by value)
    Call-Info: <https://adr.example.net/sub/42>;purpose=EmergencyCallData.SubscriberInfo (by reference)

Call-Info, Geolocation (RFC 6442) and History-Info (RFC 7044) share one shape, ``<URI> *(;param)``,
parsed here by `split_uri_value`. It is deliberately liberal: peers put things inside the angle
brackets that are not URIs (``<source_id_9876@bcf>``), and one odd value must not cost the call
the others — so a value that does not parse is kept, with ``error`` saying why, never raised.
Sans-I/O; no Twisted here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from ng911.sip.errors import SipParseError
from ng911.sip.headers import is_token, parse_params, quote_string, split_values, unquote_string
from ng911.sip.message import Headers
from ng911.sip.uri import Params

__all__ = [
    "ADDITIONAL_DATA_PREFIX",
    "PURPOSE_CALL_ID",
    "PURPOSE_INCIDENT_ID",
    "CallInfo",
    "call_info_entries",
    "format_call_info",
    "parse_call_info",
    "split_uri_value",
    "uri_scheme",
]

PURPOSE_CALL_ID = "emergency-CallId"
PURPOSE_INCIDENT_ID = "emergency-IncidentId"
# RFC 7852 §4.1: purpose=EmergencyCallData.<block> (ProviderInfo, ServiceInfo, DeviceInfo,
# SubscriberInfo, Comment; RFC 8147 eCall.MSD; RFC 8148 VEDS, Control; and later registrations).
ADDITIONAL_DATA_PREFIX = "EmergencyCallData."
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
MAX_ECHO = 80  # how much of a peer's text an error message repeats


def echo(text: str) -> str:
    """A peer's text fit to appear in an error note: printable, bounded."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text[: MAX_ECHO + 1])
    return cleaned if len(cleaned) <= MAX_ECHO else cleaned[:MAX_ECHO] + "…"


def uri_scheme(uri: str) -> str | None:
    """The URI's scheme lower-cased (``cid``, ``https``, ``urn``), or None when it has none."""
    m = _SCHEME.match(uri)
    return m.group(1).lower() if m else None


def split_uri_value(value: str) -> tuple[str, Params, str, str | None]:
    """Split one ``<URI> *(;param)`` header value.

    Returns ``(uri, params, params_text, error)``: the text between the angle brackets, the
    parsed parameters (names as written, values unquoted), the parameter text as written (to
    rebuild the value byte for byte), and None — or, when the value is not of that shape, the
    whole value as ``uri``, no parameters and a short reason in ``error``.
    """
    text = value.strip(" \t")
    if not text.startswith("<"):
        return text, (), "", "not of the form <URI>"
    end = text.find(">")
    if end < 0:
        return text, (), "", "unterminated <URI>"
    uri = text[1:end].strip(" \t")
    rest = text[end + 1 :]
    if not uri:
        return text, (), "", "empty <URI>"
    try:
        raw = parse_params(rest)
    except SipParseError as exc:
        return uri, (), rest, f"bad parameters ({exc.reason})"
    params = tuple((n, unquote_string(v) if v is not None and v[:1] == '"' else v) for n, v in raw)
    return uri, params, rest, None


def _param(params: Params, name: str) -> str | None:
    name = name.lower()
    for key, value in params:
        if key.lower() == name:
            return "" if value is None else value
    return None


@dataclass(frozen=True, slots=True)
class CallInfo:
    """One Call-Info value: the URI as written (no angle brackets) and its parameters.

    ``error`` is None for a well-formed value; otherwise it says what is wrong and ``uri`` holds
    what could be salvaged. ``raw`` is the value exactly as received.
    """

    uri: str
    params: Params = ()
    raw: str = ""
    error: str | None = None

    def param(self, name: str) -> str | None:
        """A parameter's value ('' for a bare name), None when absent; names case-insensitive."""
        return _param(self.params, name)

    @property
    def purpose(self) -> str | None:
        return self.param("purpose")

    @property
    def scheme(self) -> str | None:
        return uri_scheme(self.uri)

    def has_purpose(self, purpose: str) -> bool:
        """Purposes compare case-insensitively (peers differ on ``emergency-CallId``'s case)."""
        mine = self.purpose
        return mine is not None and mine.lower() == purpose.lower()

    @property
    def is_additional_data(self) -> bool:
        """An RFC 7852 additional-data reference (``purpose=EmergencyCallData.*``)."""
        purpose = self.purpose
        return purpose is not None and purpose.lower().startswith(ADDITIONAL_DATA_PREFIX.lower())

    @property
    def is_by_value(self) -> bool:
        """True when the URI is a ``cid:`` URL naming a body part of the same message."""
        return self.scheme == "cid"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "uri": self.uri,
            "purpose": self.purpose,
            "params": {k: v for k, v in self.params if k.lower() != "purpose"},
        }
        if self.error:
            out["error"] = self.error
            out["raw"] = self.raw
        return out


def parse_call_info(values: Iterable[str]) -> tuple[CallInfo, ...]:
    """Every Call-Info value of ``values`` (header lines or elements: commas outside <> and
    quotes separate values). Empty elements are skipped; nothing raises."""
    out: list[CallInfo] = []
    for line in values:
        for element in split_values(line):
            if not element:
                continue
            uri, params, _, error = split_uri_value(element)
            if error is None and uri_scheme(uri) is None:
                error = "URI without a scheme"
            out.append(CallInfo(uri, params, element, error))
    return tuple(out)


def call_info_entries(headers: Headers) -> tuple[CallInfo, ...]:
    """The Call-Info values of a message's headers, in order."""
    return parse_call_info(headers.get_all("Call-Info"))


def format_call_info(uri: str, purpose: str, *extra: tuple[str, str | None]) -> str:
    """``<uri>;purpose=…`` (and any extra parameters), quoting values that are not tokens."""
    if not uri or any(c in uri for c in "<>\r\n \t"):
        raise ValueError(f"not a URI for Call-Info: {uri!r}")
    out = [f"<{uri}>"]
    for name, value in (("purpose", purpose), *extra):
        if not is_token(name):
            raise ValueError(f"bad parameter name {name!r}")
        if value is None:
            out.append(f";{name}")
        else:
            out.append(f";{name}={value if is_token(value) else quote_string(value)}")
    return "".join(out)
