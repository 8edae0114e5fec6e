"""PROTOS c07-sip (OUSPG) against a running ``ng911 ua answer``.

The suite (read from ../shared/conformance, extracted into tmp_path) holds 4,527 malformed
INVITE cases; each file is ``"<len> <INVITE template><len> <teardown template>"`` with
placeholders (<To> <From> <From-Address> <From-IP> <Local-Port> <Call-ID> <Branch-ID> <CSeq>
<Content-Length> <Teardown-Method>). Every case is filled in (fresh Call-ID and branch, the
Content-Length computed) and sent to the agent with its teardown (a CANCEL with the INVITE's
branch and CSeq), at a controlled rate. Responses are drained without blocking: a final
non-2xx to an INVITE gets its ACK, a 2xx an ACK and a BYE, as a real UAC would.

Required: every ~100 cases a well-formed OPTIONS gets a 200; at the end the agent is alive,
answers OPTIONS, logged no traceback, and a real call (SIPp ``uac -m 1``) succeeds.
Reported (not asserted): how many cases got a 400, another answer, or none.

Cases larger than the 65,507-octet UDP payload limit once filled in (81 of them, up to
144 kB) cannot be sent as a datagram; they go over TCP, one connection each.

(The archive holds only the 4,527 case files: no README and no protos_c07_sip_groups.tsv,
so results are counted per response class, not per PROTOS group.)
"""
from __future__ import annotations

import collections
import re
import secrets
import selectors
import socket
import tarfile
import time
from pathlib import Path

import pytest

from .conftest import CONFORMANCE, HOST, REPORT, assert_clean, sip_request, split_stream

pytestmark = pytest.mark.integration

ARCHIVE = CONFORMANCE / "protos-c07-sip.tar.xz"
N_CASES = 4527
UDP_MAX = 65507
RATE = 110.0  # at most this many cases per second (INVITE + teardown each): ~45 s for the suite
# Flow control, so that a busy machine slows the run down instead of overflowing the agent's
# UDP receive buffer (Linux default ~208 kB; cases reach 64 kB): before a case that would take
# the octets sent since the last probe past BARRIER_BYTES, or after BARRIER_CASES cases, a
# well-formed OPTIONS must get its 200. The agent reads its socket in order, so that 200 means
# everything sent before it was consumed.
BARRIER_BYTES = 64 * 1024
BARRIER_CASES = 20
PROBE_EVERY = 100  # and at least every 100 cases (the liveness check the suite asks for)
PROBE_TIMEOUT = 10.0  # the OPTIONS is retransmitted as a UAC would (Timer E: 0.5, 1, 2, 4 s)
RING = "2"  # a parsed INVITE rings 2 s; its CANCEL arrives long before the answer


def load_cases(dest: Path) -> list[tuple[str, bytes, bytes | None]]:
    with tarfile.open(ARCHIVE, "r:xz") as tar:
        tar.extractall(dest, filter="data")
    cases = []
    for path in sorted((dest / "protos_c07_sip").iterdir()):
        data = path.read_bytes()
        parts, i = [], 0
        while i < len(data):
            m = re.match(rb"(\d+) ", data[i:i + 16])
            assert m, f"{path.name}: no length prefix at {i}"
            n = int(m.group(1))
            start = i + m.end()
            parts.append(data[start:start + n])
            i = start + n
        cases.append((path.name, parts[0], parts[1] if len(parts) > 1 else None))
    return cases


def fill(template: bytes, values: dict[bytes, bytes]) -> bytes:
    out = template
    for key, val in values.items():
        out = out.replace(key, val)
    if b"<Content-Length>" in out:
        _, sep, body = out.partition(b"\r\n\r\n")
        out = out.replace(b"<Content-Length>", str(len(body) if sep else 0).encode())
    return out


_STATUS = re.compile(rb"^SIP/2\.0 (\d{3})")
_CALL_ID = re.compile(rb"(?im)^(?:call-id|i)[ \t]*:[ \t]*(\S+)")
_CSEQ = re.compile(rb"(?im)^cseq[ \t]*:[ \t]*(\d+)[ \t]+(\S+)")
_HDR = {name: re.compile(rb"(?im)^(?:%s)[ \t]*:[ \t]*([^\r\n]*)" % alt)
        for name, alt in (("via", rb"via|v"), ("from", rb"from|f"), ("to", rb"to|t"))}


