"""SIP over TLS on real loopback sockets (the real reactor turned by hand, see conftest.Loop):
mutual TLS, peer identities on the flow, connection reuse, refused handshakes."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from ng911.sip.transport import Destination
from ng911.sip.transport.tls import TlsCredentials, peer_identities
from tests.tlscerts import issue, tls_certs  # noqa: F401  (fixture)

from .conftest import Loop, Recorder
from .test_loopback import options


def creds(certs: Path, name: str | None, *, require: bool = True) -> TlsCredentials:
    return TlsCredentials.from_files(
        ca=str(certs / "ca.pem"),
        certificate=str(certs / f"{name}.pem") if name else None,
        private_key=str(certs / f"{name}.key") if name else None,
        require_client_certificate=require)


def tls_server(loop: Loop, certs: Path, *, require: bool = True) -> tuple[Recorder, int]:
    rec = loop.manager(tls=creds(certs, "node", require=require))
    port = rec.manager.listen_tls("127.0.0.1", 0).getHost().port
    return rec, port


def settle(loop: Loop, *recs: Recorder) -> None:
    """Close every TLS connection before the loop fixture checks for leftovers."""
    for rec in recs:
        rec.manager.streams["TLS"].close_all()
    loop.spin(lambda: not any(r.manager.streams["TLS"].connections for r in recs))


def test_identities_are_the_subject_alt_name_dns_names_and_uris(tls_certs: Path) -> None:  # noqa: F811
    cert = x509.load_pem_x509_certificate((tls_certs / "node.pem").read_bytes())
    assert peer_identities(cert) == ("localhost", "node.ng911.test")  # IP SANs are no identity
    assert peer_identities(None) == ()
    ca = x509.load_pem_x509_certificate((tls_certs / "ca.pem").read_bytes())
    assert peer_identities(ca) == ()  # no SAN: no identity (the CN is not read)


def test_uri_identities_are_kept_whole(tls_certs: Path) -> None:  # noqa: F811
    pem = issue(tls_certs, "esrp", uris=("sip:esrp.example.net",), dns=("esrp.example.net",), ips=("127.0.0.1",))
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    assert peer_identities(cert) == ("esrp.example.net", "sip:esrp.example.net")


def test_mutual_tls_request_carries_the_peer_identities_and_reply_reuses_the_connection(
        loop: Loop, tls_certs: Path) -> None:  # noqa: F811
    server, port = tls_server(loop, tls_certs)
    client = loop.manager(tls=creds(tls_certs, "upstream"))
    client.manager.send(options("z9hG4bKa", transport="TLS"), Destination("TLS", "127.0.0.1", port))
    loop.spin(lambda: server.messages)
    data, flow = server.messages[0]
    assert data == options("z9hG4bKa", transport="TLS")
    assert flow.transport == "TLS" and flow.local == ("127.0.0.1", port)
    assert flow.peer_identities == ("upstream.ng911.test",)

    server.manager.send(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", flow)
    loop.spin(lambda: client.messages)
    reply, back = client.messages[0]
    assert reply.startswith(b"SIP/2.0 200 OK")
    assert back.peer_identities == ("localhost", "node.ng911.test")  # the server's, verified

    # a second request to the same far end goes over the same connection (§18 reuse)
    client.manager.send(options("z9hG4bKb", transport="TLS"), Destination("TLS", "127.0.0.1", port))
    loop.spin(lambda: len(server.messages) == 2)
    assert server.messages[1][1].connection_id == flow.connection_id
    assert len(client.manager.streams["TLS"].connections) == 1
    assert server.manager.streams["TLS"].handshake_failures == {}
    settle(loop, client, server)


def test_client_certificate_from_another_ca_is_refused_at_the_handshake(
        loop: Loop, tls_certs: Path) -> None:  # noqa: F811
    server, port = tls_server(loop, tls_certs)
    stranger = loop.manager(tls=TlsCredentials.from_files(
        ca=str(tls_certs / "ca.pem"), certificate=str(tls_certs / "stranger.pem"),
        private_key=str(tls_certs / "stranger.key")))
    stranger.manager.send(options(transport="TLS"), Destination("TLS", "127.0.0.1", port))
    tls = server.manager.streams["TLS"]
    loop.spin(lambda: tls.handshake_failures["inbound"] == 1)
    loop.turn(0.1)
    assert server.messages == []
    assert tls.connections == ()
    settle(loop, stranger, server)


def test_client_without_certificate_is_refused_when_one_is_required(
        loop: Loop, tls_certs: Path) -> None:  # noqa: F811
    server, port = tls_server(loop, tls_certs)
    anonymous = loop.manager(tls=creds(tls_certs, None))
    anonymous.manager.send(options(transport="TLS"), Destination("TLS", "127.0.0.1", port))
    tls = server.manager.streams["TLS"]
    loop.spin(lambda: tls.handshake_failures["inbound"] == 1)
    loop.turn(0.1)
    assert server.messages == []
    settle(loop, anonymous, server)


def test_client_without_certificate_is_served_when_none_is_required(
        loop: Loop, tls_certs: Path) -> None:  # noqa: F811
    server, port = tls_server(loop, tls_certs, require=False)
    anonymous = loop.manager(tls=creds(tls_certs, None))
    anonymous.manager.send(options(transport="TLS"), Destination("TLS", "127.0.0.1", port))
    loop.spin(lambda: server.messages)
    assert server.messages[0][1].peer_identities == ()  # encrypted, but nobody in particular
    settle(loop, anonymous, server)


def test_server_not_named_by_its_certificate_fails_the_waiting_sends(
        loop: Loop, tls_certs: Path) -> None:  # noqa: F811
    issue(tls_certs, "elsewhere", dns=("elsewhere.ng911.test",))  # chains to ca.pem; not 127.0.0.1
    server = loop.manager(tls=creds(tls_certs, "elsewhere"))
    port = server.manager.listen_tls("127.0.0.1", 0).getHost().port
    client = loop.manager(tls=creds(tls_certs, "node"))
    client.manager.send(options(transport="TLS"), Destination("TLS", "127.0.0.1", port))
    loop.spin(lambda: client.errors)
    flow, error = client.errors[0]
    assert flow.transport == "TLS" and flow.remote == ("127.0.0.1", port)
    assert error.data == options(transport="TLS")
    assert client.manager.streams["TLS"].handshake_failures["outbound"] == 1
    loop.turn(0.1)
    assert server.messages == []
    settle(loop, client, server)


def test_make_test_certs_keeps_its_contract(tls_certs: Path) -> None:  # noqa: F811
    def load(name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate((tls_certs / f"{name}.pem").read_bytes())

    def san(cert: x509.Certificate) -> set[str]:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return {str(v) for v in ext.get_values_for_type(x509.DNSName)} | {
            str(v) for v in ext.get_values_for_type(x509.IPAddress)}

    ca, other = load("ca"), load("stranger-ca")
    assert san(load("node")) == {"127.0.0.1", "::1", "localhost", "node.ng911.test"}
    assert san(load("upstream")) == {"upstream.ng911.test", "127.0.0.1"}
    assert "127.0.0.1" in san(load("ap"))
    for name in ("node", "upstream", "ap"):
        cert = load(name)
        assert cert.issuer == ca.subject
        cert.verify_directly_issued_by(ca)
        assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days >= 3650
        assert (tls_certs / f"{name}.key").exists()
    stranger = load("stranger")
    stranger.verify_directly_issued_by(other)
    assert stranger.issuer != ca.subject


def test_alias_reuses_an_accepted_connection_for_a_host_its_certificate_names(
        loop: Loop, tls_certs: Path) -> None:  # noqa: F811
    server, port = tls_server(loop, tls_certs)
    client = loop.manager(tls=creds(tls_certs, "upstream"))  # SAN: upstream.ng911.test, 127.0.0.1
    client.manager.send(options(transport="TLS"), Destination("TLS", "127.0.0.1", port))
    loop.spin(lambda: server.messages)
    flow = server.messages[0][1]
    listening = 5999  # the client's sent-by: nobody listens there, the alias is the only way
    assert not server.manager.alias(flow, "10.0.0.1", listening)  # not named by its certificate
    assert server.manager.alias(flow, "127.0.0.1", listening)
    server.manager.send(options("z9hG4bKback", transport="TLS"), Destination("TLS", "127.0.0.1", listening))
    loop.spin(lambda: client.messages)
    assert client.messages[0][0] == options("z9hG4bKback", transport="TLS")
    assert len(server.manager.streams["TLS"].connections) == 1
    assert server.errors == []
    settle(loop, client, server)


def test_our_via_offers_the_tls_connection_as_an_alias() -> None:
    from ng911.sip.ua.common import new_via

    assert [k for k, _ in new_via("TLS", "127.0.0.1", 5061).params] == ["branch", "rport", "alias"]
    assert [k for k, _ in new_via("TCP", "127.0.0.1", 5060).params] == ["branch", "rport"]


def test_stack_listens_on_tls_and_names_that_port_in_via_and_contact(loop: Loop, tls_certs: Path) -> None:  # noqa: F811
    from ng911.sip.stack import SipStack
    from ng911.sip.ua import UaHandler

    stack = SipStack(loop.reactor, UaHandler(), host="127.0.0.1", udp_port=0, tcp_port=0, tls_port=0,
                     tls=creds(tls_certs, "node"))
    stack.listen()
    try:
        tls_port = stack.ports["TLS"]
        assert tls_port not in (0, stack.ports["UDP"])
        transport, host, port = stack.local_address(Destination("TLS", "127.0.0.1", 5061))
        assert (transport, host, port) == ("TLS", "127.0.0.1", tls_port)
        assert str(stack.ua.contact_uri(transport, host, port)) == f"sip:ng911@127.0.0.1:{tls_port};transport=tls"
        assert stack.local_address(Destination("UDP", "127.0.0.1", 5060))[2] == stack.ports["UDP"]
    finally:
        done: list[object] = []
        stack.stop().addBoth(done.append)
        loop.spin(lambda: done)


def test_stack_with_client_only_credentials_does_not_listen_on_tls(loop: Loop, tls_certs: Path) -> None:  # noqa: F811
    from ng911.sip.stack import SipStack
    from ng911.sip.ua import UaHandler

    stack = SipStack(loop.reactor, UaHandler(), host="127.0.0.1", udp_port=0, tcp_port=0, tls_port=0,
                     tls=creds(tls_certs, None))
    stack.listen()
    try:
        assert "TLS" not in stack.ports and "TLS" in stack.manager.streams
    finally:
        done: list[object] = []
        stack.stop().addBoth(done.append)
        loop.spin(lambda: done)


def test_a_connection_that_never_completes_its_handshake_is_closed(loop: Loop, tls_certs: Path) -> None:  # noqa: F811
    import socket

    server, port = tls_server(loop, tls_certs)
    tls = server.manager.streams["TLS"]
    tls.handshake_timeout = 0.2  # type: ignore[attr-defined]
    silent = loop.socket(socket.SOCK_STREAM)  # TCP connects, never says a word
    try:
        silent.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    loop.spin(lambda: tls.handshake_failures["inbound"] == 1)  # type: ignore[attr-defined]
    with pytest.raises(ConnectionResetError):  # aborted by the server
        loop.recv(silent)
    assert server.messages == [] and tls.connections == ()


def test_handshakes_under_way_are_capped_per_untrusted_source(loop: Loop, tls_certs: Path) -> None:  # noqa: F811
    """Connections are counted from their completed handshake; until then the handshake counter
    bounds them: a stranger cannot hold more half-open TLS connections than its share."""
    import socket

    from ng911.sip.limits import ConnectionCounter
    from ng911.sip.transport.stream import StreamGuard

    server, port = tls_server(loop, tls_certs)
    tls = server.manager.streams["TLS"]
    shed: list[str] = []
    tls.set_guard(StreamGuard(ConnectionCounter(100, 2), lambda flow: False, shed.append))
    silent = []
    for _ in range(4):
        s = loop.socket(socket.SOCK_STREAM)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        silent.append(s)
    loop.spin(lambda: len(shed) == 2)
    assert shed == ["handshakes_cap", "handshakes_cap"]
    assert tls.handshaking.total == 2  # type: ignore[attr-defined]
    assert tls.handshake_failures["inbound"] == 0  # shed, not refused by TLS  # type: ignore[attr-defined]
    for s in silent:
        s.close()
    loop.spin(lambda: tls.handshaking.total == 0)  # type: ignore[attr-defined]
    settle(loop, server)
