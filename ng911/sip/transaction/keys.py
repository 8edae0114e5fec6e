"""Transaction keys: how a message finds its transaction (RFC 3261 §17.1.3, §17.2.3).

Client side (§17.1.3): a response matches the client transaction whose request carried the
same top-Via ``branch`` and whose method equals the response's CSeq method (so a response to
CANCEL finds the CANCEL's transaction, not the INVITE's).

Server side (§17.2.3), when the top-Via branch begins with the magic cookie ``z9hG4bK``:
branch + sent-by + method, where an ACK's method counts as INVITE (the ACK for a non-2xx
belongs to the INVITE transaction) and CANCEL keeps its own key (the layer looks the INVITE
up separately, with :func:`server_key` and ``method="INVITE"``).

RFC 2543 fallback (§17.2.3, branch absent or without the cookie): Request-URI, To tag,
From tag, Call-ID, CSeq number and method, and the top Via. The ACK of such a transaction
carries the To tag of *our* response, so the layer retries an ACK lookup without it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeAlias

from ng911.sip.transaction.errors import LocalProtocolError

if TYPE_CHECKING:
    from ng911.sip.message import Request, Response

__all__ = [
    "MAGIC_COOKIE",
    "ClientKey",
    "LegacyServerKey",
    "ServerKey",
    "TransactionKey",
    "client_key",
    "client_key_for_response",
    "is_rfc3261_branch",
    "server_key",
    "without_to_tag",
]

from ng911.sip.builders import MAGIC_COOKIE  # noqa: E402 - one definition (RFC 3261 §8.1.1.7)


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A client transaction: the branch we put in our top Via, and the request's method."""

    branch: str
    method: str


@dataclass(frozen=True, slots=True)
class ServerKey:
    """A server transaction created by a request with an RFC 3261 branch."""

    branch: str
    sent_by: tuple[str, int | None]
    method: str


@dataclass(frozen=True, slots=True)
class LegacyServerKey:
    """A server transaction created by an RFC 2543 request (no magic-cookie branch)."""

    request_uri: str
    to_tag: str | None
    from_tag: str | None
    call_id: str
    cseq: int
    method: str
    top_via: tuple[str, str, int | None, str | None]  # transport, host, port, branch


TransactionKey: TypeAlias = ClientKey | ServerKey | LegacyServerKey


def is_rfc3261_branch(branch: str | None) -> bool:
    return branch is not None and branch.startswith(MAGIC_COOKIE)


def client_key(request: Request) -> ClientKey:
    """The key of the client transaction ``request`` creates; we always send cookie branches."""
    branch = request.branch
    if not is_rfc3261_branch(branch):
        raise LocalProtocolError(
            f"{request.method} needs a top Via branch starting with {MAGIC_COOKIE}, got {branch!r}"
        )
    assert branch is not None
    return ClientKey(branch, request.method)


def client_key_for_response(response: Response) -> ClientKey | None:
    """The client transaction a received response belongs to; None if it cannot have one."""
    branch = response.branch
    if not is_rfc3261_branch(branch):
        return None
    assert branch is not None
    return ClientKey(branch, response.cseq.method)


def server_key(request: Request, *, method: str | None = None) -> ServerKey | LegacyServerKey:
    """The key of the server transaction ``request`` creates or matches.

    ``method`` overrides the request's method; ACK always maps to INVITE (§17.2.3).
    """
    if method is None:
        method = "INVITE" if request.method == "ACK" else request.method
    via = request.top_via
    branch = via.branch
    if is_rfc3261_branch(branch):
        assert branch is not None
        host, port = via.sent_by
        return ServerKey(branch, (host.lower(), port), method)
    return LegacyServerKey(
        request_uri=str(request.uri),
        to_tag=request.to.tag,
        from_tag=request.from_.tag,
        call_id=request.call_id,
        cseq=request.cseq.seq,
        method=method,
        top_via=(via.transport.upper(), via.host.lower(), via.port, branch),
    )


def without_to_tag(key: LegacyServerKey) -> LegacyServerKey:
    """The key an initial INVITE had before our response gave the dialog a To tag."""
    return replace(key, to_tag=None)
