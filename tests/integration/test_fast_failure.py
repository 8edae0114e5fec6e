"""A dead position's fast signals move its call: the ICMP port unreachable its kernel sends for a
UDP datagram to its closed port (RFC 3261 §18.4, read through IP_RECVERR), and the TCP
connection its kernel closes.

Real processes over loopback: ``ng911 serve`` (PostgreSQL), SIPp answer points (the answering one
killed with kill -9 mid-call), a SIPp caller that must get a re-INVITE and never a BYE. The
probe timeouts are set so that timeouts alone would move the call later than the caller waits
for its re-INVITE (20 s): only a fast signal can move it in time; the tests assert what moved it (the failover reason,
the node's log), never how fast: the timings are bench/bench_failover.py's.
"""
from __future__ import annotations

import re

import pytest

from tests.integration.controller.conftest import (  # noqa: F401  (fixtures)
    Ap,
    Node,
    db_url,
    expect_rc,
    node_config,
    node_factory,
    sipp,
)
from tests.integration.conftest import free_port
from tests.pg import pg_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

SLOW = 30.0  # any probe timeout: longer than the caller's 20 s wait for its re-INVITE


def start_node(factory, aps: list[Ap], *, options_interval: float, in_dialog_interval: float,
               options_timeout: float = SLOW) -> Node:
    sip_port, metrics_port = free_port(), free_port()
    text = node_config(name="fast", sip_port=sip_port, metrics_port=metrics_port, api_port=free_port(), aps=aps)
    for old, new in ((r"options_interval = \S+", f"options_interval = {options_interval}"),
                     (r"options_timeout = \S+", f"options_timeout = {options_timeout}"),
                     (r"in_dialog_options_interval = \S+", f"in_dialog_options_interval = {in_dialog_interval}")):
        text, n = re.subn(rf"(?m)^{old}$", new, text)
        assert n == 1, old
    config = factory.workdir / "fast.toml"
    config.write_text(text)
    factory.migrate(config, factory.db_url)
    node = Node(factory.workdir, config, factory.db_url, sip_port, metrics_port)
    factory.nodes.append(node)
    node.wait_serving()
    return node


def wait_talking(node: Node, ap: str) -> dict:
    (call,) = node.wait_calls(lambda cs: len(cs) == 1 and cs[0]["state"] == "talking" and cs[0]["answer_point"] == ap,
                              15.0, f"the call talking to {ap}")
    return call


def moved_by(node: Node, call_id: str) -> str:
    """The failover reason of the call's single move (ap1 -> ap2), after the caller hung up."""
    (row,) = node.wait_ended(1)
    assert row["call_id"] == call_id and row["answer_point"] == "ap2" and row["outcome"] == "answered"
    events = node.events(call_id)
    kinds = [e["kind"] for e in events]
    assert kinds.count("failover") == 1 and kinds.count("moved") == 1, kinds
    assert "ap_hangup" not in kinds
    failover = events[kinds.index("failover")]["data"]
    assert failover["answer_point"] == "ap1"
    return failover["reason"]


def caller_moved_once(caller) -> None:
    received = [m for m in caller.messages() if m.direction == "received" and m.is_request]
    assert [m.method for m in received if m.method == "BYE"] == [], "the caller got a BYE"
    assert len([m for m in received if m.method == "INVITE"]) == 1  # one re-INVITE


def log_messages(node: Node) -> list[str]:
    return [str(r.get("msg", "")) for r in node.log_records()]


def test_udp_in_dialog_probe_of_a_killed_position_fails_over_on_its_icmp_port_unreachable(node_factory, sipp):
    """Health probes effectively off (one per hour); the PSAP leg's in-dialog OPTIONS, every
    second, reach a closed port: the ICMP error fails the request at once and moves the call."""
    ap1, ap2 = Ap("ap1"), Ap("ap2")
    a1 = sipp.ap("ap_answer.xml", ap1)
    a2 = sipp.ap("ap_offerless.xml", ap2)
    node = start_node(node_factory, [ap1, ap2], options_interval=3600, in_dialog_interval=1.0)
    caller = sipp.caller("caller_moved.xml", node, hold_ms=500, timeout=40)
    call = wait_talking(node, "ap1")
    a1.kill9()
    expect_rc(caller, 0, 45)  # re-INVITE within its 20 s wait, answered, ACKed; no BYE
    expect_rc(a2, 97, 20)
    caller_moved_once(caller)
    assert moved_by(node, call["call_id"]) == "transport_error"
    assert any("port unreachable" in m and str(ap1.port) in m for m in log_messages(node))
    node.assert_clean()


def test_udp_health_probe_of_a_killed_position_marks_it_down_on_its_icmp_port_unreachable(node_factory, sipp):
    """No in-dialog probe; out-of-dialog OPTIONS every 10 s with a 10 s timeout, down after two
    failures (timeouts alone: down 20 s or more after the kill, past the caller's wait): the probe
    that meets the closed port fails at once, the confirming one too, down, the call moves."""
    ap1, ap2 = Ap("ap1"), Ap("ap2")
    a1 = sipp.ap("ap_answer.xml", ap1)
    a2 = sipp.ap("ap_offerless.xml", ap2)
    node = start_node(node_factory, [ap1, ap2], options_interval=10.0, options_timeout=10.0, in_dialog_interval=0)
    caller = sipp.caller("caller_moved.xml", node, hold_ms=500, timeout=40)
    call = wait_talking(node, "ap1")
    a1.kill9()
    expect_rc(caller, 0, 45)
    expect_rc(a2, 97, 20)
    caller_moved_once(caller)
    # ap_down, or transport_error: the probe's ICMP error is a transport error for every request
    # to that address, the answered INVITE's lingering transaction too (RFC 6026), whose
    # failure fails the session — whichever comes first, the ICMP error moved the call
    assert moved_by(node, call["call_id"]) in ("ap_down", "transport_error")
    messages = log_messages(node)
    assert "answer point ap1 is DOWN" in messages
    assert any("port unreachable" in m and str(ap1.port) in m for m in messages)
    node.assert_clean()


def test_tcp_position_killed_closes_its_connection_and_is_probed_at_once(node_factory, sipp):
    """Positions on TCP, health probes effectively off, no in-dialog probe: the only thing that
    can notice the death is the connection the position's kernel closes. It gets the position
    probed at once; the new connection is refused, twice; down; the call moves."""
    ap1, ap2 = Ap("ap1", transport="tcp"), Ap("ap2", transport="tcp")
    a1 = sipp.ap("ap_answer.xml", ap1)
    a2 = sipp.ap("ap_offerless.xml", ap2)
    node = start_node(node_factory, [ap1, ap2], options_interval=3600, in_dialog_interval=0)
    caller = sipp.caller("caller_moved.xml", node, hold_ms=500, timeout=40)
    call = wait_talking(node, "ap1")
    a1.kill9()
    expect_rc(caller, 0, 45)
    expect_rc(a2, 97, 20)
    caller_moved_once(caller)
    # ap_down, or transport_error: the refused probe's connection is a transport error for
    # every request to that address, the answered INVITE's lingering transaction too
    assert moved_by(node, call["call_id"]) in ("ap_down", "transport_error")
    messages = log_messages(node)
    assert "answer point ap1 is DOWN" in messages
    assert any(m.startswith("answer point ap1: TCP connection closed by the far end") for m in messages)
    node.assert_clean()
