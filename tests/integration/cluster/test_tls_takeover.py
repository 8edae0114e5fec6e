"""A call over SIP over TLS survives the death of its node (issue 9: "test calls and failover
work over TLS end to end"). Caller and answer point are ``ng911 ua`` processes speaking TLS with
certificates of the test CA (Debian's SIPp has no TLS); the survivor opens new TLS connections
to both (it shows node.pem; they verify it), re-INVITEs them with its own Contact, and the
caller's hang-up reaches it. The caller is never sent a BYE."""
from __future__ import annotations

from pathlib import Path

from tests.integration.cluster.nodes import cluster, db_url, pg_server  # noqa: F401  (fixtures)
from tests.integration.conftest import HOST, ua  # noqa: F401  (fixture)
from tests.integration.tls.conftest import TlsAp, tls_options
from tests.tlscerts import tls_certs  # noqa: F401  (fixture)


def test_a_tls_call_survives_kill9_of_its_node(cluster, ua, tls_certs: Path):  # noqa: F811
    ap = TlsAp("ap1")
    answerer = ua.answer(port=ap.port, options=ap.ap_options(tls_certs))
    n1, n2 = cluster.start(["n1", "n2"], [ap], tls_certs=tls_certs)
    caller = ua.call(f"sips:sos@{HOST}:{n1.tls_port}", "--duration", "10", "--timeout", "60",
                     options=tls_options(tls_certs, "upstream"))
    answerer.wait_event("confirmed", 20)
    (call,) = n1.wait_talking()
    assert call["owner_node"] == "n1"
    n1.kill9()

    # both peers are re-INVITEd over TLS by the survivor, naming its TLS port
    for peer in (caller, answerer):
        event = peer.wait_event("reinvite", 30)
        assert event["contact"] and f":{n2.tls_port}" in event["contact"] and "transport=tls" in event["contact"], event
    assert caller.wait_exit(60) == 0
    assert [e for e in caller.named("terminated") if e.get("reason") == "remote BYE"] == []
    assert caller.named("bye_answered")  # its own BYE, answered by the survivor
    answerer.wait_event("terminated", 15)
    (row,) = n2.wait_ended(1, timeout=20)
    assert (row["owner_node"], row["end_reason"], row["outcome"]) == ("n2", "caller_hangup", "answered")
    assert "resumed" in n2.kinds(row["call_id"])
    n2.assert_clean()