class Run:
    """Sends the cases, attributes responses to cases (by Call-ID, else branch), replies."""

    def __init__(self, agent_port: int) -> None:
        self.agent = (HOST, agent_port)
        self.token = secrets.token_hex(3)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.udp.bind((HOST, 0))
        self.udp.setblocking(False)
        self.port = self.udp.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.udp, selectors.EVENT_READ, None)
        self.tcp: dict[socket.socket, bytearray] = {}
        self.invite_status: dict[int, list[int]] = collections.defaultdict(list)
        self.cancel_status: dict[int, list[int]] = collections.defaultdict(list)
        self.unattributed: collections.Counter[int] = collections.Counter()
        self.probe_ok: dict[str, bool] = {}
        self.sent_tcp = 0
        self.acked = self.byes = 0
        self._case_re = re.compile(rb"protos(\d{4})x" + self.token.encode())
        self.unprobed_bytes = self.unprobed_cases = self.probes = 0
        self.tcp_cases: set[int] = set()
        self.current = -1

    def values(self, n: int) -> dict[bytes, bytes]:
        ident = f"protos{n:04d}x{self.token}".encode()
        return {
            b"<To>": f"ng911@{HOST}:{self.agent[1]}".encode(),
            b"<From>": f"protos@{HOST}:{self.port}".encode(),
            b"<From-Address>": HOST.encode(),
            b"<From-IP>": HOST.encode(),
            b"<Local-Port>": str(self.port).encode(),
            b"<Call-ID>": ident,
            b"<Branch-ID>": ident,
            b"<CSeq>": str(n + 1).encode(),
            b"<Teardown-Method>": b"CANCEL",
        }

    def prepare(self, n: int, invite: bytes, teardown: bytes | None) -> list[bytes]:
        self.current = n
        values = self.values(n)
        return [fill(invite, values)] + ([fill(teardown, values)] if teardown else [])

    def send_case(self, msgs: list[bytes]) -> None:
        self.unprobed_bytes += sum(len(m) for m in msgs)
        self.unprobed_cases += 1
        if max(len(m) for m in msgs) <= UDP_MAX:
            for m in msgs:
                self.udp.sendto(m, self.agent)
            return
        self.sent_tcp += 1
        self.tcp_cases.add(self.current)
        conn = socket.create_connection(self.agent, timeout=5)
        try:
            conn.sendall(b"".join(msgs))
        except OSError:
            pass  # the agent may close a stream it cannot frame before reading everything
        conn.setblocking(False)
        self.tcp[conn] = bytearray()
        self.sel.register(conn, selectors.EVENT_READ, None)

    # --- receiving -----------------------------------------------------------------------
    def drain(self, wait: float = 0.0) -> None:
        for key, _ in self.sel.select(timeout=wait):
            sock = key.fileobj
            if sock is self.udp:
                for _ in range(256):
                    try:
                        data, _addr = self.udp.recvfrom(65535)
                    except BlockingIOError:
                        break
                    self.handle(data, lambda out: self.udp.sendto(out, self.agent))
            else:
                self._drain_tcp(sock)  # type: ignore[arg-type]

    def _drain_tcp(self, conn: socket.socket) -> None:
        buf = self.tcp[conn]
        try:
            data = conn.recv(65535)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            buf += data
            for msg in split_stream(buf):
                self.handle(msg, lambda out, c=conn: _try_send(c, out))
        else:
            self.sel.unregister(conn)
            del self.tcp[conn]
            conn.close()

    def handle(self, data: bytes, reply) -> None:  # type: ignore[no-untyped-def]
        m = _STATUS.match(data)
        if not m:
            return  # a request from the agent (BYE of a call we never set up, ...): ignore
        status = int(m.group(1))
        cid = _CALL_ID.search(data)
        cseq = _CSEQ.search(data)
        if cid and cid.group(1) in self.probe_ok:
            self.probe_ok[cid.group(1)] = self.probe_ok[cid.group(1)] or status == 200
            return
        case = self._case_re.search(cid.group(1)) if cid else None
        if case is None:
            case = self._case_re.search(data)  # Via branch carries the id too
        method = cseq.group(2).upper() if cseq else b"INVITE"
        if case is None:
            self.unattributed[status] += 1
            return
        n = int(case.group(1))
        if method == b"CANCEL":
            self.cancel_status[n].append(status)
            return
        if method in (b"BYE", b"ACK"):
            return
        self.invite_status[n].append(status)
        if method == b"INVITE" and status >= 200 and cid and cseq:
            self._ack(data, status, cid.group(1), cseq.group(1), reply)

    def _ack(self, resp: bytes, status: int, call_id: bytes, seq: bytes, reply) -> None:  # type: ignore[no-untyped-def]
        hdr = {k: r.search(resp) for k, r in _HDR.items()}
        if not all(hdr.values()):
            return
        via, frm, to = (hdr[k].group(1) for k in ("via", "from", "to"))  # type: ignore[union-attr]
        uri = f"sip:ng911@{HOST}:{self.agent[1]}".encode()

        def request(method: bytes, top_via: bytes, cseq: bytes) -> bytes:
            return b"\r\n".join([
                method + b" " + uri + b" SIP/2.0", b"Via: " + top_via, b"Max-Forwards: 70",
                b"From: " + frm, b"To: " + to, b"Call-ID: " + call_id, b"CSeq: " + cseq + b" " + method,
                b"Content-Length: 0", b"", b""])

        if status >= 300:  # ACK for a non-2xx: the INVITE's branch (echoed Via)
            reply(request(b"ACK", via, seq))
        else:  # 2xx: end-to-end ACK with a new branch, then hang up
            fresh = f"SIP/2.0/UDP {HOST}:{self.port};branch=z9hG4bK{secrets.token_hex(8)};rport".encode()
            reply(request(b"ACK", fresh, seq))
            fresh = f"SIP/2.0/UDP {HOST}:{self.port};branch=z9hG4bK{secrets.token_hex(8)};rport".encode()
            reply(request(b"BYE", fresh, str(int(seq) + 1).encode()))
            self.byes += 1
        self.acked += 1

    # --- well-formed OPTIONS ---------------------------------------------------------------
    def options_ok(self, timeout: float) -> bool:
        data, call_id = sip_request("OPTIONS", transport="UDP", local_port=self.port, agent_port=self.agent[1])
        key = call_id.encode()
        self.probe_ok[key] = False
        self.unprobed_bytes = self.unprobed_cases = 0
        self.probes += 1
        start = time.monotonic()
        interval, resend = 0.5, start
        while not self.probe_ok[key] and time.monotonic() < start + timeout:
            if time.monotonic() >= resend:
                self.udp.sendto(data, self.agent)
                resend = time.monotonic() + interval
                interval = min(interval * 2, 4.0)
            self.drain(0.05)
        return self.probe_ok[key]

    def close(self) -> None:
        for conn in list(self.tcp):
            conn.close()
        self.sel.close()
        self.udp.close()


