"""Everything a call does, made visible: the call event log (store), metrics and logs.

One place maps call-control happenings onto the write-behind store, the Prometheus metrics
and structured log lines carrying the call id and NENA call id. Calls never wait on it: the
store only enqueues, metrics are in memory.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ng911.call.state import CallState
from ng911.metrics import SIP_METHODS
from ng911.sip.message import Request
from ng911.sip.ua import flow_to_dict

if TYPE_CHECKING:
    from ng911.call.call import Call

log = logging.getLogger("ng911.call")

def _local_seqs(call: Call) -> tuple[int, int]:
    """Our CSeq on the caller's leg and on the position's leg (0 where there is none)."""
    up = call.upstream.dialog
    ap = call.psap.dialog if call.psap is not None else None
    return (up.local_seq or 0 if up is not None else 0, ap.local_seq or 0 if ap is not None else 0)


def cseq_advanced(call: Call, margin: int) -> bool:
    """Has either leg's CSeq moved ``margin`` past what the store holds? (A node taking the
    call over jumps ``CSEQ_GAP`` past the stored CSeq: the stored one must stay close.)"""
    saved = call.saved_cseq
    if saved is None:
        return False
    now = _local_seqs(call)
    return now[0] - saved[0] >= margin or now[1] - saved[1] >= margin


def _hunt_result(kind: str, data: dict[str, Any]) -> str | None:
    """The ``result`` label of ng911_hunt_attempts_total for an attempt's outcome."""
    if kind in ("answered", "moved"):
        return "answered"
    if kind in ("ap_timeout", "ap_failed"):
        return data.get("result")
    return None


