"""Issue 7's fault-injection property test: seeded random schedules against the controller in
memory (fake clock, loop network), each checked for DESIGN's "caller is never dropped"
invariants by ``ng911.testing.faults``.

CI runs ``DEFAULT_SEEDS`` schedules (seeds 0..N-1). More: ``NG911_FAULT_SEEDS=5000``; a window:
``NG911_FAULT_SEED_START=20000``; one seed to replay: ``NG911_FAULT_SEED=1234`` (``-s`` shows
its report even when it passes). A failing seed prints its schedule as a Python literal —
``run_schedule(Schedule.from_literal(...))`` plays it again — and the tail of the packet trace.

The second half checks the checkers: each invariant is shown to fail on a made-up bad case.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import pytest

from ng911.sip.message import parse_message
from ng911.testing.faults import (
    CallFacts,
    Schedule,
    check_caller_byes,
    check_event_log,
    check_invite_overlap,
    generate,
    run_schedule,
)
from ng911.testing.loop import Packet

DEFAULT_SEEDS = 1000


def _seeds() -> list[int]:
    one = os.environ.get("NG911_FAULT_SEED")
    if one:
        return [int(one)]
    count = int(os.environ.get("NG911_FAULT_SEEDS", DEFAULT_SEEDS))
    start = int(os.environ.get("NG911_FAULT_SEED_START", 0))
    return list(range(start, start + count))


SEEDS = _seeds()
_stats: dict[str, Any] = {"runs": 0, "seconds": 0.0, "failed": Counter(), "example": {}, "coverage": Counter()}


@pytest.fixture(scope="module", autouse=True)
def _summary(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    yield
    if not _stats["runs"]:
        return
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"fault injection: {_stats['runs']} schedules in {_stats['seconds']:.1f} s "
             f"({1000 * _stats['seconds'] / _stats['runs']:.0f} ms each)"]
    if _stats["failed"]:
        lines.append("  violations by category (schedules, first seed): " + ", ".join(
            f"{c} {n} (seed {_stats['example'][c]})" for c, n in sorted(_stats["failed"].items())))
    lines.append("  coverage (schedules): " + ", ".join(f"{k} {v}" for k, v in sorted(_stats["coverage"].items())))
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # (teardown output is captured otherwise)
        if reporter is not None:
            reporter.ensure_newline()
        for line in lines:
            if reporter is not None:
                reporter.write_line(line)
            else:  # pragma: no cover
                print(line)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_random_fault_schedule_keeps_every_invariant(seed: int) -> None:
    started = time.perf_counter()
    result = run_schedule(seed)
    _stats["runs"] += 1
    _stats["seconds"] += time.perf_counter() - started
    for key, value in result.coverage.items():
        if value:
            _stats["coverage"][key] += 1
    for category in result.categories:
        _stats["failed"][category] += 1
        _stats["example"].setdefault(category, seed)
    if len(SEEDS) == 1:
        print(result.report())
    if result.violations:
        pytest.fail(result.report(), pytrace=False)


def test_the_same_seed_makes_the_same_schedule_and_its_literal_replays() -> None:
    a, b = generate(7), generate(7)
    assert a == b and a.literal() == b.literal()
    again = Schedule.from_literal(a.literal())
    assert again == a
    first, second = run_schedule(a), run_schedule(again)
    # (controller call ids, tags and branches are random; what happens is not)
    assert first.trace == second.trace
    assert [c for c, _ in first.violations] == [c for c, _ in second.violations]


def test_the_generator_covers_the_faults_the_issue_names() -> None:
    kinds: Counter[str] = Counter()
    for seed in range(300):
        s = generate(seed)
        kinds[f"calls_{len(s.calls)}"] += 1
        for _, name, args in s.actions:
            kinds[name] += 1
            if name in ("caller_next_reinvite", "ap_next_reinvite"):
                kinds[f"{name}_{args['status']}"] += 1
            if name == "when":
                kinds["when_" + args["then"][0]] += 1
    for wanted in ("ap_die", "ap_revive", "ap_hangup", "caller_hangup", "caller_reinvite", "drop", "db_cut",
                   "calls_1", "calls_2", "calls_3", "when_ap_die", "when_caller_reinvite"):
        assert kinds[wanted] > 0, wanted
    for status in (491, 488, 408, 481, 500, None):
        assert kinds[f"caller_next_reinvite_{status}"] > 0 and kinds[f"ap_next_reinvite_{status}"] > 0, status


# --- the checkers can fail ------------------------------------------------------------------------

CID = "dlg-1@esrp.example"


def _request(method: str, cseq: int, *, to_tag: str | None = "b", call_id: str = CID) -> bytes:
    to = "<sip:sos@10.0.0.10>" + (f";tag={to_tag}" if to_tag else "")
    return (f"{method} sip:x@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.10;branch=z9hG4bK{method}{cseq}\r\n"
            f"From: <sip:c@esrp.example>;tag=a\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


def _response(status: int, method: str, cseq: int, *, call_id: str = CID) -> bytes:
    return (f"SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 10.0.0.10;branch=z9hG4bK{method}{cseq}\r\n"
            f"From: <sip:c@esrp.example>;tag=a\r\nTo: <sip:sos@10.0.0.10>;tag=b\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n").encode()


ADDR = {"ctl": ("10.0.0.10", 5060), "esrp": ("10.0.0.1", 5060), "ap1": ("10.0.1.1", 5060)}


def _trace(*rows: tuple[float, str, str, bytes]) -> list[Packet]:
    """Packets sent at t from src to dst, each delivered 10 ms later."""
    out = []
    for seq, (t, src, dst, data) in enumerate(rows, 1):
        p = Packet(seq, t, ADDR[src], ADDR[dst], "UDP", data, parse_message(data), src, dst, delivered_at=t + 0.01)
        p.delivered_order = seq + 0.5  # type: ignore[attr-defined]
        out.append(p)
    return out


def test_the_overlap_check_finds_a_re_invite_sent_while_the_callers_is_unanswered() -> None:
    packets = _trace(
        (1.0, "esrp", "ctl", _request("INVITE", 10)),  # the caller's re-INVITE...
        (2.0, "ctl", "esrp", _request("INVITE", 3)),  # ...and ours before answering it
        (2.1, "esrp", "ctl", _response(491, "INVITE", 3)),
        (2.2, "ctl", "esrp", _response(200, "INVITE", 10)),
    )
    [(category, message)] = check_invite_overlap(packets, "ctl")
    assert category == "invite_overlap" and "CSeq 3" in message and "esrp's re-INVITE CSeq 10" in message


def test_the_overlap_check_finds_two_of_our_own_re_invites() -> None:
    packets = _trace(
        (1.0, "ctl", "esrp", _request("INVITE", 3)),
        (1.5, "ctl", "esrp", _request("INVITE", 4)),
        (1.6, "esrp", "ctl", _response(200, "INVITE", 3)),
        (1.7, "esrp", "ctl", _response(500, "INVITE", 4)),
    )
    [(category, message)] = check_invite_overlap(packets, "ctl")
    assert category == "invite_overlap" and "its own re-INVITE CSeq 3" in message


def test_the_overlap_check_allows_a_re_invite_after_the_final_response_before_the_ack_and_after_timer_b() -> None:
    packets = _trace(
        (1.0, "ctl", "esrp", _request("INVITE", 3)),
        (1.1, "esrp", "ctl", _response(200, "INVITE", 3)),
        (1.2, "ctl", "esrp", _request("INVITE", 4)),  # after the 200 reached us, before our ACK
        (1.3, "ctl", "esrp", _request("ACK", 3)),
        (1.4, "esrp", "ctl", _request("INVITE", 11)),  # glare: answered 491 at once
        (1.5, "ctl", "esrp", _response(491, "INVITE", 11)),
        (40.0, "ctl", "esrp", _request("INVITE", 5)),  # CSeq 4 never answered: Timer B fired at 33.2
    )
    assert check_invite_overlap(packets, "ctl", horizon=50.0) == []


def test_the_overlap_check_reports_a_re_invite_never_answered() -> None:
    packets = _trace((1.0, "esrp", "ctl", _request("INVITE", 10)))
    [(category, _)] = check_invite_overlap(packets, "ctl", horizon=60.0)
    assert category == "unanswered_reinvite"


def _facts(reason: str | None, **kw: Any) -> CallFacts:
    events = [{"kind": "received", "data": {"state": "routing"}},
              {"kind": "answered", "data": {"state": "talking"}}]
    if reason is not None:
        events.append({"kind": "ended", "data": {"state": "ended", "reason": reason, "outcome": "answered"}})
    return CallFacts(0, CID, call_id="node1-x", events=events, row={"state": "ended" if reason else "talking",
                                                                   "end_reason": reason}, **kw)


def test_the_bye_check_refuses_a_bye_to_the_caller_for_a_reason_that_allows_none() -> None:
    bye = _trace((5.0, "ctl", "esrp", _request("BYE", 4)))
    [(category, message)] = check_caller_byes(_facts("caller_dialog_gone"), bye, give_up=30)
    assert category == "caller_bye" and "caller_dialog_gone" in message
    [(category, _)] = check_caller_byes(_facts(None), bye, give_up=30)
    assert category == "caller_bye"


def test_the_bye_check_wants_the_give_up_condition_to_have_happened() -> None:
    # caller_unreachable without a single failed re-INVITE
    bye = _trace((5.0, "ctl", "esrp", _request("BYE", 4)))
    [(category, message)] = check_caller_byes(_facts("caller_unreachable"), bye, give_up=30)
    assert "without a failed re-INVITE" in message
    # ...and too early: 10 s after the first failure with a 30 s limit
    early = _trace((1.0, "ctl", "esrp", _request("INVITE", 3)), (1.1, "esrp", "ctl", _response(408, "INVITE", 3)),
                   (11.0, "ctl", "esrp", _request("BYE", 4)))
    [(category, _)] = check_caller_byes(_facts("caller_unreachable"), early, give_up=30)
    assert category == "give_up_early"
    late = _trace((1.0, "ctl", "esrp", _request("INVITE", 3)), (1.1, "esrp", "ctl", _response(408, "INVITE", 3)),
                  (31.5, "ctl", "esrp", _request("BYE", 4)))
    assert check_caller_byes(_facts("caller_unreachable"), late, give_up=30) == []
    # an answer point hang-up nobody sent
    [(category, _)] = check_caller_byes(_facts("answer_point_hangup", psap_call_ids={"psap-1"}), bye, give_up=30)
    assert category == "caller_bye"
    ap_bye = _trace((4.0, "ap1", "ctl", _request("BYE", 2, call_id="psap-1")), (5.0, "ctl", "esrp", _request("BYE", 4)))
    assert check_caller_byes(_facts("answer_point_hangup", psap_call_ids={"psap-1"}), ap_bye, give_up=30) == []
    # media refused without a 488
    [(category, _)] = check_caller_byes(_facts("no_compatible_media"), bye, give_up=30)
    assert category == "caller_bye"


def test_the_event_log_check_finds_illegal_missing_and_unlogged_transitions() -> None:
    good = _facts("caller_hangup")
    good.observed_states = ["routing", "talking", "ended"]
    assert check_event_log(good, final=True) == []
    # talking -> routing is not in the table
    bad = _facts("caller_hangup")
    bad.events.insert(2, {"kind": "x", "data": {"state": "routing"}})
    assert any("not in the table" in m for _, m in check_event_log(bad, final=True))
    # a state the call was seen in but never logged
    unlogged = _facts("caller_hangup")
    unlogged.observed_states = ["routing", "talking", "moving", "talking", "ended"]
    assert any("subsequence" in m for _, m in check_event_log(unlogged, final=True))
    # not ended; a free-text reason; the row disagreeing
    assert any("no ended event" in m for _, m in check_event_log(_facts(None), final=True))
    assert [c for c, _ in check_event_log(_facts("caller hung up"), final=True)] == ["end_reason"]
    row = _facts("caller_hangup")
    row.row = {"state": "talking", "end_reason": "caller_hangup"}
    assert any("row state" in m for _, m in check_event_log(row, final=True))


def test_the_provisional_check_finds_a_wait_of_more_than_a_minute_without_one() -> None:
    from ng911.testing.faults import check_provisionals

    invite = _request("INVITE", 1, to_tag=None)
    facts = CallFacts(0, CID, call_id="node1-x")
    quiet = _trace((0.0, "esrp", "ctl", invite), (0.1, "ctl", "esrp", _response(180, "INVITE", 1)),
                   (70.0, "ctl", "esrp", _response(200, "INVITE", 1)))
    [(category, _)] = check_provisionals(facts, quiet)
    assert category == "provisional_gap"
    kept = _trace((0.0, "esrp", "ctl", invite), (0.1, "ctl", "esrp", _response(180, "INVITE", 1)),
                  (45.0, "ctl", "esrp", _response(180, "INVITE", 1)), (70.0, "ctl", "esrp", _response(200, "INVITE", 1)))
    assert check_provisionals(facts, kept) == []
