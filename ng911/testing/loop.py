"""An in-memory loop network for driving whole SIP user agents with a fake clock.

In the spirit of pjsip's ``sip_transport_loop.c`` (a transport that can discard, fail or delay)
and h11's ``ConnectionPair``: every node has its own address; every message leaves a node as
bytes (``to_bytes()``), travels on a shared :class:`twisted.internet.task.Clock` with a
configurable latency, may be lost (a drop predicate, or a probability drawn from a seeded
``random.Random``) and is parsed again with ``parse_message`` on arrival. Requests get
``stamp_received`` exactly as the Twisted shell (``ng911.sip.stack``) applies it, and responses
are routed by their top Via (RFC 3261 §18.2.2 with ``rport``), so the wire format, Via handling
and dialog routing are exercised end to end. Every message is captured for assertions.

::

    net = LoopNetwork(latency=0.01)
    alice = net.add_ua("alice", "10.0.0.1")           # a LoopPort; alice.ua is the UserAgent
    bob = net.add_ua("bob", "10.0.0.2", handler=RecordingHandler(on_invite=answer_with(SDP)))
    session = alice.call(bob, sdp=OFFER)
    net.run(1.0)                                      # Clock.advance, event by event
    assert [p.summary for p in net.packets] == [...]

Time only moves in :meth:`LoopNetwork.run` (or a test's own ``clock.advance``); nothing sleeps.
:meth:`LoopNetwork.run` advances the clock exactly to each pending call in turn, so timers fire
at their deadline and not at the end of a coarse step.
"""
from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from twisted.internet.task import Clock

from ng911.sip.builders import MAGIC_COOKIE
from ng911.sip.timerwheel import Alarm
from ng911.sip.badrequest import best_effort_400
from ng911.sip.errors import SipParseError
from ng911.sip.headers import Via
from ng911.sip.message import Request, Response, parse_message
from ng911.sip.transport.flow import Address, Destination, Flow
from ng911.sip.transport.rules import destination_for_request, response_route, stamp_received
from ng911.sip.ua import Session, UaConfig, UaHandler, UserAgent
from ng911.sip.uri import SipUri, Uri

__all__ = [
    "LoopNetwork",
    "LoopPort",
    "LoopProxy",
    "Packet",
    "RecordingHandler",
    "UaPair",
    "OFFER",
    "ANSWER",
    "sdp",
]


