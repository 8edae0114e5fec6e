"""`ng911 demo`: watch the SIP stack carry one emergency call, end to end, over loopback.

Two user agents run in this process on 127.0.0.1 — a caller standing in for the ESInet (an
ESRP) and a call-taker's answer point — and place an INVITE to urn:service:sos. Every SIP
message is printed as it crosses the wire, then a summary. (The full controller demo, with an
answer point dying mid-call, comes with the call controller.)
"""
from __future__ import annotations

import argparse
import time
from typing import Any

from ng911.cli.ua_cmd import demo_sdp
from ng911.sip.message import Request, Response
from ng911.sip.timers import TimerConfig
from ng911.sip.ua import Session, UaConfig, UaHandler


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="show an emergency call crossing the SIP stack over loopback",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--talk", type=float, default=3.0, help="seconds the call stays up (default 3)")
    p.add_argument("--session-expires", type=int, default=4, help="RFC 4028 interval, to watch a refresh (default 4 s)")
    p.set_defaults(func=run)


class _Ladder:
    def __init__(self, names: dict[int, str]) -> None:
        self.names = names
        self.start = time.monotonic()
        self.count = 0

    def observer(self, me: str) -> Any:
        def see(direction: str, msg: Request | Response, peer: Any) -> None:
            if direction != "sent":
                return
            self.count += 1
            port = getattr(peer, "port", None) or getattr(getattr(peer, "remote", None), "__getitem__", lambda i: None)(1)
            other = self.names.get(port or 0, "?")
            if isinstance(msg, Request):
                what = f"{msg.method} {msg.uri}"
            else:
                what = f"{msg.status} {msg.reason}  ({msg.cseq.method})"
            extra = " +SDP" if msg.body else ""
            print(f"  {time.monotonic() - self.start:6.3f}s  {me:>12} → {other:<12} {what}{extra}", flush=True)

        return see


class _AnswerPoint(UaHandler):
    def __init__(self, reactor: Any, host: str) -> None:
        self.reactor, self.host = reactor, host

    def on_invite(self, session: Session, request: Request) -> None:
        session.ring(180)
        self.reactor.callLater(1.0, session.answer, demo_sdp(self.host, 41000))


class _Caller(UaHandler):
    def __init__(self, reactor: Any, talk: float, done: Any) -> None:
        self.reactor, self.talk, self.done = reactor, talk, done
        self.outcome = "no answer"

    def on_answered(self, session: Session, response: Response) -> None:
        self.outcome = "answered"
        self.reactor.callLater(self.talk, session.bye)

    def on_failed(self, session: Session, response: Response | None, reason: str) -> None:
        self.outcome = f"failed: {reason}"
        self.done()

    def on_terminated(self, session: Session, reason: str) -> None:
        self.outcome = f"{self.outcome}, ended by {reason}"
        self.done()


def run(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from ng911.sip.stack import SipStack

    host = "127.0.0.1"
    timers = TimerConfig(t1=0.5)
    names: dict[int, str] = {}
    ladder = _Ladder(names)
    caller = _Caller(reactor, args.talk, lambda: reactor.callLater(0.3, reactor.stop))
    cfg = UaConfig(user="esrp", timers=timers, session_expires=args.session_expires, min_se=2)
    caller_stack = SipStack(reactor, caller, host=host, udp_port=0, tcp_port=None, config=cfg,
                            observer=ladder.observer("caller"))
    ap_cfg = UaConfig(user="ap1", timers=timers, min_se=2)
    ap_stack = SipStack(reactor, _AnswerPoint(reactor, host), host=host, udp_port=0, tcp_port=None,
                        config=ap_cfg, observer=ladder.observer("answer point"))
    caller_stack.listen()
    ap_stack.listen()
    names[caller_stack.ports["UDP"]] = "caller"
    names[ap_stack.ports["UDP"]] = "answer point"
    print("ng911 demo: an emergency call across the SIP stack (UDP on 127.0.0.1)")
    print(f"  caller (ESRP stand-in) on :{caller_stack.ports['UDP']}, answer point on :{ap_stack.ports['UDP']}\n")

    def place() -> None:
        caller_stack.ua.invite(
            "urn:service:sos",
            from_uri=f"<sip:+15555550100@{host}:{caller_stack.ports['UDP']}>",
            to_uri="<urn:service:sos>",
            sdp=demo_sdp(host, 40000),
            headers=(("Route", f"<sip:{host}:{ap_stack.ports['UDP']};lr>"), ("Resource-Priority", "esnet.1")),
        )

    reactor.callWhenRunning(place)
    guard = reactor.callLater(30, reactor.stop)
    reactor.run()
    if guard.active():
        guard.cancel()
    print(f"\n  outcome: {caller.outcome}; {ladder.count} SIP messages sent")
    ok = caller.outcome.startswith("answered")
    return 0 if ok else 1
