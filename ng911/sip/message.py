"""SIP messages: bytes ⇄ Request/Response (RFC 3261 §7, §25). Sans-I/O: no Twisted here.

``parse_message(data)`` takes one whole message (a datagram, or a message framed off a
stream) and returns a frozen `Request` or `Response`, or raises `SipParseError` with a reason
fit for a 400. The structured headers a SIP element needs on every message (Via, CSeq, From,
To, Call-ID, Content-Length) are checked while parsing, so a message that parses can be
routed; absence of mandatory headers is reported by `missing_mandatory` (a 400, not a parse
failure: RFC 4475 §3.3.1). Other headers are parsed on first use and cached.

Headers keep their order and names as written (compact forms included) so a message can be
logged as received; `to_bytes()` always writes a Content-Length that matches the body, with
CRLF line ends. A bare LF is accepted as a line end (the header block ends at the first empty
line, whatever its line ends), values are trimmed of SP/HTAB and folded lines joined by one
space. Numbers are ASCII digits only.

Control characters (RFC 3261 §25.1 CTL: %x00-1F / %x7F) are refused anywhere in the start line
and header section where the grammar has no room for them, with a 400 naming the place ("Control
character in Call-ID"): the only CTLs the grammar lets into a header section are HTAB (in LWS),
CR LF (line ends and folding) and, inside a quoted-string (or a comment of User-Agent/Server), any
CTL but CR and LF escaped by a backslash (quoted-pair = "\\" (%x00-09 / %x0B-0C / %x0E-7F)). So
``From: "a\\<NUL>b" <sip:x@y>`` parses (display name "a\\x00b": see
ng911.sip.headers.printable_display_name before passing it on) and ``Call-ID: a<NUL>b`` does not;
a Call-ID (`word`s) and the start line take no CTL at all. The body is not looked at.

Cost: linear in the message's length (no regex here or in headers.py/uri.py can backtrack
more than linearly). Structured values (Via lines, name-addrs, URIs, CSeq) are parsed once per
distinct text and shared, through bounded caches (ng911.sip.uri.CACHE_SIZE entries, strings up
to CACHE_MAX_LEN): they are immutable, and a dialog repeats them. bench/bench_parser.py
measures.
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

    __slots__ = ("_items", "_keys", "_parsed")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: tuple[tuple[str, str], ...] = tuple(items)
        self._keys: tuple[str, ...] = tuple([canonical_name(n) for n, _ in self._items])
        self._parsed = False  # built by hand: to_bytes() checks for line breaks

    @classmethod
    def of(cls, *items: tuple[str, str]) -> Headers:
        return cls(items)

    @classmethod
    def _trusted(cls, items: tuple[tuple[str, str], ...], keys: tuple[str, ...]) -> Headers:
        """For the parser, which has already worked out every key."""
        self = object.__new__(cls)
        self._items = items
        self._keys = keys
        self._parsed = True  # one value per line by construction
        return self

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
        try:
            return self._items[self._keys.index(canonical_name(name))][1]
        except ValueError:
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
        """Drop the first element of a list header (the top Via of a response, say); a line
        left empty goes."""
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
        headers = self.headers
        items = headers._items
        keys = headers._keys
        length = str(len(self.body))
        if "content-length" not in keys:
            items += (("Content-Length", length),)
        else:  # keep its place and spelling, write the true length, drop any repeat
            at = keys.index("content-length")
            rest = items[at + 1 :]
            if "content-length" in keys[at + 1 :]:
                rest = tuple(item for item, key in zip(rest, keys[at + 1 :]) if key != "content-length")
            items = (*items[:at], (items[at][0], length), *rest)
        start = self._start_line()
        try:
            head = "\r\n".join(map(": ".join, items))
        except TypeError:  # a value that is not a str, from hand-built headers
            head = "\r\n".join(f"{name}: {value}" for name, value in items)
        if "\n" in start or (not headers._parsed and head.count("\n") != len(items) - 1):
            # Parsed values never hold one; a value built from peer data might: refuse to let
            # it start a header line of its own (header injection).
            raise ValueError("Line break inside a start line, header name or header value")
        return f"{start}\r\n{head}\r\n\r\n".encode("utf-8", "surrogateescape") + self.body


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
        return None if value is None else _max_forwards(value)

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
_VERSION = re.compile(r"SIP/([0-9]+)\.([0-9]+)\Z", re.I)
_BLANK_LINE = re.compile(rb"\n\r?\n")
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
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")  # RFC 3261 §7.5: ignore CRLFs before the start line
    # The header block ends at the first empty line. Lines end in CRLF; a bare LF is taken
    # as a line end too (RFC 3261 §7.5 asks for CRLF, but LF-only peers exist).
    end = data.find(b"\r\n\r\n")
    head = data[:end] if end >= 0 else b""
    lines = head.decode("utf-8", "surrogateescape").split("\r\n") if end >= 0 else []
    # One C-level pass over the head keeps its CTLs (translate deletes every other byte, and
    # HTAB): when they are just the CRLFs that end its lines, there is no bare LF, no stray CR
    # and no other control character. Anything else is looked at closely (rare).
    ctls = head.translate(None, _NOT_CTL)
    if end >= 0 and len(ctls) == 2 * (len(lines) - 1):
        body = data[end + 4 :]
    elif end >= 0 and ctls.count(b"\n") == len(lines) - 1:  # no bare LF, but some CTL
        body = data[end + 4 :]
        # (head stops before its last line's CRLF: given back, a CR ending that line is seen
        # as the stray CR it is, as on every other line)
        _check_controls(head + b"\r\n")
    else:
        m = _BLANK_LINE.search(data)
        if m is None:
            raise SipParseError("No blank line after headers")
        head, body = data[: m.start()], data[m.end() :]
        text = head.decode("utf-8", "surrogateescape")
        lines = [line[:-1] if line[-1:] == "\r" else line for line in text.split("\n")]
        if head.translate(None, _NOT_CTL_CRLF) or ("\r" in text and any("\r" in line for line in lines)):
            _check_controls(head)  # a CTL, or a CR that does not end a line
    start = lines[0]
    names, values, keys = _header_fields(lines, 1)
    present = SINGLE.intersection(keys)
    for key in present:
        if keys.count(key) > 1:
            raise SipParseError(f"Repeated {key} header")
    headers = Headers._trusted(tuple(zip(names, values)), tuple(keys))
    if "content-length" in present:
        body = _body(values[keys.index("content-length")], body)

    if start[:4].upper() == "SIP/":  # SIP-Version is case-insensitive (§7.1); no method has a '/'
        msg: Request | Response = _response(start, headers, body)
    else:
        msg = _request(start, headers, body)
    _check(msg, present, values, keys)
    return msg


# Header names seen before and known to be tokens, with their lookup keys. Bounded; the usual
# spellings go in first, so a peer that floods us with odd names cannot push them out.
_name_keys: dict[str, str] = {}
_USUAL = (
    "Via From To Call-ID CSeq Contact Max-Forwards Content-Length Content-Type Route Record-Route "
    "Supported Require Proxy-Require Allow Accept User-Agent Server Expires Session-Expires Min-SE "
    "RSeq RAck Event Subscription-State Refer-To Referred-By Replaces Reason Timestamp Date Subject "
    "Authorization Proxy-Authorization WWW-Authenticate Proxy-Authenticate Warning Allow-Events "
    "Content-ID Content-Disposition Content-Encoding Content-Language MIME-Version Priority "
    "Geolocation Geolocation-Routing Geolocation-Error Call-Info Resource-Priority Accept-Resource-Priority "
    "History-Info P-Asserted-Identity P-Preferred-Identity Privacy Path Organization Alert-Info "
    "Error-Info Retry-After Unsupported In-Reply-To Reply-To Identity"
).split()
for _name in (*_USUAL, *(n.lower() for n in _USUAL), *(n.upper() for n in _USUAL), *COMPACT,
              *(c.upper() for c in COMPACT), "Call-Id", "Cseq", "CALL-ID", "Www-Authenticate"):
    _name_keys[_name] = canonical_name(_name)


def header_lines(lines: list[str], first: int = 0) -> tuple[list[str], list[str]]:
    """Header names (as written, trailing blanks dropped) and values (trimmed, folded lines
    joined by one space) of ``lines[first:]``, each one header line without its line end.
    Shared with MIME body parts (ng911.sip.body), which use the same syntax."""
    names, values, _ = _header_fields(lines, first)
    return names, values


def _header_fields(lines: list[str], first: int) -> tuple[list[str], list[str], list[str]]:
    """`header_lines` and each name's lookup key. Fast when every name is one seen before
    (so a token, and no line is a continuation: those start with a blank)."""
    parts = [line.partition(":") for line in lines[first:]]
    names = [p[0] for p in parts]
    get = _name_keys.get
    keys = [get(name) for name in names]
    if None in keys:
        return _header_fields_slow(lines, first)
    values = [p[2].strip(" \t") if p[1] else _no_colon() for p in parts]
    return names, values, keys  # type: ignore[return-value]


def _header_fields_slow(lines: list[str], first: int) -> tuple[list[str], list[str], list[str]]:
    names: list[str] = []
    values: list[str] = []
    more: dict[int, list[str]] = {}
    for i in range(first, len(lines)):
        raw = lines[i]
        if raw[:1] in (" ", "\t"):  # folded continuation line (RFC 3261 §7.3.1)
            if not names:
                raise SipParseError("Continuation line before first header")
            raw = raw.strip(" \t")
            if raw:
                more.setdefault(len(values) - 1, []).append(raw)
            continue
        name, colon, value = raw.partition(":")
        if not colon:
            _no_colon()
        if name not in _name_keys:
            clean = name.rstrip(" \t")  # "Via :" -- HCOLON allows blanks before the colon
            if not is_token(clean):
                raise SipParseError("Bad header name")
            if clean == name and len(_name_keys) < 4096:
                _name_keys[name] = canonical_name(name)
            name = clean
        names.append(name)
        values.append(value.strip(" \t"))
    for i, extra in more.items():  # joined once: no quadratic re-concatenation
        values[i] = " ".join([values[i], *extra]) if values[i] else " ".join(extra)
    return names, values, [_name_keys.get(name) or canonical_name(name) for name in names]


# --- control characters (RFC 3261 §25.1) ----------------------------------------------------
# CTL = %x00-1F / %x7F. The first pass (in _parse) deletes the bytes that are not a CTL, and
# HTAB: what is left is CR and LF (to compare with the line count) and any CTL to look at.
_NOT_CTL = bytes(sorted(set(range(256)) - set(range(0x20)) - {0x7F}) + [0x09])  # CR, LF kept
_NOT_CTL_CRLF = _NOT_CTL + b"\r\n"
_CTL_AT = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n|\Z)")
# Inside a header value (folded lines kept, as CRLF/LF + SP/HTAB): a quoted-string whose CTLs
# are all quoted-pairs, a comment alike (User-Agent, Server: the headers whose grammar has one,
# nested once), or any one byte that is not a CTL (a '"' that opens no well-formed quoted-string
# is a plain byte: a Call-ID may hold one). Atomic alternatives, possessive repeats of disjoint
# classes: linear, no backtracking. A CTL can only be matched right after a backslash inside
# quotes or parentheses, so a raw one is never accepted whatever the pairing of the quotes.
_FOLD = rb"\r?\n[ \t]"
_QSTRING = rb'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\r\n]|' + _FOLD + rb')*+"'
_COMMENT0 = rb"\((?:[^()\\\x00-\x08\x0a-\x1f\x7f]|\\[^\r\n]|" + _FOLD + rb")*+\)"
_COMMENT = rb"\((?:[^()\\\x00-\x08\x0a-\x1f\x7f]|\\[^\r\n]|" + _FOLD + rb"|" + _COMMENT0 + rb")*+\)"
# A <URI> takes no CTL at all, quotes or not (no URI grammar has a quoted-string); a '<' that
# opens none is refused too (only in a value that has a CTL somewhere: rare, and odd anyway).
_ANGLE = rb"<(?:[^>\x00-\x08\x0a-\x1f\x7f]|" + _FOLD + rb")*+>"
_PLAIN = rb"[^<\x00-\x08\x0a-\x1f\x7f]|" + _FOLD
_VALUE_OK = re.compile(rb"(?>" + _QSTRING + rb"|" + _ANGLE + rb"|" + _PLAIN + rb")*+\Z")
_COMMENTED_VALUE_OK = re.compile(
    rb"(?>" + _QSTRING + rb"|" + _COMMENT + rb"|" + _ANGLE + rb"|" + _PLAIN + rb")*+\Z"
)
_COMMENTED = frozenset({"user-agent", "server"})
_NO_CTL_AT_ALL = frozenset({"call-id"})  # Call-ID = word ["@" word]: no quoted-string
_SPELLING = {canonical_name(n): n for n in _USUAL}


def _check_controls(head: bytes) -> None:
    """Raise a SipParseError naming where ``head`` (start line and header lines, no body) holds
    a control character the grammar does not allow; return when every CTL in it is allowed.

    Only called for a head that has a CTL other than HTAB/CR/LF or a stray CR (rare), so it
    may take a closer look: each logical header line (folded lines included) with a CTL in it
    is checked once against the grammar's places for one."""
    checked = -1
    for m in _CTL_AT.finditer(head):
        at = m.start()
        if at < checked:
            continue  # in a header already found good
        start = head.rfind(b"\n", 0, at) + 1
        if start == 0:
            if head[:4].upper() == b"SIP/":
                raise SipParseError("Control character in Status-Line")
            first = head.find(b" ")
            in_uri = 0 <= first < at < head.find(b" ", first + 1)
            raise SipParseError("Control character in Request-URI" if in_uri else "Control character in Request-Line")
        while head[start:start + 1] in (b" ", b"\t") and start > 0:  # a folded line: its header's first line
            start = head.rfind(b"\n", 0, start - 1) + 1
        end = head.find(b"\n", at)
        while end >= 0 and head[end + 1:end + 2] in (b" ", b"\t"):
            end = head.find(b"\n", end + 1)
        end = len(head) if end < 0 else end
        line = head[start:end]
        if line[-1:] == b"\r":
            line = line[:-1]
        colon = line.find(b":")
        if start == 0 or colon < 0 or start + colon > at:
            raise SipParseError("Control character in header name")
        name = line[:colon].decode("ascii", "replace").rstrip(" \t")
        key = canonical_name(name)
        where = _SPELLING.get(key) or (name if is_token(name) and len(name) <= 40 else "a header")
        if key in _NO_CTL_AT_ALL:
            raise SipParseError(f"Control character in {where}")
        ok = _COMMENTED_VALUE_OK if key in _COMMENTED else _VALUE_OK
        if not ok.match(line, colon + 1):
            raise SipParseError(f"Control character in {where} header" if where != "a header" else
                                "Control character in a header value")
        checked = end


