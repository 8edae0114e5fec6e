"""Out-of-dialog OPTIONS to every answer point: is it there? (DESIGN "A call's life", step 4)

Any final response means the position's UA is alive (a 405 or 501 too: it answered). No final
response within `HealthSpec.options_timeout`, a transaction timeout, or a transport error is a
failure; `down_after` failures in a row mark it down, `up_after` successes up again. The probe
runs on the UA core's timer wheel: no I/O of its own.
"""
from __future__ import annotations

import logging
from typing import Callable

from ng911.sip.builders import new_call_id, new_tag
from ng911.sip.message import Headers, Request
from ng911.sip.ua import UserAgent
from ng911.sip.uri import parse_uri
from ng911.routing.pool import AnswerPoint, Pool

log = logging.getLogger("ng911.routing.health")


def options_request(target: str, from_host: str, user: str = "ng911") -> Request:
    uri = parse_uri(target)
    headers = Headers(
        [
            ("Max-Forwards", "70"),
            ("From", f"<sip:{user}@{from_host}>;tag={new_tag()}"),
            ("To", f"<{target}>"),
            ("Call-ID", new_call_id(from_host)),
            ("CSeq", "1 OPTIONS"),
            ("Accept", "application/sdp"),
        ]
    )
    return Request("OPTIONS", uri, headers)


class HealthMonitor:
    def __init__(self, ua: UserAgent, pool: Pool, from_host: str,
                 on_result: Callable[[AnswerPoint, bool, bool], None] | None = None) -> None:
        self.ua = ua
        self.pool = pool
        self.from_host = from_host
        self.on_result = on_result  # (ap, ok, changed)
        self._running = False

    def start(self) -> None:
        self._running = True
        now = self.ua.now()
        interval = self.pool.routing.health.options_interval
        for i, ap in enumerate(self.pool.aps.values()):
            # Spread the first probes over one interval so they don't all go out at once.
            offset = interval * i / max(1, len(self.pool.aps))
            self.ua.timers.call_at(now + offset, lambda at, ap=ap: self._probe(ap))

    def stop(self) -> None:
        self._running = False

    def _probe(self, ap: AnswerPoint) -> None:
        if not self._running:
            return
        health = self.pool.routing.health
        done = {"settled": False}

        def settle(ok: bool) -> None:
            if done["settled"]:
                return
            done["settled"] = True
            timeout.cancel()
            changed = self.pool.health_result(ap, ok)
            if changed:
                log.warning("answer point %s is %s", ap.name, "up" if ap.up else "DOWN")
            if self.on_result is not None:
                self.on_result(ap, ok, changed)

        timeout = self.ua.timers.call_at(self.ua.now() + health.options_timeout, lambda at: settle(False))
        try:
            self.ua.send_request(
                options_request(ap.spec.uri, self.from_host, self.ua.config.user),
                lambda resp: settle(True) if resp.status >= 200 else None,
                lambda reason: settle(False),
            )
        except Exception as exc:  # unroutable URI and the like: a failure, never a crash
            log.warning("OPTIONS to %s failed to send: %s", ap.name, exc)
            settle(False)
        self.ua.timers.call_at(self.ua.now() + health.options_interval, lambda at: self._probe(ap))
