"""In-memory twins of the store (STYLE habit 7): same ``CallStore`` contract, no database.

``MemoryStore`` applies every write at once, on the caller's thread, with the SQL store's
semantics -- the same argument checks, the same ``storable`` values (NUL → U+2400), ownership fencing (``on_fenced`` once per call), JSON
round trip of the JSON columns (a value the database could not store raises ``TypeError`` here,
at the call site), the same row dicts from the reads. The store contract suite runs against it,
SQLite and PostgreSQL alike. ``NullStore`` accepts everything and remembers nothing.
"""
from __future__ import annotations

import copy
import json
import threading
import time
from typing import Any, Callable, Mapping

from ng911.store.store import (
    Owner, call_row, check_role, check_update, owner_of, storable, storable_text,
)


def _json(value: Any) -> Any:
    return None if value is None else json.loads(json.dumps(storable(value)))


class MemoryStore:
    """Synchronous, thread-safe, in-process ``CallStore``."""

    def __init__(self) -> None:
        self.on_batch: Callable[[float, int], None] | None = None
        self.on_fenced: Callable[[str], None] | None = None
        self.dropped = 0
        self._lock = threading.RLock()
        self._nodes: dict[str, dict[str, Any]] = {}
        self._calls: dict[str, dict[str, Any]] = {}
        self._legs: dict[tuple[str, str], dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._aps: dict[str, dict[str, Any]] = {}
        self._ap_events: list[dict[str, Any]] = []
        self._abandoned: dict[str, dict[str, Any]] = {}
        self._fenced: set[str] = set()

    # lifecycle
    def start(self) -> None:
        pass

    def stop(self, timeout: float = 5.0) -> None:
        pass

    def flush(self, timeout: float = 5.0) -> bool:
        return True

    @property
    def queue_depth(self) -> int:
        return 0

    def register_node(self, node: str) -> int:
        now = time.time()
        with self._lock:
            epoch = self._nodes[node]["epoch"] + 1 if node in self._nodes else 1
            self._nodes[node] = {"name": node, "epoch": epoch, "started_at": now,
                                 "heartbeat_at": now, "lease_expires_at": None}
            return epoch

    # writes
    def call_created(self, rec: Mapping[str, Any]) -> None:
        row = call_row(rec)
        for key in ("location", "additional_data", "headers"):
            row[key] = _json(row[key])
        row["owner_epoch"] = int(row["owner_epoch"])
        with self._lock:
            self._calls.setdefault(row["call_id"], row)
        self._done()

    def call_updated(self, call_id: str, owner: Owner, **fields: Any) -> None:
        values = check_update(fields)
        call_id = storable_text(call_id)
        if "location" in values:
            values["location"] = _json(values["location"])
        with self._lock:
            if self._owns(call_id, owner):
                self._calls[call_id].update(values)
        self._done()

    def leg_saved(self, call_id: str, owner: Owner, role: str, dialog: dict[str, Any] | None,
                  local_sdp: bytes | None, remote_sdp: bytes | None,
                  answer_point: str | None) -> None:
        check_role(role)
        call_id = storable_text(call_id)
        row = {"call_id": call_id, "role": role, "dialog": _json(dialog),
               "local_sdp": None if local_sdp is None else bytes(local_sdp),
               "remote_sdp": None if remote_sdp is None else bytes(remote_sdp),
               "answer_point": None if answer_point is None else storable_text(answer_point),
               "updated_at": time.time()}
        with self._lock:
            if self._owns(call_id, owner):
                self._legs[(call_id, role)] = row
        self._done()

    def event(self, call_id: str, owner: Owner, kind: str, at: float,
              data: dict[str, Any]) -> None:
        data = _json(data)
        call_id, kind = storable_text(call_id), storable_text(kind)
        with self._lock:
            if self._owns(call_id, owner):
                self._events.append({"id": len(self._events) + 1, "call_id": call_id,
                                     "at": at, "kind": kind, "data": data})
        self._done()

    def ap_health(self, name: str, uri: str, up: bool, at: float) -> None:
        up, name, uri = bool(up), storable_text(name), storable_text(uri)
        with self._lock:
            old = self._aps.get(name)
            changed_at = old["changed_at"] if old is not None and old["up"] == up else at
            self._aps[name] = {"name": name, "uri": uri, "up": up, "changed_at": changed_at}
            self._ap_events.append({"id": len(self._ap_events) + 1, "name": name, "uri": uri,
                                    "up": up, "at": at})
        self._done()

    def abandoned(self, call_id: str, owner: Owner, caller: str,
                  location: dict[str, Any] | None, at: float) -> None:
        location = _json(location)
        call_id, caller = storable_text(call_id), storable_text(caller)
        with self._lock:
            if self._owns(call_id, owner):
                self._abandoned.setdefault(call_id, {
                    "call_id": call_id, "caller": caller, "location": location, "at": at,
                    "called_back_at": None})
        self._done()

    def _owns(self, call_id: str, owner: Owner) -> bool:
        call = self._calls.get(call_id)
        if call is not None and (call["owner_node"], call["owner_epoch"]) == owner_of(owner):
            return True
        if call_id not in self._fenced:
            self._fenced.add(call_id)
            if self.on_fenced is not None:
                self.on_fenced(call_id)
        return False

    def _done(self) -> None:
        if self.on_batch is not None:
            self.on_batch(0.0, 1)

    # reads
    def live_calls(self) -> list[dict[str, Any]]:
        with self._lock:
            live = [c for c in self._calls.values() if c["ended_at"] is None]
            return copy.deepcopy(sorted(live, key=lambda c: (c["created_at"], c["call_id"])))

    def call(self, call_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._calls.get(call_id)
            if row is None:
                return None
            out = copy.deepcopy(row)
            out["legs"] = {role: copy.deepcopy(leg)
                           for (cid, role), leg in self._legs.items() if cid == call_id}
            return out

    def events(self, call_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy([e for e in self._events if e["call_id"] == call_id])

    def answer_points(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(sorted(self._aps.values(), key=lambda a: a["name"]))

    def ap_health_events(self, name: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy([e for e in self._ap_events if name in (None, e["name"])])

    def abandoned_calls(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(sorted(self._abandoned.values(),
                                        key=lambda a: (a["at"], a["call_id"])))


class NullStore:
    """Accepts every write, stores nothing; ``register_node`` counts epochs in memory."""

    def __init__(self) -> None:
        self.on_batch: Callable[[float, int], None] | None = None
        self.on_fenced: Callable[[str], None] | None = None
        self._epochs: dict[str, int] = {}

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 5.0) -> None:
        pass

    def flush(self, timeout: float = 5.0) -> bool:
        return True

    @property
    def queue_depth(self) -> int:
        return 0

    def register_node(self, node: str) -> int:
        self._epochs[node] = self._epochs.get(node, 0) + 1
        return self._epochs[node]

    def call_created(self, rec: Mapping[str, Any]) -> None:
        pass

    def call_updated(self, call_id: str, owner: Owner, **fields: Any) -> None:
        pass

    def leg_saved(self, call_id: str, owner: Owner, role: str, dialog: dict[str, Any] | None,
                  local_sdp: bytes | None, remote_sdp: bytes | None,
                  answer_point: str | None) -> None:
        pass

    def event(self, call_id: str, owner: Owner, kind: str, at: float,
              data: dict[str, Any]) -> None:
        pass

    def ap_health(self, name: str, uri: str, up: bool, at: float) -> None:
        pass

    def abandoned(self, call_id: str, owner: Owner, caller: str,
                  location: dict[str, Any] | None, at: float) -> None:
        pass

    def live_calls(self) -> list[dict[str, Any]]:
        return []

    def call(self, call_id: str) -> dict[str, Any] | None:
        return None

    def events(self, call_id: str) -> list[dict[str, Any]]:
        return []

    def answer_points(self) -> list[dict[str, Any]]:
        return []

    def ap_health_events(self, name: str | None = None) -> list[dict[str, Any]]:
        return []

    def abandoned_calls(self) -> list[dict[str, Any]]:
        return []
