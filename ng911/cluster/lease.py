"""Leases, as one node sees them: its own, and the others' (pure; the clock is passed in).

Two rules keep two nodes from ever driving one call (DESIGN "Cluster"):

- **A node acts on its stored calls only while its own lease is confirmed.** The lease runs
  from the *start* of the last heartbeat round trip that succeeded, for ``duration`` seconds
  of this node's monotonic clock. The database sets ``lease_expires_at`` at commit, later than
  that start, so the node's own view always ends first. A node paused (SIGSTOP), stalled or cut
  from its database stops acting when its own view ends, before anyone may claim its calls.
- **A survivor declares a node dead only on what it saw itself.** A node is dead when its
  heartbeat has not changed for a whole lease (``duration``) of the survivor's clock *while
  the survivor's own heartbeats kept succeeding*. A survivor that lost its database forgets
  what it saw: after it comes back, every other node gets a full lease to beat again before
  it can be declared dead. So a node never declares others dead because its own connection
  failed, and clocks of different machines are never compared.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

NodeKey = tuple[str, int]  # (name, epoch)


class OwnLease:
    """This node's lease as it knows it."""

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.confirmed_at: float | None = None  # start of the last successful heartbeat

    def confirm(self, beat_started: float) -> None:
        if self.confirmed_at is None or beat_started > self.confirmed_at:
            self.confirmed_at = beat_started

    def valid(self, now: float) -> bool:
        return self.confirmed_at is not None and now < self.confirmed_at + self.duration

    def remaining(self, now: float) -> float:
        """Seconds left (negative: lapsed); -duration when never confirmed."""
        if self.confirmed_at is None:
            return -self.duration
        return self.confirmed_at + self.duration - now


@dataclass(frozen=True, slots=True)
class Dead:
    """A node (name, epoch) whose calls may be claimed, and the heartbeat seen last (the
    claim checks that it has not moved since)."""

    name: str
    epoch: int
    heartbeat_at: float | None


class PeerWatch:
    """The others' heartbeats, as this node saw them change."""

    def __init__(self, me: str, duration: float) -> None:
        self.me = me
        self.duration = duration
        # (name, epoch) -> (heartbeat value seen, when this node first saw that value)
        self._seen: dict[NodeKey, tuple[Any, float]] = {}
        # owners of live calls that are no node's current epoch -> when first seen
        self._orphans: dict[NodeKey, float] = {}

    def lost_sight(self) -> None:
        """This node's own heartbeat failed: what it saw so far proves nothing any more."""
        self._seen.clear()
        self._orphans.clear()

    def orphaned(self, owners: Iterable[Dead], now: float) -> list[Dead]:
        """Owners of live calls whose epoch is no longer their node's (it restarted) are dead
        by definition — but the process of that epoch may still be running (two processes
        under one name, the old one not yet stopped): it stops acting within its lease, so its
        calls are claimed a whole lease after this node first saw them orphaned."""
        due, present = [], set()
        for dead in owners:
            key = (dead.name, dead.epoch)
            present.add(key)
            first = self._orphans.setdefault(key, now)
            if now - first >= self.duration:
                due.append(dead)
        for key in set(self._orphans) - present:
            del self._orphans[key]
        return due

    def observe(self, nodes: Iterable[Mapping[str, Any]], now: float) -> list[Dead]:
        """``nodes``: the rows read in a heartbeat that succeeded (name, epoch, heartbeat_at,
        lease_expires_at, and ``lease_expired``: the database's own verdict). Returns the
        nodes now dead: in a cluster (a lease was set), expired by the database's clock, and
        unchanged for ``duration`` of ours."""
        dead: list[Dead] = []
        present: set[NodeKey] = set()
        for row in nodes:
            key = (str(row["name"]), int(row["epoch"]))
            if key[0] == self.me:
                continue
            present.add(key)
            beat = row.get("heartbeat_at")
            if row.get("lease_released"):
                dead.append(Dead(key[0], key[1], beat))  # it stopped on purpose: no need to wait
                continue
            seen = self._seen.get(key)
            if seen is None or seen[0] != beat:
                self._seen[key] = (beat, now)
                continue
            if row.get("lease_expires_at") is None:
                continue  # not a cluster member (never held a lease): never claimed
            if row.get("lease_expired") and now - seen[1] >= self.duration:
                dead.append(Dead(key[0], key[1], beat))
        for key in set(self._seen) - present:
            del self._seen[key]
        return dead
