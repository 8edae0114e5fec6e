"""A node as a member of the cluster: the Twisted shell around ``lease``, ``sql`` and ``gate``.

Every ``heartbeat_interval`` seconds, on a thread of its own with a database engine of its own
(a heartbeat never waits behind the store's write-behind queue):

1. renew this node's lease and read the cluster (``sql.heartbeat``);
2. on the reactor: confirm the lease (``OwnLease``), stop acting on the stored calls the
   database no longer says are ours (``Controller.forget_call``: timers, probes, refreshes
   stopped; the gate drops what is still in flight), release what the gate held;
3. judge the others (``PeerWatch``: dead only on what this node saw while its own heartbeat
   worked) and claim the calls of the dead — and those left by an earlier life of any node —
   a fair share per beat (``sql.claim``, ``FOR UPDATE SKIP LOCKED``);
4. rebuild each claimed call and re-INVITE both legs with this node's Contact
   (``Controller.restore_call``).

A heartbeat that fails changes nothing but the lease's clock: the node keeps its calls, holds
requests on stored calls once its own lease lapses, and forgets what it saw of the others.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable

from twisted.internet import threads
from twisted.internet.task import LoopingCall

from ng911.cluster import commands, sql
from ng911.cluster.gate import SendGate
from ng911.cluster.lease import Dead, OwnLease, PeerWatch

log = logging.getLogger("ng911.cluster")

#: a fair share: calls claimed per dead node per beat, at most
CLAIM_BATCH_MAX = 200


class ClusterMember:
    def __init__(self, reactor: Any, *, node: str, heartbeat_interval: float, lease_duration: float,
                 engine: Any, controller: Any, metrics: Any, sip_uri: str | None,
                 clock: Callable[[], float] = time.monotonic,
                 to_thread: Callable[..., Any] | None = None) -> None:
        self.reactor = reactor
        self.node = node
        self.interval = heartbeat_interval
        self.engine = engine
        self.controller = controller
        self.metrics = metrics
        self.sip_uri = sip_uri
        self.clock = clock
        self.to_thread = to_thread or (lambda fn, *a: threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), fn, *a))
        self.lease = OwnLease(lease_duration)
        self.peers = PeerWatch(node, lease_duration)
        self.epoch: int | None = None
        self.gate: SendGate | None = None
        self._loop: LoopingCall | None = None
        self._beating = False
        self._claiming = False
        self._failures = 0
        self._sip_index: dict[str, Any] | None = None
        self.taken_over = 0
        #: commands run whose outcome is not recorded yet: when taken again, recorded, not rerun
        self._commands_run: dict[int, tuple[bool, str]] = {}
        #: another process registered under this node's name: this one must stop
        self.on_superseded: Callable[[], None] = lambda: reactor.stop()

    # --- wiring -----------------------------------------------------------------------------
    def wrap_port(self, ua: Any) -> SendGate:
        """Put the send gate between the UA core and its transports."""
        self.gate = SendGate(ua.port, may_send=self.may_send, stored=self._stored_sip_call, clock=self.clock)
        ua.port = self.gate
        self.controller.acting = self.may_act
        self.controller.on_call_lost = self.gate.fence
        self.controller.stray_owner = self.stray_owner
        return self.gate

    def registered(self, epoch: int) -> None:
        self.epoch = epoch

    def start(self) -> None:
        self._loop = LoopingCall(self.beat)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        """Stopping on purpose: send nothing more on stored calls and give the lease back, so
        that the survivors take the calls over at their next heartbeat (blocking: shutdown)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.lease.confirmed_at = None  # from now on every request on a stored call is held
        if self.epoch is None:
            return
        try:
            with self.engine.begin() as conn:
                released = sql.release(conn, self.node, self.epoch)
            log.info("cluster: lease given back (%s): the other nodes take this node's calls over now",
                     "done" if released else "not ours any more")
        except Exception as e:
            log.warning("cluster: could not give the lease back (%s): the calls are taken over when it expires", e)

    # --- verdicts the node asks for -----------------------------------------------------------
    def may_send(self) -> bool:
        return self.lease.valid(self.clock())

    def may_act(self, call: Any) -> bool:
        return not call.stored or self.lease.valid(self.clock())

    def _stored_sip_call(self, sip_call_id: str) -> bool:
        index = self._sip_index
        if index is None or sip_call_id not in index:
            index = self._sip_index = {leg.call_id: call for call in self.controller.calls.values()
                                       for leg in call.legs()}
        call = index.get(sip_call_id)
        return call is not None and call.stored

    def stray_owner(self, sip_call_id: str, done: Callable[[bool], None]) -> None:
        """Answer ``done(True)`` when ``sip_call_id`` is a live call this node does not have
        (it lost it, or it is another node's): from what the gate knows, else the database."""
        if self.gate is not None and self.gate.is_fenced(sip_call_id):
            done(True)
            return

        def lookup() -> bool:
            with self.engine.connect() as conn:
                return sql.live_call_with_sip_call_id(conn, sip_call_id)

        d = self.to_thread(lookup)
        d.addCallbacks(done, lambda f: done(True))  # database away: a retry is the safe answer

    # --- the beat -----------------------------------------------------------------------------
    def beat(self) -> None:
        if self._beating or self.epoch is None:
            return
        self._beating = True
        started = self.clock()
        candidates = [cid for cid, call in self.controller.calls.items() if call.stored]
        d = self.to_thread(self._beat_sync, self.epoch)
        d.addCallbacks(self._beaten, self._beat_failed, callbackArgs=(started, candidates))
        d.addErrback(lambda f: log.error("cluster: heartbeat handling failed: %s", f.getTraceback()))
        d.addBoth(self._done_beating)

    def _done_beating(self, _: Any) -> None:
        self._beating = False
        self.sample()

    def _beat_sync(self, epoch: int) -> sql.Beat | None:
        with self.engine.begin() as conn:
            beat = sql.heartbeat(conn, self.node, epoch, self.lease.duration, self.sip_uri)
            if beat is not None and beat.owned:
                beat.commands = commands.take(conn, self.node, epoch)
            return beat

    def _beat_failed(self, failure: Any) -> None:
        self._failures += 1
        self.metrics.cluster_heartbeat_failures.inc()
        self.peers.lost_sight()
        if self._failures == 1 or self._failures % 30 == 0:
            log.warning("cluster: heartbeat failed (%s), %d in a row; lease %.1f s left: past it this "
                        "node holds requests on its stored calls until the database answers",
                        failure.getErrorMessage().strip().splitlines()[0] if failure.getErrorMessage() else failure.type,
                        self._failures, self.lease.remaining(self.clock()))

    def _beaten(self, beat: sql.Beat | None, started: float, candidates: list[str]) -> None:
        if beat is None:
            log.critical("cluster: node %s epoch %s is no longer this node's registration (another "
                         "process started under the same name): dropping every call and stopping",
                         self.node, self.epoch)
            for call_id in list(self.controller.calls):
                self.controller.forget_call(call_id, "node superseded")
            self.on_superseded()
            return
        if self._failures:
            log.warning("cluster: heartbeat works again after %d failure(s)", self._failures)
        self._failures = 0
        self.lease.confirm(started)
        self._sip_index = None
        for call_id in candidates:
            if call_id not in beat.owned and call_id in self.controller.calls:
                self.controller.forget_call(call_id, "claimed by another node")
        if self.gate is not None:
            self.gate.release()
        for cmd in beat.commands:
            self._run_command(cmd)
        self._observe(beat)

    def _run_command(self, cmd: dict[str, Any]) -> None:
        """An operator's command on a call this node owns (``commands.take``): run it, write the
        outcome on a thread. Not recorded (database away): taken again after RETAKE_AFTER."""
        cid = cmd["id"]
        if cid in self._commands_run:
            ok, result = self._commands_run[cid]  # run already; only its outcome was not written
        elif cmd["call_id"] not in self.controller.calls and self._claiming:
            # claimed a moment ago, not restored yet: the next heartbeat takes it again
            self.to_thread(self._command_sync, commands.give_back, cid, self.node, self.epoch).addErrback(
                lambda f: log.warning("cluster: command %s not given back (%s): taken again in %.0f s",
                                      cid, f.getErrorMessage(), commands.RETAKE_AFTER))
            return
        else:
            try:
                ok, result = self.controller.run_command(cmd)
            except Exception as e:
                log.exception("cluster: command %s (%s) on call %s failed", cid, cmd.get("action"), cmd["call_id"])
                ok, result = False, f"failed: {e}"
            self._commands_run[cid] = (ok, result)
            log.info("cluster: command %s %s on call %s by %s: %s", cid, cmd.get("action"), cmd["call_id"],
                     cmd.get("issued_by"), result, extra={"call_id": cmd["call_id"], "event": "operator_command"})
        d = self.to_thread(self._command_sync, commands.finish, cid, ok, result)
        d.addCallbacks(lambda _: self._commands_run.pop(cid, None),
                       lambda f: log.warning("cluster: outcome of command %s not written (%s): it is taken "
                                             "again in %.0f s", cid, f.getErrorMessage(), commands.RETAKE_AFTER))

    def _command_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self.engine.begin() as conn:
            return fn(conn, *args)

    def _observe(self, beat: sql.Beat) -> None:
        counts = {"alive": 0, "expired": 0, "none": 0}
        for row in beat.nodes:
            lease = "none" if row.get("lease_expires_at") is None else (
                "expired" if row.get("lease_expired") else "alive")
            counts[lease] += 1
        for lease, n in counts.items():
            self.metrics.cluster_nodes.labels(lease=lease).set(n)
        per_node: dict[str, int] = {}
        for (name, _epoch), n in beat.live_by_owner.items():
            per_node[name] = per_node.get(name, 0) + n
        for row in beat.nodes:
            self.metrics.cluster_calls_owned.labels(node=str(row["name"])).set(per_node.get(str(row["name"]), 0))
        now = self.clock()
        dead = self.peers.observe(beat.nodes, now) + self.peers.orphaned(sql.orphans(beat), now)
        victims = [(d, beat.live_by_owner.get((d.name, d.epoch), 0)) for d in dead]
        victims = [(d, n) for d, n in victims if n > 0]
        if not victims or self._claiming:
            return
        alive = 1 + sum(1 for row in beat.nodes
                        if row["name"] != self.node and row.get("lease_expires_at") is not None
                        and not row.get("lease_expired"))
        self._claiming = True
        d = self.to_thread(self._claim_sync, self.epoch, [(v, min(CLAIM_BATCH_MAX, math.ceil(n / alive)))
                                                          for v, n in victims])
        d.addCallbacks(self._claimed, lambda f: log.warning("cluster: claim failed: %s", f.getErrorMessage()))
        d.addErrback(lambda f: log.error("cluster: takeover failed: %s", f.getTraceback()))
        d.addBoth(lambda _: setattr(self, "_claiming", False))

    def _claim_sync(self, epoch: int, victims: list[tuple[Dead, int]]) -> list[tuple[Dead, list[dict[str, Any]]]]:
        out = []
        for dead, limit in victims:
            with self.engine.begin() as conn:
                out.append((dead, sql.claim(conn, self.node, epoch, dead, limit)))
        return out

    def _claimed(self, results: list[tuple[Dead, list[dict[str, Any]]]]) -> None:
        for dead, rows in results:
            if not rows:
                continue
            log.warning("cluster: node %s epoch %d is dead: taking over %d call(s)", dead.name, dead.epoch, len(rows))
            for row in rows:
                self._take_over(dead, row)

    def _take_over(self, dead: Dead, row: dict[str, Any]) -> None:
        call_id = row["call_id"]
        if call_id in self.controller.calls:
            return
        state = row["state"]
        try:
            self.controller.restore_call(row, taken_from=f"{dead.name}/{dead.epoch}")
        except Exception:
            log.exception("cluster: call %s (state %s) taken from %s could not be restored", call_id, state, dead.name)
            return
        self.taken_over += 1
        if state != "ended":
            self.metrics.cluster_takeovers.labels(state=state).inc()
        log.warning("cluster: call %s (%s) taken over from %s epoch %d", call_id, state, dead.name, dead.epoch,
                    extra={"call_id": call_id, "event": "taken_over"})

    def sample(self) -> None:
        self.metrics.cluster_lease_remaining.set(self.lease.remaining(self.clock()))
        if self.gate is not None:
            self.metrics.cluster_held_requests.set(self.gate.held)
