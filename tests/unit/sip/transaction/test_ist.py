"""INVITE server transaction (RFC 3261 §17.2.1, Fig. 7; RFC 6026 Accepted)."""

from __future__ import annotations

import pytest

from ng911.sip import builders
from ng911.sip.timers import TimerConfig, TimerName as T
from ng911.sip.transaction import (
    InviteServerTransaction,
    LocalProtocolError,
    Send,
    ToTU,
    TransactionState as S,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from ng911.sip.transaction.keys import server_key

from .messages import ack_for, request

INVITE = request("INVITE")
KEY = server_key(INVITE)
FLOW = ("198.51.100.7", 5060, "UDP")


def ist(*, reliable: bool = False, trying_delay: float | None = 0.2) -> InviteServerTransaction:
    tsx = InviteServerTransaction(
        KEY, INVITE, FLOW, reliable=reliable, config=TimerConfig(trying_delay=trying_delay)
    )
    if trying_delay != 0:
        assert tsx.start(0.0) == []
    return tsx


def answer(status: int) -> object:
    return builders.make_response(INVITE, status, to_tag="ours")


def test_ist_sends_100_trying_after_200ms_if_tu_silent() -> None:
    tsx = ist()
    assert tsx.state is S.PROCEEDING
    assert tsx.next_deadline() == 0.2
    assert tsx.on_timer(0.19) == []
    [send] = tsx.on_timer(0.2)
    assert isinstance(send, Send) and send.dest == FLOW
    assert send.message.status == 100
    assert send.message.to.tag is None  # §17.2.1: no To tag on the 100
    assert tsx.next_deadline() is None
    assert tsx.state is S.PROCEEDING


def test_ist_no_automatic_100_when_tu_sends_provisional_first() -> None:
    tsx = ist()
    ringing = answer(180)
    assert tsx.send_response(ringing, 0.1) == [Send(ringing, FLOW)]
    assert tsx.next_deadline() is None


def test_ist_trying_delay_zero_sends_100_at_once() -> None:
    tsx = InviteServerTransaction(KEY, INVITE, FLOW, reliable=False, config=TimerConfig(trying_delay=0))
    [send] = tsx.start(0.0)
    assert send.message.status == 100
    assert tsx.next_deadline() is None


def test_ist_trying_delay_none_never_sends_100() -> None:
    tsx = ist(trying_delay=None)
    assert tsx.next_deadline() is None


def test_ist_retransmitted_invite_in_proceeding_resends_last_provisional() -> None:
    tsx = ist()
    ringing = answer(180)
    tsx.send_response(answer(183), 0.05)
    tsx.send_response(ringing, 0.1)
    assert tsx.receive_request(INVITE, 0.5) == [Send(ringing, FLOW)]


def test_ist_retransmitted_invite_before_any_provisional_sends_100_at_once() -> None:
    tsx = ist()
    [send] = tsx.receive_request(INVITE, 0.1)
    assert send.message.status == 100
    assert tsx.next_deadline() is None  # the automatic 100 is not sent twice
    assert tsx.receive_request(INVITE, 0.6) == [send]


def test_ist_2xx_from_tu_is_sent_once_and_enters_accepted_with_timer_l() -> None:
    tsx = ist()
    ok = answer(200)
    assert tsx.send_response(ok, 1.0) == [Send(ok, FLOW)]
    assert tsx.state is S.ACCEPTED
    assert tsx.timers() == {T.L: 33.0}  # no G: the TU retransmits 2xx (RFC 6026)
    assert tsx.on_timer(32.9) == []


def test_ist_absorbs_retransmitted_invite_in_accepted() -> None:
    tsx = ist()
    tsx.send_response(answer(200), 1.0)
    assert tsx.receive_request(INVITE, 1.5) == []
    assert tsx.state is S.ACCEPTED


def test_ist_sends_tu_2xx_retransmissions_in_accepted() -> None:
    tsx = ist()
    ok = answer(200)
    tsx.send_response(ok, 1.0)
    assert tsx.send_response(ok, 1.5) == [Send(ok, FLOW)]
    assert tsx.state is S.ACCEPTED


def test_ist_ack_in_accepted_goes_to_tu_as_stray() -> None:
    tsx = ist()
    tsx.send_response(answer(200), 1.0)
    ack = request("ACK", to_tag="ours")
    assert tsx.receive_request(ack, 1.2, FLOW) == [ToTU(ack, None, FLOW)]
    assert tsx.state is S.ACCEPTED


@pytest.mark.parametrize("status", [180, 486])
def test_ist_tu_non2xx_in_accepted_raises_and_keeps_state(status: int) -> None:
    tsx = ist()
    tsx.send_response(answer(200), 1.0)
    with pytest.raises(LocalProtocolError):
        tsx.send_response(answer(status), 1.1)
    assert tsx.state is S.ACCEPTED
    assert tsx.timers() == {T.L: 33.0}


def test_ist_timer_l_terminates_accepted() -> None:
    tsx = ist()
    tsx.send_response(answer(200), 1.0)
    assert tsx.on_timer(33.0) == [TransactionTerminated(KEY)]
    assert tsx.state is S.TERMINATED


def test_ist_non2xx_final_enters_completed_and_arms_g_and_h() -> None:
    tsx = ist()
    busy = answer(486)
    assert tsx.send_response(busy, 1.0) == [Send(busy, FLOW)]
    assert tsx.state is S.COMPLETED
    assert tsx.timers() == {T.G: 1.5, T.H: 33.0}  # TRYING stopped


def test_ist_timer_g_retransmits_final_doubling_up_to_t2() -> None:
    tsx = ist()
    busy = answer(486)
    tsx.send_response(busy, 0.0)
    sent_at = []
    while (deadline := tsx.next_deadline()) is not None and deadline < 20.0:
        assert tsx.on_timer(deadline) == [Send(busy, FLOW)]
        sent_at.append(deadline)
    assert sent_at == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5]


