"""The CallStore contract, one suite for MemoryStore, SQLite and PostgreSQL (fixture ``store``)."""
from __future__ import annotations

import time
from typing import Any

import pytest

from ng911.store import CallStore

T0 = 1_790_000_000.25  # a fixed epoch: reads must give back the floats that went in


def make_call(call_id: str, node: str, epoch: int, **over: Any) -> dict[str, Any]:
    rec = {
        "call_id": call_id,
        "sip_call_id": f"{call_id}@esrp.example",
        "nena_call_id": f"urn:emergency:uid:callid:{call_id}:bcf.example",
        "nena_incident_id": f"urn:emergency:uid:incidentid:{call_id}:bcf.example",
        "kind": "emergency",
        "state": "routing",
        "caller": "sip:+15555550100@carrier.example",
        "caller_display": "Caller Name",
        "request_uri": "urn:service:sos",
        "queue": "main",
        "location": {"method": "GPS", "point": [38.8977, -77.0365], "radius": 12.5},
        "additional_data": [{"purpose": "EmergencyCallData.ProviderInfo",
                             "uri": "https://adr.example/1"}],
        "headers": {"Resource-Priority": "esnet.1", "Geolocation-Routing": "yes"},
        "created_at": T0,
        "owner_node": node,
        "owner_epoch": epoch,
    }
    rec.update(over)
    return rec


def settle(store: CallStore) -> None:
    assert store.flush(10.0), "writes did not reach the database in time"


def test_every_store_satisfies_the_protocol(store: CallStore) -> None:
    assert isinstance(store, CallStore)
    assert store.queue_depth == 0


def test_register_node_bumps_the_epoch_at_every_start(store: CallStore) -> None:
    assert store.register_node("node-a") == 1
    assert store.register_node("node-a") == 2
    assert store.register_node("node-b") == 1
    assert store.register_node("node-a") == 3


def test_call_round_trip_create_update_legs_events_abandoned(store: CallStore) -> None:
    epoch = store.register_node("n1")
    owner = ("n1", epoch)
    store.call_created(make_call("c1", "n1", epoch))
    store.call_updated("c1", owner, state="ringing", answer_point="ap1", updated_at=T0 + 1)
    store.leg_saved("c1", owner, "upstream", {"call_id": "x@esrp", "local_tag": "a",
                                              "remote_tag": "b", "local_cseq": 1,
                                              "route_set": ["<sip:esrp.example;lr>"]},
                    b"v=0\r\no=caller 1 1 IN IP4 192.0.2.1\r\n", None, None)
    store.leg_saved("c1", owner, "psap", {"call_id": "y@ng911"}, None, b"v=0\r\n", "ap1")
    store.leg_saved("c1", owner, "psap", {"call_id": "z@ng911"}, b"v=0 local\r\n",
                    b"v=0 remote\r\n", "ap2")  # moved: the leg row is replaced
    store.event("c1", owner, "created", T0, {"queue": "main"})
    store.event("c1", owner, "psap_ringing", T0 + 0.5, {"ap": "ap1"})
    store.event("c1", owner, "psap_answered", T0 + 1, {"ap": "ap2", "n": [1, 2]})
    store.call_updated("c1", owner, state="talking", answer_point="ap2",
                       answered_at=T0 + 1, updated_at=T0 + 1)
    settle(store)

    call = store.call("c1")
    assert call is not None
    expected = make_call("c1", "n1", epoch)
    for key in ("sip_call_id", "nena_call_id", "nena_incident_id", "kind", "caller",
                "caller_display", "request_uri", "queue", "location", "additional_data",
                "headers", "owner_node", "owner_epoch"):
        assert call[key] == expected[key], key
    assert call["created_at"] == pytest.approx(T0, abs=1e-6)
    assert call["state"] == "talking"
    assert call["answer_point"] == "ap2"
    assert call["answered_at"] == pytest.approx(T0 + 1, abs=1e-6)
    assert call["ended_at"] is None
    assert set(call["legs"]) == {"upstream", "psap"}
    up, psap = call["legs"]["upstream"], call["legs"]["psap"]
    assert up["dialog"]["route_set"] == ["<sip:esrp.example;lr>"]
    assert up["local_sdp"] == b"v=0\r\no=caller 1 1 IN IP4 192.0.2.1\r\n"
    assert up["remote_sdp"] is None
    assert psap == {"call_id": "c1", "role": "psap", "dialog": {"call_id": "z@ng911"},
                    "local_sdp": b"v=0 local\r\n", "remote_sdp": b"v=0 remote\r\n",
                    "answer_point": "ap2", "updated_at": psap["updated_at"]}
    assert [e["kind"] for e in store.events("c1")] == ["created", "psap_ringing",
                                                       "psap_answered"]
    assert store.events("c1")[2]["data"] == {"ap": "ap2", "n": [1, 2]}
    assert store.events("c1")[1]["at"] == pytest.approx(T0 + 0.5, abs=1e-6)
    assert [c["call_id"] for c in store.live_calls()] == ["c1"]

    store.call_updated("c1", owner, state="ended", ended_at=T0 + 60, outcome="answered",
                       end_reason="caller BYE")
    settle(store)
    assert store.live_calls() == []
    ended = store.call("c1")
    assert ended is not None and ended["outcome"] == "answered"
    assert ended["end_reason"] == "caller BYE"


