"""A whole PSAP in memory: the call controller, a caller (the ESRP) and scriptable answer points.

Everything runs on one :class:`~ng911.testing.loop.LoopNetwork` and its fake clock: every SIP
message is serialised, captured and parsed again; time moves only through :meth:`PsapHarness.run`.
The controller is wired as the composition root wires it (``ng911.service.make_service``):
``MemoryStore`` → ``CallObserver`` (with ``Metrics`` on a fresh ``CollectorRegistry``) →
``Controller`` as the UA core's handler; optionally the out-of-dialog ``HealthMonitor`` whose
"down" moves the AP's calls (``Controller.fail_over_answer_point``)::

    h = PsapHarness(aps=3)                          # ap1..ap3 in queue "main", answering after 1 s
    h.ap("ap1").script = ApScript(reject=486)       # busy
    call = h.place_call()                           # an NG9-1-1 INVITE: multipart SDP + PIDF-LO,
    h.run(5)                                        # Geolocation, Resource-Priority (+ Call-Info...)
    assert h.ap("ap2").current.state == "confirmed" and h.row()["answer_point"] == "ap2"
    call.bye(); h.run(1)
    assert h.metric("ng911_calls_total", kind="emergency", outcome="answered") == 1

AP behaviour is an :class:`ApScript` (answer after N s, ring forever, reject, stay silent, early
media); acts: ``ap.hang_up()``, ``ap.hold()``, ``ap.refer(uri)``, ``ap.forget_dialogs()`` (481s),
``ap.die()`` / ``ap.revive()``. What each party received: ``h.requests_to(party, method)``,
``h.reinvites_to``, ``h.statuses_to``; lost packets to a dead AP: ``h.sent_to(ap)``. Store and
metrics: ``h.row()``, ``h.events()``, ``h.event_kinds()``, ``h.metric(name, **labels)``.

Addresses: caller (ESRP) 10.0.0.1:5060, controller 10.0.0.10:5060, answer point *n*
``sip:apN@10.0.1.N:5060``; an untrusted peer can be added with :meth:`PsapHarness.add_caller`.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry

from ng911 import sdp as sdplib
from ng911.call.controller import Controller
from ng911.call.observer import CallObserver
from ng911.call.sdpbody import sdp_of
from ng911.metrics import Metrics
from ng911.routing.health import HealthMonitor
from ng911.routing.model import AnswerPointSpec, FailoverSpec, HealthSpec, QueueSpec, RoutingSpec
from ng911.routing.pool import AnswerPoint
from ng911.sip.message import Request, Response
from ng911.sip.timers import TimerConfig
from ng911.sip.ua import Session, UaConfig
from ng911.sip.uri import SipUri, parse_uri
from ng911.store.memory import MemoryStore
from ng911.testing.loop import LoopNetwork, LoopPort, Packet, RecordingHandler

__all__ = [
    "CALLER_HOST",
    "CONTROLLER_HOST",
    "ApScript",
    "AnswerPointUa",
    "CallerUa",
    "PsapHarness",
    "answer_to",
    "ap_spec",
    "make_sdp",
    "ng911_body",
    "PIDF",
]

CALLER_HOST = "10.0.0.1"
CONTROLLER_HOST = "10.0.0.10"
CONTROLLER_URI = f"sip:sos@{CONTROLLER_HOST}:5060"
PSAP_DOMAIN = "psap.example"
BOUNDARY = "ng911-test-boundary"

# A PIDF-LO by value (RFC 4119/5491): a point with a radius, as an ESRP sends it.
PIDF = (
    b'<?xml version="1.0" encoding="UTF-8"?>\r\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10" '
    b'xmlns:gml="http://www.opengis.net/gml" entity="pres:caller@esrp.example">'
    b'<tuple id="t1"><status><gp:geopriv><gp:location-info>'
    b'<gml:Point srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>38.8977 -77.0365</gml:pos></gml:Point>'
    b"</gp:location-info><gp:usage-rules/><gp:method>GPS</gp:method></gp:geopriv></status></tuple></presence>\r\n"
)


def make_sdp(host: str, port: int = 4000, *, user: str = "-", sess_id: int = 1, version: int = 1,
             media: Sequence[str] = ("audio",), session_name: str = "-") -> bytes:
    """A valid SDP: one m-line per entry of ``media`` (audio PCMU, text t140, video H.261),
    ports ``port``, ``port + 2``, …; ``media=()`` is RFC 3725 flow IV's SDP without m-lines."""
    lines = ["v=0", f"o={user} {sess_id} {version} IN IP4 {host}", f"s={session_name}",
             f"c=IN IP4 {host}", "t=0 0"]
    for i, kind in enumerate(media):
        p = port + 2 * i
        if kind == "audio":
            lines += [f"m=audio {p} RTP/AVP 0", "a=rtpmap:0 PCMU/8000", "a=sendrecv"]
        elif kind == "text":
            lines += [f"m=text {p} RTP/AVP 98", "a=rtpmap:98 t140/1000", "a=sendrecv"]
        elif kind == "video":
            lines += [f"m=video {p} RTP/AVP 31", "a=rtpmap:31 H261/90000", "a=sendrecv"]
        else:  # pragma: no cover - a test asking for something else
            raise ValueError(kind)
    return ("\r\n".join(lines) + "\r\n").encode()


