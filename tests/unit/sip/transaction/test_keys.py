"""Transaction keys (RFC 3261 §17.1.3, §17.2.3)."""

from __future__ import annotations

import pytest

from ng911.sip.transaction import LocalProtocolError
from ng911.sip.transaction.keys import (
    ClientKey,
    LegacyServerKey,
    ServerKey,
    client_key,
    client_key_for_response,
    server_key,
)

from .messages import request, response


def test_client_key_is_branch_and_method() -> None:
    assert client_key(request("OPTIONS", branch="z9hG4bKx")) == ClientKey("z9hG4bKx", "OPTIONS")


def test_client_key_requires_magic_cookie_branch() -> None:
    with pytest.raises(LocalProtocolError):
        client_key(request(branch="old-branch"))
    with pytest.raises(LocalProtocolError):
        client_key(request(branch=None))


def test_response_client_key_uses_cseq_method() -> None:
    cancel = request("CANCEL", branch="z9hG4bKx")
    assert client_key_for_response(response(cancel, 200)) == ClientKey("z9hG4bKx", "CANCEL")


def test_response_without_cookie_branch_has_no_client_key() -> None:
    assert client_key_for_response(response(request(branch="1234"), 200)) is None


def test_server_key_is_branch_sent_by_and_method() -> None:
    key = server_key(request("INVITE", branch="z9hG4bKx", via="Client.Example.COM:5070"))
    assert key == ServerKey("z9hG4bKx", ("client.example.com", 5070), "INVITE")


def test_server_key_of_ack_is_the_invite_key_and_cancel_keeps_its_own() -> None:
    invite = server_key(request("INVITE"))
    assert server_key(request("ACK")) == invite
    cancel = server_key(request("CANCEL"))
    assert cancel != invite
    assert cancel.method == "CANCEL"
    assert server_key(request("CANCEL"), method="INVITE") == invite


def test_server_key_differs_by_sent_by() -> None:
    assert server_key(request(via="a.example.com")) != server_key(request(via="b.example.com"))


def test_rfc2543_fallback_key_without_magic_cookie() -> None:
    key = server_key(request("INVITE", branch="1234", to_tag=None, from_tag="f", cseq=7))
    assert isinstance(key, LegacyServerKey)
    assert (key.request_uri, key.to_tag, key.from_tag, key.cseq, key.method) == (
        "sip:bob@example.com",
        None,
        "f",
        7,
        "INVITE",
    )
    assert server_key(request("INVITE", branch=None)) != key
    assert server_key(request("INVITE", branch="1234", cseq=8)) != key
