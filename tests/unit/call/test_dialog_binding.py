"""Dialogs bound to their peer (issue 9): knowing a call's Call-ID and tags is not enough to
end it, move it or cancel it. A request inside a dialog from anyone but the dialog's peer gets
403, is counted, and the call carries on; the peer's own requests still work."""
from __future__ import annotations

import secrets

from ng911.sip.ua import Session
from ng911.testing.psap import CONTROLLER_HOST, PsapHarness

from .helpers import CALLER_OFFER

STRANGER = ("10.0.0.9", 5060)  # inside upstream.trusted (10.0.0.0/24): an address proves nothing


def talking(h: PsapHarness) -> Session:
    call = h.place_call(offer=CALLER_OFFER)
    h.run(2.0)
    assert call.state == "confirmed" and h.row()["answer_point"] == "ap1"
    return call


def forge(h: PsapHarness, peer_session: Session, method: str, *, src: tuple[str, int] = STRANGER,
          headers: tuple[tuple[str, str], ...] = ()) -> list[int]:
    """``method`` inside ``peer_session``'s dialog, as its peer would word it, sent from ``src``.
    Returns the statuses the controller sent back to ``src``."""
    if src not in h.net.nodes:
        h.net.add_ua("stranger-%s" % src[0], src[0], src[1])
    d = peer_session.dialog
    request = d.create_request(method, cseq=(d.local_seq or 1) + 100, headers=headers)
    via = f"SIP/2.0/UDP {src[0]}:{src[1]};branch=z9hG4bK{secrets.token_hex(8)};rport"
    request = request.replace(headers=request.headers.prepend("Via", via))
    before = len(h.net.packets)
    h.net.inject(request.to_bytes(), src, (CONTROLLER_HOST, 5060))
    h.run(1.0)
    return [p.message.status for p in h.net.packets[before:]
            if p.dst == src and not p.is_request and p.message.cseq.method == method]


def test_a_bye_from_a_stranger_with_the_right_tags_gets_403_and_the_call_carries_on() -> None:
    h = PsapHarness()
    call = talking(h)
    assert forge(h, call, "BYE") == [403]
    assert call.state == "confirmed" and h.ap("ap1").current.state == "confirmed"
    assert h.requests_to("ap1", "BYE") == [] and h.requests_to("esrp", "BYE") == []
    assert h.event("stranger_refused")["method"] == "BYE"
    assert h.metrics.sip_dialog_strangers.labels(method="BYE", leg="upstream")._value.get() == 1
    # the caller's own BYE still ends the call
    call.bye()
    h.run(1.0)
    assert h.row()["end_reason"] == "caller_hangup"


def test_a_refer_from_a_stranger_on_the_position_leg_is_refused() -> None:
    h = PsapHarness()
    call = talking(h)
    ap_leg = h.ap("ap1").current
    assert forge(h, ap_leg, "REFER", headers=(("Refer-To", "<sip:ap2@10.0.1.2:5060>"),)) == [403]
    h.run(2.0)
    assert h.requests_to("ap2", "INVITE") == [] and h.row()["answer_point"] == "ap1"
    assert call.state == "confirmed" and ap_leg.state == "confirmed"
    assert h.metrics.sip_dialog_strangers.labels(method="REFER", leg="psap")._value.get() == 1


def test_a_reinvite_from_a_stranger_does_not_move_the_callers_media() -> None:
    h = PsapHarness()
    call = talking(h)
    sent_up = len(h.reinvites_to("ap1"))
    statuses = forge(h, call, "INVITE", headers=(("Contact", "<sip:evil@10.0.0.9:5060>"),))
    assert 403 in statuses and not [s for s in statuses if 200 <= s < 300]
    assert len(h.reinvites_to("ap1")) == sent_up
    # the dialog's remote target is untouched: the controller's next request goes to the caller
    up = next(iter(h.controller.calls.values())).upstream
    assert "10.0.0.9" not in up.dialog.remote_target


def test_a_forged_ack_or_bye_repeated_never_ends_the_call_and_is_logged_once() -> None:
    h = PsapHarness()
    call = talking(h)
    for _ in range(5):
        forge(h, call, "BYE")
        forge(h, call, "ACK")
    assert call.state == "confirmed"
    # answered nothing (an ACK) or 403 (a BYE); recorded once per method, counted every time
    assert h.event_kinds().count("stranger_refused") == 2
    assert h.metrics.sip_dialog_strangers.labels(method="BYE", leg="upstream")._value.get() == 5


def test_a_cancel_from_a_stranger_does_not_cancel_a_ringing_call() -> None:
    h = PsapHarness()
    call = h.place_call(offer=CALLER_OFFER)
    h.run(0.05)
    [invite] = [p.message for p in h.net.packets if p.src_name == "esrp" and p.is_request
                and p.message.method == "INVITE"]
    cancel = (f"CANCEL {invite.uri} SIP/2.0\r\n"
              f"Via: {invite.top_via}\r\n"  # the INVITE's branch: the transaction layer matches it
              f"Max-Forwards: 70\r\nFrom: {invite.headers.get('From')}\r\nTo: {invite.headers.get('To')}\r\n"
              f"Call-ID: {invite.call_id}\r\nCSeq: {invite.cseq.seq} CANCEL\r\nContent-Length: 0\r\n\r\n")
    h.net.add_ua("stranger", *STRANGER)
    assert h.row()["state"] in ("routing", "ringing")  # not answered yet
    before = len(h.net.packets)
    h.net.inject(cancel.encode(), STRANGER, (CONTROLLER_HOST, 5060))
    h.run(3.0)
    assert [p.message.status for p in h.net.packets[before:] if p.dst == STRANGER] == [403]
    assert 487 not in h.statuses_to("esrp") and h.requests_to("ap1", "CANCEL") == []
    assert call.state == "confirmed" and h.row()["state"] == "talking"
