"""The pure limits (ng911.sip.limits) with a fake clock: rate limiter, connection counter, and
who gets state or a stateless answer (``refusal``)."""
from __future__ import annotations

from typing import Any

from ng911.sip.limits import SHED_REASONS, ConnectionCounter, LogThrottle, RateLimiter, refusal
from ng911.sip.message import parse_message


def request(method: str = "INVITE", *, to_tag: str | None = None, uri: str = "sip:sos@127.0.0.1",
            drop: str = "") -> Any:
    to = "<sip:sos@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    lines = [f"{method} {uri} SIP/2.0",
             "Via: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKabc;maddr=203.0.113.7",
             "Max-Forwards: 70", "From: <sip:x@127.0.0.9>;tag=f1", f"To: {to}",
             "Call-ID: c1@127.0.0.9", f"CSeq: 1 {method}", "Content-Length: 0"]
    lines = [line for line in lines if not (drop and line.startswith(drop))]
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())


def response(status: int = 200) -> Any:
    return parse_message(b"SIP/2.0 %d OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKours\r\n"
                         b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: c\r\n"
                         b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n" % status)


# --- the rate limiter -----------------------------------------------------------------------------


def test_a_source_gets_its_burst_then_its_rate() -> None:
    rl = RateLimiter(rate=2, burst=5, total_rate=1000, tracked_sources=100)
    assert [rl.admit("a", 0.0) for _ in range(6)] == [None] * 5 + ["rate_source"]
    assert rl.admit("a", 0.4) == "rate_source"      # 0.8 token earned: not yet one
    assert rl.admit("a", 0.5) is None               # one token after 1/rate
    assert rl.admit("a", 0.5) == "rate_source"
    assert rl.admit("b", 0.5) is None               # another source has its own bucket
    # a refused message costs nothing: after a pause the source has its burst back, no more
    assert [rl.admit("a", 100.0) for _ in range(6)] == [None] * 5 + ["rate_source"]


def test_all_untrusted_sources_together_are_bounded_by_the_total_rate() -> None:
    rl = RateLimiter(rate=10, burst=10, total_rate=50, tracked_sources=10_000)
    verdicts = [rl.admit(f"10.0.{i // 250}.{i % 250}", 0.0) for i in range(200)]
    assert verdicts.count(None) == 50 and set(verdicts[50:]) == {"rate_total"}
    assert rl.admit("10.9.9.9", 0.1) is None        # 5 tokens earned in 0.1 s
    assert sum(rl.admit(f"10.8.0.{i}", 0.1) is None for i in range(10)) == 4


def test_the_limiter_remembers_at_most_tracked_sources_least_recent_forgotten() -> None:
    rl = RateLimiter(rate=1, burst=1, total_rate=1e6, tracked_sources=3)
    for i, host in enumerate(["a", "b", "c"]):
        rl.admit(host, float(i) * 0.01)
    assert rl.admit("a", 0.1) == "rate_source"      # a seen again: the most recent now
    rl.admit("d", 0.1)                              # forgets b, the least recent
    assert len(rl) == 3 and rl.forgotten == 1
    assert rl.admit("a", 0.2) == "rate_source"      # still remembered (and still out of tokens)
    assert rl.admit("b", 0.2) is None               # forgotten: a fresh bucket


# --- connections ----------------------------------------------------------------------------------


def test_connection_counter_caps_untrusted_sources_never_trusted_ones() -> None:
    cc = ConnectionCounter(max_total=3, max_per_source=2)
    assert cc.admit("x", False) is None and cc.admit("x", False) is None
    assert cc.admit("x", False) == "connections_per_source"
    assert cc.admit("y", False) is None
    assert cc.admit("z", False) == "connections_cap"
    assert cc.admit("up", True) is None and cc.total == 4  # a trusted peer is always admitted
    cc.release("x")
    assert cc.admit("z", False) == "connections_cap"  # still 3 held besides... total counts all
    cc.release("up")
    assert cc.admit("z", False) is None
    for host in ("x", "y", "z"):
        cc.release(host)
    assert cc.total == 0 and cc.held("x") == 0 and cc._per_source == {}


def test_log_throttle() -> None:
    t = LogThrottle(10.0)
    assert t.ready(0.0) and not t.ready(1.0) and not t.ready(9.9)
    assert t.take_suppressed() == 2 and t.ready(10.0)


# --- refusal --------------------------------------------------------------------------------------


def verdict(msg: Any, *, exempt: bool = False, trusted: bool = False, dialog: bool = False,
            tsx: bool = False, transactions: int = 0, dialogs: int = 0, emergency: bool = True) -> Any:
    r = refusal(msg, exempt=exempt, trusted=trusted, dialog_known=lambda m: dialog,
                transaction_known=lambda m: tsx, transactions=transactions, dialogs=dialogs,
                max_transactions=100, max_dialogs=10, is_emergency=lambda m: emergency)
    if r is not None:
        assert r.reason in SHED_REASONS
    return r


def test_an_untrusted_out_of_dialog_invite_gets_one_stateless_403() -> None:
    r = verdict(request("INVITE"))
    assert (r.reason, r.status) == ("untrusted_stateless_403", 403)
    r = verdict(request("OPTIONS"))
    assert (r.reason, r.status) == ("untrusted_stateless", 403)
    r = verdict(request("BYE", to_tag="t"))             # a dialog we lack: 481, no state
    assert (r.reason, r.status) == ("untrusted_stateless", 481)


def test_untrusted_acks_and_responses_matching_nothing_are_dropped() -> None:
    assert verdict(request("ACK")).status is None
    assert verdict(request("ACK", to_tag="t")).reason == "untrusted_stray"
    assert verdict(request("ACK", to_tag="t"), dialog=True) is None
    assert verdict(response()).reason == "untrusted_stray"
    assert verdict(response(), tsx=True) is None
    assert verdict(response(), exempt=True) is None       # an answer point's stray 2xx: the UA's
    assert verdict(request("INVITE", drop="Call-ID")).reason == "untrusted_malformed"


def test_an_untrusted_in_dialog_request_of_a_known_dialog_goes_to_the_ua() -> None:
    assert verdict(request("BYE", to_tag="t"), dialog=True) is None


def test_trusted_requests_pass_until_the_caps() -> None:
    assert verdict(request("INVITE"), exempt=True, trusted=True) is None
    assert verdict(request("OPTIONS"), exempt=True) is None


def test_transaction_cap_spares_trusted_invites_bye_cancel_and_retransmissions() -> None:
    full = dict(exempt=True, trusted=True, transactions=100)
    r = verdict(request("OPTIONS"), **full)
    assert (r.reason, r.status, r.retry_after) == ("transactions_cap", 503, 5)
    for method in ("INVITE", "BYE", "CANCEL"):
        assert verdict(request(method), **full) is None, method
    assert verdict(request("OPTIONS"), tsx=True, **full) is None  # a retransmission
    assert verdict(request("ACK", to_tag="t"), **full) is None


def test_past_twice_the_transaction_cap_only_new_trusted_emergency_calls_pass() -> None:
    full = dict(exempt=True, trusted=True, transactions=200)
    for method in ("BYE", "CANCEL"):
        assert verdict(request(method), **full).reason == "transactions_cap", method
    assert verdict(request("INVITE"), emergency=False, **full).reason == "transactions_cap"
    assert verdict(request("INVITE", to_tag="t"), **full).reason == "transactions_cap"  # a re-INVITE
    assert verdict(request("INVITE"), **full) is None
    assert verdict(request("INVITE"), exempt=True, trusted=False, transactions=200).reason == "transactions_cap"
    assert verdict(request("BYE"), tsx=True, **full) is None  # a retransmission holds no new state


def test_dialog_cap_takes_emergency_calls_from_trusted_peers_only() -> None:
    full = dict(exempt=True, dialogs=10)
    assert verdict(request("INVITE"), trusted=True, **full) is None
    r = verdict(request("INVITE"), trusted=True, emergency=False, **full)
    assert (r.reason, r.status) == ("dialogs_cap", 503)
    assert verdict(request("INVITE"), trusted=False, **full).reason == "dialogs_cap"  # an AP's host
    assert verdict(request("INVITE", to_tag="t"), trusted=True, emergency=False, **full) is None
