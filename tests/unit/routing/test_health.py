"""The out-of-dialog OPTIONS health monitor with a fake clock and a scripted UA: timeouts count
as before; a transport error (ICMP unreachable, connection refused) fails a probe at once and is
confirmed after `recheck`, not a whole interval later; trouble the transport reports for a
position's address (a send failed, a connection closed) probes it at once."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ng911.routing.health import HealthMonitor
from ng911.routing.model import AnswerPointSpec, HealthSpec, QueueSpec, RoutingSpec
from ng911.routing.pool import Pool
from ng911.sip.timerwheel import TimerWheel


@dataclass
class Probe:
    at: float
    target: str
    on_response: Callable[[Any], None]
    on_failure: Callable[[str], None]


@dataclass
class Resp:
    status: int


class Port:
    def __init__(self) -> None:
        self.transport_listeners: list[Callable[[tuple[str, int], str], None]] = []


@dataclass
class FakeUa:
    """What HealthMonitor uses of UserAgent: now, timers, send_request, config.user, port."""

    t: float = 0.0
    timers: TimerWheel = field(default_factory=TimerWheel)
    probes: list[Probe] = field(default_factory=list)
    port: Port = field(default_factory=Port)

    class config:  # noqa: N801 - mimics UaConfig
        user = "ng911"

    def now(self) -> float:
        return self.t

    def send_request(self, request: Any, on_response: Callable[[Any], None], on_failure: Callable[[str], None]) -> None:
        self.probes.append(Probe(self.t, str(request.uri), on_response, on_failure))

    def run_until(self, t: float, answer: Callable[[Probe], str | int | None] = lambda p: None) -> None:
        """Advance to ``t`` firing timers; each new probe is answered by ``answer`` right away
        (a status, "transport error", "timeout", or None: no answer)."""
        while True:
            deadline = self.timers.next_deadline()
            if deadline is None or deadline > t:
                break
            self.t = max(self.t, deadline)
            n = len(self.probes)
            self.timers.fire(self.t)
            for probe in self.probes[n:]:
                outcome = answer(probe)
                if isinstance(outcome, int):
                    probe.on_response(Resp(outcome))
                elif outcome is not None:
                    probe.on_failure(outcome)
        self.t = t


def monitor(**health: Any) -> tuple[FakeUa, Pool, HealthMonitor, list[tuple[str, bool, bool]]]:
    spec = HealthSpec(**{"options_interval": 1.0, "options_timeout": 1.0, "down_after": 2, "up_after": 1, **health})
    aps = (AnswerPointSpec("ap1", "sip:ap1@127.0.0.1:5070"), AnswerPointSpec("ap2", "sip:ap2@127.0.0.1:5071;transport=tcp"))
    pool = Pool(RoutingSpec(queues=(QueueSpec("main", aps),), health=spec))
    ua = FakeUa()
    results: list[tuple[str, bool, bool]] = []
    mon = HealthMonitor(ua, pool, "127.0.0.1", on_result=lambda ap, ok, changed: results.append((ap.name, ok, changed)))  # type: ignore[arg-type]
    mon.start()
    return ua, pool, mon, results


def to(name: str) -> Callable[[Probe], bool]:
    return lambda p: p.target.startswith(f"sip:{name}@")


def test_probes_go_out_every_interval_and_answers_keep_positions_up() -> None:
    ua, pool, mon, results = monitor()
    ua.run_until(9.5, lambda p: 200)
    assert [p.at for p in ua.probes if to("ap1")(p)] == [float(i) for i in range(10)]
    assert all(ap.up for ap in pool.aps.values()) and all(ok for _, ok, _ in results)


def test_unanswered_probes_mark_down_after_down_after_timeouts() -> None:
    ua, pool, mon, results = monitor()
    ua.run_until(3.0, lambda p: 200)
    dead_at = ua.t
    ua.run_until(10.0, lambda p: None if to("ap1")(p) else 200)  # ap1 silent: probes time out
    down = [i for i, r in enumerate(results) if r == ("ap1", False, True)]
    assert down and not pool.aps["ap1"].up and pool.aps["ap2"].up
    first_failure = min(p.at for p in ua.probes if to("ap1")(p) and p.at >= dead_at)
    # two timeouts: the second probe (one interval later) fails one timeout after it was sent
    assert [p.at for p in ua.probes if to("ap1")(p) and p.at >= dead_at][:2] == [first_failure, first_failure + 1.0]


def test_a_transport_error_fails_at_once_and_is_confirmed_after_recheck() -> None:
    ua, pool, mon, results = monitor()
    ua.run_until(3.0, lambda p: 200)
    ua.run_until(10.0, lambda p: "transport error" if to("ap1")(p) else 200)
    ap1 = [p.at for p in ua.probes if to("ap1")(p) and p.at > 3.0]
    # first failed probe, then the confirming one `recheck` later: down at once
    assert ap1[0] == 4.0 and abs(ap1[1] - ap1[0] - mon.recheck) < 1e-9
    assert not pool.aps["ap1"].up
    (change,) = [i for i, r in enumerate(results) if r[0] == "ap1" and r[2]]
    assert results[change] == ("ap1", False, True)
    # once down, a dead position is probed every interval again (no storm)
    assert all(abs(b - a - 1.0) < 1e-9 for a, b in zip(ap1[1:], ap1[2:]))
    # ...and comes back up with its first answer
    ua.run_until(12.0, lambda p: 200)
    assert pool.aps["ap1"].up


def test_one_stray_transport_error_does_not_take_a_position_down() -> None:
    ua, pool, mon, results = monitor()
    ua.run_until(3.0, lambda p: 200)
    stray = {"done": False}

    def once(p: Probe) -> str | int:
        if to("ap1")(p) and not stray["done"]:
            stray["done"] = True
            return "transport error"
        return 200

    ua.run_until(10.0, once)
    assert pool.aps["ap1"].up and ("ap1", False, False) in results
    assert not any(r[2] for r in results)


def test_transport_trouble_at_a_positions_address_probes_it_at_once() -> None:
    ua, pool, mon, results = monitor()
    assert ua.port.transport_listeners == [mon.transport_trouble]
    ua.run_until(3.2, lambda p: 200)
    n = len(ua.probes)
    for listener in ua.port.transport_listeners:
        listener(("127.0.0.1", 5071), "TCP connection closed by the far end")
    ua.run_until(3.2, lambda p: "transport error")  # due now: no time passes
    new = ua.probes[n:]
    assert [p.target for p in new] == ["sip:ap2@127.0.0.1:5071;transport=tcp"]
    ua.run_until(3.2 + mon.recheck, lambda p: "transport error" if to("ap2")(p) else 200)
    assert not pool.aps["ap2"].up and pool.aps["ap1"].up
    # an address no position has: nothing
    n = len(ua.probes)
    for listener in ua.port.transport_listeners:
        listener(("127.0.0.1", 9999), "whatever")
    ua.run_until(ua.t, lambda p: 200)
    assert len(ua.probes) == n


def test_trouble_while_a_probe_is_out_probes_again_recheck_after_it() -> None:
    """The probe out may have reached the process before it died: it will never be answered,
    and only its timeout would say so."""
    ua, pool, mon, results = monitor()
    ua.run_until(0.0)  # ap1's first probe is out, unanswered
    assert [p.target for p in ua.probes] == ["sip:ap1@127.0.0.1:5070"]
    mon.transport_trouble(("127.0.0.1", 5070), "TCP connection closed by the far end")
    mon.transport_trouble(("127.0.0.1", 5070), "TCP connection closed by the far end")
    ua.run_until(0.0)
    assert len(ua.probes) == 1
    ua.run_until(mon.recheck)
    assert [p.at for p in ua.probes if to("ap1")(p)] == [0.0, mon.recheck]


def test_trouble_reported_for_a_failed_probe_does_not_hurry_its_confirmation() -> None:
    """The transport reports the probe's own ICMP error to the listeners too: the confirming
    probe stays `recheck` later, not at once."""
    ua, pool, mon, results = monitor()
    ua.run_until(2.5, lambda p: 200)

    def refused_and_reported(p: Probe) -> str | int:
        if not to("ap1")(p):
            return 200
        p.on_failure("transport error")   # what the UA does first...
        mon.transport_trouble(("127.0.0.1", 5070), "ICMP port unreachable")  # ...then the stack
        return None

    ua.run_until(4.0, refused_and_reported)
    ap1 = [p.at for p in ua.probes if to("ap1")(p) and p.at > 2.5]
    assert abs(ap1[1] - ap1[0] - mon.recheck) < 1e-9
    assert not pool.aps["ap1"].up
    # down: every probe still meets the closed port and is reported, yet one per interval
    assert all(abs(b - a - 1.0) < 1e-9 for a, b in zip(ap1[1:], ap1[2:]))


def test_trouble_for_a_position_just_probed_waits() -> None:
    ua, pool, mon, results = monitor()
    ua.run_until(0.0)  # ap1 probed at t=0...
    ua.probes[0].on_response(Resp(200))  # ...and answered
    ua.run_until(0.05)
    mon.transport_trouble(("127.0.0.1", 5070), "ICMP port unreachable")
    ua.run_until(0.05)
    assert len([p for p in ua.probes if to("ap1")(p)]) == 1
    ua.run_until(0.5)
    assert [p.at for p in ua.probes if to("ap1")(p)] == [0.0, mon.recheck]


def test_stop_cancels_every_probe() -> None:
    ua, pool, mon, results = monitor()
    mon.stop()
    ua.run_until(10.0, lambda p: 200)
    assert ua.probes == []
