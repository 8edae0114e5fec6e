"""Non-INVITE client transaction (RFC 3261 §17.1.2, Fig. 6)."""

from __future__ import annotations

import pytest

from ng911.sip.timers import TimerConfig, TimerName as T
from ng911.sip.transaction import (
    NonInviteClientTransaction,
    Send,
    ToTU,
    TransactionState as S,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from ng911.sip.transaction.keys import client_key

from .messages import DEST, request, response

OPTIONS = request("OPTIONS")
KEY = client_key(OPTIONS)


def nict(*, reliable: bool = False) -> NonInviteClientTransaction:
    tsx = NonInviteClientTransaction(KEY, OPTIONS, DEST, reliable=reliable, config=TimerConfig())
    assert tsx.start(0.0) == [Send(OPTIONS, DEST)]
    return tsx


def retransmissions(tsx: NonInviteClientTransaction, until: float) -> list[float]:
    sent_at = []
    while (deadline := tsx.next_deadline()) is not None and deadline < until:
        actions = tsx.on_timer(deadline)
        if actions == [Send(OPTIONS, DEST)]:
            sent_at.append(deadline)
    return sent_at


def test_nict_sends_request_and_arms_timers_e_and_f() -> None:
    tsx = nict()
    assert tsx.state is S.TRYING
    assert tsx.timers() == {T.E: 0.5, T.F: 32.0}


def test_nict_reliable_transport_runs_no_timer_e() -> None:
    assert nict(reliable=True).timers() == {T.F: 32.0}


def test_nict_timer_e_doubles_up_to_t2_in_trying() -> None:
    tsx = nict()
    assert retransmissions(tsx, 20.0) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5]


def test_nict_1xx_keeps_pending_timer_e_and_f() -> None:
    tsx = nict()
    trying = response(OPTIONS, 100)
    assert tsx.receive_response(trying, 0.2) == [ToTU(trying, KEY)]
    assert tsx.state is S.PROCEEDING
    assert tsx.timers() == {T.E: 0.5, T.F: 32.0}  # §17.1.2.2: E is reset to T2 when it fires


def test_nict_timer_e_fires_every_t2_in_proceeding() -> None:
    tsx = nict()
    tsx.on_timer(0.5)  # E doubles to 1.0: next at 1.5
    tsx.receive_response(response(OPTIONS, 100), 1.0)
    assert retransmissions(tsx, 32.0) == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]


def test_nict_reliable_1xx_arms_no_timer_e() -> None:
    tsx = nict(reliable=True)
    tsx.receive_response(response(OPTIONS, 100), 0.2)
    assert tsx.timers() == {T.F: 32.0}


def test_nict_1xx_in_proceeding_passed_to_tu() -> None:
    tsx = nict()
    tsx.receive_response(response(OPTIONS, 100), 0.2)
    again = response(OPTIONS, 183)
    assert tsx.receive_response(again, 0.3) == [ToTU(again, KEY)]


@pytest.mark.parametrize("proceeding", [False, True])
def test_nict_timer_f_reports_timeout_to_tu(proceeding: bool) -> None:
    tsx = nict(reliable=True)
    if proceeding:
        tsx.receive_response(response(OPTIONS, 100), 0.2)
    assert tsx.on_timer(32.0) == [ToTU(TransactionTimeout(T.F), KEY), TransactionTerminated(KEY)]
    assert tsx.state is S.TERMINATED


@pytest.mark.parametrize("status", [200, 404, 503, 699])
def test_nict_final_passes_to_tu_enters_completed_and_arms_timer_k_t4(status: int) -> None:
    tsx = nict()
    final = response(OPTIONS, status)
    assert tsx.receive_response(final, 1.0) == [ToTU(final, KEY)]
    assert tsx.state is S.COMPLETED
    assert tsx.timers() == {T.K: 6.0}  # E and F stopped


def test_nict_final_from_proceeding_enters_completed() -> None:
    tsx = nict()
    tsx.receive_response(response(OPTIONS, 100), 0.2)
    tsx.receive_response(response(OPTIONS, 200), 1.0)
    assert tsx.state is S.COMPLETED


def test_nict_absorbs_responses_in_completed() -> None:
    tsx = nict()
    tsx.receive_response(response(OPTIONS, 200), 1.0)
    for status in (100, 200, 500):
        assert tsx.receive_response(response(OPTIONS, status), 2.0) == []
    assert tsx.state is S.COMPLETED


def test_nict_timer_k_terminates_completed() -> None:
    tsx = nict()
    tsx.receive_response(response(OPTIONS, 200), 1.0)
    assert tsx.on_timer(5.9) == []
    assert tsx.on_timer(6.0) == [TransactionTerminated(KEY)]


def test_nict_reliable_final_terminates_at_once_timer_k_zero() -> None:
    tsx = nict(reliable=True)
    ok = response(OPTIONS, 200)
    assert tsx.receive_response(ok, 1.0) == [ToTU(ok, KEY), TransactionTerminated(KEY)]


@pytest.mark.parametrize("before", [[], [100], [200]])
def test_nict_transport_error_informs_tu_and_terminates(before: list[int]) -> None:
    tsx = nict()
    for status in before:
        tsx.receive_response(response(OPTIONS, status), 0.1)
    assert tsx.transport_error(0.2) == [ToTU(TransportError(), KEY), TransactionTerminated(KEY)]