def test_abandoned_call_goes_on_the_callback_list_once(store: CallStore) -> None:
    epoch = store.register_node("n1")
    owner = ("n1", epoch)
    store.call_created(make_call("c1", "n1", epoch, location=None))
    store.call_created(make_call("c2", "n1", epoch, created_at=T0 + 5))
    store.abandoned("c2", owner, "sip:+15555550102@carrier.example", {"civic": "1 Main St"},
                    T0 + 9)
    store.abandoned("c1", owner, "sip:+15555550101@carrier.example", None, T0 + 3)
    store.abandoned("c1", owner, "sip:other@example", None, T0 + 4)  # a repeat changes nothing
    settle(store)
    rows = store.abandoned_calls()
    assert [(r["call_id"], r["caller"], r["location"], r["called_back_at"]) for r in rows] == [
        ("c1", "sip:+15555550101@carrier.example", None, None),
        ("c2", "sip:+15555550102@carrier.example", {"civic": "1 Main St"}, None),
    ]
    assert rows[0]["at"] == pytest.approx(T0 + 3, abs=1e-6)
    call = store.call("c1")
    assert call is not None and call["location"] is None


def test_events_keep_their_order_per_call_across_interleaved_calls(store: CallStore) -> None:
    epoch = store.register_node("n1")
    owner = ("n1", epoch)
    ids = [f"c{i}" for i in range(3)]
    for cid in ids:
        store.call_created(make_call(cid, "n1", epoch))
    for n in range(150):
        cid = ids[n % 3]
        store.event(cid, owner, "tick", T0 + n, {"n": n})
        if n % 10 == 0:
            store.call_updated(cid, owner, state=("ringing", "talking")[n % 2])
    settle(store)
    for i, cid in enumerate(ids):
        assert [e["data"]["n"] for e in store.events(cid)] == list(range(i, 150, 3))
        ev = store.events(cid)
        assert [e["id"] for e in ev] == sorted(e["id"] for e in ev)
    assert [c["call_id"] for c in store.live_calls()] == ids  # created_at ties: by call_id


def test_a_write_with_a_stale_epoch_is_fenced_and_reported_once(store: CallStore) -> None:
    fenced: list[str] = []
    store.on_fenced = fenced.append
    old = store.register_node("n1")
    new = store.register_node("n1")  # the node restarted: its epoch moved on
    store.call_created(make_call("c1", "n1", new))
    store.event("c1", ("n1", new), "created", T0, {})
    store.call_updated("c1", ("n1", old), state="hijacked")
    store.event("c1", ("n1", old), "stale", T0 + 1, {})
    store.leg_saved("c1", ("n1", old), "psap", {"x": 1}, None, None, "ap9")
    store.abandoned("c1", ("n1", old), "sip:x@example", None, T0 + 2)
    store.call_updated("c1", ("n2", new), state="hijacked")
    settle(store)
    assert fenced == ["c1"]
    call = store.call("c1")
    assert call is not None
    assert call["state"] == "routing"
    assert call["legs"] == {}
    assert [e["kind"] for e in store.events("c1")] == ["created"]
    assert store.abandoned_calls() == []
    # the owner itself still writes
    store.call_updated("c1", ("n1", new), state="talking")
    settle(store)
    assert store.call("c1")["state"] == "talking"  # type: ignore[index]