def sdp(host: str = "10.0.0.1", port: int = 4000, version: int = 1) -> bytes:
    """A small valid audio SDP body."""
    return (
        f"v=0\r\no=- 1 {version} IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    ).encode()


OFFER = sdp("10.0.0.1", 4000)
ANSWER = sdp("10.0.0.2", 5000)


@dataclass(eq=False)
class Packet:
    """One message on the wire: what left ``src`` for ``dst`` at ``sent_at``.

    ``message`` is the parse of ``data`` (the bytes as sent, before any ``received``/``rport``
    stamping at the far end), or None for bytes that do not parse (injected garbage).
    ``dropped`` says the network lost it (``drop_reason`` why).
    """

    seq: int
    sent_at: float
    src: Address
    dst: Address
    transport: str
    data: bytes
    message: Request | Response | None
    src_name: str = "?"
    dst_name: str = "?"
    dropped: bool = False
    drop_reason: str = ""
    delivered_at: float | None = None

    @property
    def is_request(self) -> bool:
        return self.message is not None and self.message.is_request

    @property
    def method(self) -> str:
        """The request method, or the CSeq method of a response ("?" when unparseable)."""
        if isinstance(self.message, Request):
            return self.message.method
        if isinstance(self.message, Response):
            return self.message.cseq.method
        return "?"

    @property
    def status(self) -> int | None:
        return self.message.status if isinstance(self.message, Response) else None

    @property
    def summary(self) -> str:
        """``"alice>bob INVITE"`` or ``"bob>alice 200/INVITE"`` (``"x"`` appended when dropped)."""
        what = self.method if self.status is None else f"{self.status}/{self.method}"
        return f"{self.src_name}>{self.dst_name} {what}" + (" x" if self.dropped else "")

    def __repr__(self) -> str:
        return f"<Packet #{self.seq} t={self.sent_at:.3f} {self.summary}>"


Latency = float | Callable[[Packet], float]
DropRule = Callable[[Packet], bool]


class LoopNetwork:
    """Nodes by address, one shared clock, latency, loss and a capture of every message."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        latency: Latency = 0.01,
        loss: float = 0.0,
        seed: int = 0,
        drop: DropRule | None = None,
    ) -> None:
        self.clock = clock if clock is not None else Clock()
        self.latency = latency
        self.loss = loss
        self.rng = random.Random(seed)
        #: Return True to lose a packet; may be replaced at any time by a test.
        self.drop = drop
        #: Optional middlebox: ``rewrite(packet_message, src, dst)`` returns the message to
        #: send instead (an SBC mangling a Contact, a proxy adding a header...).
        self.rewrite: Callable[[Request | Response, Address, Address], Request | Response] | None = None
        self.nodes: dict[Address, _Node] = {}
        self.packets: list[Packet] = []
        self._seq = 0

    # --- building the network ------------------------------------------------------------
    def add_ua(
        self,
        name: str,
        host: str,
        port: int = 5060,
        *,
        handler: UaHandler | None = None,
        config: UaConfig | None = None,
        aliases: Iterable[Address] = (),
    ) -> LoopPort:
        """A user agent at ``host:port`` (also reachable at each of ``aliases``)."""
        node = LoopPort(self, name, (host, port))
        node.ua = UserAgent(node, self.clock, handler if handler is not None else RecordingHandler(), config)
        self._attach(node, [(host, port), *aliases])
        return node

    def add_proxy(self, name: str, host: str, port: int = 5060, *, record_route: bool = True) -> LoopProxy:
        """A stateless (optionally record-routing) proxy at ``host:port``."""
        node = LoopProxy(self, name, (host, port), record_route=record_route)
        self._attach(node, [(host, port)])
        return node

    def _attach(self, node: _Node, addresses: list[Address]) -> None:
        for address in addresses:
            if address in self.nodes:
                raise ValueError(f"address {address} already taken by {self.nodes[address].name}")
            self.nodes[address] = node

    def name_of(self, address: Address) -> str:
        node = self.nodes.get(address)
        return node.name if node is not None else f"{address[0]}:{address[1]}"

    # --- the wire --------------------------------------------------------------------------
    def transmit(self, message: Request | Response, src: Address, dst: Address, transport: str = "UDP") -> Packet:
        """Serialise ``message`` and put it on the wire from ``src`` to ``dst``."""
        if self.rewrite is not None:
            message = self.rewrite(message, src, dst)
        return self.inject(message.to_bytes(), src, dst, transport)

    def inject(self, data: bytes, src: Address, dst: Address, transport: str = "UDP") -> Packet:
        """Put raw bytes on the wire, as if ``src`` had sent them (for malformed input)."""
        self._seq += 1
        try:
            message: Request | Response | None = parse_message(data)
        except SipParseError:
            message = None
        packet = Packet(
            self._seq, self.clock.seconds(), src, dst, transport.upper(), data, message,
            self.name_of(src), self.name_of(dst),
        )
        self.packets.append(packet)
        if self.drop is not None and self.drop(packet):
            packet.dropped, packet.drop_reason = True, "dropped by rule"
        elif self.loss and self.rng.random() < self.loss:
            packet.dropped, packet.drop_reason = True, "random loss"
        elif dst not in self.nodes:
            packet.dropped, packet.drop_reason = True, "no node at destination"
        if packet.dropped:
            return packet
        delay = self.latency(packet) if callable(self.latency) else self.latency
        self.clock.callLater(max(0.0, delay), self._deliver, packet)
        return packet

    def _deliver(self, packet: Packet) -> None:
        node = self.nodes.get(packet.dst)
        if node is None:  # the node left while the packet was in flight
            packet.dropped, packet.drop_reason = True, "no node at destination"
            return
        packet.delivered_at = self.clock.seconds()
        reliable = packet.transport != "UDP"
        flow = Flow(packet.transport, packet.dst, packet.src, _connection_id(packet) if reliable else None)
        node.deliver(packet.data, flow)

    def remove(self, name: str) -> None:
        """Unplug a node: what is sent to it from now on is lost (a dead answer point)."""
        for address in [a for a, n in self.nodes.items() if n.name == name]:
            node = self.nodes.pop(address)
            if isinstance(node, LoopPort):
                node.stop()

    # --- time ------------------------------------------------------------------------------
    def run(self, seconds: float, *, max_steps: int = 1_000_000) -> None:
        """Advance the clock by ``seconds``, stopping exactly at every pending call on the way."""
        end = self.clock.seconds() + seconds
        for _ in range(max_steps):
            pending = [c.getTime() for c in self.clock.getDelayedCalls()]
            due = min(pending) if pending else None
            if due is None or due > end:
                break
            self._advance_to(due)
        else:  # pragma: no cover - a runaway loop in the code under test
            raise RuntimeError("LoopNetwork.run: too many steps (a timer re-arming at once?)")
        if self.clock.seconds() < end:
            self._advance_to(end)

    def run_until(self, condition: Callable[[], bool], timeout: float = 60.0, *, max_steps: int = 1_000_000) -> bool:
        """Run event by event until ``condition()`` holds (True) or ``timeout`` passes (False)."""
        end = self.clock.seconds() + timeout
        for _ in range(max_steps):
            if condition():
                return True
            pending = [c.getTime() for c in self.clock.getDelayedCalls()]
            due = min(pending) if pending else None
            if due is None or due > end:
                self._advance_to(max(end, self.clock.seconds()))
                return condition()
            self._advance_to(due)
        raise RuntimeError("LoopNetwork.run_until: too many steps (a timer re-arming at once?)")

    def _advance_to(self, when: float) -> None:
        amount = max(0.0, when - self.clock.seconds())
        # Float addition must land on (not just below) ``when`` or the call would not fire.
        while self.clock.seconds() + amount < when:
            amount = math.nextafter(amount, math.inf)
        self.clock.advance(amount)

    # --- capture ---------------------------------------------------------------------------
    def trace(self, *, dropped: bool = True) -> list[str]:
        """Every packet's summary in order (``"alice>bob INVITE"``, ``"bob>alice 200/INVITE x"``)."""
        return [p.summary for p in self.packets if dropped or not p.dropped]

    def find(
        self,
        method: str | None = None,
        status: int | None = None,
        *,
        src: str | None = None,
        dst: str | None = None,
        requests: bool | None = None,
        delivered: bool | None = None,
    ) -> list[Packet]:
        """Packets matching every given criterion (``method`` is the CSeq method for responses)."""
        out = []
        for p in self.packets:
            if method is not None and p.method != method:
                continue
            if status is not None and p.status != status:
                continue
            if requests is not None and p.is_request != requests:
                continue
            if src is not None and p.src_name != src:
                continue
            if dst is not None and p.dst_name != dst:
                continue
            if delivered is not None and (p.delivered_at is not None) != delivered:
                continue
            out.append(p)
        return out


def _connection_id(packet: Packet) -> int:
    a, b = sorted([packet.src, packet.dst])
    return int(hashlib.sha1(repr((a, b)).encode()).hexdigest()[:8], 16)


class _Node:
    name: str
    address: Address

    def deliver(self, data: bytes, flow: Flow) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class LoopPort(_Node):
    """The ``UaPort`` of one user agent on the loop network, and its one timer (STYLE habit 3)."""

    def __init__(self, network: LoopNetwork, name: str, address: Address) -> None:
        self.network = network
        self.name = name
        self.address = address
        self.ua: UserAgent = None  # type: ignore[assignment]  # set by LoopNetwork.add_ua
        self._alarm = Alarm(network.clock, self._tick)
        self.stopped = False
        self.parse_errors = 0

    def __repr__(self) -> str:
        return f"<LoopPort {self.name} {self.address[0]}:{self.address[1]}>"

    # --- UaPort ------------------------------------------------------------------------------
    def send(self, message: Request | Response, dest: Any) -> None:
        if self.stopped:
            return
        if isinstance(message, Response):
            route = response_route(message.top_via, dest if isinstance(dest, Flow) else None)
            target = route.flow.remote if route.flow is not None else route.destination.address
            transport = route.destination.transport
        elif isinstance(dest, Flow):
            target, transport = dest.remote, dest.transport
        else:
            target, transport = (dest.host, dest.port), dest.transport
        self.network.transmit(message, self.address, target, transport)
        self.wake()

    def destination(self, request: Request, next_hop: Uri) -> Destination:
        return destination_for_request(request, next_hop)

    def local_address(self, dest: Any) -> tuple[str, str, int]:
        transport = getattr(dest, "transport", "UDP") or "UDP"
        return transport, self.address[0], self.address[1]

    def wake(self) -> None:
        """Re-arm the one clock call for the UA's next deadline (as ``SipStack.wake``)."""
        if self.ua is None or self.stopped:
            return
        self._alarm.arm(self.ua.next_deadline())

    def _tick(self) -> None:
        self.ua.on_timer()
        self.wake()

    def stop(self) -> None:
        self.stopped = True
        self._alarm.cancel()

    # --- from the wire ----------------------------------------------------------------------
    def deliver(self, data: bytes, flow: Flow) -> None:
        if self.stopped:
            return
        try:  # what SipStack._on_bytes does
            msg = parse_message(data)
            if msg.is_request:
                msg = stamp_received(msg, flow)
        except SipParseError as exc:
            self.parse_errors += 1
            reply = best_effort_400(data, exc.reason)
            if reply is not None:
                self.network.inject(reply, self.address, flow.remote, flow.transport)
            return
        self.ua.receive(msg, flow)
        self.wake()

    # --- conveniences -------------------------------------------------------------------------
    @property
    def handler(self) -> RecordingHandler:
        return self.ua.handler  # type: ignore[return-value]

    def uri(self, user: str | None = None, **params: str) -> str:
        text = f"sip:{user or self.name}@{self.address[0]}:{self.address[1]}"
        return text + "".join(f";{k}={v}" for k, v in params.items())

    def call(self, target: LoopPort | str, *, sdp: bytes | None = OFFER, **kwargs: Any) -> Session:
        """``ua.invite`` from this node to ``target`` (a node or a URI)."""
        uri = target.uri() if isinstance(target, LoopPort) else target
        kwargs.setdefault("from_uri", f"<{self.uri()}>")
        return self.ua.invite(uri, sdp=sdp, **kwargs)


class LoopProxy(_Node):
    """A stateless proxy (RFC 3261 §16.11) that can record-route: enough to give dialogs a
    route set. Loose routing only; it removes its own Route, adds ``Record-Route: <...;lr>`` to
    dialog-creating INVITEs, pushes its Via and forwards; responses lose the top Via and follow
    the next one."""

    def __init__(self, network: LoopNetwork, name: str, address: Address, *, record_route: bool) -> None:
        self.network = network
        self.name = name
        self.address = address
        self.record_route = record_route
        self.forwarded = 0

    @property
    def uri(self) -> str:
        return f"sip:{self.address[0]}:{self.address[1]};lr"

    def _is_me(self, uri: Uri) -> bool:
        return isinstance(uri, SipUri) and (uri.host, uri.port or 5060) == self.address

    def deliver(self, data: bytes, flow: Flow) -> None:
        try:
            msg = parse_message(data)
        except SipParseError:
            return  # a proxy drops what it cannot parse
        self.forwarded += 1
        if isinstance(msg, Response):
            headers = msg.headers.remove_first_value("Via")
            out = msg.replace(headers=headers)
            route = response_route(out.top_via, None)
            self.network.transmit(out, self.address, route.destination.address, route.destination.transport)
            return
        msg = stamp_received(msg, flow)
        assert isinstance(msg, Request)
        headers = msg.headers
        if msg.routes and self._is_me(msg.routes[0].uri):
            headers = headers.remove_first_value("Route")
        if self.record_route and msg.method == "INVITE" and msg.to.tag is None:
            headers = headers.prepend("Record-Route", f"<{self.uri}>")
        mf = msg.max_forwards
        if mf is not None:
            headers = headers.set("Max-Forwards", str(mf - 1))
        branch = MAGIC_COOKIE + hashlib.sha1(f"{self.name}/{msg.branch}".encode()).hexdigest()[:16]
        headers = headers.prepend("Via", str(Via("UDP", self.address[0], self.address[1], (("branch", branch),))))
        out = msg.replace(headers=headers)
        next_hop = out.routes[0].uri if out.routes else out.uri
        dest = destination_for_request(out, next_hop)
        self.network.transmit(out, self.address, dest.address, dest.transport)


# --- an application that records what the UA core tells it -----------------------------------

Hook = Callable[..., None]


class RecordingHandler(UaHandler):
    """Records every callback as ``(name, session, argument)`` in :attr:`events`.

    Behaviour is set per callback with keyword hooks, each called after recording with the
    callback's arguments: ``on_invite=lambda s, req: s.answer(ANSWER)``. Without a hook,
    ``on_invite`` leaves the session ringing for the test to drive, ``on_reinvite`` /
    ``on_update`` / ``on_request`` keep :class:`UaHandler`'s polite defaults.
    """

    def __init__(self, **hooks: Hook) -> None:
        unknown = set(hooks) - {n for n in dir(UaHandler) if n.startswith("on_")}
        if unknown:
            raise TypeError(f"unknown callbacks {sorted(unknown)}")
        self.hooks = dict(hooks)
        self.events: list[tuple[str, Session | None, Any]] = []
        self.sessions: list[Session] = []

    def _record(self, name: str, session: Session | None, arg: Any) -> Hook | None:
        self.events.append((name, session, arg))
        return self.hooks.get("on_" + name)

    # --- queries ------------------------------------------------------------------------------
    def names(self, session: Session | None = None) -> list[str]:
        return [n for n, s, _ in self.events if session is None or s is session]

    def args(self, name: str) -> list[Any]:
        return [a for n, _, a in self.events if n == name]

    def last(self, name: str) -> Any:
        found = self.args(name)
        if not found:
            raise AssertionError(f"no {name} event; got {self.names()}")
        return found[-1]

    @property
    def session(self) -> Session:
        """The latest incoming session."""
        if not self.sessions:
            raise AssertionError(f"no incoming session; events {self.names()}")
        return self.sessions[-1]

    # --- UaHandler ----------------------------------------------------------------------------
    def on_invite(self, session: Session, request: Request) -> None:
        self.sessions.append(session)
        hook = self._record("invite", session, request)
        if hook:
            hook(session, request)

    def on_provisional(self, session: Session, response: Response) -> None:
        hook = self._record("provisional", session, response)
        if hook:
            hook(session, response)

    def on_answered(self, session: Session, response: Response) -> None:
        hook = self._record("answered", session, response)
        if hook:
            hook(session, response)

    def on_failed(self, session: Session, response: Response | None, reason: str) -> None:
        hook = self._record("failed", session, (response, reason))
        if hook:
            hook(session, response, reason)

    def on_confirmed(self, session: Session, ack: Request | None) -> None:
        hook = self._record("confirmed", session, ack)
        if hook:
            hook(session, ack)

    def on_reinvite(self, session: Session, request: Request) -> None:
        hook = self._record("reinvite", session, request)
        (hook or super().on_reinvite)(session, request)

    def on_update(self, session: Session, request: Request) -> None:
        hook = self._record("update", session, request)
        (hook or super().on_update)(session, request)

    def on_reinvite_answered(self, session: Session, response: Response) -> None:
        hook = self._record("reinvite_answered", session, response)
        if hook:
            hook(session, response)

    def on_terminated(self, session: Session, reason: str) -> None:
        hook = self._record("terminated", session, reason)
        if hook:
            hook(session, reason)

    def on_cancelled(self, session: Session, request: Request) -> None:
        hook = self._record("cancelled", session, request)
        if hook:
            hook(session, request)

    def on_request(self, session: Session | None, request: Request, reply: Callable[..., None]) -> None:
        hook = self._record("request", session, request)
        (hook or super().on_request)(session, request, reply)


def answer_with(body: bytes | None = ANSWER, *, ring: bool = True) -> Hook:
    """An ``on_invite`` hook: 180 then 200 with ``body`` at once."""

    def hook(session: Session, request: Request) -> None:
        if ring:
            session.ring(180)
        session.answer(body)

    return hook


class UaPair:
    """Two user agents, ``alice`` (10.0.0.1) and ``bob`` (10.0.0.2), on one loop network.

    ``proxies`` puts that many record-routing proxies between them (10.0.0.11, .12, ...):
    alice sends her initial INVITE through them with a pre-loaded Route set.
    """

    def __init__(
        self,
        *,
        latency: Latency = 0.01,
        loss: float = 0.0,
        seed: int = 0,
        alice: RecordingHandler | None = None,
        bob: RecordingHandler | None = None,
        alice_config: UaConfig | None = None,
        bob_config: UaConfig | None = None,
        proxies: int = 0,
    ) -> None:
        self.net = LoopNetwork(latency=latency, loss=loss, seed=seed)
        self.clock = self.net.clock
        self.alice = self.net.add_ua("alice", "10.0.0.1", handler=alice or RecordingHandler(), config=alice_config)
        self.bob = self.net.add_ua("bob", "10.0.0.2", handler=bob or RecordingHandler(), config=bob_config)
        self.proxies = [self.net.add_proxy(f"p{i + 1}", f"10.0.0.{11 + i}") for i in range(proxies)]

    def call(self, *, sdp: bytes | None = OFFER, headers: tuple[tuple[str, str], ...] = (), **kwargs: Any) -> Session:
        """alice INVITEs bob (through the proxies, if any)."""
        routes = tuple(("Route", f"<{p.uri}>") for p in self.proxies)
        return self.alice.call(self.bob, sdp=sdp, headers=routes + tuple(headers), **kwargs)

    def run(self, seconds: float) -> None:
        self.net.run(seconds)

    def trace(self, *, dropped: bool = True) -> list[str]:
        return self.net.trace(dropped=dropped)
