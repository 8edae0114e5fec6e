"""SIP over UDP: one DatagramProtocol per listening socket (RFC 3261 §18.1.1, §18.2.1).

Every datagram is one message (trailing octets past Content-Length are the parser's business,
§18.3). Datagrams that are empty or all whitespace (the CRLF / CRLFCRLF keep-alives many phones
send) are counted and dropped here; they never reach the parser.

ICMP errors (§18.4): on Linux the socket is a :class:`RecvErrPort`, a Twisted UDP port with
``IP_RECVERR`` set. A port unreachable (the peer's process is gone), host/network/protocol
unreachable or parameter problem for a datagram we sent reaches the protocol as
``icmp_error(IcmpError)`` and goes up as ``on_unreachable(flow, payload, reason)`` for the flow to
that datagram's destination: the transport error of a dead UDP peer, one round trip after the
send instead of a timeout later. See :mod:`.icmp` for the kernel side.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Callable

from twisted.internet import error, udp
from twisted.internet.address import IPv6Address
from twisted.internet.interfaces import IHalfCloseableDescriptor
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from ng911.sip.transport.flow import Address, Flow
from ng911.sip.transport.icmp import ASYNC_ERRNOS, IcmpError, drain_error_queue, enable_recverr

__all__ = ["RecvErrPort", "SipDatagramProtocol"]

log = Logger(namespace="ng911.sip.transport.udp")

_FLOW_CACHE_SIZE = 4096


class SipDatagramProtocol(DatagramProtocol):
    """Hands each datagram up as ``on_datagram(data, flow)``; sends bytes to an address.

    ``local`` is the bound (host, port), known once listening. Counters: ``received``,
    ``sent``, ``keepalives_dropped``, ``icmp_errors``, ``icmp_ignored``.
    """

    def __init__(self, on_datagram: Callable[[bytes, Flow], None], *,
                 on_send_error: Callable[[Flow, bytes, BaseException], None] | None = None,
                 on_unreachable: Callable[[Flow, bytes, str, IcmpError], None] | None = None,
                 trace: bool = False) -> None:
        self._on_datagram = on_datagram
        self._on_send_error = on_send_error
        self._on_unreachable = on_unreachable
        self.icmp_errors = 0    # §18.4 failures reported up
        self.icmp_ignored = 0   # TTL exceeded, fragmentation needed, local errors
        self.trace = trace
        self.local: Address = ("", 0)
        self.family = socket.AF_INET
        self.received = 0
        self.sent = 0
        self.keepalives_dropped = 0
        # Flows of recent peers, so a datagram costs no Flow construction (bounded; reset
        # when full — a cache, not state).
        self._flows: dict[tuple, Flow] = {}

    def startProtocol(self) -> None:
        host = self.transport.getHost()
        self.local = (host.host, host.port)
        self.family = socket.AF_INET6 if isinstance(host, IPv6Address) else socket.AF_INET
        log.info("UDP listening on {host}:{port}", host=host.host, port=host.port)

    def stopProtocol(self) -> None:
        log.info("UDP stopped on {host}:{port}", host=self.local[0], port=self.local[1])

    def datagramReceived(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        if not data or data.isspace():
            self.keepalives_dropped += 1
            return
        self.received += 1
        flow = self._flows.get(addr)
        if flow is None:
            if len(self._flows) >= _FLOW_CACHE_SIZE:
                self._flows.clear()
            # IPv6 addresses arrive as (host, port, flowinfo, scope_id): keep (host, port).
            flow = self._flows[addr] = Flow("UDP", self.local, (addr[0], addr[1]))
        if self.trace:
            log.debug("recv {flow} {size} octets\n{data}", flow=flow, size=len(data),
                      data=data.decode("utf-8", "replace"))
        try:
            self._on_datagram(data, flow)
        except Exception:
            # One bad message must never take the socket down (twisted.names does the same).
            log.failure("handler failed for datagram from {flow}", flow=flow)

    def send(self, data: bytes, addr: Address) -> bool:
        """Send one datagram to a numeric (host, port). False (and ``on_send_error``) on failure."""
        if self.transport is None:
            self._failed(data, addr, ConnectionError("UDP socket not listening"))
            return False
        if self.trace:
            log.debug("send UDP {local}->{remote} {size} octets\n{data}",
                      local=self.local, remote=addr, size=len(data),
                      data=data.decode("utf-8", "replace"))
        try:
            self.transport.write(data, addr)
        except Exception as exc:  # MessageLengthError, InvalidAddressError, OSError
            self._failed(data, addr, exc)
            return False
        self.sent += 1
        return True

    def _failed(self, data: bytes, addr: Address, exc: BaseException) -> None:
        flow = Flow("UDP", self.local, (addr[0], addr[1]))
        log.warn("UDP send to {flow} failed: {error}", flow=flow, error=exc)
        if self._on_send_error is not None:
            self._on_send_error(flow, data, exc)

    def icmp_error(self, item: IcmpError) -> None:
        """An entry of the socket's error queue (from :class:`RecvErrPort`)."""
        err = item.error
        if not err.is_send_failure or item.destination is None:
            self.icmp_ignored += 1
            log.debug("UDP {local}: ignored {error} for {dest}", local=self.local,
                      error=err.describe(), dest=item.destination)
            return
        self.icmp_errors += 1
        flow = Flow("UDP", self.local, item.destination)
        reason = err.describe()
        log.debug("UDP {flow}: {reason}", flow=flow, reason=reason)  # the manager logs it
        if self._on_unreachable is not None:
            self._on_unreachable(flow, item.payload, reason, item)


