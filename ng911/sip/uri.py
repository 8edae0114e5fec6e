"""SIP and absolute URIs (RFC 3261 §19.1, §25.1; RFC 5118 IPv6 references).

Values are kept as written (escapes included) so a URI serialises back to the same text;
comparison (`SipUri.equivalent`) follows RFC 3261 §19.1.4 and unescapes where the RFC says so.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from urllib.parse import unquote

from ng911.sip.errors import SipParseError

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*\Z")
# hostname / IPv4address: alphanumerics, '-', '.', and '_' (seen in the field, harmless).
_HOSTNAME = re.compile(r"[A-Za-z0-9_\-.]+\Z")
# IPv6reference: hex digits, ':' and '.' (embedded IPv4); the RFC 5118 §4.10 three-colon form
# is tolerated rather than rejected (implementations disagree; being liberal loses nothing).
_IPV6REF = re.compile(r"\[[0-9A-Fa-f:.]+\]\Z")
_PARAM_NAME = re.compile(r"[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]+\Z")

Params = tuple[tuple[str, "str | None"], ...]


def _param(params: Params, name: str) -> str | None:
    name = name.lower()
    for key, value in params:
        if key.lower() == name:
            return value if value is not None else ""
    return None


def _has_param(params: Params, name: str) -> bool:
    name = name.lower()
    return any(key.lower() == name for key, _ in params)


def _format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


@dataclass(frozen=True, slots=True)
class SipUri:
    """A sip: or sips: URI."""

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        """The value of a URI parameter ('' for a flag such as ``lr``), or None when absent."""
        return _param(self.params, name)

    def has_param(self, name: str) -> bool:
        return _has_param(self.params, name)

    @property
    def transport(self) -> str | None:
        value = self.param("transport")
        return value.upper() if value else None

    @property
    def is_secure(self) -> bool:
        return self.scheme.lower() == "sips"

    @property
    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def with_params(self, **values: str | None) -> SipUri:
        """Set (or, with value ``False``-y sentinel None, add as flag) parameters by name."""
        params = [p for p in self.params if p[0].lower() not in {k.lower() for k in values}]
        params.extend((k, v) for k, v in values.items())
        return replace(self, params=tuple(params))

    def without_params(self, *names: str) -> SipUri:
        drop = {n.lower() for n in names}
        return replace(self, params=tuple(p for p in self.params if p[0].lower() not in drop))

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host_port)
        out.append(_format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers))
        return "".join(out)

    def equivalent(self, other: object) -> bool:
        """RFC 3261 §19.1.4 URI comparison."""
        if not isinstance(other, SipUri):
            return False
        if self.scheme.lower() != other.scheme.lower():
            return False
        if _unq(self.user) != _unq(other.user) or _unq(self.password) != _unq(other.password):
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        mine = {k.lower(): v for k, v in self.params}
        theirs = {k.lower(): v for k, v in other.params}
        # user, ttl, method, maddr and transport must match if present in either.
        for key in ("user", "ttl", "method", "maddr", "transport"):
            if (key in mine) != (key in theirs):
                return False
        for key in mine.keys() & theirs.keys():
            a, b = mine[key], theirs[key]
            if _unq(a or "").lower() != _unq(b or "").lower():
                return False
        hmine = {k.lower(): _unq(v) for k, v in self.headers}
        htheirs = {k.lower(): _unq(v) for k, v in other.headers}
        return hmine == htheirs


def _unq(text: str | None) -> str | None:
    return None if text is None else unquote(text, errors="surrogateescape")


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """Any other URI (tel:, urn:, http:, cid: …): the scheme and the rest, kept opaque."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"

    def equivalent(self, other: object) -> bool:
        return (
            isinstance(other, AbsoluteUri)
            and self.scheme.lower() == other.scheme.lower()
            and self.opaque.lower() == other.opaque.lower()
        )

    @property
    def is_service_urn(self) -> bool:
        return self.scheme.lower() == "urn" and self.opaque.lower().startswith("service:")

    def param(self, name: str) -> str | None:
        return None

    def has_param(self, name: str) -> bool:
        return False


Uri = SipUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse a URI; raise `SipParseError` naming what is wrong."""
    colon = text.find(":")
    if colon <= 0:
        raise SipParseError("Bad URI: no scheme")
    scheme = text[:colon]
    if not _SCHEME.match(scheme):
        raise SipParseError("Bad URI scheme")
    rest = text[colon + 1 :]
    if not rest or any(c in rest for c in " \t\r\n"):
        raise SipParseError("Bad URI: empty or contains whitespace")
    if scheme.lower() not in ("sip", "sips"):
        return AbsoluteUri(scheme, rest)
    return _parse_sip(scheme, rest)


# The common shape — user@host:port;simple-params — parsed in one match; anything else
# (escapes in odd places, URI headers, IPv6, passwords) takes the general path below.
_FAST_SIP = re.compile(
    r"(?:([A-Za-z0-9\-_.!~*'()&=+$,/+%]+)@)?([A-Za-z0-9_\-.]+)(?::(\d{1,5}))?((?:;[A-Za-z0-9\-_.!~*'()%]+(?:=[A-Za-z0-9\-_.!~*'()%:]+)?)*)\Z"
)


def _parse_sip(scheme: str, rest: str) -> SipUri:
    m = _FAST_SIP.match(rest)
    if m is not None:
        user, host, port, ptext = m.groups()
        if port is not None and int(port) > 65535:
            raise SipParseError("Bad port")
        params: Params = ()
        if ptext:
            params = tuple(
                (n, v if eq else None) for n, eq, v in (item.partition("=") for item in ptext[1:].split(";"))
            )
        return SipUri(scheme, user, None, host, int(port) if port else None, params, ())
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        if not userinfo:
            raise SipParseError("Bad SIP URI: empty user part")
        user, sep, pw = userinfo.partition(":")
        password = pw if sep else None
    headers: tuple[tuple[str, str], ...] = ()
    q = rest.find("?")
    if q >= 0:
        rest, htext = rest[:q], rest[q + 1 :]
        hs = []
        for item in htext.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq:
                raise SipParseError("Bad SIP URI header")
            hs.append((name, value))
        headers = tuple(hs)
    hostport, _, ptext = rest.partition(";")
    params = ()
    if ptext:
        ps = []
        for item in ptext.split(";"):
            name, eq, value = item.partition("=")
            if not name or not _PARAM_NAME.match(name) or (eq and not value):
                raise SipParseError("Bad SIP URI parameter")
            ps.append((name, value if eq else None))
        params = tuple(ps)
    host, port = _split_hostport(hostport)
    return SipUri(scheme, user, password, host, port, params, headers)


def _split_hostport(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise SipParseError("Bad IPv6 reference")
        host, after = hostport[: end + 1], hostport[end + 1 :]
        if not _IPV6REF.match(host):
            raise SipParseError("Bad IPv6 reference")
        if not after:
            return host, None
        if not after.startswith(":"):
            raise SipParseError("Bad host:port")
        return host, _port(after[1:])
    host, sep, port = hostport.partition(":")
    if not host or not _HOSTNAME.match(host):
        raise SipParseError("Bad host in URI")
    return host, (_port(port) if sep else None)


def _port(text: str) -> int:
    if not text.isdigit() or len(text) > 5 or int(text) > 65535:
        raise SipParseError("Bad port")
    return int(text)


def split_host_port(text: str) -> tuple[str, int | None]:
    """Parse ``host[:port]`` (as in Via sent-by); IPv6 references keep their brackets."""
    return _split_hostport(text.strip())
