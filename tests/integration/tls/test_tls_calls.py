"""SIP over TLS end to end: real ``ng911 serve`` and ``ng911 ua`` processes over 127.0.0.1.

Mutual TLS accepted; a certificate from another CA and no certificate refused at the handshake
(no call, counted); trust by certificate identity (403 for the wrong name, and for a plain UDP
INVITE when ``require_tls``); failover between answer points reached over TLS without a BYE to
the caller; /metrics over HTTPS."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import HOST
from tests.tlscerts import issue

from .conftest import NG911, Ap, TlsAp, tls_options

pytestmark = pytest.mark.integration


def test_mutual_tls_call_is_answered_and_hung_up_cleanly(tls_nodes, ua, tls_certs: Path):
    ap1 = Ap("ap1")
    answerer = ua.answer(port=ap1.port)
    node = tls_nodes.start_tls([ap1])
    caller = ua.call(f"sips:sos@{HOST}:{node.tls_port}", "--duration", "1", "--timeout", "20",
                     options=tls_options(tls_certs, "upstream"))
    assert caller.wait_exit(30) == 0, caller.lines[-10:]
    assert caller.named("answered") and caller.named("bye_answered")
    answerer.wait_event("terminated", 10)  # the node BYEd the answer point after the caller's BYE
    (call,) = node.wait_ended(1)
    assert call["outcome"] == "answered"
    assert node.metric("ng911_tls_handshake_failures_total") == 0
    msgs = [str(r.get("msg")) for r in node.log_records()]
    assert any("peer certificate names ['upstream.ng911.test']" in m for m in msgs), msgs
    # the caller offered its connection (Via ;alias) and its certificate names 127.0.0.1: the
    # node's requests back to the caller would reuse it (RFC 5923)
    assert any(m.startswith("alias 127.0.0.1:") and "(RFC 5923)" in m for m in msgs), msgs
    node.assert_clean()
    assert not caller.tracebacks() and not answerer.tracebacks()


@pytest.mark.parametrize("cert", ["stranger", None], ids=["other-ca", "no-certificate"])
def test_client_refused_at_the_handshake_makes_no_call(tls_nodes, ua, tls_certs: Path, cert):
    ap1 = Ap("ap1")
    answerer = ua.answer(port=ap1.port)
    node = tls_nodes.start_tls([ap1])
    # the stranger trusts our CA (so it would accept the node) and shows its own certificate
    caller = ua.call(f"sips:sos@{HOST}:{node.tls_port}", "--timeout", "6", options=tls_options(tls_certs, cert))
    assert caller.wait_exit(20) != 0
    assert not caller.named("answered")
    assert node.metric("ng911_tls_handshake_failures_total", direction="inbound") >= 1
    assert node.all_calls() == []
    assert not answerer.named("invite")
    refused = [r for r in node.log_records() if "TLS handshake (inbound)" in str(r.get("msg", r))]
    assert refused, node.stderr_text()[-2000:]
    node.assert_clean()


def test_trust_by_certificate_identity_when_tls_is_required(tls_nodes, ua, tls_certs: Path):
    ap1 = Ap("ap1")
    answerer = ua.answer(port=ap1.port)
    node = tls_nodes.start_tls([ap1], identities=("upstream.ng911.test",), require_tls=True)
    target = f"sips:sos@{HOST}:{node.tls_port}"

    # a certificate that chains to the CA but names another peer
    issue(tls_certs, "other-peer", dns=("other.ng911.test",), ips=("127.0.0.1",))
    wrong = ua.call(target, "--timeout", "15", options=tls_options(tls_certs, "other-peer"))
    assert wrong.wait_exit(25) != 0
    (failed,) = wrong.named("failed")
    assert failed["reason"].startswith("403"), failed

    # a plain UDP INVITE from a trusted address counts for nothing when TLS is required
    plain = ua.call(f"sip:sos@{HOST}:{node.sip_port}", "--timeout", "15")
    assert plain.wait_exit(25) != 0
    (failed,) = plain.named("failed")
    assert failed["reason"].startswith("403"), failed
    assert not answerer.named("invite")

    # the named peer is served
    right = ua.call(target, "--duration", "0.5", "--timeout", "20", options=tls_options(tls_certs, "upstream"))
    assert right.wait_exit(30) == 0, right.lines[-10:]
    (call,) = node.wait_ended(1)
    assert call["outcome"] == "answered"
    assert node.metric("ng911_calls_total", outcome="rejected") == 2
    node.assert_clean()


def test_failover_between_answer_points_over_tls_keeps_the_caller(tls_nodes, ua, tls_certs: Path):
    ap1, ap2 = TlsAp("ap1"), TlsAp("ap2")
    first = ua.answer(port=ap1.port, options=ap1.ap_options(tls_certs))
    second = ua.answer(port=ap2.port, options=ap2.ap_options(tls_certs))
    node = tls_nodes.start_tls([ap1, ap2])
    caller = ua.call(f"sips:sos@{HOST}:{node.tls_port}", "--duration", "12", "--timeout", "40",
                     options=tls_options(tls_certs, "upstream"))
    first.wait_event("confirmed", 15)
    first.proc.kill()  # SIGKILL: the answer point dies with the call up
    first.proc.wait(timeout=5)
    second.wait_event("confirmed", 20)  # the call moved over TLS to the next answer point
    assert caller.wait_exit(40) == 0, caller.lines[-10:]
    assert [e for e in caller.named("terminated") if e.get("reason") == "remote BYE"] == []
    assert caller.named("bye_answered")  # the caller hung up itself, at the end
    second.wait_event("terminated", 10)
    (call,) = node.wait_ended(1)
    assert call["outcome"] == "answered"
    assert node.metric("ng911_failovers_total") >= 1
    node.assert_clean()


def test_metrics_over_https(tls_nodes, tls_certs: Path):
    node = tls_nodes.start_tls([Ap("ap1")], metrics_https=True)
    text = node.https_metrics_text()
    assert "ng911_tls_handshake_failures_total" in text and "ng911_build_info" in text
    with pytest.raises(OSError):  # plain HTTP is not served there
        node.metrics()
    # `ng911 status` reads the node's own view over HTTPS (verified against tls.ca)
    res = subprocess.run([NG911, "status", "--config", str(node.config), "--json"], env=node.env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    view = json.loads(res.stdout)["node"]
    assert view["running"] and view["metrics"].startswith("https://"), view
