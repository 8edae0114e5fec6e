"""Taking over a caller's INVITE that another node received and never answered (DESIGN
"Cluster"): the survivor answers on the caller's ORIGINAL INVITE transaction, as if the
INVITE had reached it.

The node that receives the INVITE stores three things with the call::

    raw   = the INVITE's bytes as received (or request.to_bytes() of the request it was given)
    flow  = flow_to_dict(session.source)          # JSON: transport, peer address, our socket
    tag   = session.dialog.local_tag              # once a 1xx with a To tag went out, else None

and the node that takes the call over rebuilds the UAS session from them::

    session = ua.adopt_invite(raw, source=flow_from_dict(flow), local_tag=tag)
    session.ring(180)                  # same To tag: the caller's early dialog stays the same
    session.answer(sdp) / session.reject(486)

What is rebuilt is exactly what `UserAgent` builds for a new incoming INVITE, minus the
handler's ``on_invite`` (the application knows the call already): the INVITE server
transaction in Proceeding, keyed by the stored top Via — so a retransmission of that INVITE is
absorbed (the last provisional is re-sent), a CANCEL with its branch gets 200 and the INVITE
487 (``on_cancelled``), and the 2xx is retransmitted until the ACK — and a UAS session in
state INCOMING (or EARLY with the stored To tag), whose ``invite`` is the stored request, so
that every response carries its exact Via stack (the stateful proxy in front matches it by
branch) and is routed by its top Via (RFC 3261 §18.2.2, RFC 3581): ``received``/``rport``
over UDP, a connection to the sent-by address over TCP/TLS. The Contact of our responses is
this node's own (``UaPort.local_address``), so the caller's ACK and later requests come here.

A flow's stream connection id names a connection of the process that received the INVITE;
it means nothing (or another peer's connection) anywhere else, so it is not stored: a restored
TCP/TLS flow has none, and responses open (or reuse) a connection to the Via's address.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ng911.sip.body import sdp_of
from ng911.sip.dialog import Dialog
from ng911.sip.errors import SipParseError
from ng911.sip.message import Request, missing_mandatory, parse_message
from ng911.sip.transaction.actions import MergedRequest, ToTU
from ng911.sip.transaction.keys import server_key
from ng911.sip.transport.flow import Address, Flow
from ng911.sip.transport.rules import stamp_received
from ng911.sip.ua.common import SESSION_EARLY
from ng911.sip.ua.session import Session

if TYPE_CHECKING:
    from ng911.sip.ua.agent import UserAgent

__all__ = ["InviteAdoption", "flow_from_dict", "flow_to_dict", "parse_stored_invite"]


# --- flows as stored data -----------------------------------------------------------------------


def flow_to_dict(source: Flow) -> dict[str, Any]:
    """The flow a request came over, as JSON-able data (``flow_from_dict`` reads it back)::

        {"transport": "TCP", "host": "192.0.2.7", "port": 5060,
         "local_host": "198.51.100.1", "local_port": 5060}

    ``host``/``port``: the peer (the packet's source address, what ``received``/``rport``
    were stamped from); ``local_*``: our socket it arrived on. The stream connection id is
    left out on purpose (module docstring).
    """
    if not isinstance(source, Flow):
        raise TypeError(f"flow_to_dict wants a Flow, got {type(source).__name__}")
    return {
        "transport": source.transport,
        "host": source.remote[0],
        "port": source.remote[1],
        "local_host": source.local[0],
        "local_port": source.local[1],
    }


def flow_from_dict(data: Mapping[str, Any], *, local: Address | None = None) -> Flow:
    """The `Flow` of ``flow_to_dict`` data, without a connection id. ``local`` replaces the
    stored local socket (the node restoring it may listen elsewhere; the shell falls back on
    a socket of the same address family anyway). Raises ValueError on data it cannot use."""
    try:
        transport = str(data["transport"]).upper()
        host, port = data["host"], data["port"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a stored flow (transport, host, port): {data!r}") from exc
    if not isinstance(host, str) or not host:
        raise ValueError(f"stored flow has no host: {data!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"stored flow has a bad port: {data!r}")
    if local is None:
        local_host, local_port = data.get("local_host") or "", data.get("local_port") or 0
        local = (str(local_host), int(local_port))
    return Flow(transport, local, (host, port))  # Flow refuses an unknown transport (ValueError)


# --- the stored INVITE ----------------------------------------------------------------------------


def parse_stored_invite(raw: bytes) -> Request:
    """The stored bytes as an initial INVITE (no To tag), every header a UAS reads checked
    now. Raises ValueError saying what is wrong."""
    try:
        msg = parse_message(raw)
    except SipParseError as exc:
        raise ValueError(f"stored INVITE does not parse: {exc.reason}") from exc
    if not isinstance(msg, Request) or msg.method != "INVITE":
        what = f"a {msg.method} request" if isinstance(msg, Request) else f"a {msg.status} response"
        raise ValueError(f"stored INVITE is {what}")
    missing = missing_mandatory(msg)
    if missing:
        raise ValueError(f"stored INVITE has no {missing} header")
    try:
        # Parsed lazily elsewhere: make every one of them fail here, not in a later answer.
        _ = (msg.top_via, msg.call_id, msg.cseq, msg.from_, msg.to, msg.contacts, msg.record_routes)
    except SipParseError as exc:
        raise ValueError(f"stored INVITE is malformed: {exc.reason}") from exc
    if msg.cseq.method != "INVITE":
        raise ValueError(f"stored INVITE has CSeq method {msg.cseq.method}")
    if msg.to.tag:
        raise ValueError("stored INVITE has a To tag: a re-INVITE is not adopted, its dialog is (adopt)")
    if not msg.from_.tag:
        raise ValueError("stored INVITE has no From tag")
    return msg


# --- the UserAgent part ---------------------------------------------------------------------------


class InviteAdoption:
    """Part of `UserAgent` (see `ng911.sip.ua.agent`); uses its layer, maps and port."""

    def adopt_invite(
        self: UserAgent,
        raw: bytes,
        *,
        source: Any,
        local_tag: str | None = None,
        local_sdp: bytes | None = None,
    ) -> Session:
        """Answer a caller's INVITE that another node received and never answered.

        ``raw``: the INVITE's bytes as stored (module docstring); ``source``: the flow it came
        over (``flow_from_dict``), as ``UaPort.send`` gets it for every response — its
        transport also decides our Contact's and whether the 2xx is retransmitted (UDP) or
        not (TCP/TLS), its remote address the ``received``/``rport`` stamped on the top Via
        when ``raw`` was stored unstamped; ``local_tag``: the To tag the dead
        node's provisional responses carried (None if it sent none with a tag: ``ring`` then
        picks a new one); ``local_sdp``: the SDP it had already sent (an early answer), kept
        as ``session.local_sdp``.

        Returns the UAS session — INCOMING, or EARLY with its early dialog registered when
        ``local_tag`` is given — on which ``ring``, ``answer`` and ``reject`` work as on any.
        Nothing is sent now, and ``on_invite`` is not called. Raises ValueError when ``raw``
        is not an initial INVITE (``parse_stored_invite``) or when this UA already has a
        transaction or a dialog for it.
        """
        request = parse_stored_invite(raw)
        if isinstance(source, Flow):
            # What the shell did on receipt (§18.2.1, RFC 3581): a no-op if raw was stamped.
            stamped = stamp_received(request, source)
            assert isinstance(stamped, Request)
            request = stamped
        key = server_key(request)
        if key in self.layer or key in self.sessions_by_invite:
            raise ValueError(f"INVITE {request.call_id} already has a transaction here ({key})")
        dialog = Dialog.from_uas_request(request, local_tag) if local_tag else None
        if dialog is not None and dialog.id in self.dialogs:
            raise ValueError(f"dialog {dialog.id} already exists here")
        actions = self.layer.receive(request, source, self.now())
        if any(isinstance(a, MergedRequest) for a in actions):
            self._perform(actions)  # the 482 a merged request gets (§8.2.2.2)
            raise ValueError(f"INVITE {request.call_id} merges with one this UA already serves")
        # The layer created the INVITE server transaction (Proceeding) and hands the INVITE up:
        # the application handled it on the node that received it; it is not told twice.
        actions = [a for a in actions if not (isinstance(a, ToTU) and a.key == key)]
        session = Session(self, role="uas", invite=request)
        session.invite_key = key
        session.source = session.dest = source
        session.remote_sdp = sdp_of(request)
        if local_sdp is not None:
            session.local_sdp = local_sdp
        if dialog is not None:
            session.dialog = dialog
            session.state = SESSION_EARLY
            self.dialogs[dialog.id] = session
        self.sessions_by_invite[key] = session
        self._perform(actions)
        return session
