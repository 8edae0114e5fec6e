"""Interop with SIPp over loopback: ng911's UA against SIPp's built-in and custom scenarios.

Every test runs real processes (``ng911 ua`` and ``sipp``) and asserts what each side reports:
SIPp's exit status and its statistics (successful / failed calls), the agent's exit status,
its closing "N passed, M failed" line and its JSON events.
"""
from __future__ import annotations

import re
import socket
import time

import pytest

from .conftest import HOST, assert_clean

pytestmark = pytest.mark.integration

TRANSPORTS = [pytest.param("udp", id="udp"), pytest.param("tcp", id="tcp")]
SIPP_T = {"udp": "u1", "tcp": "t1"}


def _target(port: int, transport: str) -> str:
    return f"sip:svc@{HOST}:{port}" + (";transport=tcp" if transport == "tcp" else "")


def _sipp_uac_calls(sipp, agent, *, transport: str = "udp", calls: int, rate: float = 20, extra=(), timeout: float = 30):
    return sipp.run("uac", *extra, remote=agent.target, transport=SIPP_T[transport], calls=calls,
                    rate=rate, timeout=timeout)


def _assert_sipp_ok(res, calls: int) -> None:
    assert res.returncode == 0, res.summary()
    assert (res.successful, res.failed) == (calls, 0), res.summary()


def _assert_caller_ok(caller, rc: int, calls: int) -> None:
    assert rc == 0, f"rc={rc}\n" + "\n".join(caller.lines[-20:]) + caller.stderr_text()[-2000:]
    assert caller.lines[-1] == f"{calls} passed, 0 failed", caller.lines[-20:]


# --- 1. plain calls, both directions ------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sipp_uac_calls_ng911_answer(ua, sipp, transport):
    agent = ua.answer()
    res = _sipp_uac_calls(sipp, agent, transport=transport, calls=20, rate=20)
    _assert_sipp_ok(res, 20)
    # the agent saw each call set up and torn down by the caller's BYE
    agent.wait_event("terminated", 5, lambda e: len(agent.named("terminated")) >= 20)
    assert len(agent.named("confirmed")) == 20
    assert {e["reason"] for e in agent.named("terminated")} == {"remote BYE"}
    assert agent.alive()
    assert_clean(agent)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ng911_call_to_sipp_uas(ua, sipp, transport):
    server = sipp.start("uas", transport=SIPP_T[transport], calls=20, timeout=40)
    server.wait_bound()
    caller = ua.call(_target(server.port, transport), "--calls", "20", "--rate", "20", "--duration", "0.2",
                     "--timeout", "30")
    rc = caller.wait_exit(45)
    res = server.wait(30)
    _assert_caller_ok(caller, rc, 20)
    _assert_sipp_ok(res, 20)
    assert len(caller.named("answered")) == 20
    assert {e["reason"] for e in caller.named("terminated")} == {"local BYE"}
    assert_clean(caller)


# --- 2. retransmissions under 10 % loss (UDP) -----------------------------------------------------
#
# SIPp's -lost 10 drops 10 % of the messages it sends and receives. Each call still completes
# because both sides retransmit (SIPp: INVITE/BYE every 500 ms, 200 until ACK; ng911: Timer A,
# 2xx until ACK, Timer E). A call fails only if one message is lost ~6 times running
# (p ≈ 0.19^6 ≈ 5e-5 per transaction), so 30 calls make a spurious failure very unlikely.

LOSSY_CALLS = 30


def test_sipp_uac_with_loss_ng911_answer(ua, sipp):
    agent = ua.answer()
    res = _sipp_uac_calls(sipp, agent, calls=LOSSY_CALLS, rate=15, extra=("-lost", "10"), timeout=60)
    _assert_sipp_ok(res, LOSSY_CALLS)
    assert res.retransmissions > 0, "no message was lost: -lost had no effect?\n" + res.summary()
    assert agent.alive()
    assert_clean(agent)


def test_ng911_call_with_loss_to_sipp_uas(ua, sipp):
    server = sipp.start("uas_lossy.xml", "-lost", "10", calls=LOSSY_CALLS, timeout=60, trace_msg=True)
    server.wait_bound()
    caller = ua.call(_target(server.port, "udp"), "--calls", str(LOSSY_CALLS), "--rate", "15",
                     "--duration", "1", "--timeout", "50", options=("--trace",))
    rc = caller.wait_exit(60)
    res = server.wait(40)
    failed = [e["call_id"] for e in caller.named("failed")]
    diag = f"failed calls {failed}; logs in {res.workdir.parent}\n{res.summary()}"
    assert rc == 0 and caller.lines[-1] == f"{LOSSY_CALLS} passed, 0 failed", f"{caller.lines[-3:]}\n{diag}"
    _assert_sipp_ok(res, LOSSY_CALLS)
    assert res.messages is not None and "message lost (recv)" in res.messages.read_text(errors="replace"), \
        "SIPp dropped none of our messages: -lost had no effect?"
    assert_clean(caller)


