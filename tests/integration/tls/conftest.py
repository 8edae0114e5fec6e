"""Fixtures for SIP over TLS: ``ng911 serve`` with a TLS listener and ``ng911 ua`` peers over
127.0.0.1 (Debian's SIPp has no TLS), certificates from ``scripts/make-test-certs.sh``.

- ``tls_certs`` (session): ca.pem, node/upstream/ap/stranger .pem/.key (tests/tlscerts.py);
  ``ua`` (tests/integration/conftest.py) starts the ``ng911 ua`` peers.
- ``tls_nodes``: ``start_tls(aps, ...)`` writes the controller tests' config (``node_config``) with
  "tls" in ``sip.transports`` on a free ``sip.tls_port``, a ``[tls]`` table with node.pem and
  ca.pem, ``sips:sos@127.0.0.1:<tls port>`` as a PSAP URI, and the given upstream trust, then
  migrates and serves it (``TlsNode``: ``tls_port``, ``https_metrics_text()``).
- ``TlsAp``: an answer point reached at ``sips:NAME@127.0.0.1:<tls_port>``; ``ap_options()``
  the ``ng911 ua`` options that make it answer over TLS with ap.pem.
- ``tls_options(certs, name)``: ``ng911 ua`` options to show ``name``.pem (None: no certificate).

Processes are the controller tests' ``Node`` and the ``ua`` fixture's: each is stopped at
teardown, by its own pid.
"""
from __future__ import annotations

import ssl
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.conftest import HOST, free_port
from tests.integration.controller.conftest import NG911, Ap, Node, NodeFactory, db_url, node_config  # noqa: F401
from tests.pg import pg_server  # noqa: F401  (fixture)
from tests.tlscerts import tls_certs  # noqa: F401  (fixture)


def tls_options(certs: Path, name: str | None, *, port: int | None = None) -> tuple[str, ...]:
    """``ng911 ua`` options: trust ca.pem; show ``name``.pem (listening on TLS ``port``)."""
    opts: tuple[str, ...] = ("--tls-ca", str(certs / "ca.pem"))
    if name is not None:
        opts += ("--tls-cert", str(certs / f"{name}.pem"), "--tls-key", str(certs / f"{name}.key"),
                 "--tls-port", str(port or free_port()))
    return opts


@dataclass
class TlsAp(Ap):
    """An answer point over TLS: ``sips:`` URI on its own TLS port (UDP/TCP on ``port``)."""

    tls_port: int = field(default_factory=free_port)

    @property
    def uri(self) -> str:
        return f"sips:{self.name}@{HOST}:{self.tls_port}"

    def ap_options(self, certs: Path) -> tuple[str, ...]:
        return tls_options(certs, "ap", port=self.tls_port)


class TlsNode(Node):
    tls_port: int = 0
    certs: Path

    def https_metrics_text(self) -> str:
        """/metrics over HTTPS, the node's certificate verified against ca.pem."""
        context = ssl.create_default_context(cafile=str(self.certs / "ca.pem"))
        url = f"https://{HOST}:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5, context=context) as resp:
            return resp.read().decode()


class TlsNodeFactory(NodeFactory):
    def __init__(self, workdir: Path, db_url: str, certs: Path) -> None:  # noqa: F811
        super().__init__(workdir, db_url)
        self.certs = certs

    def start_tls(self, aps: list[Ap], *, name: str = "tls", trusted: tuple[str, ...] = ("127.0.0.0/8",),
                  identities: tuple[str, ...] = (), require_tls: bool = False,
                  require_client_certificate: bool = True, metrics_https: bool = False) -> TlsNode:
        sip_port, metrics_port, tls_port = free_port(), free_port(), free_port()
        text = node_config(name=name, sip_port=sip_port, metrics_port=metrics_port, api_port=free_port(),
                           aps=aps, trusted=trusted)
        text = _replace_once(text, 'transports = ["udp", "tcp"]',
                             f'transports = ["udp", "tcp", "tls"]\ntls_port = {tls_port}')
        text = _replace_once(text, f'psap_uris = ["sip:sos@{HOST}:{sip_port}"]',
                             f'psap_uris = ["sip:sos@{HOST}:{sip_port}", "sips:sos@{HOST}:{tls_port}"]')
        quoted = ", ".join(f'"{i}"' for i in identities)
        text = _replace_once(text, "[upstream]\n",
                             f"[upstream]\ntrusted_identities = [{quoted}]\n"
                             f"require_tls = {str(require_tls).lower()}\n")
        if metrics_https:
            text = _replace_once(text, "[metrics]\n", "[metrics]\nhttps = true\n")
        text += "\n".join([
            "", "[tls]", f'certificate = "{self.certs / "node.pem"}"', f'private_key = "{self.certs / "node.key"}"',
            f'ca = "{self.certs / "ca.pem"}"',
            f"require_client_certificate = {str(require_client_certificate).lower()}", ""])
        config = self.workdir / f"{name}.toml"
        config.write_text(text)
        self.migrate(config, self.db_url)
        node = TlsNode(self.workdir, config, self.db_url, sip_port, metrics_port)
        node.tls_port, node.certs = tls_port, self.certs
        self.nodes.append(node)
        serving = node.wait_serving()
        assert serving["sip"].get("tls") == tls_port, serving
        return node


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} not found once in the config"
    return text.replace(old, new)


@pytest.fixture
def tls_nodes(tmp_path: Path, db_url: str, tls_certs: Path) -> Iterator[TlsNodeFactory]:  # noqa: F811
    factory = TlsNodeFactory(tmp_path, db_url, tls_certs)
    try:
        yield factory
    finally:
        factory.close()
