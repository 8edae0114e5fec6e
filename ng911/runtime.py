"""Process-level tuning shared by every long-running ng911 command.

Garbage collection (the sippy lesson, measured here too): a full (generation 2) collection
walks every live object — under 200 calls/s that is ~300k objects held by transactions that
linger 64*T1 — and stalled the reactor for 0.2–1.0 s several times a minute. Our SIP and call
code creates no reference cycles in steady state (see `ua._Retransmission`, the timer wheel
dropping fired callbacks, `Controller.call_ended` unlinking sessions), so reference counting
frees calls and transactions as they end and the cyclic collector has nothing to find there.

So: start-up objects are frozen out of the collector, young generations run as usual (cheap,
they catch short-lived cycles from libraries), and the automatic full collection is turned
off; `idle_full_collection` runs one when the node carries no call, at most every few minutes.
"""
from __future__ import annotations

import gc
import logging
import time
from typing import Callable

log = logging.getLogger("ng911.runtime")

GEN0_THRESHOLD = 10_000
GEN1_THRESHOLD = 20
NO_AUTOMATIC_FULL = 1_000_000_000


def tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, NO_AUTOMATIC_FULL)


def idle_full_collection(is_idle: Callable[[], bool]) -> Callable[[], float | None]:
    """A periodic task: a full collection when ``is_idle()``; returns its duration or None."""

    def run() -> float | None:
        if not is_idle():
            return None
        started = time.perf_counter()
        found = gc.collect()
        took = time.perf_counter() - started
        log.info("idle full GC: %d unreachable objects in %.3f s", found, took)
        return took

    return run
