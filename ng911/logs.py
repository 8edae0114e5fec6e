"""Structured, correlated logs for the whole program (STYLE habit 10), on stdlib ``logging``.

    setup_logging("info")                       # JSON lines on stderr; Twisted's logger bridged
    log = bind(logging.getLogger("ng911.call"), call_id=cid, nena_call_id=nid)
    log.info("routed to %s", ap.name, queue="main")
    → {"ts":"2025-01-31T12:00:00.123Z","level":"info","logger":"ng911.call",
       "msg":"routed to ap1","call_id":"…","nena_call_id":"…","queue":"main"}

* One JSON object per line (``fmt="json"``): ``ts`` (UTC, ISO 8601, milliseconds), ``level``,
  ``logger``, ``msg``, then the bound fields, then ``exc`` (a traceback) when there is one.
  Newlines inside a message (a SIP trace) are escaped, so a line is always one record.
  ``fmt="text"`` is the same record for a human: ``ts LEVEL logger msg key=value …``.
* :func:`bind` returns a :class:`BoundLogger` (a ``logging.LoggerAdapter``): its fields go on
  every line it writes, and keyword arguments of a call add fields to that line. Bind a call's
  ``call_id`` and ``nena_call_id`` once, and every line about the call carries them.
* Modules keep using ``logging.getLogger("ng911.…")`` with %-style arguments (no f-strings in log
  calls: formatting is skipped when the level is off). Modules on ``twisted.logger.Logger``
  (the transports) reach the same handlers: :func:`setup_logging` bridges Twisted's global log
  to stdlib logging, each event under a stdlib logger named after its ``log_namespace``, its
  format fields kept as fields. (``twisted.logger.STDLibLogObserver`` would send every event
  to one logger, ``twisted``, and drop the fields.)
"""
from __future__ import annotations

import json
import logging
import string
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import IO, Any

from twisted.logger import LogLevel, formatEvent, globalLogBeginner

__all__ = ["BoundLogger", "JsonFormatter", "TextFormatter", "TwistedBridge", "bind", "setup_logging"]

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None))) | {
    "message", "asctime", "fields", "taskName",
}
_CORE = ("ts", "level", "logger", "msg")
_LOG_KWARGS = frozenset({"exc_info", "stack_info", "stacklevel", "extra"})


