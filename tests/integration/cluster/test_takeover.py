"""A node dies (kill -9) or is paused: its calls are taken over by a survivor, which re-INVITEs
both legs with its own Contact; the caller is never sent a BYE. Real nodes, real PostgreSQL,
SIPp callers and answer points; what the peers received is what is asserted."""
from __future__ import annotations

import time

from tests.integration.cluster.nodes import (  # noqa: F401  (fixtures)
    Ap, cluster, db_url, pg_server, sipp, sipp_ap, sipp_caller,
)
from tests.integration.cluster.nodes import SCENARIOS, contact_port
from tests.integration.controller.conftest import sdp_origin
from tests.integration.conftest import wait_until


def test_established_call_survives_kill9_of_its_node(cluster, sipp):
    ap = Ap("ap1")
    ap_proc = sipp_ap(sipp, "tk_ap.xml", ap)
    n1, n2 = cluster.start(["n1", "n2"], [ap], trace=True)
    caller = sipp_caller(sipp, "tk_caller.xml", n1.sip_port, hold_ms=1000)
    (call,) = n1.wait_talking()
    assert call["owner_node"] == "n1"
    killed = n1.kill9()

    assert caller.wait(60) == 0, caller.summary()
    assert ap_proc.wait(30) == 97, ap_proc.summary()
    # the caller: one re-INVITE, from the survivor, with its Contact; never a BYE
    reinvites = caller.received("INVITE")
    assert len(reinvites) == 1 and contact_port(reinvites[0]) == n2.sip_port
    assert caller.received("BYE") == []
    print(f"kill -9 → caller's re-INVITE: {reinvites[0].at - killed:.2f} s")
    # the position: refreshed by the survivor, then BYEd by it when the caller hung up
    ap_reinvites = [m for m in ap_proc.received("INVITE") if m.header("To") and "tag=" in m.header("To")]
    assert len(ap_reinvites) == 1 and contact_port(ap_reinvites[0]) == n2.sip_port
    assert len(ap_proc.received("BYE")) == 1
    # the record: the survivor owns and ended it, the caller's hang-up, with the takeover in it
    (row,) = n2.wait_ended(1, timeout=15)
    assert (row["owner_node"], row["end_reason"], row["outcome"]) == ("n2", "caller_hangup", "answered")
    kinds = n2.kinds(row["call_id"])
    assert "resumed" in kinds and kinds[-1] == "ended"
    resumed = [e for e in n2.events(row["call_id"]) if e["kind"] == "resumed"][0]
    assert resumed["data"]["taken_from"].startswith("n1/")
    assert n2.metric("ng911_cluster_takeovers_total", state="talking") == 1
    n2.assert_clean()


def _from_node(msgs, node) -> list:
    """The requests on a call among ``msgs`` that ``node`` sent (its port in the top Via); the
    out-of-dialog OPTIONS of its position health checks are on no call."""
    return [m for m in msgs if m.is_request and f":{node.sip_port};" in (m.header("Via") or "")
            and not (m.method == "OPTIONS" and "tag=" not in (m.header("To") or ""))]


def test_paused_node_resumed_stays_silent_on_the_call_taken_from_it(cluster, sipp):
    ap = Ap("ap1")
    ap_proc = sipp_ap(sipp, "tk_ap.xml", ap)
    n1, n2 = cluster.start(["n1", "n2"], [ap])
    caller = sipp_caller(sipp, "tk_caller.xml", n1.sip_port, hold_ms=8000)
    (call,) = n1.wait_talking()
    paused = n1.pause()
    # the survivor takes the call: the caller's re-INVITE comes from n2
    wait_until(lambda: any(contact_port(m) == n2.sip_port for m in caller.received("INVITE")), 20,
               "the caller re-INVITEd by the survivor")
    resumed = n1.resume()
    # n1 runs its overdue timers (probe, refresh), then learns from its heartbeat that it lost the call
    wait_until(lambda: n1.metric("ng911_cluster_calls_lost_total") == 1, 15, "n1 noticing it lost the call")
    assert caller.wait(60) == 0, caller.summary()
    assert ap_proc.wait(30) == 97, ap_proc.summary()
    late = [m for m in _from_node(caller.received(None) + ap_proc.received(None), n1) if m.at > paused]
    assert late == [], f"n1 sent {len(late)} request(s) after its pause: {[m.start_line for m in late]}"
    assert caller.received("BYE") == []
    (row,) = n2.wait_ended(1, timeout=15)
    assert (row["owner_node"], row["end_reason"]) == ("n2", "caller_hangup")
    print(f"paused {resumed - paused:.1f} s; n1 lost the call, sent nothing on it")
    n1.assert_clean()
    n2.assert_clean()


