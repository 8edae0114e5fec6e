"""SIP messages: bytes ⇄ Request/Response (RFC 3261 §7, §25). Sans-I/O: no Twisted here.

``parse_message(data)`` takes one whole message (a datagram, or a message framed off a
stream) and returns a frozen `Request` or `Response`, or raises `SipParseError` with a reason
fit for a 400. The structured headers a SIP element needs on every message (Via, CSeq, From,
To, Call-ID, Content-Length) are checked while parsing, so a message that parses can be
routed; absence of mandatory headers is reported by `missing_mandatory` (a 400, not a parse
failure: RFC 4475 §3.3.1). Other headers are parsed on first use and cached.

Headers keep their order and names as written (compact forms included) so a message can be
logged as received; `to_bytes()` always writes a Content-Length that matches the body.
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator

from ng911.sip.errors import SipParseError
from ng911.sip.headers import (
    CSeq,
    NameAddr,
    Via,
    is_token,
    parse_cseq,
    parse_name_addr,
    parse_name_addrs,
    parse_via,
    split_values,
)
from ng911.sip.uri import Uri, parse_uri

__all__ = [
    "Headers",
    "Message",
    "Request",
    "Response",
    "SipParseError",
    "canonical_name",
    "missing_mandatory",
    "parse_message",
]

COMPACT = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}
# Headers that must appear at most once (RFC 3261 §7.3.1; RFC 4475 §3.3.8, §3.3.9).
SINGLE = frozenset({"call-id", "cseq", "from", "to", "max-forwards", "content-length"})
_canon_cache: dict[str, str] = {}


class cached_property:  # noqa: N801 - functools' one takes a lock on every first access in 3.11
    """Compute an attribute on first access and keep it in the instance's __dict__."""

    def __init__(self, fn):  # type: ignore[no-untyped-def]
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __get__(self, obj, cls=None):  # type: ignore[no-untyped-def]
        if obj is None:
            return self
        value = self.fn(obj)
        obj.__dict__[self.name] = value
        return value


def canonical_name(name: str) -> str:
    """Lower-case, compact forms expanded: the key under which a header is looked up."""
    key = _canon_cache.get(name)
    if key is None:
        low = name.lower()
        key = COMPACT.get(low, low)
        if len(_canon_cache) < 4096:
            _canon_cache[name] = key
    return key


