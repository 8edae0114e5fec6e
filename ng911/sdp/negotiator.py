"""RFC 3264 offer/answer state of one leg, and the ``o=`` version rules (RFC 3264 §8).

Modelled on pjmedia's ``sdp_neg`` but without codec negotiation: the controller relays
descriptions between legs, so this machine only tracks who owes whom an answer and keeps
the active local/remote descriptions. Every method returns a new frozen state; an illegal
transition raises and the old state stays as it was::

               send_offer    +-------------+   receive_answer
          +----------------->| LOCAL_OFFER |-------------------+
          |                  +-------------+                   |
          |       cancel_offer  |   ^    receive_offer here:   v
      +------+ <----------------+   |    GlareError (491) +------+
      | NULL |   (or to DONE)       +--------send_offer---| DONE |
      +------+ <----------------+   +------receive_offer--|      |
          |       reject_offer  |   v                     +------+
          |                  +--------------+                  ^
          +----------------->| REMOTE_OFFER |------------------+
              receive_offer  +--------------+    send_answer

``DONE`` is the idle state of an established session; ``NULL`` has none yet.
Checks on the way: an answer has exactly the offer's number of m-lines (§6); a new offer
never has fewer m-lines than the session (§8); every SDP we send continues our ``o=``
(same username/sess-id/address, version + 1 when changed, same version only when
identical, §8). Use :meth:`OfferAnswer.prepare` (or :func:`versioned`) to get that right.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from .errors import (
    GlareError,
    LocalOfferAnswerError,
    RemoteOfferAnswerError,
)
from .model import SessionDescription

__all__ = ["OaEvent", "OaState", "OfferAnswer", "subsequent_problems", "versioned"]


class OaState(enum.StrEnum):
    NULL = "null"
    LOCAL_OFFER = "local-offer"
    REMOTE_OFFER = "remote-offer"
    DONE = "done"


class OaEvent(enum.StrEnum):
    SEND_OFFER = "send_offer"
    RECEIVE_OFFER = "receive_offer"
    SEND_ANSWER = "send_answer"
    RECEIVE_ANSWER = "receive_answer"
    CANCEL_OFFER = "cancel_offer"
    REJECT_OFFER = "reject_offer"


_ROLLBACK = None  # target resolved to DONE or NULL depending on whether a session exists

_TRANSITIONS: dict[OaState, dict[OaEvent, OaState | None]] = {
    OaState.NULL: {
        OaEvent.SEND_OFFER: OaState.LOCAL_OFFER,
        OaEvent.RECEIVE_OFFER: OaState.REMOTE_OFFER,
    },
    OaState.LOCAL_OFFER: {
        OaEvent.RECEIVE_ANSWER: OaState.DONE,
        OaEvent.CANCEL_OFFER: _ROLLBACK,
    },
    OaState.REMOTE_OFFER: {
        OaEvent.SEND_ANSWER: OaState.DONE,
        OaEvent.REJECT_OFFER: _ROLLBACK,
    },
    OaState.DONE: {
        OaEvent.SEND_OFFER: OaState.LOCAL_OFFER,
        OaEvent.RECEIVE_OFFER: OaState.REMOTE_OFFER,
    },
}

_LOCAL_EVENTS = frozenset(
    {OaEvent.SEND_OFFER, OaEvent.SEND_ANSWER, OaEvent.CANCEL_OFFER, OaEvent.REJECT_OFFER}
)


def versioned(
    last_sent: SessionDescription | None, desc: SessionDescription
) -> SessionDescription:
    """The SDP to send on a leg whose last sent SDP was ``last_sent`` (RFC 3264 §8).

    Keeps ``last_sent``'s ``o=`` (username, sess-id, nettype, addrtype, address); the
    version goes up by one when the content differs, and an unchanged description is
    ``last_sent`` itself (same version, same bytes). With no ``last_sent`` (first SDP
    on the leg), ``desc`` goes out as it is.
    """
    if last_sent is None:
        return desc
    if desc.content() == last_sent.content():
        return last_sent
    return desc.with_origin(last_sent.origin.next_version())


def _origin_problems(previous: SessionDescription, new: SessionDescription) -> list[str]:
    problems: list[str] = []
    old_o, new_o = previous.origin, new.origin
    if not old_o.same_session(new_o):
        problems.append(
            "o= must keep username, sess-id, nettype, addrtype and address (RFC 3264 §8)"
        )
    if new_o.sess_version == old_o.sess_version:
        if new.content() != previous.content():
            problems.append("a changed SDP must increment the o= version (RFC 3264 §8)")
    elif new_o.sess_version != old_o.sess_version + 1:
        problems.append(
            f"o= version must go from {old_o.sess_version} to {old_o.sess_version + 1}, "
            f"not {new_o.sess_version} (RFC 3264 §8)"
        )
    return problems


def subsequent_problems(
    previous: SessionDescription, new: SessionDescription
) -> tuple[str, ...]:
    """Why ``new`` is not a valid next SDP after ``previous`` from the same side (§8); () if it is.

    Same ``o=`` but the version, which goes up by one — or stays, for identical content —
    and no fewer m-lines.
    """
    problems = _origin_problems(previous, new)
    if len(new.media) < len(previous.media):
        problems.append(
            f"m-lines must not decrease: {len(previous.media)} -> {len(new.media)} (RFC 3264 §8)"
        )
    return tuple(problems)


@dataclass(frozen=True, slots=True)
class OfferAnswer:
    """Offer/answer state of one leg. Frozen: every transition returns the next state.

    ``local``/``remote`` are the descriptions of the active session (None before the first
    completed exchange); ``pending`` is the offer in flight; ``last_sent`` is the last SDP
    we sent on the leg, rolled-back offers included, so versions only ever go up.
    """

    state: OaState = OaState.NULL
    local: SessionDescription | None = None
    remote: SessionDescription | None = None
    pending: SessionDescription | None = None
    last_sent: SessionDescription | None = None

    @property
    def has_session(self) -> bool:
        return self.local is not None and self.remote is not None

    def prepare(self, desc: SessionDescription) -> SessionDescription:
        """``desc`` with the ``o=`` this leg must send next (see :func:`versioned`)."""
        return versioned(self.last_sent, desc)

    def _target(self, event: OaEvent) -> OaState:
        table = _TRANSITIONS[self.state]
        if event not in table:
            if event is OaEvent.RECEIVE_OFFER and self.state is OaState.LOCAL_OFFER:
                raise GlareError("offer received while our offer is pending (RFC 3261 §14.2)")
            if event is OaEvent.RECEIVE_OFFER:
                raise RemoteOfferAnswerError(
                    "offer received while the previous one is unanswered (RFC 3261 §14.2)",
                    status_hint=500,
                )
            cls = LocalOfferAnswerError if event in _LOCAL_EVENTS else RemoteOfferAnswerError
            raise cls(f"{event} is not allowed in state {self.state}")
        target = table[event]
        if target is None:
            return OaState.DONE if self.has_session else OaState.NULL
        return target

    def _check_sent(self, sdp: SessionDescription) -> None:
        if self.last_sent is None:
            return
        problems = _origin_problems(self.last_sent, sdp)
        if problems:
            raise LocalOfferAnswerError("; ".join(problems))

    def send_offer(self, offer: SessionDescription) -> OfferAnswer:
        target = self._target(OaEvent.SEND_OFFER)
        self._check_sent(offer)
        if self.local is not None and len(offer.media) < len(self.local.media):
            raise LocalOfferAnswerError("an offer must keep every m-line of the session (§8)")
        return dataclasses.replace(self, state=target, pending=offer, last_sent=offer)

    def receive_offer(self, offer: SessionDescription) -> OfferAnswer:
        target = self._target(OaEvent.RECEIVE_OFFER)
        if self.remote is not None and len(offer.media) < len(self.remote.media):
            raise RemoteOfferAnswerError(
                "the offer has fewer m-lines than the session (RFC 3264 §8)", status_hint=488
            )
        return dataclasses.replace(self, state=target, pending=offer)

    def send_answer(self, answer: SessionDescription) -> OfferAnswer:
        target = self._target(OaEvent.SEND_ANSWER)
        assert self.pending is not None
        if len(answer.media) != len(self.pending.media):
            raise LocalOfferAnswerError(
                f"the answer has {len(answer.media)} m-lines, the offer "
                f"{len(self.pending.media)} (RFC 3264 §6)"
            )
        self._check_sent(answer)
        return dataclasses.replace(
            self, state=target, local=answer, remote=self.pending, pending=None, last_sent=answer
        )

    def receive_answer(self, answer: SessionDescription) -> OfferAnswer:
        target = self._target(OaEvent.RECEIVE_ANSWER)
        assert self.pending is not None
        if len(answer.media) != len(self.pending.media):
            raise RemoteOfferAnswerError(
                f"the answer has {len(answer.media)} m-lines, the offer "
                f"{len(self.pending.media)} (RFC 3264 §6)"
            )
        return dataclasses.replace(
            self, state=target, local=self.pending, remote=answer, pending=None
        )

    def cancel_offer(self) -> OfferAnswer:
        """Withdraw our pending offer (re-INVITE failed, 491 glare): back to the session."""
        target = self._target(OaEvent.CANCEL_OFFER)
        return dataclasses.replace(self, state=target, pending=None)

    def reject_offer(self) -> OfferAnswer:
        """Drop the peer's pending offer (we answered 488, or it was withdrawn)."""
        target = self._target(OaEvent.REJECT_OFFER)
        return dataclasses.replace(self, state=target, pending=None)
