"""`ng911 demo`: one emergency call, an answering position that dies, the caller kept.

Runs on a fresh machine with no database server and no config: a controller node on an
embedded SQLite file in a temporary directory, plus a simulated caller (the ESInet side) and
two simulated call-taker positions, all on 127.0.0.1 in this process. It places an emergency
call carrying a location, kills the position that answered, and narrates the controller
moving the call to the next position while the caller stays on the line. Then it prints the
call's event timeline from the database and a few metrics.
"""
from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ng911.sip.message import Request, Response
from ng911.sip.timers import TimerConfig
from ng911.sip.ua import Session, UaConfig, UaHandler

BOUNDARY = "ng911-demo-boundary"
PIDF = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"
  xmlns:gml="http://www.opengis.net/gml" xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"
  entity="pres:caller@example.net">
 <tuple id="demo"><status><gp:geopriv><gp:location-info>
   <gml:Point srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>30.6280 -96.3344</gml:pos></gml:Point>
   <ca:civicAddress><ca:country>US</ca:country><ca:A1>TX</ca:A1><ca:A3>College Station</ca:A3>
    <ca:RD>Texas</ca:RD><ca:STS>Ave</ca:STS><ca:HNO>400</ca:HNO></ca:civicAddress>
  </gp:location-info><gp:usage-rules/><gp:method>GPS</gp:method></gp:geopriv></status></tuple>
</presence>
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="watch an emergency call survive the death of its answering position",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--keep", metavar="DIR", help="put the SQLite database here and keep it (default: a temp dir, removed)")
    p.set_defaults(func=run)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        for _ in range(50):
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                t.bind(("127.0.0.1", port))
                return port
            except OSError:
                u.close()
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raise RuntimeError("no free port")


def _sdp(port: int, who: str) -> bytes:
    sid = int(time.time())
    return (f"v=0\r\no={who} {sid} {sid} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n").encode()


class _Narrator:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"  [{time.monotonic() - self.t0:5.1f}s] {text}", flush=True)


class _Position(UaHandler):
    """A call-taker's phone: rings for a second, then answers."""

    def __init__(self, name: str, reactor: Any, port: int, narrator: _Narrator) -> None:
        self.name, self.reactor, self.port, self.n = name, reactor, port, narrator
        self.sessions: list[Session] = []

    def on_invite(self, session: Session, request: Request) -> None:
        self.sessions.append(session)
        self.n.say(f"{self.name}'s phone rings")
        session.ring(180)
        self.reactor.callLater(1.0, session.answer, _sdp(self.port, self.name))

    def on_confirmed(self, session: Session, ack: Request | None) -> None:
        self.n.say(f"{self.name} is talking with the caller")


class _Caller(UaHandler):
    def __init__(self, narrator: _Narrator) -> None:
        self.n = narrator
        self.session: Session | None = None
        self.reinvites = 0
        self.saw_bye = False
        self.answered = False

    def on_answered(self, session: Session, response: Response) -> None:
        self.answered = True
        self.n.say("caller: the call is answered")

    def on_reinvite(self, session: Session, request: Request) -> None:
        self.reinvites += 1
        self.n.say("caller: receives a re-INVITE (same session, new media address) — no BYE, still on the line")
        session.accept_update(_sdp(40000, "caller"))

    def on_failed(self, session: Session, response: Response | None, reason: str) -> None:
        self.n.say(f"caller: the call failed ({reason})")

    def on_terminated(self, session: Session, reason: str) -> None:
        self.saw_bye = reason == "remote BYE"


