"""RFC 3261 §18 rules as pure functions: no reactor, no Twisted — usable from the UA core.

* :func:`destination_for_request` — where a request goes (RFC 3263 simplified: no NAPTR/SRV;
  ``transport`` parameter, else UDP, or TLS for sips; default port 5060/5061; ``maddr`` wins
  over the host; UDP becomes TCP for a message over 1300 octets, §18.1.1).
* :func:`stamp_received` — §18.2.1 ``received`` and RFC 3581 ``rport`` on the top Via of a
  request just received.
* :func:`response_route` — §18.2.2 and RFC 3581 §4: the flow (connection / local socket) a
  response goes out on, and the destination to use when that flow is gone.
* :func:`via_for` — the Via this element puts on a request it sends (``;rport`` included).
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

from ng911.sip.headers import NameAddr, Via, split_values
from ng911.sip.message import Headers, Request, Response, canonical_name
from ng911.sip.transport.flow import RELIABLE_TRANSPORTS, Destination, Flow, default_port
from ng911.sip.uri import AbsoluteUri, SipUri, Uri

__all__ = [
    "MTU_SIZE_LIMIT",
    "ResponseRoute",
    "UnroutableError",
    "destination_for_request",
    "ip_address_of",
    "response_route",
    "socket_host",
    "stamp_received",
    "uri_host",
    "via_for",
]

#: RFC 3261 §18.1.1: over this many octets (path MTU unknown), a request must not go over UDP.
MTU_SIZE_LIMIT = 1300


class UnroutableError(ValueError):
    """No destination can be derived (a tel:/urn: target with no next hop, say)."""


# -- host spelling -----------------------------------------------------------------------------


def socket_host(host: str) -> str:
    """A URI/Via host as a socket wants it: IPv6 references lose their brackets."""
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def uri_host(host: str) -> str:
    """A socket host as a URI/Via wants it: IPv6 addresses get brackets."""
    if ":" in host and not host.startswith("["):
        return "[" + host + "]"
    return host


def ip_address_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a host spells (brackets and zone ignored), or None for a domain name."""
    try:
        return ipaddress.ip_address(socket_host(host).split("%", 1)[0])
    except ValueError:
        return None


def _same_host(a: str, b: str) -> bool:
    ia, ib = ip_address_of(a), ip_address_of(b)
    if ia is not None and ib is not None:
        return ia == ib
    return False  # a domain name never "equals" a packet source address (§18.2.1)


# -- client side: where does a request go ------------------------------------------------------


def destination_for_request(request: Request, uri_or_next_hop: Uri | NameAddr | None = None, *,
                            switch_to_tcp: bool = True, size: int | None = None,
                            size_limit: int = MTU_SIZE_LIMIT) -> Destination:
    """Transport, host and port for a request (RFC 3263 §4 without DNS NAPTR/SRV).

    The target is ``uri_or_next_hop`` when given (the UA core's next hop: outbound proxy, a
    loose-routing first Route, the remote target); else the first Route if it has ``lr``,
    else the Request-URI. Transport: the URI's ``transport`` parameter, else TLS for sips:,
    else UDP — and a default UDP becomes TCP when the message exceeds ``size_limit`` octets
    (§18.1.1; an explicit ``transport=udp`` is honoured). ``size`` saves a serialisation when
    the caller knows it. Host: ``maddr`` when present, else the URI host (socket form).
    """
    target: Uri
    if uri_or_next_hop is None:
        routes = request.routes
        if routes and isinstance(routes[0].uri, SipUri) and routes[0].uri.has_param("lr"):
            target = routes[0].uri
        else:
            target = request.uri
    elif isinstance(uri_or_next_hop, NameAddr):
        target = uri_or_next_hop.uri
    else:
        target = uri_or_next_hop
    if isinstance(target, AbsoluteUri) or not isinstance(target, SipUri):
        raise UnroutableError("no SIP next hop for %s" % (target,))
    transport = target.transport
    explicit = transport is not None
    if target.is_secure:
        transport = "TLS"
    elif transport is None:
        transport = "UDP"
    host = target.param("maddr") or target.host
    port = target.port or default_port(transport)
    if transport == "UDP" and switch_to_tcp and not explicit:
        if size is None:
            size = len(request.to_bytes())
        if size > size_limit:
            transport = "TCP"
    return Destination(transport, socket_host(host), port)


