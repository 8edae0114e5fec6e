"""Issue 9 against a real node: knowing a call's Call-ID and tags is not enough. A BYE and a REFER
with the right tags, from another loopback address, get 403 while the call carries on; a
position's REFER to a target that is not allow-listed gets 403 and the call stays with it."""
from __future__ import annotations

import secrets
import socket
from typing import Any

import pytest

from tests.integration.conftest import wait_until

from .conftest import HOST, Ap, expect_rc

pytestmark = pytest.mark.integration

STRANGER = "127.0.0.2"


def talking_legs(node: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stored upstream and PSAP dialogs of the node's one talking call."""
    box: list[dict[str, Any]] = []

    def talking() -> bool:
        calls = node.all_calls()
        if len(calls) != 1 or calls[0]["state"] != "talking":
            return False
        row = node.store().call(calls[0]["call_id"])
        legs = row["legs"]
        if not (legs.get("upstream", {}).get("dialog") and legs.get("psap", {}).get("dialog")):
            return False
        box[:] = [legs["upstream"]["dialog"], legs["psap"]["dialog"]]
        return True

    wait_until(talking, 20, "a talking call with both dialogs stored")
    return box[0], box[1]


def forged(method: str, dialog: dict[str, Any], node_port: int, src_port: int, extra: str = "") -> bytes:
    """``method`` inside ``dialog`` (as the node stored it) worded as its peer would send it."""
    peer_uri, our_uri = dialog["remote_uri"], dialog["local_uri"]
    return (f"{method} sip:ng911@{HOST}:{node_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {STRANGER}:{src_port};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: {peer_uri};tag={dialog['remote_tag']}\r\n"
            f"To: {our_uri};tag={dialog['local_tag']}\r\n"
            f"Call-ID: {dialog['call_id']}\r\n"
            f"CSeq: 9999 {method}\r\n"
            f"Contact: <sip:evil@{STRANGER}:{src_port}>\r\n"
            f"{extra}Content-Length: 0\r\n\r\n").encode()


def final_status(sock: socket.socket) -> int:
    """The first final status the node sends back to the stranger."""
    sock.settimeout(5.0)
    while True:
        data, _ = sock.recvfrom(65535)
        status = int(data.split(b" ", 2)[1])
        if status >= 200:
            return status


def test_a_stranger_with_the_right_tags_cannot_end_or_transfer_the_call(node_factory, sipp):
    ap1, ap2 = Ap("ap1"), Ap("ap2")
    a1 = sipp.ap("ap_answer.xml", ap1, timeout=40)
    node = node_factory.start([ap1, ap2], trusted=("127.0.0.0/8",))  # the stranger is even "trusted"
    caller = sipp.caller("caller_basic.xml", node, hold_ms=6000, timeout=40)
    upstream, psap = talking_legs(node)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((STRANGER, 0))
        port = sock.getsockname()[1]
        sock.sendto(forged("BYE", upstream, node.sip_port, port), (HOST, node.sip_port))
        assert final_status(sock) == 403
        refer_to = f"Refer-To: <sip:attacker@{STRANGER}:5099>\r\n"
        sock.sendto(forged("REFER", psap, node.sip_port, port, refer_to), (HOST, node.sip_port))
        assert final_status(sock) == 403

    # the call carried on to the caller's own hang-up: no BYE toward either party before it
    expect_rc(caller, 0, 40)
    expect_rc(a1, 97, 20)
    assert caller.received("BYE") == [] and len(a1.received("BYE")) == 1
    (row,) = node.wait_ended(1)
    assert row["end_reason"] == "caller_hangup" and row["answer_point"] == "ap1"
    kinds = node.kinds(row["call_id"])
    assert kinds.count("stranger_refused") == 2 and "transfer" not in kinds, kinds
    assert node.metric("ng911_sip_dialog_strangers_total", method="BYE", leg="upstream") == 1
    assert node.metric("ng911_sip_dialog_strangers_total", method="REFER", leg="psap") == 1
    node.assert_clean()


def test_a_refer_to_a_target_not_allowed_is_refused_and_the_call_kept(node_factory, sipp):
    ap1 = Ap("ap1")
    a1 = sipp.ap("ap_refer_forbidden.xml", ap1, keys={"refer_to": f"sip:someone@{STRANGER}:5099"})
    node = node_factory.start([ap1])
    caller = sipp.caller("caller_basic.xml", node, hold_ms=2500)
    expect_rc(caller, 0, 30)
    expect_rc(a1, 97, 20)  # got 403, then the caller's BYE
    assert caller.received("INVITE") == [] and caller.received("BYE") == []
    (row,) = node.wait_ended(1)
    assert row["outcome"] == "answered" and row["answer_point"] == "ap1"
    kinds = node.kinds(row["call_id"])
    assert "transfer_refused" in kinds and "transfer" not in kinds and "moved" not in kinds, kinds
    assert node.metric("ng911_sip_refer_refused_total") == 1
    node.assert_clean()
