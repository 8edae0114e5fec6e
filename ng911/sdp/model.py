"""SDP model: typed, immutable, losslessly serialised descriptions (RFC 8866, RFC 4566).

A description is a tuple of typed, frozen lines (session part) plus one
:class:`MediaSection` per ``m=`` line, each itself a tuple of typed lines, in input order
(:mod:`ng911.sdp.parser` builds them).
Every parsed line keeps its original text (``raw``, line ending included); the serialiser
writes ``raw`` back untouched and formats only lines that were built or derived.
``dataclasses.replace`` on a line drops its ``raw`` (the field is ``init=False``), so
whatever changed is re-serialised and everything else stays byte-for-byte identical.
New lines end in CRLF (RFC 8866 §5); input with LF-only endings is accepted.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar, TypeAlias

__all__ = [
    "Attribute",
    "Bandwidth",
    "Connection",
    "Direction",
    "Field",
    "Fmtp",
    "Line",
    "MediaLine",
    "MediaSection",
    "Origin",
    "Rtpmap",
    "SessionDescription",
    "NULL_ADDRESS",
    "make_media",
    "serialize",
]

CRLF = "\r\n"
NULL_ADDRESS = "0.0.0.0"
_DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})


class Direction(enum.StrEnum):
    """Media direction attributes (RFC 8866 §6.7, RFC 3264 §5.1), from the author's view."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    def reversed(self) -> Direction:
        """The direction an answerer mirrors back (RFC 3264 §6.1)."""
        return _REVERSED[self]

    @classmethod
    def of(cls, sends: bool, receives: bool) -> Direction:
        if sends:
            return cls.SENDRECV if receives else cls.SENDONLY
        return cls.RECVONLY if receives else cls.INACTIVE


_REVERSED = {
    Direction.SENDRECV: Direction.SENDRECV,
    Direction.SENDONLY: Direction.RECVONLY,
    Direction.RECVONLY: Direction.SENDONLY,
    Direction.INACTIVE: Direction.INACTIVE,
}


def _raw_field() -> str | None:
    return field(default=None, init=False, compare=False, repr=False)  # type: ignore[return-value]


# --- lines ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """Any line without a typed model (``v= s= i= u= e= p= t= r= z= k=`` …), kept verbatim."""

    type: str
    value: str
    raw: str | None = _raw_field()

    def to_line(self) -> str:
        return f"{self.type}={self.value}"


