"""SDP parser (RFC 8866 §5, §9): text or bytes to a :class:`SessionDescription`.

Each line is split at ``\n`` (a preceding ``\r`` is part of the ending), typed by its
letter and stored with its original text, so serialising an unchanged description gives
back the input bytes. Bytes are decoded as UTF-8 with ``surrogateescape``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .errors import SdpParseError
from .model import (
    Attribute,
    Bandwidth,
    Connection,
    Field,
    Fmtp,
    Line,
    MediaLine,
    MediaSection,
    Origin,
    Rtpmap,
    SessionDescription,
)

__all__ = ["parse"]

_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")


class _Bad(Exception):
    pass


def _parse_origin(v: str) -> Origin:
    parts = v.split()
    if len(parts) != 6:
        raise _Bad("o= needs 6 fields: username sess-id sess-version nettype addrtype address")
    if not parts[2].isdigit():
        raise _Bad("o= sess-version is not a number")
    return Origin(parts[0], parts[1], int(parts[2]), parts[3], parts[4], parts[5])


def _parse_connection(v: str) -> Connection:
    parts = v.split()
    if len(parts) != 3:
        raise _Bad("c= needs 3 fields: nettype addrtype connection-address")
    return Connection(parts[0], parts[1], parts[2])


def _parse_bandwidth(v: str) -> Bandwidth:
    kind, sep, amount = v.partition(":")
    amount = amount.strip()
    if not sep or not kind or not amount.isdigit():
        raise _Bad("b= must be <bwtype>:<bandwidth>")
    return Bandwidth(kind, int(amount))


def _parse_attribute(v: str) -> Attribute:
    name, sep, value = v.partition(":")
    name = name.strip()
    if not name:
        raise _Bad("a= without an attribute name")
    if not sep:
        return Attribute(name)
    if name == "rtpmap" and Rtpmap.parse(value) is None:
        raise _Bad("a=rtpmap must be <payload type> <encoding name>/<clock rate>[/<params>]")
    if name == "fmtp" and Fmtp.parse(value) is None:
        raise _Bad("a=fmtp must be <format> <parameters>")
    if name in ("ptime", "maxptime") and not _NUMBER_RE.fullmatch(value.strip()):
        raise _Bad(f"a={name} is not a number")
    return Attribute(name, value)


def _parse_media(v: str) -> MediaLine:
    parts = v.split()
    if len(parts) < 3:
        raise _Bad("m= needs <media> <port>[/<count>] <proto> <fmt> ...")
    port_s, slash, count_s = parts[1].partition("/")
    if not port_s.isdigit() or int(port_s) > 65535 or (slash and not count_s.isdigit()):
        raise _Bad("m= port must be a number 0-65535, optionally /<number of ports>")
    return MediaLine(
        parts[0],
        int(port_s),
        parts[2],
        tuple(parts[3:]),
        int(count_s) if slash else None,
    )


_TYPED = {
    "o": _parse_origin,
    "c": _parse_connection,
    "b": _parse_bandwidth,
    "a": _parse_attribute,
    "m": _parse_media,
}


def _split_lines(text: str) -> Iterator[tuple[str, str]]:
    """Yield (raw line with its ending, line without it); LF or CRLF endings."""
    pos, n = 0, len(text)
    while pos < n:
        nl = text.find("\n", pos)
        end = n if nl < 0 else nl + 1
        raw = text[pos:end]
        pos = end
        body = raw[:-1] if raw.endswith("\n") else raw
        if body.endswith("\r"):
            body = body[:-1]
        yield raw, body


def parse(data: bytes | bytearray | memoryview | str) -> SessionDescription:
    """Parse one session description; raise :class:`SdpParseError` naming the bad line.

    Checks (RFC 8866 §5): ``v=0`` first, exactly one ``o=`` in the session part, every
    line ``<letter>=<value>``, typed lines (o c b m, a=rtpmap/fmtp/ptime) well formed, and
    a ``c=`` for every enabled stream (media or session level, §5.7). A missing ``s=`` or
    ``t=`` is tolerated: real peers send such SDP and nothing here depends on them.
    Blank lines are allowed only at the end and are kept as ``trailer``.
    """
    if isinstance(data, str):
        text = data
    else:
        text = bytes(data).decode("utf-8", "surrogateescape")
    session: list[Line] = []
    sections: list[list[Line]] = []
    media_linenos: list[int] = []
    current = session
    origin_seen = False
    blank_at: tuple[int, int] | None = None  # (lineno, offset) of the first trailing blank
    offset = 0
    lineno = 0
    for raw, body in _split_lines(text):
        lineno += 1
        if not body:
            if blank_at is None:
                blank_at = (lineno, offset)
            offset += len(raw)
            continue
        if blank_at is not None:
            raise SdpParseError("empty line inside the description", blank_at[0], "")
        offset += len(raw)
        if len(body) < 2 or body[1] != "=" or not body[0].isascii() or not body[0].isalpha():
            raise SdpParseError("expected <type>=<value>", lineno, body)
        kind, value = body[0], body[2:]
        if lineno == 1 and (kind != "v" or value.strip() != "0"):
            raise SdpParseError("an SDP must start with v=0", lineno, body)
        parser = _TYPED.get(kind)
        try:
            line: Line = Field(kind, value) if parser is None else parser(value)
        except _Bad as exc:
            raise SdpParseError(str(exc), lineno, body) from None
        object.__setattr__(line, "raw", raw)
        if kind == "m":
            current = [line]
            sections.append(current)
            media_linenos.append(lineno)
            continue
        if kind == "o":
            if current is not session:
                raise SdpParseError("o= is only allowed at session level", lineno, body)
            if origin_seen:
                raise SdpParseError("more than one o= line", lineno, body)
            origin_seen = True
        current.append(line)
    if lineno == 0 or (blank_at is not None and blank_at[0] == 1):
        raise SdpParseError("empty session description", 1, "")
    if not origin_seen:
        second = next((body for i, (_, body) in enumerate(_split_lines(text)) if i == 1), "")
        raise SdpParseError("missing o= line", 2, second)
    trailer = "" if blank_at is None else text[blank_at[1] :]
    desc = SessionDescription(
        tuple(session), tuple(MediaSection(tuple(s)) for s in sections), trailer
    )
    if desc.connection is None:
        for m, no in zip(desc.media, media_linenos):
            if m.enabled and m.connection is None:
                raise SdpParseError(
                    "no c= for this stream nor at session level", no, m.line.to_line()
                )
    return desc
