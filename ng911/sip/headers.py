"""Structured header values: Via, name-addr (From/To/Contact/Route), CSeq, list splitting.

RFC 3261 §7.3 and §25.1. Liberal where the RFC 4475 torture tests say a parser should be
(LWS around separators, folded lines already joined by the message parser), strict where they
say to reject (empty parameters, unbalanced quotes, overlarge CSeq).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache

from ng911.sip.errors import SipParseError
from ng911.sip.uri import (
    CACHE_MAX_LEN,
    CACHE_SIZE,
    AbsoluteUri,
    Params,
    SipUri,
    Uri,
    _fast_init,
    _format_params,
    _is_digits,
    _param,
    _split_hostport,
    parse_uri,
)

# Every pattern here is written so that it cannot backtrack more than linearly: adjacent
# repeats never share characters (a token run is always followed by a separator that is not
# a token character). A peer controls these strings; RFC 3261 LWS is SP / HTAB only.
_TOK = r"[A-Za-z0-9\-.!%*_+`'~]"
_TOKEN = re.compile(_TOK + r"+\Z")
_CSEQ = re.compile(r"[ \t]*([0-9]{1,10})[ \t]+(" + _TOK + r"+)[ \t]*\Z")
_VIA_PROTO = re.compile(
    r"[ \t]*(" + _TOK + r"+)[ \t]*/[ \t]*(" + _TOK + r"+)[ \t]*/[ \t]*(" + _TOK + r"+)[ \t]+(.*)\Z",
    re.S,
)
# ;name[=value] parameters where every value is a token or host (no quotes, no blanks): the
# usual case, checked in one match and split without further ado.
_SIMPLE_PARAMS = re.compile(r"(?:;" + _TOK + r"+(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)+\Z")
# The usual Via: SIP/2.0/transport host[:port] *(;simple-param), no blanks but the one SP.
_FAST_VIA = re.compile(
    r"SIP/2\.0/([A-Za-z0-9\-.!%*_+`'~]+) ([A-Za-z0-9_\-.]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?"
    r"((?:;" + _TOK + r"+(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)*)\Z"
)
MAX_CSEQ = 2**31 - 1


def is_token(text: str) -> bool:
    return bool(_TOKEN.match(text))


def split_values(value: str) -> list[str]:
    """Split a comma-joined header value into its elements, respecting quotes and <...>.

    Elements are stripped; empty elements are kept (as '') so callers can reject them.
    """
    if "," not in value:
        return [value.strip()]
    out: list[str] = []
    start = 0
    in_quote = in_angle = False
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        elif c == "," and not in_angle:
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    out.append(value[start:].strip())
    return out


def parse_params(text: str) -> Params:
    """Parse ``;name[=value]`` header parameters (value may be a quoted string or IPv6 ref)."""
    if not text:
        return ()
    if _SIMPLE_PARAMS.match(text):
        out = []
        for item in text[1:].split(";"):
            name, eq, value = item.partition("=")
            out.append((name, value if eq else None))
        return tuple(out)
    text = text.strip()
    if not text:
        return ()
    if text[0] != ";":
        raise SipParseError("Bad header parameters")
    out = []
    for item in _split_semis(text[1:]):
        name, eq, value = item.partition("=")
        name = name.strip()
        value = value.strip()
        if not name or not _TOKEN.match(name):
            raise SipParseError("Empty or bad header parameter")
        if eq and not value:
            raise SipParseError("Header parameter without value")
        if value.startswith('"') and not _closed_quote(value):
            raise SipParseError("Unterminated quoted parameter")
        out.append((name, value if eq else None))
    return tuple(out)


def _split_semis(text: str) -> list[str]:
    if '"' not in text:
        return text.split(";")
    out, start, in_quote, i = [], 0, False, 0
    while i < len(text):
        c = text[i]
        if in_quote and c == "\\":
            i += 1
        elif c == '"':
            in_quote = not in_quote
        elif c == ";" and not in_quote:
            out.append(text[start:i])
            start = i + 1
        i += 1
    out.append(text[start:])
    return out


def _closed_quote(value: str) -> bool:
    i = 1
    while i < len(value):
        if value[i] == "\\":
            i += 2
            continue
        if value[i] == '"':
            return i == len(value) - 1
        i += 1
    return False


def unquote_string(text: str) -> str:
    """The content of a quoted-string with its backslash escapes resolved."""
    out, i = [], 1
    while i < len(text) - 1:
        c = text[i]
        if c == "\\" and i + 1 < len(text) - 1:
            i += 1
            c = text[i]
        out.append(c)
        i += 1
    return "".join(out)


def quote_string(text: str) -> str:
    """``text`` as a quoted-string. A CTL the grammar allows escaped (quoted-pair: all but CR
    and LF) is written as one, so what a peer sent escaped goes back out valid; HTAB stays as
    it is (qdtext takes LWS). CR and LF cannot be written at all: Message.to_bytes refuses them."""
    out = text.replace("\\", "\\\\").replace('"', '\\"')
    if not out.isprintable() and _ESCAPABLE_CTL.search(out):
        out = _ESCAPABLE_CTL.sub(r"\\\g<0>", out)
    return '"' + out + '"'


_ESCAPABLE_CTL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Control characters (Unicode Cc: C0, DEL, C1) but HTAB; lone surrogates are bytes that were not
# UTF-8 (the parser decodes with surrogateescape).
_DISPLAY_DROP = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def printable_display_name(name: str | None) -> str | None:
    """A display name fit to pass on to a party that never saw the original message (a PSAP
    position, a log line, a database row): what the grammar lets a peer send (an escaped NUL
    or other CTL in a quoted display name, RFC 3261 §25.1 quoted-pair) may choke a phone's
    display or a database driver, so

    - every control character (C0 but HTAB, DEL, C1) is removed (the rest of the name is
      kept: "Alice\\x00Smith" -> "AliceSmith"),
    - HTAB becomes a space, and
    - bytes that were not UTF-8 (lone surrogates from the parser's surrogateescape) become
      U+FFFD,

    then blanks at either end go; a name left empty is None (no display name). Pure, and the
    identity on the usual name (one ``isprintable`` check)."""
    if name is None or name.isprintable():
        return name
    clean = _SURROGATE.sub("\ufffd", _DISPLAY_DROP.sub("", name).replace("\t", " ")).strip(" ")
    return clean or None


# --- CSeq -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CSeq:
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


_fast_init(CSeq)
_new_cseq = CSeq._make  # type: ignore[attr-defined]


def parse_cseq(value: str) -> CSeq:
    return _cseq_cached(value) if len(value) <= 64 else _parse_cseq(value)


def _parse_cseq(value: str) -> CSeq:
    m = _CSEQ.match(value)
    if not m:
        raise SipParseError("Bad CSeq")
    seq = int(m.group(1))
    if seq > MAX_CSEQ:
        raise SipParseError("CSeq number too large")
    return _new_cseq(seq, m.group(2))  # type: ignore[no-any-return]


_cseq_cached = lru_cache(maxsize=256)(_parse_cseq)


# --- Via ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Via:
    """One Via header value (RFC 3261 §20.42, RFC 3581 rport)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    def param(self, name: str) -> str | None:
        return _param(self.params, name)

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    @property
    def received(self) -> str | None:
        return self.param("received")

    @property
    def maddr(self) -> str | None:
        return self.param("maddr")

    @property
    def has_rport(self) -> bool:
        return self.param("rport") is not None

    @property
    def rport(self) -> int | None:
        """The rport value filled in by the server, None when absent or still empty."""
        value = self.param("rport")
        return int(value) if value and _is_digits(value) else None

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def with_param(self, name: str, value: str | None) -> Via:
        """Set a parameter (keeping its position if present); value None makes it a flag."""
        lname = name.lower()
        params = list(self.params)
        for i, (key, _) in enumerate(params):
            if key.lower() == lname:
                params[i] = (key, value)
                break
        else:
            params.append((name, value))
        return replace(self, params=tuple(params))

    def __str__(self) -> str:
        hp = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"{self.protocol}/{self.transport} {hp}{_format_params(self.params)}"


_fast_init(Via)
_new_via = Via._make  # type: ignore[attr-defined]


def parse_via(value: str) -> tuple[Via, ...]:
    """Every Via value of one header line. Cached by the line's text: a request's Via lines
    come back verbatim in each of its responses."""
    return _via_cached(value) if len(value) <= CACHE_MAX_LEN else _parse_via(value)


def _parse_via(value: str) -> tuple[Via, ...]:
    if "," not in value:
        m = _FAST_VIA.match(value)
        if m is not None:
            transport, host, port, ptext = m.groups()
            if port is not None and int(port) > 65535:
                raise SipParseError("Bad port")
            return (_new_via(transport.upper(), host, port and int(port), parse_params(ptext), "SIP/2.0"),)
    out = []
    for element in split_values(value):
        if not element:
            raise SipParseError("Empty Via value")
        m = _VIA_PROTO.match(element)
        if not m:
            raise SipParseError("Bad Via")
        name, version, transport, rest = m.groups()
        if name.upper() != "SIP":
            raise SipParseError("Bad Via protocol")
        semi = rest.find(";")
        sent_by, ptext = (rest, "") if semi < 0 else (rest[:semi], rest[semi:])
        # sent-by = host [ SWS ":" SWS port ]; the host may be an IPv6 reference.
        close = sent_by.find("]") + 1
        host_part, colon, port_part = sent_by[close:].partition(":")
        sent_by = (sent_by[:close] + host_part).strip(" \t")
        if colon:
            sent_by = sent_by + ":" + port_part.strip(" \t")
        if not sent_by or " " in sent_by or "\t" in sent_by:
            raise SipParseError("Bad Via sent-by")
        host, port = _split_hostport(sent_by)
        out.append(_new_via(transport.upper(), host, port, parse_params(ptext), f"SIP/{version}"))
    return tuple(out)


_via_cached = lru_cache(maxsize=CACHE_SIZE)(_parse_via)


# --- name-addr / addr-spec --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NameAddr:
    """From, To, Contact, Route, Record-Route … values: [display-name] <URI> *(;param)."""

    display_name: str | None
    uri: Uri
    params: Params = ()

    def param(self, name: str) -> str | None:
        return _param(self.params, name)

    @property
    def tag(self) -> str | None:
        return self.param("tag")

    def with_tag(self, tag: str) -> NameAddr:
        params = tuple(p for p in self.params if p[0].lower() != "tag") + (("tag", tag),)
        return replace(self, params=params)

    def with_param(self, name: str, value: str | None) -> NameAddr:
        params = tuple(p for p in self.params if p[0].lower() != name.lower()) + ((name, value),)
        return replace(self, params=params)

    def __str__(self) -> str:
        if self.display_name is not None:
            dn = self.display_name if _TOKEN_WORDS.match(self.display_name) else quote_string(self.display_name)
            head = f"{dn} <{self.uri}>"
        else:
            head = f"<{self.uri}>"
        return head + _format_params(self.params)


_TOKEN_WORDS = re.compile(_TOK + r"+(?: " + _TOK + r"+)*\Z")

# [ "quoted" | token *(LWS token) ] LWS <URI> *(;param) -- the common shapes in one match.
# Unambiguous by construction (see the note at the top): the old form, a lazy run of
# token-or-space characters between two \s* runs, backtracked cubically on long blanks.
_FAST_NAME_ADDR = re.compile(
    r'[ \t]*(?:"((?:[^"\\\n]|\\.)*)"[ \t]*|(' + _TOK + r"+(?:[ \t]+" + _TOK + r"+)*)[ \t]*)?"
    r'<([^<>\s"]+)>[ \t]*(;[^"]*)?\Z'
)
_fast_init(NameAddr)
_new_name_addr = NameAddr._make  # type: ignore[attr-defined]


def parse_name_addr(value: str) -> NameAddr:
    """One name-addr or addr-spec with its header parameters. Cached by text (From and To
    repeat in every message of a dialog); the result is immutable."""
    return _name_addr_cached(value) if len(value) <= CACHE_MAX_LEN else _parse_name_addr(value)


def _parse_name_addr(value: str) -> NameAddr:
    m = _FAST_NAME_ADDR.match(value)
    if m is not None:
        quoted, plain, uri_text, ptext = m.groups()
        if quoted is not None:
            display: str | None = unquote_string(f'"{quoted}"') if "\\" in quoted else quoted
        else:
            display = plain
        params = parse_params(ptext) if ptext else ()
        return _new_name_addr(display, parse_uri(uri_text), params)  # type: ignore[no-any-return]
    text = value.strip()
    if not text:
        raise SipParseError("Empty address")
    display: str | None = None
    if text[0] == '"':
        end = _quote_end(text)
        display = unquote_string(text[: end + 1])
        text = text[end + 1 :].lstrip()
        if not text.startswith("<"):
            raise SipParseError("Display name without <URI>")
    lt = text.find("<")
    if lt >= 0 and (display is not None or not _bare_uri_first(text, lt)):
        if display is None:
            dn = text[:lt].strip()
            display = dn or None
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError("Unterminated <URI>")
        uri = parse_uri(text[lt + 1 : gt].strip())
        params = parse_params(text[gt + 1 :])
        return NameAddr(display, uri, params)
    # addr-spec: the parameters after the URI are header parameters (RFC 3261 §20).
    end = len(text)
    for i, c in enumerate(text):
        if c in "; \t":
            end = i
            break
    uri = parse_uri(text[:end])
    return NameAddr(None, uri, parse_params(text[end:]))


_name_addr_cached = lru_cache(maxsize=CACHE_SIZE)(_parse_name_addr)


def _bare_uri_first(text: str, lt: int) -> bool:
    # "sip:a@b;x=<...>" would be odd; a '<' after a ';' belongs to a parameter, not a name-addr.
    return ";" in text[:lt] and ":" in text[: text.find(";")]


def _quote_end(text: str) -> int:
    i = 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i
        i += 1
    raise SipParseError("Unterminated quoted string")


def parse_name_addrs(value: str) -> tuple[NameAddr, ...]:
    out = []
    for element in split_values(value):
        if not element:
            raise SipParseError("Empty address in list")
        out.append(parse_name_addr(element))
    return tuple(out)


__all__ = [
    "AbsoluteUri",
    "CSeq",
    "NameAddr",
    "SipUri",
    "Uri",
    "Via",
    "is_token",
    "parse_cseq",
    "parse_name_addr",
    "parse_name_addrs",
    "parse_params",
    "parse_via",
    "printable_display_name",
    "quote_string",
    "split_values",
    "unquote_string",
]
