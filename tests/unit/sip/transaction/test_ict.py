"""INVITE client transaction (RFC 3261 §17.1.1, Fig. 5; RFC 6026 Accepted)."""

from __future__ import annotations

import pytest

from ng911.sip.timers import TimerConfig, TimerName as T
from ng911.sip.transaction import (
    InviteClientTransaction,
    LocalProtocolError,
    Send,
    ToTU,
    TransactionState as S,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from ng911.sip.transaction.keys import client_key

from .messages import DEST, request, response

INVITE = request("INVITE")
KEY = client_key(INVITE)


def ict(*, reliable: bool = False, config: TimerConfig | None = None, now: float = 0.0) -> InviteClientTransaction:
    tsx = InviteClientTransaction(KEY, INVITE, DEST, reliable=reliable, config=config or TimerConfig())
    assert tsx.start(now) == [Send(INVITE, DEST)]
    return tsx


def test_ict_sends_invite_and_arms_timers_a_and_b() -> None:
    tsx = ict()
    assert tsx.state is S.CALLING
    assert tsx.timers() == {T.A: 0.5, T.B: 32.0}
    assert tsx.next_deadline() == 0.5


def test_ict_reliable_transport_runs_no_timer_a() -> None:
    tsx = ict(reliable=True)
    assert tsx.timers() == {T.B: 32.0}


def test_ict_timer_a_retransmits_and_doubles_without_cap() -> None:
    tsx = ict()
    sent_at = []
    now = 0.0
    while (deadline := tsx.next_deadline()) is not None and deadline < 32.0:
        now = deadline
        assert tsx.on_timer(now) == [Send(INVITE, DEST)]
        sent_at.append(now)
    assert sent_at == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # intervals 0.5 1 2 4 8 16: past T2
    assert tsx.state is S.CALLING


def test_ict_timer_b_reports_timeout_to_tu() -> None:
    tsx = ict(reliable=True)
    assert tsx.on_timer(31.9) == []
    assert tsx.on_timer(32.0) == [ToTU(TransactionTimeout(T.B), KEY), TransactionTerminated(KEY)]
    assert tsx.state is S.TERMINATED
    assert tsx.next_deadline() is None


def test_ict_late_on_timer_fires_due_timers_in_deadline_order() -> None:
    tsx = ict()
    actions = tsx.on_timer(40.0)  # A (0.5) first, then B (32) ends it; A's re-arm never fires
    assert actions == [Send(INVITE, DEST), ToTU(TransactionTimeout(T.B), KEY), TransactionTerminated(KEY)]


def test_ict_1xx_moves_to_proceeding_passes_to_tu_and_stops_timers() -> None:
    tsx = ict()
    ringing = response(INVITE, 180)
    assert tsx.receive_response(ringing, 0.2, "flow") == [ToTU(ringing, KEY, "flow")]
    assert tsx.state is S.PROCEEDING
    assert tsx.next_deadline() is None  # no A, no B: Timer C is the TU's


def test_ict_1xx_in_proceeding_passed_to_tu() -> None:
    tsx = ict()
    tsx.receive_response(response(INVITE, 100), 0.1)
    ringing = response(INVITE, 180)
    assert tsx.receive_response(ringing, 0.2) == [ToTU(ringing, KEY)]
    assert tsx.state is S.PROCEEDING


def test_ict_non2xx_final_sends_ack_passes_to_tu_and_arms_timer_d() -> None:
    tsx = ict()
    busy = response(INVITE, 486)
    actions = tsx.receive_response(busy, 1.0)
    assert len(actions) == 2
    send, to_tu = actions
    assert to_tu == ToTU(busy, KEY)
    assert isinstance(send, Send) and send.dest == DEST
    ack = send.message
    assert ack.method == "ACK"
    assert ack.branch == INVITE.branch
    assert ack.to.tag == "tt1"
    assert (ack.cseq.seq, ack.cseq.method) == (INVITE.cseq.seq, "ACK")
    assert tsx.state is S.COMPLETED
    assert tsx.timers() == {T.D: 33.0}


def test_ict_timer_d_is_64_t1_when_that_exceeds_32s() -> None:
    tsx = ict(config=TimerConfig(t1=1.0, t2=4.0))
    tsx.receive_response(response(INVITE, 500), 0.0)
    assert tsx.timers() == {T.D: 64.0}


def test_ict_retransmitted_final_resends_same_ack_and_is_not_passed_up() -> None:
    tsx = ict()
    busy = response(INVITE, 486)
    first_ack = tsx.receive_response(busy, 1.0)[0]
    assert tsx.receive_response(busy, 2.0) == [first_ack]
    assert tsx.state is S.COMPLETED
    assert tsx.timers() == {T.D: 33.0}  # D is not restarted


def test_ict_non2xx_from_proceeding_also_acks() -> None:
    tsx = ict()
    tsx.receive_response(response(INVITE, 180), 0.5)
    actions = tsx.receive_response(response(INVITE, 603), 1.0)
    assert isinstance(actions[0], Send) and actions[0].message.method == "ACK"
    assert tsx.state is S.COMPLETED


def test_ict_absorbs_1xx_and_2xx_in_completed() -> None:
    tsx = ict()
    tsx.receive_response(response(INVITE, 486), 1.0)
    assert tsx.receive_response(response(INVITE, 180), 1.1) == []
    assert tsx.receive_response(response(INVITE, 200), 1.2) == []
    assert tsx.state is S.COMPLETED


def test_ict_timer_d_terminates_completed() -> None:
    tsx = ict()
    tsx.receive_response(response(INVITE, 486), 1.0)
    assert tsx.on_timer(33.0) == [TransactionTerminated(KEY)]
    assert tsx.state is S.TERMINATED


def test_ict_reliable_non2xx_terminates_at_once_timer_d_zero() -> None:
    tsx = ict(reliable=True)
    busy = response(INVITE, 486)
    actions = tsx.receive_response(busy, 1.0)
    assert [type(a) for a in actions] == [Send, ToTU, TransactionTerminated]
    assert tsx.state is S.TERMINATED


def test_ict_2xx_enters_accepted_and_arms_timer_m_without_acking() -> None:
    tsx = ict()
    ok = response(INVITE, 200)
    assert tsx.receive_response(ok, 1.0) == [ToTU(ok, KEY)]  # the ACK for 2xx is the TU's
    assert tsx.state is S.ACCEPTED
    assert tsx.timers() == {T.M: 33.0}


def test_ict_timer_m_runs_over_reliable_transports_too() -> None:
    tsx = ict(reliable=True)
    tsx.receive_response(response(INVITE, 200), 1.0)
    assert tsx.timers() == {T.M: 33.0}


def test_ict_2xx_from_proceeding_enters_accepted() -> None:
    tsx = ict()
    tsx.receive_response(response(INVITE, 183), 0.3)
    tsx.receive_response(response(INVITE, 200), 1.0)
    assert tsx.state is S.ACCEPTED


def test_ict_further_2xx_in_accepted_passed_to_tu() -> None:
    tsx = ict()
    tsx.receive_response(response(INVITE, 200, to_tag="a"), 1.0)
    retransmitted = response(INVITE, 200, to_tag="a")
    forked = response(INVITE, 200, to_tag="b")
    assert tsx.receive_response(retransmitted, 1.5) == [ToTU(retransmitted, KEY)]
    assert tsx.receive_response(forked, 2.0) == [ToTU(forked, KEY)]
    assert tsx.state is S.ACCEPTED
    assert tsx.timers() == {T.M: 33.0}  # M is not restarted


def test_ict_absorbs_1xx_after_2xx() -> None:
    tsx = ict()
    tsx.receive_response(response(INVITE, 200), 1.0)
    assert tsx.receive_response(response(INVITE, 180), 1.1) == []
    assert tsx.state is S.ACCEPTED


def test_ict_absorbs_non2xx_after_2xx() -> None:
    tsx = ict()
    tsx.receive_response(response(INVITE, 200), 1.0)
    assert tsx.receive_response(response(INVITE, 486, to_tag="z"), 1.1) == []
    assert tsx.state is S.ACCEPTED


def test_ict_timer_m_terminates_accepted() -> None:
    tsx = ict()
    tsx.receive_response(response(INVITE, 200), 1.0)
    assert tsx.on_timer(33.0) == [TransactionTerminated(KEY)]
    assert tsx.state is S.TERMINATED


@pytest.mark.parametrize("before", [[], [180], [180, 200], [486]])
def test_ict_transport_error_informs_tu_and_terminates(before: list[int]) -> None:
    tsx = ict()
    for status in before:
        tsx.receive_response(response(INVITE, status), 0.1)
    assert tsx.transport_error(0.2, "ICMP unreachable") == [
        ToTU(TransportError("ICMP unreachable"), KEY),
        TransactionTerminated(KEY),
    ]
    assert tsx.state is S.TERMINATED


def test_ict_input_after_terminated_raises_and_state_stays() -> None:
    tsx = ict(reliable=True)
    tsx.on_timer(32.0)
    with pytest.raises(LocalProtocolError):
        tsx.receive_response(response(INVITE, 200), 33.0)
    assert tsx.state is S.TERMINATED
