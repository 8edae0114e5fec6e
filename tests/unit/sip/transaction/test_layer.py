"""The transaction layer: matching, strays, CANCEL, merged requests, one timer heap."""

from __future__ import annotations

import pytest

from ng911.sip import builders
from ng911.sip.timers import TimerConfig, TimerName as T
from ng911.sip.transaction import (
    CancelRequest,
    ClientKey,
    LegacyServerKey,
    LocalProtocolError,
    MergedRequest,
    Send,
    ServerKey,
    ToTU,
    TransactionLayer,
    TransactionState as S,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)

from .messages import DEST, ack_for, request, response

FLOW = ("198.51.100.7", 5060, "UDP")


def sends(actions: list[object]) -> list[object]:
    return [a.message for a in actions if isinstance(a, Send)]


# --- client side --------------------------------------------------------------------------


def test_layer_send_request_starts_client_transaction() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", branch="z9hG4bKc1")
    key, actions = layer.send_request(invite, DEST, False, 0.0)
    assert key == ClientKey("z9hG4bKc1", "INVITE")
    assert actions == [Send(invite, DEST)]
    assert layer.state(key) is S.CALLING
    assert layer.next_deadline() == 0.5


def test_layer_response_matches_client_transaction_by_branch_and_cseq_method() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", branch="z9hG4bKc1")
    key, _ = layer.send_request(invite, DEST, False, 0.0)
    ringing = response(invite, 180)
    assert layer.receive(ringing, FLOW, 0.1) == [ToTU(ringing, key, FLOW)]
    assert layer.state(key) is S.PROCEEDING


def test_layer_response_to_cancel_matches_the_cancel_transaction_not_the_invite() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", branch="z9hG4bKc1")
    key, _ = layer.send_request(invite, DEST, False, 0.0)
    layer.receive(response(invite, 180), FLOW, 0.1)
    cancel_key, [send] = layer.cancel(key, 0.2)
    ok = response(send.message, 200)
    assert layer.receive(ok, FLOW, 0.3) == [ToTU(ok, cancel_key, FLOW)]
    assert layer.state(key) is S.PROCEEDING


def test_layer_response_matching_no_transaction_goes_to_tu_as_stray() -> None:
    layer = TransactionLayer()
    stray = response(request("INVITE", branch="z9hG4bKnobody"), 200)
    assert layer.receive(stray, FLOW, 0.0) == [ToTU(stray, None, FLOW)]


def test_layer_2xx_retransmission_after_timer_m_goes_to_tu_as_stray() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", branch="z9hG4bKc1")
    key, _ = layer.send_request(invite, DEST, False, 0.0)
    ok = response(invite, 200)
    assert layer.receive(ok, FLOW, 1.0) == [ToTU(ok, key, FLOW)]
    assert layer.on_timer(33.0) == [TransactionTerminated(key)]
    assert key not in layer
    assert layer.receive(ok, FLOW, 40.0) == [ToTU(ok, None, FLOW)]  # the UA core re-ACKs it


def test_layer_ict_timer_b_reports_timeout_and_forgets_the_transaction() -> None:
    layer = TransactionLayer()
    key, _ = layer.send_request(request("INVITE"), DEST, True, 0.0)
    assert layer.next_deadline() == 32.0
    assert layer.on_timer(32.0) == [ToTU(TransactionTimeout(T.B), key), TransactionTerminated(key)]
    assert len(layer) == 0
    assert layer.next_deadline() is None


def test_layer_ack_is_sent_without_a_transaction() -> None:
    layer = TransactionLayer()
    ack = request("ACK", branch="z9hG4bKack", to_tag="x")
    assert layer.send_request(ack, DEST, False, 0.0) == (None, [Send(ack, DEST)])
    assert len(layer) == 0


def test_layer_send_request_requires_a_new_magic_cookie_branch() -> None:
    layer = TransactionLayer()
    with pytest.raises(LocalProtocolError):
        layer.send_request(request("OPTIONS", branch="rfc2543"), DEST, False, 0.0)
    layer.send_request(request("OPTIONS"), DEST, False, 0.0)
    with pytest.raises(LocalProtocolError):
        layer.send_request(request("OPTIONS"), DEST, False, 0.1)


