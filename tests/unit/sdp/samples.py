"""Realistic SDPs, written as peers send them (CRLF unless a sample says otherwise)."""

from __future__ import annotations


def crlf(*lines: str) -> bytes:
    return "".join(line + "\r\n" for line in lines).encode()


# A desk phone: PCMU/PCMA/G722 + DTMF, explicit RTCP port, ptime.
DESK_PHONE = crlf(
    "v=0",
    "o=- 3891474221 3891474221 IN IP4 192.0.2.10",
    "s=Polycom IP Phone",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "a=sendrecv",
    "m=audio 2222 RTP/AVP 9 0 8 101",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=rtcp:2223 IN IP4 192.0.2.10",
    "a=ptime:20",
)

# SDES-SRTP from an ESInet border element, b=AS, session and media c= lines.
SRTP_BCF = crlf(
    "v=0",
    "o=bcf 1700000000 1700000001 IN IP4 198.51.100.7",
    "s=ESInet call",
    "c=IN IP4 198.51.100.7",
    "b=AS:84",
    "t=0 0",
    "m=audio 40000 RTP/SAVP 0 101",
    "c=IN IP4 198.51.100.8",
    "b=AS:64",
    "b=TIAS:64000",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32",
    "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=rtcp:40001",
    "a=sendrecv",
)

# IPv6 loopback softphone, opus with fmtp, maxptime.
IPV6_OPUS = crlf(
    "v=0",
    "o=alice 2890844526 2890844526 IN IP6 ::1",
    "s=-",
    "c=IN IP6 ::1",
    "t=0 0",
    "m=audio 49170 RTP/AVP 111 0 101",
    "a=rtpmap:111 opus/48000/2",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=maxptime:40",
)

# NG9-1-1 total conversation: audio, H.264 video, T.140 real-time text with redundancy.
TOTAL_CONVERSATION = crlf(
    "v=0",
    "o=caller 20518 0 IN IP4 203.0.113.5",
    "s=NG911 call",
    "i=Total conversation (RFC 4103, RFC 6184)",
    "c=IN IP4 203.0.113.5",
    "b=AS:2048",
    "t=0 0",
    "a=tool:caller-client 1.0",
    "m=audio 5004 RTP/AVP 0 8 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=ptime:20",
    "a=sendrecv",
    "m=video 5006 RTP/AVP 96 97",
    "b=AS:1920",
    "a=rtpmap:96 H264/90000",
    "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;max-br=1920",
    "a=rtpmap:97 H264/90000",
    "a=fmtp:97 profile-level-id=42e01f;packetization-mode=0",
    "a=rtcp-fb:* nack pli",
    "a=rtcp-fb:96 ccm fir",
    "a=imageattr:* recv [x=640,y=480]",
    "a=sendrecv",
    "m=text 5008 RTP/AVP 100 98",
    "a=rtpmap:100 red/1000",
    "a=fmtp:100 98/98/98",
    "a=rtpmap:98 t140/1000",
    "a=fmtp:98 cps=30",
    "a=sendrecv",
)

# Layered multicast (RFC 8866 §5.7): several c= lines in one media section, r=, z=, k=.
MULTICAST = crlf(
    "v=0",
    "o=jdoe 3724394400 3724394405 IN IP4 198.51.100.1",
    "s=Call to John Smith",
    "i=SDP Offer #1",
    "u=http://www.jdoe.example.com/home.html",
    "e=Jane Doe <jane@jdoe.example.com>",
    "p=+1 617 555-6011",
    "c=IN IP4 233.252.0.1/127",
    "t=3724394400 3724398000",
    "r=7d 1h 0 25h",
    "z=2882844526 -1h 2898848070 0",
    "k=prompt",
    "m=audio 49170/2 RTP/AVP 0",
    "c=IN IP4 233.252.0.2/127/2",
    "c=IN IP4 233.252.0.4/127",
    "m=video 51372 RTP/AVP 99",
    "a=rtpmap:99 h263-1998/90000",
)

# RFC 3264 §8.4 legacy hold from an old gateway, LF-only endings, no final newline.
LEGACY_HOLD_LF = (
    b"v=0\n"
    b"o=gw 1 2 IN IP4 192.0.2.99\n"
    b"s=session\n"
    b"c=IN IP4 0.0.0.0\n"
    b"t=0 0\n"
    b"m=audio 18000 RTP/AVP 18 101\n"
    b"a=rtpmap:18 G729/8000\n"
    b"a=fmtp:18 annexb=no\n"
    b"a=rtpmap:101 telephone-event/8000"
)

# A browser-ish offer: ICE, BUNDLE, extmap, ssrc — attributes we do not model.
WEBRTC_GATEWAY = crlf(
    "v=0",
    "o=mozilla...THIS_IS_SDPARTA-99.0 5208214553524735542 0 IN IP4 0.0.0.0",
    "s=-",
    "t=0 0",
    "a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08",
    "a=group:BUNDLE 0",
    "a=ice-options:trickle",
    "a=msid-semantic:WMS *",
    "m=audio 9 UDP/TLS/RTP/SAVPF 109 9 0 8 101",
    "c=IN IP4 203.0.113.77",
    "a=candidate:0 1 UDP 2122252543 203.0.113.77 53012 typ host",
    "a=sendrecv",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1",
    "a=fmtp:101 0-15",
    "a=ice-pwd:e1a4c5a5a8d5a7c1d3c1a4b2c1d4e5f6",
    "a=ice-ufrag:8f2c1a3b",
    "a=mid:0",
    "a=msid:{5a1b} {7c2d}",
    "a=rtcp-mux",
    "a=rtpmap:109 opus/48000/2",
    "a=rtpmap:9 G722/8000/1",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=setup:actpass",
    "a=ssrc:2655508255 cname:{c2a5}",
)

# Trailing empty line after the last line, as some stacks write it.
TRAILING_BLANK = crlf(
    "v=0",
    "o=- 7 7 IN IP4 192.0.2.1",
    "s=-",
    "c=IN IP4 192.0.2.1",
    "t=0 0",
    "m=audio 3000 RTP/AVP 0",
    "",
)

REALISTIC = {
    "desk_phone": DESK_PHONE,
    "srtp_bcf": SRTP_BCF,
    "ipv6_opus": IPV6_OPUS,
    "total_conversation": TOTAL_CONVERSATION,
    "multicast": MULTICAST,
    "legacy_hold_lf": LEGACY_HOLD_LF,
    "webrtc_gateway": WEBRTC_GATEWAY,
    "trailing_blank": TRAILING_BLANK,
}


def sdp(*lines: str, origin: str = "o=- 1 1 IN IP4 192.0.2.1") -> bytes:
    """A small SDP: v=, the given o=, s=, then ``lines`` with t=0 0 put in its place."""
    first_m = next((i for i, ln in enumerate(lines) if ln.startswith("m=")), len(lines))
    head = [ln for ln in lines[:first_m] if ln[:2] in ("c=", "b=")]
    attrs = [ln for ln in lines[:first_m] if ln[:2] not in ("c=", "b=")]
    return crlf("v=0", origin, "s=-", *head, "t=0 0", *attrs, *lines[first_m:])