def _settings(base: Path, ports: dict[str, int]) -> Any:
    from ng911.config import settings_from_dict

    aps = [{"name": name, "uri": f"sip:{name}@127.0.0.1:{ports[name]}", "ring_timeout": 10.0,
            "no_provisional_timeout": 2.0} for name in ("ap1", "ap2")]
    raw = {
        "node": {"name": "demo"},
        "sip": {"host": "127.0.0.1", "port": ports["node"], "transports": ["udp", "tcp"]},
        "upstream": {"trusted": ["127.0.0.0/8"]},
        "routing": {"emergency_queue": "main"},
        "queues": [{"name": "main", "answer_points": aps}],
        "health": {"options_interval": 0.5, "options_timeout": 0.5, "down_after": 2},
        "failover": {"in_dialog_options_interval": 1.0},
        "api": {"host": "127.0.0.1", "port": ports["api"]},
        "metrics": {"host": "127.0.0.1", "port": ports["metrics"]},
        "database": {"url": "", "sqlite_path": str(base / "ng911-demo.sqlite")},
    }
    return settings_from_dict(raw, base_dir=base, env={})


def run(args: argparse.Namespace) -> int:
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        return _run(Path(args.keep).resolve())
    with tempfile.TemporaryDirectory(prefix="ng911-demo-") as tmp:
        return _run(Path(tmp))


def _run(base: Path) -> int:
    import logging

    from twisted.internet import reactor

    from ng911.service import make_service, prepare_database
    from ng911.sip.stack import SipStack

    logging.basicConfig(level=logging.ERROR)
    n = _Narrator()
    ports = {k: _free_port() for k in ("node", "api", "metrics", "ap1", "ap2", "caller")}
    settings = _settings(base, ports)
    print("ng911 demo — an emergency call survives the death of its answering position\n")
    print(f"  controller node   sip:127.0.0.1:{ports['node']}  (SQLite: {settings.database.sqlite_path})")
    print(f"  answer points     ap1 on :{ports['ap1']}, ap2 on :{ports['ap2']}  (queue 'main', hunted in order)")
    print(f"  caller            :{ports['caller']}  (stands in for the ESInet's routing proxy)")
    print(f"  metrics           http://127.0.0.1:{ports['metrics']}/metrics\n")
    prepare_database(settings)
    service = make_service(settings, reactor)
    service.start()

    timers = TimerConfig(t1=0.5)
    positions = {}
    stacks = {}
    for name in ("ap1", "ap2"):
        positions[name] = _Position(name, reactor, 41000 if name == "ap1" else 42000, n)
        stacks[name] = SipStack(reactor, positions[name], host="127.0.0.1", udp_port=ports[name], tcp_port=ports[name],
                                config=UaConfig(user=name, timers=timers))
        stacks[name].listen()
    caller = _Caller(n)
    caller_stack = SipStack(reactor, caller, host="127.0.0.1", udp_port=ports["caller"], tcp_port=ports["caller"],
                            config=UaConfig(user="esrp", timers=timers))
    caller_stack.listen()

    state: dict[str, Any] = {"call": None}

    def narrate(call: Any, kind: str, data: dict[str, Any]) -> None:
        state["call"] = call
        ap = data.get("answer_point")
        if kind == "received":
            loc = (call.content.get("location") or {}).get("value") or {}
            where = _where(loc)
            n.say(f"controller: emergency call from {data.get('caller')} — location {where}")
            n.say(f"controller: NENA call id {call.nena_call_id}")
        elif kind == "ap_invite":
            how = "with the caller's offer" if data.get("offer") else "WITHOUT SDP (RFC 3725 flow I: it will offer)"
            n.say(f"controller: INVITE {ap} {how}")
        elif kind == "answered":
            n.say(f"controller: {ap} answered in {data.get('seconds')} s")
        elif kind == "failover":
            n.say(f"controller: the PSAP leg to {ap} failed ({data.get('reason')}) — moving the call, caller kept")
        elif kind == "moved":
            n.say(f"controller: call moved to {ap} in {data.get('seconds')} s ({data.get('reason')})")
        elif kind == "ended":
            n.say(f"controller: call ended ({data.get('reason')}, outcome {data.get('outcome')})")

    service.controller.observer.listeners.append(narrate)

    def place() -> None:
        n.say("caller: dials 9-1-1 (INVITE urn:service:sos with SDP and a PIDF-LO location)")
        body = (f"--{BOUNDARY}\r\nContent-Type: application/sdp\r\n\r\n".encode() + _sdp(40000, "caller")
                + f"\r\n--{BOUNDARY}\r\nContent-Type: application/pidf+xml\r\nContent-ID: <loc1@example.net>\r\n\r\n{PIDF}"
                f"\r\n--{BOUNDARY}--\r\n".encode())
        caller.session = caller_stack.ua.invite(
            "urn:service:sos", from_uri="\"Pat Caller\" <sip:+19795550123@127.0.0.1>", to_uri="<urn:service:sos>",
            body=body, content_type=f"multipart/mixed;boundary={BOUNDARY}",
            headers=(("Route", f"<sip:127.0.0.1:{ports['node']};lr>"), ("Geolocation", "<cid:loc1@example.net>"),
                     ("Geolocation-Routing", "yes"), ("Resource-Priority", "esnet.1")),
        )

    def kill_ap1() -> None:
        n.say("DRILL: answer point ap1 dies (its SIP stack stops; no BYE, nothing)")
        stacks["ap1"].stop()

    def hang_up() -> None:
        n.say("caller: hangs up")
        if caller.session is not None:
            caller.session.bye()

    reactor.callWhenRunning(place)
    reactor.callLater(3.0, kill_ap1)
    reactor.callLater(10.0, hang_up)
    reactor.callLater(11.0, reactor.stop)
    reactor.run()

    service.store.flush(5.0)
    call = state["call"]
    ok = call is not None and caller.answered and caller.reinvites >= 1 and not caller.saw_bye
    if call is not None:
        print("\n  the call's event timeline, from the database:")
        events = service.store.events(call.call_id)
        t0 = events[0]["at"] if events else 0
        for ev in events:
            at = ev["at"].timestamp() if hasattr(ev["at"], "timestamp") else ev["at"]
            t0v = t0.timestamp() if hasattr(t0, "timestamp") else t0
            data = " ".join(f"{k}={v}" for k, v in (ev.get("data") or {}).items() if k not in ("nena_call_id", "sip_call_id"))
            print(f"    +{at - t0v:6.3f}s  {ev['kind']:<14} {data}")
    print("\n  a few metrics:")
    for line in _metrics(service.registry):
        print(f"    {line}")
    service.store.stop(2.0)
    print(f"\n  result: {'the caller was kept through the failover' if ok else 'something went wrong'}")
    return 0 if ok else 1


