"""INVITE client transaction: RFC 3261 §17.1.1, Figure 5, as amended by RFC 6026 §7.2.

::

                       |INVITE from TU
       Timer A fires   |INVITE sent
       Reset A,        V                           Timer B fires
       INVITE sent +-----------+                   or Transport Err.
          +--------|           |---------------------------------+ inform TU
          |        |  Calling  |                                 |
          +------->|           |-----------------+               |
                   +-----------+ 2xx             |               |
        300-699       |   |      2xx to TU       |               |
        ACK sent      |   | 1xx                  |               |
        resp. to TU   |   | 1xx to TU            |               |
      +---------------+   V                      |               |
      |  1xx       +-----------+                 |               |
      |  1xx to TU |           |                 |               |
      |  +---------|Proceeding |---------------->|               |
      |  +-------->|           | 2xx             |               |
      |            +-----------+ 2xx to TU       V               |
      |  300-699      |                    +-----------+  2xx     |
      |  ACK sent,    |                    |           |--------+ |
      |  resp. to TU  |                    |  Accepted |2xx to TU |
      V               V                    |  (6026)   |<-------+ |
   +-----------+<-----+                    +-----------+          |
   |           |--------+ 300-699                |                |
   | Completed |        | ACK sent               | Timer M fires  |
   |           |<-------+                        | -              |
   +-----------+                                 |                |
      | Timer D fires                            |                |
      | -                                        V                |
      |                                    +-----------+          |
      +----------------------------------->| Terminated|<---------+
                                           +-----------+

   Transitions are labelled with the event over the action taken. A transport error
   reported in Completed or Accepted also leads to Terminated and informs the TU.

Choices where the figure is silent (all absorb: the peer's message is dropped):

- Completed: 1xx and 2xx are absorbed; a retransmitted 300-699 re-sends the same ACK.
- Accepted: 1xx and 300-699 are absorbed (a 1xx after the 2xx reaches no one).
- A transport error (reported by the shell) ends the transaction from any state, and the
  TU is told (Completed and Accepted included: nothing more can come of it).
- Proceeding runs no timer: guarding a transaction that rings forever is Timer C, the TU's.

Timer A doubles without bound (T1, 2*T1, 4*T1, …) and only over unreliable transports; B is
64*T1 and only runs in Calling; D is max(32 s, 64*T1) unreliable, 0 reliable; M is 64*T1.
"""

from __future__ import annotations

from ng911.sip.timers import TimerName
from ng911.sip.transaction.base import ClientTransaction, Fx, Input, TransactionState, check_table

__all__ = ["InviteClientTransaction"]

S = TransactionState
T = TimerName

TRANSITIONS = {
    S.CALLING: {
        T.A: (S.CALLING, (Fx.SEND_REQUEST, Fx.BACKOFF)),
        T.B: (S.TERMINATED, (Fx.TIMEOUT_TO_TU,)),
        Input.RESP_1XX: (S.PROCEEDING, (Fx.RESPONSE_TO_TU,)),
        Input.RESP_2XX: (S.ACCEPTED, (Fx.RESPONSE_TO_TU,)),
        Input.RESP_3XX_6XX: (S.COMPLETED, (Fx.SEND_ACK, Fx.RESPONSE_TO_TU)),
        Input.TRANSPORT_ERROR: (S.TERMINATED, (Fx.ERROR_TO_TU,)),
    },
    S.PROCEEDING: {
        Input.RESP_1XX: (S.PROCEEDING, (Fx.RESPONSE_TO_TU,)),
        Input.RESP_2XX: (S.ACCEPTED, (Fx.RESPONSE_TO_TU,)),
        Input.RESP_3XX_6XX: (S.COMPLETED, (Fx.SEND_ACK, Fx.RESPONSE_TO_TU)),
        Input.TRANSPORT_ERROR: (S.TERMINATED, (Fx.ERROR_TO_TU,)),
    },
    S.COMPLETED: {
        T.D: (S.TERMINATED, ()),
        Input.RESP_1XX: (S.COMPLETED, ()),
        Input.RESP_2XX: (S.COMPLETED, ()),
        Input.RESP_3XX_6XX: (S.COMPLETED, (Fx.SEND_ACK,)),
        Input.TRANSPORT_ERROR: (S.TERMINATED, (Fx.ERROR_TO_TU,)),
    },
    S.ACCEPTED: {
        T.M: (S.TERMINATED, ()),
        Input.RESP_1XX: (S.ACCEPTED, ()),
        Input.RESP_2XX: (S.ACCEPTED, (Fx.RESPONSE_TO_TU,)),
        Input.RESP_3XX_6XX: (S.ACCEPTED, ()),
        Input.TRANSPORT_ERROR: (S.TERMINATED, (Fx.ERROR_TO_TU,)),
    },
}

ENTRY_TIMERS = {
    S.CALLING: (T.A, T.B),
    S.COMPLETED: (T.D,),
    S.ACCEPTED: (T.M,),
}

KEEP_TIMERS: dict[TransactionState, frozenset[TimerName]] = {}

REMOTE_INPUTS = frozenset({Input.RESP_1XX, Input.RESP_2XX, Input.RESP_3XX_6XX, Input.TRANSPORT_ERROR})

check_table("ICT", TRANSITIONS, REMOTE_INPUTS, ENTRY_TIMERS, KEEP_TIMERS)


class InviteClientTransaction(ClientTransaction):
    KIND = "ICT"
    INITIAL = S.CALLING
    TRANSITIONS = TRANSITIONS
    ENTRY_TIMERS = ENTRY_TIMERS
    KEEP_TIMERS = KEEP_TIMERS

    __slots__ = ()
