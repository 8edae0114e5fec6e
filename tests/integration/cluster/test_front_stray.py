"""Behind the front, a caller's in-dialog request that reaches a dead node (before a survivor has
re-INVITEd the caller) is answered 500 with Retry-After by the front, never 408: a 408 (or 481)
would make the caller end its dialog (RFC 3261 §12.2.1.2). The call then carries on with the
survivor."""
from __future__ import annotations

from typing import Callable

import pytest

from tests.integration.cluster.kamailio import HOST, Kamailio
from tests.integration.cluster.nodes import (  # noqa: F401  (fixtures)
    Ap, cluster, db_url, pg_server, sipp, sipp_ap, sipp_caller,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("transport", [pytest.param("u1", id="udp"), pytest.param("t1", id="tcp")])
def test_a_request_to_a_dead_node_gets_retry_after_and_the_call_carries_on(
        transport: str, cluster, sipp, kamailio_factory: Callable[..., Kamailio]) -> None:
    ap = Ap("ap1")
    ap_proc = sipp_ap(sipp, "tk_ap.xml", ap)
    nodes = cluster.start(["n1", "n2"], [ap], lease=8.0)  # a long lease: the INFO comes before the takeover
    kam = kamailio_factory([(HOST, n.sip_port) for n in nodes])
    caller = sipp_caller(sipp, "tk_front_caller_stray.xml", kam.port, hold_ms=500, transport=transport)
    calls = nodes[0].wait_talking()
    by_name = {n.name: n for n in nodes}
    dead = by_name[calls[0]["owner_node"]]
    (survivor,) = [n for n in nodes if n is not dead]
    dead.kill9()

    assert caller.wait(60) == 0, caller.summary() + "\n" + kam.log_text()[-3000:]
    assert ap_proc.wait(30) == 97, ap_proc.summary()
    [answer] = [m for m in caller.received(None, requests=False) if "INFO" in (m.header("CSeq") or "")]
    assert answer.status == 500 and answer.header("Retry-After") == "2"
    assert caller.received("BYE") == []
    (row,) = survivor.wait_ended(1, timeout=15)
    assert (row["owner_node"], row["end_reason"]) == (survivor.name, "caller_hangup")
    survivor.assert_clean()