def test_layer_transport_error_informs_tu_and_unknown_keys_are_ignored() -> None:
    layer = TransactionLayer()
    key, _ = layer.send_request(request("OPTIONS"), DEST, False, 0.0)
    assert layer.transport_error(key, 0.1, "refused") == [
        ToTU(TransportError("refused"), key),
        TransactionTerminated(key),
    ]
    assert layer.transport_error(key, 0.2) == []


# --- client CANCEL (RFC 3261 §9.1) ------------------------------------------------------


def test_layer_cancel_in_proceeding_is_sent_at_once_to_the_invite_destination() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", branch="z9hG4bKc1")
    key, _ = layer.send_request(invite, DEST, False, 0.0)
    layer.receive(response(invite, 180), FLOW, 0.1)
    cancel_key, actions = layer.cancel(key, 0.2)
    assert cancel_key == ClientKey("z9hG4bKc1", "CANCEL")
    [send] = actions
    assert send.dest == DEST
    assert send.message.method == "CANCEL" and send.message.branch == "z9hG4bKc1"
    assert layer.state(cancel_key) is S.TRYING


def test_layer_cancel_waits_for_a_provisional_response() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", branch="z9hG4bKc1")
    key, _ = layer.send_request(invite, DEST, False, 0.0)
    cancel_key, actions = layer.cancel(key, 0.1)
    assert actions == []
    assert cancel_key not in layer
    ringing = response(invite, 180)
    actions = layer.receive(ringing, FLOW, 0.3)
    assert actions[0] == ToTU(ringing, key, FLOW)
    assert [m.method for m in sends(actions)] == ["CANCEL"]
    assert layer.state(cancel_key) is S.TRYING
    assert layer.next_deadline() == 0.8  # the CANCEL's Timer E


def test_layer_queued_cancel_is_dropped_when_a_final_response_comes_first() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", branch="z9hG4bKc1")
    key, _ = layer.send_request(invite, DEST, False, 0.0)
    cancel_key, _ = layer.cancel(key, 0.1)
    ok = response(invite, 200)
    assert layer.receive(ok, FLOW, 0.3) == [ToTU(ok, key, FLOW), TransactionTerminated(cancel_key)]
    assert cancel_key not in layer


def test_layer_queued_cancel_is_dropped_when_timer_b_fires() -> None:
    layer = TransactionLayer()
    key, _ = layer.send_request(request("INVITE"), DEST, True, 0.0)
    cancel_key, _ = layer.cancel(key, 0.1)
    assert layer.on_timer(32.0) == [
        ToTU(TransactionTimeout(T.B), key),
        TransactionTerminated(key),
        TransactionTerminated(cancel_key),
    ]
    assert len(layer) == 0


def test_layer_cancel_after_a_final_response_twice_or_of_no_invite_raises() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", branch="z9hG4bKc1")
    key, _ = layer.send_request(invite, DEST, False, 0.0)
    layer.cancel(key, 0.1)
    with pytest.raises(LocalProtocolError):
        layer.cancel(key, 0.2)
    layer.receive(response(invite, 486), FLOW, 0.3)
    with pytest.raises(LocalProtocolError):
        layer.cancel(key, 0.4)
    opt_key, _ = layer.send_request(request("OPTIONS", branch="z9hG4bKo"), DEST, False, 0.0)
    with pytest.raises(LocalProtocolError):
        layer.cancel(opt_key, 0.4)


def test_layer_send_request_of_a_cancel_follows_the_cancel_rules() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", branch="z9hG4bKc1")
    layer.send_request(invite, DEST, False, 0.0)
    cancel = builders.make_cancel(invite).replace(
        headers=builders.make_cancel(invite).headers.add("Reason", 'SIP;cause=200;text="Call completed elsewhere"')
    )
    key, actions = layer.send_request(cancel, "ignored", True, 0.1)
    assert key == ClientKey("z9hG4bKc1", "CANCEL")
    assert actions == []
    actions = layer.receive(response(invite, 100), FLOW, 0.2)
    assert sends(actions) == [cancel]
    assert [a.dest for a in actions if isinstance(a, Send)] == [DEST]


# --- server side --------------------------------------------------------------------------


