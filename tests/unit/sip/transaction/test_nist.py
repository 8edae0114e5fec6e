"""Non-INVITE server transaction (RFC 3261 §17.2.2, Fig. 8)."""

from __future__ import annotations

import pytest

from ng911.sip import builders
from ng911.sip.timers import TimerConfig, TimerName as T
from ng911.sip.transaction import (
    LocalProtocolError,
    NonInviteServerTransaction,
    Send,
    ToTU,
    TransactionState as S,
    TransactionTerminated,
    TransportError,
)
from ng911.sip.transaction.keys import server_key

from .messages import request

BYE = request("BYE", to_tag="tt1")
KEY = server_key(BYE)
FLOW = "flow-1"


def nist(*, reliable: bool = False) -> NonInviteServerTransaction:
    tsx = NonInviteServerTransaction(KEY, BYE, FLOW, reliable=reliable, config=TimerConfig())
    assert tsx.start(0.0) == []
    return tsx


def answer(status: int) -> object:
    return builders.make_response(BYE, status)


def test_nist_starts_trying_with_no_timer_and_no_automatic_100() -> None:
    tsx = nist()
    assert tsx.state is S.TRYING
    assert tsx.next_deadline() is None


def test_nist_absorbs_retransmission_in_trying() -> None:
    tsx = nist()
    assert tsx.receive_request(BYE, 0.5) == []
    assert tsx.state is S.TRYING


def test_nist_1xx_from_tu_enters_proceeding_and_retransmission_resends_it() -> None:
    tsx = nist()
    trying = answer(100)
    assert tsx.send_response(trying, 0.1) == [Send(trying, FLOW)]
    assert tsx.state is S.PROCEEDING
    assert tsx.receive_request(BYE, 0.5) == [Send(trying, FLOW)]
    later = answer(183)
    assert tsx.send_response(later, 0.6) == [Send(later, FLOW)]
    assert tsx.receive_request(BYE, 0.7) == [Send(later, FLOW)]


@pytest.mark.parametrize("provisional_first", [False, True])
def test_nist_final_from_tu_enters_completed_and_arms_timer_j_64_t1(provisional_first: bool) -> None:
    tsx = nist()
    if provisional_first:
        tsx.send_response(answer(100), 0.1)
    ok = answer(200)
    assert tsx.send_response(ok, 1.0) == [Send(ok, FLOW)]
    assert tsx.state is S.COMPLETED
    assert tsx.timers() == {T.J: 33.0}


def test_nist_retransmission_in_completed_resends_final() -> None:
    tsx = nist()
    ok = answer(200)
    tsx.send_response(ok, 1.0)
    assert tsx.receive_request(BYE, 2.0) == [Send(ok, FLOW)]


def test_nist_timer_j_terminates_completed() -> None:
    tsx = nist()
    tsx.send_response(answer(481), 1.0)
    assert tsx.on_timer(33.0) == [TransactionTerminated(KEY)]
    assert tsx.state is S.TERMINATED


def test_nist_reliable_final_terminates_at_once_timer_j_zero() -> None:
    tsx = nist(reliable=True)
    ok = answer(200)
    assert tsx.send_response(ok, 1.0) == [Send(ok, FLOW), TransactionTerminated(KEY)]


@pytest.mark.parametrize("status", [100, 200, 500])
def test_nist_tu_response_in_completed_raises_and_keeps_state(status: int) -> None:
    tsx = nist()
    tsx.send_response(answer(200), 1.0)
    with pytest.raises(LocalProtocolError):
        tsx.send_response(answer(status), 1.1)
    assert tsx.state is S.COMPLETED
    assert tsx.timers() == {T.J: 33.0}


@pytest.mark.parametrize("before", [[], [100], [200]])
def test_nist_transport_error_informs_tu_and_terminates(before: list[int]) -> None:
    tsx = nist()
    for status in before:
        tsx.send_response(answer(status), 0.1)
    assert tsx.transport_error(0.2) == [ToTU(TransportError(), KEY), TransactionTerminated(KEY)]


def test_nist_rejects_a_request_of_another_method() -> None:
    tsx = nist()
    with pytest.raises(LocalProtocolError):
        tsx.receive_request(request("ACK"), 0.1)