class CallObserver:
    def __init__(self, store: Any, metrics: Any, *, node: str, epoch: int) -> None:
        self.store = store
        self.metrics = metrics
        self.owner = (node, epoch)
        self._queued_at: dict[str, float] = {}
        # Extra subscribers to call events (the demo's narrator, a future live console).
        self.listeners: list[Any] = []

    # --- the call log ---------------------------------------------------------------------
    def event(self, call: Call, kind: str, /, **data: Any) -> None:
        now = call.c.now()
        clean = {k: v for k, v in data.items() if v is not None}
        log.info(
            "call %s %s %s", call.call_id, kind, " ".join(f"{k}={v}" for k, v in clean.items()),
            extra={"call_id": call.call_id, "nena_call_id": call.nena_call_id, "event": kind, **{f"ev_{k}": v for k, v in clean.items()}},
        )
        self.store.event(call.call_id, self.owner, kind, now, clean)
        for listener in self.listeners:
            listener(call, kind, clean)
        # Every state change of a call carries its new state (Call._to): the row follows.
        state = clean.get("state")
        if state is not None and kind not in ("received", "routing", "ended"):  # created() and ended() write those
            fields: dict[str, Any] = {"state": state, "updated_at": now}
            if kind in ("answered", "moved") and call.psap_ap is not None:
                fields["answer_point"] = call.psap_ap.name
            if kind == "answered":
                fields["answered_at"] = now
            # the move in progress, for a node that takes the call over mid-move
            fields["move"] = ({"cause": clean.get("reason"), "event": kind, "started": now}
                              if state == CallState.MOVING.value else None)
            self.store.call_updated(call.call_id, self.owner, **fields)
        result = _hunt_result(kind, clean)
        if result is not None:
            self.metrics.hunt_attempts.labels(result=result).inc()

    def created(self, call: Call) -> None:
        req = call.request
        self.store.call_created(
            {
                "call_id": call.call_id,
                "sip_call_id": req.call_id,
                "nena_call_id": call.content.get("nena_call_id"),
                "nena_incident_id": call.content.get("nena_incident_id"),
                "kind": call.kind,
                "state": call.state.value,
                "caller": str(req.from_.uri),
                "caller_display": req.from_.display_name,
                "request_uri": str(req.uri),
                "queue": call.queue,
                "location": call.content.get("location"),
                "additional_data": call.content.get("additional_data", []),
                "headers": call.content.get("headers", {}),
                "created_at": call.created,
                "owner_node": self.owner[0],
                "owner_epoch": self.owner[1],
                # the caller's INVITE as this node answers it (Via stack, body): a node that
                # takes the call over before it is answered answers on the same transaction
                "upstream_invite": req.to_bytes(),
                "upstream_flow": self._flow(call),
            }
        )
        self.metrics.active_calls.labels(kind=call.kind).inc()
        self.metrics.calls_in_state.labels(state=call.state.value).inc()
        self.event(call, "received", kind=call.kind, caller=str(req.from_.uri), request_uri=str(req.uri),
                   sip_call_id=req.call_id, nena_call_id=call.nena_call_id)

    @staticmethod
    def _flow(call: Call) -> dict[str, Any] | None:
        """Where the caller's INVITE came from and the To-tag we answer it with."""
        up = call.upstream
        try:
            flow = flow_to_dict(up.source)
        except (TypeError, ValueError, AttributeError):
            return None  # (a test double with no real flow)
        if up.dialog is not None:
            flow["local_tag"] = up.dialog.local_tag
        return flow

    def restored(self, call: Call) -> None:
        """A call taken over from the store: live again on this node."""
        self.metrics.active_calls.labels(kind=call.kind).inc()
        self.metrics.calls_in_state.labels(state=call.state.value).inc()

    def lost(self, call: Call, why: str) -> None:
        """Another node owns the call now: this node stops counting it (nothing is written:
        the row is the new owner's)."""
        log.warning("call %s lost: %s; this node stops acting on it", call.call_id, why,
                    extra={"call_id": call.call_id, "nena_call_id": call.nena_call_id, "event": "lost"})
        self.metrics.active_calls.labels(kind=call.kind).dec()
        self.metrics.cluster_calls_lost.inc()
        self.queue_wait_ended(call)

    def state_changed(self, call: Call, old: CallState, new: CallState) -> None:
        """Every transition of a call (Call._to, Call.end): ng911_calls_in_state follows."""
        self.metrics.calls_in_state.labels(state=old.value).dec()
        if new is not CallState.ENDED:
            self.metrics.calls_in_state.labels(state=new.value).inc()

    def refused(self, request: Request, reason: str, kind: str = "other") -> None:
        log.warning("call refused: %s kind=%s call-id=%s from=%s", reason, kind, request.call_id, request.headers.get("From"))
        self.metrics.calls.labels(kind=kind, outcome="rejected").inc()

    def stranger_refused(self, call: Call | None, method: str, leg: str, source: Any) -> None:
        """An in-dialog request from someone other than the dialog's peer got 403."""
        label = method if method in SIP_METHODS else "other"
        self.metrics.sip_dialog_strangers.labels(method=label, leg=leg).inc()
        if call is not None and label not in call.strangers_seen:
            call.strangers_seen.add(label)  # once per method: a flood of forgeries is no flood of events
            self.event(call, "stranger_refused", method=method, source=list(getattr(source, "remote", ()) or ()))

    def transfer_refused(self, call: Call, target: str) -> None:
        self.metrics.sip_refer_refused.inc()
        self.event(call, "transfer_refused", target=target)

    def answered(self, call: Call) -> None:
        if call.answered_at is not None:
            self.metrics.time_to_answer.labels(kind=call.kind).observe(call.answered_at - call.created)

    def legs(self, call: Call) -> None:
        up = call.upstream
        call.saved_cseq = _local_seqs(call)
        # The UA core only reads a plain application/sdp body into remote_sdp: the offer of
        # an NG9-1-1 multipart INVITE is the call's caller_offer.
        remote_up = up.remote_sdp if up.remote_sdp is not None else call.caller_offer
        self.store.leg_saved(call.call_id, self.owner, "upstream", up.dialog.to_dict() if up.dialog else None,
                             call.last_sent_up, remote_up, None)
        if call.psap is not None:
            leg = call.psap
            self.store.leg_saved(call.call_id, self.owner, "psap", leg.dialog.to_dict() if leg.dialog else None,
                                 call.last_sent_ap, leg.remote_sdp, call.psap_ap.name if call.psap_ap else None)

    def failover_started(self, call: Call, reason: str) -> None:
        self.metrics.failovers.labels(reason=reason).inc()

    def failover_done(self, call: Call, reason: str, seconds: float) -> None:
        self.metrics.failover_duration.observe(seconds)

    def queue_wait_started(self, call: Call) -> None:
        if call.call_id not in self._queued_at:
            self._queued_at[call.call_id] = call.c.now()
            self.metrics.queue_length.labels(queue=call.queue).inc()

    def queue_wait_ended(self, call: Call) -> None:
        started = self._queued_at.pop(call.call_id, None)
        if started is not None:
            self.metrics.queue_length.labels(queue=call.queue).dec()
            self.metrics.time_in_queue.labels(queue=call.queue).observe(call.c.now() - started)

    def abandoned(self, call: Call) -> None:
        # The callback list (and its counter) is for emergency calls: a test call is never
        # counted or logged as a real emergency, and nobody calls back a non-emergency line.
        if call.kind != "emergency":
            return
        self.metrics.abandoned_calls.inc()
        req = call.request
        caller = req.from_
        identity = str(caller.__class__(caller.display_name, caller.uri, ()))  # without the tag
        self.store.abandoned(call.call_id, self.owner, identity, call.content.get("location"), call.c.now())

    def ended(self, call: Call, outcome: str, reason: str) -> None:
        now = call.c.now()
        self.store.call_updated(call.call_id, self.owner, state="ended", ended_at=now, outcome=outcome,
                                end_reason=reason, updated_at=now)
        self.metrics.active_calls.labels(kind=call.kind).dec()
        self.metrics.calls.labels(kind=call.kind, outcome=outcome).inc()
