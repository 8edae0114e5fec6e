"""Messages derived from others: responses (RFC 3261 §8.2.6), ACK for non-2xx (§17.1.1.3), CANCEL (§9.1)."""
from __future__ import annotations

import re

import pytest

from ng911.sip.builders import (
    MAGIC_COOKIE,
    REASONS,
    make_ack_for_non2xx,
    make_cancel,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
)
from ng911.sip.message import Request, Response, SipParseError, parse_message

INVITE = (
    "INVITE urn:service:sos SIP/2.0\r\n"
    "Via: SIP / 2.0 / UDP esrp.example.net:5060;branch=z9hG4bKtop;rport\r\n"
    "v: SIP/2.0/TCP bcf.example.net;branch=z9hG4bKmid, SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKlow\r\n"
    "Max-Forwards: 69\r\n"
    "Route: <sip:psap.example.net;lr>\r\n"
    "Route: <sip:ap.example.net;lr>\r\n"
    "Record-Route: <sip:esrp.example.net;lr>\r\n"
    'f: "Caller" <sip:+12025551212@bcf.example.net>;tag=ftag1\r\n'
    "To: <urn:service:sos>\r\n"
    "Call-ID: call-1@bcf.example.net\r\n"
    "CSeq: 7 INVITE\r\n"
    "Contact: <sip:+12025551212@192.0.2.1>\r\n"
    "Timestamp: 54.3 0.2\r\n"
    "Supported: timer\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 4\r\n"
    "\r\n"
    "v=0\n"
).encode()


@pytest.fixture()
def invite() -> Request:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    return msg


def _wire(msg: Request | Response) -> Request | Response:
    return parse_message(msg.to_bytes())


def test_response_copies_via_stack_from_to_call_id_cseq(invite: Request) -> None:
    resp = make_response(invite, 180, to_tag="ttag9")
    assert (resp.status, resp.reason) == (180, "Ringing")
    # every Via line, in order, as written (compact name included)
    assert resp.headers.get_all("Via") == invite.headers.get_all("Via")
    assert [n for n, _ in resp.headers][:2] == ["Via", "v"]
    assert [v.branch for v in resp.vias] == ["z9hG4bKtop", "z9hG4bKmid", "z9hG4bKlow"]
    assert resp.headers.get("From") == invite.headers.get("From")
    assert resp.call_id == invite.call_id and resp.cseq == invite.cseq
    assert resp.to.uri == invite.to.uri and resp.to.tag == "ttag9"
    # nothing else of the request is carried
    for name in ("Route", "Record-Route", "Contact", "Max-Forwards", "Supported", "Content-Type", "Timestamp"):
        assert name not in resp.headers, name
    assert resp.body == b""
    again = _wire(resp)
    assert again.vias == invite.vias and again.to.tag == "ttag9" and again.from_ == invite.from_


def test_100_trying_gets_no_to_tag_and_keeps_timestamp(invite: Request) -> None:
    trying = make_response(invite, 100, to_tag="ignored")
    assert trying.reason == "Trying" and trying.to.tag is None
    assert trying.headers.get("Timestamp") == "54.3 0.2"
    assert "Timestamp" not in make_response(invite, 180, to_tag="t").headers


def test_existing_to_tag_is_kept(invite: Request) -> None:
    in_dialog = invite.replace(headers=invite.headers.set("To", "<urn:service:sos>;tag=already"))
    resp = make_response(in_dialog, 200, to_tag="other")
    assert resp.to.tag == "already" and resp.headers.get("To") == "<urn:service:sos>;tag=already"


def test_no_tag_unless_given(invite: Request) -> None:
    assert make_response(invite, 486).to.tag is None


def test_extra_headers_body_and_reason(invite: Request) -> None:
    resp = make_response(invite, 200, to_tag="t", headers=[("Contact", "<sip:ng911@127.0.0.1>")],
                         body=b"v=0\r\n", content_type="application/sdp")
    assert resp.headers.get("Contact") == "<sip:ng911@127.0.0.1>"
    assert resp.content_type == "application/sdp" and resp.body == b"v=0\r\n"
    assert _wire(resp).body == b"v=0\r\n"
    assert make_response(invite, 603, "Go Away").reason == "Go Away"
    assert make_response(invite, 499).reason == ""
    assert make_response(invite, 200, content_type="application/sdp").content_type is None  # no body, no type
    assert all(isinstance(k, int) and 100 <= k <= 699 for k in REASONS)


def test_response_to_a_request_missing_headers_still_builds() -> None:
    # A 400 must be possible for a request that lacks To/From (RFC 4475 §3.3.1).
    bad = parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 OPTIONS\r\n\r\n")
    resp = make_response(bad, 400, "Missing Call-ID header", to_tag="t")  # type: ignore[arg-type]
    assert resp.status == 400 and resp.vias == bad.vias and "To" not in resp.headers


def test_ack_for_non2xx(invite: Request) -> None:
    final = parse_message(make_response(invite, 486, to_tag="busy1").to_bytes())
    assert isinstance(final, Response)
    ack = make_ack_for_non2xx(invite, final)
    assert ack.method == "ACK" and ack.uri == invite.uri
    # one Via: the INVITE's top one, verbatim (same branch)
    assert ack.headers.get_all("Via") == ["SIP / 2.0 / UDP esrp.example.net:5060;branch=z9hG4bKtop;rport"]
    assert ack.branch == invite.branch
    assert ack.call_id == invite.call_id
    assert ack.headers.get("From") == invite.headers.get("From")
    assert ack.to.tag == "busy1" and ack.to.uri == invite.to.uri
    assert (ack.cseq.seq, ack.cseq.method) == (7, "ACK")
    assert ack.headers.get_all("Route") == invite.headers.get_all("Route")
    assert ack.max_forwards == 70
    assert ack.body == b"" and "Contact" not in ack.headers and "Record-Route" not in ack.headers
    wired = _wire(ack)
    assert wired.to_bytes() == ack.to_bytes() and b"Content-Length: 0\r\n" in ack.to_bytes()


def test_cancel(invite: Request) -> None:
    cancel = make_cancel(invite)
    assert cancel.method == "CANCEL" and cancel.uri == invite.uri
    assert cancel.headers.get_all("Via") == ["SIP / 2.0 / UDP esrp.example.net:5060;branch=z9hG4bKtop;rport"]
    assert cancel.branch == invite.branch
    assert cancel.headers.get("To") == invite.headers.get("To")  # no tag: the INVITE had none
    assert cancel.headers.get("From") == invite.headers.get("From")
    assert cancel.call_id == invite.call_id
    assert (cancel.cseq.seq, cancel.cseq.method) == (7, "CANCEL")
    assert cancel.headers.get_all("Route") == invite.headers.get_all("Route")
    assert cancel.body == b"" and "Content-Type" not in cancel.headers
    assert _wire(cancel).cseq.method == "CANCEL"


def test_cancel_needs_a_via(invite: Request) -> None:
    with pytest.raises(SipParseError):
        make_cancel(invite.replace(headers=invite.headers.remove("Via")))


def test_identifiers() -> None:
    branches = {new_branch() for _ in range(200)}
    assert len(branches) == 200 and all(b.startswith(MAGIC_COOKIE) for b in branches)
    assert re.fullmatch(r"[0-9a-f]{24}", new_tag())  # 96 bits: not guessable (issue 9)
    cid = new_call_id("127.0.0.1")
    assert cid.endswith("@127.0.0.1") and new_call_id("h") != new_call_id("h")
