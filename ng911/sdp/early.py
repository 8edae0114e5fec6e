"""What an SDP in a response to an INVITE is: early media and the offer/answer rules.

RFC 3261 §13.2.1: with the offer in the INVITE, the UAC treats the *first* session
description it receives (an unreliable 18x included) as the answer and ignores the
ones in later responses of that INVITE. With 100rel (RFC 3262 §5) the SDP in the first
reliable provisional response is the answer, and the exchange is complete. With an
offerless INVITE the offer comes in the first reliable non-failure response — a
reliable 18x or the 2xx — never in an unreliable 18x. RFC 3725 §8 relies on exactly
these rules to connect early media through a controller.

Keep one :class:`EarlyMediaTracker` per early dialog of an INVITE client transaction.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from .model import SessionDescription

__all__ = ["EarlyMediaDecision", "EarlyMediaTracker", "SdpRole", "early_media_answer"]


class SdpRole(enum.StrEnum):
    NONE = "none"  # no SDP in this response
    ANSWER = "answer"  # the answer to the INVITE's offer: keep it (early media may flow)
    OFFER = "offer"  # the offer for an offerless INVITE: answer it (PRACK or ACK)
    IGNORE = "ignore"  # an SDP with no offer/answer meaning here: do not use it
    MISSING = "missing"  # a 2xx that should have carried the answer/offer but has none


@dataclass(frozen=True, slots=True)
class EarlyMediaDecision:
    role: SdpRole
    definitive: bool  # after this response the SDP kept can no longer change (reliable 1xx, 2xx)
    reason: str
    differs: bool = False  # IGNORE only: the ignored SDP differs from the one kept

    @property
    def keep(self) -> bool:
        return self.role in (SdpRole.ANSWER, SdpRole.OFFER)


def early_media_answer(
    invite_had_offer: bool,
    status: int,
    has_sdp: bool,
    reliable: bool,
    already_have_answer: bool,
) -> EarlyMediaDecision:
    """Classify the SDP (or its absence) in a response to an INVITE.

    ``already_have_answer`` means this INVITE's exchange already has its SDP from the
    peer (the answer, or for an offerless INVITE the offer).
    """
    if status < 101 or status >= 300:
        if has_sdp:
            return EarlyMediaDecision(SdpRole.IGNORE, False, f"SDP in a {status} is not an answer")
        return EarlyMediaDecision(SdpRole.NONE, False, f"no SDP in {status}")
    final = status >= 200
    if not has_sdp:
        if final and not already_have_answer:
            what = "answer" if invite_had_offer else "offer"
            return EarlyMediaDecision(
                SdpRole.MISSING, True, f"2xx without the {what} (RFC 3261 §13.2.1)"
            )
        return EarlyMediaDecision(SdpRole.NONE, final, f"no SDP in {status}")
    if already_have_answer:
        return EarlyMediaDecision(
            SdpRole.IGNORE, final, "later SDP of the same INVITE is ignored (RFC 3261 §13.2.1)"
        )
    if invite_had_offer:
        if final:
            return EarlyMediaDecision(SdpRole.ANSWER, True, "answer in the 2xx (RFC 3261 §13.2.1)")
        if reliable:
            return EarlyMediaDecision(
                SdpRole.ANSWER, True, "answer in a reliable provisional (RFC 3262 §5)"
            )
        return EarlyMediaDecision(
            SdpRole.ANSWER,
            False,
            "first SDP, in an unreliable provisional, is the answer (RFC 3261 §13.2.1)",
        )
    if final or reliable:
        where = "2xx" if final else "reliable provisional"
        return EarlyMediaDecision(
            SdpRole.OFFER, True, f"offer in the {where} to an offerless INVITE (RFC 3262 §5)"
        )
    return EarlyMediaDecision(
        SdpRole.IGNORE,
        False,
        "an offer cannot come in an unreliable provisional (RFC 3261 §13.2.1)",
    )


@dataclass(frozen=True, slots=True)
class EarlyMediaTracker:
    """The SDP an INVITE's responses have delivered so far (one per early dialog)."""

    invite_had_offer: bool
    sdp: SessionDescription | None = None
    role: SdpRole = SdpRole.NONE
    definitive: bool = False

    def on_response(
        self, status: int, sdp: SessionDescription | None, *, reliable: bool = False
    ) -> tuple[EarlyMediaTracker, EarlyMediaDecision]:
        decision = early_media_answer(
            self.invite_had_offer, status, sdp is not None, reliable, self.sdp is not None
        )
        if decision.keep:
            assert sdp is not None
            state = dataclasses.replace(
                self, sdp=sdp, role=decision.role, definitive=decision.definitive
            )
            return state, decision
        if decision.role is SdpRole.IGNORE and self.sdp is not None and sdp is not None:
            decision = dataclasses.replace(decision, differs=sdp != self.sdp)
        if decision.definitive and not self.definitive and self.sdp is not None:
            return dataclasses.replace(self, definitive=True), decision
        return self, decision
