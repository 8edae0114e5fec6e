"""The UA core (RFC 3261 §8, §12–§15) with 100rel (RFC 3262), UPDATE (RFC 3311) and session
timers (RFC 4028). Sans-I/O: time comes from an injected clock, bytes leave through an injected
port; the Twisted shell (`ng911.sip.stack`) only moves them.

It sits on the transaction layer and gives the application INVITE sessions — the same object
for both roles, as in reSIProcate's DUM — and a handler interface of neutral events. The call
controller (two sessions per call) is built on exactly this.

One module per job: `agent` (UserAgent, the handler interface), `session` (the INVITE session
and its states), `reinvite` (RFC 3261 §14, RFC 3311), `prack` (RFC 3262), `session_timer`
(RFC 4028), `adopt` (answering an INVITE another node received: DESIGN "Cluster"), `common`
(constants and helpers they share).
"""
from __future__ import annotations

from ng911.sip.dialog import EARLY
from ng911.sip.headers import NameAddr
from ng911.sip.ua.adopt import flow_from_dict, flow_to_dict, parse_stored_invite
from ng911.sip.ua.agent import Clock, UaConfig, UaHandler, UaPort, UserAgent
from ng911.sip.ua.common import (
    ALLOW,
    ANSWERED,
    CALLING,
    CSEQ_GAP,
    INCOMING,
    KNOWN_NOT_ALLOWED,
    SESSION_CONFIRMED,
    SESSION_EARLY,
    SESSION_TERMINATED,
    SUPPORTED,
    failure_cause,
)
from ng911.sip.ua.reinvite import GLARE_RETRIES
from ng911.sip.ua.session import Session

__all__ = ["ALLOW", "ANSWERED", "CALLING", "CSEQ_GAP", "Clock", "EARLY", "GLARE_RETRIES", "INCOMING",
           "KNOWN_NOT_ALLOWED", "NameAddr", "SESSION_CONFIRMED", "SESSION_EARLY", "SESSION_TERMINATED",
           "SUPPORTED", "Session", "UaConfig", "UaHandler", "UaPort", "UserAgent", "failure_cause", "flow_from_dict",
           "flow_to_dict", "parse_stored_invite"]
