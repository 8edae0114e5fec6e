"""Hypothesis strategies for valid session descriptions (RFC 8866 §5 order and syntax)."""

from __future__ import annotations

from hypothesis import strategies as st

from ng911.sdp import (
    Attribute,
    Bandwidth,
    Connection,
    Direction,
    Field,
    Line,
    MediaSection,
    Origin,
    SessionDescription,
    make_media,
)

TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8)
IPV4 = st.tuples(*[st.integers(1, 254)] * 4).map(lambda t: ".".join(map(str, t)))
IPV6 = st.sampled_from(["::1", "2001:db8::1", "2001:db8:0:1::42", "fe80::1"])
DIRECTIONS = st.sampled_from(list(Direction))

STATIC = ["0", "3", "8", "9", "13", "18", "31", "34"]
DYNAMIC_CODECS = [
    ("opus", 48000, "2"),
    ("telephone-event", 8000, None),
    ("H264", 90000, None),
    ("VP8", 90000, None),
    ("t140", 1000, None),
    ("red", 1000, None),
    ("AMR-WB", 16000, None),
    ("speex", 16000, "1"),
]


@st.composite
def connections(draw: st.DrawFn) -> Connection:
    if draw(st.booleans()):
        return Connection("IN", "IP4", draw(IPV4))
    return Connection("IN", "IP6", draw(IPV6))


@st.composite
def origins(draw: st.DrawFn) -> Origin:
    conn = draw(connections())
    return Origin(
        draw(st.sampled_from(["-", "alice", "bob", "ap1", "caller"])),
        str(draw(st.integers(0, 2**62))),
        draw(st.integers(0, 2**32)),
        "IN",
        conn.addrtype,
        conn.address,
    )


@st.composite
def rtp_formats(draw: st.DrawFn) -> tuple[tuple[str, ...], tuple[Line, ...]]:
    n = draw(st.integers(1, 4))
    fmts: list[str] = []
    attrs: list[Line] = []
    used_dynamic: set[int] = set()
    for _ in range(n):
        if draw(st.booleans()):
            fmt = draw(st.sampled_from(STATIC))
            if fmt in fmts:
                continue
            fmts.append(fmt)
        else:
            pt = draw(st.integers(96, 127).filter(lambda p: p not in used_dynamic))
            used_dynamic.add(pt)
            name, rate, params = draw(st.sampled_from(DYNAMIC_CODECS))
            fmts.append(str(pt))
            tail = "" if params is None else f"/{params}"
            attrs.append(Attribute("rtpmap", f"{pt} {name}/{rate}{tail}"))
            if draw(st.booleans()):
                attrs.append(Attribute("fmtp", f"{pt} {draw(TOKEN)}={draw(st.integers(0, 99))}"))
    return tuple(fmts), tuple(attrs)


@st.composite
def media_sections(draw: st.DrawFn, need_connection: bool) -> MediaSection:
    kind = draw(st.sampled_from(["audio", "video", "text", "application"]))
    port = draw(st.one_of(st.just(0), st.integers(1024, 65535)))
    extra: list[Line] = []
    if kind == "application":
        proto = draw(st.sampled_from(["UDP/BFCP", "TCP/MSRP", "UDP/TLS/SCTP"]))
        fmts: tuple[str, ...] = (draw(st.sampled_from(["*", "webrtc-datachannel"])),)
    else:
        proto = draw(st.sampled_from(["RTP/AVP", "RTP/SAVP", "RTP/AVPF"]))
        fmts, attrs = draw(rtp_formats())
        extra.extend(attrs)
    if need_connection and port != 0 or draw(st.integers(0, 4)) == 0:
        extra.insert(0, draw(connections()))
    if draw(st.integers(0, 3)) == 0:
        extra.insert(1 if extra and isinstance(extra[0], Connection) else 0,
                     Bandwidth(draw(st.sampled_from(["AS", "TIAS", "CT"])), draw(st.integers(0, 10**6))))
    if draw(st.booleans()):
        extra.append(Attribute(str(draw(DIRECTIONS))))
    if draw(st.integers(0, 2)) == 0:
        extra.append(Attribute(f"x-{draw(TOKEN)}", draw(st.one_of(st.none(), TOKEN))))
    if kind != "application" and draw(st.integers(0, 3)) == 0:
        extra.append(Attribute("ptime", str(draw(st.sampled_from([10, 20, 30, 40])))))
    return make_media(kind, port, proto, fmts, *extra)


@st.composite
def descriptions(draw: st.DrawFn) -> SessionDescription:
    """A valid SDP: 0-4 m-lines of audio/video/text/application, c= at session or media level."""
    session_c = draw(st.booleans())
    lines: list[Line] = [Field("v", "0"), draw(origins()), Field("s", draw(st.sampled_from(["-", "call"])))]
    if session_c:
        lines.append(draw(connections()))
    if draw(st.integers(0, 3)) == 0:
        lines.append(Bandwidth("AS", draw(st.integers(1, 4096))))
    lines.append(Field("t", "0 0"))
    if draw(st.integers(0, 3)) == 0:
        lines.append(Attribute(str(draw(DIRECTIONS))))
    if draw(st.integers(0, 3)) == 0:
        lines.append(Attribute("tool", draw(TOKEN)))
    media = draw(st.lists(media_sections(need_connection=not session_c), max_size=4))
    return SessionDescription(tuple(lines), tuple(media))
