"""The composition root: the only place that knows every concrete type (STYLE habit 8).

`make_service(settings, reactor)` wires store → observer → controller → SIP stack → health
monitor → metrics endpoint; `Service.start()` binds the sockets, `stop()` flushes the store.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from ng911 import __version__
from ng911.call.controller import Controller
from ng911.call.observer import CallObserver
from ng911.config import Settings
from ng911.metrics import Metrics, serve_metrics, sip_message_kind
from ng911.routing.health import HealthMonitor
from ng911.routing.pool import AnswerPoint
from ng911.runtime import idle_full_collection, tune_gc
from ng911.sip.message import Request, Response
from ng911.sip.stack import SipStack
from ng911.sip.transaction.actions import TransactionTimeout
from ng911.sip.ua import UaConfig
from ng911.store import db as store_db
from ng911.store.store import SqlStore

log = logging.getLogger("ng911.service")


LAG_PROBE_INTERVAL = 0.1  # s; the reactor's lateness on this timer is the overload signal


class SchemaBehind(RuntimeError):
    pass


@dataclass
class Service:
    settings: Settings
    reactor: Any
    store: Any
    metrics: Metrics
    registry: CollectorRegistry
    controller: Controller
    stack: SipStack
    health: HealthMonitor
    epoch: int
    listening: list[Any] = field(default_factory=list)
    _gauges: Any = None
    _full_gc: Any = None
    _lag_probe: Any = None
    _lag_expected: float | None = None

    def start(self) -> None:
        self.store.start()
        self.stack.listen()
        self.health.start()
        port = serve_metrics(self.reactor, self.registry, self.settings.metrics.host, self.settings.metrics.port)
        self.listening.append(port)
        from twisted.internet.task import LoopingCall

        self._gauges = LoopingCall(self._sample)
        self._gauges.clock = self.reactor
        self._gauges.start(1.0, now=True)
        self._lag_probe = LoopingCall(self._lag)
        self._lag_probe.clock = self.reactor
        self._lag_probe.start(LAG_PROBE_INTERVAL, now=True)
        tune_gc()
        self._full_gc = LoopingCall(idle_full_collection(lambda: not self.controller.calls))
        self._full_gc.clock = self.reactor
        self._full_gc.start(300.0, now=False)
        log.info(
            "ng911 %s node %s epoch %d: SIP %s udp=%s tcp=%s, metrics http://%s:%d/metrics",
            __version__, self.settings.node.name, self.epoch, self.settings.sip.host,
            self.stack.ports.get("UDP"), self.stack.ports.get("TCP"),
            self.settings.metrics.host, self.settings.metrics.port,
        )

    def _sample(self) -> None:
        self.metrics.store_queue_depth.set(self.store.queue_depth)

    def _lag(self) -> None:
        now = self.reactor.seconds()
        if self._lag_expected is not None:
            self.controller.overload.sample(max(0.0, now - self._lag_expected), now)
        self._lag_expected = now + LAG_PROBE_INTERVAL

    def stop(self) -> Any:
        self.health.stop()
        for task in (self._gauges, self._full_gc, self._lag_probe):
            if task is not None and task.running:
                task.stop()
        for port in self.listening:
            port.stopListening()
        d = self.stack.stop()
        self.store.stop(timeout=5.0)
        return d


def prepare_database(settings: Settings) -> None:
    """The embedded SQLite default migrates itself; a server database must be current."""
    url = settings.database.url
    if url.startswith("sqlite"):
        settings.database.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        store_db.migrate(url)
        return
    status = store_db.schema_status(url)
    if status.state != "current":
        raise SchemaBehind(
            f"database schema is {status.state} (at {status.current or 'nothing'}, code needs {status.head}): "
            f"run `ng911 migrate --config {settings.source or 'FILE'}` first"
        )


def make_service(settings: Settings, reactor: Any, *, store: Any = None, registry: CollectorRegistry | None = None) -> Service:
    registry = registry or CollectorRegistry()
    metrics = Metrics(registry)
    if store is None:
        store = SqlStore(settings.database.url)
    epoch = store.register_node(settings.node.name)
    observer = CallObserver(store, metrics, node=settings.node.name, epoch=epoch)
    controller = Controller(
        settings.routing, observer, trusted=settings.upstream.trusted,
        domain=settings.sip.host, node=settings.node.name,
    )
    failover = settings.routing.failover
    # The controller answers at once: no 200 ms wait before 100 Trying (DESIGN step 1).
    timers = settings.sip.timers
    ua_config = UaConfig(
        user="ng911", user_agent=f"{settings.sip.user_agent}/{__version__}", timers=timers,
        session_expires=failover.session_expires, min_se=failover.min_se,
    )

    def count(direction: str, msg: Request | Response, peer: Any) -> None:
        if isinstance(msg, Request):
            kind = sip_message_kind(method=msg.method)
        else:
            kind = sip_message_kind(status=msg.status)
        metrics.sip_messages.labels(direction=direction, kind=kind).inc()

    transports = set(settings.sip.transports)
    stack = SipStack(
        reactor, controller, host=settings.sip.host,
        udp_port=settings.sip.port if "udp" in transports else None,
        tcp_port=settings.sip.port if "tcp" in transports else None,
        config=ua_config, trace=settings.sip.trace, observer=count,
    )
    controller.attach(stack.ua)

    def ap_result(ap: AnswerPoint, ok: bool, changed: bool) -> None:
        metrics.answer_point_up.labels(answer_point=ap.name).set(1 if ap.up else 0)
        if changed:
            store.ap_health(ap.name, ap.spec.uri, ap.up, reactor.seconds())
            if not ap.up:
                moved = controller.fail_over_answer_point(ap.name, "ap_down")
                if moved:
                    log.warning("answer point %s down: moving %d call(s)", ap.name, moved)

    health = HealthMonitor(stack.ua, controller.pool, settings.sip.host, on_result=ap_result)
    for ap in controller.pool.aps.values():
        metrics.answer_point_up.labels(answer_point=ap.name).set(1)
        store.ap_health(ap.name, ap.spec.uri, True, reactor.seconds())

    if hasattr(store, "on_batch"):
        store.on_batch = lambda seconds, rows: reactor.callFromThread(metrics.store_write.observe, seconds)

        def fenced(call_id: str) -> None:
            def forget() -> None:
                metrics.store_fenced_writes.inc()
                call = controller.calls.pop(call_id, None)
                if call is not None:
                    log.error("lost ownership of call %s: forgetting it (fenced write)", call_id)

            reactor.callFromThread(forget)

        store.on_fenced = fenced
    return Service(settings, reactor, store, metrics, registry, controller, stack, health, epoch)


__all__ = ["Service", "SchemaBehind", "TransactionTimeout", "make_service", "prepare_database"]
