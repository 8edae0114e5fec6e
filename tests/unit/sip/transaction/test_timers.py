"""RFC 3261 Appendix A timer values (and RFC 6026 L, M) from a TimerConfig."""

from __future__ import annotations

import pytest

from ng911.sip.timers import TimerConfig, TimerName as T

CFG = TimerConfig()


def test_timer_config_defaults_are_rfc_values() -> None:
    assert (CFG.t1, CFG.t2, CFG.t4, CFG.trying_delay) == (0.5, 4.0, 5.0, 0.2)


@pytest.mark.parametrize(
    ("timer", "unreliable", "reliable"),
    [
        (T.A, 0.5, None),
        (T.B, 32.0, 32.0),
        (T.D, 32.0, 0.0),
        (T.E, 0.5, None),
        (T.F, 32.0, 32.0),
        (T.G, 0.5, None),
        (T.H, 32.0, 32.0),
        (T.I, 5.0, 0.0),
        (T.J, 32.0, 0.0),
        (T.K, 5.0, 0.0),
        (T.L, 32.0, 32.0),
        (T.M, 32.0, 32.0),
        (T.TRYING, 0.2, 0.2),
        (T.C, 180.0, 180.0),
    ],
)
def test_timer_values_per_rfc3261_table_4(timer: T, unreliable: float | None, reliable: float | None) -> None:
    assert CFG.duration(timer, reliable=False) == unreliable
    assert CFG.duration(timer, reliable=True) == reliable


def test_timer_d_is_at_least_32s_and_at_least_64_t1() -> None:
    assert TimerConfig(t1=0.1, t2=0.4).duration(T.D, reliable=False) == 32.0
    assert TimerConfig(t1=1.0, t2=4.0).duration(T.D, reliable=False) == 64.0


def test_timers_scale_with_t1_and_t4() -> None:
    cfg = TimerConfig(t1=0.1, t2=1.0, t4=2.0)
    assert cfg.duration(T.B, reliable=False) == pytest.approx(6.4)
    assert cfg.duration(T.L, reliable=False) == pytest.approx(6.4)
    assert cfg.duration(T.K, reliable=False) == 2.0


def test_timer_a_doubles_without_cap_e_and_g_cap_at_t2() -> None:
    assert CFG.backoff(T.A, 4.0) == 8.0
    assert CFG.backoff(T.A, 16.0) == 32.0
    assert CFG.backoff(T.E, 1.0) == 2.0
    assert CFG.backoff(T.E, 4.0) == 4.0
    assert CFG.backoff(T.G, 2.0) == 4.0
    assert CFG.backoff(T.G, 4.0) == 4.0
    with pytest.raises(ValueError):
        CFG.backoff(T.B, 32.0)


def test_trying_delay_none_means_no_automatic_100() -> None:
    assert TimerConfig(trying_delay=None).duration(T.TRYING, reliable=False) is None


@pytest.mark.parametrize(
    "kwargs",
    [{"t1": 0}, {"t1": -1}, {"t1": 5.0, "t2": 4.0}, {"t4": -1}, {"trying_delay": -0.1}, {"timer_c": 0}],
)
def test_timer_config_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TimerConfig(**kwargs)


def test_timer_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        CFG.t1 = 1.0  # type: ignore[misc]
