"""SIP message parse/serialise throughput: messages per second, min of several runs.

    .venv/bin/python bench/bench_parser.py            # full run (about 30 s)
    .venv/bin/python bench/bench_parser.py --quick    # fewer rounds, for a smoke check
    .venv/bin/python bench/bench_parser.py --tree=/path/to/other/checkout   # compare

The workload is realistic, not one message parsed over and over: every row and every round
has its own CALLS calls (own Call-ID, tags, branches), all between the same few hosts, as a
controller sees them, after a warm-up on other calls. So a per-message row sees each call's
strings for the first time (the parser's caches only help with hosts and URIs: the worst
case), and the "call flow" row parses each call's INVITE, 180, 200, ACK and BYE in order, as
they arrive, so From/To/Via repeat the way they do on the wire. The figure kept is the best
round (min time, garbage collector off while timing), the least noisy estimate of the cost.

Columns: parse = parse_message(bytes); +access = parse and read what the transaction and
dialog layers read (branch, cseq, call_id, from/to tags, contacts, record-routes), on calls
of its own; serialise = msg.to_bytes() of a parsed message; multipart = split the INVITE body
into its parts (ng911.sip.body). Figures are for a report, never an assert. ``--tree=DIR``
imports ng911 from another checkout, to compare.
"""
from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
for _arg in sys.argv[1:]:  # --tree=DIR: import ng911 from another checkout (before the import below)
    if _arg.startswith("--tree="):
        sys.path.insert(0, _arg.split("=", 1)[1])

from ng911.sip.message import parse_message  # noqa: E402

CALLS = 200

_PIDF = (
    '<?xml version="1.0" encoding="UTF-8"?>\r\n'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf"\r\n'
    ' xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"\r\n'
    ' xmlns:gml="http://www.opengis.net/gml"\r\n'
    ' xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"\r\n'
    ' entity="pres:+12025551212@bcf.example.net">\r\n'
    ' <dm:device id="d{n}">\r\n'
    "  <gp:geopriv><gp:location-info>\r\n"
    '   <gml:Point srsName="urn:ogc:def:crs:EPSG::4326">'
    "<gml:pos>40.7166 -73.9906</gml:pos></gml:Point>\r\n"
    "  </gp:location-info><gp:usage-rules/>"
    "<gp:method>GPS</gp:method></gp:geopriv>\r\n"
    "  <dm:timestamp>2025-05-15T12:30:00Z</dm:timestamp>\r\n"
    " </dm:device>\r\n"
    "</presence>\r\n"
)


def _sdp(n: int, ip: str) -> str:
    return (
        "v=0\r\n"
        f"o=- {1000 + n} 1 IN IP4 {ip}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {ip}\r\n"
        "t=0 0\r\n"
        f"m=audio {20000 + 2 * (n % 5000)} RTP/AVP 0 8 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\n"
        "a=sendrecv\r\n"
    )


def _msg(start: str, headers: list[str], body: str = "") -> bytes:
    raw = body.encode()
    lines = [start, *headers, f"Content-Length: {len(raw)}", "", ""]
    return "\r\n".join(lines).encode() + raw


