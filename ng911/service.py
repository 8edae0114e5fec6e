"""The composition root: the only place that knows every concrete type (STYLE habit 8).

`make_service(settings, reactor)` wires store → observer → controller → SIP stack → health
monitor → metrics endpoint; `Service.start()` binds the sockets, `stop()` flushes the store.

The node never waits for its database (issue 7): `prepare_database` says whether it answered
(a reachable PostgreSQL whose schema is not at head is an operator error: `SchemaBehind`); the
store registers the node (a new epoch) from its writer thread as soon as the database answers,
and the writes made before carry the placeholder epoch `PENDING_EPOCH`, resolved to that epoch
as they are written. Until then the node runs *degraded*: `ng911_store_up` is 0, calls are
taken, their writes queue (bounded: see `ng911.store.store`).
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
from ng911.emergency.classify import classify
from ng911.metrics import Metrics, serve_metrics, sip_message_kind
from ng911.routing.health import HealthMonitor
from ng911.routing.pool import AnswerPoint
from ng911.runtime import idle_full_collection, tune_gc
from ng911.sip.message import Request, Response
from ng911.sip.stack import SipStack
from ng911.sip.transport.tls import TlsCredentials
from ng911.sip.transaction.actions import TransactionTimeout
from ng911.sip.transport.rules import ip_address_of
from ng911.sip.trust import TrustPolicy
from ng911.sip.ua import CSEQ_GAP, UaConfig
from ng911.sip.uri import parse_uri
from ng911.store import db as store_db
from ng911.store.store import PENDING_EPOCH, SqlStore

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
    epoch: int | None  # None until the node is registered (its database answered)
    observer: Any = None
    listening: list[Any] = field(default_factory=list)
    _gauges: Any = None
    _full_gc: Any = None
    _lag_probe: Any = None
    _lag_expected: float | None = None
    _counted: dict[Any, int] = field(default_factory=dict)
    _was_up: bool | None = None
    member: Any = None  # the ClusterMember when cluster.enabled
    superseded: bool = False  # another process registered under this node's name: stopped
    seat_listener: Any = None  # hears seats freed by other nodes (cluster)
    tls: Any = None  # TlsCredentials from [tls], when configured (SIP over TLS, HTTPS)

    def start(self) -> None:
        self.store.start()
        self.stack.listen()
        self.health.start()
        if self.member is not None:
            self.member.sip_uri = f"sip:{self.settings.sip.host}:{self.stack.ports.get('UDP') or self.stack.ports.get('TCP')}"
            if self.epoch is not None:
                self.member.registered(self.epoch)
            self.member.start()
        if self.seat_listener is not None:
            self.seat_listener.start()
        for host in peer_hosts(self.settings):  # an answer point named by host: its address too
            if ip_address_of(host) is None:
                self.reactor.resolve(host).addCallbacks(self.stack.exempt_host, lambda f, h=host: log.warning(
                    "cannot resolve %s (an answer point's host): its traffic is limited as a stranger's", h))
        metrics = self.settings.metrics
        port = serve_metrics(self.reactor, self.registry, metrics.host, metrics.port,
                             tls=self.tls if metrics.https else None)
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
            "ng911 %s node %s epoch %s: SIP %s udp=%s tcp=%s tls=%s, metrics %s",
            __version__, self.settings.node.name, self.epoch, self.settings.sip.host,
            self.stack.ports.get("UDP"), self.stack.ports.get("TCP"), self.stack.ports.get("TLS"),
            metrics_url(self.settings),
        )

    @property
    def store_up(self) -> bool:
        return bool(getattr(self.store, "up", True))

    def registered(self, epoch: int) -> None:
        """Reactor thread: the store registered the node; its writes now carry ``epoch``."""
        self.epoch = epoch
        if self.observer is not None:
            self.observer.owner = (self.settings.node.name, epoch)
        if self.member is not None:
            self.member.registered(epoch)
        log.info("node %s registered with epoch %d: the database answers", self.settings.node.name, epoch)
        self._sample()

    def _sample(self) -> None:
        if self.member is not None:
            # (only a node taking the call over reads the stored CSeq)
            self.controller.save_advanced_cseqs(CSEQ_GAP // 4)
            self.member.sample()
        store, metrics = self.store, self.metrics
        metrics.store_queue_depth.set(store.queue_depth)
        up = self.store_up
        metrics.store_up.set(1 if up else 0)
        if up != self._was_up and (up or getattr(store, "retries", 1) > 0):
            if not up:
                log.warning("running degraded: the database is unreachable; calls are taken and "
                            "their writes queue (%d so far)", store.queue_depth)
            elif self._was_up is not None:
                log.warning("database reachable again: %d writes to drain", store.queue_depth)
            self._was_up = up
        metrics.store_backlogged.set(1 if getattr(store, "backlogged", False) else 0)
        # the store's own counters (writer thread) → Prometheus counters, by difference
        for (kind, outcome), n in list(getattr(store, "write_errors", {}).items()):
            self._count(("error", kind, outcome), n, metrics.store_write_errors.labels(kind=kind, outcome=outcome))
        for what, n in list(getattr(store, "shed", {}).items()):
            self._count(("shed", what), n, metrics.store_shed.labels(what=what))
        self._count("coalesced", getattr(store, "coalesced", 0), metrics.store_coalesced)
        tls = self.stack.manager.streams.get("TLS")
        for direction, n in list(getattr(tls, "handshake_failures", {}).items()):
            self._count(("tls", direction), n, metrics.tls_handshake_failures.labels(direction=direction))
        stack = self.stack  # the [limits]: what is held, and every refusal by reason
        for reason, n in list(stack.shed.items()):
            self._count(("sip_shed", reason), n, metrics.sip_shed.labels(reason=reason))
        metrics.sip_transactions.set(len(stack.ua.layer))
        metrics.sip_dialogs.set(len(stack.ua.dialogs))
        metrics.sip_connections.set(stack.connections.total if stack.connections is not None else 0)
        metrics.sip_tracked_sources.set(len(stack.rate) if stack.rate is not None else 0)

    def _count(self, key: Any, total: int, counter: Any) -> None:
        delta = total - self._counted.get(key, 0)
        if delta > 0:
            counter.inc(delta)
            self._counted[key] = total

    def _lag(self) -> None:
        now = self.reactor.seconds()
        if self._lag_expected is not None:
            self.controller.overload.sample(max(0.0, now - self._lag_expected), now)
        self._lag_expected = now + LAG_PROBE_INTERVAL

    def stop(self) -> Any:
        self.health.stop()
        if self.member is not None:
            self.member.stop()
        if self.controller.seats is not None:
            self.controller.seats.stop()
        if self.seat_listener is not None:
            self.seat_listener.stop()
        for task in (self._gauges, self._full_gc, self._lag_probe):
            if task is not None and task.running:
                task.stop()
        for port in self.listening:
            port.stopListening()
        d = self.stack.stop()
        self.store.stop(timeout=5.0)
        return d


def metrics_url(settings: Settings) -> str:
    """Where this node serves its metrics (https when ``metrics.https``)."""
    m = settings.metrics
    return f"{'https' if m.https else 'http'}://{m.host}:{m.port}/metrics"


def prepare_database(settings: Settings) -> bool:
    """The embedded SQLite default migrates itself; a server database must be current.

    True when the database answered; False when PostgreSQL is unreachable (the node starts
    degraded and its store checks the schema once it answers). Raises ``SchemaBehind`` when the
    database answers and its schema is not at head: an operator error, not an outage."""
    from sqlalchemy import exc

    url = settings.database.url
    if url.startswith("sqlite"):
        settings.database.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        store_db.migrate(url)
        return True
    try:
        status = store_db.schema_status(url)
    except (exc.OperationalError, exc.InterfaceError) as e:
        log.warning("database unreachable at start (%s): starting degraded; the node registers "
                    "and its writes drain once it answers", str(e.orig if hasattr(e, "orig") else e).strip().splitlines()[0])
        return False
    if status.state != "current":
        raise SchemaBehind(
            f"database schema is {status.state} (at {status.current or 'nothing'}, code needs {status.head}): "
            f"run `ng911 migrate --config {settings.source or 'FILE'}` first"
        )


def peer_hosts(settings: Settings) -> set[str]:
    """Hosts of the answer points, transfer targets and media server: their responses and
    in-dialog requests (a position's BYE, REFER) are never shed by the [limits]. A host name
    is resolved once when the node starts (one address): give these URIs as addresses."""
    uris = [ap.uri for q in settings.routing.queues for ap in q.answer_points]
    uris += list(settings.transfer_targets) + ([settings.media] if settings.media else [])
    hosts = set()
    for uri in uris:
        try:
            host = getattr(parse_uri(uri), "host", None)
        except ValueError:
            continue
        if host:
            hosts.add(host.strip("[]"))
    return hosts


def make_service(settings: Settings, reactor: Any, *, store: Any = None, registry: CollectorRegistry | None = None) -> Service:
    registry = registry or CollectorRegistry()
    metrics = Metrics(registry)
    node = settings.node.name
    if store is None:
        check = None if settings.database.url.startswith("sqlite") else store_db.require_current_schema
        store = SqlStore(settings.database.url, node=node, check_schema=check,
                         high_water=settings.database.backlog_high_water,
                         max_queue=settings.database.backlog_max_queue)
    if getattr(store, "node", None) == node and hasattr(store, "on_registered"):
        epoch: int | None = None  # registered by the store's writer once the database answers
    else:
        epoch = store.register_node(node)
    observer = CallObserver(store, metrics, node=node, epoch=PENDING_EPOCH if epoch is None else epoch)
    controller = Controller(
        settings.routing, observer, trusted=TrustPolicy.from_settings(settings),
        domain=settings.sip.host, node=settings.node.name, transfer_targets=settings.transfer_targets,
    )
    failover = settings.routing.failover
    # The controller answers at once: no 200 ms wait before 100 Trying (DESIGN step 1).
    timers = settings.sip.timers
    ua_config = UaConfig(
        user="ng911", user_agent=f"{settings.sip.user_agent}/{__version__}", timers=timers,
        session_expires=failover.session_expires, min_se=failover.min_se, bind_dialogs=True,
    )

    def count(direction: str, msg: Request | Response, peer: Any) -> None:
        if isinstance(msg, Request):
            kind = sip_message_kind(method=msg.method)
        else:
            kind = sip_message_kind(status=msg.status)
        metrics.sip_messages.labels(direction=direction, kind=kind).inc()

    transports = set(settings.sip.transports)
    tls = TlsCredentials.from_settings(settings.tls) if settings.tls.configured else None
    stack = SipStack(
        reactor, controller, host=settings.sip.host,
        udp_port=settings.sip.port if "udp" in transports else None,
        tcp_port=settings.sip.port if "tcp" in transports else None,
        # with [tls] the node reaches sips: answer points even when it does not listen on TLS
        tls_port=settings.sip.tls_port if "tls" in transports else None, tls=tls,
        config=ua_config, trace=settings.sip.trace, observer=count,
    )
    controller.attach(stack.ua)
    if "TLS" in stack.manager.streams:  # limits.handshake_timeout: a TLS handshake's deadline
        stack.manager.streams["TLS"].handshake_timeout = settings.limits.handshake_timeout  # type: ignore[attr-defined]
    psap_uris = settings.routing.psap_uris
    stack.set_limits(settings.limits, trusts=controller.trust.trusts, exempt_hosts=peer_hosts(settings),
                     is_emergency=lambda request: classify(request, psap_uris) == "emergency")

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
                controller.forget_call(call_id, "a write of it matched no row (fenced)")

            reactor.callFromThread(forget)

        def stored(call_ids: list[str]) -> None:
            def mark() -> None:
                for call_id in call_ids:
                    call = controller.calls.get(call_id)
                    if call is not None:
                        call.stored = True

            reactor.callFromThread(mark)

        store.on_fenced = fenced
        store.on_stored = stored
    # a backlogged store pushes back on non-emergency work (503 + Retry-After)
    controller.overload.backlogged = lambda: bool(getattr(store, "backlogged", False))
    service = Service(settings, reactor, store, metrics, registry, controller, stack, health, epoch, observer,
                      tls=tls)
    if settings.cluster.enabled:
        from ng911.cluster.member import ClusterMember

        lease = settings.cluster.lease_duration
        # An engine of its own: a heartbeat never queues behind the store's writes, and gives
        # up within a lease (a heartbeat later than that proves nothing).
        engine = store_db.engine_for(settings.database.url, statement_timeout_ms=int(lease * 1000),
                                     pool_size=2, max_overflow=2)
        member = ClusterMember(reactor, node=node, heartbeat_interval=settings.cluster.heartbeat_interval,
                               lease_duration=lease, engine=engine, controller=controller, metrics=metrics,
                               sip_uri=None)
        member.wrap_port(stack.ua)
        service.member = member

        def superseded() -> None:
            service.superseded = True
            reactor.stop()

        member.on_superseded = superseded
        from ng911.cluster.seats import SeatKeeper, SeatListener

        # the positions' seats: advisory locks on a connection of their own (its locks go when
        # it goes: a dead node's seats free themselves)
        def seat_connection() -> Any:
            return store_db.dbapi_connect(settings.database.url)

        controller.seats = SeatKeeper(seat_connection, reactor.callFromThread, node=node)
        service.seat_listener = SeatListener(seat_connection, reactor.callFromThread, controller.pool.freed_elsewhere)
    if epoch is None:
        store.on_registered = lambda e: reactor.callFromThread(service.registered, e)
    return service


__all__ = ["Service", "SchemaBehind", "TransactionTimeout", "make_service", "metrics_url", "prepare_database"]
