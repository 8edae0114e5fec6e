"""What the transaction layer asks its shell (transport) and its TU (UA core) to do.

Every input to the layer returns a list of these, in the order they must be performed.
All are frozen value objects; the layer keeps no reference to what it hands out.

=======================  ===================================================================
action                   meaning
=======================  ===================================================================
Send                     pass ``message`` to the transport for ``dest`` (the opaque flow or
                         destination the transaction was created with)
ToTU                     deliver ``message`` (a Request, a Response, a TransactionTimeout or
                         a TransportError) to the TU; ``key`` is None for strays (a 2xx or
                         ACK for 2xx matching no transaction)
CancelRequest            a CANCEL arrived (its own server transaction ``key``); it matched
                         the INVITE server transaction ``invite_key`` (None: answer 481)
MergedRequest            §8.2.2.2: same From tag, Call-ID and CSeq as ``original_key`` but a
                         different transaction: answer 482 on ``key``
TransactionTerminated    the transaction ``key`` is gone; the layer has forgotten it
=======================  ===================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from ng911.sip.timers import TimerName

if TYPE_CHECKING:
    from ng911.sip.message import Request, Response
    from ng911.sip.transaction.keys import TransactionKey

__all__ = [
    "Action",
    "CancelRequest",
    "MergedRequest",
    "Send",
    "ToTU",
    "TransactionTerminated",
    "TransactionTimeout",
    "TransportError",
]


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """The transaction gave up: Timer B or F (no final response), H (no ACK)."""

    timer: TimerName


@dataclass(frozen=True, slots=True)
class TransportError:
    """The transport could not deliver one of the transaction's messages (§17.1.4, §17.2.4)."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class Send:
    message: Request | Response
    dest: Any


@dataclass(frozen=True, slots=True)
class ToTU:
    message: Request | Response | TransactionTimeout | TransportError
    key: TransactionKey | None
    #: The flow a received message came from; None for timeouts and transport errors.
    source: Any = None


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """A CANCEL for the TU: answer 200 on ``key``; and 487 on ``invite_key`` if pending."""

    message: Request
    key: TransactionKey
    invite_key: TransactionKey | None
    #: True when the INVITE server transaction has sent no final response yet.
    invite_pending: bool
    source: Any = None


@dataclass(frozen=True, slots=True)
class MergedRequest:
    """A merged request (RFC 3261 §8.2.2.2): the TU should answer 482 on ``key``."""

    message: Request
    key: TransactionKey
    original_key: TransactionKey
    source: Any = None


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    key: TransactionKey


Action: TypeAlias = Send | ToTU | CancelRequest | MergedRequest | TransactionTerminated
