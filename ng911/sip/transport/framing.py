"""Stream framing for SIP over TCP/TLS (RFC 3261 §18.3, RFC 5626 §3.5.1). Pure: no I/O.

Feed the bytes of one connection in whatever segments they arrive; take whole messages out::

    framer = StreamFramer()
    for event in framer.feed(segment):      # raises FramingError: close the connection
        if isinstance(event, Message): handle(event.data)
        elif event is PING: write(b"\\r\\n")  # RFC 5626 pong

States (one message at a time)::

    IDLE ──first octet not CR/LF──▶ HEAD ──CRLFCRLF, Content-Length ok──▶ BODY ──n octets──▶ IDLE
     │ CRLF CRLF → PING, lone CRLF then a message → PONG
     └ any bound exceeded / Content-Length missing or bad → FramingError (terminal)

Work is linear in the bytes received: the header terminator search resumes where the last one
stopped, the body wait is a length compare, consumed octets leave the ``bytearray`` from the
front (amortised O(1) in CPython).

Where RFC 3261 is silent, this framer chooses: header lines must end in CRLF (a bare-LF peer
is not framed); only CR and LF count as keep-alive filler between messages; a lone CRLF is
reported as PONG only once the next octet shows it was not the first half of a ping; several
Content-Length headers are accepted only when they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Iterator

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_HEADER_SIZE",
    "FramingError",
    "Message",
    "PING",
    "PONG",
    "KeepAlive",
    "StreamFramer",
    "content_length",
]

DEFAULT_MAX_HEADER_SIZE: Final = 64 * 1024
DEFAULT_MAX_BODY_SIZE: Final = 1024 * 1024

_CRLFCRLF: Final = b"\r\n\r\n"
_CR: Final = 13
_LF: Final = 10


class FramingError(ValueError):
    """The stream cannot be framed any further; the connection must be closed.

    ``reason`` fits a status line; ``status_hint`` is the response to try before closing
    (400 bad/missing Content-Length, 513 header too large, 413 body too large); ``head`` is the
    start-line and headers when they were read whole (lets the caller build that response).
    """

    def __init__(self, reason: str, status_hint: int = 400, head: bytes | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_hint = status_hint
        self.head = head


@dataclass(frozen=True, slots=True)
class Message:
    """One whole SIP message: start-line, headers, blank line and exactly Content-Length octets."""

    data: bytes


class KeepAlive:
    """RFC 5626 §3.5.1 keep-alive seen between messages: ``PING`` (CRLFCRLF) or ``PONG`` (CRLF)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


PING: Final = KeepAlive("PING")
PONG: Final = KeepAlive("PONG")

FrameEvent = Message | KeepAlive

_CL_NAMES: Final = frozenset({b"content-length", b"l"})


def content_length(head: bytes) -> int:
    """The Content-Length of a header block (start-line + headers, without the blank line).

    Case-insensitive name, compact ``l``, whitespace around the colon, folded continuation
    lines. Raises :class:`FramingError` when absent, malformed or contradictory.
    """
    found: int | None = None
    lines = head.split(b"\r\n")
    n = len(lines)
    i = 1  # line 0 is the start-line
    while i < n:
        line = lines[i]
        i += 1
        colon = line.find(b":")
        if colon <= 0 or line[:1] in (b" ", b"\t"):
            continue
        if line[:colon].rstrip(b" \t").lower() not in _CL_NAMES:
            continue
        value = line[colon + 1:]
        while i < n and lines[i][:1] in (b" ", b"\t"):  # folded (RFC 3261 §7.3.1 LWS)
            value += b" " + lines[i]
            i += 1
        value = value.strip(b" \t")
        if not value.isdigit() or len(value) > 12:
            raise FramingError("Bad Content-Length", 400, head)
        length = int(value)
        if found is not None and found != length:
            raise FramingError("Conflicting Content-Length", 400, head)
        found = length
    if found is None:
        raise FramingError("Missing Content-Length", 400, head)
    return found


_IDLE: Final = 0
_HEAD: Final = 1
_BODY: Final = 2


class StreamFramer:
    """Frames one connection's byte stream into SIP messages and keep-alives."""

    __slots__ = ("_buf", "_state", "_scan", "_need", "_crlf", "_error",
                 "max_header_size", "max_body_size", "max_message_size")

    def __init__(self, *, max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
                 max_body_size: int = DEFAULT_MAX_BODY_SIZE, max_message_size: int | None = None) -> None:
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self.max_message_size = max_message_size  # head + body (limits.stream_buffer); None: no bound
        self._buf = bytearray()
        self._state = _IDLE
        self._scan = 0        # HEAD: the terminator search resumes here
        self._need = 0        # BODY: total octets of the current message
        self._crlf = 0        # IDLE: line ends seen so far (a pending half ping)
        self._error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Octets held that are not yet part of a returned event."""
        return len(self._buf)

    @property
    def idle(self) -> bool:
        """True between messages (nothing of a message is buffered)."""
        return self._state == _IDLE and not self._buf

    def receive_data(self, data: bytes) -> None:
        """Append a segment. Cheap; the work happens in :meth:`next_event`."""
        if self._error is not None:
            raise self._error
        self._buf += data

    def next_event(self) -> FrameEvent | None:
        """The next whole message or keep-alive, or ``None`` until more data arrives.

        Raises :class:`FramingError` (and keeps raising it) once the stream is broken.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except FramingError as exc:
            self._error = exc
            self._buf = bytearray()
            raise

    def feed(self, data: bytes) -> Iterator[FrameEvent]:
        """``receive_data(data)`` then iterate the events it completes.

        The data is taken at once; events are produced lazily, so events framed before a
        broken message are delivered before the :class:`FramingError` is raised.
        """
        self.receive_data(data)
        return self._drain()

    def _drain(self) -> Iterator[FrameEvent]:
        while (event := self.next_event()) is not None:
            yield event

    def _next(self) -> FrameEvent | None:
        buf = self._buf
        if self._state == _IDLE:
            # Swallow keep-alive line ends before a message starts.
            i, n = 0, len(buf)
            while i < n:
                c = buf[i]
                if c == _LF:
                    self._crlf += 1
                    if self._crlf == 2:
                        self._crlf = 0
                        del buf[:i + 1]
                        return PING
                elif c != _CR:
                    break
                i += 1
            if i:
                del buf[:i]
            if not buf:
                return None
            self._state = _HEAD
            self._scan = 0
            if self._crlf:
                self._crlf = 0
                return PONG
        if self._state == _HEAD:
            end = buf.find(_CRLFCRLF, self._scan)
            if end < 0:
                if len(buf) > self.max_header_size:
                    raise FramingError("Message Too Large", 513)
                self._scan = max(0, len(buf) - 3)
                return None
            if end > self.max_header_size:
                raise FramingError("Message Too Large", 513)
            head = bytes(buf[:end])
            length = content_length(head)
            if length > self.max_body_size or (
                    self.max_message_size is not None and end + 4 + length > self.max_message_size):
                raise FramingError("Request Entity Too Large", 413, head)
            self._need = end + 4 + length
            self._state = _BODY
        # BODY: wait for the rest.
        need = self._need
        if len(buf) < need:
            return None
        data = bytes(buf[:need])
        del buf[:need]
        self._state = _IDLE
        return Message(data)
