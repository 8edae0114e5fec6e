"""The composition root wires the [limits] into the SIP stack (ng911.service)."""
from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from twisted.internet.testing import MemoryReactorClock

from ng911.config import load_settings
from ng911.service import make_service, peer_hosts
from ng911.sip.transport.flow import Flow
from ng911.store.memory import MemoryStore

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "single-node.toml"


def test_answer_points_hosts_are_never_shed_and_the_stack_gets_the_limits() -> None:
    settings = load_settings(EXAMPLE, env={})
    assert peer_hosts(settings) == {"127.0.0.1"}
    reactor = MemoryReactorClock()
    service = make_service(settings, reactor, store=MemoryStore(), registry=CollectorRegistry())
    stack = service.stack
    assert stack.limits is settings.limits and stack.rate is not None
    assert all(s.guard is not None for s in stack.manager.streams.values())
    # a stranger's INVITE (single-node trusts 127.0.0.0/8): one stateless 403, counted by reason
    sent: list[bytes] = []
    stack.manager.send = lambda data, target, **kw: sent.append(data)  # type: ignore[method-assign]
    invite = (b"INVITE urn:service:sos SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n"
              b"Max-Forwards: 70\r\nFrom: <sip:a@192.0.2.1>;tag=1\r\nTo: <urn:service:sos>\r\n"
              b"Call-ID: x@192.0.2.1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    stack._on_bytes(invite, Flow("UDP", ("127.0.0.1", 5060), ("192.0.2.1", 5060)))
    assert len(sent) == 1 and sent[0].startswith(b"SIP/2.0 403") and stack.shed == {"untrusted_stateless_403": 1}
    service._sample()
    assert service.registry.get_sample_value("ng911_sip_shed_total", {"reason": "untrusted_stateless_403"}) == 1
    assert service.registry.get_sample_value("ng911_sip_tracked_sources") == 1
