"""The machines' transition tables: data, forward-only, total over remote input."""

from __future__ import annotations

import pytest

from ng911.sip.timers import TimerName
from ng911.sip.transaction import ict, ist, nict, nist
from ng911.sip.transaction.base import Fx, Input, TransactionState as S, check_table

MACHINES = [ict, nict, ist, nist]


@pytest.mark.parametrize("module", MACHINES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_states_only_move_forward(module: object) -> None:
    for state, row in module.TRANSITIONS.items():  # type: ignore[attr-defined]
        for event, (target, _effects) in row.items():
            assert target >= state, (state, event, target)


@pytest.mark.parametrize("module", MACHINES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_every_live_state_covers_every_input_a_peer_can_cause(module: object) -> None:
    for state, row in module.TRANSITIONS.items():  # type: ignore[attr-defined]
        assert module.REMOTE_INPUTS <= row.keys(), state  # type: ignore[attr-defined]


@pytest.mark.parametrize("module", MACHINES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_module_docstring_cites_the_rfc_figure_and_draws_states(module: object) -> None:
    doc = module.__doc__ or ""  # type: ignore[attr-defined]
    assert "Figure" in doc and "RFC 3261" in doc
    for state in {target for row in module.TRANSITIONS.values() for target, _ in row.values()}:  # type: ignore[attr-defined]
        assert state.name.capitalize() in doc


def test_check_table_rejects_a_backward_transition() -> None:
    table = {
        S.PROCEEDING: {Input.REQUEST: (S.TRYING, ())},
        S.TRYING: {Input.REQUEST: (S.TRYING, ())},
    }
    with pytest.raises(AssertionError, match="backwards"):
        check_table("X", table, frozenset({Input.REQUEST}), {}, {})


def test_check_table_rejects_a_row_missing_remote_input() -> None:
    table = {S.TRYING: {Input.REQUEST: (S.TRYING, ())}}
    with pytest.raises(AssertionError, match="does not cover"):
        check_table("X", table, frozenset({Input.REQUEST, Input.TRANSPORT_ERROR}), {}, {})


def test_check_table_rejects_a_timer_that_cannot_run_in_its_state() -> None:
    table = {S.TRYING: {TimerName.J: (S.TERMINATED, ())}}
    with pytest.raises(AssertionError, match="can never fire"):
        check_table("X", table, frozenset(), {}, {})


def test_every_effect_is_used_by_some_machine() -> None:
    used = {fx for m in MACHINES for row in m.TRANSITIONS.values() for _, fxs in row.values() for fx in fxs}
    assert used == set(Fx)