class Headers:
    """Ordered, immutable header lines: (name as written, unfolded value)."""

    __slots__ = ("_items", "_keys")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: tuple[tuple[str, str], ...] = tuple(items)
        self._keys: tuple[str, ...] = tuple(canonical_name(n) for n, _ in self._items)

    @classmethod
    def of(cls, *items: tuple[str, str]) -> Headers:
        return cls(items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({list(self._items)!r})"

    def __contains__(self, name: str) -> bool:
        return canonical_name(name) in self._keys

    def get(self, name: str) -> str | None:
        key = canonical_name(name)
        for k, (_, v) in zip(self._keys, self._items):
            if k == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        key = canonical_name(name)
        return [v for k, (_, v) in zip(self._keys, self._items) if k == key]

    def values(self, name: str) -> list[str]:
        """Comma-separated elements over every line of the header (for list headers)."""
        out: list[str] = []
        for line in self.get_all(name):
            out.extend(v for v in split_values(line) if v)
        return out

    def count(self, name: str) -> int:
        key = canonical_name(name)
        return self._keys.count(key)

    def set(self, name: str, value: str) -> Headers:
        """Replace every line of ``name`` by one line (at the first one's place, else appended)."""
        key = canonical_name(name)
        out: list[tuple[str, str]] = []
        placed = False
        for k, item in zip(self._keys, self._items):
            if k == key:
                if not placed:
                    out.append((item[0], value))
                    placed = True
            else:
                out.append(item)
        if not placed:
            out.append((name, value))
        return Headers(out)

    def add(self, name: str, value: str) -> Headers:
        return Headers(self._items + ((name, value),))

    def prepend(self, name: str, value: str) -> Headers:
        """Add a line before any existing line of that header (or at the top): Via, Route."""
        key = canonical_name(name)
        out = list(self._items)
        for i, k in enumerate(self._keys):
            if k == key:
                out.insert(i, (name, value))
                break
        else:
            out.insert(0, (name, value))
        return Headers(out)

    def remove(self, name: str) -> Headers:
        key = canonical_name(name)
        return Headers(item for k, item in zip(self._keys, self._items) if k != key)

    def remove_first_value(self, name: str) -> Headers:
        """Drop the first element of a list header (the top Via of a response, say)."""
        key = canonical_name(name)
        out = list(self._items)
        for i, k in enumerate(self._keys):
            if k == key:
                rest = split_values(out[i][1])[1:]
                if rest:
                    out[i] = (out[i][0], ", ".join(rest))
                else:
                    del out[i]
                break
        return Headers(out)


class Message:
    """Common to requests and responses. Immutable: derive changed copies with ``replace``."""

    headers: Headers
    body: bytes
    is_request = False

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; use replace()")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    # --- structured access; parsed once, cached on the instance ---------------------------
    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(f"Missing {name} header")
        return value

    @cached_property
    def call_id(self) -> str:
        return self._required("Call-ID")

    @cached_property
    def cseq(self) -> CSeq:
        return parse_cseq(self._required("CSeq"))

    @cached_property
    def vias(self) -> tuple[Via, ...]:
        out: list[Via] = []
        for line in self.headers.get_all("Via"):
            out.extend(parse_via(line))
        if not out:
            raise SipParseError("Missing Via header")
        return tuple(out)

    @property
    def top_via(self) -> Via:
        return self.vias[0]

    @property
    def branch(self) -> str | None:
        return self.vias[0].branch

    @cached_property
    def from_(self) -> NameAddr:
        return parse_name_addr(self._required("From"))

    @cached_property
    def to(self) -> NameAddr:
        return parse_name_addr(self._required("To"))

    @cached_property
    def contacts(self) -> tuple[NameAddr, ...]:
        return self._addr_list("Contact")

    @cached_property
    def routes(self) -> tuple[NameAddr, ...]:
        return self._addr_list("Route")

    @cached_property
    def record_routes(self) -> tuple[NameAddr, ...]:
        return self._addr_list("Record-Route")

    def _addr_list(self, name: str) -> tuple[NameAddr, ...]:
        out: list[NameAddr] = []
        for line in self.headers.get_all(name):
            if line.strip() == "*":
                continue
            out.extend(parse_name_addrs(line))
        return tuple(out)

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    def header_tokens(self, name: str) -> set[str]:
        """Lower-cased option tags and the like: Supported, Require, Allow …"""
        return {v.lower() for v in self.headers.values(name)}

    def _start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        lines = [self._start_line()]
        wrote_length = False
        length = str(len(self.body))
        for (name, value), key in zip(self.headers, self.headers._keys):
            if key == "content-length":
                if wrote_length:
                    continue
                value, wrote_length = length, True
            lines.append(f"{name}: {value}")
        if not wrote_length:
            lines.append(f"Content-Length: {length}")
        lines.append("")
        lines.append("")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body


class Request(Message):
    method: str
    uri: Uri
    is_request = True

    def __init__(self, method: str, uri: Uri, headers: Headers, body: bytes = b"") -> None:
        self.__dict__.update(method=method, uri=uri, headers=headers, body=body)

    def replace(self, **changes: object) -> Request:
        args = {"method": self.method, "uri": self.uri, "headers": self.headers, "body": self.body}
        args.update(changes)
        return Request(**args)  # type: ignore[arg-type]

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    @cached_property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        value = value.strip()
        if not value.isdigit() or int(value) > 255:
            raise SipParseError("Bad Max-Forwards")
        return int(value)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    status: int
    reason: str

    def __init__(self, status: int, reason: str, headers: Headers, body: bytes = b"") -> None:
        self.__dict__.update(status=status, reason=reason, headers=headers, body=body)

    def replace(self, **changes: object) -> Response:
        args = {"status": self.status, "reason": self.reason, "headers": self.headers, "body": self.body}
        args.update(changes)
        return Response(**args)  # type: ignore[arg-type]

    def _start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} {self.headers.get('CSeq')}>"


# --- parsing -------------------------------------------------------------------------------

_METHOD = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_VERSION = re.compile(r"SIP/(\d+)\.(\d+)\Z", re.I)
MAX_MESSAGE = 1 << 20


def parse_message(data: bytes) -> Request | Response:
    """Parse one whole SIP message. Raises `SipParseError` (a ValueError) and nothing else."""
    try:
        return _parse(data)
    except SipParseError:
        raise
    except (ValueError, IndexError, KeyError, TypeError) as exc:  # pragma: no cover - guard
        raise SipParseError(f"Malformed message ({type(exc).__name__})") from exc


