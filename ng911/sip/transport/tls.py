"""SIP over TLS (RFC 3261 §26, RFC 5630): the stream transport with Twisted's TLS underneath.

Everything stream-like (framing, connection reuse by remote address, idle close, error
reporting) is :class:`~ng911.sip.transport.stream.StreamTransport`'s; this module adds

* the contexts: :class:`TlsCredentials` holds our certificate, key and the CAs peers must chain
  to (``[tls]`` in the config); a server requires and verifies a client certificate when
  ``require_client_certificate`` (mutual TLS); a client verifies the server against the host it
  dialled with ``service_identity`` (DNS name or IP address SAN) and shows our certificate.
  TLS 1.2 at least, both ways.
* a connection counts only once its handshake has completed: only then is it indexed (so no
  request goes out on, and no response is routed to, an unverified connection), and its flow
  carries the peer's verified identities (subjectAltName DNS names and URIs), which
  :class:`ng911.sip.trust.TrustPolicy` reads. A handshake that fails is logged with the peer
  and OpenSSL's reason, counted in ``handshake_failures``, and fails the sends waiting for it.
* RFC 5923 aliases: a request that came over an accepted connection with ``alias`` in its top
  Via files that connection under the Via's sent-by too, so our requests to the peer's
  listening address reuse it — only when the peer's certificate names that sent-by (§5.3 /
  §9: an alias is no way to take over another host's traffic).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot  # trustRoot's interface; not re-exported
from twisted.internet.interfaces import IConnector, IHandshakeListener, IListeningPort
from twisted.internet.protocol import ClientFactory, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ng911.sip.limits import ConnectionCounter
from ng911.sip.transport.flow import Address, Flow
from ng911.sip.transport.rules import ip_address_of
from ng911.sip.transport.stream import StreamConnection, StreamTransport

__all__ = ["TlsConnection", "TlsCredentials", "TlsTransport", "peer_identities"]

log = Logger(namespace="ng911.sip.transport.tls")

#: Client contexts cached, one per far-end host name (each reads the CA file once).
_CLIENT_OPTIONS_CACHE = 256
#: Aliases one connection may be filed under (RFC 5923): a bound, not a number peers need.
MAX_ALIASES = 4


def peer_identities(certificate: x509.Certificate | None) -> tuple[str, ...]:
    """The identities a (verified) certificate asserts: its subjectAltName DNS names, then its
    URIs, as written (RFC 5922 §7.1). ``service_identity`` keeps only the host of a URI, so the
    SAN is read with ``cryptography``. No SAN, no identity: the subject CN is not looked at
    (RFC 5922 makes it a MAY; a SAN-less certificate is not trusted by name)."""
    if certificate is None:
        return ()
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.get_values_for_type(x509.DNSName)) + tuple(
        san.get_values_for_type(x509.UniformResourceIdentifier))


@implementer(IOpenSSLTrustRoot)
class _CaFile:
    """Trust anchors read by OpenSSL straight from a PEM file (``tls.ca``) into the context."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _addCACertsToContext(self, context: Any) -> None:
        context.load_verify_locations(self.path)


@dataclasses.dataclass(frozen=True)
class TlsCredentials:
    """Our certificate (then its chain) with its key, and the CAs a peer's certificate must
    chain to. ``certificate`` may be absent for a client-only agent (a test UA showing no
    certificate); a server needs one. ``cryptography`` objects: pyOpenSSL deprecates its own."""

    ca: str  # path of the PEM trust anchors
    certificate: x509.Certificate | None = None
    private_key: Any = None
    chain: tuple[x509.Certificate, ...] = ()
    require_client_certificate: bool = True

    @classmethod
    def from_files(cls, *, ca: str, certificate: str | None = None, private_key: str | None = None,
                   require_client_certificate: bool = True) -> TlsCredentials:
        with open(ca, "rb") as f:
            x509.load_pem_x509_certificates(f.read())  # raises ValueError when there is none
        if certificate is None:
            return cls(ca, require_client_certificate=require_client_certificate)
        with open(certificate, "rb") as f:
            certs = x509.load_pem_x509_certificates(f.read())
        with open(private_key or certificate, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        return cls(ca, certs[0], key, tuple(certs[1:]), require_client_certificate)

    @classmethod
    def from_settings(cls, tls: Any) -> TlsCredentials:
        """From :class:`ng911.config.TlsSettings`."""
        return cls.from_files(ca=tls.ca, certificate=tls.certificate, private_key=tls.private_key,
                              require_client_certificate=tls.require_client_certificate)

    def _ours(self) -> dict[str, Any]:
        if self.certificate is None:
            return {}
        return {"privateKey": self.private_key, "certificate": self.certificate,
                "extraCertChain": list(self.chain)}

    def server_options(self, *, verify_clients: bool = True) -> ssl.CertificateOptions:
        """Context for accepting connections. With ``verify_clients`` a client certificate is
        verified against ``ca`` when shown, and required when ``require_client_certificate``;
        without (HTTPS for scrapers and browsers), none is asked for."""
        if self.certificate is None:
            raise ValueError("a TLS server needs tls.certificate")
        options = ssl.CertificateOptions(
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            trustRoot=_CaFile(self.ca) if verify_clients else None, **self._ours())
        if verify_clients:
            # A trustRoot makes Twisted require a certificate; relaxed here when the config says
            # so (read when the context is made): a certificate shown is still verified.
            options.requireCertificate = self.require_client_certificate
        return options

    def client_options(self, host: str) -> Any:
        """Context for connecting to ``host`` (a DNS name or an IP address): the server must
        chain to ``ca`` and name ``host`` in its subjectAltName (``service_identity``); we
        show our certificate, if any."""
        return ssl.optionsForClientTLS(
            host, trustRoot=_CaFile(self.ca),
            extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2, **self._ours()})


