"""Non-INVITE server transaction: RFC 3261 §17.2.2, Figure 8.

::

                                   |Request received
                                   |pass to TU
                                   V
                             +-----------+
                             |           |
                             | Trying    |-------------+
                             |           |             |
                             +-----------+             |200-699 from TU
                                   |                   |send response
                                   |1xx from TU        |
                                   |send response      |
                                   |                   |
                Request            V      1xx from TU  |
                send response+-----------+send response|
                    +--------|           |--------+    |
                    |        | Proceeding|        |    |
                    +------->|           |<-------+    |
             +<--------------|           |             |
             |Trnsprt Err    +-----------+             |
             |Inform TU            |                   |
             |                     |                   |
             |                     |200-699 from TU    |
             |                     |send response      |
             |  Request            V                   |
             |  send response+-----------+             |
             |      +--------|           |             |
             |      |        | Completed |<------------+
             |      +------->|           |
             +<--------------|           |
             |Trnsprt Err    +-----------+
             |Inform TU            |
             |                     |Timer J fires
             |                     |-
             |                     |
             |                     V
             |               +-----------+
             |               |           |
             +-------------->| Terminated|
                             |           |
                             +-----------+

A retransmitted request in Trying is absorbed (there is nothing to resend yet); in Proceeding
and Completed it re-sends the last response. J is 64*T1 unreliable, 0 reliable. The TU
passing a response in Completed raises LocalProtocolError (RFC 3261: it is discarded).
A transport error in Trying also ends the transaction and informs the TU.
"""

from __future__ import annotations

from ng911.sip.timers import TimerName
from ng911.sip.transaction.base import Fx, Input, ServerTransaction, TransactionState, check_table

__all__ = ["NonInviteServerTransaction"]

S = TransactionState
T = TimerName

_FINAL = (S.COMPLETED, (Fx.SEND_RESPONSE,))

TRANSITIONS = {
    S.TRYING: {
        Input.REQUEST: (S.TRYING, ()),
        Input.TU_1XX: (S.PROCEEDING, (Fx.SEND_RESPONSE,)),
        Input.TU_2XX: _FINAL,
        Input.TU_3XX_6XX: _FINAL,
        Input.TRANSPORT_ERROR: (S.TERMINATED, (Fx.ERROR_TO_TU,)),
    },
    S.PROCEEDING: {
        Input.REQUEST: (S.PROCEEDING, (Fx.RESEND_RESPONSE,)),
        Input.TU_1XX: (S.PROCEEDING, (Fx.SEND_RESPONSE,)),
        Input.TU_2XX: _FINAL,
        Input.TU_3XX_6XX: _FINAL,
        Input.TRANSPORT_ERROR: (S.TERMINATED, (Fx.ERROR_TO_TU,)),
    },
    S.COMPLETED: {
        T.J: (S.TERMINATED, ()),
        Input.REQUEST: (S.COMPLETED, (Fx.RESEND_RESPONSE,)),
        Input.TRANSPORT_ERROR: (S.TERMINATED, (Fx.ERROR_TO_TU,)),
    },
}

ENTRY_TIMERS = {
    S.COMPLETED: (T.J,),
}

KEEP_TIMERS: dict[TransactionState, frozenset[TimerName]] = {}

REMOTE_INPUTS = frozenset({Input.REQUEST, Input.TRANSPORT_ERROR})

check_table("NIST", TRANSITIONS, REMOTE_INPUTS, ENTRY_TIMERS, KEEP_TIMERS)


class NonInviteServerTransaction(ServerTransaction):
    KIND = "NIST"
    INITIAL = S.TRYING
    TRANSITIONS = TRANSITIONS
    ENTRY_TIMERS = ENTRY_TIMERS
    KEEP_TIMERS = KEEP_TIMERS

    __slots__ = ()
