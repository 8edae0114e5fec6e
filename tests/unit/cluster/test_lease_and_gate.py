"""The cluster's pure parts: a node's own lease, its judgement of the others, the send gate."""
from __future__ import annotations

from ng911.cluster.gate import SendGate
from ng911.cluster.lease import Dead, OwnLease, PeerWatch
from ng911.sip.message import parse_message


def test_own_lease_runs_from_the_start_of_the_last_successful_beat():
    lease = OwnLease(3.0)
    assert not lease.valid(0.0)  # never confirmed: not valid
    lease.confirm(10.0)
    assert lease.valid(12.9) and not lease.valid(13.0)
    lease.confirm(9.0)  # a slower, older beat answering late does not move it back
    assert lease.confirmed_at == 10.0
    assert lease.remaining(14.0) == -1.0


def _row(name, epoch, beat, *, expired=True, lease=True):
    return {"name": name, "epoch": epoch, "heartbeat_at": beat,
            "lease_expires_at": 1.0 if lease else None, "lease_expired": expired}


def test_a_node_is_dead_only_after_a_whole_lease_unchanged_in_our_own_eyes():
    watch = PeerWatch("me", 3.0)
    assert watch.observe([_row("me", 1, 5.0), _row("n2", 4, 100.0)], now=0.0) == []
    assert watch.observe([_row("n2", 4, 100.0)], now=2.9) == []
    assert watch.observe([_row("n2", 4, 100.0)], now=3.0) == [Dead("n2", 4, 100.0)]


def test_a_heartbeat_that_moved_restarts_the_count():
    watch = PeerWatch("me", 3.0)
    watch.observe([_row("n2", 4, 100.0)], now=0.0)
    watch.observe([_row("n2", 4, 101.0)], now=2.5)
    assert watch.observe([_row("n2", 4, 101.0)], now=5.0) == []
    assert watch.observe([_row("n2", 4, 101.0)], now=5.5) == [Dead("n2", 4, 101.0)]


def test_losing_our_own_database_forgets_what_we_saw():
    """A survivor cut from the database must give the others a full lease after it comes back:
    they could not beat either."""
    watch = PeerWatch("me", 3.0)
    watch.observe([_row("n2", 4, 100.0)], now=0.0)
    watch.lost_sight()
    assert watch.observe([_row("n2", 4, 100.0)], now=10.0) == []
    assert watch.observe([_row("n2", 4, 100.0)], now=12.9) == []
    assert watch.observe([_row("n2", 4, 100.0)], now=13.0) == [Dead("n2", 4, 100.0)]


def test_no_lease_or_not_expired_by_the_database_clock_is_never_dead():
    watch = PeerWatch("me", 1.0)
    rows = [_row("single", 1, 5.0, lease=False), _row("slowclock", 2, 6.0, expired=False)]
    watch.observe(rows, now=0.0)
    assert watch.observe(rows, now=100.0) == []


class _Port:
    def __init__(self):
        self.sent = []

    def send(self, message, dest):
        self.sent.append((message, dest))

    def destination(self, *a):
        return "dest"


