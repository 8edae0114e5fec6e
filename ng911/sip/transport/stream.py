"""SIP over stream transports: TCP now, TLS later through the same code (RFC 3261 §18).

One :class:`StreamTransport` per stream transport name owns every connection of that kind,
accepted or opened, and indexes them (§18, first paragraphs) by

* connection id — a response goes back over the connection its request came on;
* remote (host, port) — a new request reuses an open connection to the same far end before a
  new one is opened; sends to a far end whose connection is still being opened wait for it.

A connection that carried nothing for ``idle_timeout`` seconds is closed. A connection that
cannot be opened fails every send waiting for it: each is reported as
``on_transport_error(flow, TransportError)``. Errors are always reported from a fresh reactor
turn (``callLater(0)``), never from inside ``send``, so callers are not re-entered.

Connection life::

    (send to new far end) CONNECTING ──connected──▶ OPEN ──idle / lost / framing error──▶ CLOSED
         │ refused / timeout: pending sends → transport errors          ▲
    (accepted) ─────────────────────────────────────────────────────────┘ (via OPEN)

TLS seam: a TLS transport is this class with ``transport_name = "TLS"`` and the two endpoint
hooks :meth:`StreamTransport._listen` / :meth:`StreamTransport._connect` overridden (listenSSL /
connectSSL with a context factory, or a ``TLSMemoryBIOFactory`` wrapper). Everything else —
framing, reuse, idle, error reporting — is shared.

Limits (``set_guard``, issue 9): an inbound connection over ``limits.max_connections`` or over
``max_connections_per_source`` from an untrusted address is aborted at once; a connection whose
incomplete message outgrows ``stream_buffer`` is aborted; an untrusted one that completes no
message within ``first_message_timeout`` (slowloris) is aborted, and idles out after
``UNTRUSTED_IDLE_TIMEOUT`` instead of the transport's idle timeout. Each is counted.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet.interfaces import IConnector, IListeningPort
from twisted.internet.protocol import ClientFactory, Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from ng911.sip.limits import UNTRUSTED_IDLE_TIMEOUT, ConnectionCounter
from ng911.sip.transport.flow import Address, Destination, Flow, TransportError
from ng911.sip.transport.framing import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_HEADER_SIZE,
    PING,
    FramingError,
    Message,
    StreamFramer,
)

__all__ = ["StreamConnection", "StreamGuard", "StreamTransport", "TcpTransport"]

log = Logger(namespace="ng911.sip.transport.stream")

#: Connection ids are unique in the process (across TCP and TLS), never reused.
_connection_ids = itertools.count(1)

_UNKNOWN_LOCAL: Address = ("", 0)


@dataclass
class StreamGuard:
    """The limits a stream transport enforces (shared by TCP and TLS: one ``counter``).
    ``exempt(flow)``: never shed (trusted peer, answer point); ``on_shed(reason)``: count it."""

    counter: ConnectionCounter
    exempt: Callable[[Flow], bool]
    on_shed: Callable[[str], None]
    buffer: int = 65_536
    first_message_timeout: float = 10.0
    untrusted_idle: float = UNTRUSTED_IDLE_TIMEOUT


class StreamConnection(Protocol):
    """One SIP stream connection, accepted or opened; frames what it reads."""

    def __init__(self, owner: StreamTransport, connection_id: int, *, outbound: bool,
                 keys: tuple[Address, ...] = ()) -> None:
        self.owner = owner
        self.connection_id = connection_id
        self.outbound = outbound
        self.keys = keys                  # remote-index keys this connection is filed under
        self.flow: Flow | None = None
        self.framer = StreamFramer(max_header_size=owner.max_header_size, max_body_size=owner.max_body_size,
                                   max_message_size=owner.guard.buffer if owner.guard is not None else None)
        self.last_activity = 0.0
        self.open = False
        self.closed_here = False          # we closed it (idle, framing error, shutdown)
        self._idle_call: Any = None
        self.exempt = True                # a trusted peer's (set when a guard admits it)
        self.counted = False              # holds a place in the guard's ConnectionCounter
        self.framed = False               # a whole message came (the first-message deadline)
        self._deadline_call: Any = None

    # -- Twisted callbacks -------------------------------------------------------------------

    def connectionMade(self) -> None:
        host, peer = self.transport.getHost(), self.transport.getPeer()
        self.flow = Flow(self.owner.transport_name, (host.host, host.port),
                         (peer.host, peer.port), self.connection_id)
        self.open = True
        set_nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            try:
                set_nodelay(True)
            except OSError:  # pragma: no cover - platform quirk
                pass
        self.owner._connection_made(self)

    def dataReceived(self, data: bytes) -> None:
        if not self.open:
            return
        self.last_activity = self.owner.reactor.seconds()
        flow = self.flow
        assert flow is not None
        try:
            for event in self.framer.feed(data):
                if event.__class__ is Message:
                    self.framed = True
                    self.owner._deliver(event.data, flow)  # type: ignore[union-attr]
                    if not self.open:
                        return
                elif event is PING:
                    self.transport.write(b"\r\n")          # RFC 5626 §3.5.1 pong
        except FramingError as exc:
            self.owner._framing_error(self, exc)
            return
        guard = self.owner.guard
        if guard is not None and self.framer.buffered > guard.buffer:
            log.debug("closing {flow}: {n} octets of an incomplete message", flow=flow,
                      n=self.framer.buffered)
            self.abort("buffer")

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.open = False
        for call in (self._idle_call, self._deadline_call):
            if call is not None and call.active():
                call.cancel()
        self._idle_call = self._deadline_call = None
        self.owner._connection_lost(self, reason)

    # -- used by the owner ---------------------------------------------------------------------

    def write(self, data: bytes) -> bool:
        if not self.open or self.transport is None or self.transport.disconnecting:
            return False
        self.transport.write(data)
        self.last_activity = self.owner.reactor.seconds()
        return True

    def close(self) -> None:
        self.closed_here = True
        if self.transport is not None and not self.transport.disconnecting:
            self.transport.loseConnection()

    def abort(self, reason: str) -> None:
        """Shed: count it and drop the connection now (no waiting on a peer that reads nothing)."""
        guard = self.owner.guard
        if guard is not None:
            guard.on_shed(reason)
        self.closed_here = True
        self.open = False
        if self.transport is not None:
            self.transport.abortConnection()

    def arm_first_message(self, timeout: float) -> None:
        self._deadline_call = self.owner.reactor.callLater(timeout, self._first_message_check)

    def _first_message_check(self) -> None:
        self._deadline_call = None
        if self.open and not self.framed:
            log.debug("closing {flow}: no whole message in time", flow=self.flow)
            self.abort("first_message_timeout")

    def arm_idle(self, timeout: float) -> None:
        self._idle_call = self.owner.reactor.callLater(timeout, self._idle_check, timeout)

    def _idle_check(self, timeout: float) -> None:
        """One timer per connection, re-armed for the remainder instead of reset per message."""
        self._idle_call = None
        if not self.open:
            return
        idle_for = self.owner.reactor.seconds() - self.last_activity
        if idle_for >= timeout:
            (log.info if self.exempt else log.debug)("closing idle {flow} after {idle:.1f}s", flow=self.flow,
                                                     idle=idle_for)
            self.close()
        else:
            self._idle_call = self.owner.reactor.callLater(timeout - idle_for,
                                                           self._idle_check, timeout)


class _InboundFactory(ServerFactory):
    def __init__(self, owner: StreamTransport) -> None:
        self.owner = owner

    def buildProtocol(self, addr: Any) -> StreamConnection:
        return self.owner.connection_class(self.owner, next(_connection_ids), outbound=False)


class _Pending:
    """An outbound connection being opened and the sends waiting for it."""

    __slots__ = ("key", "connection_id", "queue", "connector")

    def __init__(self, key: Address, connection_id: int) -> None:
        self.key = key
        self.connection_id = connection_id
        self.queue: list[bytes] = []
        self.connector: IConnector | None = None


class _OutboundFactory(ClientFactory):
    def __init__(self, owner: StreamTransport, pending: _Pending) -> None:
        self.owner = owner
        self.pending = pending

    def buildProtocol(self, addr: Any) -> StreamConnection:
        keys = (self.pending.key,)
        peer = (getattr(addr, "host", None), getattr(addr, "port", None))
        if peer != self.pending.key and peer[0] is not None:
            keys = (self.pending.key, peer)  # file under the name asked for and the address
        return self.owner.connection_class(self.owner, self.pending.connection_id, outbound=True,
                                           keys=keys)  # type: ignore[arg-type]

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.owner._connect_failed(self.pending, reason)


class StreamTransport:
    """All connections of one stream transport (``transport_name``), with reuse and idle close.

    ``on_message(data, flow)`` gets every framed message; ``on_transport_error(flow, error)``
    every send that failed; ``on_bad_stream(flow, error)`` may return bytes (a 400/413/513
    response) written before a connection whose stream cannot be framed is closed;
    ``on_connection_lost(flow, reason)`` hears of every open connection the far end closed or
    reset (not those closed here): a peer whose process died closes its connections at once,
    the earliest sign of its death (the health monitor probes it on that).
    """

    transport_name = "TCP"
    #: what accepted and opened connections are (TLS: a subclass that waits for its handshake)
    connection_class: type[StreamConnection] = StreamConnection

    def __init__(self, reactor: Any, *,
                 on_message: Callable[[bytes, Flow], None],
                 on_transport_error: Callable[[Flow, TransportError], None],
                 on_bad_stream: Callable[[Flow, FramingError], bytes | None] | None = None,
                 on_connection_lost: Callable[[Flow, str], None] | None = None,
                 idle_timeout: float | None = 300.0,
                 connect_timeout: float = 10.0,
                 max_pending: int = 256,
                 max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
                 max_body_size: int = DEFAULT_MAX_BODY_SIZE,
                 trace: bool = False) -> None:
        self.reactor = reactor
        self.on_message = on_message
        self.on_transport_error = on_transport_error
        self.on_bad_stream = on_bad_stream
        self.on_connection_lost = on_connection_lost
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.max_pending = max_pending
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self.trace = trace
        self._by_id: dict[int, StreamConnection] = {}
        self._by_remote: dict[Address, StreamConnection] = {}
        self._pending: dict[Address, _Pending] = {}
        self.ports: list[IListeningPort] = []
        self.guard: StreamGuard | None = None

    def set_guard(self, guard: StreamGuard) -> None:
        """Enforce limits (see the module docstring); a message larger than the buffer is
        refused (413) by the framer as soon as its head says so."""
        self.guard = guard
        self.max_header_size = min(self.max_header_size, guard.buffer)

    # -- TLS seam: endpoint hooks --------------------------------------------------------------

    def _listen(self, port: int, factory: ServerFactory, interface: str) -> IListeningPort:
        return self.reactor.listenTCP(port, factory, interface=interface)

    def _connect(self, host: str, port: int, factory: ClientFactory) -> IConnector:
        return self.reactor.connectTCP(host, port, factory, timeout=self.connect_timeout)

    # -- public API ----------------------------------------------------------------------------

    def listen(self, host: str, port: int) -> IListeningPort:
        """Accept connections on (host, port); port 0 picks one (see ``getHost()``)."""
        listening = self._listen(port, _InboundFactory(self), host)
        self.ports.append(listening)
        bound = listening.getHost()
        log.info("{transport} listening on {host}:{port}", transport=self.transport_name,
                 host=bound.host, port=bound.port)
        return listening

    @property
    def connections(self) -> tuple[StreamConnection, ...]:
        return tuple(self._by_id.values())

    def connection(self, connection_id: int | None) -> StreamConnection | None:
        """The open connection with that id, if any."""
        if connection_id is None:
            return None
        conn = self._by_id.get(connection_id)
        return conn if conn is not None and conn.open else None

    def reusable(self, address: Address) -> StreamConnection | None:
        """An open connection to that far end, if any (§18: index by remote address)."""
        conn = self._by_remote.get(address)
        return conn if conn is not None and conn.open else None

    def send(self, data: bytes, target: Flow | Destination | Address) -> None:
        """Send over the flow's connection, or to a far end (reusing or opening a connection).

        A flow whose connection has closed is a transport error: reconnecting to an ephemeral
        port would be wrong; response routing picks the fallback (see ``manager``).
        """
        if isinstance(target, Flow) and target.connection_id is not None:
            conn = self.connection(target.connection_id)
            if conn is not None and conn.write(data):
                self._trace_send(conn, data)
                return
            self._report(target, "connection closed", data)
            return
        address: Address
        if isinstance(target, Flow):
            address = target.remote
        elif isinstance(target, Destination):
            address = (target.host, target.port)
        else:
            address = (target[0], target[1])
        conn = self.reusable(address)
        if conn is not None and conn.write(data):
            self._trace_send(conn, data)
            return
        pending = self._pending.get(address)
        if pending is None:
            pending = self._open(address)
            if pending is None:
                self._report(self._unconnected_flow(address), "connect failed", data)
                return
        if len(pending.queue) >= self.max_pending:
            self._report(self._unconnected_flow(address), "send queue full", data)
            return
        pending.queue.append(data)

    def close_all(self) -> None:
        """Abandon pending connects (their sends fail) and close every connection."""
        for pending in list(self._pending.values()):
            if pending.connector is not None:
                pending.connector.stopConnecting()
        for conn in list(self._by_id.values()):
            conn.close()

    def stop_listening(self) -> list[Any]:
        """Stop every listening port; returns their Deferreds."""
        ports, self.ports = self.ports, []
        return [p.stopListening() for p in ports]

    # -- internals -----------------------------------------------------------------------------

    def _open(self, address: Address) -> _Pending | None:
        pending = _Pending(address, next(_connection_ids))
        self._pending[address] = pending
        log.debug("{transport} connecting to {host}:{port}", transport=self.transport_name,
                  host=address[0], port=address[1])
        try:
            pending.connector = self._connect(address[0], address[1],
                                              _OutboundFactory(self, pending))
        except Exception:
            log.failure("{transport} connect to {host}:{port} failed",
                        transport=self.transport_name, host=address[0], port=address[1])
            del self._pending[address]
            return None
        return pending

    def _unconnected_flow(self, address: Address, connection_id: int | None = None) -> Flow:
        return Flow(self.transport_name, _UNKNOWN_LOCAL, address, connection_id)

    def _connection_made(self, conn: StreamConnection) -> None:
        flow = conn.flow
        assert flow is not None
        guard = self.guard
        idle = self.idle_timeout
        if guard is not None and not conn.outbound:
            conn.exempt = guard.exempt(flow)
            refused = guard.counter.admit(flow.remote[0], conn.exempt)
            if refused is not None:
                log.debug("{transport} refused {flow}: {reason}", transport=self.transport_name,
                         flow=flow, reason=refused)
                conn.abort(refused)
                return
            conn.counted = True
            if not conn.exempt:
                conn.arm_first_message(guard.first_message_timeout)
                idle = min(idle, guard.untrusted_idle) if idle else guard.untrusted_idle
        self._by_id[conn.connection_id] = conn
        conn.last_activity = self.reactor.seconds()
        if not conn.keys:
            conn.keys = (flow.remote,)
        for key in conn.keys:
            self._by_remote[key] = conn
        # a stranger's connections at debug: a connect/close loop must not flood the log
        (log.info if conn.exempt else log.debug)("{transport} {direction} {flow}", transport=self.transport_name,
                                                 direction="connected" if conn.outbound else "accepted", flow=flow)
        if idle:
            conn.arm_idle(idle)
        if conn.outbound:
            pending = self._pending.pop(conn.keys[0], None)
            if pending is not None:
                for data in pending.queue:
                    if conn.write(data):
                        self._trace_send(conn, data)
                    else:  # pragma: no cover - lost inside connectionMade
                        self._report(flow, "connection closed", data)

    def _connect_failed(self, pending: _Pending, reason: Failure) -> None:
        if self._pending.get(pending.key) is pending:
            del self._pending[pending.key]
        flow = self._unconnected_flow(pending.key)
        log.warn("{transport} connect to {host}:{port} failed: {reason}",
                 transport=self.transport_name, host=pending.key[0], port=pending.key[1],
                 reason=reason.getErrorMessage())
        for data in pending.queue:
            self._report(flow, "connect failed: " + reason.getErrorMessage(), data, reason)
        pending.queue = []

    def _connection_lost(self, conn: StreamConnection, reason: Failure | None) -> None:
        if conn.counted and self.guard is not None and conn.flow is not None:
            conn.counted = False
            self.guard.counter.release(conn.flow.remote[0])
        if self._by_id.get(conn.connection_id) is conn:
            del self._by_id[conn.connection_id]
        for key in conn.keys:
            if self._by_remote.get(key) is conn:
                del self._by_remote[key]
        why = reason.getErrorMessage() if reason else ""
        (log.info if conn.exempt else log.debug)("{transport} closed {flow}: {reason}",
                                                 transport=self.transport_name, flow=conn.flow, reason=why)
        if self.on_connection_lost is not None and conn.flow is not None and not conn.closed_here:
            self.reactor.callLater(0, self._call_lost_handler, conn.flow, why)

    def _call_lost_handler(self, flow: Flow, reason: str) -> None:
        try:
            self.on_connection_lost(flow, reason)  # type: ignore[misc]
        except Exception:
            log.failure("connection-lost handler failed for {flow}", flow=flow)

    def _deliver(self, data: bytes, flow: Flow) -> None:
        if self.trace:
            log.debug("recv {flow} {size} octets\n{data}", flow=flow, size=len(data),
                      data=data.decode("utf-8", "replace"))
        try:
            self.on_message(data, flow)
        except Exception:
            log.failure("handler failed for message from {flow}", flow=flow)

    def _framing_error(self, conn: StreamConnection, error: FramingError) -> None:
        flow = conn.flow
        assert flow is not None
        (log.warn if conn.exempt else log.debug)("bad stream on {flow}: {reason}; closing", flow=flow,
                                                 reason=error.reason)
        reply: bytes | None = None
        if self.guard is not None and error.status_hint in (413, 513):
            self.guard.on_shed("buffer")  # a message larger than limits.stream_buffer
        if self.on_bad_stream is not None:
            try:
                reply = self.on_bad_stream(flow, error)
            except Exception:
                log.failure("bad-stream handler failed on {flow}", flow=flow)
        if reply:
            conn.write(reply)
        conn.closed_here = True
        conn.open = False   # nothing more is read or sent on it
        conn.transport.loseConnection()

    def _report(self, flow: Flow, reason: str, data: bytes | None, cause: object = None) -> None:
        error = TransportError(flow, reason, data=data, cause=cause)
        self.reactor.callLater(0, self._call_error_handler, flow, error)

    def _call_error_handler(self, flow: Flow, error: TransportError) -> None:
        try:
            self.on_transport_error(flow, error)
        except Exception:
            log.failure("transport error handler failed for {flow}", flow=flow)

    def _trace_send(self, conn: StreamConnection, data: bytes) -> None:
        if self.trace:
            log.debug("send {flow} {size} octets\n{data}", flow=conn.flow, size=len(data),
                      data=data.decode("utf-8", "replace"))


class TcpTransport(StreamTransport):
    """SIP over TCP (the default hooks)."""

    transport_name = "TCP"