def _parse(data: bytes) -> Request | Response:
    if len(data) > MAX_MESSAGE:
        raise SipParseError("Message too large", 513)
    data = data.lstrip(b"\r\n")  # RFC 3261 §7.5: ignore CRLFs before the start line
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head, body = data[:end], data[end + 4 :]
    else:
        end = data.find(b"\n\n")
        if end < 0:
            raise SipParseError("No blank line after headers")
        head, body = data[:end], data[end + 2 :]
    text = head.decode("utf-8", "surrogateescape")
    sep = "\r\n" if "\r\n" in text else "\n"
    lines = text.split(sep)
    start = lines[0]
    items: list[tuple[str, str]] = []
    for raw in lines[1:]:
        if raw[:1] in (" ", "\t"):  # folded continuation line (RFC 3261 §7.3.1)
            if not items:
                raise SipParseError("Continuation line before first header")
            name, value = items[-1]
            raw = raw.strip()
            items[-1] = (name, f"{value} {raw}" if value else raw)
            continue
        name, colon, value = raw.partition(":")
        if not colon:
            raise SipParseError("Malformed header line")
        if name not in _good_names:
            name = name.rstrip(" \t")
            if not is_token(name):
                raise SipParseError("Bad header name")
            if len(_good_names) < 4096:
                _good_names.add(name)
        items.append((name, value.strip()))
    headers = Headers(items)
    for key in SINGLE:
        if headers._keys.count(key) > 1:
            raise SipParseError(f"Repeated {key} header")
    body = _body(headers, body)

    if start.startswith("SIP/"):
        msg: Request | Response = _response(start, headers, body)
    else:
        msg = _request(start, headers, body)
    _check(msg)
    return msg


_good_names: set[str] = set()


def _body(headers: Headers, rest: bytes) -> bytes:
    clen = headers.get("Content-Length")
    if clen is None:
        return rest  # datagram without Content-Length: the body is the rest (RFC 3261 §18.3)
    clen = clen.strip()
    if not clen.isdigit():
        raise SipParseError("Bad Content-Length")
    n = int(clen)
    if n > len(rest):
        raise SipParseError("Content-Length larger than message")
    return rest[:n]


def _request(start: str, headers: Headers, body: bytes) -> Request:
    parts = start.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError("Malformed Request-Line")
    method, uri_text, version = parts
    if not _METHOD.match(method):
        raise SipParseError("Bad method")
    _check_version(version)
    if uri_text.startswith("<"):
        raise SipParseError("Request-URI in <>")
    return Request(method, parse_uri(uri_text), headers, body)


def _response(start: str, headers: Headers, body: bytes) -> Response:
    version, _, rest = start.partition(" ")
    _check_version(version)
    code, _, reason = rest.partition(" ")
    if len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 699:
        raise SipParseError("Bad status code")
    return Response(int(code), reason, headers, body)


def _check_version(version: str) -> None:
    m = _VERSION.match(version)
    if not m:
        raise SipParseError("Bad SIP version")
    if (m.group(1), m.group(2)) != ("2", "0"):
        raise SipParseError("Version Not Supported", 505)


def _check(msg: Request | Response) -> None:
    """Parse now what every element needs, so errors surface here and not deep in a layer."""
    h = msg.headers
    if "via" in h._keys:
        msg.vias  # noqa: B018 - parses and caches
    if "cseq" in h._keys:
        cseq = msg.cseq
        if msg.is_request and cseq.method != msg.method:  # type: ignore[attr-defined]
            raise SipParseError("CSeq method does not match Request-Line")
    if "from" in h._keys:
        msg.from_  # noqa: B018
    if "to" in h._keys:
        msg.to  # noqa: B018
    if msg.is_request and "max-forwards" in h._keys:
        msg.max_forwards  # noqa: B018


def missing_mandatory(msg: Request | Response) -> str | None:
    """Name the first mandatory header (RFC 3261 §8.1.1) the message lacks, or None."""
    keys = msg.headers._keys
    for key, name in (("via", "Via"), ("call-id", "Call-ID"), ("cseq", "CSeq"), ("from", "From"), ("to", "To")):
        if key not in keys:
            return name
    return None