def ng911_body(offer: bytes | None, *, pidf: bytes | None = PIDF, cid: str = "loc@esrp.example",
               extra_parts: Iterable[tuple[str, bytes]] = ()) -> tuple[bytes, str]:
    """(body, Content-Type) of an NG9-1-1 INVITE: multipart/mixed with the SDP offer (when
    given) and the PIDF-LO (Content-ID ``<cid>``, what ``Geolocation: <cid:...>`` names)."""
    parts: list[bytes] = []
    if offer is not None:
        parts.append(b"Content-Type: application/sdp\r\n\r\n" + offer)
    if pidf is not None:
        parts.append(f"Content-Type: application/pidf+xml\r\nContent-ID: <{cid}>\r\n\r\n".encode() + pidf)
    for ctype, body in extra_parts:
        parts.append(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
    dash = b"--" + BOUNDARY.encode()
    body = b"".join(dash + b"\r\n" + p + b"\r\n" for p in parts) + dash + b"--\r\n"
    return body, f"multipart/mixed;boundary={BOUNDARY}"


def ap_spec(n: int, *, name: str | None = None, ring_timeout: float = 20.0,
            no_provisional_timeout: float = 2.0, capacity: int = 1) -> AnswerPointSpec:
    """Answer point *n*: ``sip:apN@10.0.1.N:5060``."""
    name = name or f"ap{n}"
    return AnswerPointSpec(name, f"sip:{name}@10.0.1.{n}:5060", ring_timeout=ring_timeout,
                           no_provisional_timeout=no_provisional_timeout, capacity=capacity)


# --- answer points ----------------------------------------------------------------------------


@dataclass
class ApScript:
    """How an answer point treats the next INVITEs (change it at any time).

    ``provisional``: the status sent at once (180, or 183 — with ``early_sdp`` as early media);
    None sends nothing (the transaction's automatic 100 Trying only). ``answer_after`` seconds
    later it answers (None: rings forever) — unless ``reject`` names a final error status, sent
    after ``reject_after`` seconds. ``reinvite_sdp``: what it answers a re-INVITE/UPDATE offer
    with (None: its current SDP, unchanged).
    """

    provisional: int | None = 180
    early_sdp: bytes | None = None
    answer_after: float | None = 1.0
    reject: int | None = None
    reject_after: float = 0.0
    reinvite_sdp: bytes | None = None


class AnswerPointUa(RecordingHandler):
    """A call-taker position: answers by its :class:`ApScript`, and can hang up, hold, REFER."""

    def __init__(self, harness: PsapHarness, spec: AnswerPointSpec, script: ApScript | None = None) -> None:
        super().__init__(on_invite=self._invite)
        self.harness = harness
        self.spec = spec
        self.name = spec.name
        uri = parse_uri(spec.uri)
        assert isinstance(uri, SipUri)
        self.host, self.sip_port = uri.host, uri.port or 5060
        self.index = int(self.host.rsplit(".", 1)[1])
        self.script = script or ApScript()
        #: the SDP it answers (or offers) with: its own address, media port 6000 + 100 * n,
        #: its own o= session id (1000 + n); audio and text
        self.sdp = make_sdp(self.host, 6000 + 100 * self.index, user=self.name, sess_id=1000 + self.index,
                            media=("audio", "text"))
        self.port: LoopPort = harness.net.add_ua(self.name, self.host, self.sip_port, handler=self)

    def __repr__(self) -> str:
        return f"<AnswerPointUa {self.name}>"

    # --- behaviour ---------------------------------------------------------------------------
    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        ua = self.port.ua
        ua.timers.call_at(ua.now() + delay, lambda at: fn())

    def _invite(self, session: Session, request: Request) -> None:
        s = self.script
        if s.provisional is not None:
            session.ring(s.provisional, s.early_sdp)
        if s.reject is not None:
            status = s.reject
            self._later(s.reject_after, lambda: session.reject(status))
        elif s.answer_after is not None:
            offer = sdp_of(request)
            self._later(s.answer_after, lambda: session.answer(answer_to(offer, self.sdp)))

    def on_reinvite(self, session: Session, request: Request) -> None:
        hook = self._record("reinvite", session, request)
        if hook is not None:
            hook(session, request)
            return
        offer = sdp_of(request)
        if offer is None:
            session.accept_update(session.local_sdp)
        else:
            session.accept_update(answer_to(offer, self.script.reinvite_sdp or self.sdp, session.local_sdp))

    # --- acts ----------------------------------------------------------------------------------
    @property
    def sessions_up(self) -> list[Session]:
        return [s for s in self.sessions if s.state == "confirmed"]

    @property
    def current(self) -> Session:
        """The one session this position has up."""
        up = self.sessions_up
        assert len(up) == 1, f"{self.name}: {len(up)} sessions up ({self.sessions})"
        return up[0]

    def hang_up(self) -> None:
        self.current.bye()

    def hold(self) -> bytes:
        """Put the caller on hold: a re-INVITE with a=sendonly (RFC 3264 §8.4)."""
        session = self.current
        held = sdplib.hold(sdplib.parse(self.sdp))
        new = sdplib.versioned(sdplib.parse(session.local_sdp or self.sdp), held).to_bytes()
        session.reinvite(new)
        return new

    def refer(self, target: str, *, on_response: Callable[[Response], None] | None = None) -> None:
        """Blind transfer: REFER the controller to ``target`` (``Refer-To: <target>``)."""
        self.current.request("REFER", headers=(("Refer-To", f"<{target}>"), ("Referred-By", f"<{self.spec.uri}>")),
                             on_response=on_response)

    def forget_dialogs(self) -> None:
        """Lose every dialog (a restarted phone): in-dialog requests now get 481."""
        self.port.ua.dialogs.clear()

    def die(self) -> None:
        """Unplug it from the network: everything sent to it from now on is lost."""
        self.harness.net.remove(self.name)

    def revive(self) -> None:
        """Plug a fresh UA in at the same address (a rebooted position, no dialogs)."""
        self.sessions.clear()
        self.events.clear()
        self.port = self.harness.net.add_ua(self.name, self.host, self.sip_port, handler=self)


def answer_to(offer: bytes | None, own: bytes, last_sent: bytes | None = None) -> bytes:
    """What a well-behaved UA answers ``offer`` with: its own SDP ``own`` lined up on the
    offer's m-lines (unmatched ones port 0), under the o= of ``last_sent`` (version + 1 when
    the content changed). No offer: ``own`` (then it is our offer)."""
    if offer is None:
        return own if last_sent is None else sdplib.versioned(sdplib.parse(last_sent), sdplib.parse(own)).to_bytes()
    aligned = sdplib.align_answer(sdplib.parse(own), sdplib.parse(offer))
    if last_sent is not None:
        aligned = sdplib.versioned(sdplib.parse(last_sent), aligned)
    return aligned.to_bytes()


class CallerUa(RecordingHandler):
    """The caller side (an ESRP): places NG9-1-1 calls and answers the controller's
    re-INVITEs like a participant of RFC 3725 §7: its own media lined up on the offer, its own
    o= (version + 1 when the answer changed)."""

    def __init__(self, harness: PsapHarness, name: str, host: str, port: int = 5060,
                 config: UaConfig | None = None) -> None:
        super().__init__()
        self.harness = harness
        self.name = name
        self.port: LoopPort = harness.net.add_ua(name, host, port, handler=self, config=config)
        self.calls: list[Session] = []
        self.offers: dict[str, bytes] = {}  # SIP Call-ID -> the media this caller offers

    def __repr__(self) -> str:
        return f"<CallerUa {self.name}>"

    def on_answered(self, session: Session, response: Response) -> None:
        hook = self._record("answered", session, response)
        if hook is not None:
            hook(session, response)
            return
        if sdp_of(session.invite) is None:
            # A delayed offer: the 200 holds the offer, our ACK the answer.
            session.ack(answer_to(sdp_of(response), self.offers[session.call_id]))

    def on_reinvite(self, session: Session, request: Request) -> None:
        hook = self._record("reinvite", session, request)
        if hook is not None:
            hook(session, request)
            return
        own = self.offers.get(session.call_id)
        offer = sdp_of(request)
        if offer is None or own is None:
            session.accept_update(session.local_sdp)
        else:
            session.accept_update(answer_to(offer, own, session.local_sdp))

    def place_call(
        self,
        *,
        offer: bytes | None = None,
        ng911: bool = True,
        pidf: bytes | None = PIDF,
        request_uri: str = "urn:service:sos",
        to: str | None = None,
        call_info: str | None = None,
        resource_priority: str | None = "esnet.1",
        history_info: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        from_uri: str = '"Caller" <sip:+12025551212@esrp.example>',
        with_offer: bool = True,
        supported_100rel: bool = True,
    ) -> Session:
        """INVITE the controller. ``ng911``: multipart/mixed (SDP offer + PIDF-LO) with
        Geolocation, Geolocation-Routing, Resource-Priority (and Call-Info/History-Info when
        given); else a plain SDP body. ``with_offer=False``: a delayed offer (no SDP). A
        non-SIP ``request_uri`` (a service URN) goes to the controller by a loose Route."""
        offer = offer if offer is not None else make_sdp(CALLER_HOST, 4000, user="caller", sess_id=555)
        sdp_part = offer if with_offer else None
        extra: list[tuple[str, str]] = []
        body: bytes | None
        if ng911:
            body, ctype = ng911_body(sdp_part, pidf=pidf)
            if pidf is not None:
                extra += [("Geolocation", "<cid:loc@esrp.example>"), ("Geolocation-Routing", "no")]
            if not sdp_part and pidf is None:
                body, ctype = b"", "application/sdp"
        else:
            body, ctype = (sdp_part or b""), "application/sdp"
        if call_info is not None:
            extra.append(("Call-Info", call_info))
        if resource_priority is not None:
            extra.append(("Resource-Priority", resource_priority))
        if history_info is not None:
            extra.append(("History-Info", history_info))
        uri = parse_uri(request_uri)
        if not isinstance(uri, SipUri):
            extra.insert(0, ("Route", f"<sip:{CONTROLLER_HOST}:5060;lr>"))
        extra += list(headers)
        sip_call_id = f"esrp-{len(self.calls) + 1}-{self.name}@esrp.example"
        if not supported_100rel:
            # The UA core always lists 100rel; an ESRP without it is made on the wire.
            self.harness.strip_100rel(sip_call_id)
        session = self.port.ua.invite(
            request_uri,
            from_uri=from_uri,
            to_uri=to or f"<{request_uri}>",
            body=body or None,
            sdp=sdp_part,
            content_type=ctype,
            headers=tuple(extra),
            call_id=sip_call_id,
        )
        self.calls.append(session)
        self.offers[sip_call_id] = offer
        return session


# --- the harness ------------------------------------------------------------------------------


class _RecordingObserver(CallObserver):
    """CallObserver that also remembers the controller call ids it saw (ids only: no reference
    to a Call, so the reference-cycle test can watch Calls die)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.call_ids: list[str] = []

    def created(self, call: Any) -> None:
        self.call_ids.append(call.call_id)
        super().created(call)


@dataclass
class PsapHarness:
    """Controller + caller + answer points on one loop network (see the module docstring).

    ``aps``: how many answer points in queue ``main`` (or pass ``routing`` with your own
    queues: every AP spec in it gets an :class:`AnswerPointUa`; build specs with
    :func:`ap_spec`). ``health``: also run the out-of-dialog OPTIONS monitor.
    """

    aps: int = 3
    routing: RoutingSpec | None = None
    ring_timeout: float = 20.0
    no_provisional_timeout: float = 2.0
    capacity: int = 1
    failover: FailoverSpec = field(default_factory=lambda: FailoverSpec(in_dialog_options_interval=5.0))
    health_spec: HealthSpec = field(default_factory=lambda: HealthSpec(options_interval=2.0, options_timeout=1.0))
    health: bool = False
    test_queue: str | None = None
    other_queue: str | None = None
    trusted: Sequence[str] = ("10.0.0.0/24",)
    transfer_targets: Sequence[str] = ()  # REFER targets allowed besides APs and queues
    latency: float = 0.01
    scripts: dict[str, ApScript] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.routing is None:
            specs = tuple(ap_spec(i + 1, ring_timeout=self.ring_timeout,
                                  no_provisional_timeout=self.no_provisional_timeout,
                                  capacity=self.capacity) for i in range(self.aps))
            self.routing = RoutingSpec(
                queues=(QueueSpec("main", specs),), psap_uris=(CONTROLLER_URI,), emergency_queue="main",
                test_queue=self.test_queue, other_queue=self.other_queue,
                health=self.health_spec, failover=self.failover,
            )
        self.net = LoopNetwork(latency=self.latency)
        self.clock = self.net.clock
        self.store = MemoryStore()
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        epoch = self.store.register_node("node1")
        self.observer = _RecordingObserver(self.store, self.metrics, node="node1", epoch=epoch)
        self.controller = Controller(self.routing, self.observer,
                                     trusted=[ipaddress.ip_network(n) for n in self.trusted],
                                     domain=PSAP_DOMAIN, node="node1", transfer_targets=self.transfer_targets)
        fo = self.routing.failover
        # As make_service: 100 Trying at once, the PSAP leg's session timer from FailoverSpec.
        config = UaConfig(user="ng911", user_agent="ng911-test", timers=TimerConfig(trying_delay=0),
                          session_expires=fo.session_expires, min_se=fo.min_se, bind_dialogs=True)
        self.ctl: LoopPort = self.net.add_ua("ctl", CONTROLLER_HOST, 5060, handler=self.controller, config=config)
        self.controller.attach(self.ctl.ua)
        self.ended: list[str] = []
        self.controller.on_call_ended = lambda call: self.ended.append(call.call_id)
        self.answer_points: dict[str, AnswerPointUa] = {}
        for queue in self.routing.queues:
            for spec in queue.answer_points:
                if spec.name not in self.answer_points:
                    self.answer_points[spec.name] = AnswerPointUa(self, spec, self.scripts.get(spec.name))
        self.caller = CallerUa(self, "esrp", CALLER_HOST)
        self.monitor = HealthMonitor(self.ctl.ua, self.controller.pool, CONTROLLER_HOST, on_result=self._health_result)
        if self.health:
            self.monitor.start()

    def strip_100rel(self, sip_call_id: str) -> None:
        """Remove 100rel from Supported in every message of that SIP call (a peer without
        RFC 3262)."""
        previous = self.net.rewrite

        def rewrite(msg: Request | Response, src: Any, dst: Any) -> Request | Response:
            if previous is not None:
                msg = previous(msg, src, dst)
            if msg.call_id == sip_call_id and "supported" in msg.headers:
                tokens = [t for t in msg.header_tokens("Supported") if t != "100rel"]
                msg = msg.replace(headers=msg.headers.set("Supported", ", ".join(sorted(tokens))))
            return msg

        self.net.rewrite = rewrite

    def _health_result(self, ap: AnswerPoint, ok: bool, changed: bool) -> None:
        # as ng911.service.make_service wires it
        self.metrics.answer_point_up.labels(answer_point=ap.name).set(1 if ap.up else 0)
        if changed:
            self.store.ap_health(ap.name, ap.spec.uri, ap.up, self.clock.seconds())
            if not ap.up:
                self.controller.fail_over_answer_point(ap.name, "ap_down")

    # --- parties -------------------------------------------------------------------------------
    def ap(self, name: str) -> AnswerPointUa:
        return self.answer_points[name]

    def add_caller(self, name: str, host: str, port: int = 5060) -> CallerUa:
        return CallerUa(self, name, host, port)

    def place_call(self, **kwargs: Any) -> Session:
        """The caller (ESRP) INVITEs the controller; see :meth:`CallerUa.place_call`."""
        return self.caller.place_call(**kwargs)

    # --- time ----------------------------------------------------------------------------------
    def run(self, seconds: float) -> None:
        self.net.run(seconds)

    def run_until(self, condition: Callable[[], bool], timeout: float = 60.0) -> bool:
        return self.net.run_until(condition, timeout)

    def now(self) -> float:
        return self.clock.seconds()

    # --- what happened ---------------------------------------------------------------------------
    @property
    def call_id(self) -> str:
        """The controller's id of the latest call."""
        assert self.observer.call_ids, "no call created"
        return self.observer.call_ids[-1]

    def row(self, call_id: str | None = None) -> dict[str, Any]:
        row = self.store.call(call_id or self.call_id)
        assert row is not None
        return row

    def events(self, call_id: str | None = None) -> list[dict[str, Any]]:
        return self.store.events(call_id or self.call_id)

    def event_kinds(self, call_id: str | None = None) -> list[str]:
        return [e["kind"] for e in self.events(call_id)]

    def event(self, kind: str, call_id: str | None = None) -> dict[str, Any]:
        """The data of the last event ``kind`` of the call."""
        found = [e for e in self.events(call_id) if e["kind"] == kind]
        assert found, f"no {kind} event in {self.event_kinds(call_id)}"
        return found[-1]["data"]

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def packets(self, method: str | None = None, status: int | None = None, *, src: str | None = None,
                dst: str | None = None, requests: bool | None = None) -> list[Packet]:
        """Delivered packets (see ``LoopNetwork.find``)."""
        return self.net.find(method, status, src=src, dst=dst, requests=requests, delivered=True)

    def sent_to(self, ap: str, method: str | None = None) -> list[Packet]:
        """Packets the controller sent to answer point ``ap``'s address, delivered or lost
        (a removed node has no name on the wire any more)."""
        point = self.ap(ap)
        return [p for p in self.net.packets if p.src_name == "ctl" and p.dst == (point.host, point.sip_port)
                and (method is None or p.method == method)]

    def received(self, party: str, method: str | None = None, status: int | None = None, *,
                 src: str | None = None) -> list[Request | Response]:
        """The messages ``party`` received (optionally one method / status / sender)."""
        out: list[Request | Response] = []
        for p in self.packets(method, status, dst=party, src=src):
            if p.message is not None and (status is not None or method is None or p.is_request or p.status):
                out.append(p.message)
        return out

    def requests_to(self, party: str, method: str, *, src: str = "ctl") -> list[Request]:
        return [m for m in self.received(party, method, src=src) if isinstance(m, Request)]

    def reinvites_to(self, party: str, *, src: str = "ctl") -> list[Request]:
        """The re-INVITEs (INVITEs within a dialog) ``party`` received."""
        return [r for r in self.requests_to(party, "INVITE", src=src) if r.to.tag]

    def responses_to(self, party: str, method: str | None = None, *, src: str = "ctl") -> list[Response]:
        return [m for m in self.received(party, method, src=src) if isinstance(m, Response)]

    def statuses_to(self, party: str, method: str = "INVITE", *, src: str = "ctl") -> list[int]:
        return [m.status for m in self.responses_to(party, method, src=src)]