def test_ist_retransmitted_invite_in_completed_resends_final() -> None:
    tsx = ist()
    busy = answer(486)
    tsx.send_response(busy, 1.0)
    assert tsx.receive_request(INVITE, 1.2) == [Send(busy, FLOW)]
    assert tsx.state is S.COMPLETED


def test_ist_timer_h_reports_timeout_to_tu() -> None:
    tsx = ist(reliable=True)
    tsx.send_response(answer(486), 1.0)
    assert tsx.timers() == {T.H: 33.0}  # no G over a reliable transport
    assert tsx.on_timer(33.0) == [ToTU(TransactionTimeout(T.H), KEY), TransactionTerminated(KEY)]


def test_ist_ack_in_completed_moves_to_confirmed_and_arms_timer_i_t4() -> None:
    tsx = ist()
    busy = answer(486)
    tsx.send_response(busy, 1.0)
    assert tsx.receive_request(ack_for(INVITE, busy), 2.0) == []  # the ACK never reaches the TU
    assert tsx.state is S.CONFIRMED
    assert tsx.timers() == {T.I: 7.0}  # G and H stopped


def test_ist_absorbs_ack_and_invite_in_confirmed() -> None:
    tsx = ist()
    busy = answer(486)
    tsx.send_response(busy, 1.0)
    ack = ack_for(INVITE, busy)
    tsx.receive_request(ack, 2.0)
    assert tsx.receive_request(ack, 2.5) == []
    assert tsx.receive_request(INVITE, 2.6) == []
    assert tsx.state is S.CONFIRMED


def test_ist_timer_i_terminates_confirmed() -> None:
    tsx = ist()
    busy = answer(486)
    tsx.send_response(busy, 1.0)
    tsx.receive_request(ack_for(INVITE, busy), 2.0)
    assert tsx.on_timer(7.0) == [TransactionTerminated(KEY)]


def test_ist_reliable_ack_terminates_at_once_timer_i_zero() -> None:
    tsx = ist(reliable=True)
    busy = answer(486)
    tsx.send_response(busy, 1.0)
    assert tsx.receive_request(ack_for(INVITE, busy), 2.0) == [TransactionTerminated(KEY)]


def test_ist_ack_in_proceeding_is_absorbed() -> None:
    tsx = ist()
    assert tsx.receive_request(request("ACK"), 0.1) == []
    assert tsx.state is S.PROCEEDING


@pytest.mark.parametrize("state_after", [486, 500])
def test_ist_tu_response_in_completed_raises_and_keeps_state(state_after: int) -> None:
    tsx = ist()
    tsx.send_response(answer(state_after), 1.0)
    before = tsx.timers()
    with pytest.raises(LocalProtocolError):
        tsx.send_response(answer(200), 1.1)
    assert tsx.state is S.COMPLETED
    assert tsx.timers() == before


def test_ist_rejects_a_response_to_another_method_or_a_bogus_status() -> None:
    tsx = ist()
    with pytest.raises(LocalProtocolError):
        tsx.send_response(builders.make_response(request("CANCEL"), 200), 0.1)
    with pytest.raises(LocalProtocolError):
        tsx.send_response(answer(200).replace(status=700), 0.1)
    assert tsx.state is S.PROCEEDING


def test_ist_transport_error_in_proceeding_informs_tu_and_terminates() -> None:
    tsx = ist()
    assert tsx.transport_error(0.1) == [ToTU(TransportError(), KEY), TransactionTerminated(KEY)]


def test_ist_transport_error_in_completed_informs_tu_and_terminates() -> None:
    tsx = ist()
    tsx.send_response(answer(486), 1.0)
    assert tsx.transport_error(1.1) == [ToTU(TransportError(), KEY), TransactionTerminated(KEY)]


def test_ist_transport_error_in_accepted_informs_tu_and_stays() -> None:
    tsx = ist()
    tsx.send_response(answer(200), 1.0)
    assert tsx.transport_error(1.1) == [ToTU(TransportError(), KEY)]
    assert tsx.state is S.ACCEPTED