@implementer(IHalfCloseableDescriptor)
class RecvErrPort(udp.Port):
    """A Twisted UDP port that asks Linux for ICMP errors (``IP_RECVERR``) and reads them.

    With ``IP_RECVERR`` an ICMP error is queued on the socket *and* set as its pending error,
    which a stock ``udp.Port`` mishandles in three ways, each handled here:

    * the next ``sendto`` — to any address — fails with that errno, and Twisted drops the
      datagram silently on ECONNREFUSED: :meth:`write` drains the queue and sends again;
    * the next ``recvfrom`` fails the same way: :meth:`doRead` drains the queue and reads on;
    * while only an error is pending, poll/epoll report POLLERR without POLLIN and the reactor
      takes it for a half-close: it stops reading and calls :meth:`readConnectionLost` (this
      class provides ``IHalfCloseableDescriptor`` for exactly that) — a stock port would be
      closed. Here the queue is drained and reading resumes.

    Drained errors go to ``protocol.icmp_error(IcmpError)``. Where ``IP_RECVERR`` cannot be set
    (``recverr`` False) the port behaves as Twisted's.
    """

    recverr = False

    def _bindSocket(self) -> None:
        super()._bindSocket()
        self.recverr = enable_recverr(self.socket)

    def drain_errors(self) -> int:
        """Read every queued error, hand each to the protocol; returns how many."""
        try:
            items = drain_error_queue(self.socket)
        except OSError as exc:
            log.warn("UDP error queue unreadable: {error}", error=exc)
            return 0
        handler = getattr(self.protocol, "icmp_error", None)
        for item in items:
            if handler is None:
                continue
            try:
                handler(item)
            except Exception:
                log.failure("icmp_error handler failed")
        return len(items)

    def write(self, datagram: bytes, addr: Any = None) -> Any:
        if not self.recverr or self._connectedAddr:
            return super().write(datagram, addr)
        try:
            sent = super().write(datagram, addr)
        except (error.MessageLengthError, OSError) as exc:
            # EMSGSIZE / EHOSTUNREACH / ...: this datagram's own failure, or a queued ICMP
            # error of an earlier one surfacing here? Only a non-empty queue says the latter.
            if isinstance(exc, OSError) and exc.errno not in ASYNC_ERRNOS:
                raise
            if not self.drain_errors():
                raise
            return super().write(datagram, addr)
        for _ in range(3):
            if sent is not None:
                break
            # Twisted swallowed ECONNREFUSED: the pending error of an earlier datagram took
            # this send. Read the error and send this one again.
            self.drain_errors()
            sent = super().write(datagram, addr)
        return sent

    def doRead(self) -> None:
        if not self.recverr:
            return super().doRead()
        read = 0
        errors = 0
        while read < self.maxThroughput:
            try:
                data, addr = self.socket.recvfrom(self.maxPacketSize)
            except OSError as se:
                no = se.args[0]
                if no in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    if read == 0:  # woken with nothing to read (select/poll): an error, maybe
                        self.drain_errors()
                    return None
                if no in ASYNC_ERRNOS and errors < 8:
                    errors += 1
                    self.drain_errors()
                    continue
                raise
            read += len(data)
            if self.addressFamily == socket.AF_INET6:
                addr = addr[:2]
            try:
                self.protocol.datagramReceived(data, addr)
            except BaseException:
                log.failure("datagramReceived failed")
        return None

    def readConnectionLost(self, reason: Any) -> None:
        """POLLERR alone: the reactor stopped reading, taking it for a half-close. Take the
        errors and read on (a UDP socket has no half-close)."""
        if not self.connected:
            return
        drained = self.drain_errors()
        try:
            pending = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # and clear it
        except OSError:
            pending = 0
        if drained or pending:
            self.startReading()
        else:  # nothing there: never spin on a condition we cannot clear
            self.reactor.callLater(0.01, self._resume_reading)

    def _resume_reading(self) -> None:
        if self.connected:
            self.startReading()


def listen_udp(reactor: Any, port: int, protocol: DatagramProtocol, interface: str,
               max_packet_size: int) -> Any:
    """A listening UDP port for ``protocol``: a :class:`RecvErrPort` on a POSIX reactor (ICMP
    errors reported), else the reactor's own ``listenUDP``."""
    from twisted.internet.posixbase import PosixReactorBase

    if not isinstance(reactor, PosixReactorBase):
        return reactor.listenUDP(port, protocol, interface=interface, maxPacketSize=max_packet_size)
    p = RecvErrPort(port, protocol, interface, max_packet_size, reactor)
    p.startListening()
    return p