def _no_colon() -> str:
    raise SipParseError("Malformed header line")


def _body(clen: str, rest: bytes) -> bytes:
    """The body by Content-Length; without one (a datagram) it is the rest (RFC 3261 §18.3).
    Octets past it are ignored (§18.3: they are not part of this message)."""
    if not (clen.isascii() and clen.isdigit()):
        raise SipParseError("Bad Content-Length")
    n = int(clen)
    if n > len(rest):
        raise SipParseError("Content-Length larger than message")
    return rest[:n] if n < len(rest) else rest


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
    if len(code) != 3 or not code.isascii() or not code.isdigit() or not 100 <= int(code) <= 699:
        raise SipParseError("Bad status code")
    return Response(int(code), reason, headers, body)


def _check_version(version: str) -> None:
    if version == "SIP/2.0":
        return
    m = _VERSION.match(version)
    if not m:
        raise SipParseError("Bad SIP version")
    if (m.group(1), m.group(2)) != ("2", "0"):
        raise SipParseError("Version Not Supported", 505)


def _check(msg: Request | Response, present: set[str], values: list[str], keys: list[str]) -> None:
    """Parse now what every element needs, so errors surface here and not deep in a layer.

    The results go straight into the instance cache that the properties read.
    """
    cache = msg.__dict__
    if "via" in keys:
        at = keys.index("via")
        vias = parse_via(values[at])
        if keys.count("via") > 1:
            for i in range(at + 1, len(keys)):
                if keys[i] == "via":
                    vias += parse_via(values[i])
        cache["vias"] = vias
    if "cseq" in present:
        cseq = cache["cseq"] = parse_cseq(values[keys.index("cseq")])
        if msg.is_request and cseq.method != msg.method:  # type: ignore[attr-defined]
            raise SipParseError("CSeq method does not match Request-Line")
    if "from" in present:
        cache["from_"] = parse_name_addr(values[keys.index("from")])
    if "to" in present:
        cache["to"] = parse_name_addr(values[keys.index("to")])
    if msg.is_request and "max-forwards" in present:
        cache["max_forwards"] = _max_forwards(values[keys.index("max-forwards")])


def _max_forwards(value: str) -> int:
    value = value.strip(" \t")
    if not (value.isascii() and value.isdigit()) or int(value) > 255:
        raise SipParseError("Bad Max-Forwards")
    return int(value)


def missing_mandatory(msg: Request | Response) -> str | None:
    """Name the first mandatory header (RFC 3261 §8.1.1) the message lacks, or None."""
    keys = msg.headers._keys
    for key, name in (("via", "Via"), ("call-id", "Call-ID"), ("cseq", "CSeq"), ("from", "From"), ("to", "To")):
        if key not in keys:
            return name
    return None
