"""A call rebuilt from the store by another controller (the seam the cluster's takeover
stands on): the UA adopts both stored dialogs, `Call.restore` rebuilds the call from its row,
and a target refresh of both legs brings the peers' in-dialog requests to the new node."""
from __future__ import annotations

import ipaddress

import pytest

from ng911 import sdp as sdplib
from ng911.call.controller import Controller
from ng911.routing.model import FailoverSpec
from ng911.sip.timers import TimerConfig
from ng911.sip.ua import CSEQ_GAP, UaConfig
from ng911.testing.psap import PSAP_DOMAIN, PsapHarness, _RecordingObserver

from .helpers import CALLER_OFFER, parsed


def second_controller(h: PsapHarness, host: str = "10.0.0.11") -> Controller:
    """Another node on the same store, owning what the first owned (claiming it is the
    cluster's part; here the owner is simply the same)."""
    node, epoch = h.observer.owner
    observer = _RecordingObserver(h.store, h.metrics, node=node, epoch=epoch)
    ctl = Controller(h.routing, observer, trusted=[ipaddress.ip_network(n) for n in h.trusted],
                     domain=PSAP_DOMAIN, node=node)
    fo = h.routing.failover  # type: ignore[union-attr]
    config = UaConfig(user="ng911", user_agent="ng911-test", timers=TimerConfig(trying_delay=0),
                      session_expires=fo.session_expires, min_se=fo.min_se, bind_dialogs=True)
    port = h.net.add_ua("ctl2", host, 5060, handler=ctl, config=config)
    ctl.attach(port.ua)
    return ctl


def test_a_talking_call_is_rebuilt_from_its_row_and_both_peers_follow_the_new_node() -> None:
    h = PsapHarness(failover=FailoverSpec(in_dialog_options_interval=2.0))
    call = h.place_call(offer=CALLER_OFFER)
    h.run(2.0)
    row = h.row()
    assert row["state"] == "talking"
    stored_up = row["legs"]["upstream"]["dialog"]
    caller_had = sdplib.parse(call.remote_sdp)

    h.net.remove("ctl")  # the first controller is gone
    ctl2 = second_controller(h)
    restored = ctl2.restore_call(row)
    h.run(2.0)

    # the caller: a re-INVITE in its own dialog, CSeq past the gap, the new node's Contact,
    # the same session (o= version + 1)
    [reinvite] = h.requests_to("esrp", "INVITE", src="ctl2")
    assert (reinvite.call_id, reinvite.from_.tag, reinvite.to.tag) == (
        stored_up["call_id"], stored_up["local_tag"], stored_up["remote_tag"])
    assert reinvite.cseq.seq >= stored_up["local_seq"] + CSEQ_GAP
    assert reinvite.contacts[0].uri.host == "10.0.0.11"
    offer = parsed(reinvite)
    assert offer.origin.same_session(caller_had.origin)
    assert offer.origin.sess_version == caller_had.origin.sess_version + 1
    assert offer.content() == caller_had.content()
    # the position too
    [ap_reinvite] = h.requests_to("ap1", "INVITE", src="ctl2")
    assert ap_reinvite.contacts[0].uri.host == "10.0.0.11"
    assert h.requests_to("esrp", "BYE") == [] and call.state == "confirmed"
    assert ctl2.pool.aps["ap1"].active == 1
    assert "resumed" in h.event_kinds()

    # the caller hangs up: its BYE reaches the new node, which ends the position's leg
    call.bye()
    h.run(1.0)
    assert len(h.requests_to("ctl2", "BYE", src="esrp")) == 1
    assert len(h.requests_to("ap1", "BYE", src="ctl2")) == 1
    assert ctl2.calls == {} and ctl2.pool.aps["ap1"].active == 0
    assert h.row()["end_reason"] == "caller_hangup"
    assert restored.ended


def test_a_restored_call_whose_position_is_dead_fails_over_as_usual() -> None:
    h = PsapHarness(failover=FailoverSpec(in_dialog_options_interval=2.0))
    call = h.place_call(offer=CALLER_OFFER)
    h.run(2.0)
    row = h.row()
    h.net.remove("ctl")
    h.ap("ap1").die()
    ctl2 = second_controller(h)
    ctl2.restore_call(row)
    h.run(40.0)
    assert h.row()["answer_point"] == "ap2" and h.row()["state"] == "talking"
    assert h.requests_to("esrp", "BYE") == [] and call.state == "confirmed"


