"""Which sources may send requests inside a dialog (issue 9: dialogs bound to their peer).

Knowing a dialog's Call-ID and tags is not proof of being its peer: anyone who saw them (or
guessed the tags) could BYE a 9-1-1 caller or REFER them elsewhere. A request inside a dialog is
accepted only from the peer the dialog was set up with:

* the address of the flow its dialog-creating request came over (a UAS leg: the caller's
  proxy), or of where we sent ours (a UAC leg: the answer point);
* the next hop of its route set (the record-routing proxy in front of us);
* its remote target (the peer's Contact, as refreshed by the peer's own accepted requests);
* over TLS, a connection whose verified certificate names one of those hosts, or shows the
  same identity the dialog was set up with.

Addresses are compared as IP addresses, ports ignored: a peer's requests over TCP come from
ephemeral ports, and a proxy may send from another socket than the one it listens on. A leg whose
every known host is a DNS name (no IP literal to compare with) cannot be checked without a
resolver: it is accepted, and counted as unverifiable. Pure: no I/O, no clock.
"""
from __future__ import annotations

from typing import Any

from ng911.sip.headers import parse_name_addr
from ng911.sip.transport.rules import ip_address_of
from ng911.sip.uri import SipUri, parse_uri

__all__ = ["BOUND", "UNBOUND", "UNVERIFIABLE", "peer_hosts", "check_source"]

BOUND, UNBOUND, UNVERIFIABLE = "bound", "unbound", "unverifiable"


def _host_of(target: Any) -> str | None:
    """The host of a Flow (its remote address), a Destination, or a URI / name-addr string."""
    remote = getattr(target, "remote", None)
    if remote:
        return remote[0]
    host = getattr(target, "host", None)
    if isinstance(host, str):
        return host
    if isinstance(target, str):
        try:
            uri = parse_name_addr(target).uri if "<" in target else parse_uri(target)
        except ValueError:
            return None
        if isinstance(uri, SipUri):
            return uri.host
    return None


def peer_hosts(session: Any) -> set[str]:
    """The hosts (IP literals and names, lower case, no brackets) the session's peer may
    send from."""
    hosts: list[str | None] = [_host_of(session.source), _host_of(session.dest)]
    dialog = session.dialog
    if dialog is not None:
        if dialog.route_set:
            hosts.append(_host_of(dialog.route_set[0]))  # our next hop, UAC and UAS alike
        hosts.append(_host_of(dialog.remote_target))
    out = set()
    for h in hosts:
        if h:
            out.add(h.strip("[]").lower())
    return out


def _identities(flow: Any) -> tuple[str, ...]:
    return tuple(i.lower() for i in getattr(flow, "peer_identities", ()) or ())


def check_source(session: Any, source: Any) -> str:
    """``BOUND`` when ``source`` (the flow a request came over) is the session's peer,
    ``UNBOUND`` when it is provably not, ``UNVERIFIABLE`` when nothing can be compared."""
    if source is None:
        return BOUND  # restored from the store with no flow, or a request we replay ourselves
    hosts = peer_hosts(session)
    ids = _identities(source)
    if ids:
        if any(i in hosts for i in ids):
            return BOUND
        first = _identities(session.source)
        if first and set(first) & set(ids):
            return BOUND
    remote = getattr(source, "remote", None)
    src = ip_address_of(remote[0]) if remote else None
    addresses = {ip_address_of(h) for h in hosts} - {None}
    if not addresses:
        return UNVERIFIABLE
    return BOUND if src in addresses else UNBOUND
