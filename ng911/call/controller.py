"""The emergency call controller: admits INVITEs from the caller side and drives their calls.

It is the UA core's handler. A new INVITE from a trusted upstream peer becomes a `Call`;
every event on either leg is dispatched to the call that owns the session. Untrusted peers
get 403; an emergency call is never rejected for want of an answer point (it waits in its
queue), and never challenged (no 401/407, NENA i3).
"""
from __future__ import annotations

import ipaddress
import logging
import secrets
from typing import Any, Callable, Iterable

from ng911.call.call import Call
from ng911.call.observer import CallObserver, cseq_advanced
from ng911.call.overload import OverloadGuard
from ng911.call.port import CallPort
from ng911.call.state import UNANSWERED, CallState, EndReason, FailoverCause
from ng911.emergency import append_history, classify, ensure_ids, extract, headers_to_forward
from ng911.routing.model import RoutingSpec
from ng911.routing.pool import AnswerPoint, Pool
from ng911.sip.headers import parse_name_addr, printable_display_name
from ng911.sip.message import Request, Response
from ng911.sip.timerwheel import TimerHandle
from ng911.sip.trust import TrustPolicy
from ng911.sip.uri import SipUri, parse_uri
from ng911.sip.ua import Session, UaHandler, UserAgent, flow_from_dict, parse_stored_invite

log = logging.getLogger("ng911.controller")


def _content_record(content: Any) -> dict[str, Any]:
    """What the store keeps of a call's NG9-1-1 content (JSON-able)."""
    location = content.location
    full = content.to_dict()
    return {
        "nena_call_id": content.call_id,
        "nena_incident_id": content.incident_id,
        "location": {
            "value": location.to_dict() if location is not None else None,
            "references": list(content.location_references),
            "geolocation": full["geolocation"],
            "routing": content.geolocation_routing,
            "errors": full["errors"],
        },
        "additional_data": full["additional_data"],
        "headers": {
            "call_info": full["call_info"],
            "resource_priority": full["resource_priority"],
            "history_info": full["history_info"],
        },
    }


UPSTREAM_REFRESH_FAILURES_TOLERATED = 2
#: seconds a peer is asked to wait before retrying a request meant for a call another node has
STRAY_RETRY_AFTER = 2


def _upstream_end_reason(session: Session) -> EndReason:
    """Why the caller's leg ended under us, as the UA core tells it (not from free text)."""
    cause = session.failure[1] if session.failure is not None else None
    if cause == "no_ack":
        return EndReason.NO_ACK  # the UA core has sent the BYE (RFC 3261 §13.3.1.4)
    if cause == "expired":
        return EndReason.SESSION_EXPIRED  # the UA core has sent the BYE (RFC 4028 §10)
    return EndReason.CALLER_GONE


