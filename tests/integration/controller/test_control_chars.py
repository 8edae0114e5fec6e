"""Issue 7, item 6: control characters from the caller side cannot take a call (or the node) down.

A real ``ng911 serve`` (PostgreSQL), SIPp callers and a SIPp answer point over 127.0.0.1:

- an INVITE with a raw NUL in its Call-ID gets a 400 whose reason says so, and goes no further
  (no call row, nothing at the answer point); its ACK, unparseable too, is dropped;
- an INVITE whose quoted display name holds an escaped NUL (backslash, NUL: a legal quoted-pair)
  is routed; the answer point gets a From display name without the control character (and no
  NUL anywhere), and the call completes and is stored;
- the node then takes an ordinary call.

Lives beside the controller tests for their fixtures (node_factory, sipp) in this directory's
conftest. Waits are bounded by process exits and database states, never by sleeps.
"""
from __future__ import annotations

import pytest

from .conftest import Ap, expect_rc

pytestmark = pytest.mark.integration


def test_nul_in_call_id_is_400_and_escaped_nul_in_display_name_is_routed_clean(node_factory, sipp):
    ap1 = Ap("ap1")
    ap = sipp.ap("ap_answer.xml", ap1, calls=2, timeout=60)
    node = node_factory.start([ap1])

    # 1. raw NUL in the Call-ID: 400 naming it; the node stores nothing, rings nobody
    bad = sipp.caller("caller_nul_call_id.xml", node)
    expect_rc(bad, 0, 30)
    finals = [m for m in bad.messages() if m.direction == "received" and not m.is_request]
    assert [m.start_line for m in finals if m.status >= 200] == ["SIP/2.0 400 Control character in Call-ID"], bad.summary()
    (four_hundred,) = [m for m in finals if m.status == 400]
    assert b"\x00" not in four_hundred.raw
    assert node.all_calls() == []
    assert ap.received("INVITE") == []

    # 2. escaped NUL in the quoted display name: routed, the position sees a clean From
    good = sipp.caller("caller_quoted_nul.xml", node)
    expect_rc(good, 0, 30)

    # 3. and the node goes on serving
    plain = sipp.caller("caller_basic.xml", node)
    expect_rc(plain, 0, 30)
    expect_rc(ap, 97, 30)  # both calls answered and hung up at the answer point

    first, second = ap.received("INVITE")
    assert first.header("From").startswith("Caller One <sip:+15550001@127.0.0.1:"), first.header("From")
    assert second.header("From").startswith("Caller 1 <sip:+15550001@127.0.0.1:"), second.header("From")
    for msg in ap.messages():
        assert b"\x00" not in msg.raw, msg.raw[:400]

    calls = node.wait_ended(2, timeout=30)
    assert [c["outcome"] for c in calls] == ["answered", "answered"], calls
    assert "\x00" not in repr(calls), calls  # stored, and without a raw NUL (PostgreSQL refuses one)
    assert node.metric("ng911_calls_total", outcome="answered") == 2
    assert node.proc.poll() is None
    node.assert_clean()
