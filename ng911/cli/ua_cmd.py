"""`ng911 ua`: a small SIP user agent on the ng911 stack, for interop tests and trying things.

    ng911 ua answer --listen 127.0.0.1:5070            # UAS: answers every INVITE with SDP
    ng911 ua call sip:svc@127.0.0.1:5060 --calls 10     # UAC: places calls, hangs up, reports

SIP over TLS (mutual TLS): ``--tls-cert/--tls-key`` (our certificate, shown as client and
server), ``--tls-ca`` (the CAs the far end must chain to), ``--tls-port`` (TLS listen port;
default: the --listen port + 1). Then ``call sips:sos@127.0.0.1:5061`` (or
``sip:...;transport=tls``) goes over TLS, and ``answer`` answers over TLS too. ``--tls-ca``
without a certificate: a client that shows none (it cannot listen on TLS).

It prints one JSON line per event (``--quiet``: only the "listening" line and the summary) and a closing line
``N passed, M failed`` for `call`; exit status 0 only when every call succeeded.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from ng911.sip.timers import TimerConfig
from ng911.sip.ua import Session, UaConfig, UaHandler


def demo_sdp(host: str, port: int, session_id: int | None = None) -> bytes:
    sid = session_id or int(time.time())
    return (
        f"v=0\r\no=ng911 {sid} {sid} IN IP4 {host}\r\ns=ng911\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    ).encode()


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def register(sub: Any) -> None:
    p = sub.add_parser("ua", help="a small SIP user agent (answer or place calls) for interop tests")
    p.add_argument("--listen", type=_hostport, default=("127.0.0.1", 5070), help="HOST:PORT to bind UDP and TCP (default 127.0.0.1:5070)")
    p.add_argument("--t1", type=float, default=0.5, help="RFC 3261 T1 in seconds (default 0.5)")
    p.add_argument("--session-expires", type=int, default=1800, help="RFC 4028 interval to ask for (default 1800)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.add_argument("--trace", action="store_true", help="log every SIP message sent and received")
    p.add_argument("--tls-cert", help="PEM certificate (then its chain) to show over TLS, as client and server")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert (default: in the --tls-cert file)")
    p.add_argument("--tls-ca", help="PEM CAs the TLS far end must chain to (enables TLS)")
    p.add_argument("--tls-port", type=int, default=None,
                   help="TLS listen port, when --tls-cert is given (default: the --listen port + 1; 0: any)")
    p.add_argument("--tls-optional-client-cert", action="store_true",
                   help="as a TLS server, accept clients that show no certificate")
    roles = p.add_subparsers(dest="role", metavar="ROLE", required=True)
    a = roles.add_parser("answer", help="UAS: answer every INVITE")
    a.add_argument("--ring", type=float, default=0.0, help="seconds to ring (180) before answering")
    a.add_argument("--reject", type=int, default=0, help="answer with this final status instead of 200")
    a.add_argument("--hangup-after", type=float, default=0.0, help="send BYE this many seconds after the ACK (0: wait for the caller)")
    a.add_argument("--exit-after", type=float, default=0.0, help="stop after this many seconds (0: run until killed)")
    c = roles.add_parser("call", help="UAC: place calls and hang up")
    c.add_argument("target", help="Request-URI, e.g. sip:service@127.0.0.1:5060 (add ;transport=tcp for TCP)")
    c.add_argument("--calls", type=int, default=1, help="how many calls (default 1)")
    c.add_argument("--rate", type=float, default=10.0, help="new calls per second (default 10)")
    c.add_argument("--duration", type=float, default=0.5, help="seconds each call stays up (default 0.5)")
    c.add_argument("--cancel-after", type=float, default=0.0, help="CANCEL each call this many seconds after sending (0: never)")
    c.add_argument("--delayed-offer", action="store_true", help="send INVITE without SDP; answer in the ACK")
    c.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds overall")
    p.set_defaults(func=run)


class _Events:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, event: str, **fields: Any) -> None:
        # "listening" always prints: tools wait for it to know the ports are bound.
        if not self.quiet or event == "listening":
            print(json.dumps({"t": round(time.time(), 3), "event": event, **fields}), flush=True)


class _Reports(UaHandler):
    """What both roles tell: a re-INVITE (a move, or a takeover: its Contact names the node)."""

    emit: _Events

    def on_reinvite(self, session: Session, request: Any) -> None:
        contacts = request.contacts
        self.emit("reinvite", call_id=session.call_id, contact=str(contacts[0].uri) if contacts else None)
        super().on_reinvite(session, request)


class Answerer(_Reports):
    def __init__(self, args: argparse.Namespace, reactor: Any, emit: _Events, host: str, rtp_port: int) -> None:
        self.args, self.reactor, self.emit = args, reactor, emit
        self.host, self.rtp_port = host, rtp_port

    def on_invite(self, session: Session, request: Any) -> None:
        self.emit("invite", call_id=session.call_id, uri=str(request.uri))
        if self.args.reject:
            session.reject(self.args.reject)
            return
        sdp = demo_sdp(self.host, self.rtp_port)
        if self.args.ring > 0:
            session.ring(180)
            self.reactor.callLater(self.args.ring, session.answer, sdp)
        else:
            session.answer(sdp)

    def on_confirmed(self, session: Session, ack: Any) -> None:
        self.emit("confirmed", call_id=session.call_id)
        if self.args.hangup_after > 0:
            self.reactor.callLater(self.args.hangup_after, session.bye)

    def on_cancelled(self, session: Session, request: Any) -> None:
        self.emit("cancelled", call_id=session.call_id)

    def on_terminated(self, session: Session, reason: str) -> None:
        self.emit("terminated", call_id=session.call_id, reason=reason)


class Caller(_Reports):
    def __init__(self, args: argparse.Namespace, reactor: Any, emit: _Events, done: Any) -> None:
        self.args, self.reactor, self.emit, self.done = args, reactor, emit, done
        self.ok = self.failed = self.finished = 0

    def _finish(self, success: bool) -> None:
        self.finished += 1
        if success:
            self.ok += 1
        else:
            self.failed += 1
        if self.finished >= self.args.calls:
            self.done()

    def on_answered(self, session: Session, response: Any) -> None:
        self.emit("answered", call_id=session.call_id)
        if self.args.delayed_offer:
            session.ack(demo_sdp("127.0.0.1", 40000))
        if session.user_data.get("cancelling"):
            return
        self.reactor.callLater(self.args.duration, self._hang_up, session)

    def _hang_up(self, session: Session) -> None:
        # The call passes when the BYE is answered 2xx — not merely sent: a lost BYE is
        # retransmitted (Timer E) and one nobody answers is a failure.
        session.user_data["bye_sent"] = True
        session.bye(on_done=lambda status: self._bye_done(session, status))

    def _bye_done(self, session: Session, status: int | None) -> None:
        ok = status is not None and 200 <= status < 300
        self.emit("bye_answered" if ok else "bye_failed", call_id=session.call_id, status=status)
        self._finish(ok)

    def on_failed(self, session: Session, response: Any, reason: str) -> None:
        expected = session.user_data.get("cancelling") and response is not None and response.status == 487
        self.emit("failed", call_id=session.call_id, reason=reason, expected=bool(expected))
        self._finish(bool(expected))

    def on_terminated(self, session: Session, reason: str) -> None:
        self.emit("terminated", call_id=session.call_id, reason=reason)
        if session.user_data.get("bye_sent"):
            return  # counted when the BYE is answered (_bye_done)
        self._finish(reason in ("remote BYE", "cancelled"))


def _tls(args: argparse.Namespace, port: int) -> tuple[Any, int | None]:
    """TLS credentials from the --tls-* options (None: no TLS) and the TLS port to listen on."""
    if not args.tls_ca:
        if args.tls_cert:
            raise SystemExit("ng911 ua: --tls-cert needs --tls-ca")
        return None, None
    from ng911.sip.transport.tls import TlsCredentials

    creds = TlsCredentials.from_files(ca=args.tls_ca, certificate=args.tls_cert, private_key=args.tls_key,
                                      require_client_certificate=not args.tls_optional_client_cert)
    if not args.tls_cert:
        return creds, None
    return creds, (port + 1 if args.tls_port is None and port else args.tls_port or 0)


def run(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    logging.basicConfig(level=logging.DEBUG if args.trace else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    from ng911.sip.stack import SipStack

    emit = _Events(args.quiet)
    host, port = args.listen
    config = UaConfig(timers=TimerConfig(t1=args.t1), session_expires=args.session_expires)
    status = {"code": 0}
    if args.role == "answer":
        handler: UaHandler = Answerer(args, reactor, emit, host, 40000)
    else:
        handler = Caller(args, reactor, emit, lambda: reactor.callLater(0.2, reactor.stop))
    tls, tls_port = _tls(args, port)
    stack = SipStack(reactor, handler, host=host, udp_port=port, tcp_port=port, tls_port=tls_port, tls=tls,
                     config=config, trace=args.trace)
    stack.listen()
    from ng911.runtime import tune_gc

    tune_gc()
    emit("listening", host=host, udp=stack.ports.get("UDP"), tcp=stack.ports.get("TCP"), tls=stack.ports.get("TLS"))

    if args.role == "answer":
        if args.exit_after > 0:
            reactor.callLater(args.exit_after, reactor.stop)
        reactor.run()
        return 0

    caller: Caller = handler  # type: ignore[assignment]
    from_uri = f"<sip:{config.user}@{host}:{stack.ports['UDP']}>"

    def place(i: int) -> None:
        session = stack.ua.invite(
            args.target, from_uri=from_uri, sdp=None if args.delayed_offer else demo_sdp(host, 40000 + 2 * i)
        )
        emit("invite", call_id=session.call_id, n=i + 1)
        if args.cancel_after > 0:
            session.user_data["cancelling"] = True
            reactor.callLater(args.cancel_after, session.cancel)

    for i in range(args.calls):
        reactor.callLater(i / args.rate if args.rate > 0 else 0, place, i)

    def give_up() -> None:
        status["code"] = 1
        reactor.stop()

    guard = reactor.callLater(args.timeout, give_up)
    reactor.run()
    if guard.active():
        guard.cancel()
    failed = args.calls - caller.ok
    print(f"{caller.ok} passed, {failed} failed", flush=True)
    return 0 if failed == 0 and status["code"] == 0 else 1


def main() -> None:  # pragma: no cover - convenience
    sys.exit(run(argparse.Namespace()))
