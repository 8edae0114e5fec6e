"""Errors of the transaction layer.

h11's split: a :class:`LocalProtocolError` means *we* (the TU, or the layer's caller) used the
API wrongly — an input the current state does not allow, an unknown transaction, a second
final response. Peers' mistakes never raise: a remote message that fits no transition is
absorbed (dropped) by the machine, as RFC 3261 §17 prescribes.
"""

from __future__ import annotations

__all__ = ["LocalProtocolError", "TransactionError"]


class TransactionError(Exception):
    """Base class of the transaction layer's errors."""


class LocalProtocolError(TransactionError):
    """The caller fed an input the transaction's current state does not allow.

    The transaction is left exactly as it was.
    """
