"""Out-of-dialog OPTIONS to every answer point: is it there? (DESIGN "A call's life", step 4)

Any final response means the position's UA is alive (a 405 or 501 too: it answered). No final
response within `HealthSpec.options_timeout`, a transaction timeout, or a transport error is a
failure; `down_after` failures in a row mark it down, `up_after` successes up again. The probe
runs on the UA core's timer wheel: no I/O of its own.

Fast signals. A transport error is not a lost datagram: it is the position's host or kernel
saying nobody is there (an ICMP port unreachable for UDP — RFC 3261 §18.4, read through
`IP_RECVERR` — or a TCP connection refused or reset). A probe that fails that way fails at once,
not at `options_timeout`, and while the position still counts as up the next probe goes out
after `recheck` seconds instead of a whole `options_interval`: `down_after` failures in a row
still mark it down, a single stray error still does not, but a dead position is down in
`recheck * (down_after - 1)` s after the first probe that found it gone. The transport also tells
the monitor when anything sent to a position's address failed or when a stream connection with
it closed (`SipStack.transport_listeners`): the position is then probed at once (at most one
probe per `recheck`) rather than at its next turn.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from ng911.sip.builders import new_call_id, new_tag
from ng911.sip.message import Headers, Request
from ng911.sip.ua import UserAgent
from ng911.sip.uri import parse_uri
from ng911.routing.pool import AnswerPoint, Pool

log = logging.getLogger("ng911.routing.health")

#: seconds before the confirming probe after a probe failed with a transport error
RECHECK = 0.1


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


def _address_of(uri: str) -> tuple[str, int] | None:
    """(host, port) an answer point's URI points at (no DNS: a numeric host as written)."""
    try:
        u = parse_uri(uri)
    except Exception:
        return None
    host = str(getattr(u, "host", "") or "").strip("[]").lower()
    port = getattr(u, "port", None) or (5061 if getattr(u, "scheme", "sip") == "sips" else 5060)
    return (host, int(port)) if host else None


class HealthMonitor:
    def __init__(self, ua: UserAgent, pool: Pool, from_host: str,
                 on_result: Callable[[AnswerPoint, bool, bool], None] | None = None,
                 *, recheck: float = RECHECK) -> None:
        self.ua = ua
        self.pool = pool
        self.from_host = from_host
        self.on_result = on_result  # (ap, ok, changed)
        self.recheck = recheck
        self._running = False
        self._next: dict[str, tuple[float, Any]] = {}  # AP name -> (due, timer) of its next probe
        self._in_flight: set[str] = set()     # AP names with a probe awaiting its outcome
        self._last_sent: dict[str, float] = {}  # AP name -> when its last probe went out
        self._by_address: dict[tuple[str, int], list[AnswerPoint]] = {}
        self._listening = False

    def start(self) -> None:
        self._running = True
        now = self.ua.now()
        interval = self.pool.routing.health.options_interval
        self._by_address = {}
        for ap in self.pool.aps.values():
            addr = _address_of(ap.spec.uri)
            if addr is not None:
                self._by_address.setdefault(addr, []).append(ap)
        # The shell (SipStack) says when a send to an address failed or a connection closed.
        listeners = getattr(self.ua.port, "transport_listeners", None)
        if listeners is not None and not self._listening:
            listeners.append(self.transport_trouble)
            self._listening = True
        for i, ap in enumerate(self.pool.aps.values()):
            # Spread the first probes over one interval so they don't all go out at once.
            offset = interval * i / max(1, len(self.pool.aps))
            self._schedule(ap, now + offset)

    def stop(self) -> None:
        self._running = False
        for _due, timer in self._next.values():
            timer.cancel()
        self._next.clear()

    def transport_trouble(self, remote: tuple[str, int], reason: str) -> None:
        """Something sent to ``remote`` failed, or a connection with it closed: probe every
        answer point there that is up at once — or `recheck` after its last probe, when that
        is later — unless a probe is due by then anyway (the failed send may have been a
        probe, whose confirmation is already scheduled)."""
        if not self._running:
            return
        now = self.ua.now()
        for ap in self._by_address.get((str(remote[0]).lower(), int(remote[1])), ()):
            if not ap.up:
                continue  # its regular probes will find it up again; never a probe storm
            # At most one probe per `recheck`, even with one out (sent before the death, it
            # may never be answered: a UDP datagram the dead process had already received).
            at = max(now, self._last_sent.get(ap.name, float("-inf")) + self.recheck)
            if self._next.get(ap.name, (float("inf"), None))[0] <= at:
                continue
            log.info("answer point %s: %s; probing it%s", ap.name, reason,
                     " now" if at == now else " in %.3f s" % (at - now))
            self._schedule(ap, at)

    def _schedule(self, ap: AnswerPoint, at: float) -> None:
        old = self._next.pop(ap.name, None)
        if old is not None:
            old[1].cancel()
        self._next[ap.name] = (at, self.ua.timers.call_at(at, lambda _at, ap=ap: self._probe(ap)))

    def _probe(self, ap: AnswerPoint) -> None:
        self._next.pop(ap.name, None)
        if not self._running:
            return
        health = self.pool.routing.health
        done = {"settled": False}
        self._in_flight.add(ap.name)
        self._last_sent[ap.name] = self.ua.now()

        def settle(ok: bool, hard: bool = False) -> None:
            if done["settled"]:
                return
            done["settled"] = True
            self._in_flight.discard(ap.name)
            timeout.cancel()
            changed = self.pool.health_result(ap, ok)
            if changed:
                log.warning("answer point %s is %s", ap.name, "up" if ap.up else "DOWN")
            if hard and ap.up and self._running and self.recheck < health.options_interval:
                # Refused / unreachable while still counted up: confirm at once.
                self._schedule(ap, self.ua.now() + self.recheck)
            if self.on_result is not None:
                self.on_result(ap, ok, changed)

        timeout = self.ua.timers.call_at(self.ua.now() + health.options_timeout, lambda at: settle(False))
        # The next regular probe; a hard failure above brings it forward.
        self._schedule(ap, self.ua.now() + health.options_interval)
        try:
            self.ua.send_request(
                options_request(ap.spec.uri, self.from_host, self.ua.config.user),
                lambda resp: settle(True) if resp.status >= 200 else None,
                lambda reason: settle(False, hard=reason != "timeout"),
            )
        except Exception as exc:  # unroutable URI and the like: a failure, never a crash
            log.warning("OPTIONS to %s failed to send: %s", ap.name, exc)
            settle(False)
