"""Test support shipped with the package: an in-memory loop network for whole-UA tests
(STYLE habit 13: "a UaPair over a loop network with delay and loss")."""
from ng911.testing.loop import (
    ANSWER,
    OFFER,
    LoopNetwork,
    LoopPort,
    LoopProxy,
    Packet,
    RecordingHandler,
    UaPair,
    answer_with,
    sdp,
)

__all__ = [
    "ANSWER",
    "OFFER",
    "LoopNetwork",
    "LoopPort",
    "LoopProxy",
    "Packet",
    "RecordingHandler",
    "UaPair",
    "answer_with",
    "sdp",
]