def test_a_ringing_call_is_answered_by_the_new_node_on_the_callers_original_transaction() -> None:
    h = PsapHarness(aps=2)
    h.ap("ap1").script.answer_after = None  # rings forever
    call = h.place_call(offer=CALLER_OFFER)
    h.run(1.0)
    row = h.row()
    assert row["state"] == "ringing"
    [first_ring] = [r for r in h.responses_to("esrp", "INVITE") if r.status == 180]
    h.net.remove("ctl")
    h.ap("ap1").script.answer_after = 0.5  # the new node's INVITE is answered
    ctl2 = second_controller(h)
    restored = ctl2.restore_call(row, taken_from="ctl/1")
    h.run(3.0)
    # the caller hears from the new node on its own INVITE: same To-tag, same Via stack
    rings = [r for r in h.responses_to("esrp", "INVITE", src="ctl2") if r.status == 180]
    assert rings and rings[0].to.tag == first_ring.to.tag
    assert rings[0].headers.get_all("Via") == first_ring.headers.get_all("Via")
    [ok] = [r for r in h.responses_to("esrp", "INVITE", src="ctl2") if r.status == 200]
    assert ok.to.tag == first_ring.to.tag and ok.contacts[0].uri.host == "10.0.0.11"
    assert call.state == "confirmed" and restored.state.value == "talking"
    assert h.requests_to("esrp", "BYE", src="ctl2") == []
    assert h.row()["state"] == "talking"
    # the caller hangs up at the new node
    call.bye()
    h.run(1.0)
    assert h.row()["end_reason"] == "caller_hangup" and ctl2.calls == {}


def test_an_unanswered_call_without_its_stored_invite_is_refused_cleanly() -> None:
    h = PsapHarness(aps=1)
    h.ap("ap1").script.answer_after = None
    h.place_call(offer=CALLER_OFFER)
    h.run(1.0)
    row = dict(h.row(), upstream_invite=None)
    h.net.remove("ctl")
    ctl2 = second_controller(h)
    with pytest.raises(ValueError, match="no stored INVITE"):
        ctl2.restore_call(row)
    assert ctl2.calls == {} and ctl2.ua.dialogs == {}


def test_cseqs_used_by_probes_are_saved_before_they_outrun_the_gap() -> None:
    h = PsapHarness(failover=FailoverSpec(in_dialog_options_interval=1.0))
    h.place_call(offer=CALLER_OFFER)
    h.run(2.0)
    stored = h.row()["legs"]["psap"]["dialog"]["local_seq"]
    assert h.controller.save_advanced_cseqs(margin=3) == 0  # nothing moved far enough yet
    h.run(5.0)  # five in-dialog OPTIONS probes on the position's leg
    assert h.controller.save_advanced_cseqs(margin=3) == 1
    h.run(0.1)
    call = next(iter(h.controller.calls.values()))
    assert h.row()["legs"]["psap"]["dialog"]["local_seq"] == call.psap.dialog.local_seq >= stored + 3


def test_a_call_lost_to_another_node_is_never_spoken_for_again() -> None:
    """Fencing is total: once this node learns another owns the call, no request leaves it for
    that call — no BYE, no CANCEL, no probe, no refresh, no retransmission (what a peer still
    asks it gets an answer: here the position, left without refreshes, ends its session)."""
    h = PsapHarness(failover=FailoverSpec(in_dialog_options_interval=1.0))
    call = h.place_call(offer=CALLER_OFFER)
    h.run(2.0)
    (call_id,) = list(h.controller.calls)
    ap_leg = h.controller.calls[call_id].psap
    sip_ids = {call.call_id, ap_leg.call_id}
    lost: list[list[str]] = []
    h.controller.on_call_lost = lost.append
    before = len(h.net.packets)
    assert h.controller.forget_call(call_id, "claimed by another node")
    h.run(120.0)  # probes, session refreshes, keep-alives would all have fired by now
    sent = [p for p in h.net.packets[before:] if p.src_name == "ctl" and p.is_request
            and p.message.call_id in sip_ids]
    assert sent == []
    assert sorted(lost[0]) == sorted(sip_ids)  # the gate is told which Call-IDs to drop
    assert h.controller.calls == {} and h.controller.pool.aps["ap1"].active == 0
    assert call.state == "confirmed"  # the caller was told nothing: its call goes on elsewhere
