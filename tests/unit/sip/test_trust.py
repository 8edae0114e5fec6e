"""Who may send calls: addresses, TLS identities, and require_tls (ng911.sip.trust)."""
import ipaddress

from ng911.sip.transport.flow import Flow
from ng911.sip.trust import TrustPolicy

NET = [ipaddress.ip_network("127.0.0.1/32")]


def udp(host: str) -> Flow:
    return Flow("UDP", ("127.0.0.1", 5060), (host, 5080))


def tls(host: str, *ids: str) -> Flow:
    return Flow("TLS", ("127.0.0.1", 5061), (host, 40000), 7, peer_identities=ids)


def test_an_address_in_the_networks_is_trusted_and_one_outside_is_not() -> None:
    policy = TrustPolicy(NET)
    assert policy.trusts(udp("127.0.0.1"))
    assert not policy.trusts(udp("127.0.0.2"))
    assert not policy.trusts(udp("esrp.example.net"))  # a name is never a packet's source
    assert not policy.trusts(None)


def test_require_tls_makes_a_trusted_address_count_for_nothing() -> None:
    policy = TrustPolicy(NET, require_tls=True)
    assert not policy.trusts(udp("127.0.0.1"))
    assert not policy.trusts(tls("127.0.0.1"))  # TLS without a verified certificate
    assert policy.trusts(tls("127.0.0.9", "upstream.ng911.test"))


def test_listed_identities_are_the_only_ones_trusted() -> None:
    policy = TrustPolicy((), identities=["Upstream.ng911.test"], tls=True)
    assert policy.trusts(tls("127.0.0.9", "other.test", "upstream.ng911.test"))
    assert not policy.trusts(tls("127.0.0.9", "stranger.ng911.test"))


def test_with_no_identity_list_any_verified_certificate_is_trusted_but_only_over_tls() -> None:
    policy = TrustPolicy((), tls=True)
    assert policy.trusts(tls("127.0.0.9", "anything.test"))
    assert not policy.trusts(Flow("TCP", ("127.0.0.1", 5060), ("127.0.0.9", 1), 3, peer_identities=("x",)))
    assert not TrustPolicy(()).trusts(tls("127.0.0.9", "anything.test"))  # not listening on TLS


def test_the_identity_is_not_part_of_a_flows_equality() -> None:
    assert tls("127.0.0.9", "a") == tls("127.0.0.9", "b")
    assert hash(tls("127.0.0.9", "a")) == hash(tls("127.0.0.9"))
