"""Non-INVITE client transaction: RFC 3261 §17.1.2, Figure 6.

::

                                   |Request from TU
                                   |send request
               Timer E             V
               send request  +-----------+
                   +---------|           |-------------------+
                   |         |  Trying   |  Timer F          |
                   +-------->|           |  or Transport Err.|
                             +-----------+  inform TU        |
                200-699         |  |                         |
                resp. to TU     |  |1xx                      |
                +---------------+  |resp. to TU              |
                |                  |(E keeps running)        |
                |   Timer E        V       Timer F           |
                |   send req +-----------+ or Transport Err. |
                |  +---------|           | inform TU         |
                |  |         |Proceeding |------------------>|
                |  +-------->|           |-----+             |
                |  E at T2   +-----------+     |1xx          |
                |              |      ^        |resp to TU   |
                | 200-699      |      +--------+             |
                | resp. to TU  |                             |
                |              |                             |
                |              V                             |
                |            +-----------+                   |
                |            |           |                   |
                |            | Completed |                   |
                |            |           |                   |
                |            +-----------+                   |
                |              ^   |                         |
                |              |   | Timer K                 |
                +--------------+   | -                       |
                                   |                         |
                                   V                         |
             NOTE:           +-----------+                   |
                             |           |                   |
         transitions         | Terminated|<------------------+
         labeled with        |           |
         the event           +-----------+
         over the action
         to take

Timer E starts at T1 and doubles up to T2 while Trying. A 1xx moves us to Proceeding and
leaves the pending E as it is; when it fires there, the request is retransmitted and E is
reset to T2 (§17.1.2.2), so from then on it fires every T2. E runs only over unreliable
transports; F (64*T1) runs in Trying and Proceeding; K is T4 unreliable, 0 reliable.

Where the figure is silent: any response in Completed is absorbed (dropped), and a
transport error reported in Completed also ends the transaction and informs the TU.
"""

from __future__ import annotations

from ng911.sip.timers import TimerName
from ng911.sip.transaction.base import ClientTransaction, Fx, Input, TransactionState, check_table

__all__ = ["NonInviteClientTransaction"]

S = TransactionState
T = TimerName

TRANSITIONS = {
    S.TRYING: {
        T.E: (S.TRYING, (Fx.SEND_REQUEST, Fx.BACKOFF)),
        T.F: (S.TERMINATED, (Fx.TIMEOUT_TO_TU,)),
        Input.RESP_1XX: (S.PROCEEDING, (Fx.RESPONSE_TO_TU,)),
        Input.RESP_2XX: (S.COMPLETED, (Fx.RESPONSE_TO_TU,)),
        Input.RESP_3XX_6XX: (S.COMPLETED, (Fx.RESPONSE_TO_TU,)),
        Input.TRANSPORT_ERROR: (S.TERMINATED, (Fx.ERROR_TO_TU,)),
    },
    S.PROCEEDING: {
        T.E: (S.PROCEEDING, (Fx.SEND_REQUEST, Fx.REARM_E_AT_T2)),
        T.F: (S.TERMINATED, (Fx.TIMEOUT_TO_TU,)),
        Input.RESP_1XX: (S.PROCEEDING, (Fx.RESPONSE_TO_TU,)),
        Input.RESP_2XX: (S.COMPLETED, (Fx.RESPONSE_TO_TU,)),
        Input.RESP_3XX_6XX: (S.COMPLETED, (Fx.RESPONSE_TO_TU,)),
        Input.TRANSPORT_ERROR: (S.TERMINATED, (Fx.ERROR_TO_TU,)),
    },
    S.COMPLETED: {
        T.K: (S.TERMINATED, ()),
        Input.RESP_1XX: (S.COMPLETED, ()),
        Input.RESP_2XX: (S.COMPLETED, ()),
        Input.RESP_3XX_6XX: (S.COMPLETED, ()),
        Input.TRANSPORT_ERROR: (S.TERMINATED, (Fx.ERROR_TO_TU,)),
    },
}

ENTRY_TIMERS = {
    S.TRYING: (T.E, T.F),
    S.COMPLETED: (T.K,),
}

KEEP_TIMERS = {
    S.PROCEEDING: frozenset({T.E, T.F}),
}

REMOTE_INPUTS = frozenset({Input.RESP_1XX, Input.RESP_2XX, Input.RESP_3XX_6XX, Input.TRANSPORT_ERROR})

check_table("NICT", TRANSITIONS, REMOTE_INPUTS, ENTRY_TIMERS, KEEP_TIMERS)


class NonInviteClientTransaction(ClientTransaction):
    KIND = "NICT"
    INITIAL = S.TRYING
    TRANSITIONS = TRANSITIONS
    ENTRY_TIMERS = ENTRY_TIMERS
    KEEP_TIMERS = KEEP_TIMERS

    __slots__ = ()