def _try_send(conn: socket.socket, data: bytes) -> None:
    try:
        conn.send(data)
    except OSError:
        pass


@pytest.mark.skipif(not ARCHIVE.exists(), reason=f"{ARCHIVE} not present")
def test_protos_c07_sip_invites(ua, sipp, tmp_path):
    cases = load_cases(tmp_path / "protos")
    assert len(cases) == N_CASES
    agent = ua.answer("--ring", RING)
    run = Run(agent.port)
    failed_probes: list[int] = []
    try:
        start = time.monotonic()
        for n, (_name, invite, teardown) in enumerate(cases):
            msgs = run.prepare(n, invite, teardown)
            size = sum(len(m) for m in msgs)
            if run.unprobed_cases and (n % PROBE_EVERY == 0 or run.unprobed_cases >= BARRIER_CASES
                                       or run.unprobed_bytes + size > BARRIER_BYTES):
                if not run.options_ok(PROBE_TIMEOUT):
                    failed_probes.append(n)
                    assert agent.alive(), f"agent died before case {n} ({cases[n][0]}): {agent.stderr_text()[-3000:]}"
            run.send_case(msgs)
            # pace: send on schedule, draining responses (and ACKing) while we wait
            while True:
                left = start + (n + 1) / RATE - time.monotonic()
                run.drain(max(0.0, min(left, 0.05)))
                if left <= 0:
                    break
        # the answers due after the last case: 487s to ACK, and 200s to INVITEs (ring = 2 s)
        # whose CANCEL did not match them
        settle = time.monotonic() + float(RING) + 2
        while time.monotonic() < settle:
            run.drain(0.1)
        elapsed = time.monotonic() - start
        final_options = run.options_ok(PROBE_TIMEOUT)
    finally:
        run.close()

    got_400 = sum(1 for n in range(N_CASES) if 400 in run.invite_status.get(n, ()))
    other = sum(1 for n in range(N_CASES) if run.invite_status.get(n) and 400 not in run.invite_status[n])
    silent = N_CASES - got_400 - other
    silent_tcp = sum(1 for n in run.tcp_cases if not run.invite_status.get(n))
    statuses = collections.Counter(s for v in run.invite_status.values() for s in set(v))
    cancel = collections.Counter(s for v in run.cancel_status.values() for s in set(v))
    REPORT.append(
        f"PROTOS c07-sip: {N_CASES} cases sent ({run.sent_tcp} over TCP, too large for UDP) in {elapsed:.0f}s; "
        f"400: {got_400}, other answer: {other}, no answer: {silent} ({silent_tcp} of them over TCP); "
        f"INVITE statuses seen (per case): {dict(sorted(statuses.items()))}; "
        f"CANCEL statuses: {dict(sorted(cancel.items()))}; unattributed responses: {dict(run.unattributed)}; "
        f"ACKs sent: {run.acked}, BYEs sent: {run.byes}; OPTIONS probes: {run.probes}; agent 'invite' events: {len(agent.named('invite'))}"
    )
    print(REPORT[-1])

    assert not failed_probes, f"OPTIONS went unanswered before cases {failed_probes}"
    assert agent.alive(), agent.stderr_text()[-3000:]
    assert final_options, "no 200 to OPTIONS after the suite"
    res = sipp.run("uac", remote=agent.target, calls=1, timeout=20)
    assert res.returncode == 0 and (res.successful, res.failed) == (1, 0), res.summary()
    assert agent.alive()
    assert_clean(agent)