@implementer(IHandshakeListener)
class TlsConnection(StreamConnection):
    """A stream connection that counts from its completed handshake on (see module doc)."""

    handshake_done = False
    handshake_timed_out = False
    peer_certificate: x509.Certificate | None = None  # verified (it chained to tls.ca)
    _handshake_call: Any = None

    handshaking_counted = False  # holds a place in the transport's handshake counter

    def connectionMade(self) -> None:
        # TCP is up (flow known; the connection is indexed once the handshake completes). A
        # peer that never completes it must not hold the connection: Twisted sets no deadline.
        super().connectionMade()
        if not self.handshake_done and not self._admit_handshake():
            return
        if not self.handshake_done and self.owner.handshake_timeout:
            self._handshake_call = self.owner.reactor.callLater(self.owner.handshake_timeout,
                                                                self._handshake_check)

    def _admit_handshake(self) -> bool:
        """Handshakes under way are bounded like connections (the caps count a connection only
        from its completed handshake): before it, only the address can be judged."""
        owner = self.owner
        guard, counter = owner.guard, owner.handshaking
        if guard is None or counter is None or self.outbound or self.flow is None:
            return True
        refused = counter.admit(self.flow.remote[0], guard.exempt(self.flow))
        if refused is not None:
            self.abort("handshakes_cap")
            return False
        self.handshaking_counted = True
        return True

    def _release_handshake(self) -> None:
        if self.handshaking_counted and self.owner.handshaking is not None and self.flow is not None:
            self.handshaking_counted = False
            self.owner.handshaking.release(self.flow.remote[0])

    def _handshake_check(self) -> None:
        self._handshake_call = None
        if not self.handshake_done and self.transport is not None:
            self.handshake_timed_out = True
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._handshake_call is not None and self._handshake_call.active():
            self._handshake_call.cancel()
        self._handshake_call = None
        self._release_handshake()
        super().connectionLost(reason)

    def handshakeCompleted(self) -> None:
        self.handshake_done = True
        self._release_handshake()
        if self._handshake_call is not None and self._handshake_call.active():
            self._handshake_call.cancel()
        self._handshake_call = None
        peer = self.transport.getPeerCertificate()
        self.peer_certificate = peer.to_cryptography() if peer is not None else None
        identities = peer_identities(self.peer_certificate)
        assert self.flow is not None
        self.flow = dataclasses.replace(self.flow, peer_identities=identities)
        self.owner._connection_made(self)


