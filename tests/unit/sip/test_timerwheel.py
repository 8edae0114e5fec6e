"""The UA core's timer heap stays bounded by the live timers, however many are cancelled."""
from ng911.sip.timerwheel import TimerWheel


def test_cancelled_timers_do_not_pile_up_and_live_ones_still_fire_in_order() -> None:
    wheel = TimerWheel()
    fired: list[int] = []
    keep = [wheel.call_at(float(d), lambda now, d=d: fired.append(d)) for d in (5, 3, 9)]
    for i in range(100_000):  # a refresh cancels a far-future timer and schedules another
        wheel.call_at(1000.0 + i, lambda now: fired.append(-1)).cancel()
    assert len(wheel._heap) <= 2048 and len(wheel) == 3
    assert wheel.next_deadline() == 3.0
    wheel.fire(10.0)
    assert fired == [3, 5, 9] and all(h.cancelled for h in keep)
    wheel.fire(1e9)
    assert fired == [3, 5, 9]