def test_layer_new_request_creates_server_transaction_and_goes_to_tu_with_its_source() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS", branch="z9hG4bKs1")
    key = ServerKey("z9hG4bKs1", ("client.example.com", 5060), "OPTIONS")
    assert layer.receive(options, FLOW, 0.0) == [ToTU(options, key, FLOW)]
    assert layer.state(key) is S.TRYING
    ok = builders.make_response(options, 200)
    assert layer.send_response(key, ok, 0.1) == [Send(ok, FLOW)]
    assert layer.receive(options, FLOW, 0.5) == [Send(ok, FLOW)]  # absorbed, answered again


def test_layer_same_branch_from_another_sent_by_is_another_transaction() -> None:
    layer = TransactionLayer()
    first = layer.receive(request("OPTIONS", via="a.example.com"), FLOW, 0.0)
    second = layer.receive(request("OPTIONS", via="b.example.com"), FLOW, 0.0)
    assert first[0].key != second[0].key
    assert len(layer) == 2


def test_layer_invite_server_transaction_sends_100_after_200ms() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    [to_tu] = layer.receive(invite, FLOW, 0.0)
    assert layer.next_deadline() == 0.2
    [send] = layer.on_timer(0.2)
    assert send.message.status == 100 and send.dest == FLOW
    assert layer.state(to_tu.key) is S.PROCEEDING


def test_layer_ack_for_non2xx_matches_the_invite_server_transaction() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    [to_tu] = layer.receive(invite, FLOW, 0.0)
    busy = builders.make_response(invite, 486, to_tag="ours")
    layer.send_response(to_tu.key, busy, 0.1)
    assert layer.receive(ack_for(invite, busy), FLOW, 0.2) == []
    assert layer.state(to_tu.key) is S.CONFIRMED


def test_layer_ack_for_2xx_is_passed_to_tu_as_stray() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    [to_tu] = layer.receive(invite, FLOW, 0.0)
    layer.send_response(to_tu.key, builders.make_response(invite, 200, to_tag="ours"), 0.1)
    ack = request("ACK", branch="z9hG4bKnewack", to_tag="ours")  # its own branch (§17.1.1.3)
    assert layer.receive(ack, FLOW, 0.2) == [ToTU(ack, None, FLOW)]
    same_branch_ack = request("ACK", to_tag="ours")
    assert layer.receive(same_branch_ack, FLOW, 0.3) == [ToTU(same_branch_ack, None, FLOW)]
    assert layer.state(to_tu.key) is S.ACCEPTED


def test_layer_send_response_on_unknown_or_client_key_raises() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    with pytest.raises(LocalProtocolError):
        layer.send_response(ServerKey("z9hG4bKx", ("h", None), "OPTIONS"), builders.make_response(options, 200), 0.0)
    key, _ = layer.send_request(options, DEST, False, 0.0)
    with pytest.raises(LocalProtocolError):
        layer.send_response(key, builders.make_response(options, 200), 0.0)


def test_layer_reliability_of_a_server_transaction_follows_the_via_transport() -> None:
    layer = TransactionLayer()
    tcp = request("OPTIONS", branch="z9hG4bKtcp", transport="TCP")
    [to_tu] = layer.receive(tcp, FLOW, 0.0)
    ok = builders.make_response(tcp, 200)
    assert layer.send_response(to_tu.key, ok, 0.1) == [Send(ok, FLOW), TransactionTerminated(to_tu.key)]
    udp = request("OPTIONS", branch="z9hG4bKudp")
    [to_tu] = layer.receive(udp, FLOW, 0.0, reliable=True)  # the shell knows better than Via
    assert layer.send_response(to_tu.key, builders.make_response(udp, 200), 0.1)[-1] == TransactionTerminated(
        to_tu.key
    )
    assert len(layer) == 0


# --- server CANCEL ------------------------------------------------------------------------


def test_layer_cancel_is_reported_with_both_keys_so_the_ua_answers_200_and_487() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    [invite_to_tu] = layer.receive(invite, FLOW, 0.0)
    cancel = request("CANCEL")
    [report] = layer.receive(cancel, FLOW, 1.0)
    assert isinstance(report, CancelRequest)
    assert report.invite_key == invite_to_tu.key
    assert report.key != invite_to_tu.key and report.key.method == "CANCEL"
    assert report.invite_pending is True
    assert report.source == FLOW
    ok = builders.make_response(cancel, 200, to_tag="ours")
    assert layer.send_response(report.key, ok, 1.1) == [Send(ok, FLOW)]
    terminated = builders.make_response(invite, 487, to_tag="ours")
    assert layer.send_response(report.invite_key, terminated, 1.1) == [Send(terminated, FLOW)]
    assert layer.receive(cancel, FLOW, 1.5) == [Send(ok, FLOW)]  # retransmitted CANCEL absorbed


