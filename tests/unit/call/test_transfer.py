"""Blind transfer by REFER from the answer point (RFC 3515, with RFC 3725's move): 202, NOTIFY
sipfrag progress, the caller re-INVITEd onto the new AP, the transferor's leg BYEd."""
from __future__ import annotations

from ng911.routing.model import FailoverSpec
from ng911.sip.message import Request
from ng911.testing.psap import CONTROLLER_HOST, AnswerPointUa, ApScript, PsapHarness, ap_spec

from .helpers import CALLER_OFFER, parsed


def talking(h: PsapHarness):  # type: ignore[no-untyped-def]
    call = h.place_call(offer=CALLER_OFFER)
    h.run(2.0)
    assert call.state == "confirmed" and h.row()["answer_point"] == "ap1"
    return call


def notifies(h: PsapHarness, ap: str = "ap1") -> list[tuple[str, str]]:
    """(sipfrag status line, Subscription-State) of each NOTIFY the AP got."""
    out = []
    for req in h.requests_to(ap, "NOTIFY"):
        assert isinstance(req, Request)
        assert req.headers.get("Event") == "refer"
        assert (req.content_type or "").startswith("message/sipfrag")
        out.append((req.body.decode().strip(), req.headers.get("Subscription-State") or ""))
    return out


def no_probe() -> FailoverSpec:
    return FailoverSpec(in_dialog_options_interval=0)


def test_refer_to_another_positions_uri_moves_the_caller_there() -> None:
    h = PsapHarness(failover=no_probe())
    call = talking(h)
    statuses: list[int] = []
    h.ap("ap1").refer("sip:ap2@10.0.1.2:5060", on_response=lambda r: statuses.append(r.status))
    h.run(3.0)
    assert statuses == [202]
    assert notifies(h) == [("SIP/2.0 100 Trying", "active;expires=60"),
                           ("SIP/2.0 200 OK", "terminated;reason=noresource")]
    # the caller: re-INVITEd onto ap2, same session (o= of the answer it has, version + 1)
    [reinvite] = h.reinvites_to("esrp")
    offer_up = parsed(reinvite)
    assert (offer_up.origin.sess_id, offer_up.origin.sess_version) == ("1001", 2)
    assert offer_up.connection is not None and offer_up.connection.address == "10.0.1.2"
    assert h.ap("ap2").current.state == "confirmed"
    assert h.requests_to("ap2", "INVITE")[0].headers.get_all("Geolocation") == ["<cid:loc@esrp.example>"]
    # the transferor's leg ends, the caller's does not
    assert len(h.requests_to("ap1", "BYE")) == 1 and h.ap("ap1").sessions_up == []
    assert h.requests_to("esrp", "BYE") == [] and call.state == "confirmed"
    assert h.event("transfer")["target"] == "sip:ap2@10.0.1.2:5060"
    assert h.event("moved") == {"answer_point": "ap2", "reason": "transfer", "seconds": h.event("moved")["seconds"], "state": "talking"}
    assert h.metric("ng911_failovers_total", reason="transfer") == 1
    assert h.controller.pool.aps["ap1"].active == 0 and h.controller.pool.aps["ap2"].active == 1
    call.bye()
    h.run(1.0)
    assert len(h.requests_to("ap2", "BYE")) == 1 and h.row()["outcome"] == "answered"


def test_refer_to_a_queue_hunts_it_skipping_the_transferor() -> None:
    h = PsapHarness(failover=no_probe())
    call = talking(h)
    h.ap("ap2").script = ApScript(reject=486)
    h.ap("ap1").refer(f"sip:main@{CONTROLLER_HOST}:5060")
    h.run(4.0)
    assert h.event("transfer")["queue"] == "main"
    assert h.statuses_to("ctl", src="ap2")[-1] == 486
    assert h.ap("ap3").current.state == "confirmed" and h.row()["answer_point"] == "ap3"
    assert notifies(h)[-1] == ("SIP/2.0 200 OK", "terminated;reason=noresource")
    assert len(h.requests_to("ap1", "BYE")) == 1
    assert call.state == "confirmed" and h.requests_to("esrp", "BYE") == []


def test_a_transfer_to_a_target_that_refuses_leaves_the_call_with_the_transferor() -> None:
    h = PsapHarness(failover=no_probe())
    call = talking(h)
    h.ap("ap2").script = ApScript(reject=486)
    h.ap("ap1").refer("sip:ap2@10.0.1.2:5060")
    h.run(10.0)
    assert len(h.requests_to("ap2", "INVITE")) == 1  # tried once, not again and again
    assert notifies(h) == [("SIP/2.0 100 Trying", "active;expires=60"),
                           ("SIP/2.0 486 Busy Here", "terminated;reason=noresource")]
    assert h.ap("ap1").current.state == "confirmed" and h.requests_to("ap1", "BYE") == []
    assert h.reinvites_to("esrp") == [] and call.state == "confirmed"
    assert h.event("transfer_failed")["reason"].startswith("486")
    row = h.row()
    assert (row["state"], row["answer_point"]) == ("talking", "ap1")
    assert h.controller.pool.aps["ap2"].active == 0 and h.controller.pool.aps["ap1"].active == 1
    # and the call still works: the caller hangs up, ap1 gets the BYE
    call.bye()
    h.run(1.0)
    assert len(h.requests_to("ap1", "BYE")) == 1


