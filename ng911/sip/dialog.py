"""Dialog state (RFC 3261 §12): plain data, serialisable, no I/O.

A dialog is identified by (Call-ID, local tag, remote tag) and holds what a UA needs to send
requests within it and to check the ones it receives: CSeq numbers, the route set, the remote
target. `to_dict`/`from_dict` give the form the store keeps, so another node can rebuild it.

    UAC: INVITE ──1xx with To tag──▶ early ──2xx──▶ confirmed ──BYE──▶ terminated
    UAS: INVITE ──we send 1xx/2xx with tag──▶ early / confirmed ──BYE──▶ terminated
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from ng911.sip.headers import NameAddr, parse_name_addr
from ng911.sip.message import Headers, Request, Response
from ng911.sip.uri import SipUri, parse_uri

EARLY, CONFIRMED, TERMINATED = "early", "confirmed", "terminated"
# Methods whose request and 2xx carry a new remote target (RFC 3261 §12.2, RFC 3311 §5.1).
TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})


class DialogError(ValueError):
    """A request that does not fit the dialog; ``status`` is the answer to send."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # our From (UAC) / To (UAS) address, without tag
    remote_uri: str
    remote_target: str
    route_set: tuple[str, ...] = ()
    local_seq: int = 0  # 0 = not chosen yet (a UAS before its first request)
    remote_seq: int | None = None
    secure: bool = False
    state: str = EARLY
    is_uac: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    # --- creation ---------------------------------------------------------------------
    @classmethod
    def from_uac_response(cls, request: Request, response: Response) -> Dialog:
        """§12.1.2: the dialog a 1xx/2xx (with To tag) to our INVITE creates."""
        route_set = tuple(str(r) for r in reversed(response.record_routes))
        contact = response.contacts[0].uri if response.contacts else request.uri
        return cls(
            call_id=request.call_id,
            local_tag=request.from_.tag or "",
            remote_tag=response.to.tag or "",
            local_uri=_without_tag(request.from_),
            remote_uri=_without_tag(response.to),
            remote_target=str(contact),
            route_set=route_set,
            local_seq=request.cseq.seq,
            remote_seq=None,
            secure=isinstance(request.uri, SipUri) and request.uri.is_secure,
            state=CONFIRMED if 200 <= response.status < 300 else EARLY,
            is_uac=True,
        )

    @classmethod
    def from_uas_request(cls, request: Request, local_tag: str, *, confirmed: bool = False) -> Dialog:
        """§12.1.1: the dialog our 1xx/2xx (carrying ``local_tag``) creates."""
        contact = request.contacts[0].uri if request.contacts else request.from_.uri
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_.tag or "",
            local_uri=_without_tag(request.to),
            remote_uri=_without_tag(request.from_),
            remote_target=str(contact),
            route_set=tuple(str(r) for r in request.record_routes),
            local_seq=0,
            remote_seq=request.cseq.seq,
            secure=isinstance(request.uri, SipUri) and request.uri.is_secure,
            state=CONFIRMED if confirmed else EARLY,
            is_uac=False,
        )

    # --- sending ---------------------------------------------------------------------
    def next_cseq(self) -> int:
        if self.local_seq == 0:
            self.local_seq = random.randint(1, 2**16)
        else:
            self.local_seq += 1
        return self.local_seq

    def request_uri_and_routes(self) -> tuple[str, list[str]]:
        """§12.2.1.1: loose routing when the first route has ``lr``, else strict routing."""
        if not self.route_set:
            return self.remote_target, []
        first = parse_name_addr(self.route_set[0])
        if first.uri.has_param("lr"):
            return self.remote_target, list(self.route_set)
        # Strict router: it becomes the Request-URI, the remote target the last route.
        return str(first.uri), [
            *self.route_set[1:],
            f"<{self.remote_target}>",
        ]

    def create_request(
        self,
        method: str,
        *,
        cseq: int | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
    ) -> Request:
        """A request within the dialog, without Via (the UA core adds it when it sends).

        ACK and CANCEL reuse the INVITE's CSeq number (pass ``cseq``); others take the next.
        """
        uri_text, routes = self.request_uri_and_routes()
        seq = cseq if cseq is not None else self.next_cseq()
        items: list[tuple[str, str]] = [(("Route"), r) for r in routes]
        items += [
            ("Max-Forwards", "70"),
            ("From", f"{self.local_uri};tag={self.local_tag}"),
            ("To", f"{self.remote_uri};tag={self.remote_tag}"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{seq} {method}"),
        ]
        items.extend(headers)
        return Request(method, parse_uri(uri_text), Headers(items), body)

    # --- receiving -------------------------------------------------------------------
    def check_request(self, request: Request) -> None:
        """§12.2.2: CSeq order and target refresh. Raises `DialogError` (500) on a stale CSeq."""
        seq = request.cseq.seq
        if request.method not in ("ACK", "CANCEL"):
            if self.remote_seq is not None and seq < self.remote_seq:
                raise DialogError("CSeq out of order", 500)
            if self.remote_seq is None or seq > self.remote_seq:
                self.remote_seq = seq
        if request.method in TARGET_REFRESH and request.contacts:
            self.remote_target = str(request.contacts[0].uri)

    def update_from_response(self, request: Request, response: Response) -> None:
        """Our request's response: early → confirmed on 2xx to INVITE; target refresh."""
        if request.method == "INVITE" and 200 <= response.status < 300 and self.state == EARLY:
            self.state = CONFIRMED
            # §12.1.2: the route set is fixed by the 2xx of the dialog-creating INVITE.
            if response.record_routes:
                self.route_set = tuple(str(r) for r in reversed(response.record_routes))
        if request.method in TARGET_REFRESH and 200 <= response.status < 300 and response.contacts:
            self.remote_target = str(response.contacts[0].uri)

    # --- persistence -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["route_set"] = list(self.route_set)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Dialog:
        data = dict(data)
        data["route_set"] = tuple(data.get("route_set", ()))
        return cls(**data)


def _without_tag(addr: NameAddr) -> str:
    return str(addr.__class__(addr.display_name, addr.uri, tuple(p for p in addr.params if p[0].lower() != "tag")))


def dialog_id_for_incoming(request: Request) -> tuple[str, str, str]:
    """The dialog id as seen by the receiver of ``request``: (Call-ID, To tag, From tag)."""
    return (request.call_id, request.to.tag or "", request.from_.tag or "")


def dialog_id_for_response(response: Response) -> tuple[str, str, str]:
    """The dialog id as seen by the UAC receiving ``response``: (Call-ID, From tag, To tag)."""
    return (response.call_id, response.from_.tag or "", response.to.tag or "")