def _call(n: int) -> dict[str, bytes]:
    cid = f"{n:08x}a7f3c2d1e0b9@bcf.example.net"
    ftag = f"{n:06x}f1"
    ttag = f"as{n:06x}9"
    br = f"z9hG4bK{n:08x}c0"
    br2 = f"z9hG4bK{n:08x}e7"
    via_esrp = f"SIP/2.0/UDP 192.0.2.10:5060;branch={br};rport"
    via_bcf = f"SIP/2.0/UDP 192.0.2.20:5060;branch={br2};received=192.0.2.20"
    frm = f'"NG911 Test" <sip:+12025551212@bcf.example.net>;tag={ftag}'
    to = "<urn:service:sos>"
    boundary = "boundary1"
    body = (
        f"--{boundary}\r\nContent-Type: application/sdp\r\n\r\n{_sdp(n, '192.0.2.30')}\r\n"
        f"--{boundary}\r\nContent-Type: application/pidf+xml\r\n"
        f"Content-ID: <loc{n}@bcf.example.net>\r\n\r\n{_PIDF.replace('{n}', str(n))}\r\n"
        f"--{boundary}--\r\n"
    )
    invite = _msg(
        "INVITE urn:service:sos SIP/2.0",
        [
            f"Via: {via_esrp}",
            f"Via: {via_bcf}",
            "Max-Forwards: 69",
            "Route: <sip:psap.example.net;lr>",
            f"From: {frm}",
            f"To: {to}",
            f"Call-ID: {cid}",
            "CSeq: 1 INVITE",
            "Contact: <sip:+12025551212@192.0.2.20:5060;transport=udp>",
            f"Geolocation: <cid:loc{n}@bcf.example.net>",
            "Geolocation-Routing: yes",
            f"Call-Info: <urn:emergency:uid:callid:{n:032x}:bcf.example.net>;purpose=emergency-CallId",
            f"Call-Info: <urn:emergency:uid:incidentid:{n:032x}:bcf.example.net>;purpose=emergency-IncidentId",
            "Resource-Priority: esnet.1",
            "Supported: 100rel, timer, geolocation",
            "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK, INFO, REFER, NOTIFY",
            f"Content-Type: multipart/mixed; boundary={boundary}",
        ],
        body,
    )
    resp_heads = [
        f"Via: {via_esrp}",
        f"Via: {via_bcf}",
        "Record-Route: <sip:psap.example.net;lr>",
        f"From: {frm}",
        f"To: {to};tag={ttag}",
        f"Call-ID: {cid}",
        "CSeq: 1 INVITE",
        "Contact: <sip:ap1@198.51.100.7:5070>",
    ]
    ringing = _msg("SIP/2.0 180 Ringing", resp_heads)
    ok = _msg(
        "SIP/2.0 200 OK",
        resp_heads + ["Supported: timer", "Session-Expires: 1800;refresher=uas", "Content-Type: application/sdp"],
        _sdp(n, "198.51.100.7"),
    )
    dialog = [
        "Max-Forwards: 70",
        "Route: <sip:psap.example.net;lr>",
        f"From: {frm}",
        f"To: {to};tag={ttag}",
        f"Call-ID: {cid}",
    ]
    ack = _msg(
        "ACK sip:ap1@198.51.100.7:5070 SIP/2.0",
        [f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{n:08x}a1;rport", *dialog, "CSeq: 1 ACK"],
    )
    bye = _msg(
        "BYE sip:ap1@198.51.100.7:5070 SIP/2.0",
        [f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{n:08x}b2;rport", *dialog, "CSeq: 2 BYE"],
    )
    return {"INVITE (SDP+PIDF-LO)": invite, "180 Ringing": ringing, "200 OK (SDP)": ok, "ACK": ack, "BYE": bye}


def _access(msg) -> None:  # type: ignore[no-untyped-def]
    msg.branch, msg.cseq, msg.call_id, msg.from_.tag, msg.to.tag  # noqa: B018
    msg.contacts, msg.record_routes  # noqa: B018


def _best(fn: Callable[[int], None], rounds: int) -> float:
    """Min over rounds of fn(round), the garbage collector held off while timing."""
    best = float("inf")
    for r in range(rounds):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            fn(r)
            best = min(best, time.perf_counter() - t0)
        finally:
            gc.enable()
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=9, help="timed rounds per figure (min is kept)")
    ap.add_argument("--calls", type=int, default=CALLS, help="distinct calls per round")
    ap.add_argument("--quick", action="store_true", help="3 rounds of 50 calls")
    ap.add_argument("--tree", metavar="DIR", help="import ng911 from DIR (another checkout), to compare")
    args = ap.parse_args(argv)
    calls = 50 if args.quick else args.calls
    rounds = 3 if args.quick else args.rounds

    # sets[column, row][r]: the messages of round r for that row and timed column, from calls
    # that no other row, column or round uses
    kinds = list(_call(0))
    rows = [*kinds, "call flow"]
    sets: dict[tuple[str, str], list[list[bytes]]] = {}
    n = 0
    for column in ("parse", "access"):
        for row in rows:
            for _ in range(rounds):
                batch = [_call(n + i) for i in range(calls)]
                n += calls
                flow = [c[k] for c in batch for k in kinds]
                sets.setdefault((column, row), []).append(flow if row == "call flow" else [c[row] for c in batch])
    for c in (_call(n + i) for i in range(50)):  # a running node has seen its peers' hosts before
        for data in c.values():
            _access(parse_message(data))

    try:
        from ng911.sip.body import parse_content_type, split_multipart
    except ImportError:  # the body module is newer than some trees this is run against
        split_multipart = None  # type: ignore[assignment]

    print(f"python {platform.python_version()} on {platform.machine()}; {calls} calls/round, min of {rounds} rounds")
    print(f"{'message':<22}{'bytes':>7}{'parse/s':>11}{'+access/s':>11}{'serialise/s':>13}{'multipart/s':>13}")
    for row in rows:
        data, other = sets["parse", row], sets["access", row]

        def parse_all(r: int, data: list[list[bytes]] = data) -> None:
            for d in data[r]:
                parse_message(d)

        def parse_access(r: int, data: list[list[bytes]] = other) -> None:
            for d in data[r]:
                _access(parse_message(d))

        tp = _best(parse_all, rounds)
        ta = _best(parse_access, rounds)
        parsed = [[parse_message(d) for d in data[r]] for r in range(rounds)]

        def serialise(r: int) -> None:
            for m in parsed[r]:
                m.to_bytes()

        ts = _best(serialise, rounds)
        count = len(data[0])
        mp = ""
        if split_multipart is not None and row != "call flow" and "multipart/" in (parsed[0][0].content_type or ""):

            def split_all(r: int) -> None:
                for m in parsed[r]:
                    split_multipart(m.body, parse_content_type(m.content_type).boundary)

            mp = f"{count / _best(split_all, rounds):>13,.0f}"
        size = sum(map(len, data[0])) // count
        label = "call flow (5 msgs)" if row == "call flow" else row
        print(f"{label:<22}{size:>7}{count / tp:>11,.0f}{count / ta:>11,.0f}{count / ts:>13,.0f}{mp}")


if __name__ == "__main__":
    main()
