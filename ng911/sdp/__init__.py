"""SDP for the controller: parse/serialise, offer/answer state, 3pcc rewrites (pure, no I/O).

Modules: ``model`` (RFC 8866 lossless model), ``parser``, ``negotiator`` (RFC 3264 state
and ``o=`` versions), ``hold`` (RFC 3264 §8.4), ``rewrite`` (RFC 3725 flows), ``matching``
(stream pairing), ``codecs`` (intersection), ``changes`` (re-INVITE classification),
``early`` (SDP in responses to INVITE, RFC 3261 §13.2.1 / RFC 3262).
"""

from .changes import Change, ChangeKind, classify_change, diff
from .codecs import (
    CodecIntersection,
    CommonCodec,
    StreamCodecs,
    have_common_codec,
    intersect,
)
from .early import EarlyMediaDecision, EarlyMediaTracker, SdpRole, early_media_answer
from .errors import (
    GlareError,
    LocalOfferAnswerError,
    OfferAnswerError,
    RemoteOfferAnswerError,
    SdpParseError,
)
from .hold import HoldState, effective_direction, hold, hold_state, is_held, unhold
from .matching import match_streams
from .model import (
    Attribute,
    Bandwidth,
    Connection,
    Direction,
    Field,
    Fmtp,
    Line,
    MediaLine,
    MediaSection,
    Origin,
    Rtpmap,
    SessionDescription,
    make_media,
    serialize,
)
from .parser import parse
from .negotiator import OaState, OfferAnswer, subsequent_problems, versioned
from .rewrite import (
    align_answer,
    black_hole,
    black_hole_offer,
    no_media_offer,
    reoffer,
    reoffer_mapping,
)

__all__ = [
    "Attribute",
    "Bandwidth",
    "Change",
    "ChangeKind",
    "CodecIntersection",
    "CommonCodec",
    "Connection",
    "Direction",
    "EarlyMediaDecision",
    "EarlyMediaTracker",
    "Field",
    "Fmtp",
    "GlareError",
    "HoldState",
    "Line",
    "LocalOfferAnswerError",
    "MediaLine",
    "MediaSection",
    "OaState",
    "OfferAnswer",
    "OfferAnswerError",
    "Origin",
    "RemoteOfferAnswerError",
    "Rtpmap",
    "SdpParseError",
    "SdpRole",
    "SessionDescription",
    "StreamCodecs",
    "align_answer",
    "black_hole",
    "black_hole_offer",
    "classify_change",
    "diff",
    "early_media_answer",
    "effective_direction",
    "have_common_codec",
    "hold",
    "hold_state",
    "intersect",
    "is_held",
    "make_media",
    "match_streams",
    "no_media_offer",
    "parse",
    "reoffer",
    "reoffer_mapping",
    "serialize",
    "subsequent_problems",
    "unhold",
    "versioned",
]
