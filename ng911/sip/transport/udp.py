"""SIP over UDP: one DatagramProtocol per listening socket (RFC 3261 §18.1.1, §18.2.1).

Every datagram is one message (trailing octets past Content-Length are the parser's business,
§18.3). Datagrams that are empty or all whitespace (the CRLF / CRLFCRLF keep-alives many phones
send) are counted and dropped here; they never reach the parser.
"""

from __future__ import annotations

import socket
from typing import Callable

from twisted.internet.address import IPv6Address
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from ng911.sip.transport.flow import Address, Flow

__all__ = ["SipDatagramProtocol"]

log = Logger(namespace="ng911.sip.transport.udp")

_FLOW_CACHE_SIZE = 4096


class SipDatagramProtocol(DatagramProtocol):
    """Hands each datagram up as ``on_datagram(data, flow)``; sends bytes to an address.

    ``local`` is the bound (host, port), known once listening. Counters: ``received``,
    ``sent``, ``keepalives_dropped``.
    """

    def __init__(self, on_datagram: Callable[[bytes, Flow], None], *,
                 on_send_error: Callable[[Flow, bytes, BaseException], None] | None = None,
                 trace: bool = False) -> None:
        self._on_datagram = on_datagram
        self._on_send_error = on_send_error
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
