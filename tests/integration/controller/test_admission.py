"""5. Abandoned call (CANCEL while ringing) -> callback list; 9. an untrusted source gets 403;
10. a bad config stops `ng911 serve` with exit 2 and one line naming the key, an unmigrated
PostgreSQL database with exit 3 and the advice to run `ng911 migrate`."""
from __future__ import annotations

import os
import subprocess

import pytest

from tests.integration.conftest import port_bound

from .conftest import NG911, Ap, expect_rc

pytestmark = pytest.mark.integration


def test_caller_cancels_while_ringing_is_an_abandoned_call(node_factory, sipp):
    ap1 = Ap("ap1", ring_timeout=8.0)  # rings longer than the caller waits
    ap = sipp.ap("ap_ring_cancel.xml", ap1)
    node = node_factory.start([ap1])
    caller = sipp.caller("caller_cancel.xml", node, hold_ms=800)
    expect_rc(caller, 0, 30)  # 180, CANCEL -> 200 + 487, ACK
    expect_rc(ap, 97, 20)  # the node CANCELled the answer point's INVITE: 200, 487, ACK

    statuses = [m.status for m in caller.messages() if m.direction == "received" and not m.is_request]
    assert 180 in statuses and 487 in statuses and 200 in statuses
    assert len(ap.received("CANCEL")) >= 1 and not ap.received("BYE")

    (call,) = node.wait_ended(1)
    assert call["outcome"] == "abandoned" and call["answered_at"] is None
    kinds = node.kinds(call["call_id"])
    assert kinds[:4] == ["received", "routing", "ap_invite", "ap_ringing"]
    assert kinds[-2:] == ["abandoned", "ended"]
    (row,) = node.store().abandoned_calls()
    assert row["call_id"] == call["call_id"] and row["called_back_at"] is None
    assert "sip:+15550001@127.0.0.1" in row["caller"]
    assert node.metric("ng911_calls_total", kind="emergency", outcome="abandoned") == 1
    assert node.metric("ng911_abandoned_calls_total") == 1
    assert node.metric("ng911_calls_total", outcome="answered") == 0
    node.assert_clean()


def test_untrusted_source_gets_403(node_factory, sipp):
    ap1 = Ap("ap1")
    ap = sipp.ap("ap_answer.xml", ap1, timeout=20)
    node = node_factory.start([ap1], trusted=("127.0.0.2/32",))
    caller = sipp.caller("caller_refused.xml", node)  # from 127.0.0.1
    expect_rc(caller, 0, 30)
    (final,) = [m for m in caller.messages() if m.direction == "received" and not m.is_request and m.status >= 200]
    assert final.status == 403
    # nothing reached the answer point, nothing was stored as a call
    assert ap.received("INVITE") == [] and ap.returncode is None
    assert node.all_calls() == []
    assert node.metric("ng911_calls_total", outcome="rejected") == 1
    assert node.metric("ng911_active_calls") == 0
    node.assert_clean()


BAD_VALUES = [
    # (original line, replacement, key named in the error)
    pytest.param("ring_timeout = 4.0\nno_provisional_timeout = 1.0\ncapacity = 1\n\n[health]",
                 "ring_timeout = -1\nno_provisional_timeout = 1.0\ncapacity = 1\n\n[health]",
                 "queues[0].answer_points[1].ring_timeout", id="negative-ring-timeout"),
    pytest.param("options_timeout = 0.5", "options_timeout = 0.5\ninterval = 2.0", "health.interval",
                 id="unknown-key"),
    pytest.param('trusted = ["127.0.0.0/8"]', 'trusted = ["127.0.0.1/8"]', "upstream.trusted", id="host-bits-set"),
]


@pytest.mark.parametrize("old, new, key", BAD_VALUES)
def test_bad_config_exits_2_naming_the_key(node_factory, old, new, key):
    path, sip_port, _ = node_factory.write_config([Ap("ap1"), Ap("ap2")])
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))
    res = subprocess.run([NG911, "serve", "--config", str(path)], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and key in lines[0], res.stderr
    assert res.stdout == ""  # never "serving"
    assert not port_bound(sip_port, "udp")


def test_unmigrated_database_exits_3_telling_to_migrate(node_factory, db_url):
    path, sip_port, _ = node_factory.write_config([Ap("ap1")])
    res = subprocess.run([NG911, "serve", "--config", str(path)], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                         env={**os.environ, "NG911_DATABASE_URL": db_url})
    assert res.returncode == 3, (res.returncode, res.stdout, res.stderr)
    assert f"ng911 migrate --config {path}" in res.stderr, res.stderr
    assert res.stdout == ""
    assert not port_bound(sip_port, "udp")