def test_a_transfer_to_a_queue_with_nobody_free_fails_back_to_the_transferor() -> None:
    h = PsapHarness(failover=no_probe())
    call = talking(h)
    h.ap("ap2").script = ApScript(reject=486)
    h.ap("ap3").script = ApScript(reject=503)
    h.ap("ap1").refer(f"sip:main@{CONTROLLER_HOST}:5060")
    h.run(10.0)
    assert notifies(h)[-1][1] == "terminated;reason=noresource"
    assert notifies(h)[-1][0].startswith("SIP/2.0 5") or notifies(h)[-1][0].startswith("SIP/2.0 4")
    assert h.ap("ap1").current.state == "confirmed" and call.state == "confirmed"
    assert h.reinvites_to("esrp") == []
    assert [len(h.requests_to(n, "INVITE")) for n in ("ap2", "ap3")] == [1, 1]


def test_refer_to_an_allowed_uri_outside_the_psap() -> None:
    h = PsapHarness(failover=no_probe(), transfer_targets=["sip:psap2@10.0.1.9:5060"])
    other = AnswerPointUa(h, ap_spec(9, name="psap2"))  # another PSAP's trunk, not one of ours
    call = talking(h)
    h.ap("ap1").refer("sip:psap2@10.0.1.9:5060")
    h.run(3.0)
    assert other.current.state == "confirmed"
    assert notifies(h)[-1] == ("SIP/2.0 200 OK", "terminated;reason=noresource")
    assert h.event("moved")["answer_point"] == "sip:psap2@10.0.1.9:5060"
    assert call.state == "confirmed" and len(h.requests_to("ap1", "BYE")) == 1
    assert h.controller.pool.aps["ap1"].active == 0


def test_refer_to_a_target_not_allowed_is_refused_and_the_call_carries_on() -> None:
    h = PsapHarness(failover=no_probe(), transfer_targets=["sip:psap2@10.0.1.9:5060"])
    stranger = AnswerPointUa(h, ap_spec(8, name="elsewhere"))  # reachable, but not allowed
    call = talking(h)
    for target in ("sip:elsewhere@10.0.1.8:5060", "sip:psap2@10.0.1.9:5099", "sips:psap2@10.0.1.9:5060"):
        statuses: list[int] = []
        h.ap("ap1").current.request("REFER", headers=(("Refer-To", f"<{target}>"),),
                                    on_response=lambda r: statuses.append(r.status))
        h.run(2.0)
        assert statuses == [403], target
    assert h.requests_to("elsewhere", "INVITE") == [] and stranger.sessions == []
    assert call.state == "confirmed" and h.ap("ap1").current.state == "confirmed"
    assert h.requests_to("ap1", "BYE") == [] and h.requests_to("esrp", "BYE") == []
    assert [e for e in h.event_kinds() if e == "transfer_refused"] == ["transfer_refused"] * 3
    assert h.metrics.sip_refer_refused._value.get() == 3


def test_refer_from_outside_any_call_is_refused() -> None:
    h = PsapHarness(failover=no_probe())
    talking(h)
    # a REFER from the caller's side is not a transfer we take
    statuses: list[int] = []
    h.caller.calls[0].request("REFER", headers=(("Refer-To", "<sip:ap2@10.0.1.2:5060>"),),
                              on_response=lambda r: statuses.append(r.status))
    h.run(1.0)
    assert statuses == [603]
    assert h.requests_to("ap2", "INVITE") == []


def _refer_and_hang_up(h: PsapHarness, target: str) -> None:
    ap1 = h.ap("ap1")
    leg = ap1.current
    ap1.refer(target, on_response=lambda r: leg.bye() if r.status == 202 else None)


def test_a_transferor_hanging_up_as_soon_as_its_refer_is_accepted_does_not_end_the_call() -> None:
    h = PsapHarness(failover=no_probe())
    call = talking(h)
    _refer_and_hang_up(h, "sip:ap2@10.0.1.2:5060")
    h.run(3.0)
    assert h.packets("BYE", src="ap1", dst="ctl")
    assert call.state == "confirmed" and h.requests_to("esrp", "BYE") == []
    assert h.ap("ap2").current.state == "confirmed" and h.row()["answer_point"] == "ap2"
    assert "transferor_gone" in h.event_kinds()
    assert h.controller.pool.aps["ap1"].active == 0 and h.controller.pool.aps["ap2"].active == 1
    call.bye()
    h.run(1.0)
    assert len(h.requests_to("ap2", "BYE")) == 1 and h.row()["outcome"] == "answered"


def test_when_the_transferor_is_gone_and_the_transfer_fails_the_call_is_hunted_like_a_failover() -> None:
    h = PsapHarness(failover=no_probe())
    call = talking(h)
    h.ap("ap2").script = ApScript(reject=486)
    _refer_and_hang_up(h, "sip:ap2@10.0.1.2:5060")
    h.run(5.0)
    assert call.state == "confirmed" and h.requests_to("esrp", "BYE") == []
    assert h.ap("ap3").current.state == "confirmed" and h.row()["answer_point"] == "ap3"
    assert h.row()["state"] == "talking"
    assert h.requests_to("ap1", "INVITE")[1:] == []  # not back to the position that left
    assert [p.summary for p in h.net.packets if p.method == "NOTIFY"].count("ctl>ap1 NOTIFY") == 1  # 100 only
