"""RFC 3261 §17 transactions, sans-I/O: four state machines and the layer that keys them.

Nothing here reads a clock or touches a socket: every input takes ``now``, every output is
an action (:mod:`ng911.sip.transaction.actions`) for the shell or the TU to perform.
"""

from ng911.sip.timers import TimerConfig, TimerName
from ng911.sip.transaction.actions import (
    Action,
    CancelRequest,
    MergedRequest,
    Send,
    ToTU,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from ng911.sip.transaction.base import Transaction, TransactionState
from ng911.sip.transaction.errors import LocalProtocolError, TransactionError
from ng911.sip.transaction.ict import InviteClientTransaction
from ng911.sip.transaction.ist import InviteServerTransaction
from ng911.sip.transaction.keys import ClientKey, LegacyServerKey, ServerKey, TransactionKey
from ng911.sip.transaction.layer import TransactionLayer
from ng911.sip.transaction.nict import NonInviteClientTransaction
from ng911.sip.transaction.nist import NonInviteServerTransaction

__all__ = [
    "Action",
    "CancelRequest",
    "ClientKey",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "LegacyServerKey",
    "LocalProtocolError",
    "MergedRequest",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "Send",
    "ServerKey",
    "TimerConfig",
    "TimerName",
    "ToTU",
    "Transaction",
    "TransactionError",
    "TransactionKey",
    "TransactionLayer",
    "TransactionState",
    "TransactionTerminated",
    "TransactionTimeout",
    "TransportError",
]
