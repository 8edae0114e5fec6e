"""ng911.metrics: declared once, fixed label sets, a Null twin, and /metrics over Twisted web."""
from __future__ import annotations

import socket
import time

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from ng911 import __version__
from ng911.metrics import (
    CALL_KINDS,
    FAILOVER_REASONS,
    METRICS,
    Metrics,
    MetricsSink,
    NullMetrics,
    serve_metrics,
    sip_message_kind,
)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_names_follow_prometheus_conventions() -> None:
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names))
    for m in METRICS:
        assert m.name.startswith("ng911_"), m.name
        assert m.name.endswith("_total") == (m.type.__name__ == "Counter"), m.name
        if m.type.__name__ == "Histogram":
            assert m.name.endswith("_seconds"), m.name
        for label in m.labels:
            assert label not in ("call_id", "uri", "nena_call_id", "from", "to"), m.name


def test_the_expected_metrics_exist(registry: CollectorRegistry) -> None:
    Metrics(registry)
    exposed = {f.name for f in registry.collect()}
    for name in ("ng911_calls", "ng911_active_calls", "ng911_time_to_answer_seconds", "ng911_failovers",
                 "ng911_failover_duration_seconds", "ng911_answer_point_up", "ng911_abandoned_calls",
                 "ng911_queue_length", "ng911_time_in_queue_seconds", "ng911_sip_messages",
                 "ng911_sip_transaction_timeouts", "ng911_sip_parse_errors", "ng911_store_queue_depth",
                 "ng911_store_write_seconds", "ng911_store_fenced_writes", "ng911_build_info",
                 "ng911_hunt_attempts"):
        assert name in exposed, name


def test_build_info_is_one_with_the_version(registry: CollectorRegistry) -> None:
    Metrics(registry)
    assert registry.get_sample_value("ng911_build_info", {"version": __version__}) == 1


def test_closed_label_sets_start_at_zero(registry: CollectorRegistry) -> None:
    Metrics(registry)
    for kind in CALL_KINDS:
        assert registry.get_sample_value("ng911_calls_total", {"kind": kind, "outcome": "abandoned"}) == 0
    for reason in FAILOVER_REASONS:
        assert registry.get_sample_value("ng911_failovers_total", {"reason": reason}) == 0
    assert registry.get_sample_value("ng911_sip_messages_total", {"direction": "sent", "kind": "response_6xx"}) == 0


def test_counting(registry: CollectorRegistry) -> None:
    m = Metrics(registry)
    m.calls.labels(kind="emergency", outcome="answered").inc()
    m.failovers.labels(reason="in_dialog_481").inc()
    m.time_to_answer.labels(kind="emergency").observe(3.2)
    m.failover_duration.observe(0.4)
    m.answer_point_up.labels(answer_point="ap1").set(1)
    m.abandoned_calls.inc()
    m.sip_messages.labels(direction="received", kind=sip_message_kind("INVITE")).inc()
    m.sip_transaction_timeouts.labels(timer="B").inc()
    m.store_queue_depth.set(7)
    get = registry.get_sample_value
    assert get("ng911_calls_total", {"kind": "emergency", "outcome": "answered"}) == 1
    assert get("ng911_failovers_total", {"reason": "in_dialog_481"}) == 1
    assert get("ng911_time_to_answer_seconds_count", {"kind": "emergency"}) == 1
    assert get("ng911_time_to_answer_seconds_bucket", {"kind": "emergency", "le": "5.0"}) == 1
    assert get("ng911_failover_duration_seconds_sum") == 0.4
    assert get("ng911_answer_point_up", {"answer_point": "ap1"}) == 1
    assert get("ng911_abandoned_calls_total") == 1
    assert get("ng911_sip_messages_total", {"direction": "received", "kind": "INVITE"}) == 1
    assert get("ng911_sip_transaction_timeouts_total", {"timer": "B"}) == 1
    assert get("ng911_store_queue_depth") == 7


@pytest.mark.parametrize("make", [lambda: Metrics(CollectorRegistry()), NullMetrics], ids=["real", "null"])
def test_label_values_outside_the_closed_set_are_refused(make) -> None:  # type: ignore[no-untyped-def]
    m = make()
    with pytest.raises(ValueError, match="kind='a84b4c76e66710@pc33.atlanta.com'"):
        m.calls.labels(kind="a84b4c76e66710@pc33.atlanta.com", outcome="answered")
    with pytest.raises(ValueError, match="takes labels"):
        m.calls.labels(kind="emergency")
    with pytest.raises(ValueError):
        m.sip_messages.labels(direction="received", kind="FOO")
    with pytest.raises(ValueError):
        m.hunt_attempts.labels(result="sip:ap1@127.0.0.1:5070")


def test_sip_message_kind_is_bounded() -> None:
    assert sip_message_kind("INVITE") == "INVITE"
    assert sip_message_kind("FOO") == "other"
    assert sip_message_kind("invite") == "other"
    assert sip_message_kind(status=180) == "response_1xx"
    assert sip_message_kind(status=699) == "response_6xx"
    assert sip_message_kind(status=99) == "other"


def test_null_twin_has_the_same_attributes_and_does_nothing() -> None:
    real, null = Metrics(CollectorRegistry()), NullMetrics()
    for spec in METRICS:
        assert hasattr(real, spec.attr) and hasattr(null, spec.attr)
    for name in MetricsSink.__annotations__:
        assert hasattr(real, name) and hasattr(null, name), name
    null.calls.labels(kind="test", outcome="failed").inc()
    null.failover_duration.observe(1.0)
    null.store_queue_depth.set(3)
    null.active_calls.labels(kind="other").dec()
    with null.store_write.time():
        pass


def test_two_registries_do_not_collide() -> None:
    a, b = CollectorRegistry(), CollectorRegistry()
    Metrics(a).abandoned_calls.inc()
    Metrics(b)
    assert a.get_sample_value("ng911_abandoned_calls_total") == 1
    assert b.get_sample_value("ng911_abandoned_calls_total") == 0


def test_serve_metrics_answers_get_metrics(registry: CollectorRegistry) -> None:
    from twisted.internet import reactor

    Metrics(registry).calls.labels(kind="test", outcome="answered").inc()
    before = set(reactor.getDelayedCalls())
    port = serve_metrics(reactor, registry, "127.0.0.1", 0)
    sock = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=1)
    try:
        sock.setblocking(False)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            reactor.iterate(0.01)
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                break
            data += chunk
        else:
            raise AssertionError(f"no complete response within 5 s: {data[:200]!r}")
    finally:
        sock.close()
        stopped: list[object] = []
        port.stopListening().addBoth(stopped.append)
        deadline = time.monotonic() + 5
        while not stopped and time.monotonic() < deadline:
            reactor.iterate(0.01)
    assert stopped
    assert not [c for c in reactor.getDelayedCalls() if c not in before and c.active()]
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"text/plain" in head.lower()
    text = body.decode()
    if b"chunked" in head.lower():  # Transfer-Encoding: chunked
        text = _dechunk(body).decode()
    assert f'ng911_build_info{{version="{__version__}"}} 1.0' in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["ng911_calls"].type == "counter"
    sample = [s for s in families["ng911_calls"].samples
              if s.name == "ng911_calls_total" and s.labels == {"kind": "test", "outcome": "answered"}]
    assert sample[0].value == 1


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2:]
    return out
