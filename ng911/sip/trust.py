"""Whom the node trusts to send it calls: a source address in ``upstream.trusted``, or a TLS
peer whose certificate chained to ``tls.ca`` and names a trusted identity.

Pure: it reads a :class:`~ng911.sip.transport.flow.Flow` (its transport, remote address and
the identities the TLS layer verified) and answers yes or no. An address is only as good as the
transport that carried it: a UDP source can be spoofed, so ``require_tls`` makes the
certificate the only proof (issue 9).
"""
from __future__ import annotations

import ipaddress
from typing import Any, Iterable

from ng911.sip.transport.rules import ip_address_of

__all__ = ["TrustPolicy"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustPolicy:
    """``networks``: trusted source addresses; ``identities``: trusted certificate identities
    (empty: any verified certificate); ``require_tls``: addresses count for nothing;
    ``tls``: whether a verified TLS peer can be trusted at all (the node listens on TLS)."""

    def __init__(self, networks: Iterable[Network] = (), *, identities: Iterable[str] = (),
                 require_tls: bool = False, tls: bool = False) -> None:
        self.networks = tuple(networks)
        self.identities = frozenset(i.lower() for i in identities)
        self.require_tls = require_tls
        self.tls = tls or require_tls
        self._by_host: dict[str, bool] = {}  # address verdicts, bounded (a cache, not state)

    @classmethod
    def from_settings(cls, settings: Any) -> "TrustPolicy":
        """From a :class:`ng911.config.Settings`."""
        up = settings.upstream
        return cls(up.trusted, identities=up.trusted_identities, require_tls=up.require_tls,
                   tls="tls" in settings.sip.transports)

    def trusts(self, flow: Any) -> bool:
        """Whether a request that came over ``flow`` comes from a trusted upstream peer."""
        if flow is None:
            return False
        if self.trusts_certificate(flow):
            return True
        if self.require_tls:
            return False
        remote = getattr(flow, "remote", None)
        return bool(remote) and self.trusts_address(remote[0])

    def trusts_certificate(self, flow: Any) -> bool:
        """A TLS flow whose verified certificate is trusted (whatever its address)."""
        return getattr(flow, "transport", None) == "TLS" and self.trusts_identities(
            getattr(flow, "peer_identities", ()))

    def trusts_identities(self, identities: Iterable[str]) -> bool:
        """A verified certificate's identities: trusted when any is listed, or when no list is
        configured (then chaining to ``tls.ca`` is the whole test). No certificate: no trust."""
        ids = [i.lower() for i in identities]
        if not ids or not self.tls:
            return False
        return not self.identities or any(i in self.identities for i in ids)

    def trusts_address(self, host: str) -> bool:
        verdict = self._by_host.get(host)
        if verdict is None:
            addr = ip_address_of(host)
            verdict = addr is not None and any(addr in net for net in self.networks)
            if len(self._by_host) >= 4096:
                self._by_host.clear()
            self._by_host[host] = verdict
        return verdict
