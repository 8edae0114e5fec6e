"""ng911.sip.ua.binding: whose requests a dialog takes (pure cases the call tests don't reach)."""
from types import SimpleNamespace

from ng911.sip.dialog import Dialog
from ng911.sip.transport.flow import Destination, Flow
from ng911.sip.ua.binding import BOUND, UNBOUND, UNVERIFIABLE, check_source, peer_hosts

LOCAL = ("192.0.2.10", 5060)


def session(source=None, dest=None, route_set=(), target="sip:ap1@192.0.2.21:5070"):  # type: ignore[no-untyped-def]
    d = Dialog("c", "l", "r", "<sip:a@x>", "<sip:b@y>", target, route_set=tuple(route_set))
    return SimpleNamespace(source=source, dest=dest, dialog=d)


def udp(host: str, port: int = 5060) -> Flow:
    return Flow("UDP", LOCAL, (host, port))


def test_the_route_sets_next_hop_and_the_remote_target_are_the_peer_ports_ignored() -> None:
    s = session(source=udp("192.0.2.1"), route_set=["<sip:192.0.2.5;lr>", "<sip:198.51.100.7;lr>"])
    assert peer_hosts(s) == {"192.0.2.1", "192.0.2.5", "192.0.2.21"}
    assert check_source(s, udp("192.0.2.5", 40001)) == BOUND
    assert check_source(s, Flow("TCP", LOCAL, ("192.0.2.21", 51515), 4)) == BOUND
    assert check_source(s, udp("198.51.100.7")) == UNBOUND  # a farther proxy is not our next hop
    assert check_source(s, udp("192.0.2.99")) == UNBOUND


def test_a_tls_peer_is_bound_by_its_certificate_naming_a_peer_host_or_the_same_identity() -> None:
    first = Flow("TLS", LOCAL, ("192.0.2.1", 40000), 1, peer_identities=("esrp.example.net",))
    s = session(source=first, target="sip:esrp.example.net;transport=tls")
    partner = Flow("TLS", LOCAL, ("192.0.2.2", 40000), 2, peer_identities=("ESRP.example.net",))
    assert check_source(s, partner) == BOUND
    other = Flow("TLS", LOCAL, ("192.0.2.3", 40000), 3, peer_identities=("bcf.example.net",))
    assert check_source(s, other) == UNBOUND


def test_a_leg_known_only_by_names_cannot_be_checked_without_a_resolver() -> None:
    s = session(dest=Destination("UDP", "ap1.psap.example", 5060), target="sip:ap1@ap1.psap.example")
    assert check_source(s, udp("192.0.2.77")) == UNVERIFIABLE