@dataclass(frozen=True, slots=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`` (§5.2)."""

    TYPE: ClassVar[str] = "o"
    username: str
    sess_id: str
    sess_version: int
    nettype: str
    addrtype: str
    address: str
    raw: str | None = _raw_field()

    def to_line(self) -> str:
        return (
            f"o={self.username} {self.sess_id} {self.sess_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )

    def same_session(self, other: Origin) -> bool:
        """Same session per RFC 3264 §8: every field equal except the version."""
        return (self.username, self.sess_id, self.nettype, self.addrtype, self.address) == (
            other.username,
            other.sess_id,
            other.nettype,
            other.addrtype,
            other.address,
        )

    def next_version(self) -> Origin:
        return dataclasses.replace(self, sess_version=self.sess_version + 1)


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>`` (§5.7); multicast ``/ttl/n`` kept in address."""

    TYPE: ClassVar[str] = "c"
    nettype: str
    addrtype: str
    address: str
    raw: str | None = _raw_field()

    def to_line(self) -> str:
        return f"c={self.nettype} {self.addrtype} {self.address}"

    @property
    def host(self) -> str:
        """The address without any multicast ``/ttl`` or ``/count`` suffix."""
        return self.address.split("/", 1)[0]

    @property
    def is_null(self) -> bool:
        """``c=IN IP4 0.0.0.0``: the RFC 2543 hold / RFC 3725 black hole (RFC 3264 §8.4)."""
        return self.addrtype.upper() == "IP4" and self.host == NULL_ADDRESS


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """``b=<bwtype>:<bandwidth>`` (§5.8), e.g. ``b=AS:64``, ``b=TIAS:64000``."""

    TYPE: ClassVar[str] = "b"
    bwtype: str
    bandwidth: int
    raw: str | None = _raw_field()

    def to_line(self) -> str:
        return f"b={self.bwtype}:{self.bandwidth}"


@dataclass(frozen=True, slots=True)
class Attribute:
    """``a=<name>`` or ``a=<name>:<value>`` (§5.13); unknown ones are carried through in order."""

    TYPE: ClassVar[str] = "a"
    name: str
    value: str | None = None
    raw: str | None = _raw_field()

    def to_line(self) -> str:
        return f"a={self.name}" if self.value is None else f"a={self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class MediaLine:
    """``m=<media> <port>[/<number of ports>] <proto> <fmt> ...`` (§5.14)."""

    TYPE: ClassVar[str] = "m"
    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    raw: str | None = _raw_field()

    def to_line(self) -> str:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        fmts = "".join(" " + f for f in self.formats)
        return f"m={self.media} {port} {self.proto}{fmts}"


Line: TypeAlias = Field | Origin | Connection | Bandwidth | Attribute | MediaLine


@dataclass(frozen=True, slots=True)
class Rtpmap:
    """``a=rtpmap:<pt> <encoding>/<clock rate>[/<encoding parameters>]`` (§6.6)."""

    payload_type: int
    encoding: str
    clock_rate: int
    params: str | None = None

    @property
    def channels(self) -> int:
        """Audio channels (the encoding parameter); 1 when absent (RFC 8866 §6.6)."""
        if self.params is not None and self.params.isdigit():
            return int(self.params)
        return 1

    @staticmethod
    def parse(value: str) -> Rtpmap | None:
        """The rtpmap in an ``a=rtpmap:`` value, None when it is malformed."""
        m = _RTPMAP_RE.fullmatch(value)
        return None if m is None else Rtpmap(int(m[1]), m[2], int(m[3]), m[4])

    def to_attribute(self) -> Attribute:
        tail = "" if self.params is None else f"/{self.params}"
        return Attribute("rtpmap", f"{self.payload_type} {self.encoding}/{self.clock_rate}{tail}")


@dataclass(frozen=True, slots=True)
class Fmtp:
    """``a=fmtp:<format> <format specific parameters>`` (§6.15)."""

    format: str
    params: str

    @staticmethod
    def parse(value: str) -> Fmtp | None:
        """The fmtp in an ``a=fmtp:`` value, None when it is malformed."""
        m = _FMTP_RE.fullmatch(value)
        return None if m is None else Fmtp(m[1], m[2] or "")

    def to_attribute(self) -> Attribute:
        return Attribute("fmtp", f"{self.format} {self.params}")


_RTPMAP_RE = re.compile(r"\s*(\d{1,3})\s+([^/\s]+)/(\d+)(?:/(\S+))?\s*")
_FMTP_RE = re.compile(r"\s*(\S+)(?:\s+(.*?))?\s*")


# --- sections ---------------------------------------------------------------------------


class _Section:
    """Accessors shared by the session part and media sections (both hold ``lines``)."""

    __slots__ = ()
    lines: tuple[Line, ...]
    _C_BEFORE: ClassVar[frozenset[str]]

    def _of(self, kind: type) -> Iterator:
        return (ln for ln in self.lines if type(ln) is kind)

    @property
    def connections(self) -> tuple[Connection, ...]:
        return tuple(self._of(Connection))

    @property
    def connection(self) -> Connection | None:
        return next(self._of(Connection), None)

    @property
    def bandwidths(self) -> tuple[Bandwidth, ...]:
        return tuple(self._of(Bandwidth))

    @property
    def attributes(self) -> tuple[Attribute, ...]:
        return tuple(self._of(Attribute))

    def attribute(self, name: str) -> str | None:
        """Value of the first ``a=name[:value]`` (``""`` for a flag), None when absent."""
        for a in self._of(Attribute):
            if a.name == name:
                return "" if a.value is None else a.value
        return None

    def attribute_values(self, name: str) -> tuple[str, ...]:
        return tuple("" if a.value is None else a.value for a in self._of(Attribute) if a.name == name)

    def has_attribute(self, name: str) -> bool:
        return any(a.name == name for a in self._of(Attribute))

    @property
    def direction(self) -> Direction | None:
        """The direction attribute written at this level, None when there is none."""
        for a in self._of(Attribute):
            if a.value is None and a.name in _DIRECTIONS:
                return Direction(a.name)
        return None

    def _with_lines(self, lines: tuple[Line, ...]):  # type: ignore[no-untyped-def]
        return dataclasses.replace(self, lines=lines)  # type: ignore[type-var]

    def with_connection(self, conn: Connection | None):  # type: ignore[no-untyped-def]
        """Replace every ``c=`` of this level with ``conn`` (or remove them when None)."""
        out: list[Line] = []
        placed = conn is None
        for ln in self.lines:
            if type(ln) is Connection:
                if not placed:
                    out.append(ln if ln == conn else conn)  # type: ignore[arg-type]
                    placed = True
                continue
            out.append(ln)
        if not placed:
            idx = next(
                (i for i, ln in enumerate(out) if i > 0 and _line_type(ln) in self._C_BEFORE),
                len(out),
            )
            out.insert(idx, conn)  # type: ignore[arg-type]
        return self._with_lines(tuple(out))

    def with_direction(self, direction: Direction | None):  # type: ignore[no-untyped-def]
        """Set (or with None remove) the direction attribute of this level, in place."""
        out: list[Line] = []
        placed = direction is None
        for ln in self.lines:
            if type(ln) is Attribute and ln.value is None and ln.name in _DIRECTIONS:
                if not placed:
                    out.append(ln if ln.name == direction else Attribute(str(direction)))
                    placed = True
                continue
            out.append(ln)
        if not placed:
            out.append(Attribute(str(direction)))
        return self._with_lines(tuple(out))

    def with_attribute(self, attr: Attribute):  # type: ignore[no-untyped-def]
        """Append an attribute at the end of this level."""
        return self._with_lines((*self.lines, attr))

    def without_attributes(self, name: str):  # type: ignore[no-untyped-def]
        return self._with_lines(
            tuple(ln for ln in self.lines if not (type(ln) is Attribute and ln.name == name))
        )


def _line_type(ln: Line) -> str:
    return ln.type if type(ln) is Field else ln.TYPE  # type: ignore[union-attr]


@dataclass(frozen=True, slots=True)
class MediaSection(_Section):
    """One media description: ``lines[0]`` is its :class:`MediaLine`, then i/c/b/k/a lines."""

    _C_BEFORE: ClassVar[frozenset[str]] = frozenset("bka")
    lines: tuple[Line, ...]

    def __post_init__(self) -> None:
        if not self.lines or type(self.lines[0]) is not MediaLine:
            raise ValueError("a media section starts with its m= line")

    @property
    def line(self) -> MediaLine:
        return self.lines[0]  # type: ignore[return-value]

    @property
    def media(self) -> str:
        return self.line.media

    @property
    def port(self) -> int:
        return self.line.port

    @property
    def port_count(self) -> int | None:
        return self.line.port_count

    @property
    def proto(self) -> str:
        return self.line.proto

    @property
    def formats(self) -> tuple[str, ...]:
        return self.line.formats

    @property
    def enabled(self) -> bool:
        """False for a rejected/disabled stream (port 0, RFC 3264 §6, §8.2)."""
        return self.line.port != 0

    @property
    def is_rtp(self) -> bool:
        return "RTP" in self.line.proto.upper()

    @property
    def rtpmaps(self) -> dict[str, Rtpmap]:
        """Payload type (as written in the format list) → rtpmap."""
        out: dict[str, Rtpmap] = {}
        for v in self.attribute_values("rtpmap"):
            r = Rtpmap.parse(v)
            if r is not None:
                out.setdefault(str(r.payload_type), r)
        return out

    @property
    def fmtps(self) -> dict[str, str]:
        """Format → its fmtp parameter string."""
        out: dict[str, str] = {}
        for v in self.attribute_values("fmtp"):
            f = Fmtp.parse(v)
            if f is not None:
                out.setdefault(f.format, f.params)
        return out

    @property
    def ptime(self) -> float | None:
        v = self.attribute("ptime")
        return None if v is None else float(v)

    @property
    def maxptime(self) -> float | None:
        v = self.attribute("maxptime")
        return None if v is None else float(v)

    def with_line(self, line: MediaLine) -> MediaSection:
        return MediaSection((line, *self.lines[1:]))

    def with_port(self, port: int) -> MediaSection:
        if port == self.line.port:
            return self
        return self.with_line(dataclasses.replace(self.line, port=port))

    def with_formats(self, formats: Iterable[str]) -> MediaSection:
        """Keep only ``formats`` (in that order); drop rtpmap/fmtp/rtcp-fb of removed ones."""
        fmts = tuple(formats)
        keep = set(fmts)
        out: list[Line] = [dataclasses.replace(self.line, formats=fmts)]
        for ln in self.lines[1:]:
            if type(ln) is Attribute and ln.name in ("rtpmap", "fmtp", "rtcp-fb") and ln.value:
                fmt = ln.value.split(None, 1)[0]
                if fmt not in keep and fmt != "*":
                    continue
            out.append(ln)
        return MediaSection(tuple(out))

    def disabled(self) -> MediaSection:
        """The stream rejected/removed: port 0, same type and proto, one format, nothing else."""
        fmt = self.line.formats[:1] or ("0" if self.is_rtp else "*",)
        line = MediaLine(self.line.media, 0, self.line.proto, fmt)
        if self.lines == (line,):
            return self
        return MediaSection((line,))


@dataclass(frozen=True, slots=True)
class SessionDescription(_Section):
    """A whole SDP: session-level ``lines``, ``media`` sections, and any blank ``trailer``."""

    _C_BEFORE: ClassVar[frozenset[str]] = frozenset("btrzka")
    lines: tuple[Line, ...]
    media: tuple[MediaSection, ...] = ()
    trailer: str = ""

    @property
    def origin(self) -> Origin:
        o = next(self._of(Origin), None)
        if o is None:
            raise ValueError("session description without o= line")
        return o

    @property
    def name(self) -> str | None:
        """The ``s=`` session name."""
        return next((ln.value for ln in self._of(Field) if ln.type == "s"), None)

    def with_origin(self, origin: Origin) -> SessionDescription:
        if origin == self.origin:
            return self
        lines = tuple(origin if type(ln) is Origin else ln for ln in self.lines)
        return dataclasses.replace(self, lines=lines)

    def with_media(self, media: Iterable[MediaSection]) -> SessionDescription:
        return dataclasses.replace(self, media=tuple(media))

    def with_stream(self, index: int, section: MediaSection) -> SessionDescription:
        media = list(self.media)
        media[index] = section
        return dataclasses.replace(self, media=tuple(media))

    def stream_connection(self, index: int) -> Connection | None:
        """Connection that applies to stream ``index``: its own ``c=``, else the session's (§5.7)."""
        return self.media[index].connection or self.connection

    def stream_direction(self, index: int) -> Direction:
        """Direction attribute in force for a stream: media level, else session, else sendrecv."""
        return self.media[index].direction or self.direction or Direction.SENDRECV

    def content(self) -> tuple[object, ...]:
        """Everything but the ``o=`` line: equal content ⇔ the same session description."""
        return (tuple(ln for ln in self.lines if type(ln) is not Origin), self.media)

    def iter_lines(self) -> Iterator[Line]:
        yield from self.lines
        for m in self.media:
            yield from m.lines

    def to_str(self) -> str:
        out: list[str] = []
        append = out.append
        last = ""
        for ln in self.iter_lines():
            if last and not last.endswith("\n"):
                append(CRLF)
            last = ln.raw if ln.raw is not None else ln.to_line() + CRLF
            append(last)
        if self.trailer:
            if last and not last.endswith("\n"):
                append(CRLF)
            append(self.trailer)
        return "".join(out)

    def to_bytes(self) -> bytes:
        # surrogateescape: octets the parser could not decode go back out unchanged
        return self.to_str().encode("utf-8", "surrogateescape")

    __bytes__ = to_bytes


def make_media(
    media: str,
    port: int,
    proto: str,
    formats: Iterable[str],
    *extra: Line,
) -> MediaSection:
    """Build a media section from its ``m=`` fields and any further lines."""
    return MediaSection((MediaLine(media, port, proto, tuple(formats)), *extra))


def serialize(sdp: SessionDescription) -> bytes:
    """The wire form of ``sdp``: unchanged parsed lines byte-identical, new lines in CRLF."""
    return sdp.to_bytes()