def _timestamp(created: float) -> str:
    t = time.gmtime(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(created % 1 * 1000):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    bound = getattr(record, "fields", None)
    if isinstance(bound, Mapping):
        out.update(bound)
    for name, value in vars(record).items():
        if name not in _RECORD_ATTRS and not name.startswith("_"):
            out.setdefault(name, value)
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in _fields(record).items():
            out[name + "_" if name in _CORE or name in ("exc", "stack") else name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger msg key=value …`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record.created), f"{record.levelname:<7}", record.name, record.getMessage()]
        for name, value in _fields(record).items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if not text or any(c in text for c in ' "=\n'):
                text = json.dumps(text)
            parts.append(f"{name}={text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class BoundLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger that adds its bound fields, and a call's keyword arguments, to every record.

    ``log.info("ringing %s", uri, attempt=2)`` → fields ``{**bound, "attempt": 2}``. (Fields
    named ``msg`` or ``level`` clash with the logging methods' own parameters: pass those as
    ``extra={...}``; in the output, a field named like a core key gets a trailing ``_``.)
    """

    def __init__(self, logger: logging.Logger, fields: Mapping[str, Any]) -> None:
        super().__init__(logger, dict(fields))

    @property
    def fields(self) -> Mapping[str, Any]:
        return self.extra  # type: ignore[return-value]

    def bind(self, **fields: Any) -> BoundLogger:
        """A new logger with these fields added (or replaced)."""
        return BoundLogger(self.logger, {**self.fields, **fields})

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        line_fields = {k: kwargs.pop(k) for k in [k for k in kwargs if k not in _LOG_KWARGS]}
        given = kwargs.pop("extra", None) or {}
        kwargs["extra"] = {"fields": {**self.fields, **given, **line_fields}}
        return msg, kwargs


def bind(logger: logging.Logger | logging.LoggerAdapter | str, **fields: Any) -> BoundLogger:  # type: ignore[type-arg]
    """A :class:`BoundLogger` writing through ``logger`` (a Logger, a BoundLogger, or a name)."""
    if isinstance(logger, BoundLogger):
        return logger.bind(**fields)
    if isinstance(logger, str):
        logger = logging.getLogger(logger)
    elif isinstance(logger, logging.LoggerAdapter):
        logger = logger.logger  # type: ignore[assignment]
    return BoundLogger(logger, fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Twisted → stdlib
# --------------------------------------------------------------------------------------------

_TWISTED_LEVELS = {
    LogLevel.debug: logging.DEBUG,
    LogLevel.info: logging.INFO,
    LogLevel.warn: logging.WARNING,
    LogLevel.error: logging.ERROR,
    LogLevel.critical: logging.CRITICAL,
}
_MAX_FIELD = 200  # longer values (a whole SIP message) stay in msg only
_formatter = string.Formatter()


class TwistedBridge:
    """A Twisted log observer that writes each event to stdlib logging, with its fields."""

    def __call__(self, event: Mapping[str, Any]) -> None:
        namespace = event.get("log_namespace")
        logger = logging.getLogger("twisted" if not namespace or namespace == "log_legacy" else namespace)
        level = _TWISTED_LEVELS.get(event.get("log_level", LogLevel.info), logging.INFO)
        if not logger.isEnabledFor(level):
            return
        failure = event.get("log_failure")
        exc_info = (failure.type, failure.value, failure.getTracebackObject()) if failure is not None else None
        logger.log(level, formatEvent(dict(event)), exc_info=exc_info, extra={"fields": _event_fields(event)})


def _event_fields(event: Mapping[str, Any]) -> dict[str, Any]:
    fmt = event.get("log_format")
    if not fmt:
        return {}
    out: dict[str, Any] = {}
    try:
        names = {f.split(".", 1)[0].split("[", 1)[0] for _, f, _, _ in _formatter.parse(fmt) if f}
    except ValueError:
        return {}
    for name in names:
        if name.startswith("log_") or name not in event:
            continue
        value = event[name]
        if not isinstance(value, (bool, int, float, type(None))):
            value = str(value)
            if len(value) > _MAX_FIELD:
                continue
        out[name] = value
    return out


_bridged = False  # Twisted's global log can begin only once per process


def _bridge_twisted() -> None:
    global _bridged
    if _bridged:
        return
    _bridged = True
    # Flushes what Twisted buffered before now; Python warnings also go through this path.
    globalLogBeginner.beginLoggingTo([TwistedBridge()], discardBuffer=False, redirectStandardIO=False)


# --------------------------------------------------------------------------------------------
# setup
# --------------------------------------------------------------------------------------------

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "warn": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}


def _level(value: str | int) -> int:
    if isinstance(value, int):
        return value
    try:
        return _LEVELS[value.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {value!r}; one of {', '.join(_LEVELS)}") from None


def setup_logging(
    level: str | int = "info",
    fmt: str = "json",
    stream: IO[str] | None = None,
    *,
    levels: Mapping[str, str | int] | None = None,
    bridge_twisted: bool = True,
) -> logging.Handler:
    """Send every log record (stdlib and Twisted) to ``stream`` (stderr) as JSON or text lines.

    ``level`` is the root level; ``levels`` sets others, e.g. ``{"ng911.sip": "debug"}`` with
    ``sip.trace``, or ``{"twisted": "warning"}`` to quiet Twisted's own "Starting protocol"
    lines (events of ``twisted.python.log`` arrive on the ``twisted`` logger). Calling it again replaces the handler installed by the previous call (other
    handlers, e.g. a test runner's, are left alone). Returns the handler.
    """
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
    elif fmt == "text":
        formatter = TextFormatter()
    else:
        raise ValueError(f"unknown log format {fmt!r}; 'json' or 'text'")
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_ng911", False)]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    handler._ng911 = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(_level(level))
    for name, lvl in (levels or {}).items():
        logging.getLogger(name).setLevel(_level(lvl))
    if bridge_twisted:
        _bridge_twisted()
    return handler
