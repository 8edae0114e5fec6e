"""SIP transport layer (RFC 3261 §18): Twisted UDP and stream (TCP; TLS later) shells.

It only moves bytes: received messages go up as ``(bytes, Flow)``, sends come down as
``(bytes, Flow | Destination)``. The §18 rules the UA core needs are pure functions in
:mod:`.rules`; stream framing is pure in :mod:`.framing`. This package's ``__init__`` imports
only those pure modules (no Twisted), so the sans-I/O core can use them; the Twisted shell is
``.udp``, ``.stream`` and ``.manager`` (``TransportManager``), imported explicitly.
"""

from ng911.sip.transport.flow import Destination, Flow, TransportError, default_port
from ng911.sip.transport.framing import FramingError, StreamFramer
from ng911.sip.transport.rules import (
    ResponseRoute,
    UnroutableError,
    destination_for_request,
    response_route,
    stamp_received,
    via_for,
)

__all__ = [
    "Destination",
    "Flow",
    "FramingError",
    "ResponseRoute",
    "StreamFramer",
    "TransportError",
    "UnroutableError",
    "default_port",
    "destination_for_request",
    "response_route",
    "stamp_received",
    "via_for",
]
