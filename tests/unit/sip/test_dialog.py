"""Dialog state (RFC 3261 §12): creation on both sides, request construction, CSeq checks,
the stored form. Every message goes through parse_message, as it would off the wire."""

from __future__ import annotations

import json

import pytest

from ng911.sip.builders import make_response
from ng911.sip.dialog import (
    CONFIRMED,
    EARLY,
    Dialog,
    DialogError,
    dialog_id_for_incoming,
    dialog_id_for_response,
)
from ng911.sip.message import Request, Response, parse_message
from ng911.sip.uri import SipUri


def invite(*, record_route: tuple[str, ...] = (), contact: str | None = "<sip:alice@10.0.0.1:5060>",
           uri: str = "sip:bob@10.0.0.2", cseq: int = 7) -> Request:
    lines = [
        f"INVITE {uri} SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.11:5060;branch=z9hG4bKp1",
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa1",
        *[f"Record-Route: {rr}" for rr in record_route],
        "Max-Forwards: 69",
        'From: "Smith, Alice" <sip:alice@example.com>;tag=atag',
        "To: <sip:bob@example.com>",
        "Call-ID: c1@10.0.0.1",
        f"CSeq: {cseq} INVITE",
    ]
    if contact:
        lines.append(f"Contact: {contact}")
    msg = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def answer(req: Request, status: int = 200, *, record_route: tuple[str, ...] = (),
           contact: str = "<sip:bob@10.0.0.2:5070>") -> Response:
    headers = [("Record-Route", rr) for rr in record_route] + [("Contact", contact)]
    msg = parse_message(make_response(req, status, to_tag="btag", headers=headers).to_bytes())
    assert isinstance(msg, Response)
    return msg


