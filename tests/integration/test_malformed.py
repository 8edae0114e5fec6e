"""Malformed and unusual out-of-dialog requests sent to a running ``ng911 ua answer``, over UDP
and over TCP, each checked against the exact response RFC 3261 asks for; afterwards the agent
must still answer OPTIONS and take a real call from SIPp."""
from __future__ import annotations

import re
import secrets

import pytest

from .conftest import HOST, assert_clean

pytestmark = pytest.mark.integration

TRANSPORTS = [pytest.param("udp", id="udp"), pytest.param("tcp", id="tcp")]

# (id, header overrides, words one of which the 400's reason phrase must contain)
BAD_REQUESTS = [
    ("cseq-too-large", lambda port: {"CSeq": "99999999999 INVITE"}, ("cseq",)),
    ("unterminated-quote-in-to", lambda port: {"To": f'"Unterminated <sip:ng911@{HOST}:{port}>'}, ("quot",)),
    ("missing-call-id", lambda port: {"Call-ID": None}, ("call-id",)),
]


def _to_tag(resp) -> str | None:
    m = re.search(r";\s*tag\s*=\s*([^;>\s]+)", resp.get("to") or "")
    return m.group(1) if m else None


def _still_serving(agent, sip_probe, sipp, transport: str) -> None:
    with sip_probe(transport, agent.port) as probe:
        resp = probe.exchange("OPTIONS")
        assert resp.status == 200, resp.raw
    res = sipp.run("uac", remote=agent.target, transport="t1" if transport == "tcp" else "u1", calls=1, timeout=20)
    assert res.returncode == 0 and (res.successful, res.failed) == (1, 0), res.summary()
    assert agent.alive()
    assert_clean(agent)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name,overrides,words", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request_gets_400_naming_the_problem(ua, sip_probe, sipp, transport, name, overrides, words):
    agent = ua.answer()
    probe = sip_probe(transport, agent.port)
    data, call_id = probe.request("INVITE", headers=overrides(agent.port))
    probe.send(data)
    resp = probe.response(5.0)  # a fresh socket/connection: the next final response is ours
    assert resp.status == 400, resp.raw
    assert any(w in resp.reason.lower() for w in words), f"reason {resp.reason!r} names none of {words}"
    # routable back: our Via (branch) and the dialog identifiers are echoed
    sent_branch = re.search(r"branch=(z9hG4bK\w+)", data.decode()).group(1)  # type: ignore[union-attr]
    assert sent_branch in (resp.get("via") or ""), resp.raw
    if name != "missing-call-id":
        assert resp.get("call-id") == call_id
    assert not agent.named("invite"), "a malformed INVITE reached the application"
    probe.close()
    _still_serving(agent, sip_probe, sipp, transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unknown_method_gets_501_with_allow(ua, sip_probe, transport):
    agent = ua.answer()
    with sip_probe(transport, agent.port) as probe:
        resp = probe.exchange("FROBNICATE")
    assert resp.status == 501, resp.raw
    assert {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"} <= resp.tokens("allow"), resp.raw
    assert "FROBNICATE" not in resp.tokens("allow")
    assert agent.alive()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_register_gets_405_with_allow(ua, sip_probe, transport):
    agent = ua.answer()
    with sip_probe(transport, agent.port) as probe:
        resp = probe.exchange("REGISTER", uri=f"sip:{HOST}:{agent.port}",
                              extra=[f"Contact: <sip:probe@{HOST}:{probe.port}>", "Expires: 60"])
    assert resp.status == 405, resp.raw
    allow = resp.tokens("allow")
    assert "INVITE" in allow and "REGISTER" not in allow, resp.raw
    assert agent.alive()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_bye_for_unknown_dialog_gets_481(ua, sip_probe, transport):
    agent = ua.answer()
    with sip_probe(transport, agent.port) as probe:
        to = f"<sip:ng911@{HOST}:{agent.port}>;tag={secrets.token_hex(4)}"
        resp = probe.exchange("BYE", headers={"To": to})
    assert resp.status == 481, resp.raw
    assert resp.get("to") == to  # a To tag in the request is echoed unchanged (§8.2.6.2)
    assert not agent.named("terminated")
    assert agent.alive()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_options_out_of_dialog_gets_200_with_allow_and_supported(ua, sip_probe, transport):
    agent = ua.answer()
    with sip_probe(transport, agent.port) as probe:
        data, call_id = probe.request("OPTIONS", extra=["Accept: application/sdp"])
        probe.send(data)
        resp = probe.response(5.0, call_id=call_id)
    assert resp.status == 200, resp.raw
    assert {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"} <= resp.tokens("allow"), resp.raw
    assert resp.get("supported") is not None, resp.raw
    assert _to_tag(resp), "a 200 must carry a To tag"
    assert resp.get("cseq") == "1 OPTIONS"


# RFC 3261 §8.2.6.2: a UAS response (other than 100) to a request without a To tag MUST add one.
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "method,overrides,status",
    [
        pytest.param("REGISTER", {}, 405, id="405"),
        pytest.param("FROBNICATE", {}, 501, id="501"),
        pytest.param("INVITE", {"Call-ID": None}, 400, id="400-missing-call-id"),
        # the pre-parse 400 (badrequest.best_effort_400) for a request the parser rejects
        pytest.param("INVITE", {"CSeq": "99999999999 INVITE"}, 400, id="400-unparseable"),
    ],
)
def test_final_response_adds_to_tag(ua, sip_probe, transport, method, overrides, status):
    agent = ua.answer()
    with sip_probe(transport, agent.port) as probe:
        data, _ = probe.request(method, headers=overrides)
        probe.send(data)
        resp = probe.response(5.0)
    assert resp.status == status, resp.raw
    assert _to_tag(resp), f"{status} without a To tag: {resp.get('to')!r}"