CONTROLLER_SCENARIOS = SCENARIOS.parent.parent / "controller" / "scenarios"


def _answered_by(caller) -> list:
    return [m for m in caller.received(None, requests=False) if m.status == 200 and "INVITE" in (m.header("CSeq") or "")]


def test_ringing_call_is_answered_by_the_survivor_on_the_callers_original_invite(cluster, sipp):
    ringer = Ap("ap1", ring_timeout=3.0)  # rings and never answers (each attempt CANCELled)
    answerer = Ap("ap2")
    sipp.ap(CONTROLLER_SCENARIOS / "ap_ring_cancel.xml", ringer, calls=3, timeout=90)
    ap_proc = sipp_ap(sipp, "tk_ap.xml", answerer)
    n1, n2 = cluster.start(["n1", "n2"], [ringer, answerer])
    caller = sipp_caller(sipp, "tk_caller_unanswered.xml", n1.sip_port, hold_ms=1000)
    n1.wait_calls(lambda calls: len(calls) == 1 and calls[0]["state"] == "ringing", 20, "a ringing call")
    wait_until(lambda: any(m.status == 180 for m in caller.received(None, requests=False)), 10, "the caller's 180")
    first_180 = [m for m in caller.received(None, requests=False) if m.status == 180][0]
    killed = n1.kill9()

    assert caller.wait(60) == 0, caller.summary()
    assert ap_proc.wait(30) == 97, ap_proc.summary()
    [ok] = _answered_by(caller)
    assert contact_port(ok) == n2.sip_port
    # one early dialog: the survivor answers with the To-tag the dead node gave, on the same Vias
    assert ok.header("To") == first_180.header("To")
    assert ok.header_all("Via") == first_180.header_all("Via")
    assert caller.received("BYE") == []
    print(f"kill -9 of a ringing call's node → its 200 from the survivor: {ok.at - killed:.2f} s")
    (row,) = n2.wait_ended(1, timeout=15)
    assert (row["owner_node"], row["answer_point"], row["end_reason"]) == ("n2", "ap2", "caller_hangup")
    assert n2.metric("ng911_cluster_takeovers_total", state="ringing") == 1
    n2.assert_clean()


def test_queued_call_is_taken_over_and_answered_when_a_position_comes_up(cluster, sipp):
    ap = Ap("ap1")  # nobody listens yet: down, the call waits in its queue
    n1, n2 = cluster.start(["n1", "n2"], [ap])
    caller = sipp_caller(sipp, "tk_caller_unanswered.xml", n1.sip_port, hold_ms=1000, timeout=90)
    n1.wait_calls(lambda calls: len(calls) == 1 and calls[0]["state"] == "queued", 20, "a queued call")
    n1.kill9()
    n2.wait_calls(lambda calls: calls[0]["owner_node"] == "n2", 20, "the survivor owning the call")
    ap_proc = sipp_ap(sipp, "tk_ap.xml", ap)  # the position signs in

    assert caller.wait(60) == 0, caller.summary()
    assert ap_proc.wait(30) == 97, ap_proc.summary()
    [ok] = _answered_by(caller)
    assert contact_port(ok) == n2.sip_port
    assert caller.received("BYE") == []
    (row,) = n2.wait_ended(1, timeout=15)
    assert (row["owner_node"], row["answer_point"], row["end_reason"]) == ("n2", "ap1", "caller_hangup")
    assert n2.metric("ng911_cluster_takeovers_total", state="queued") == 1
    n2.assert_clean()


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def test_fifty_live_calls_on_the_dying_node_are_all_rehomed(cluster, sipp):
    count = 50
    ap = Ap("ap1", capacity=count)
    ap_proc = sipp_ap(sipp, "tk_ap.xml", ap, calls=count, timeout=120)
    n1, n2 = cluster.start(["n1", "n2"], [ap])
    caller = sipp_caller(sipp, "tk_caller.xml", n1.sip_port, calls=count, hold_ms=3000, timeout=120,
                         extra=["-l", str(count), "-r", "20"])
    n1.wait_talking(count)
    killed = n1.kill9()

    assert caller.wait(120) == 0, caller.summary()
    assert ap_proc.wait(60) == 97, ap_proc.summary()
    reinvites = caller.received("INVITE")
    assert len(reinvites) == count and {contact_port(m) for m in reinvites} == {n2.sip_port}
    assert caller.received("BYE") == []
    rows = n2.wait_ended(count, timeout=30)
    assert {(r["owner_node"], r["end_reason"]) for r in rows} == {("n2", "caller_hangup")}
    delays = [m.at - killed for m in reinvites]
    print(f"{count} calls re-homed: kill -9 → caller's re-INVITE p50 {_quantile(delays, 0.5):.2f} s, "
          f"p99 {_quantile(delays, 0.99):.2f} s, last {max(delays):.2f} s (lease 2 s, heartbeat 0.5 s)")
    n2.assert_clean()