def test_layer_cancel_matching_no_invite_has_no_invite_key() -> None:
    layer = TransactionLayer()
    [report] = layer.receive(request("CANCEL"), FLOW, 0.0)
    assert isinstance(report, CancelRequest)
    assert report.invite_key is None and report.invite_pending is False


def test_layer_cancel_after_the_final_response_is_not_pending() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    [to_tu] = layer.receive(invite, FLOW, 0.0)
    layer.send_response(to_tu.key, builders.make_response(invite, 200, to_tag="ours"), 0.1)
    [report] = layer.receive(request("CANCEL"), FLOW, 0.2)
    assert report.invite_key == to_tu.key and report.invite_pending is False


# --- merged requests (RFC 3261 §8.2.2.2) --------------------------------------------------


def test_layer_reports_merged_request_so_the_ua_answers_482() -> None:
    layer = TransactionLayer()
    [first] = layer.receive(request("INVITE", branch="z9hG4bKpath1", via="proxy-a.example.com"), FLOW, 0.0)
    forked = request("INVITE", branch="z9hG4bKpath2", via="proxy-b.example.com")
    [report] = layer.receive(forked, FLOW, 0.1)
    assert isinstance(report, MergedRequest)
    assert report.original_key == first.key and report.key != first.key
    loop = builders.make_response(forked, 482, to_tag="x")
    assert layer.send_response(report.key, loop, 0.2) == [Send(loop, FLOW)]
    assert layer.receive(forked, FLOW, 0.3) == [Send(loop, FLOW)]


def test_layer_request_with_to_tag_is_never_merged() -> None:
    layer = TransactionLayer()
    layer.receive(request("BYE", branch="z9hG4bKp1", to_tag="t"), FLOW, 0.0)
    [second] = layer.receive(request("BYE", branch="z9hG4bKp2", to_tag="t"), FLOW, 0.1)
    assert isinstance(second, ToTU)


def test_layer_merge_check_ends_with_the_original_transaction() -> None:
    layer = TransactionLayer()
    opts = request("OPTIONS", branch="z9hG4bKp1", transport="TCP")
    [first] = layer.receive(opts, FLOW, 0.0)
    layer.send_response(first.key, builders.make_response(opts, 200), 0.1)  # J=0: gone at once
    [second] = layer.receive(request("OPTIONS", branch="z9hG4bKp2"), FLOW, 0.2)
    assert isinstance(second, ToTU)


# --- RFC 2543 peers ---------------------------------------------------------------------


def test_layer_matches_rfc2543_requests_without_magic_cookie() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", branch=None)
    [to_tu] = layer.receive(invite, FLOW, 0.0)
    assert isinstance(to_tu.key, LegacyServerKey)
    ringing = builders.make_response(invite, 180, to_tag="ours")
    layer.send_response(to_tu.key, ringing, 0.1)
    assert layer.receive(invite, FLOW, 0.5) == [Send(ringing, FLOW)]
    busy = builders.make_response(invite, 486, to_tag="ours")
    layer.send_response(to_tu.key, busy, 0.6)
    assert layer.receive(ack_for(invite, busy), FLOW, 0.7) == []  # ACK carries our To tag
    assert layer.state(to_tu.key) is S.CONFIRMED


def test_layer_rfc2543_ack_with_a_foreign_to_tag_is_stray() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", branch=None)
    [to_tu] = layer.receive(invite, FLOW, 0.0)
    layer.send_response(to_tu.key, builders.make_response(invite, 486, to_tag="ours"), 0.1)
    ack = request("ACK", branch=None, to_tag="theirs")
    assert layer.receive(ack, FLOW, 0.2) == [ToTU(ack, None, FLOW)]
    assert layer.state(to_tu.key) is S.COMPLETED


# --- the timer heap ---------------------------------------------------------------------