def test_writes_for_a_call_never_created_are_fenced(store: CallStore) -> None:
    fenced: list[str] = []
    store.on_fenced = fenced.append
    store.event("ghost", ("n1", 1), "x", T0, {})
    store.call_updated("ghost", ("n1", 1), state="x")
    settle(store)
    assert fenced == ["ghost"]
    assert store.call("ghost") is None
    assert store.events("ghost") == []


def test_answer_point_health_keeps_the_last_transition_and_every_report(
        store: CallStore) -> None:
    store.ap_health("ap1", "sip:ap1@127.0.0.1:5070", True, T0)
    store.ap_health("ap2", "sip:ap2@127.0.0.1:5071", True, T0)
    store.ap_health("ap1", "sip:ap1@127.0.0.1:5070", True, T0 + 5)   # no transition
    store.ap_health("ap2", "sip:ap2@127.0.0.1:5071", False, T0 + 6)  # down
    settle(store)
    aps = store.answer_points()
    assert [(a["name"], a["uri"], a["up"]) for a in aps] == [
        ("ap1", "sip:ap1@127.0.0.1:5070", True), ("ap2", "sip:ap2@127.0.0.1:5071", False)]
    assert aps[0]["changed_at"] == pytest.approx(T0, abs=1e-6)
    assert aps[1]["changed_at"] == pytest.approx(T0 + 6, abs=1e-6)
    assert [(e["name"], e["up"]) for e in store.ap_health_events()] == [
        ("ap1", True), ("ap2", True), ("ap1", True), ("ap2", False)]
    assert [e["at"] for e in store.ap_health_events("ap2")] == pytest.approx([T0, T0 + 6])


def test_bad_arguments_fail_at_the_call_site(store: CallStore) -> None:
    with pytest.raises(ValueError, match="kind"):
        store.call_created(make_call("c1", "n1", 1, kind="prank"))
    with pytest.raises(ValueError, match="missing"):
        rec = make_call("c1", "n1", 1)
        del rec["caller"]
        store.call_created(rec)
    with pytest.raises(ValueError, match="unknown"):
        store.call_created(make_call("c1", "n1", 1, colour="red"))
    with pytest.raises(ValueError, match="owner_node"):
        store.call_updated("c1", ("n1", 1), owner_node="n2")
    with pytest.raises(ValueError, match="role"):
        store.leg_saved("c1", ("n1", 1), "bridge", None, None, None, None)
    with pytest.raises(TypeError):
        store.call_created(make_call("c1", "n1", 1, location={"at": object()}))
    with pytest.raises(TypeError):
        store.event("c1", ("n1", 1), "x", T0, {"bad": {1, 2}})
    with pytest.raises(TypeError):
        store.leg_saved("c1", ("n1", 1), "psap", {"sdp": b"bytes are not JSON"}, None, None,
                        None)
    assert store.queue_depth == 0


def test_optional_call_fields_default_to_empty(store: CallStore) -> None:
    rec = {k: v for k, v in make_call("c1", "n1", 1, kind="test").items()
           if k not in ("nena_call_id", "nena_incident_id", "caller_display", "queue",
                        "location", "additional_data", "headers")}
    store.call_created(rec)
    settle(store)
    call = store.call("c1")
    assert call is not None
    assert (call["kind"], call["queue"], call["location"], call["additional_data"],
            call["headers"]) == ("test", None, None, [], {})
    assert call["updated_at"] == pytest.approx(T0, abs=1e-6)


def test_on_batch_reports_committed_writes(store: CallStore) -> None:
    batches: list[tuple[float, int]] = []
    store.on_batch = lambda seconds, rows: batches.append((seconds, rows))
    for i in range(5):
        store.ap_health(f"ap{i}", f"sip:ap{i}@example", True, time.time())
    settle(store)
    assert sum(rows for _, rows in batches) == 5
    assert all(seconds >= 0 for seconds, _ in batches)
