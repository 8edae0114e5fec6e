"""History-Info (RFC 7044): read the entries a request carries, and add ours when retargeting.

    History-Info: <urn:service:sos>;index=1,
                  <sip:psap@psap.example.net>;index=1.1;mp=1,
                  <sip:ap1@10.0.0.7?Reason=SIP%3Bcause%3D408>;index=1.1.1;mp=1.1,
                  <sip:ap2@10.0.0.8>;index=1.1.2;mp=1.1

Each entry is a target the request was sent to. ``index`` places it in the retargeting tree
(RFC 7044 §10.3: a retarget from entry ``x`` gets ``x.1``, the next retarget from ``x`` gets
``x.2``, …); ``mp`` (mapped to another user — a service URN or PSAP URI to an answer point) or
``rc`` (same user, new contact) names the entry it came from. Why a target was left is a Reason
header escaped into that target's URI (§9.3, §10.2): ``?Reason=SIP%3Bcause%3D408``.

`append_history` is what the controller calls each time it sends the call to a new answer
point. Its rule for where the new entry hangs:

* no ``reason`` — the current target (the last entry) hands the call on: the new entry is its
  child (``1.1`` → ``1.1.1``). The first routing of an incoming call is this case.
* a ``reason`` — the current target failed or was given up (timeout, error, failover): the
  reason goes into that entry's URI and the new entry is its sibling (``1.1.1`` → ``1.1.2``),
  hanging from the same parent.
* ``parent_index`` overrides both.

A top-level entry (``1``) has no parent, so a retarget from it is always its child; with no
entries at all the new one is ``1``.

Entries are kept as received, byte for byte, except that a Reason may be added to the last one.
A controller that hunts without end would grow the header without end, so at most
``max_entries`` are kept: the oldest entries that are not ancestors of the new one go first
(gaps in the indices are allowed, §10.3). A Reason is only written when it is simple —
``protocol;cause=N[;text="…"]`` in printable ASCII — and only into a sip:/sips: URI (other
URIs have no header part); otherwise it is left out rather than risk a broken header.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import quote, unquote

from ng911.emergency.callinfo import split_uri_value, uri_scheme
from ng911.sip.errors import SipParseError
from ng911.sip.headers import split_values
from ng911.sip.uri import Params, parse_uri

__all__ = ["HistoryEntry", "append_history", "parse_history_info", "simple_reason"]

MAX_ENTRIES = 20
_INDEX = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6}){0,31}\Z")
_REASON = re.compile(
    r"[ \t]*([A-Za-z][A-Za-z0-9.\-]{0,31})[ \t]*;[ \t]*cause[ \t]*=[ \t]*([0-9]{1,5})"
    r'(?:[ \t]*;[ \t]*text[ \t]*=[ \t]*"([ !#-\[\]-~]{0,100})")?[ \t]*\Z'
)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One hi-entry: the hi-targeted-to-uri as written and its parameters. ``error`` notes an
    entry that is not ``<URI>;index=…`` (kept all the same); ``raw`` is the value as received."""

    uri: str
    params: Params = ()
    raw: str = ""
    error: str | None = None

    def param(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.params:
            if key.lower() == name:
                return "" if value is None else value
        return None

    @property
    def index(self) -> str | None:
        value = self.param("index")
        return value if value and _INDEX.match(value) else None

    @property
    def retargeted_from(self) -> str | None:
        """The index in ``mp`` or ``rc`` (the entry this one was retargeted from)."""
        return self.param("mp") or self.param("rc")

    @property
    def target(self) -> str:
        """The URI without its header part (``?Reason=…&Privacy=…``)."""
        return self.uri.partition("?")[0]

    @property
    def reason(self) -> str | None:
        """The Reason escaped into the URI, unescaped (``SIP;cause=408``), or None."""
        _, sep, headers = self.uri.partition("?")
        if not sep:
            return None
        for item in headers.split("&"):
            name, _, value = item.partition("=")
            if name.lower() == "reason":
                return unquote(value)
        return None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "uri": self.target,
            "index": self.index,
            "reason": self.reason,
            "params": {k: v for k, v in self.params if k.lower() != "index"},
        }
        if self.error:
            out["error"] = self.error
            out["raw"] = self.raw
        return out


def parse_history_info(values: Iterable[str]) -> tuple[HistoryEntry, ...]:
    """Every hi-entry of the History-Info lines ``values``, in order; never raises."""
    out: list[HistoryEntry] = []
    for line in values:
        for element in split_values(line):
            if not element:
                continue
            uri, params, _, error = split_uri_value(element)
            entry = HistoryEntry(uri, params, element, error)
            if error is None and entry.index is None:
                entry = HistoryEntry(uri, params, element, "missing or bad index")
            out.append(entry)
    return tuple(out)