def _request(method, call_id, branch, cseq=1):
    raw = (f"{method} sip:ap@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\n"
           f"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:ap@127.0.0.1>;tag=2\r\nCall-ID: {call_id}\r\n"
           f"CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    return parse_message(raw)


def _response(call_id):
    raw = ("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\n"
           f"To: <sip:ap@127.0.0.1>;tag=2\r\nCall-ID: {call_id}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n").encode()
    return parse_message(raw)


def _gate(valid, stored=("stored-call",)):
    port = _Port()
    gate = SendGate(port, may_send=lambda: valid[0], stored=lambda cid: cid in stored)
    return port, gate


def test_the_gate_holds_requests_on_stored_calls_while_the_lease_is_unconfirmed():
    valid = [False]
    port, gate = _gate(valid)
    gate.send(_request("OPTIONS", "stored-call", "z9hG4bK1"), "d")
    gate.send(_request("OPTIONS", "stored-call", "z9hG4bK1"), "d")  # a retransmission: one copy kept
    gate.send(_request("INVITE", "new-call", "z9hG4bK2"), "d")  # not in the database: nobody else's
    gate.send(_response("stored-call"), "d")  # a peer asked: answered
    assert [m.call_id for m, _ in port.sent] == ["new-call", "stored-call"]
    assert gate.held == 1
    assert gate.release() == 0  # still unconfirmed: nothing goes
    valid[0] = True
    assert gate.release() == 1 and gate.held == 0
    assert port.sent[-1][0].method == "OPTIONS"
    assert gate.destination() == "dest"  # the rest of the port passes through


def test_what_is_held_for_a_call_taken_from_us_is_dropped_and_never_sent():
    valid = [False]
    port, gate = _gate(valid)
    gate.send(_request("OPTIONS", "stored-call", "z9hG4bK1"), "d")
    gate.fence(["stored-call"])
    valid[0] = True
    assert gate.release() == 0 and port.sent == []
    gate.send(_request("BYE", "stored-call", "z9hG4bK3", cseq=2), "d")  # a late timer: dropped too
    assert port.sent == [] and gate.dropped == 2
    gate.send(_response("stored-call"), "d")
    assert len(port.sent) == 1  # responses still pass


def test_fenced_call_ids_are_forgotten_once_nothing_can_send_on_them_and_bounded_in_number(monkeypatch):
    from ng911.cluster import gate as gate_module

    now = [0.0]
    port = _Port()
    gate = SendGate(port, may_send=lambda: True, stored=lambda c: True, clock=lambda: now[0], fenced_ttl=320.0)
    gate.fence(["old"])
    now[0] = 319.0
    gate.send(_request("BYE", "old", "z9hG4bK1"), "d")
    assert port.sent == [] and gate.is_fenced("old")  # its transactions may still be in flight
    now[0] = 321.0
    gate.fence(["new"])
    assert gate.fenced == 1 and not gate.is_fenced("old") and gate.is_fenced("new")
    monkeypatch.setattr(gate_module, "FENCED_MEMORY", 3)
    gate.fence([f"c{i}" for i in range(10)])
    assert gate.fenced == 3 and gate.is_fenced("c9") and not gate.is_fenced("new")


def test_calls_of_a_superseded_epoch_are_claimed_a_whole_lease_after_first_seen():
    """The process of the old epoch may still run (one name, two processes): it stops acting
    within its own lease, so nobody claims its calls before that."""
    watch = PeerWatch("me", 3.0)
    old = Dead("n1", 1, None)
    assert watch.orphaned([old], now=0.0) == []
    assert watch.orphaned([old], now=2.9) == []
    assert watch.orphaned([old], now=3.0) == [old]
    watch.lost_sight()
    assert watch.orphaned([old], now=4.0) == []  # our own sight lost: count again


def test_a_request_held_past_its_transaction_is_not_sent_at_release():
    now = [0.0]
    valid = [False]
    port = _Port()
    gate = SendGate(port, may_send=lambda: valid[0], stored=lambda cid: True, clock=lambda: now[0], max_age=32.0)
    gate.send(_request("BYE", "stored-call", "z9hG4bKold", cseq=5), "d")
    now[0] = 20.0
    gate.send(_request("OPTIONS", "stored-call", "z9hG4bKnew", cseq=6), "d")
    gate.send(_request("BYE", "stored-call", "z9hG4bKold", cseq=5), "d")  # its retransmission keeps its age
    now[0] = 33.0
    valid[0] = True
    assert gate.release() == 1
    assert [m.method for m, _ in port.sent] == ["OPTIONS"] and gate.dropped == 1


def test_a_node_that_gave_its_lease_back_is_dead_at_once():
    watch = PeerWatch("me", 3.0)
    row = dict(_row("n2", 4, 100.0), lease_released=True)
    assert watch.observe([row], now=0.0) == [Dead("n2", 4, 100.0)]
