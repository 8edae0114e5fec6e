"""The Twisted shell around the sans-I/O SIP core: sockets in, sockets out, one timer.

    bytes ─TransportManager→ parse_message → stamp_received → UserAgent.receive
    UserAgent → port.send(message, dest) → TransportManager.send / send_response
    after every input: one reactor.callLater for UserAgent.next_deadline() (aioquic pattern)
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from ng911.sip.badrequest import best_effort_400
from ng911.sip.message import Request, Response, parse_message
from ng911.sip.errors import SipParseError
from ng911.sip.transport.flow import Destination, Flow, TransportError, default_port
from ng911.sip.transport.manager import TransportManager
from ng911.sip.transport.rules import destination_for_request, socket_host, stamp_received
from ng911.sip.timerwheel import Alarm
from ng911.sip.ua import UaConfig, UaHandler, UserAgent
from ng911.sip.uri import Uri

log = logging.getLogger("ng911.sip.stack")


class SipStack:
    def __init__(
        self,
        reactor: Any,
        handler: UaHandler,
        *,
        host: str = "127.0.0.1",
        udp_port: int | None = 5060,
        tcp_port: int | None = 5060,
        tls_port: int | None = None,
        tls: Any = None,
        config: UaConfig | None = None,
        trace: bool = False,
        observer: Callable[[str, Request | Response, Any], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.host = host
        self.trace = trace
        # tls: a ng911.sip.transport.tls.TlsCredentials; the TLS transport listens on tls_port
        # when that is not None (and the credentials hold a certificate), else only connects.
        self.manager = TransportManager(reactor, self._on_bytes, self._on_transport_error,
                                        on_connection_lost=self._on_connection_lost, trace=trace,
                                        tls=tls)
        self.ua = UserAgent(self, reactor, handler, config)
        self.ports: dict[str, int] = {}
        listens_tls = tls is not None and tls.certificate is not None
        self._want = {"UDP": udp_port, "TCP": tcp_port, "TLS": tls_port if listens_tls else None}
        self._alarm = Alarm(reactor, self._tick)
        self.parse_errors = 0
        self.observer = observer  # sees ("sent" | "received", message, flow/destination)
        # Told ((host, port), reason) when a send to that address failed (connection refused or
        # reset, ICMP unreachable) or a stream connection with it was closed by the far end:
        # the health monitor probes an answer point there at once.
        self.transport_listeners: list[Callable[[tuple[str, int], str], None]] = []

    def listen(self) -> None:
        udp, tcp = self._want["UDP"], self._want["TCP"]
        if udp is not None:
            self.ports["UDP"] = self.manager.listen_udp(self.host, udp).getHost().port
        if tcp is not None:
            port = tcp if tcp != 0 or udp is None else self.ports["UDP"]
            self.ports["TCP"] = self.manager.listen_tcp(self.host, port).getHost().port
        if self._want["TLS"] is not None:
            self.ports["TLS"] = self.manager.listen_tls(self.host, self._want["TLS"]).getHost().port

    def stop(self) -> Any:
        self._alarm.cancel()
        return self.manager.stop()

    # --- UaPort --------------------------------------------------------------------------
    def send(self, message: Request | Response, dest: Any) -> None:
        if self.trace:
            log.debug("send to %s:\n%s", dest, message.to_bytes().decode("utf-8", "replace"))
        if self.observer is not None:
            self.observer("sent", message, dest)
        if isinstance(message, Response):
            self.manager.send_response(message, dest if isinstance(dest, Flow) else None)
        else:
            self.manager.send(message.to_bytes(), dest)
        self.wake()

    def destination(self, request: Request, next_hop: Uri) -> Destination:
        return destination_for_request(request, next_hop)

    def local_address(self, dest: Any) -> tuple[str, str, int]:
        transport = getattr(dest, "transport", "UDP") or "UDP"
        port = self.ports.get(transport) or self.ports.get("UDP") or 5060
        return transport, self.host, port

    # --- transport callbacks ---------------------------------------------------------------
    def _on_bytes(self, data: bytes, flow: Flow) -> None:
        try:
            msg = parse_message(data)
        except SipParseError as exc:
            self.parse_errors += 1
            log.info("unparseable message from %s: %s", flow, exc.reason)
            reply = best_effort_400(data, exc.reason)
            if reply is not None:
                self.manager.send(reply, flow)
            return
        if msg.is_request:
            try:
                msg = stamp_received(msg, flow)
            except SipParseError as exc:
                log.info("bad Via from %s: %s", flow, exc.reason)
                return
            if flow.transport == "TLS" and flow.connection_id is not None:
                self._alias(msg, flow)  # type: ignore[arg-type]
        if self.observer is not None:
            self.observer("received", msg, flow)
        self.ua.receive(msg, flow)
        self.wake()

    def _alias(self, request: Request, flow: Flow) -> None:
        """RFC 5923: a Via with ``alias`` offers the connection for our requests to its sent-by."""
        via = request.top_via
        if any(name.lower() == "alias" for name, _ in via.params):
            host, port = via.sent_by
            self.manager.alias(flow, socket_host(host), port or default_port(flow.transport))

    def _on_transport_error(self, flow: Flow, error: TransportError) -> None:
        log.info("transport error on %s: %s", flow, error)
        self.ua.transport_error(flow, str(error))
        self.ua.transport_error(flow.destination if hasattr(flow, "destination") else flow, str(error))
        self._tell(flow.remote, error.reason)
        self.wake()

    def _on_connection_lost(self, flow: Flow, reason: str) -> None:
        self._tell(flow.remote, "%s connection closed by the far end (%s)" % (flow.transport, reason))
        self.wake()

    def _tell(self, remote: tuple[str, int], reason: str) -> None:
        for listener in list(self.transport_listeners):
            try:
                listener(remote, reason)
            except Exception:
                log.exception("transport listener failed for %s", remote)

    # --- the one timer -------------------------------------------------------------------------
    def wake(self) -> None:
        self._alarm.arm(self.ua.next_deadline())

    def _tick(self) -> None:
        self.ua.on_timer()
        self.wake()