def test_database_cut_for_twenty_seconds_keeps_every_call_and_every_event(cluster, sipp, db_url):
    from sqlalchemy.engine import make_url

    from tests.integration.store.tcpproxy import TcpProxy

    u = make_url(db_url)
    proxy = TcpProxy(u.host or "127.0.0.1", u.port or 5432)
    proxy.restore()
    try:
        proxied = u.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
        ap = Ap("ap1", capacity=10)
        ap_proc = sipp_ap(sipp, CONTROLLER_SCENARIOS / "ap_answer.xml", ap, calls=4,
                          timeout=120)
        n1, n2 = cluster.start(["n1", "n2"], [ap], db_url=proxied)
        # three calls stay up across the outage: two on n1, one on n2; they hang up after it
        on_n1 = sipp.caller(CONTROLLER_SCENARIOS / "caller_basic.xml", n1, calls=2, limit=2, hold_ms=30000, timeout=90)
        on_n2 = sipp.caller(CONTROLLER_SCENARIOS / "caller_basic.xml", n2, calls=1, hold_ms=30000, timeout=90)
        n1.wait_calls(lambda cs: len(cs) == 3 and all(c["state"] == "talking" for c in cs), 20, "3 talking calls")
        cut = time.monotonic()
        proxy.cut()
        # during the outage a new call is taken, answered and ended (its writes queue)
        during = sipp.caller(CONTROLLER_SCENARIOS / "caller_basic.xml", n2, calls=1, hold_ms=500, timeout=30)
        assert during.wait(30) == 0, during.summary()
        wait_until(lambda: n1.metric("ng911_cluster_lease_remaining_seconds") < 0
                   and n2.metric("ng911_cluster_lease_remaining_seconds") < 0, 15, "both leases lapsed")
        time.sleep(max(0.0, 20.0 - (time.monotonic() - cut)))
        proxy.restore()
        for caller in (on_n1, on_n2):
            assert caller.wait(60) == 0, caller.summary()
        assert ap_proc.wait(30) == 97, ap_proc.summary()
        rows = n1.wait_ended(4, timeout=30)
        # nobody took anything over: each call ended where it was, by its caller
        assert sorted(r["owner_node"] for r in rows) == ["n1", "n1", "n2", "n2"]
        assert {r["end_reason"] for r in rows} == {"caller_hangup"}
        for r in rows:
            kinds = n1.kinds(r["call_id"])
            assert kinds[0] == "received" and "answered" in kinds and kinds[-1] == "ended", kinds
            assert "resumed" not in kinds
        for node in (n1, n2):
            assert node.metric("ng911_cluster_takeovers_total") == 0
            assert node.metric("ng911_cluster_calls_lost_total") == 0
            bad = [r for r in node.log_records() if r.get("level") in ("error", "critical")
                   and not r.get("logger", "").startswith("ng911.store")]
            assert not bad, bad[:5]
    finally:
        proxy.cut()


def test_call_on_hold_stays_on_hold_when_taken_over(cluster, sipp):
    ap = Ap("ap1")
    ap_proc = sipp_ap(sipp, "tk_ap.xml", ap)
    n1, n2 = cluster.start(["n1", "n2"], [ap])
    caller = sipp_caller(sipp, "tk_caller_hold.xml", n1.sip_port, hold_ms=1000)
    (call,) = n1.wait_talking()
    # the hold went through: the position was re-INVITEd with the caller's sendonly offer
    wait_until(lambda: any(b"a=sendonly" in (m.sdp() or b"") for m in ap_proc.received("INVITE")), 10,
               "the hold reaching the position")
    time.sleep(0.5)  # (its legs' new SDP saved)
    n1.kill9()

    assert caller.wait(60) == 0, caller.summary()
    assert ap_proc.wait(30) == 97, ap_proc.summary()
    assert caller.received("BYE") == []
    from_n2_caller = [m for m in caller.received("INVITE") if contact_port(m) == n2.sip_port]
    from_n2_ap = [m for m in ap_proc.received("INVITE") if contact_port(m) == n2.sip_port]
    assert len(from_n2_caller) == 1 and len(from_n2_ap) == 1
    # the position is still held by the caller's side: the survivor offers it sendonly again
    assert b"a=sendonly" in from_n2_ap[0].sdp()
    # the caller is offered what it last accepted (our answer to its hold), version + 1
    [hold_answer] = [m for m in caller.received(None, requests=False)
                     if m.status == 200 and m.header("CSeq") == "2 INVITE"]
    offer, last = from_n2_caller[0].sdp(), hold_answer.sdp()
    (user, sess, version), (user0, sess0, version0) = sdp_origin(offer), sdp_origin(last)
    assert (user, sess, version) == (user0, sess0, version0 + 1)
    assert [line for line in offer.splitlines() if not line.startswith(b"o=")] == \
        [line for line in last.splitlines() if not line.startswith(b"o=")]
    (row,) = n2.wait_ended(1, timeout=15)
    assert (row["owner_node"], row["end_reason"]) == ("n2", "caller_hangup")
    n2.assert_clean()