class TlsTransport(StreamTransport):
    """SIP over TLS: listens with our certificate, connects verifying the far end's."""

    transport_name = "TLS"
    connection_class = TlsConnection

    def __init__(self, reactor: Any, *, credentials: TlsCredentials, handshake_timeout: float = 10.0,
                 **options: Any) -> None:
        super().__init__(reactor, **options)
        self.credentials = credentials
        #: seconds a connection may take to complete its handshake (0: no limit)
        self.handshake_timeout = handshake_timeout
        self._server_options: ssl.CertificateOptions | None = None
        self._client_options: dict[str, Any] = {}
        self._closing = False
        #: failed (refused) handshakes by direction, "inbound" / "outbound": a metric's source
        self.handshake_failures: Counter[str] = Counter()
        #: inbound handshakes under way, bounded as connections are (set with the guard)
        self.handshaking: ConnectionCounter | None = None

    def set_guard(self, guard: Any) -> None:
        super().set_guard(guard)
        self.handshaking = ConnectionCounter(guard.counter.max_total, guard.counter.max_per_source)

    # -- endpoint hooks ------------------------------------------------------------------------

    def _listen(self, port: int, factory: ServerFactory, interface: str) -> IListeningPort:
        if self._server_options is None:
            self._server_options = self.credentials.server_options()
        return self.reactor.listenSSL(port, factory, self._server_options, interface=interface)

    def _connect(self, host: str, port: int, factory: ClientFactory) -> IConnector:
        options = self._client_options.get(host)
        if options is None:
            if len(self._client_options) >= _CLIENT_OPTIONS_CACHE:
                self._client_options.clear()
            options = self._client_options[host] = self.credentials.client_options(host)
        return self.reactor.connectSSL(host, port, factory, options, timeout=self.connect_timeout)

    def close_all(self) -> None:
        self._closing = True
        for pending in self._pending.values():
            # TCP connected, handshake under way: not "connecting" any more for the connector
            if pending.connector is not None and pending.connector.state == "connected":
                pending.connector.disconnect()
                pending.connector = None
        super().close_all()

    def alias(self, flow: Flow, address: Address) -> bool:
        """RFC 5923: file the accepted connection of ``flow`` under ``address`` (the sent-by of
        a Via with ``alias``) as well, when the peer's certificate names that host. An open
        connection already filed there keeps its place. Returns whether it is filed there."""
        conn = self.connection(flow.connection_id)
        if conn is None or conn.outbound or address in conn.keys:
            return conn is not None and address in conn.keys
        cert = getattr(conn, "peer_certificate", None)
        if cert is None or len(conn.keys) > MAX_ALIASES or self.reusable(address) is not None:
            return False
        if not certificate_names(cert, address[0]):
            log.info("alias {host}:{port} refused on {flow}: not named by its certificate",
                     host=address[0], port=address[1], flow=flow)
            return False
        conn.keys += (address,)
        self._by_remote[address] = conn
        log.info("alias {host}:{port} for {flow} (RFC 5923)", host=address[0], port=address[1], flow=flow)
        return True

    # -- a connection counts once its handshake is done ----------------------------------------

    def _connection_made(self, conn: StreamConnection) -> None:
        if getattr(conn, "handshake_done", True):
            log.info("TLS handshake with {flow} done: peer certificate names {identities}",
                     flow=conn.flow, identities=list(conn.flow.peer_identities) if conn.flow else [])
            super()._connection_made(conn)

    def _connection_lost(self, conn: StreamConnection, reason: Failure | None) -> None:
        if getattr(conn, "handshake_done", True) or self._closing or conn.closed_here:
            # (closed_here before its handshake: shed at the caps, counted there, not a refusal)
            super()._connection_lost(conn, reason)
            return
        direction = "outbound" if conn.outbound else "inbound"
        self.handshake_failures[direction] += 1
        why = ("no handshake within %gs" % self.handshake_timeout
               if getattr(conn, "handshake_timed_out", False) else tls_reason(reason))
        log.warn("TLS handshake ({direction}) with {host}:{port} failed: {reason}",
                 direction=direction, host=conn.flow.remote[0] if conn.flow else "?",
                 port=conn.flow.remote[1] if conn.flow else 0, reason=why, flow=conn.flow)
        if conn.outbound:
            pending = self._pending.get(conn.keys[0]) if conn.keys else None
            if pending is not None and pending.connection_id == conn.connection_id:
                self._connect_failed(pending, Failure(ConnectionError("TLS handshake failed: " + why)))
        # Not a peer's death (it is up; its certificate, or ours, was not accepted): the
        # connection-lost listeners (health probes) are not told.
        conn.closed_here = True
        super()._connection_lost(conn, reason)


def certificate_names(certificate: x509.Certificate, host: str) -> bool:
    """Whether a certificate's subjectAltName names ``host``: an IP address SAN for an address,
    a DNS SAN (wildcards per RFC 6125) for a name — ``service_identity``'s rules."""
    from service_identity import CertificateError, VerificationError
    from service_identity.cryptography import (verify_certificate_hostname,
                                               verify_certificate_ip_address)

    try:
        if ip_address_of(host) is not None:
            verify_certificate_ip_address(certificate, host.strip("[]"))
        else:
            verify_certificate_hostname(certificate, host)
    except (CertificateError, VerificationError, ValueError):
        return False
    return True


def tls_reason(reason: Failure | None) -> str:
    """A readable reason from an OpenSSL error stack, e.g. 'certificate verify failed'."""
    if reason is None:
        return "connection closed"
    value = reason.value
    args = getattr(value, "args", ())
    if args and isinstance(args[0], list):  # OpenSSL.SSL.Error([(lib, func, reason), ...])
        parts = [str(e[-1]) for e in args[0] if isinstance(e, tuple) and e]
        if parts:
            return "; ".join(parts)
    return reason.getErrorMessage() or type(value).__name__
