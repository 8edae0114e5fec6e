"""Several ``ng911 serve`` processes as one cluster on one PostgreSQL database (loopback only).

``ClusterFactory.start(names, aps)`` writes one config per node (``cluster.enabled``, fast
leases so a test sees a takeover within seconds), migrates once, starts every node, each in a
work directory of its own, and waits until all of them serve. Built on the controller tests'
``Node`` (a real process, its log, metrics and database reads) and their SIPp fixtures.
"""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlalchemy as sa

from tests.integration.conftest import free_port, wait_until
from tests.integration.controller.conftest import (  # noqa: F401  (fixtures)
    HOST, Ap, Node, NodeFactory, db_url, node_config, pg_server, sipp,
)

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
#: fast leases for tests: a dead node is noticed ~2–3 s after its last heartbeat
HEARTBEAT = 0.5
LEASE = 2.0


class ClusterNode(Node):
    name: str
    tls_port: int = 0  # SIP over TLS, when the cluster was started with tls_certs

    def kill9(self) -> float:
        """SIGKILL; the time it was sent."""
        at = time.time()
        self.proc.kill()
        self.proc.wait(timeout=10)
        return at

    def pause(self) -> float:
        at = time.time()
        os.kill(self.proc.pid, signal.SIGSTOP)
        return at

    def resume(self) -> float:
        at = time.time()
        os.kill(self.proc.pid, signal.SIGCONT)
        return at

    def wait_talking(self, n: int = 1, timeout: float = 20.0) -> list[dict]:
        """Wait until the database holds exactly ``n`` calls, all talking; those rows."""
        return self.wait_calls(lambda calls: len(calls) == n and all(c["state"] == "talking" for c in calls),
                               timeout, f"{n} talking call(s)")

    def owned(self) -> list[str]:
        """Live calls owned by this node (any epoch), from the database."""
        from ng911.store import models

        c = models.calls.c
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(c.call_id).where(c.owner_node == self.name, c.ended_at.is_(None))).scalars())


class ClusterFactory:
    def __init__(self, workdir: Path, db_url: str) -> None:
        self.workdir, self.db_url = workdir, db_url
        self.nodes: list[ClusterNode] = []
        self._migrated = False

    def start(self, names: list[str], aps: list[Ap], *, heartbeat: float = HEARTBEAT, lease: float = LEASE,
              extra: str = "", trace: bool = False, db_url: str | None = None,
              tls_certs: Path | None = None) -> list[ClusterNode]:
        """``db_url``: what the nodes use (e.g. through a TCP proxy a test can cut); the
        migration and the tests' reads go to the database directly. ``tls_certs``: every node
        also listens on SIP over TLS (``ClusterNode.tls_port``) with node.pem, trusting ca.pem."""
        ports = {name: free_port() for name in names}
        tls_ports = {name: free_port() for name in names} if tls_certs is not None else {}
        psap_uris = ", ".join([f'"sip:sos@{HOST}:{p}"' for p in ports.values()]
                              + [f'"sips:sos@{HOST}:{p}"' for p in tls_ports.values()])
        started = []
        for name in names:
            workdir = self.workdir / name
            workdir.mkdir(exist_ok=True)
            metrics_port = free_port()
            text = node_config(name=name, sip_port=ports[name], metrics_port=metrics_port, api_port=free_port(),
                               aps=aps, extra=f"[cluster]\nenabled = true\nheartbeat_interval = {heartbeat}\n"
                                              f"lease_duration = {lease}\n" + extra)
            text = text.replace(f'psap_uris = ["sip:sos@{HOST}:{ports[name]}"]', f"psap_uris = [{psap_uris}]")
            if trace:
                text = text.replace('transports = ["udp", "tcp"]', 'transports = ["udp", "tcp"]\ntrace = true')
            if tls_certs is not None:
                text = text.replace('transports = ["udp", "tcp"]',
                                    f'transports = ["udp", "tcp", "tls"]\ntls_port = {tls_ports[name]}')
                text += (f'\n[tls]\ncertificate = "{tls_certs / "node.pem"}"\nprivate_key = "{tls_certs / "node.key"}"\n'
                         f'ca = "{tls_certs / "ca.pem"}"\n')
            config = workdir / f"{name}.toml"
            config.write_text(text)
            if not self._migrated:
                NodeFactory(workdir, self.db_url).migrate(config, self.db_url)
                self._migrated = True
            node = ClusterNode(workdir, config, db_url or self.db_url, ports[name], metrics_port,
                               direct_db_url=self.db_url)
            node.name = name
            node.tls_port = tls_ports.get(name, 0)
            self.nodes.append(node)
            started.append(node)
        for node in started:
            node.wait_serving()
        # every node has beaten at least once: a lease each
        wait_until(lambda: all(n.metric("ng911_cluster_lease_remaining_seconds") > 0 for n in started),
                   15, "every node holds a lease")
        return started

    def close(self) -> None:
        for n in self.nodes:
            if n.proc.poll() is None:
                try:
                    os.kill(n.proc.pid, signal.SIGCONT)  # a paused node cannot die of SIGTERM
                except ProcessLookupError:
                    pass
            n.stop()


@pytest.fixture
def cluster(tmp_path: Path, db_url: str) -> Iterator[ClusterFactory]:  # noqa: F811
    factory = ClusterFactory(tmp_path, db_url)
    try:
        yield factory
    finally:
        factory.close()


def contact_port(msg: Any) -> int:
    """The port of the Contact of a SIP message SIPp logged (a node's port tells which node)."""
    m = re.search(r"<sip:[^@>]*@?[0-9.]+:(\d+)", msg.header("Contact") or "")
    assert m, msg.head
    return int(m.group(1))


def sipp_caller(sipp: Any, scenario: str | Path, sip_port: int, *, calls: int = 1, hold_ms: int = 500,
                timeout: float = 60.0, transport: str = "u1", extra: list[str] = ()) -> Any:  # type: ignore[assignment]
    """A SIPp caller towards ``127.0.0.1:sip_port`` (a node, or the Kamailio front)."""
    path = Path(scenario) if os.path.isabs(scenario) else SCENARIOS / scenario
    argv = ["-m", str(calls), "-d", str(hold_ms)] + list(extra)
    return sipp._start(path, f"{HOST}:{sip_port}", port=None, timeout=timeout, extra=argv, keys={}, sets={},
                       transport=transport)


def sipp_ap(sipp: Any, scenario: str | Path, ap: Ap, *, calls: int = 1, timeout: float = 60.0) -> Any:
    path = Path(scenario) if os.path.isabs(scenario) else SCENARIOS / scenario
    return sipp.ap(path, ap, calls=calls, timeout=timeout)
