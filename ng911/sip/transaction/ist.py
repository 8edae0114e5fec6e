"""INVITE server transaction: RFC 3261 §17.2.1, Figure 7, as amended by RFC 6026 §7.1.

::

                               |INVITE
                               |pass INV to TU
            INVITE             V send 100 if TU won't in 200 ms
            send response +-----------+
                +---------|           |---------+ 101-199 from TU
                |         | Proceeding|         | send response
                +-------->|           |<--------+
                          +-----------+
       300-699 from TU      |       |      |  Transport Err.
       send response        |       |      |  Inform TU
           +----------------+       |      +---------------------------+
           |                        | 2xx from TU                      |
           |                        | send response                    |
           V                        V                                  |
     +-----------+            +-----------+  INVITE: -                 |
     |           |--+ INVITE  |           |--+ 2xx from TU: send       |
     | Completed |  | Timer G | Accepted  |  | ACK: to TU (stray)      |
     |           |<-+ send    |  (6026)   |<-+ Transport Err.:         |
     +-----------+    resp.   +-----------+      Inform TU             |
        |     |                     |                                  |
        |     | ACK                 | Timer L fires                    |
        |     | -                   | -                                |
        |     V                     |                                  |
        |  +-----------+            |                                  |
        |  |           |--+ ACK     |                                  |
        |  | Confirmed |  | INVITE  |                                  |
        |  |           |<-+ -       |                                  |
        |  +-----------+            |                                  |
        |     |                     |                                  |
        |     | Timer I fires       |                                  |
        |     | -                   |                                  |
        |     V                     V                                  |
        |  +--------------------------------+                          |
        +->|           Terminated           |<-------------------------+
           +--------------------------------+
     Timer H fires
     or Transport Err.
     Inform TU

The 2xx is sent once by the transaction; retransmitting it until the ACK comes is the UA
core's job (RFC 6026: the TU retransmits, and each retransmission it passes down while in
Accepted is sent). The ACK for a 2xx is not part of the transaction: it goes to the TU as
a stray (``ToTU(ack, key=None)``). Retransmitted INVITEs are absorbed in Accepted and in
Confirmed. A transport error in Accepted only informs the TU (its 2xx may be retried).

The 100 Trying: ``TimerName.TRYING`` (``TimerConfig.trying_delay``, 200 ms by default) sends
100 unless the TU has passed down a provisional response by then; 0 sends it at once, None
never. A retransmitted INVITE in Proceeding re-sends the last provisional, or sends the 100
at once if none went out yet.

Where the figure is silent: an ACK in Proceeding and ACK or INVITE in Confirmed are absorbed;
a transport error in Confirmed ends the transaction (and informs the TU). The TU passing a
response in Completed or Confirmed, or a 1xx / 300-699 in Accepted, raises
LocalProtocolError (RFC 3261 says such responses are discarded: nothing is sent).

G starts at T1 and doubles up to T2, unreliable transports only; H and L are 64*T1;
I is T4 unreliable, 0 reliable.
"""

from __future__ import annotations

from ng911.sip.timers import TimerName
from ng911.sip.transaction.base import Fx, Input, ServerTransaction, TransactionState, check_table

__all__ = ["InviteServerTransaction"]

S = TransactionState
T = TimerName

TRANSITIONS = {
    S.PROCEEDING: {
        T.TRYING: (S.PROCEEDING, (Fx.SEND_TRYING,)),
        Input.REQUEST: (S.PROCEEDING, (Fx.RESEND_PROVISIONAL,)),
        Input.ACK: (S.PROCEEDING, ()),
        Input.TU_1XX: (S.PROCEEDING, (Fx.STOP_TRYING, Fx.SEND_RESPONSE)),
        Input.TU_2XX: (S.ACCEPTED, (Fx.SEND_RESPONSE,)),
        Input.TU_3XX_6XX: (S.COMPLETED, (Fx.SEND_RESPONSE,)),
        Input.TRANSPORT_ERROR: (S.TERMINATED, (Fx.ERROR_TO_TU,)),
    },
    S.COMPLETED: {
        T.G: (S.COMPLETED, (Fx.RESEND_RESPONSE, Fx.BACKOFF)),
        T.H: (S.TERMINATED, (Fx.TIMEOUT_TO_TU,)),
        Input.REQUEST: (S.COMPLETED, (Fx.RESEND_RESPONSE,)),
        Input.ACK: (S.CONFIRMED, ()),
        Input.TRANSPORT_ERROR: (S.TERMINATED, (Fx.ERROR_TO_TU,)),
    },
    S.CONFIRMED: {
        T.I: (S.TERMINATED, ()),
        Input.REQUEST: (S.CONFIRMED, ()),
        Input.ACK: (S.CONFIRMED, ()),
        Input.TRANSPORT_ERROR: (S.TERMINATED, (Fx.ERROR_TO_TU,)),
    },
    S.ACCEPTED: {
        T.L: (S.TERMINATED, ()),
        Input.REQUEST: (S.ACCEPTED, ()),
        Input.ACK: (S.ACCEPTED, (Fx.STRAY_TO_TU,)),
        Input.TU_2XX: (S.ACCEPTED, (Fx.SEND_RESPONSE,)),
        Input.TRANSPORT_ERROR: (S.ACCEPTED, (Fx.ERROR_TO_TU,)),
    },
}

ENTRY_TIMERS = {
    S.PROCEEDING: (T.TRYING,),
    S.COMPLETED: (T.G, T.H),
    S.CONFIRMED: (T.I,),
    S.ACCEPTED: (T.L,),
}

KEEP_TIMERS: dict[TransactionState, frozenset[TimerName]] = {}

REMOTE_INPUTS = frozenset({Input.REQUEST, Input.ACK, Input.TRANSPORT_ERROR})

check_table("IST", TRANSITIONS, REMOTE_INPUTS, ENTRY_TIMERS, KEEP_TIMERS)


class InviteServerTransaction(ServerTransaction):
    KIND = "IST"
    INITIAL = S.PROCEEDING
    TRANSITIONS = TRANSITIONS
    ENTRY_TIMERS = ENTRY_TIMERS
    KEEP_TIMERS = KEEP_TIMERS

    __slots__ = ()

    @property
    def pending(self) -> bool:
        """No final response sent yet: a CANCEL should be answered with 487 on this one."""
        return self.state is S.PROCEEDING
