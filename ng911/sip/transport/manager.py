"""The transport manager: owns the UDP sockets and stream transports; routes ``send``.

It moves bytes only: parsing and the RFC 3261 §18 rules (:mod:`ng911.sip.transport.rules`,
re-exported here) are applied by the caller — the UA core.
"""

from __future__ import annotations

import socket
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from ng911.sip.builders import make_response
from ng911.sip.message import Response, parse_message
from ng911.sip.transport.flow import Destination, Flow, TransportError
from ng911.sip.transport.framing import FramingError
from ng911.sip.transport.rules import (
    MTU_SIZE_LIMIT,
    ResponseRoute,
    UnroutableError,
    destination_for_request,
    ip_address_of,
    response_route,
    stamp_received,
    via_for,
)
from ng911.sip.transport.stream import StreamTransport, TcpTransport
from ng911.sip.transport.udp import SipDatagramProtocol, listen_udp as _listen_udp

__all__ = [
    "MTU_SIZE_LIMIT",
    "ResponseRoute",
    "TransportManager",
    "UnroutableError",
    "destination_for_request",
    "response_route",
    "stamp_received",
    "via_for",
]

log = Logger(namespace="ng911.sip.transport")

#: Largest UDP payload read (IPv4 limit); Twisted's default would truncate at 8 KiB.
MAX_DATAGRAM = 65535


# -- the manager -------------------------------------------------------------------------------


class TransportManager:
    """Owns the listening sockets and stream connections; ``send`` picks the right one.

    ``on_message(data, flow)`` gets every received message (datagram or framed stream
    message); ``on_error(flow, error)`` every failed send (an ICMP error for a UDP datagram too),
    always from a later reactor turn; ``on_connection_lost(flow, reason)`` every stream
    connection the far end closed or reset.
    A stream that cannot be framed gets a 400/413/513 when its head was a request, then closes.
    """

    def __init__(self, reactor: Any, on_message: Callable[[bytes, Flow], None],
                 on_error: Callable[[Flow, TransportError], None], *,
                 on_connection_lost: Callable[[Flow, str], None] | None = None,
                 idle_timeout: float | None = 300.0, connect_timeout: float = 10.0,
                 trace: bool = False, tls: Any = None, **stream_options: Any) -> None:
        self.reactor = reactor
        self.on_message = on_message
        self.on_error = on_error
        self.trace = trace
        self.udp: list[SipDatagramProtocol] = []
        self._udp_ports: list[IListeningPort] = []
        self.streams: dict[str, StreamTransport] = {}
        common = dict(on_message=on_message, on_transport_error=self._call_on_error,
                      on_bad_stream=_bad_stream_reply, on_connection_lost=on_connection_lost,
                      idle_timeout=idle_timeout, connect_timeout=connect_timeout, trace=trace,
                      **stream_options)
        self.add_stream_transport(TcpTransport(reactor, **common))
        if tls is not None:  # a ng911.sip.transport.tls.TlsCredentials
            from ng911.sip.transport.tls import TlsTransport

            self.add_stream_transport(TlsTransport(reactor, credentials=tls, **common))

    # -- setup -----------------------------------------------------------------------------

    def add_stream_transport(self, stream: StreamTransport) -> None:
        """Register a stream transport by its ``transport_name`` (the TLS seam)."""
        self.streams[stream.transport_name] = stream

    @property
    def tcp(self) -> StreamTransport:
        return self.streams["TCP"]

    def listen_udp(self, host: str, port: int) -> IListeningPort:
        proto = SipDatagramProtocol(self.on_message, on_send_error=self._udp_send_failed,
                                    on_unreachable=self._udp_unreachable, trace=self.trace)
        # Twisted reads 8 KiB datagrams by default; SIP over UDP may use up to 64 KiB.
        # On Linux the port reports ICMP errors (IP_RECVERR): see udp.RecvErrPort.
        listening = _listen_udp(self.reactor, port, proto, host, MAX_DATAGRAM)
        _grow_receive_buffer(listening)
        self.udp.append(proto)
        self._udp_ports.append(listening)
        return listening

    def listen_tcp(self, host: str, port: int) -> IListeningPort:
        return self.tcp.listen(host, port)

    def listen_tls(self, host: str, port: int) -> IListeningPort:
        return self.streams["TLS"].listen(host, port)

    def listen(self, host: str, port: int) -> int:
        """TCP and UDP on the same interface and port (§18.2.1: a UDP listener MUST have a TCP
        twin). Port 0 picks a free TCP port and binds UDP to it too. Returns the port."""
        bound = self.listen_tcp(host, port).getHost().port
        self.listen_udp(host, bound)
        return bound

    def stop(self) -> defer.Deferred[Any]:
        """Stop listening and close every connection (pending sends fail)."""
        waits = []
        for port in self._udp_ports:
            waits.append(defer.maybeDeferred(port.stopListening))
        self._udp_ports = []
        self.udp = []
        for stream in self.streams.values():
            waits.extend(d for d in stream.stop_listening() if d is not None)
            stream.close_all()
        return defer.DeferredList(waits, consumeErrors=True)

    # -- sending ---------------------------------------------------------------------------

    def send(self, data: bytes, target: Flow | Destination, *,
             fallback: Destination | None = None) -> None:
        """Send bytes over a flow or to a destination; failures go to ``on_error``.

        A stream flow whose connection has closed goes to ``fallback`` when given (a response's
        §18.2.2 destination), else is a transport error. A UDP flow is sent from the socket
        bound to ``flow.local``.
        """
        transport = target.transport
        if transport == "UDP":
            self._send_udp(data, target)
            return
        stream = self.streams.get(transport)
        if stream is None:
            self._report(_flow_of(target), TransportError(_flow_of(target),
                         "transport %s not available" % transport, data=data))
            return
        if (fallback is not None and isinstance(target, Flow)
                and target.connection_id is not None
                and stream.connection(target.connection_id) is None):
            log.info("connection of {flow} gone; response to {dest}", flow=target, dest=fallback)
            self.send(data, fallback)
            return
        stream.send(data, target)

    def alias(self, flow: Flow, host: str, port: int) -> bool:
        """RFC 5923: reuse the stream connection of ``flow`` for requests to (host, port), when
        its transport allows it (TLS: the peer's certificate names the host)."""
        alias = getattr(self.streams.get(flow.transport), "alias", None)
        return bool(alias is not None and alias(flow, (host, port)))

    def send_response(self, response: Response, source: Flow | None) -> ResponseRoute:
        """Route a response by its top Via (§18.2.2) and send it; returns the route taken."""
        route = response_route(response.top_via, source)
        data = response.to_bytes()
        self.send(data, route.flow or route.destination, fallback=route.destination)
        return route

    def _send_udp(self, data: bytes, target: Flow | Destination) -> None:
        host, port = (target.remote if isinstance(target, Flow) else (target.host, target.port))
        ip = ip_address_of(host)
        proto = self._udp_for(target, ip)
        if proto is None:
            self._report(_flow_of(target), TransportError(_flow_of(target),
                         "no UDP socket for this address family", data=data))
            return
        if ip is not None:
            proto.send(data, (host, port))
            return
        # A plain hostname (no SRV yet): resolve off the reactor thread, then send.
        d = self.reactor.resolve(host)
        d.addCallbacks(lambda addr: proto.send(data, (addr, port)),
                       lambda f: self._report(_flow_of(target), TransportError(
                           _flow_of(target), "cannot resolve %s" % host, data=data, cause=f)))

    def _udp_for(self, target: Flow | Destination, ip: Any) -> SipDatagramProtocol | None:
        if isinstance(target, Flow):
            for proto in self.udp:
                if proto.local == target.local:
                    return proto
        family = socket.AF_INET6 if ip is not None and ip.version == 6 else socket.AF_INET
        for proto in self.udp:
            if proto.family == family:
                return proto
        return None

    # -- errors ----------------------------------------------------------------------------

    def _udp_send_failed(self, flow: Flow, data: bytes, exc: BaseException) -> None:
        self._report(flow, TransportError(flow, "UDP send failed: %s" % (exc,), data=data,
                                          cause=exc))

    def _udp_unreachable(self, flow: Flow, payload: bytes, reason: str, cause: object) -> None:
        """An ICMP error for a datagram sent to ``flow.remote`` (§18.4): a failure to send."""
        self._report(flow, TransportError(flow, reason, data=payload, cause=cause))

    def _report(self, flow: Flow, error: TransportError) -> None:
        # Deferred to a later reactor turn: the handler never runs inside the send() that
        # caused it (stream transports defer their own reports the same way).
        self.reactor.callLater(0, self._call_on_error, flow, error)

    def _call_on_error(self, flow: Flow, error: TransportError) -> None:
        log.info("transport error on {flow}: {reason}", flow=flow, reason=error.reason)
        try:
            self.on_error(flow, error)
        except Exception:
            log.failure("on_error handler failed for {flow}", flow=flow)