def test_call_mid_move_when_its_node_dies_is_moved_by_the_survivor(cluster, sipp):
    ap1, ap2 = Ap("ap1"), Ap("ap2", ring_timeout=8.0)
    ap1_proc = sipp_ap(sipp, "tk_ap.xml", ap1)
    ap2_proc = sipp_ap(sipp, "tk_ap_slow.xml", ap2, timeout=90)  # rings 3 s: the move takes that long
    n1, n2 = cluster.start(["n1", "n2"], [ap1, ap2])
    caller = sipp_caller(sipp, "tk_caller_moves.xml", n1.sip_port, timeout=90)
    n1.wait_talking()
    ap1_proc.kill9()  # the position dies: n1 starts moving the call to ap2, which rings...
    n1.wait_calls(lambda calls: calls[0]["state"] == "moving", 15, "the call moving")
    killed = n1.kill9()  # ...and n1 dies mid-move

    assert caller.wait(90) == 0, caller.summary()
    assert ap2_proc.wait(30) == 97, ap2_proc.summary()
    assert caller.received("BYE") == []
    late = [m for m in caller.received("INVITE") if m.at > killed]
    assert late and {contact_port(m) for m in late} == {n2.sip_port}
    # the caller ends up with ap2's media (under the session identity it always had from us)
    ap2_media = {line for m in ap2_proc.sent(None, requests=False) for line in (m.sdp() or b"").splitlines()
                 if line.startswith(b"m=audio")}
    assert [line for line in late[-1].sdp().splitlines() if line.startswith(b"m=audio")][0] in ap2_media
    (row,) = n2.wait_ended(1, timeout=15)
    assert (row["owner_node"], row["answer_point"], row["end_reason"]) == ("n2", "ap2", "caller_hangup")
    assert row["move"] is None
    n2.assert_clean()


def test_node_stopped_on_purpose_hands_its_calls_over_at_once(cluster, sipp):
    ap = Ap("ap1")
    ap_proc = sipp_ap(sipp, "tk_ap.xml", ap)
    n1, n2 = cluster.start(["n1", "n2"], [ap], lease=5.0)  # a long lease: only the hand-over is quick
    caller = sipp_caller(sipp, "tk_caller.xml", n1.sip_port, hold_ms=1000)
    n1.wait_talking()
    stopped = time.time()
    assert n1.stop() == 0  # SIGTERM: a rolling restart, say
    assert caller.wait(60) == 0, caller.summary()
    assert ap_proc.wait(30) == 97, ap_proc.summary()
    [reinvite] = caller.received("INVITE")
    assert contact_port(reinvite) == n2.sip_port and caller.received("BYE") == []
    print(f"SIGTERM → caller's re-INVITE from the survivor: {reinvite.at - stopped:.2f} s (lease 5 s)")
    # n1 gave its lease back on the way out (so nobody waited for it to expire)
    assert "lease given back (done)" in n1.stderr_path.read_text()
    (row,) = n2.wait_ended(1, timeout=15)
    assert (row["owner_node"], row["end_reason"]) == ("n2", "caller_hangup")
    n2.assert_clean()


def test_a_request_for_a_call_another_node_has_gets_500_retry_after_not_481(cluster, sipp):
    ap = Ap("ap1")
    ap_proc = sipp_ap(sipp, "tk_ap.xml", ap)
    n1, n2 = cluster.start(["n1", "n2"], [ap])
    caller = sipp_caller(sipp, "tk_caller_stray.xml", n1.sip_port, hold_ms=500,
                         extra=["-key", "other", str(n2.sip_port)])
    assert caller.wait(30) == 0, caller.summary()
    assert ap_proc.wait(30) == 97, ap_proc.summary()
    [answer] = [m for m in caller.received(None, requests=False) if "INFO" in (m.header("CSeq") or "")]
    assert answer.status == 500 and answer.header("Retry-After") == "2"
    (row,) = n1.wait_ended(1, timeout=15)
    assert (row["owner_node"], row["end_reason"]) == ("n1", "caller_hangup")
    n1.assert_clean()
    n2.assert_clean()
