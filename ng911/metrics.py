"""Every Prometheus metric of ng911, declared once (STYLE habit 11), and its Null twin (habit 7).

    registry = CollectorRegistry()
    metrics = Metrics(registry)                       # NullMetrics() where nothing is exported
    metrics.calls.labels(kind="emergency", outcome="answered").inc()
    metrics.failover_duration.observe(0.42)
    port = serve_metrics(reactor, registry, "127.0.0.1", 9911)   # GET /metrics

Names follow Prometheus practice: ``ng911_`` prefix, counters end in ``_total``, durations are
``_seconds`` histograms, base units. Label sets are fixed, and where a label has a closed set
of values (``kind``, ``outcome``, ``reason``, SIP methods…) any other value raises
``ValueError`` — in :class:`Metrics` and :class:`NullMetrics` alike, so a test on the Null twin
catches a Call-ID or URI passed as a label value. Those series are created at zero when the
metrics are built, so a rate() over them works from the first scrape. Labels with an open set
(``answer_point``, ``queue``) take names from the config: a bounded set.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from twisted.web.resource import Resource
from twisted.web.server import Site

from ng911 import __version__
from ng911.call.state import CallState, FailoverCause
from ng911.sip.limits import SHED_REASONS
from ng911.sip.timers import TimerName

__all__ = [
    "CALL_KINDS",
    "CALL_OUTCOMES",
    "FAILOVER_REASONS",
    "HUNT_RESULTS",
    "SIP_DIRECTIONS",
    "SIP_METHODS",
    "SIP_MESSAGE_KINDS",
    "METRICS",
    "Metrics",
    "MetricsSink",
    "NullMetrics",
    "serve_metrics",
    "sip_message_kind",
]

CALL_KINDS = ("emergency", "test", "other")
CALL_OUTCOMES = ("answered", "abandoned", "rejected", "failed")
FAILOVER_REASONS = tuple(c.value for c in FailoverCause)  # the call layer's words, one definition
CALL_STATES = tuple(s.value for s in CallState if s is not CallState.ENDED)
HUNT_RESULTS = (
    "answered",  # 2xx
    "rejected",  # a final error response (busy, decline, 5xx...)
    "no_provisional",  # nothing within no_provisional_timeout: CANCELled
    "ring_timeout",  # rang past ring_timeout: CANCELled
    "timeout",  # the INVITE transaction timed out (Timer B)
    "transport_error",
    "cancelled",  # the caller hung up (or the call moved on) while this AP was ringing
    "skipped",  # not tried: down, or at capacity
)
SIP_DIRECTIONS = ("received", "sent")
SIP_METHODS = (
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE", "INFO",
    "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH",
)
SIP_MESSAGE_KINDS = SIP_METHODS + ("other",) + tuple(f"response_{c}xx" for c in range(1, 7))
TRANSACTION_TIMERS = tuple(t.value for t in TimerName)

# Buckets (seconds), chosen for what each measures.
_ANSWER_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0)
_FAILOVER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 40.0)
STORE_OP_KINDS = ("created", "updated", "leg", "event", "abandoned", "health")
STORE_SHED_KINDS = ("event_detail", "event", "call", "updated", "leg", "abandoned", "health")
_STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def sip_message_kind(method: str | None = None, status: int | None = None) -> str:
    """The ``kind`` label of ``ng911_sip_messages_total``: a standard method, ``other``, or
    ``response_1xx`` … ``response_6xx`` — never the raw (unbounded) method token."""
    if status is not None:
        klass = status // 100
        return f"response_{klass}xx" if 1 <= klass <= 6 else "other"
    return method if method in _METHOD_SET else "other"


_METHOD_SET = frozenset(SIP_METHODS)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    attr: str  # attribute on Metrics / NullMetrics
    type: type  # Counter, Gauge or Histogram
    name: str  # full exposition name (counters: with _total)
    doc: str
    labels: tuple[str, ...] = ()
    values: Mapping[str, tuple[str, ...]] | None = None  # closed label value sets
    buckets: tuple[float, ...] | None = None


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("calls", Counter, "ng911_calls_total", "Calls ended, by kind and outcome.",
               ("kind", "outcome"), {"kind": CALL_KINDS, "outcome": CALL_OUTCOMES}),
    MetricSpec("active_calls", Gauge, "ng911_active_calls", "Calls in progress, by kind.",
               ("kind",), {"kind": CALL_KINDS}),
    MetricSpec("calls_in_state", Gauge, "ng911_calls_in_state",
               "Calls in progress, by call state (the calls.state words: routing, ringing, queued, "
               "talking, moving).", ("state",), {"state": CALL_STATES}),
    MetricSpec("time_to_answer", Histogram, "ng911_time_to_answer_seconds",
               "From the caller's INVITE to an answer point's 2xx.",
               ("kind",), {"kind": CALL_KINDS}, _ANSWER_BUCKETS),
    MetricSpec("failovers", Counter, "ng911_failovers_total",
               "PSAP legs moved to another answer point, by cause.",
               ("reason",), {"reason": FAILOVER_REASONS}),
    MetricSpec("failover_duration", Histogram, "ng911_failover_duration_seconds",
               "From the PSAP leg declared failed to the caller's 200 to the re-INVITE.",
               buckets=_FAILOVER_BUCKETS),
    MetricSpec("answer_point_up", Gauge, "ng911_answer_point_up",
               "1 while health probes find the answer point up, 0 when down.", ("answer_point",)),
    MetricSpec("abandoned_calls", Counter, "ng911_abandoned_calls_total",
               "Emergency calls whose caller hung up before an answer (the callback list)."),
    MetricSpec("queue_length", Gauge, "ng911_queue_length", "Calls waiting for an answer point, by queue.",
               ("queue",)),
    MetricSpec("time_in_queue", Histogram, "ng911_time_in_queue_seconds",
               "Time a call waited in a queue before an answer or leaving it.", ("queue",),
               buckets=_ANSWER_BUCKETS),
    MetricSpec("sip_messages", Counter, "ng911_sip_messages_total",
               "SIP messages, by direction and kind (method, or response class).",
               ("direction", "kind"), {"direction": SIP_DIRECTIONS, "kind": SIP_MESSAGE_KINDS}),
    MetricSpec("sip_transaction_timeouts", Counter, "ng911_sip_transaction_timeouts_total",
               "SIP transactions ended by a timer (B, F, H …).", ("timer",), {"timer": TRANSACTION_TIMERS}),
    MetricSpec("sip_dialog_strangers", Counter, "ng911_sip_dialog_strangers_total",
               "In-dialog requests refused (403) because they came from someone other than the "
               "dialog's peer, by method and leg (a forged BYE or REFER).", ("method", "leg"),
               {"method": SIP_METHODS + ("other",), "leg": ("upstream", "psap", "none")}),
    MetricSpec("sip_refer_refused", Counter, "ng911_sip_refer_refused_total",
               "REFERs refused because their target is not an answer point, a queue or one of "
               "transfer.allowed_targets (the call carries on)."),
    MetricSpec("sip_parse_errors", Counter, "ng911_sip_parse_errors_total",
               "Received datagrams or stream messages that are not valid SIP."),
    MetricSpec("tls_handshake_failures", Counter, "ng911_tls_handshake_failures_total",
               "SIP over TLS handshakes that failed, by direction: inbound (a client refused: no "
               "certificate, or one not chaining to tls.ca) or outbound (a server we could not "
               "verify, or that refused our certificate).",
               ("direction",), {"direction": ("inbound", "outbound")}),
    MetricSpec("store_queue_depth", Gauge, "ng911_store_queue_depth",
               "Writes waiting for the database writer thread."),
    MetricSpec("store_write", Histogram, "ng911_store_write_seconds",
               "Time to commit one batch of writes.", buckets=_STORE_BUCKETS),
    MetricSpec("store_fenced_writes", Counter, "ng911_store_fenced_writes_total",
               "Writes that matched no row: the call's ownership was lost to another node."),
    MetricSpec("store_up", Gauge, "ng911_store_up",
               "1 while the database answers and the node is registered; 0: running degraded."),
    MetricSpec("store_backlogged", Gauge, "ng911_store_backlogged",
               "1 while the store's backlog is past its high-water mark (alarm; cleared below "
               "low-water): details and non-emergency records are shed."),
    MetricSpec("store_write_errors", Counter, "ng911_store_write_errors_total",
               "Writes the database refused for good, by op kind and outcome (degraded: stored "
               "without its detail; dropped).", ("kind", "outcome"),
               {"kind": STORE_OP_KINDS, "outcome": ("degraded", "dropped")}),
    MetricSpec("store_shed", Counter, "ng911_store_shed_total",
               "Writes or event details shed while the store was backlogged, by what.", ("what",),
               {"what": STORE_SHED_KINDS}),
    MetricSpec("store_coalesced", Counter, "ng911_store_coalesced_total",
               "Writes merged into one already queued (a call's updates, a leg's saves)."),
    MetricSpec("cluster_lease_remaining", Gauge, "ng911_cluster_lease_remaining_seconds",
               "Seconds left of this node's own lease as it knows it (negative: lapsed; it holds "
               "requests on stored calls until a heartbeat confirms it)."),
    MetricSpec("cluster_nodes", Gauge, "ng911_cluster_nodes",
               "Nodes of the cluster by lease state, as the last heartbeat read them.", ("lease",),
               {"lease": ("alive", "expired", "none")}),
    MetricSpec("cluster_calls_owned", Gauge, "ng911_cluster_calls_owned",
               "Live calls per owning node (any epoch), as the last heartbeat read them.", ("node",)),
    MetricSpec("cluster_heartbeat_failures", Counter, "ng911_cluster_heartbeat_failures_total",
               "Heartbeats that did not reach the database."),
    MetricSpec("cluster_takeovers", Counter, "ng911_cluster_takeovers_total",
               "Calls this node claimed from a dead node, by the state they were in.", ("state",),
               {"state": CALL_STATES}),
    MetricSpec("cluster_calls_lost", Counter, "ng911_cluster_calls_lost_total",
               "Calls this node stopped acting on because another node owns them (fenced)."),
    MetricSpec("cluster_held_requests", Gauge, "ng911_cluster_held_requests",
               "Requests held while this node's lease is not confirmed."),
    MetricSpec("build_info", Gauge, "ng911_build_info", "Always 1; the version is the label.", ("version",)),
    MetricSpec("hunt_attempts", Counter, "ng911_hunt_attempts_total",
               "Answer points tried by the hunt, by result.", ("result",), {"result": HUNT_RESULTS}),
    MetricSpec("sip_shed", Counter, "ng911_sip_shed_total",
               "SIP messages and connections refused by the [limits], by reason (rate_*: dropped "
               "unread; untrusted_*: answered statelessly or dropped; *_cap: 503 or closed).",
               ("reason",), {"reason": SHED_REASONS}),
    MetricSpec("sip_tracked_sources", Gauge, "ng911_sip_tracked_sources",
               "Untrusted source addresses the rate limiter remembers (<= limits.tracked_sources)."),
    MetricSpec("sip_transactions", Gauge, "ng911_sip_transactions",
               "SIP transactions held (<= limits.max_transactions, trusted INVITEs aside)."),
    MetricSpec("sip_dialogs", Gauge, "ng911_sip_dialogs",
               "SIP dialogs held (<= limits.max_dialogs, emergency calls aside)."),
    MetricSpec("sip_connections", Gauge, "ng911_sip_connections",
               "Inbound TCP and TLS connections held (<= limits.max_connections, trusted peers aside)."),
)


class MetricsSink(Protocol):
    """What callers may rely on: :class:`Metrics` and :class:`NullMetrics` both satisfy it.

    Each attribute has ``labels(**values)`` when it has labels, else ``inc``/``dec``/``set``/
    ``observe`` as its Prometheus type allows.
    """

    calls: Any
    active_calls: Any
    calls_in_state: Any
    time_to_answer: Any
    failovers: Any
    failover_duration: Any
    answer_point_up: Any
    abandoned_calls: Any
    queue_length: Any
    time_in_queue: Any
    sip_messages: Any
    sip_dialog_strangers: Any
    sip_refer_refused: Any
    sip_transaction_timeouts: Any
    sip_parse_errors: Any
    tls_handshake_failures: Any
    store_queue_depth: Any
    store_write: Any
    store_fenced_writes: Any
    store_up: Any
    store_backlogged: Any
    store_write_errors: Any
    store_shed: Any
    store_coalesced: Any
    cluster_lease_remaining: Any
    cluster_nodes: Any
    cluster_calls_owned: Any
    cluster_heartbeat_failures: Any
    cluster_takeovers: Any
    cluster_calls_lost: Any
    cluster_held_requests: Any
    build_info: Any
    hunt_attempts: Any
    sip_shed: Any
    sip_tracked_sources: Any
    sip_transactions: Any
    sip_dialogs: Any
    sip_connections: Any


class _Labelled:
    """A labelled family: ``labels()`` checks names and closed value sets, then delegates."""

    __slots__ = ("spec", "_labels", "_family")

    def __init__(self, spec: MetricSpec, family: Any) -> None:
        self.spec = spec
        self._labels = frozenset(spec.labels)
        self._family = family

    def labels(self, **values: str) -> Any:
        if values.keys() != self._labels:
            raise ValueError(f"{self.spec.name} takes labels {sorted(self._labels)}, got {sorted(values)}")
        closed = self.spec.values or {}
        for label, value in values.items():
            allowed = closed.get(label)
            if allowed is not None and value not in allowed:
                raise ValueError(f"{self.spec.name}: {label}={value!r} is not one of {allowed}")
        return self._family.labels(**values)

    def remove(self, **values: str) -> None:
        """Forget one series (an answer point or queue removed from the config)."""
        try:
            self._family.remove(*(values[name] for name in self.spec.labels))
        except KeyError:
            pass


def _closed_combinations(spec: MetricSpec) -> Iterable[dict[str, str]]:
    if not spec.labels or not spec.values or set(spec.values) != set(spec.labels):
        return ()
    pools = [spec.values[name] for name in spec.labels]
    return (dict(zip(spec.labels, combo)) for combo in itertools.product(*pools))


class Metrics:
    """The real metrics, registered on ``registry`` (a fresh ``CollectorRegistry`` per test)."""

    def __init__(self, registry: CollectorRegistry, *, version: str = __version__) -> None:
        self.registry = registry
        for spec in METRICS:
            kwargs: dict[str, Any] = {"registry": registry}
            if spec.buckets is not None:
                kwargs["buckets"] = spec.buckets
            name = spec.name.removesuffix("_total") if spec.type is Counter else spec.name
            family = spec.type(name, spec.doc, spec.labels, **kwargs)
            if spec.labels:
                wrapped = _Labelled(spec, family)
                for combo in _closed_combinations(spec):
                    wrapped.labels(**combo)
                setattr(self, spec.attr, wrapped)
            else:
                setattr(self, spec.attr, family)
        self.build_info.labels(version=version).set(1)


class _NullChild:
    """Accepts every Prometheus child/metric call and does nothing."""

    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass

    def set_to_current_time(self) -> None:
        pass

    def time(self) -> Any:
        return _NULL_TIMER

    def track_inprogress(self) -> Any:
        return _NULL_TIMER


class _NullTimer:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

    def __call__(self, fn: Any) -> Any:
        return fn


_NULL_CHILD = _NullChild()
_NULL_TIMER = _NullTimer()


class _NullFamily:
    __slots__ = ()

    def labels(self, **values: str) -> _NullChild:
        return _NULL_CHILD

    def remove(self, *values: str) -> None:
        pass


class NullMetrics:
    """Same attributes as :class:`Metrics`, same label checks, nothing recorded or exported."""

    def __init__(self) -> None:
        for spec in METRICS:
            setattr(self, spec.attr, _Labelled(spec, _NullFamily()) if spec.labels else _NULL_CHILD)


# --------------------------------------------------------------------------------------------
# /metrics over Twisted web
# --------------------------------------------------------------------------------------------


class MetricsPage(Resource):
    """``GET /metrics``: the registry in the text format (OpenMetrics when the scraper asks).

    Rendered on the reactor thread: collecting an in-memory registry takes microseconds. (Not
    ``prometheus_client.twisted.MetricsResource``: that is a WSGI app on the *global* reactor's
    thread pool, which ignores the injected reactor and needs ``reactor.run()`` to start.)
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Any) -> bytes:
        accept = request.getHeader("accept")
        encoder, content_type = choose_encoder(accept)
        body: bytes = encoder(self.registry)
        request.setHeader("Content-Type", content_type)
        return body


class _QuietSite(Site):
    def log(self, request: Any) -> None:
        """No access log line per scrape."""


def metrics_site(registry: CollectorRegistry) -> Site:
    root = Resource()
    root.putChild(b"metrics", MetricsPage(registry))
    site = _QuietSite(root)
    site.displayTracebacks = False
    site.noisy = False
    return site


def serve_metrics(reactor: Any, registry: CollectorRegistry, host: str, port: int, *,
                  tls: Any = None) -> Any:
    """Listen on ``host:port`` (TCP) and serve ``/metrics``; return the listening port
    (``getHost().port`` tells which one when ``port`` is 0; ``stopListening()`` to close).
    With ``tls`` (a :class:`ng911.sip.transport.tls.TlsCredentials`), HTTPS with its
    certificate; no client certificate is asked for (scrapers authenticate otherwise)."""
    if tls is not None:
        options = tls.server_options(verify_clients=False)
        return reactor.listenSSL(port, metrics_site(registry), options, interface=host)
    return reactor.listenTCP(port, metrics_site(registry), interface=host)