def in_dialog(method: str, cseq: int, *, contact: str | None = None) -> Request:
    """A request from alice to bob within the dialog (as bob receives it)."""
    text = (
        f"{method} sip:bob@10.0.0.2:5070 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx" + str(cseq) + "\r\n"
        "From: <sip:alice@example.com>;tag=atag\r\n"
        "To: <sip:bob@example.com>;tag=btag\r\n"
        "Call-ID: c1@10.0.0.1\r\n"
        f"CSeq: {cseq} {method}\r\n"
        + (f"Contact: {contact}\r\n" if contact else "")
        + "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


RR = ("<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>")  # as the UAS sees them: nearest first


# --- creation -----------------------------------------------------------------------------------


def test_uac_dialog_from_2xx_takes_tags_remote_target_and_reversed_record_route() -> None:
    req = invite(record_route=RR)
    d = Dialog.from_uac_response(req, answer(req, record_route=RR))
    assert d.id == ("c1@10.0.0.1", "atag", "btag")
    assert d.id == dialog_id_for_response(answer(req))
    assert d.local_uri == '"Smith, Alice" <sip:alice@example.com>'
    assert d.remote_uri == "<sip:bob@example.com>"
    assert d.remote_target == "sip:bob@10.0.0.2:5070"
    assert d.route_set == ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
    assert (d.local_seq, d.remote_seq) == (7, None)
    assert d.state == CONFIRMED and d.is_uac


def test_uac_dialog_from_1xx_is_early_and_2xx_confirms_and_fixes_route_set() -> None:
    req = invite()
    d = Dialog.from_uac_response(req, answer(req, 180))
    assert d.state == EARLY and d.route_set == ()
    d.update_from_response(req, answer(req, 200, record_route=RR, contact="<sip:bob@10.0.0.2:5080>"))
    assert d.state == CONFIRMED
    assert d.route_set == ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
    assert d.remote_target == "sip:bob@10.0.0.2:5080"


def test_uas_dialog_from_request_keeps_record_route_order_and_remote_cseq() -> None:
    req = invite(record_route=RR)
    d = Dialog.from_uas_request(req, "btag")
    assert d.id == ("c1@10.0.0.1", "btag", "atag")
    assert d.id == dialog_id_for_incoming(in_dialog("BYE", 8))
    assert d.route_set == RR
    assert d.remote_target == "sip:alice@10.0.0.1:5060"
    assert (d.local_seq, d.remote_seq) == (0, 7)
    assert d.state == EARLY and not d.is_uac
    assert d.local_uri == "<sip:bob@example.com>" and d.remote_uri == '"Smith, Alice" <sip:alice@example.com>'


def test_uas_dialog_without_contact_targets_the_from_uri() -> None:
    d = Dialog.from_uas_request(invite(contact=None), "btag")
    assert d.remote_target == "sip:alice@example.com"


def test_dialog_of_sips_request_is_secure() -> None:
    d = Dialog.from_uas_request(invite(uri="sips:bob@example.com"), "btag")
    assert d.secure


# --- building requests --------------------------------------------------------------------------


def test_loose_routing_keeps_remote_target_as_request_uri_and_route_set_as_routes() -> None:
    req = invite(record_route=RR)
    d = Dialog.from_uac_response(req, answer(req, record_route=RR))
    bye = d.create_request("BYE")
    assert str(bye.uri) == "sip:bob@10.0.0.2:5070"
    assert bye.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert bye.from_.tag == "atag" and bye.to.tag == "btag"
    assert bye.call_id == "c1@10.0.0.1"
    assert (bye.cseq.seq, bye.cseq.method) == (8, "BYE")


def test_strict_router_first_becomes_request_uri_and_remote_target_the_last_route() -> None:
    strict = ("<sip:p2.example.com>", "<sip:p1.example.com;lr>")
    req = invite(record_route=strict)
    d = Dialog.from_uas_request(req, "btag")
    bye = d.create_request("BYE")
    assert str(bye.uri) == "sip:p2.example.com"
    assert bye.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:alice@10.0.0.1:5060>"]


def test_no_route_set_sends_to_remote_target_without_route_header() -> None:
    req = invite()
    d = Dialog.from_uac_response(req, answer(req))
    req2 = d.create_request("OPTIONS")
    assert str(req2.uri) == "sip:bob@10.0.0.2:5070" and "route" not in req2.headers


def test_each_new_request_takes_the_next_cseq_but_ack_reuses_the_given_one() -> None:
    req = invite(cseq=7)
    d = Dialog.from_uac_response(req, answer(req))
    ack = d.create_request("ACK", cseq=7)
    assert (ack.cseq.seq, ack.cseq.method) == (7, "ACK")
    assert d.create_request("INVITE").cseq.seq == 8
    assert d.create_request("BYE").cseq.seq == 9
    assert d.local_seq == 9


def test_uas_first_request_picks_a_cseq_then_counts_up() -> None:
    d = Dialog.from_uas_request(invite(), "btag")
    first = d.create_request("BYE").cseq.seq
    assert 1 <= first < 2**31
    assert d.create_request("INFO").cseq.seq == first + 1


def test_created_request_has_no_via_and_serialises_and_parses_again() -> None:
    d = Dialog.from_uas_request(invite(record_route=RR), "btag")
    bye = d.create_request("BYE", headers=(("Reason", "SIP;cause=200"),))
    assert "via" not in bye.headers
    assert bye.headers.get("Reason") == "SIP;cause=200"


# --- receiving ----------------------------------------------------------------------------------


def test_cseq_lower_than_remote_is_out_of_order_500_and_leaves_state() -> None:
    d = Dialog.from_uas_request(invite(cseq=7), "btag")
    d.check_request(in_dialog("INFO", 9))
    with pytest.raises(DialogError) as err:
        d.check_request(in_dialog("INFO", 8))
    assert err.value.status == 500
    assert d.remote_seq == 9


def test_higher_cseq_is_remembered_and_ack_cseq_is_not_checked() -> None:
    d = Dialog.from_uas_request(invite(cseq=7), "btag")
    d.check_request(in_dialog("ACK", 7))
    d.check_request(in_dialog("BYE", 8))
    assert d.remote_seq == 8
    d.check_request(in_dialog("ACK", 7))  # an ACK never counts against the order


def test_uac_dialog_takes_the_first_remote_cseq_whatever_it_is() -> None:
    req = invite()
    d = Dialog.from_uac_response(req, answer(req))
    d.check_request(in_dialog("BYE", 1))
    assert d.remote_seq == 1


def test_target_refresh_request_replaces_remote_target_others_do_not() -> None:
    d = Dialog.from_uas_request(invite(), "btag")
    d.check_request(in_dialog("INFO", 8, contact="<sip:alice@10.9.9.9>"))
    assert d.remote_target == "sip:alice@10.0.0.1:5060"
    d.check_request(in_dialog("INVITE", 9, contact="<sip:alice@10.9.9.9>"))
    assert d.remote_target == "sip:alice@10.9.9.9"
    d.check_request(in_dialog("UPDATE", 10, contact="<sip:alice@10.8.8.8;transport=tcp>"))
    assert d.remote_target == "sip:alice@10.8.8.8;transport=tcp"


def test_2xx_to_target_refresh_updates_remote_target() -> None:
    req = invite()
    d = Dialog.from_uac_response(req, answer(req))
    reinvite = d.create_request("INVITE")
    ok = parse_message(
        make_response(reinvite, 200, headers=[("Contact", "<sip:bob@10.7.7.7>")]).to_bytes()
    )
    assert isinstance(ok, Response)
    d.update_from_response(reinvite, ok)
    assert d.remote_target == "sip:bob@10.7.7.7"
    assert d.route_set == ()  # a re-INVITE never changes the route set


# --- the stored form ----------------------------------------------------------------------------


def test_to_dict_from_dict_round_trip_through_json_rebuilds_an_equal_dialog() -> None:
    req = invite(record_route=RR)
    d = Dialog.from_uas_request(req, "btag", confirmed=True)
    d.next_cseq()
    d.extra["transport"] = "UDP"
    data = json.loads(json.dumps(d.to_dict()))
    again = Dialog.from_dict(data)
    assert again == d
    assert again.route_set == RR and isinstance(again.route_set, tuple)
    assert again.create_request("BYE").cseq.seq == d.local_seq + 1


def test_rebuilt_dialog_builds_the_same_request() -> None:
    req = invite(record_route=RR)
    d = Dialog.from_uac_response(req, answer(req, record_route=RR))
    again = Dialog.from_dict(d.to_dict())
    assert again.create_request("BYE").to_bytes() == d.create_request("BYE").to_bytes()


def test_from_uac_response_uses_request_uri_when_response_has_no_contact() -> None:
    req = invite()
    no_contact = parse_message(make_response(req, 200, to_tag="btag").to_bytes())
    assert isinstance(no_contact, Response)
    d = Dialog.from_uac_response(req, no_contact)
    assert d.remote_target == "sip:bob@10.0.0.2"
    assert isinstance(req.uri, SipUri)