def _where(loc: dict[str, Any]) -> str:
    """A one-line reading of a parsed PIDF-LO: coordinates and civic address."""
    text = []
    for info in loc.get("infos", []) if isinstance(loc, dict) else []:
        for shape in info.get("shapes", []):
            for point in shape.get("points", [])[:1]:
                text.append(f"{shape.get('kind')} {point[0]}, {point[1]}")
        for civic in info.get("civic", []):
            text.append(" ".join(str(civic[k]) for k in ("HNO", "RD", "STS", "A3", "A1", "country") if k in civic))
    return "; ".join(text) or "(none parsed)"


def _metrics(registry: Any) -> list[str]:
    wanted = ("ng911_calls_total", "ng911_failovers_total", "ng911_failover_duration_seconds_sum",
              "ng911_time_to_answer_seconds_sum", "ng911_answer_point_up")
    out = []
    for family in registry.collect():
        for sample in family.samples:
            if sample.name in wanted and sample.value:
                labels = ",".join(f'{k}="{v}"' for k, v in sample.labels.items())
                out.append(f"{sample.name}{{{labels}}} {sample.value:g}")
            elif sample.name == "ng911_answer_point_up":
                out.append(f"{sample.name}{{answer_point=\"{sample.labels.get('answer_point')}\"}} {sample.value:g}")
    return out


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(argparse.Namespace(keep=None)))
