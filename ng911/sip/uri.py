"""SIP and absolute URIs (RFC 3261 §19.1, §25.1; RFC 5118 IPv6 references).

Values are kept as written (escapes included) so a URI serialises back to the same text;
comparison (`SipUri.equivalent`) follows RFC 3261 §19.1.4 and unescapes where the RFC says so.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from functools import lru_cache

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
        if key == name or key.lower() == name:  # names are nearly always written lower-case
            return value if value is not None else ""
    return None


def _has_param(params: Params, name: str) -> bool:
    name = name.lower()
    return any(key.lower() == name for key, _ in params)


def _format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def _fast_init(cls: type) -> None:
    """Give a frozen, slotted dataclass a ``_make(*fields)`` constructor for the parser.

    It sets each slot through its descriptor -- what the generated ``__init__`` does through
    ``object.__setattr__`` -- unrolled, at about half the cost. The parser builds values
    positionally from text it has validated, so skipping ``__init__`` loses nothing (these
    classes have no ``__post_init__``); equality, hashing, ``repr`` and ``replace`` stay the
    dataclass's own. Generated source, as ``dataclasses`` itself does.
    """
    names = list(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    env: dict[str, object] = {"_new": object.__new__, "_cls": cls}
    lines = [f"def _make({', '.join(names)}):", "    o = _new(_cls)"]
    for i, name in enumerate(names):
        env[f"_set{i}"] = cls.__dict__[name].__set__
        lines.append(f"    _set{i}(o, {name})")
    lines.append("    return o")
    exec("\n".join(lines), env)  # noqa: S102 - fixed template over the class's own field names
    cls._make = staticmethod(env["_make"])  # type: ignore[attr-defined]


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
        # userinfo is case-sensitive, compared after unescaping what need not be escaped.
        if _unq(self.user) != _unq(other.user) or _unq(self.password) != _unq(other.password):
            return False
        if _host_key(self.host) != _host_key(other.host) or self.port != other.port:
            return False
        mine = {_unq(k).lower(): v for k, v in self.params}
        theirs = {_unq(k).lower(): v for k, v in other.params}
        # user, ttl, method, maddr (and transport, per the §19.1.4 examples) in only one never match.
        for key in ("user", "ttl", "method", "maddr", "transport"):
            if (key in mine) != (key in theirs):
                return False
        for key in mine.keys() & theirs.keys():
            a, b = mine[key], theirs[key]
            if (a is None) != (b is None) or _unq(a or "").lower() != _unq(b or "").lower():
                return False
        # URI headers are never ignored: each must be in both and match (names case-insensitive).
        hmine = sorted((_unq(k).lower(), _unq(v)) for k, v in self.headers)
        htheirs = sorted((_unq(k).lower(), _unq(v)) for k, v in other.headers)
        return hmine == htheirs


# RFC 3261 §19.1.4: "Characters other than those in the reserved set (see RFC 2396) are
# equivalent to their %HEX HEX encoding" -- so %61 is 'a' but %3B is not ';'.
_RESERVED = frozenset(";/?:@&=+$,")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def _unescape_unreserved(m: re.Match[str]) -> str:
    ch = chr(int(m.group(1), 16))
    return "%" + m.group(1).upper() if ch in _RESERVED or ch == "%" else ch


def _unq(text: str | None) -> str | None:
    """Canonical form for comparison: unreserved escapes resolved, reserved ones upper-cased."""
    if text is None or "%" not in text:
        return text
    return _ESCAPE.sub(_unescape_unreserved, text)


def _host_key(host: str) -> str:
    # RFC 5954 §4: IPv6 references compare as addresses, not as text ([::1] is [0:0::1]).
    if host.startswith("["):
        try:
            return "[" + ipaddress.IPv6Address(host[1:-1]).compressed + "]"
        except ValueError:
            pass
    return host.lower()


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
_fast_init(SipUri)
_fast_init(AbsoluteUri)
_new_sip = SipUri._make  # type: ignore[attr-defined]
_new_abs = AbsoluteUri._make  # type: ignore[attr-defined]

# Parsed URIs are immutable, and a controller sees the same few hosts again and again (its
# peers, its answer points, urn:service:sos), so parse results are kept by their exact text.
# Bounded in entries (LRU) and in size (a long string is parsed, not kept: the cache must not
# become a way to make us hold megabytes); failures are not kept. headers.py does the same for
# Via lines, name-addrs and CSeq values.
CACHE_SIZE = 4096
CACHE_MAX_LEN = 512


def parse_uri(text: str) -> Uri:
    """Parse a URI; raise `SipParseError` naming what is wrong."""
    return _parse_uri_cached(text) if len(text) <= CACHE_MAX_LEN else _parse_uri(text)


def _parse_uri(text: str) -> Uri:
    colon = text.find(":")
    if colon <= 0:
        raise SipParseError("Bad URI: no scheme")
    scheme = text[:colon]
    if not _SCHEME.match(scheme):
        raise SipParseError("Bad URI scheme")
    rest = text[colon + 1 :]
    if not rest or _NOT_IN_URI.search(rest):
        raise SipParseError("Bad URI: empty, or a blank, control character or quote in it")
    if scheme.lower() not in ("sip", "sips"):
        return _new_abs(scheme, rest)  # type: ignore[no-any-return]
    return _parse_sip(scheme, rest)


# No URI grammar (RFC 3261 §25.1, RFC 3986) has room for a blank, a CTL or a DQUOTE: they
# must be %-escaped. (The message parser already refuses a raw CTL outside a quoted-string.)
_NOT_IN_URI = re.compile(r'[\x00-\x20\x7f"]')


# The common shape — user@host:port;simple-params — parsed in one match; anything else
# (escapes in odd places, URI headers, IPv6, passwords) takes the general path below.
_FAST_SIP = re.compile(
    r"(?:([A-Za-z0-9\-_.!~*'()&=+$,/+%]+)@)?([A-Za-z0-9_\-.]+)(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-_.!~*'()%]+(?:=[A-Za-z0-9\-_.!~*'()%:]+)?)*)\Z"
)


_parse_uri_cached = lru_cache(maxsize=CACHE_SIZE)(_parse_uri)


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
        port_number = int(port) if port else None
        return _new_sip(scheme, user, None, host, port_number, params, ())  # type: ignore[no-any-return]
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
    return _new_sip(scheme, user, password, host, port, params, headers)  # type: ignore[no-any-return]


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
    if not _is_digits(text) or len(text) > 5 or int(text) > 65535:
        raise SipParseError("Bad port")
    return int(text)


def _is_digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also says yes to '²' and Arabic-Indic digits."""
    return text.isascii() and text.isdigit()


def split_host_port(text: str) -> tuple[str, int | None]:
    """Parse ``host[:port]`` (as in Via sent-by); IPv6 references keep their brackets."""
    return _split_hostport(text.strip())