class Controller(UaHandler):
    def __init__(
        self,
        routing: RoutingSpec,
        observer: CallObserver,
        *,
        trusted: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] | TrustPolicy,
        domain: str = "ng911.invalid",
        node: str = "node1",
        transfer_targets: Iterable[str] = (),
    ) -> None:
        self.routing = routing
        self.pool = Pool(routing)
        self.observer = observer
        #: who may send us calls (addresses, TLS identities): ng911.sip.trust
        self.trust = trusted if isinstance(trusted, TrustPolicy) else TrustPolicy(trusted)
        self.domain = domain
        self.node = node
        #: REFER targets allowed besides answer points and queues (transfer.allowed_targets)
        self.transfer_targets = frozenset(_uri_key(t) for t in transfer_targets)
        self.ua: UserAgent = None  # type: ignore[assignment]  # set by attach()
        self.calls: dict[str, Call] = {}
        self.on_call_ended: Callable[[Call], None] | None = None
        self.overload = OverloadGuard()
        #: what calls are built on: this controller, seen through the narrow CallPort
        self.call_port: CallPort = self
        #: the cluster's verdict: may this node act on a call now (see ng911.cluster.member)
        self.acting: Callable[[Call], bool] = lambda call: True
        #: told the SIP Call-IDs of a call this node lost (the send gate drops their requests)
        self.on_call_lost: Callable[[list[str]], None] | None = None
        #: cluster-wide seats at the positions (ng911.cluster.seats.SeatKeeper); None: one node
        self.seats: Any = None
        #: the cluster's answer to "is this SIP Call-ID a live call of another node?" (async)
        self.stray_owner: Callable[[str, Callable[[bool], None]], None] | None = None

    def attach(self, ua: UserAgent) -> None:
        self.ua = ua
        # A TLS peer with a trusted certificate may act in a dialog another address set up (an
        # upstream element's redundant partner after its own takeover); an address may not.
        ua.vouch = self.trust.trusts_certificate

    def on_unbound(self, session: Session, request: Request, source: Any) -> None:
        call = self._call_of(session)
        leg = "none" if call is None else ("upstream" if session is call.upstream else "psap")
        self.observer.stranger_refused(call, request.method, leg, source)

    # --- the CallPort (ng911.call.port): all a Call sees of the node ---------------------
    def now(self) -> float:
        return self.ua.now()

    def call_at(self, when: float, fn: Callable[[float], None]) -> TimerHandle:
        return self.ua.timers.call_at(when, fn)

    def invite(self, target: str, **kwargs: Any) -> Session:
        return self.ua.invite(target, **kwargs)

    def may_act(self, call: Call) -> bool:
        return self.acting(call)

    def reserve(self, call: Call, ap: AnswerPoint, done: Callable[[bool], None]) -> None:
        if self.seats is None:
            done(True)
        else:
            self.seats.reserve(call.call_id, ap.name, ap.spec.capacity, done, queue=call.queue, created=call.created)

    def seat_held(self, call: Call, ap: AnswerPoint) -> None:
        if self.seats is not None and ap.name in self.pool.aps:
            self.seats.held(call.call_id, ap.name, ap.spec.capacity)

    def seat_freed(self, call: Call, ap: AnswerPoint) -> None:
        if self.seats is not None:
            self.seats.free(call.call_id, ap.name)

    # --- admission ------------------------------------------------------------------------
    def _trusted(self, source: Any) -> bool:
        return self.trust.trusts(source)

    def on_invite(self, session: Session, request: Request) -> None:
        kind = classify(request, self.routing.psap_uris)
        if not self._trusted(session.source):
            log.warning("INVITE from untrusted peer %s refused (403) call-id=%s", getattr(session.source, "remote", None), request.call_id)
            self.observer.refused(request, "untrusted peer", kind)
            session.reject(403, "Forbidden: untrusted peer")
            return
        if kind == "other":
            if self.overload.overloaded(self.now()):
                # Overload: emergency calls keep the node; anything else waits its turn.
                self.observer.refused(request, "overloaded")
                session.reject(503, "Service Unavailable", (("Retry-After", "5"),))
                return
            if self.routing.other_queue is None:
                self.observer.refused(request, "not an emergency call")
                session.reject(404, "Not Found")
                return
            queue = self.routing.other_queue
        elif kind == "test":
            queue = self.routing.test_queue or self.routing.emergency_queue
        else:
            queue = self.routing.emergency_queue
        # NENA call and incident ids: kept when the caller side sent them, minted when not;
        # either way they travel on the PSAP leg in Call-Info with the rest of the content.
        request = request.replace(headers=ensure_ids(request.headers, self.domain))
        session.invite = request
        info = _content_record(extract(request))
        forward = headers_to_forward(request)
        call_id = f"{self.node}-{secrets.token_hex(6)}"
        call = Call(self.call_port, session, request, call_id=call_id, kind=kind, queue=queue, content=info, forward_headers=forward)
        session.user_data["call"] = call
        session.user_data["role"] = "upstream"
        # A lost or unanswered session refresh does not end an emergency call's leg at once
        # (RFC 4028 §10 would): retried twice, then the bounded give-up BYE (session_expired).
        session.refresh_failures_tolerated = UPSTREAM_REFRESH_FAILURES_TOLERATED
        # The To-tag is chosen now and stored with the INVITE's flow: a node that takes the
        # call over before it is answered answers with the same tag (one early dialog).
        session.ensure_local_tag()
        self.calls[call_id] = call
        self.observer.created(call)
        call.start()

    # --- dispatch -------------------------------------------------------------------------
    @staticmethod
    def _call_of(session: Session) -> Call | None:
        call = session.user_data.get("call")
        return call if isinstance(call, Call) else None

    def on_provisional(self, session: Session, response: Response) -> None:
        call = self._call_of(session)
        if call is not None and session is not call.upstream:
            call.on_leg_provisional(session, response)

    def on_answered(self, session: Session, response: Response) -> None:
        call = self._call_of(session)
        if call is None:
            session.bye(reason="not wanted")
            return
        call.on_leg_answered(session, response)

    def on_failed(self, session: Session, response: Response | None, reason: str) -> None:
        call = self._call_of(session)
        if call is not None and session is not call.upstream:
            call.on_leg_failed(session, response, reason)

    def on_confirmed(self, session: Session, ack: Request | None) -> None:
        call = self._call_of(session)
        if call is not None and session is call.upstream:
            call.on_caller_ack(ack)

    def on_reinvite(self, session: Session, request: Request) -> None:
        call = self._call_of(session)
        if call is None:
            session.accept_update(session.local_sdp)
            return
        call.on_reoffer(session, request)

    def on_update(self, session: Session, request: Request) -> None:
        call = self._call_of(session)
        if call is None:
            session.accept_update(None)
            return
        call.on_reoffer(session, request)

    def on_cancelled(self, session: Session, request: Request) -> None:
        call = self._call_of(session)
        if call is not None and session is call.upstream:
            call.caller_cancelled()

    def on_terminated(self, session: Session, reason: str) -> None:
        call = self._call_of(session)
        if call is None:
            return
        if session is call.upstream:
            if reason == "remote BYE":
                call.caller_hung_up()
            elif not call.ended and reason not in ("cancelled",):
                call.end(_upstream_end_reason(session), detail=reason)
            return
        call.on_leg_terminated(session, reason)

    def on_stray(self, request: Request, reply: Callable[..., None]) -> bool:
        """A request in a dialog this node does not have. In a cluster it may be a call another
        node owns (this node lost it, or the front re-routed a request meant for a dead node):
        then it gets 500 with Retry-After — the caller retries, by then at the owner whose
        target refresh tells it where (a 481 or 408 would make it end the dialog, RFC 3261
        §12.2.1.2). Otherwise 481 as usual."""
        if self.stray_owner is None:
            return False

        def owned(elsewhere: bool) -> None:
            if elsewhere:
                log.info("in-dialog %s for call-id %s owned by another node: 500 Retry-After",
                         request.method, request.call_id)
                reply(500, "Call Handled By Another Node", headers=(("Retry-After", str(STRAY_RETRY_AFTER)),))
            else:
                reply(481)

        self.stray_owner(request.call_id, owned)
        return True

    def on_request(self, session: Session | None, request: Request, reply: Callable[..., None]) -> None:
        call = self._call_of(session) if session is not None else None
        if request.method == "REFER" and call is not None and session is call.psap:
            self._refer(call, session, request, reply)
            return
        if request.method == "REFER":
            reply(403 if session is None else 603)
            return
        super().on_request(session, request, reply)

    # --- transfer -------------------------------------------------------------------------
    def _refer(self, call: Call, leg: Session, request: Request, reply: Callable[..., None]) -> None:
        refer_to = request.headers.get("Refer-To")
        if not refer_to or call.state is not CallState.TALKING:
            reply(400 if not refer_to else 491, "Missing Refer-To" if not refer_to else None)
            return
        try:
            target = parse_name_addr(refer_to).uri
        except ValueError:
            reply(400, "Bad Refer-To")
            return
        user = getattr(target, "user", None)
        queue = None
        if user is not None and any(q.name == user for q in self.routing.queues):
            queue = user
        ap = self.pool.by_uri(str(target).split(";")[0]) if queue is None else None
        if queue is None and ap is None and _uri_key(str(target)) not in self.transfer_targets:
            # A position cannot send the caller (and their location) just anywhere; the call
            # carries on with the position that asked (NENA: a failed transfer keeps the call).
            log.warning("REFER to %s refused (not an answer point, queue or allowed target) call-id=%s",
                        target, call.call_id)
            self.observer.transfer_refused(call, str(target))
            reply(403, "Forbidden: transfer target not allowed")
            return
        reply(202)

        def notify(status: int, reason: str, final: bool = False) -> None:
            if leg.state == "terminated":
                return
            state = "terminated;reason=noresource" if final else "active;expires=60"
            leg.request(
                "NOTIFY",
                body=f"SIP/2.0 {status} {reason}\r\n".encode(),
                content_type="message/sipfrag;version=2.0",
                headers=(("Event", "refer"), ("Subscription-State", state)),
            )

        notify(100, "Trying")
        if ap is not None:
            call.start_transfer(leg, ap.spec.uri, None, notify)
        elif queue is not None:
            call.start_transfer(leg, str(target), queue, notify)
        else:
            call.start_transfer(leg, str(target), None, notify)

    # --- helpers used by Call -----------------------------------------------------------------
    def psap_from(self, call: Call) -> str:
        """The From of the PSAP leg: the caller's identity (display name and URI), new tag.
        The display name loses any control character (an escaped NUL is legal from the caller,
        not something to hand a position's phone): see printable_display_name."""
        f = call.request.from_
        return str(f.__class__(printable_display_name(f.display_name), f.uri, ()))

    def history_for(self, call: Call, target: str) -> list[tuple[str, str]]:
        existing = call.request.headers.values("History-Info")
        entries = append_history(existing, target, None)
        return [("History-Info", v) for v in entries]

    def save_legs(self, call: Call) -> None:
        self.observer.legs(call)

    def queue_wait_started(self, call: Call) -> None:
        self.observer.queue_wait_started(call)

    def queue_wait_ended(self, call: Call) -> None:
        self.observer.queue_wait_ended(call)

    def call_ended(self, call: Call, outcome: str, reason: str) -> None:
        self.calls.pop(call.call_id, None)
        # Unlink the legs from the call (session.user_data → call → session is a cycle):
        # refcounting then frees both as soon as the UA lets go of the sessions.
        for leg in call.legs():
            leg.user_data.pop("call", None)
        self.observer.ended(call, outcome, reason)
        if self.on_call_ended is not None:
            self.on_call_ended(call)

    def save_advanced_cseqs(self, margin: int) -> int:
        """Save again the legs of every call whose CSeq moved ``margin`` past the stored one
        (in-dialog probes and refreshes use CSeqs without a state change to save them); the
        number of calls saved. Keeps the stored CSeq within ``margin`` of the truth, so the
        gap a successor jumps (`CSEQ_GAP`) always clears what this node used."""
        saved = 0
        for call in self.calls.values():
            if not call.ended and cseq_advanced(call, margin):
                self.save_legs(call)
                saved += 1
        return saved

    # --- a call taken over, a call lost ----------------------------------------------------
    def forget_call(self, call_id: str, why: str) -> bool:
        """Another node owns the call now: stop acting on it at once and say nothing more on
        it (Call.detach); its record is the new owner's to write. False: not a call here."""
        call = self.calls.pop(call_id, None)
        if call is None:
            return False
        sip_ids = sorted({leg.call_id for leg in call.legs()})
        call.detach(why)
        for leg in call.legs():
            leg.user_data.pop("call", None)
        self.observer.lost(call, why)
        if self.on_call_lost is not None:
            self.on_call_lost(sip_ids)
        return True

    def restore_call(self, row: dict[str, Any], *, taken_from: str | None = None) -> Call:
        """Adopt the stored dialogs of a talking call (``row``: a calls row with its ``legs``)
        and carry it on from here: both legs get a target refresh. A call that was moving is
        restored on the position it was leaving: the refresh of that leg tells whether it is
        still there (if not, it fails over as any call would). Who may take a call over
        (leases, fencing) is the cluster's business; this is the mechanism."""
        state = CallState(row["state"])
        if state in UNANSWERED:
            return self._restore_unanswered(row, taken_from)
        if state is CallState.MOVING and row.get("legs", {}).get("psap"):
            row = dict(row, state=CallState.TALKING.value)
        elif state is not CallState.TALKING:
            raise ValueError(f"a call in state {row['state']} cannot be restored yet")
        legs = row["legs"]
        up, ap = legs["upstream"], legs["psap"]
        upstream = self.ua.adopt(up["dialog"], local_sdp=up["local_sdp"], remote_sdp=up["remote_sdp"])
        psap = self.ua.adopt(ap["dialog"], local_sdp=ap["local_sdp"], remote_sdp=ap["remote_sdp"],
                             session_interval=self.routing.failover.session_expires)
        stored = row.get("upstream_invite")
        request = parse_stored_invite(stored) if stored else None
        call = Call.restore(self.call_port, row, upstream=upstream, psap=psap, request=request,
                            forward_headers=headers_to_forward(request) if request is not None else [])
        self._adopted(call)
        call.resume(taken_from=taken_from)
        # the CSeqs this node uses now (past the gap) are stored at once: a node that takes the
        # call from this one in turn must jump past them, not past the dead node's
        self.save_legs(call)
        return call

    def _restore_unanswered(self, row: dict[str, Any], taken_from: str | None) -> Call:
        """A call whose caller was not answered yet: its INVITE is adopted on the original
        transaction (same Via stack, same To-tag), and it is hunted again from the start."""
        raw, flow = row.get("upstream_invite"), row.get("upstream_flow")
        if not raw or not flow:
            raise ValueError(f"call {row['call_id']} ({row['state']}) has no stored INVITE to answer")
        upstream = self.ua.adopt_invite(raw, source=flow_from_dict(flow), local_tag=flow.get("local_tag"))
        call = Call.restore_unanswered(self.call_port, row, upstream=upstream,
                                       forward_headers=headers_to_forward(upstream.invite))
        self._adopted(call)
        call.resume_hunt(taken_from=taken_from)
        return call

    def _adopted(self, call: Call) -> None:
        """A call rebuilt here from the store is this node's now; its caller's leg tolerates
        refresh failures as on admission."""
        call.upstream.refresh_failures_tolerated = UPSTREAM_REFRESH_FAILURES_TOLERATED
        self.calls[call.call_id] = call
        self.observer.restored(call)

    # --- operator / drill -----------------------------------------------------------------
    #: what an operator may ask of a call, from any node (ng911.cluster.commands)
    COMMANDS = ("release", "move")

    def run_command(self, command: dict[str, Any]) -> tuple[bool, str]:
        """Carry out an operator's command on a call this node owns (it may have been issued
        on another node: it travelled through the database). (done, what happened)."""
        call = self.calls.get(command.get("call_id") or "")
        action = command.get("action")
        if call is None or call.ended:
            return False, "no such live call on this node"
        call.event("operator_command", action=action, issued_by=command.get("issued_by"),
                   command=command.get("id"))
        if action == "release":
            call.release()
            return True, "released"
        if action == "move":
            if call.state is not CallState.TALKING:
                return False, f"cannot move a call that is {call.state.value}"
            call.fail_over(FailoverCause.OPERATOR)
            return True, "moving to another position"
        return False, f"unknown action {action!r} (known: {', '.join(self.COMMANDS)})"


    def fail_over_answer_point(self, name: str, reason: FailoverCause | str = FailoverCause.AP_DOWN) -> int:
        """Move every call connected to answer point ``name`` (health said down, or a drill)."""
        moved = 0
        for call in list(self.calls.values()):
            if call.psap_ap is not None and call.psap_ap.name == name and call.state is CallState.TALKING:
                call.fail_over(reason)
                moved += 1
        return moved


def _uri_key(uri: str) -> str:
    """A SIP URI as compared for transfers: scheme, user, host and port (RFC 3261 §19.1.4 without
    the parameters; a sips: target is not the sip: one)."""
    try:
        u = parse_uri(uri.strip().strip("<>"))
    except ValueError:
        return uri
    if not isinstance(u, SipUri):
        return str(u)
    return f"{u.scheme}:{u.user or ''}@{u.host.lower()}:{u.port or ''}"
