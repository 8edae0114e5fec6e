"""Flows, destinations and transport errors: the vocabulary of the transport layer.

A :class:`Flow` names the path a message took: the *source* of a received message, or the
*dest* of a sent one. For stream transports it also names the connection, so a response can go
back over the very connection its request arrived on (RFC 3261 §18.2.2).

A :class:`Destination` is where a message should go when there is no flow yet: a transport and
a socket address (the outcome of RFC 3263 resolution, simplified).

No Twisted import here: the UA core builds and compares flows without I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "TRANSPORTS",
    "RELIABLE_TRANSPORTS",
    "Address",
    "Destination",
    "Flow",
    "TransportError",
    "default_port",
]

#: Transports this layer knows by name (SIP spells them upper case in Via).
TRANSPORTS = frozenset({"UDP", "TCP", "TLS"})
#: Transports with their own retransmission (RFC 3261 §17: Timer E/G not needed, §18.2.2).
RELIABLE_TRANSPORTS = frozenset({"TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS"})

#: (host, port): host is a socket-level address — IPv6 without brackets.
Address = tuple[str, int]


def default_port(transport: str) -> int:
    """RFC 3261 §19.1.2: 5061 for TLS, 5060 for the rest."""
    return 5061 if transport.upper() == "TLS" else 5060


class Destination(NamedTuple):
    """Where to send when no flow exists yet: (transport, host, port)."""

    transport: str
    host: str
    port: int

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    @property
    def is_reliable(self) -> bool:
        return self.transport in RELIABLE_TRANSPORTS


@dataclass(frozen=True, slots=True)
class Flow:
    """The path of one message.

    ``transport`` is ``'UDP'``, ``'TCP'`` or ``'TLS'``; ``local`` and ``remote`` are socket
    addresses; ``connection_id`` identifies the stream connection (``None`` for UDP, and for a
    stream flow whose connection never came up); ``peer_identities`` what a TLS peer's verified
    certificate says it is.
    """

    transport: str
    local: Address
    remote: Address
    connection_id: int | None = None
    #: TLS only: the identities (subjectAltName DNS names and URIs) of the peer's certificate,
    #: verified against ``tls.ca``; empty when the peer showed none. Not part of equality: a
    #: flow is the path, the identity is what we learnt about its far end.
    peer_identities: tuple[str, ...] = field(default=(), compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError("unknown transport %r" % (self.transport,))
        if self.transport == "UDP" and self.connection_id is not None:
            raise ValueError("a UDP flow has no connection id")

    @property
    def is_reliable(self) -> bool:
        return self.transport != "UDP"

    @property
    def destination(self) -> Destination:
        """The remote end as a :class:`Destination` (for a reconnect or a reuse lookup)."""
        return Destination(self.transport, self.remote[0], self.remote[1])

    def __str__(self) -> str:
        conn = "" if self.connection_id is None else "#%d" % self.connection_id
        return "%s%s %s:%d->%s:%d" % (
            self.transport, conn, self.local[0], self.local[1], self.remote[0], self.remote[1],
        )


class TransportError(Exception):
    """A send that could not be carried out (connection refused/lost, unroutable, too big).

    ``flow`` is the flow the bytes were meant for (for a connection that never came up:
    transport and remote filled, local ``("", 0)``, no connection id); ``data`` the unsent bytes
    when known; ``cause`` the underlying exception or Twisted ``Failure``.
    """

    def __init__(self, flow: Flow, reason: str, *, data: bytes | None = None,
                 cause: object = None) -> None:
        super().__init__(flow, reason)
        self.flow = flow
        self.reason = reason
        self.data = data
        self.cause = cause

    def __str__(self) -> str:
        return "%s: %s" % (self.flow, self.reason)
