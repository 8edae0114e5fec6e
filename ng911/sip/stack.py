"""The Twisted shell around the sans-I/O SIP core: sockets in, sockets out, one timer.

    bytes ─TransportManager→ parse_message → stamp_received → UserAgent.receive
    UserAgent → port.send(message, dest) → TransportManager.send / send_response
    after every input: one reactor.callLater for UserAgent.next_deadline() (aioquic pattern)

Limits (``set_limits``, issue 9): before a message is parsed, a source that is neither a trusted
upstream peer nor an answer point's host spends a token of the rate limiter (a dict lookup) or
is dropped unread; after parsing, :func:`ng911.sip.limits.refusal` decides who gets state and who
gets one stateless answer, sent back over the flow the request came on — for UDP its source
address, never the Via's ``maddr`` or ``received``. Every refusal is counted in ``shed``.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from ng911.sip.badrequest import best_effort_400
from ng911.sip.builders import make_response, new_tag
from ng911.sip.limits import ConnectionCounter, LogThrottle, RateLimiter, Refusal, refusal
from ng911.sip.message import Request, Response, parse_message
from ng911.sip.errors import SipParseError
from ng911.sip.transport.flow import Destination, Flow, TransportError, default_port
from ng911.sip.transport.manager import TransportManager
from ng911.sip.transport.rules import destination_for_request, socket_host, stamp_received
from ng911.sip.timerwheel import Alarm
from ng911.sip.transaction.keys import client_key_for_response, server_key
from ng911.sip.transport.stream import StreamGuard
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
        # limits (set_limits): None = every source is served, as a UA or a test stack wants
        self.limits: Any = None
        self.rate: RateLimiter | None = None
        self.connections: ConnectionCounter | None = None
        self.shed: dict[str, int] = {}  # refusals by reason (ng911.sip.limits.SHED_REASONS)
        self._trusts: Callable[[Flow], bool] = lambda flow: True
        self._exempt_hosts: frozenset[str] = frozenset()
        self._is_emergency: Callable[[Request], bool] = lambda request: False
        self._parse_log = LogThrottle()
        self._guard: StreamGuard | None = None

    def set_limits(self, limits: Any, *, trusts: Callable[[Flow], bool], exempt_hosts: Any = (),
                   is_emergency: Callable[[Request], bool] = lambda request: False) -> None:
        """Shed untrusted sources and cap what the node holds (a ``LimitSettings``).

        ``trusts(flow)``: a trusted upstream peer (``TrustPolicy.trusts``); ``exempt_hosts``:
        addresses never shed besides (answer points, transfer targets: their responses and
        in-dialog requests); ``is_emergency(request)``: an emergency call, taken past the
        dialog cap when a trusted peer sends it. Call before ``listen``."""
        self.limits = limits
        self._trusts = trusts
        self._exempt_hosts = frozenset(exempt_hosts)
        self._is_emergency = is_emergency
        self.rate = RateLimiter(limits.untrusted_rate, limits.untrusted_burst,
                                limits.untrusted_total_rate, limits.tracked_sources)
        self.connections = ConnectionCounter(limits.max_connections, limits.max_connections_per_source)
        self._guard = StreamGuard(self.connections, self._exempt, self._count_shed, buffer=limits.stream_buffer,
                                  first_message_timeout=limits.handshake_timeout)
        self._guard_streams()

    def _guard_streams(self) -> None:
        """Every stream transport (TCP, and TLS however late it was added) shares one guard."""
        for stream in self.manager.streams.values():
            if self._guard is not None and stream.guard is None:
                stream.set_guard(self._guard)

    def exempt_host(self, address: str) -> None:
        """One more address never shed (an answer point's host name, once resolved)."""
        self._exempt_hosts = self._exempt_hosts | {address}

    def _exempt(self, flow: Flow) -> bool:
        return flow.remote[0] in self._exempt_hosts or self._trusts(flow)

    def _count_shed(self, reason: str) -> None:
        self.shed[reason] = self.shed.get(reason, 0) + 1

    def listen(self) -> None:
        self._guard_streams()
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
        trusted = exempt = True
        if self.rate is not None:
            # before parsing: a stranger pays a token, or its message is dropped unread
            trusted = self._trusts(flow)
            exempt = trusted or flow.remote[0] in self._exempt_hosts
            if not exempt:
                reason = self.rate.admit(flow.remote[0], self.reactor.seconds())
                if reason is not None:
                    self._count_shed(reason)
                    return
        try:
            msg = parse_message(data)
        except SipParseError as exc:
            self.parse_errors += 1
            if self._parse_log.ready(self.reactor.seconds()):  # a flood of garbage: not a line each
                log.info("unparseable message from %s: %s (%d more not logged)", flow, exc.reason,
                         self._parse_log.take_suppressed())
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
        if self.limits is not None:
            refused = self._refusal(msg, exempt, trusted)
            if refused is not None:
                self._count_shed(refused.reason)
                if refused.status is not None:
                    self._answer_stateless(msg, flow, refused)  # type: ignore[arg-type]
                return
        self.ua.receive(msg, flow)
        self.wake()

    def _alias(self, request: Request, flow: Flow) -> None:
        """RFC 5923: a Via with ``alias`` offers the connection for our requests to its sent-by."""
        via = request.top_via
        if any(name.lower() == "alias" for name, _ in via.params):
            host, port = via.sent_by
            self.manager.alias(flow, socket_host(host), port or default_port(flow.transport))

    # --- limits --------------------------------------------------------------------------------
    def _refusal(self, msg: Request | Response, exempt: bool, trusted: bool) -> Refusal | None:
        limits, ua = self.limits, self.ua
        return refusal(msg, exempt=exempt, trusted=trusted, dialog_known=self._dialog_known,
                       transaction_known=self._transaction_known, transactions=len(ua.layer),
                       dialogs=len(ua.dialogs), max_transactions=limits.max_transactions,
                       max_dialogs=limits.max_dialogs, is_emergency=self._emergency)

    def _dialog_known(self, request: Request) -> bool:
        try:
            return (request.call_id, request.to.tag, request.from_.tag or "") in self.ua.dialogs
        except (SipParseError, ValueError):
            return False

    def _transaction_known(self, msg: Request | Response) -> bool:
        try:
            key = server_key(msg) if isinstance(msg, Request) else client_key_for_response(msg)
        except (SipParseError, ValueError, AttributeError):
            return False
        return key is not None and key in self.ua.layer

    def _emergency(self, request: Request) -> bool:
        try:
            return self._is_emergency(request)
        except Exception:  # an unclassifiable request is not an emergency call
            return False

    def _answer_stateless(self, request: Request, flow: Flow, refused: Refusal) -> None:
        """One response, no transaction (nothing retransmitted), over the request's own flow."""
        headers = (("Retry-After", str(refused.retry_after)),) if refused.retry_after else ()
        try:
            to_tag = None if request.to.tag else new_tag()
            response = make_response(request, refused.status, refused.phrase or None,  # type: ignore[arg-type]
                                     to_tag=to_tag, headers=headers)
            data = response.to_bytes()
        except (SipParseError, ValueError):
            return
        if self.observer is not None:
            self.observer("sent", response, flow)
        self.manager.send(data, flow)

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
