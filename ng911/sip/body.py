"""Message bodies: Content-Type values and multipart bodies (RFC 2045/2046; RFC 5621 for SIP).

An NG9-1-1 INVITE usually carries ``multipart/mixed``: the SDP offer, a PIDF-LO location
(``application/pidf+xml``, RFC 6442) and additional data (``application/EmergencyCallData.*``,
RFC 7852), sometimes one multipart nested in another. This module finds the parts; it never
changes their octets, so a part can be forwarded or handed to an XML parser exactly as sent.

    ct = parse_content_type(msg.content_type)          # ContentType('multipart', 'mixed', ...)
    for part in walk(msg):                              # leaf parts, depth-first, in order
        if part.mime_type == "application/pidf+xml": ...
    part_by_cid(msg, "cid:loc@example.net")             # what a Geolocation header points at

The multipart grammar (RFC 2046 §5.1.1): a delimiter is ``--boundary`` at the start of a line,
then optional blanks and a line end (``--boundary--`` closes). The line end *before* each
delimiter belongs to the delimiter, not to the part. Text before the first delimiter
(preamble) and after the close (epilogue) is ignored. A bare LF is accepted wherever CRLF is
due. A body that does not follow this raises ``SipParseError("Bad multipart body")``.
Sans-I/O; no Twisted here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator
from urllib.parse import unquote

from ng911.sip.errors import SipParseError
from ng911.sip.headers import is_token, parse_params, quote_string, unquote_string
from ng911.sip.message import Headers, Message, cached_property, header_lines
from ng911.sip.uri import Params

__all__ = [
    "MAX_DEPTH",
    "BodyPart",
    "ContentType",
    "build_multipart",
    "parse_content_type",
    "part_by_cid",
    "split_multipart",
    "walk",
]

# Nesting deeper than this is refused: no legitimate SIP body needs it, and it bounds the work
# (and the stack) a peer can make us do.
MAX_DEPTH = 8
_MEDIA = re.compile(r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)(.*)\Z", re.S)
_BLANK_LINE = re.compile(rb"\n\r?\n")


@dataclass(frozen=True, slots=True)
class ContentType:
    """A media type: ``type`` and ``subtype`` lower-cased (they are case-insensitive), params
    with lower-cased names and unquoted values (None for a bare name, which MIME does not
    allow but which costs nothing to keep)."""

    type: str
    subtype: str
    params: Params = ()

    def param(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.params:
            if key == name:
                return value
        return None

    @property
    def mime_type(self) -> str:
        """``type/subtype``, lower-cased: what to compare against."""
        return f"{self.type}/{self.subtype}"

    @property
    def is_multipart(self) -> bool:
        return self.type == "multipart"

    @property
    def boundary(self) -> str | None:
        return self.param("boundary")

    def __str__(self) -> str:
        out = [self.mime_type]
        for key, value in self.params:
            if value is None:
                out.append(f";{key}")
            else:
                out.append(f";{key}={value if is_token(value) else quote_string(value)}")
        return "".join(out)


def parse_content_type(value: str) -> ContentType:
    """Parse a Content-Type value (RFC 3261 §20.15 media-type; RFC 2045 §5.1).

    Raises `SipParseError` ("Bad Content-Type") when it is not ``type/subtype *(;param)``.
    """
    m = _MEDIA.match(value)
    if m is None:
        raise SipParseError("Bad Content-Type")
    mtype, subtype, rest = m.groups()
    try:
        raw = parse_params(rest)
    except SipParseError:
        raise SipParseError("Bad Content-Type") from None
    params = tuple(
        (name.lower(), unquote_string(v) if v is not None and v[:1] == '"' else v) for name, v in raw
    )
    return ContentType(mtype.lower(), subtype.lower(), params)


class BodyPart:
    """One MIME entity: its headers (Content-Type, Content-ID, …) and its octets, untouched.

    Immutable. ``parts`` is the list of sub-parts when this is itself a multipart (parsed on
    first use, so a bad nested multipart does not hide its good siblings), else ``()``.
    """

    headers: Headers
    body: bytes

    def __init__(self, headers: Headers, body: bytes) -> None:
        self.__dict__.update(headers=headers, body=body)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("BodyPart is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("BodyPart is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BodyPart) and (self.headers, self.body) == (other.headers, other.body)

    def __hash__(self) -> int:
        return hash(self.body)

    def __repr__(self) -> str:
        return f"<BodyPart {self.content_type or '(no type)'} {len(self.body)} octets>"

    @classmethod
    def from_message(cls, msg: Message) -> BodyPart:
        """The message's body as an entity: its Content-* headers (less Content-Length, which
        frames the SIP message) and its body."""
        h = msg.headers
        return cls(Headers(item for item, key in zip(h, h._keys) if _is_entity(key)), msg.body)

    @property
    def content_type(self) -> str | None:
        """The Content-Type value as written (None when absent)."""
        return self.headers.get("Content-Type")

    @cached_property
    def media_type(self) -> ContentType | None:
        """The Content-Type parsed (None when absent); raises `SipParseError` when bad."""
        value = self.content_type
        return None if value is None else parse_content_type(value)

    @property
    def mime_type(self) -> str | None:
        """``type/subtype`` lower-cased, e.g. ``application/pidf+xml`` (None when absent)."""
        media = self.media_type
        return None if media is None else media.mime_type

    @property
    def content_id(self) -> str | None:
        """The Content-ID without its angle brackets (``loc@example.net``), or None."""
        value = self.headers.get("Content-ID")
        if value is None:
            return None
        return value[1:-1].strip() if value.startswith("<") and value.endswith(">") else value

    @property
    def content_disposition(self) -> str | None:
        """The Content-Disposition value as written (``render``, ``by-reference;handling=optional``)."""
        return self.headers.get("Content-Disposition")

    @property
    def disposition_type(self) -> str | None:
        """The disposition type lower-cased, without parameters."""
        value = self.content_disposition
        return None if value is None else value.partition(";")[0].strip(" \t").lower()

    @property
    def is_multipart(self) -> bool:
        media = self.media_type
        return media is not None and media.is_multipart

    @cached_property
    def parts(self) -> tuple[BodyPart, ...]:
        """The sub-parts of a multipart entity, else ``()``. Raises `SipParseError` when the
        multipart is malformed or has no boundary."""
        media = self.media_type
        if media is None or not media.is_multipart:
            return ()
        boundary = media.boundary
        if not boundary:
            raise SipParseError("Bad multipart body")
        return tuple(split_multipart(self.body, boundary))


def _is_entity(key: str) -> bool:
    return (key.startswith("content-") and key != "content-length") or key == "mime-version"


def split_multipart(body: bytes, boundary: str) -> list[BodyPart]:
    """The body parts of a multipart body, in order (RFC 2046 §5.1.1). Nested multiparts are
    parts like any other; their ``.parts`` splits them. Raises ``SipParseError("Bad multipart
    body")`` when there is no opening or closing delimiter, no part, or a part's headers are
    not header lines."""
    if not boundary or "\r" in boundary or "\n" in boundary:
        raise SipParseError("Bad multipart body")
    dash = b"--" + boundary.encode("utf-8", "surrogateescape")
    bounds: list[tuple[int, int]] = []  # (delimiter start, start of the content after it)
    pos = 0
    closed = False
    while True:
        at = body.find(dash, pos)
        if at < 0:
            break
        pos = at + len(dash)
        if at > 0 and body[at - 1] != 0x0A:  # a delimiter starts a line
            continue
        if body[pos : pos + 2] == b"--":
            closed = True
            bounds.append((at, -1))
            break
        # transport-padding, then the line end
        end = pos
        while end < len(body) and body[end] in (0x20, 0x09):
            end += 1
        if body[end : end + 2] == b"\r\n":
            bounds.append((at, end + 2))
        elif body[end : end + 1] == b"\n":
            bounds.append((at, end + 1))
        # else "--boundaryX…": not a delimiter, only text that starts like one
    if not closed or len(bounds) < 2:
        raise SipParseError("Bad multipart body")
    parts = []
    for (_, start), (nxt, _) in zip(bounds, bounds[1:]):
        # the line end before the next delimiter belongs to that delimiter
        stop = nxt - 2 if body[nxt - 2 : nxt] == b"\r\n" else nxt - 1
        parts.append(_part(body[start : max(start, stop)]))
    return parts


def _part(content: bytes) -> BodyPart:
    # body-part := MIME-part-headers [CRLF *OCTET]: no headers when it starts with a line end.
    if content[:1] == b"\n" or content[:2] == b"\r\n":
        return BodyPart(Headers(), content[2:] if content[:1] == b"\r" else content[1:])
    m = _BLANK_LINE.search(content)
    head, rest = (content, b"") if m is None else (content[: m.start()], content[m.end() :])
    text = head.decode("utf-8", "surrogateescape")
    lines = [line[:-1] if line[-1:] == "\r" else line for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    try:
        names, values = header_lines(lines)
    except SipParseError:
        raise SipParseError("Bad multipart body") from None
    return BodyPart(Headers(zip(names, values)), rest)


def walk(root: Message | BodyPart) -> Iterator[BodyPart]:
    """The leaf parts of a message or part, depth-first in body order: each multipart is
    replaced by its parts, recursively. A message without a body yields nothing; one whose
    body is not multipart yields that body as one part. Raises ``SipParseError`` for a
    malformed multipart or Content-Type, or multiparts nested deeper than `MAX_DEPTH`."""
    top = BodyPart.from_message(root) if isinstance(root, Message) else root
    if isinstance(root, Message) and not root.body and root.content_type is None:
        return
    stack: list[tuple[Iterator[BodyPart], int]] = [(iter((top,)), 0)]
    while stack:
        it, depth = stack[-1]
        part = next(it, None)
        if part is None:
            stack.pop()
            continue
        if part.is_multipart:
            if depth >= MAX_DEPTH:
                raise SipParseError("Bad multipart body")
            stack.append((iter(part.parts), depth + 1))
        else:
            yield part


def part_by_cid(root: Message | BodyPart, cid: str) -> BodyPart | None:
    """The leaf part whose Content-ID a ``cid:`` URL (RFC 2392) names — what a Geolocation
    or Call-Info header points at — or None. Accepts ``cid:x@y``, ``<x@y>`` or ``x@y``."""
    if cid[:4].lower() == "cid:":
        cid = unquote(cid[4:])
    cid = cid.strip("<> \t")
    for part in walk(root):
        if part.content_id == cid:
            return part
    return None


def build_multipart(parts: Iterable[BodyPart], boundary: str) -> bytes:
    """A multipart body of ``parts`` (the inverse of `split_multipart`): CRLF line ends, no
    preamble or epilogue. The caller picks a boundary that occurs in no part."""
    dash = b"--" + boundary.encode("utf-8", "surrogateescape")
    out = []
    for part in parts:
        head = "".join(f"{n}: {v}\r\n" for n, v in part.headers).encode("utf-8", "surrogateescape")
        out.append(dash + b"\r\n" + head + b"\r\n" + part.body + b"\r\n")
    out.append(dash + b"--\r\n")
    return b"".join(out)


SDP_TYPE = "application/sdp"


def sdp_of(msg: Message) -> bytes | None:
    """The session description a message carries — its body when that is application/sdp,
    else the first application/sdp part of a multipart body — or None (RFC 5621: an INVITE
    with only a PIDF-LO carries no offer). A malformed multipart carries none."""
    if not msg.body:
        return None
    ctype = (msg.content_type or "").split(";")[0].strip().lower()
    if ctype == SDP_TYPE:
        return msg.body
    if not ctype.startswith("multipart/"):
        return None
    try:
        for part in walk(msg):
            if part.mime_type == SDP_TYPE:
                return part.body
    except SipParseError:
        return None
    return None