def _reply(request: str, status: str, *, to_tag: str, contact: str, body: str = "") -> bytes:
    """A response to ``request`` (text) from the hand-written UAS below."""
    def hdr(name: str) -> str:
        return re.search(rf"(?im)^{name}:[ \t]*(.*?)\r?$", request).group(1)  # type: ignore[union-attr]
    to = hdr("To") if "tag=" in hdr("To") else f"{hdr('To')};tag={to_tag}"
    lines = [f"SIP/2.0 {status}", *(f"Via: {v}" for v in re.findall(r"(?im)^via:[ \t]*(.*?)\r?$", request)),
             f"From: {hdr('From')}", f"To: {to}", f"Call-ID: {hdr('Call-ID')}", f"CSeq: {hdr('CSeq')}",
             f"Contact: <{contact}>"]
    if body:
        lines.append("Content-Type: application/sdp")
    lines += [f"Content-Length: {len(body)}", "", ""]
    return ("\r\n".join(lines) + body).encode()


def test_ng911_call_bye_is_retransmitted_before_exit(ua):
    """A UAS that drops the first BYE: the caller must retransmit it (Timer E, T1 = 0.5 s) and
    get its 200 before it reports the call passed and exits."""
    sdp = f"v=0\r\no=- 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"
    byes = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as uas:
        uas.bind((HOST, 0))
        uas.settimeout(0.2)
        me = f"sip:uas@{HOST}:{uas.getsockname()[1]}"
        caller = ua.call(me, "--calls", "1", "--duration", "0.2",
                         "--timeout", "20")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (caller.alive() or byes == 0):
            try:
                data, addr = uas.recvfrom(65535)
            except socket.timeout:
                continue
            text = data.decode("utf-8", "replace")
            if text.startswith("INVITE "):
                uas.sendto(_reply(text, "200 OK", to_tag="uas1", contact=me, body=sdp), addr)
            elif text.startswith("BYE "):
                byes += 1
                if byes >= 2:  # drop the first BYE, answer its retransmission
                    uas.sendto(_reply(text, "200 OK", to_tag="uas1", contact=me), addr)
        rc = caller.wait_exit(15)
    assert rc == 0 and caller.lines[-1] == "1 passed, 0 failed", caller.lines[-5:]
    assert byes >= 2, f"the BYE was sent {byes} time(s): the caller exited without retransmitting it"


# --- 3. CANCEL before answer ----------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sipp_cancels_ringing_ng911(ua, sipp, transport):
    """SIPp INVITEs, gets 180, CANCELs: expects 200 (CANCEL), 487 (INVITE), ACKs the 487."""
    agent = ua.answer("--ring", "10")
    res = sipp.run("uac_cancel.xml", remote=agent.target, transport=SIPP_T[transport], calls=5, rate=10,
                   timeout=20)
    _assert_sipp_ok(res, 5)
    agent.wait_event("terminated", 5, lambda e: len(agent.named("terminated")) >= 5)
    cancelled = {e["call_id"] for e in agent.named("cancelled")}
    invited = {e["call_id"] for e in agent.named("invite")}
    assert len(invited) == 5 and cancelled == invited
    assert {e["reason"] for e in agent.named("terminated")} == {"cancelled"}
    assert not agent.named("confirmed")
    assert agent.alive()
    assert_clean(agent)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ng911_cancels_ringing_sipp(ua, sipp, transport):
    """ng911 CANCELs 0.5 s after the INVITE; SIPp (ringing) answers 200/487 and gets the ACK."""
    server = sipp.start("uas_cancel.xml", transport=SIPP_T[transport], calls=5, timeout=30)
    server.wait_bound()
    caller = ua.call(_target(server.port, transport), "--calls", "5", "--rate", "10", "--cancel-after", "0.5",
                     "--timeout", "20")
    rc = caller.wait_exit(30)
    res = server.wait(20)
    _assert_caller_ok(caller, rc, 5)
    _assert_sipp_ok(res, 5)
    failed = caller.named("failed")
    assert len(failed) == 5 and all(e["expected"] and e["reason"].startswith("487") for e in failed), failed
    assert not caller.named("answered")
    assert_clean(caller)


# --- 4. delayed offer -----------------------------------------------------------------------------


def _messages(log: str) -> list[str]:
    """SIPp's -trace_msg log cut into SIP messages. Each entry is a dashed timestamp line, a
    "UDP message received [n] bytes :" (or "sent") line, a blank line, then the message."""
    out = []
    for entry in re.split(r"^-{10,} .*$", log, flags=re.M):
        m = re.match(r"\s*\S+ message (?:sent|received) .*?:\s*\n\s*\n?(.*)", entry, flags=re.S)
        if m:
            out.append(m.group(1).strip("\r\n"))
    return out


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ng911_delayed_offer_to_sipp_uas(ua, sipp, transport):
    """INVITE without SDP; SIPp's uas offers in its 200; ng911 answers in the ACK."""
    server = sipp.start("uas", transport=SIPP_T[transport], calls=3, timeout=30, trace_msg=True)
    server.wait_bound()
    caller = ua.call(_target(server.port, transport), "--calls", "3", "--delayed-offer", "--duration", "0.2",
                     "--timeout", "20")
    rc = caller.wait_exit(30)
    res = server.wait(20)
    _assert_caller_ok(caller, rc, 3)
    _assert_sipp_ok(res, 3)
    assert res.messages is not None
    msgs = _messages(res.messages.read_text(errors="replace"))
    invites = [m for m in msgs if m.startswith("INVITE ")]
    acks = [m for m in msgs if m.startswith("ACK ")]
    assert invites and acks, msgs[:4]
    for m in invites:
        assert re.search(r"(?im)^(content-length|l)\s*:\s*0\s*$", m), m
    for m in acks:
        assert re.search(r"(?im)^(content-type|c)\s*:\s*application/sdp", m), m
        assert "\nv=0" in m and "\nm=audio " in m, m
    assert_clean(caller)
