"""The NG9-1-1 INVITEs of the ng911-dev conformance lab's SIPp scenarios, read in place from
../shared/conformance (never copied into the repository), as SIPp would send them."""
from __future__ import annotations

import re
from pathlib import Path

CONFORMANCE = Path(__file__).resolve().parents[3].parent / "shared" / "conformance"
SIPP_INVITES = CONFORMANCE / "ng911-dev" / "SIP_INVITE"

# SIPp keywords (and the injected $URLn of the ADR-by-reference scenario) -> loopback values
SIPP_VALUES = {
    "local_ip": "127.0.0.1", "local_port": "5061", "remote_ip": "127.0.0.1", "remote_port": "5060",
    "transport": "UDP", "call_number": "1", "call_id": "1-4242@127.0.0.1",
    "branch": "z9hG4bK-4242-1-0", "media_ip": "127.0.0.1", "media_ip_type": "4",
    "local_ip_type": "4", "media_port": "6000", "peer_tag_param": "",
    "$URL1": "https://adr.example.net/DeviceInfo/4242",
    "$URL2": "https://adr.example.net/ProviderInfo/4242",
    "$URL3": "https://adr.example.net/ServiceInfo/4242",
}


def sipp_message(name: str | Path) -> bytes:
    """The first message a scenario sends: each line's leading blanks dropped (as SIPp does),
    CRLF line ends, keywords filled in, ``[len]`` the real body length."""
    path = name if isinstance(name, Path) else SIPP_INVITES / name
    text = path.read_text("iso-8859-1")
    m = re.search(r"<send[^>]*>\s*<!\[CDATA\[(.*?)\]\]>", text, re.S)
    assert m, path
    lines = [line.lstrip(" \t").rstrip("\r") for line in m.group(1).split("\n")]
    msg = "\r\n".join(lines).strip("\r\n \t") + "\r\n"
    msg = re.sub(r"\[(\$?\w+)\]", lambda k: SIPP_VALUES.get(k.group(1), k.group(0)), msg)
    head, sep, body = msg.partition("\r\n\r\n")
    raw = body.encode("iso-8859-1")
    return (head.replace("[len]", str(len(raw))) + sep).encode("iso-8859-1") + raw


def scenarios() -> list[Path]:
    return sorted(SIPP_INVITES.glob("*.xml"))
