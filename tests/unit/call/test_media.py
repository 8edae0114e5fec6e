"""Mid-call offers from either side (RFC 3725 §7, RFC 3264 §8): a changed SDP is relayed to
the other leg under that leg's own o= line; a session refresh is answered locally."""
from __future__ import annotations

from ng911 import sdp as sdplib
from ng911.routing.model import FailoverSpec
from ng911.sip.message import Response
from ng911.testing.psap import CALLER_HOST, PsapHarness, make_sdp

from .helpers import CALLER_OFFER, parsed, ports


def talking(h: PsapHarness):  # type: ignore[no-untyped-def]
    call = h.place_call(offer=CALLER_OFFER)
    h.run(2.0)
    assert call.state == "confirmed"
    return call


def harness() -> PsapHarness:
    return PsapHarness(failover=FailoverSpec(in_dialog_options_interval=0))


def test_a_changed_offer_from_the_caller_is_relayed_to_the_ap_and_its_answer_back() -> None:
    h = harness()
    call = talking(h)
    h.ap("ap1").script.reinvite_sdp = make_sdp("10.0.1.1", 7100, user="ap1", sess_id=1001, media=("audio", "text"))
    moved = make_sdp(CALLER_HOST, 4400, user="caller", sess_id=555, version=2, media=("audio", "text"))
    done: list[Response | None] = []
    call.reinvite(moved, on_done=done.append)
    h.run(1.0)
    # the AP: a re-INVITE in its dialog with the caller's new media, under the o= it knows
    [down] = h.reinvites_to("ap1")
    assert down.to.tag == h.ap("ap1").current.dialog.local_tag
    offer = parsed(down)
    assert (offer.origin.username, offer.origin.sess_id, offer.origin.sess_version) == ("caller", "555", 2)
    assert ports(offer) == [("audio", 4400), ("text", 4402)]
    # the caller: 200 with the AP's new answer, o= of the session it has (ap1 1001) version 2
    assert done and done[0] is not None and done[0].status == 200
    answer = parsed(done[0])
    assert (answer.origin.sess_id, answer.origin.sess_version) == ("1001", 2)
    assert ports(answer) == [("audio", 7100), ("text", 7102)]
    assert "media_change" in h.event_kinds()
    assert h.row()["legs"]["upstream"]["local_sdp"] == done[0].body


def test_a_session_refresh_with_the_same_sdp_is_answered_locally() -> None:
    h = harness()
    call = talking(h)
    first_answer = h.responses_to("esrp", "INVITE")[-1].body
    done: list[Response | None] = []
    call.reinvite(CALLER_OFFER, on_done=done.append)  # same content, same version
    h.run(1.0)
    assert done[0] is not None and done[0].status == 200
    assert done[0].body == first_answer  # same SDP, same o= version
    assert parsed(done[0]).origin.sess_version == 1
    assert h.reinvites_to("ap1") == []
    assert "media_change" not in h.event_kinds()


def test_a_bare_update_refresh_from_the_caller_stays_on_the_caller_leg() -> None:
    h = harness()
    call = talking(h)
    call.update(None)
    h.run(1.0)
    assert h.statuses_to("esrp", "UPDATE") == [200]
    assert h.packets("UPDATE", dst="ap1") == []


def test_a_hold_from_the_ap_reaches_the_caller_under_the_callers_session() -> None:
    h = harness()
    call = talking(h)
    caller_had = parsed(h.responses_to("esrp", "INVITE")[-1])
    held = h.ap("ap1").hold()
    h.run(1.0)
    [up] = h.reinvites_to("esrp")
    offer = parsed(up)
    assert offer.origin.same_session(caller_had.origin)
    assert offer.origin.sess_version == caller_had.origin.sess_version + 1
    assert [m.direction for m in offer.media] == [m.direction for m in sdplib.parse(held).media]
    assert str(offer.media[0].direction) == "sendonly"
    # the AP got the caller's answer, under the o= the AP knows (the caller's own)
    [ok] = [r for r in h.responses_to("ap1", "INVITE") if r.cseq.seq > 1 and r.status >= 200]
    assert ok.status == 200
    answer = parsed(ok)
    assert answer.origin.sess_id == "555"
    assert len(answer.media) == 2
    assert call.state == "confirmed" and h.ap("ap1").current.state == "confirmed"


def test_a_rejected_relay_is_rejected_to_the_offerer_and_a_retry_is_relayed_again() -> None:
    h = harness()
    call = talking(h)
    h.ap("ap1").hooks["on_reinvite"] = lambda session, request: session.reject_update(488)
    moved = make_sdp(CALLER_HOST, 4400, user="caller", sess_id=555, version=2, media=("audio", "text"))
    done: list[Response | None] = []
    call.reinvite(moved, on_done=done.append)
    h.run(1.0)
    assert done[-1] is not None and done[-1].status == 488
    del h.ap("ap1").hooks["on_reinvite"]
    call.reinvite(moved, on_done=done.append)  # the same offer again: not a refresh
    h.run(1.0)
    assert done[-1] is not None and done[-1].status == 200
    assert len(h.reinvites_to("ap1")) == 2


def test_the_psap_legs_session_refresh_by_re_invite_repeats_the_sdp_last_sent_and_is_acked() -> None:
    """An AP that does not allow UPDATE is refreshed by re-INVITE (RFC 4028 §7.4)."""
    h = PsapHarness(failover=FailoverSpec(session_expires=90, min_se=90, in_dialog_options_interval=0))

    def no_update(msg, src, dst):  # type: ignore[no-untyped-def]
        if not msg.is_request and src == ("10.0.1.1", 5060) and "allow" in msg.headers:
            msg = msg.replace(headers=msg.headers.set("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"))
        return msg

    h.net.rewrite = no_update
    call = talking(h)
    h.run(50.0)  # refreshed at 45 s (Session-Expires / 2)
    [refresh] = h.reinvites_to("ap1")
    assert refresh.body == CALLER_OFFER  # the offer it has, same version: a pure refresh
    assert [a.cseq.seq for a in h.requests_to("ap1", "ACK")] == [1, refresh.cseq.seq]
    assert h.reinvites_to("esrp") == [] and h.packets("UPDATE", dst="ap1") == []
    assert call.state == "confirmed" and h.ap("ap1").current.state == "confirmed"