def test_layer_on_timer_fires_due_timers_across_transactions() -> None:
    layer = TransactionLayer()
    a = request("OPTIONS", branch="z9hG4bKa")
    b = request("OPTIONS", branch="z9hG4bKb")
    layer.send_request(a, DEST, False, 0.0)
    layer.send_request(b, DEST, False, 0.3)
    assert layer.next_deadline() == 0.5
    assert sends(layer.on_timer(0.5)) == [a]
    assert layer.next_deadline() == 0.8
    assert sends(layer.on_timer(2.0)) == [b, a]  # b at 0.8, a at 1.5: earliest first
    assert layer.next_deadline() == pytest.approx(3.0)


def test_layer_thousands_of_transactions_leave_no_garbage() -> None:
    layer = TransactionLayer()
    requests = [request("OPTIONS", branch=f"z9hG4bK{i}") for i in range(2000)]
    keys = [layer.send_request(r, DEST, False, i * 0.001)[0] for i, r in enumerate(requests)]
    now = 0.0
    while now < 10.0:  # several retransmission rounds and 1xx re-arms churn the heap
        now += 0.25
        layer.on_timer(now)
        if now == 2.0:
            for r in requests[::2]:
                layer.receive(response(r, 100), FLOW, now)
        assert layer.heap_size <= 2 * len(layer) + 64
    for r in requests:
        layer.receive(response(r, 200), FLOW, now)
    assert len(layer) == len(keys)  # all Completed, waiting out Timer K
    layer.on_timer(now + 5.0)
    assert len(layer) == 0
    assert layer.next_deadline() is None
    assert layer.heap_size <= 64


def test_layer_driven_by_a_twisted_clock_like_the_shell() -> None:
    from twisted.internet.task import Clock

    clock = Clock()
    layer = TransactionLayer(TimerConfig())
    performed: list[object] = []
    pending: list[object] = []

    def perform(actions: list[object]) -> None:
        performed.extend(actions)
        rearm()

    def rearm() -> None:
        for call in pending:
            if call.active():  # type: ignore[attr-defined]
                call.cancel()  # type: ignore[attr-defined]
        pending.clear()
        deadline = layer.next_deadline()
        if deadline is not None:
            pending.append(clock.callLater(max(0.0, deadline - clock.seconds()), tick))

    def tick() -> None:
        perform(layer.on_timer(clock.seconds()))

    invite = request("INVITE", branch="z9hG4bKclock")
    key, actions = layer.send_request(invite, DEST, False, clock.seconds())
    perform(actions)
    clock.pump([0.25] * 200)  # 50 s of reactor time
    retransmits = [a for a in performed if isinstance(a, Send)]
    assert len(retransmits) == 7  # t=0 and A at 0.5 1.5 3.5 7.5 15.5 31.5
    assert performed[-2:] == [ToTU(TransactionTimeout(T.B), key), TransactionTerminated(key)]
    assert clock.getDelayedCalls() == []
    assert len(layer) == 0


def test_layer_cancel_with_a_foreign_branch_raises() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", branch="z9hG4bKc1")
    key, _ = layer.send_request(invite, DEST, False, 0.0)
    other = builders.make_cancel(request("INVITE", branch="z9hG4bKother"))
    with pytest.raises(LocalProtocolError):
        layer.cancel(key, 0.1, request=other)
    assert layer.cancel(key, 0.1)[1] == []  # still cancellable: nothing was queued


def test_layer_illegal_tu_input_raises_and_leaves_the_transaction_as_it_was() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    [to_tu] = layer.receive(options, FLOW, 0.0)
    ok = builders.make_response(options, 200)
    layer.send_response(to_tu.key, ok, 0.1)
    deadline = layer.next_deadline()
    with pytest.raises(LocalProtocolError):
        layer.send_response(to_tu.key, builders.make_response(options, 500), 0.2)
    assert layer.state(to_tu.key) is S.COMPLETED
    assert layer.next_deadline() == deadline
    assert layer.receive(options, FLOW, 0.3) == [Send(ok, FLOW)]


def test_layer_immediate_100_goes_out_before_the_invite_reaches_the_tu() -> None:
    layer = TransactionLayer(TimerConfig(trying_delay=0))
    invite = request("INVITE")
    send, to_tu = layer.receive(invite, FLOW, 0.0)
    assert isinstance(send, Send) and send.message.status == 100
    assert to_tu == ToTU(invite, to_tu.key, FLOW)
    assert layer.next_deadline() is None