def via_for(flow_or_transport: Flow | Destination | str, local_host: str, local_port: int | None,
            branch: str) -> Via:
    """The Via for a request this element sends: sent-by = our address, ``branch``, ``rport``."""
    if isinstance(flow_or_transport, str):
        transport = flow_or_transport.upper()
    else:
        transport = flow_or_transport.transport
    return Via(transport=transport, host=uri_host(local_host), port=local_port,
               params=(("branch", branch), ("rport", None)))


# -- server side: stamping a received request --------------------------------------------------


def stamp_received(message: Request | Response, source: Flow) -> Request | Response:
    """RFC 3261 §18.2.1 + RFC 3581 §4 on a request just received from ``source``.

    Adds ``received=<source IP>`` when the top Via's sent-by host differs from it (a domain
    name always differs) — and always when the Via carries ``rport``, as RFC 3581 requires —
    and fills an empty ``rport`` with the source port. Returns the message itself when
    nothing changes, and responses untouched.
    """
    if not message.is_request:
        return message
    via = message.top_via
    src_host, src_port = source.remote
    new = via
    if via.has_rport or not _same_host(via.host, src_host):
        new = new.with_param("received", socket_host(src_host))
    if via.has_rport and via.rport is None:
        new = new.with_param("rport", str(src_port))
    if new == via:
        return message
    return message.replace(headers=_replace_top_via(message.headers, new))


def _replace_top_via(headers: Headers, via: Via) -> Headers:
    """Headers with the first Via element replaced (other elements of that line kept as is)."""
    out: list[tuple[str, str]] = []
    done = False
    for name, value in headers:
        if not done and canonical_name(name) == "via":
            elements = split_values(value)
            elements[0] = str(via)
            value = ", ".join(elements)
            done = True
        out.append((name, value))
    return Headers(out)


# -- server side: where does a response go -----------------------------------------------------


class ResponseRoute(NamedTuple):
    """``flow``: send here first (the request's connection, or UDP from the socket it came
    in on); ``destination``: where to send when there is no flow or its connection is gone."""

    flow: Flow | None
    destination: Destination


def response_route(via: Via, source: Flow | None) -> ResponseRoute:
    """RFC 3261 §18.2.2 with RFC 3581 §4, for the top Via of the response (already stamped).

    * reliable transport: the request's connection when known; fallback ``received`` (else
      the sent-by host) with the sent-by port or the transport default;
    * unreliable: ``received`` (else sent-by host), then the ``rport`` value, else the sent-by
      port, else 5060 — sent from the local socket the request arrived on (RFC 3581 §4).

    A Via ``maddr`` is never honoured (a deliberate departure from §18.2.2): it serves
    multicast, which no ESInet element uses, and honouring it let a spoofed UDP request have
    every response — a whole call's worth — sent to an address of the sender's choosing.
    """
    transport = via.transport.upper()
    host, port = via.sent_by
    if transport in RELIABLE_TRANSPORTS:
        flow = source if (source is not None and source.is_reliable
                          and source.connection_id is not None) else None
        dest = Destination(transport, socket_host(via.received or host),
                           port or default_port(transport))
        return ResponseRoute(flow, dest)
    dest = Destination(transport, socket_host(via.received or host),
                       via.rport or port or default_port(transport))
    flow = None
    if source is not None and source.transport == transport == "UDP":
        flow = Flow("UDP", source.local, (dest.host, dest.port))
    return ResponseRoute(flow, dest)