def simple_reason(reason: str | int | None) -> str | None:
    """``SIP;cause=408`` (from ``408`` or ``"SIP ; cause=408"``), with a ``text`` kept when it
    is plain; None when the reason is not simple enough to escape into a URI safely."""
    if reason is None:
        return None
    if isinstance(reason, str) and re.fullmatch(r"[ \t]*[0-9]{1,3}[ \t]*", reason):
        reason = int(reason)
    if isinstance(reason, int):
        code = reason
        return f"SIP;cause={code}" if 100 <= code <= 699 else None
    m = _REASON.match(reason)
    if m is None:
        return None
    protocol, cause, text = m.groups()
    out = f"{protocol};cause={int(cause)}"
    return out + f';text="{text}"' if text is not None else out


def _with_reason(entry: HistoryEntry, reason: str) -> str:
    """The entry's value with ``Reason=`` added to its URI's header part; unchanged when the
    URI is not sip:/sips:, already has a Reason, or the value is not ``<URI>;params``."""
    if entry.error or entry.reason is not None or uri_scheme(entry.uri) not in ("sip", "sips"):
        return entry.raw
    _, _, params_text, error = split_uri_value(entry.raw)
    if error:
        return entry.raw
    sep = "&" if "?" in entry.uri else "?"
    return f"<{entry.uri}{sep}Reason={quote(reason, safe='')}>{params_text}"


def _parent_of(index: str) -> str | None:
    head, dot, _ = index.rpartition(".")
    return head if dot else None


def _next_child(parent: str | None, entries: list[HistoryEntry]) -> str:
    """The first free index under ``parent`` (a top-level one when None)."""
    prefix = "" if parent is None else parent + "."
    used = [0]
    for e in entries:
        idx = e.index
        if idx and idx.startswith(prefix) and "." not in idx[len(prefix) :]:
            used.append(int(idx[len(prefix) :]))
    return f"{prefix}{max(used) + 1}"


def append_history(
    existing_values: list[str],
    new_target: str,
    reason: str | int | None = None,
    *,
    parent_index: str | None = None,
    mapping: str = "mp",
    max_entries: int = MAX_ENTRIES,
) -> list[str]:
    """The History-Info values to send to ``new_target`` (see the module docstring).

    ``existing_values``: the History-Info lines the current request carries (one value per
    returned string; multi-value lines are split). ``new_target``: the URI the request now goes
    to. ``reason``: why the current target (the last entry) is left — ``408``,
    ``"SIP;cause=480;text=\\"Temporarily Unavailable\\""`` — or None. ``mapping``: ``"mp"``
    (another user: the default, as an answer point is not the URI the caller called) or
    ``"rc"`` (same user). Raises ValueError for a bad ``new_target``, ``parent_index`` or
    ``mapping``.
    """
    if mapping not in ("mp", "rc"):
        raise ValueError(f"mapping must be 'mp' or 'rc', not {mapping!r}")
    try:
        parse_uri(new_target)
    except SipParseError as exc:
        raise ValueError(f"bad History-Info target {new_target!r}: {exc.reason}") from None
    if any(c in new_target for c in '<>"'):
        raise ValueError(f"bad History-Info target {new_target!r}")
    if parent_index is not None and not _INDEX.match(parent_index):
        raise ValueError(f"bad History-Info index {parent_index!r}")
    entries = list(parse_history_info(existing_values))
    values = [e.raw for e in entries]
    why = simple_reason(reason)
    last = entries[-1] if entries else None
    if parent_index is not None:
        parent: str | None = parent_index
    elif last is None or last.index is None:
        parent = next((e.index for e in reversed(entries) if e.index), None)
    elif reason is not None:
        parent = _parent_of(last.index) or last.index
    else:
        parent = last.index
    if last is not None and why is not None:
        values[-1] = _with_reason(last, why)
    index = _next_child(parent, entries)
    new = f"<{new_target}>;index={index}"
    if parent is not None:
        new += f";{mapping}={parent}"
    values.append(new)
    return _bounded(values, entries, index, max_entries)


def _bounded(values: list[str], entries: list[HistoryEntry], index: str, max_entries: int) -> list[str]:
    if len(values) <= max(max_entries, 1):
        return values
    ancestors = set()
    idx: str | None = index
    while idx is not None:
        ancestors.add(idx)
        idx = _parent_of(idx)
    keep = [True] * len(values)
    excess = len(values) - max(max_entries, 1)
    for i, entry in enumerate(entries):  # the new entry (last value) is never dropped
        if excess == 0:
            break
        if entry.index not in ancestors:
            keep[i] = False
            excess -= 1
    return [v for v, k in zip(values, keep) if k]
