"""`ng911 serve` started while PostgreSQL is unreachable (issue 7, item 7): it opens SIP and
takes an emergency call anyway, says it runs degraded (serving line, ``ng911_store_up``,
``ng911 status``), and once the database answers registers its node and writes the call's
complete log.

The node reaches PostgreSQL through a TCP proxy that is closed when it starts (connections
refused) and opened after the call has ended; the schema was migrated beforehand, directly.
"""
from __future__ import annotations

import json
import subprocess

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ng911.store import models
from tests.integration.conftest import wait_until
from tests.integration.store.tcpproxy import TcpProxy

from .conftest import NG911, Ap, expect_rc

pytestmark = pytest.mark.integration

FULL_LOG = ["received", "routing", "ap_invite", "ap_ringing", "answered", "caller_hangup", "ended"]


def _status(node) -> tuple[int, dict]:
    res = subprocess.run([NG911, "status", "--config", str(node.config), "--json"], capture_output=True,
                         text=True, timeout=60, env=node.env, stdin=subprocess.DEVNULL)
    return res.returncode, json.loads(res.stdout)


def test_serve_starts_degraded_takes_a_call_and_writes_its_log_when_the_database_returns(
        node_factory, sipp, db_url):
    u = make_url(db_url)
    proxy = TcpProxy(u.host or "127.0.0.1", u.port or 5432)
    proxy.restore()
    proxy.cut()  # closed: the node's connections are refused until restore()
    try:
        proxied = u.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
        ap1 = Ap("ap1")
        ap = sipp.ap("ap_answer.xml", ap1, calls=1, timeout=60)
        node = node_factory.start([ap1], db_url=proxied)  # migrated directly; serves through the proxy
        serving = node.wait_serving()
        assert (serving["store"], serving["epoch"]) == ("degraded", None)
        assert node.metric("ng911_store_up") == 0
        rc, status = _status(node)
        assert rc == 4 and status["database"] == "unreachable"
        assert status["node"]["running"] and status["node"]["store"] == "degraded"

        caller = sipp.caller("caller_basic.xml", node, calls=1, hold_ms=1000, timeout=30)
        expect_rc(caller, 0, 40)  # answered, talked, hung up: all while the database is down
        expect_rc(ap, 97, 30)
        assert node.all_calls() == []  # nothing reached the database
        with node.engine.connect() as conn:
            assert conn.execute(sa.select(models.nodes)).all() == []
        wait_until(lambda: node.metric("ng911_store_queue_depth") > 0, 10, "writes queued")

        proxy.restore()
        wait_until(lambda: node.metric("ng911_store_up") == 1, 30, "ng911_store_up == 1")
        wait_until(lambda: node.metric("ng911_store_queue_depth") == 0, 30, "the store queue to drain")
        calls = node.wait_ended(1, timeout=20)
        with node.engine.connect() as conn:
            nodes = [tuple(r) for r in conn.execute(sa.select(models.nodes.c.name, models.nodes.c.epoch))]
        assert nodes == [("it", 1)]
        (call,) = calls
        assert (call["kind"], call["outcome"], call["answer_point"]) == ("emergency", "answered", "ap1")
        assert (call["owner_node"], call["owner_epoch"]) == ("it", 1)  # the placeholder resolved
        assert call["sip_call_id"] == caller.sent("INVITE")[0].header("Call-ID")
        assert node.kinds(call["call_id"]) == FULL_LOG
        legs = node.store().call(call["call_id"])["legs"]
        assert set(legs) == {"upstream", "psap"}
        rc, status = _status(node)
        assert rc == 0 and status["node"]["store"] == "up" and status["database"] == "up"
        assert node.metric("ng911_store_fenced_writes_total") == 0
        log = node.log_records()
        assert any("running degraded" in r.get("msg", r.get("message", "")) for r in log), log[:20]
        assert any("registered with epoch 1" in r.get("msg", r.get("message", "")) for r in log)
        # the only complaints in the log are the store's, about the outage
        bad = [r for r in log if r.get("level") in ("error", "critical")
               and not r.get("logger", "").startswith("ng911.store")]
        assert not bad, bad[:5]
    finally:
        proxy.cut()


def test_serve_still_refuses_a_reachable_database_whose_schema_is_behind(node_factory, db_url):
    config, _, _ = node_factory.write_config([Ap("ap1")])
    res = subprocess.run([NG911, "serve", "--config", str(config)], capture_output=True, text=True, timeout=60,
                         env={**__import__("os").environ, "NG911_DATABASE_URL": db_url}, stdin=subprocess.DEVNULL)
    assert res.returncode == 3, res.stderr
    assert "ng911 migrate" in res.stderr