UDP_RECEIVE_BUFFER = 4 << 20  # bytes asked for; the kernel caps it at net.core.rmem_max


def _grow_receive_buffer(listening: Any) -> None:
    """A burst (a flood of large datagrams, a restart's retransmissions) overflows the default
    ~200 KiB socket buffer and the kernel drops datagrams silently: ask for more."""
    sock = getattr(listening, "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
    except OSError as exc:  # pragma: no cover - platform refusal is not fatal
        log.info("could not grow the UDP receive buffer: {error}", error=exc)


def _flow_of(target: Flow | Destination) -> Flow:
    if isinstance(target, Flow):
        return target
    return Flow(target.transport if target.transport in ("UDP", "TCP", "TLS") else "TCP",
                ("", 0), (target.host, target.port))


def _bad_stream_reply(flow: Flow, error: FramingError) -> bytes | None:
    """The 400/413/513 for a request whose stream framing failed, when its head parses."""
    if error.head is None:
        return None
    # Drop Content-Length lines: the parser would (rightly) refuse one larger than the body.
    lines = [line for line in error.head.split(b"\r\n")
             if line.partition(b":")[0].strip().lower() not in (b"content-length", b"l")]
    try:
        msg = parse_message(b"\r\n".join(lines) + b"\r\n\r\n")
        if not msg.is_request or msg.method == "ACK":  # type: ignore[union-attr]
            return None
        return make_response(msg, error.status_hint, error.reason).to_bytes()  # type: ignore[arg-type]
    except Exception:  # any parse trouble: nothing sensible to answer
        return None
