"""Configuration: one TOML file → frozen :class:`Settings`, every key checked, one clear error.

    settings = load_settings("deploy/examples/single-node.toml")   # raises ConfigError

The :data:`KEYS` table below is the only place a key is declared. It drives the loader (which
keys exist, their types, ranges and defaults — an unknown key is an error, so a typo never
passes silently) and the key reference in ``deploy/README.md`` (:func:`render_key_reference`;
a unit test fails when that file is stale — regenerate it with
``python -m ng911.config update-readme``).

Rules worth knowing:

* The first problem found is reported, as ``ConfigError("<key path>: <problem>")``, e.g.
  ``queues[0].answer_points[1].ring_timeout: must be a positive number, got -1``. Keys are
  checked in table order, then the rules that tie keys together (references between queues,
  port clashes, cluster ⇒ PostgreSQL). The CLI prints the message and exits with status 2.
* Times are in seconds (TOML integers or floats); integers elsewhere must be TOML integers.
* ``NG911_DATABASE_URL`` (when set and not empty) overrides ``database.url``. An empty URL
  means the embedded SQLite file ``database.sqlite_path``; a relative ``sqlite_path`` is taken
  from the **config file's directory**, not the working directory, so one config always means
  one database whoever starts the process from wherever. ``Settings.database.url`` is always
  the effective URL.
* A cluster (``cluster.enabled = true``) must use PostgreSQL: the nodes share its state.
"""
from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ng911.routing.model import AnswerPointSpec, FailoverSpec, HealthSpec, QueueSpec, RoutingSpec
from ng911.sip.errors import SipParseError
from ng911.sip.timers import TimerConfig
from ng911.sip.uri import SipUri, parse_uri

__all__ = [
    "KEYS",
    "ClusterSettings",
    "ConfigError",
    "DatabaseSettings",
    "HttpSettings",
    "Key",
    "LimitSettings",
    "NodeSettings",
    "Settings",
    "SipSettings",
    "TlsSettings",
    "UpstreamSettings",
    "DATABASE_URL_ENV",
    "REQUIRED",
    "generated_section",
    "load_settings",
    "render_key_reference",
    "settings_from_dict",
    "settings_from_toml",
    "update_key_reference",
]

DATABASE_URL_ENV = "NG911_DATABASE_URL"
RFC4028_MIN_SE = 90  # RFC 4028 §4: Min-SE is never below 90 s


class ConfigError(ValueError):
    """A bad configuration: ``key`` is the path of the offending key (``None`` for the file)."""

    def __init__(self, key: str | None, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


# --------------------------------------------------------------------------------------------
# Settings: what the rest of the program sees
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeSettings:
    name: str


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    enabled: bool = False
    heartbeat_interval: float = 1.0
    lease_duration: float = 3.0


@dataclass(frozen=True, slots=True)
class SipSettings:
    host: str = "127.0.0.1"
    port: int = 5060
    transports: tuple[str, ...] = ("udp", "tcp")
    tls_port: int = 5061
    timers: TimerConfig = field(default_factory=TimerConfig)
    user_agent: str = "ng911"
    trace: bool = False


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Our certificate and the CAs our peers' certificates must chain to (SIP over TLS, HTTPS)."""

    certificate: str | None = None  # absolute path of a PEM file: our certificate (and chain)
    private_key: str | None = None  # absolute path of its PEM private key
    ca: str | None = None  # absolute path of the PEM trust anchors peers must chain to
    require_client_certificate: bool = True  # mutual TLS on every inbound connection

    @property
    def configured(self) -> bool:
        return self.certificate is not None


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    trusted: tuple[IpNetwork, ...]
    trusted_identities: tuple[str, ...] = ()
    require_tls: bool = False

    def is_trusted(self, host: str) -> bool:
        """Whether a peer at IP literal ``host`` may send us calls (False for non-literals)."""
        try:
            addr = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(addr in net for net in self.trusted)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    host: str
    port: int
    https: bool = False


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """Bounds on what strangers can make the node hold (issue 9: every growing structure has one)."""

    untrusted_rate: float = 20.0  # requests/s one untrusted source may send before being shed
    untrusted_burst: float = 40.0
    untrusted_total_rate: float = 500.0  # requests/s from all untrusted sources together
    tracked_sources: int = 10_000  # sources the rate limiter remembers (least recent forgotten)
    max_transactions: int = 20_000
    max_dialogs: int = 10_000
    max_connections: int = 2_000  # TCP + TLS connections at once
    max_connections_per_source: int = 32  # for an untrusted source address
    stream_buffer: int = 65_536  # octets a connection may buffer of a message not yet complete
    handshake_timeout: float = 10.0  # a stream connection must complete a message (TLS: its handshake) this fast

@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str  # the effective SQLAlchemy URL: env override, config, or sqlite:///<sqlite_path>
    sqlite_path: Path  # absolute; the embedded database used when no URL is given
    backlog_high_water: int = 10_000  # queued writes that raise the backlog alarm
    backlog_max_queue: int = 50_000  # queued writes past which only emergency records are kept

    @property
    def dialect(self) -> str:
        """``"postgresql"`` or ``"sqlite"``."""
        return self.url.split(":", 1)[0].split("+", 1)[0]

    @property
    def redacted_url(self) -> str:
        """The URL fit for a log line (password hidden)."""
        return _redact(self.url)


@dataclass(frozen=True, slots=True)
class Settings:
    node: NodeSettings
    cluster: ClusterSettings
    sip: SipSettings
    upstream: UpstreamSettings
    routing: RoutingSpec
    api: HttpSettings
    metrics: HttpSettings
    database: DatabaseSettings
    tls: TlsSettings = field(default_factory=TlsSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    transfer_targets: tuple[str, ...] = ()  # REFER targets allowed besides answer points and queues
    media: str | None = None  # treatment server URI (a "stay on the line" announcement)
    source: Path | None = None  # the file these came from


# --------------------------------------------------------------------------------------------
# Value checkers: (value, key path) -> coerced value, or ConfigError
# --------------------------------------------------------------------------------------------

Parse = Callable[[Any, str], Any]


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, (int, float)):
        return repr(value)
    return f"a {type(value).__name__}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(*, positive: bool = False, minimum: float | None = None, maximum: float | None = None) -> Parse:
    """A number of seconds (or other float). TOML ints are accepted and become floats."""
    what = "a positive number" if positive else f"a number >= {minimum:g}"

    def parse(value: Any, key: str) -> float:
        if not _is_number(value) or not math.isfinite(value):
            raise ConfigError(key, f"must be {what}, got {_show(value)}")
        v = float(value)
        if (positive and not v > 0) or (minimum is not None and v < minimum):
            raise ConfigError(key, f"must be {what}, got {_show(value)}")
        if maximum is not None and v > maximum:
            raise ConfigError(key, f"must be at most {maximum:g}, got {_show(value)}")
        return v

    return parse


def _integer(*, minimum: int, maximum: int | None = None) -> Parse:
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(value: Any, key: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(key, f"must be {what}, got {_show(value)}")
        if maximum is not None and value > maximum:
            raise ConfigError(key, f"must be at most {maximum}, got {_show(value)}")
        return value

    return parse


def _port(value: Any, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ConfigError(key, f"must be a port number between 1 and 65535, got {_show(value)}")
    return value


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {_show(value)}")
    return value


def _string(*, pattern: str | None = None, what: str = "a non-empty string") -> Parse:
    rx = re.compile(pattern) if pattern else None

    def parse(value: Any, key: str) -> str:
        if not isinstance(value, str) or not value or (rx is not None and not rx.fullmatch(value)):
            raise ConfigError(key, f"must be {what}, got {_show(value)}")
        return value

    return parse


_NAME = _string(
    pattern=r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}",
    what="a name of letters, digits, '_', '.', '-' (at most 63, starting with a letter or digit)",
)
_USER_AGENT = _string(pattern=r"[\x21-\x7e][\x20-\x7e]{0,127}", what="printable ASCII text (at most 128 characters)")


def _ip_literal(*, concrete: bool) -> Parse:
    def parse(value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be an IP address literal such as \"127.0.0.1\", got {_show(value)}")
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            raise ConfigError(
                key, f"must be an IP address literal such as \"127.0.0.1\" or \"::1\" (not a host name), got {_show(value)}"
            ) from None
        if concrete and addr.is_unspecified:
            raise ConfigError(
                key, f"must be a concrete address, not {_show(value)}: it is sent in Via and Contact headers"
            )
        return str(addr)

    return parse


def _sip_uri(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a sip: or sips: URI, got {_show(value)}")
    try:
        uri = parse_uri(value)
    except SipParseError as exc:
        raise ConfigError(key, f"must be a sip: or sips: URI ({exc.reason}), got {_show(value)}") from None
    if not isinstance(uri, SipUri):
        raise ConfigError(key, f"must be a sip: or sips: URI, got {_show(value)}")
    return value


def _network(value: Any, key: str) -> IpNetwork:
    if not isinstance(value, str):
        raise ConfigError(key, f"must be an address or network such as \"127.0.0.0/8\", got {_show(value)}")
    try:
        return ipaddress.ip_network(value)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ConfigError(key, f"must be an address or network such as \"127.0.0.0/8\", got {_show(value)}") from None
    raise ConfigError(key, f"{_show(value)} has host bits set; did you mean \"{loose}\"?")


def _array(item: Parse, *, min_items: int = 0, unique: bool = False, what: str = "an array") -> Parse:
    def parse(value: Any, key: str) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ConfigError(key, f"must be {what}, got {_show(value)}")
        if len(value) < min_items:
            raise ConfigError(key, f"must have at least {min_items} entr{'y' if min_items == 1 else 'ies'}")
        out = tuple(item(v, f"{key}[{i}]") for i, v in enumerate(value))
        if unique:
            for i, v in enumerate(out):
                if v in out[:i]:
                    raise ConfigError(f"{key}[{i}]", f"duplicate entry {_show(value[i])}")
        return out

    return parse


def _choice(*choices: str) -> Parse:
    def parse(value: Any, key: str) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ConfigError(key, f"must be one of {', '.join(map(_show, choices))}, got {_show(value)}")
        return value

    return parse


def _redact(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _database_url(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a database URL string, got {_show(value)}")
    if value == "":
        return ""
    from sqlalchemy.engine import make_url  # lazily: only when a URL is given
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except ArgumentError:
        raise ConfigError(key, f"is not a database URL: {_show(_redact(value))}") from None
    backend = url.get_backend_name()
    if url.drivername == "postgres" or backend == "postgres":
        raise ConfigError(key, "uses the scheme postgres://; write postgresql:// (or postgresql+psycopg2://)")
    if backend == "postgresql":
        if "+" in url.drivername and url.drivername != "postgresql+psycopg2":
            raise ConfigError(key, f"PostgreSQL is reached with psycopg2, got driver {_show(url.drivername)}")
        if not url.database:
            raise ConfigError(key, f"names no database: {_show(_redact(value))}")
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; we ship psycopg2.
        return url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ConfigError(key, "an in-memory SQLite database loses every call at restart; name a file")
        return value
    raise ConfigError(key, f"must be a postgresql:// or sqlite:/// URL, got {_show(_redact(value))}")


def _path(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"must be a file path, got {_show(value)}")
    return value


# --------------------------------------------------------------------------------------------
# KEYS: the one table of keys
# --------------------------------------------------------------------------------------------


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
TABLE = "table"
TABLES = "array of tables"


@dataclass(frozen=True, slots=True)
class Key:
    """One configuration key. ``path`` uses ``[]`` for arrays of tables: ``queues[].name``."""

    path: str
    type: str  # as documented: "number (s)", "integer", "string", ..., "table", "array of tables"
    default: Any  # REQUIRED, None (optional, no value), or the value used when absent
    doc: str
    parse: Parse | None = None  # None for tables
    env: str | None = None  # an environment variable that overrides the file
    min_items: int = 0  # arrays of tables only

    @property
    def is_table(self) -> bool:
        return self.type in (TABLE, TABLES)


def _d(cls: type, name: str) -> Any:
    """A default taken from the spec dataclass, so the spec and this table never disagree."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            return f.default_factory()  # type: ignore[misc]
    raise KeyError(name)  # pragma: no cover


_SECONDS = "number (s)"

KEYS: tuple[Key, ...] = (
    Key("node", TABLE, None, "This controller process."),
    Key("node.name", "string", REQUIRED,
        "The node's name: unique in a cluster; it marks the node's rows in the database, its "
        "logs and its metrics.", _NAME),

    Key("cluster", TABLE, None,
        "Several nodes sharing one PostgreSQL database; a surviving node takes over the calls of "
        "a dead one (DESIGN.md, Cluster)."),
    Key("cluster.enabled", "boolean", False,
        "Run as a member of a cluster. Requires a PostgreSQL `database.url`.", _boolean),
    Key("cluster.heartbeat_interval", _SECONDS, 1.0,
        "How often the node renews its lease.", _number(positive=True, maximum=60)),
    Key("cluster.lease_duration", _SECONDS, 3.0,
        "A node whose lease is this old is dead and its calls are taken over. Must be greater "
        "than `cluster.heartbeat_interval`.", _number(positive=True, maximum=600)),

    Key("sip", TABLE, None, "The SIP listener, shared by the upstream and PSAP legs."),
    Key("sip.host", "IP address", "127.0.0.1",
        "Address to listen on, also sent in Via and Contact: an IP literal, not 0.0.0.0 or ::.",
        _ip_literal(concrete=True)),
    Key("sip.port", "integer", 5060, "Port to listen on (1–65535), for every transport.", _port),
    Key("sip.transports", "array of strings", ("udp", "tcp"),
        "Transports to listen on: any of `\"udp\"`, `\"tcp\"`, `\"tls\"` (SIP over TLS on "
        "`sip.tls_port`, RFC 3261 §26; needs `tls.certificate`).",
        _array(_choice("udp", "tcp", "tls"), min_items=1, unique=True, what="an array of transports")),
    Key("sip.tls_port", "integer", 5061, "Port for SIP over TLS, when `sip.transports` has `\"tls\"`.", _port),
    Key("sip.user_agent", "string", _d(SipSettings, "user_agent"),
        "Sent in User-Agent and Server headers.", _USER_AGENT),
    Key("sip.trace", "boolean", False,
        "Log every SIP message sent and received, in full (debug level).", _boolean),

    Key("sip.timers", TABLE, None, "RFC 3261 transaction timers (Appendix A)."),
    Key("sip.timers.t1", _SECONDS, _d(TimerConfig, "t1"),
        "RTT estimate: first retransmit interval; transactions time out after 64×T1.",
        _number(positive=True, maximum=10)),
    Key("sip.timers.t2", _SECONDS, _d(TimerConfig, "t2"),
        "Longest retransmit interval for non-INVITE requests and INVITE responses; >= `t1`.",
        _number(positive=True, maximum=60)),
    Key("sip.timers.t4", _SECONDS, _d(TimerConfig, "t4"),
        "How long a message may stay in the network.", _number(minimum=0, maximum=60)),
    Key("sip.timers.trying_delay", _SECONDS, _d(TimerConfig, "trying_delay"),
        "An INVITE server transaction sends 100 Trying itself when the controller has not "
        "answered within this delay; 0 sends it at once.", _number(minimum=0, maximum=10)),
    Key("sip.timers.timer_c", _SECONDS, _d(TimerConfig, "timer_c"),
        "Timer C: the longest an INVITE may stay in the proceeding state.",
        _number(positive=True, maximum=3600)),

    Key("upstream", TABLE, None, "The caller side: ESRPs, BCFs, the load distributor in front of the nodes."),
    Key("upstream.trusted", "array of networks", REQUIRED,
        "Source addresses allowed to send requests (`\"127.0.0.0/8\"`, `\"10.1.2.3\"`, "
        "`\"2001:db8::/32\"`); anyone else gets 403.",
        _array(_network, what="an array of addresses or networks")),
    Key("upstream.trusted_identities", "array of strings", (),
        "Certificate identities (subjectAltName DNS name or URI, e.g. `\"esrp.example.net\"`) "
        "trusted when they connect over TLS with a certificate chaining to `tls.ca`. Empty: any "
        "such certificate is trusted.", _array(_string(), unique=True, what="an array of identities")),
    Key("upstream.require_tls", "boolean", False,
        "Trust only TLS peers with a verified certificate: `upstream.trusted` addresses then count "
        "for nothing (a UDP source address can be spoofed).", _boolean),

    Key("tls", TABLE, None,
        "Our certificate and the CAs we trust, for SIP over TLS (server and client side) and HTTPS. "
        "Relative paths are relative to the directory of the config file."),
    Key("tls.certificate", "path", None, "PEM file: our certificate, then its chain.", _path),
    Key("tls.private_key", "path", None, "PEM file: the certificate's private key.", _path),
    Key("tls.ca", "path", None,
        "PEM file: the CA certificates a peer's certificate must chain to (both directions: an "
        "answer point's or upstream server's, and a connecting client's).", _path),
    Key("tls.require_client_certificate", "boolean", True,
        "Mutual TLS: refuse an inbound connection whose client presents no certificate chaining "
        "to `tls.ca`.", _boolean),

    Key("transfer", TABLE, None, "Blind transfers (REFER from an answer point)."),
    Key("transfer.allowed_targets", "array of SIP URIs", (),
        "Refer-To targets allowed besides the configured answer points and queues (`sip:<queue>@...` "
        "names a queue); any other target gets 403 and the call carries on.",
        _array(_sip_uri, unique=True, what="an array of SIP URIs")),

    Key("limits", TABLE, None,
        "Bounds on what an untrusted source can cost the node. Trusted upstream peers and answer "
        "points are never shed; refusals are counted in `ng911_sip_shed_total{reason}`."),
    Key("limits.untrusted_rate", "number (/s)", _d(LimitSettings, "untrusted_rate"),
        "Requests per second one untrusted source address may send; past it (and its burst) its "
        "messages are dropped unread.", _number(positive=True, maximum=1e6)),
    Key("limits.untrusted_burst", "number", _d(LimitSettings, "untrusted_burst"),
        "Requests an untrusted source may send at once before its rate applies.",
        _number(minimum=1, maximum=1e6)),
    Key("limits.untrusted_total_rate", "number (/s)", _d(LimitSettings, "untrusted_total_rate"),
        "Requests per second from all untrusted sources together (a flood from many addresses).",
        _number(positive=True, maximum=1e7)),
    Key("limits.tracked_sources", "integer", _d(LimitSettings, "tracked_sources"),
        "Untrusted source addresses the rate limiter remembers; the least recent is forgotten.",
        _integer(minimum=16, maximum=10_000_000)),
    Key("limits.max_transactions", "integer", _d(LimitSettings, "max_transactions"),
        "SIP transactions held at once; past it new requests get 503 (emergency calls from trusted "
        "peers are still taken).", _integer(minimum=100, maximum=10_000_000)),
    Key("limits.max_dialogs", "integer", _d(LimitSettings, "max_dialogs"),
        "Dialogs (call legs) held at once; past it new non-emergency calls get 503.",
        _integer(minimum=10, maximum=10_000_000)),
    Key("limits.max_connections", "integer", _d(LimitSettings, "max_connections"),
        "TCP and TLS connections at once; past it new inbound connections from untrusted sources "
        "are closed at once.", _integer(minimum=10, maximum=1_000_000)),
    Key("limits.max_connections_per_source", "integer", _d(LimitSettings, "max_connections_per_source"),
        "TCP and TLS connections one untrusted source address may hold.",
        _integer(minimum=1, maximum=1_000_000)),
    Key("limits.stream_buffer", "integer (octets)", _d(LimitSettings, "stream_buffer"),
        "Octets a stream connection may buffer of a message not yet complete; past it the "
        "connection is closed.", _integer(minimum=4096, maximum=64 << 20)),
    Key("limits.handshake_timeout", _SECONDS, _d(LimitSettings, "handshake_timeout"),
        "A new stream connection from an untrusted source must finish its TLS handshake and a first "
        "message this fast, else it is closed (slowloris); it is also closed after 32 s idle.",
        _number(positive=True, maximum=600)),

    Key("routing", TABLE, None, "Which calls go to which queue."),
    Key("routing.emergency_queue", "string", _d(RoutingSpec, "emergency_queue"),
        "The queue for emergency calls: Request-URI `urn:service:sos` or `urn:service:sos.*`, or "
        "one of `routing.psap_uris`.", _NAME),
    Key("routing.psap_uris", "array of SIP URIs", (),
        "Request-URIs, besides `urn:service:sos*`, that make a call an emergency call.",
        _array(_sip_uri, unique=True, what="an array of SIP URIs")),
    Key("routing.test_queue", "string", None,
        "The queue for test calls (`urn:service:test.sos`); absent: the emergency queue answers "
        "them. Test calls are never counted as emergencies.", _NAME),
    Key("routing.other_queue", "string", None,
        "The queue for any other call; absent: such calls are rejected with 404.", _NAME),

    Key("queues", TABLES, REQUIRED,
        "A queue: answer points hunted in order, then the queue's alternates.", min_items=1),
    Key("queues[].name", "string", REQUIRED, "The queue's name, unique.", _NAME),
    Key("queues[].alternates", "array of strings", (),
        "Queues tried in order when every answer point of this one has failed or is busy; "
        "never the queue itself. Mutual alternates (a → b, b → a) are allowed.",
        _array(_NAME, unique=True, what="an array of queue names")),
    Key("queues[].answer_points", TABLES, REQUIRED,
        "A call-taker position (or a trunk to another PSAP), in hunt order.", min_items=1),
    Key("queues[].answer_points[].name", "string", REQUIRED,
        "Its name: unique within the queue; the same name in another queue must be the same "
        "URI. Used in logs and as the `answer_point` metrics label.", _NAME),
    Key("queues[].answer_points[].uri", "SIP URI", REQUIRED,
        "Where the PSAP leg's INVITE goes, e.g. `\"sip:ap1@127.0.0.1:5070\"`.", _sip_uri),
    Key("queues[].answer_points[].ring_timeout", _SECONDS, _d(AnswerPointSpec, "ring_timeout"),
        "CANCEL and hunt on when it rings this long unanswered.", _number(positive=True, maximum=600)),
    Key("queues[].answer_points[].no_provisional_timeout", _SECONDS, _d(AnswerPointSpec, "no_provisional_timeout"),
        "...or when it sends no provisional response this fast; <= `ring_timeout`.",
        _number(positive=True, maximum=60)),
    Key("queues[].answer_points[].capacity", "integer", _d(AnswerPointSpec, "capacity"),
        "Calls at once: 1 for a position, more for a trunk.", _integer(minimum=1, maximum=100000)),

    Key("health", TABLE, None, "Out-of-dialog OPTIONS probes of every answer point."),
    Key("health.options_interval", _SECONDS, _d(HealthSpec, "options_interval"),
        "Time between probes of one answer point.", _number(positive=True, maximum=3600)),
    Key("health.options_timeout", _SECONDS, _d(HealthSpec, "options_timeout"),
        "A probe unanswered this long fails; <= `options_interval`.", _number(positive=True, maximum=60)),
    Key("health.down_after", "integer", _d(HealthSpec, "down_after"),
        "Consecutive failed probes that mark an answer point down (its calls fail over).",
        _integer(minimum=1, maximum=100)),
    Key("health.up_after", "integer", _d(HealthSpec, "up_after"),
        "Consecutive answered probes that mark it up again.", _integer(minimum=1, maximum=100)),

    Key("failover", TABLE, None, "How fast a dead PSAP leg is noticed, and how the hunt backs off."),
    Key("failover.session_expires", "integer (s)", _d(FailoverSpec, "session_expires"),
        "RFC 4028 session interval asked for on the PSAP leg (we refresh); >= `min_se`.",
        _integer(minimum=RFC4028_MIN_SE, maximum=86400)),
    Key("failover.min_se", "integer (s)", _d(FailoverSpec, "min_se"),
        "RFC 4028 Min-SE: the shortest session interval accepted; at least 90.",
        _integer(minimum=RFC4028_MIN_SE, maximum=86400)),
    Key("failover.in_dialog_options_interval", _SECONDS, _d(FailoverSpec, "in_dialog_options_interval"),
        "In-dialog OPTIONS on the PSAP leg this often; a 408/481 or no answer fails the leg "
        "over. 0 disables the probe.", _number(minimum=0, maximum=3600)),
    Key("failover.hunt_backoff_initial", _SECONDS, _d(FailoverSpec, "hunt_backoff_initial"),
        "When every answer point has been tried, wait this long and hunt again...",
        _number(positive=True, maximum=60)),
    Key("failover.hunt_backoff_max", _SECONDS, _d(FailoverSpec, "hunt_backoff_max"),
        "...doubling the wait up to this; >= `hunt_backoff_initial`. An emergency call is never "
        "rejected for lack of an answer point.", _number(positive=True, maximum=600)),
    Key("failover.queue_provisional_interval", _SECONDS, _d(FailoverSpec, "queue_provisional_interval"),
        "A caller waiting for a position gets a provisional response (180) this often, so no "
        "upstream proxy gives up on the INVITE (RFC 3261 §13.3.1.1: at least every minute).",
        _number(positive=True, maximum=60)),
    Key("failover.caller_reinvite_give_up", _SECONDS, _d(FailoverSpec, "caller_reinvite_give_up"),
        "A move re-INVITEs the caller with the new position's media; while those re-INVITEs time "
        "out or fail (408, 5xx, transport error) it retries with back-off, keeping the new position "
        "on the line. Past this long without success the call is ended with a BYE to the caller "
        "(end reason `caller_unreachable`).", _number(positive=True, maximum=600)),

    Key("api", TABLE, None, "The HTTP API and call-taker console."),
    Key("api.host", "IP address", "127.0.0.1", "Address to listen on (0.0.0.0 or :: for all).",
        _ip_literal(concrete=False)),
    Key("api.port", "integer", 8911, "Port to listen on.", _port),
    Key("api.https", "boolean", False,
        "Serve HTTPS with `tls.certificate`. Required when `api.host` is not a loopback address.",
        _boolean),

    Key("metrics", TABLE, None, "Prometheus metrics, served at `/metrics`."),
    Key("metrics.host", "IP address", "127.0.0.1", "Address to listen on (0.0.0.0 or :: for all).",
        _ip_literal(concrete=False)),
    Key("metrics.port", "integer", 9911, "Port to listen on.", _port),
    Key("metrics.https", "boolean", False,
        "Serve HTTPS with `tls.certificate`. Required when `metrics.host` is not a loopback address.",
        _boolean),

    Key("database", TABLE, None, "Where calls and their event log are kept."),
    Key("database.url", "string", "",
        f"SQLAlchemy URL: `postgresql://user:pass@host:5432/db` (always driven by psycopg2) or "
        f"`sqlite:////abs/path.sqlite`; relative SQLite paths in a URL are relative to the "
        f"working directory. `{DATABASE_URL_ENV}`, when set and not empty, overrides it. Empty: "
        f"the embedded SQLite file `database.sqlite_path` (single node only).",
        _database_url, env=DATABASE_URL_ENV),
    Key("database.sqlite_path", "path", "var/ng911.sqlite",
        "The embedded SQLite file used when no URL is given; relative paths are relative to the "
        "directory of the config file.", _path),
    Key("database.backlog_high_water", "integer", 10_000,
        "Writes queued (the database slow or down) that raise the backlog alarm "
        "(`ng911_store_backlogged`, cleared below half of it): non-emergency calls are then refused "
        "with 503 and their events shed; emergency calls are always taken and their records kept.",
        _integer(minimum=10, maximum=10_000_000)),
    Key("database.backlog_max_queue", "integer", 50_000,
        "Writes queued past which every write of a non-emergency call is shed: memory then grows "
        "only with the emergency calls taken during the outage. >= `backlog_high_water`.",
        _integer(minimum=10, maximum=10_000_000)),

    Key("media", TABLE, None, "The media server that plays announcements."),
    Key("media.treatment_uri", "SIP URI", None,
        "Where a caller waiting for an answer point hears \"stay on the line\"; absent: no "
        "treatment, the caller hears ringing.", _sip_uri),
)

_BY_PATH: dict[str, Key] = {k.path: k for k in KEYS}


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def _children() -> dict[str, dict[str, Key]]:
    out: dict[str, dict[str, Key]] = {}
    for key in KEYS:
        out.setdefault(_parent(key.path), {})[key.path.rsplit(".", 1)[-1]] = key
    for key in KEYS:  # every table has an entry, even with no keys yet
        if key.is_table:
            out.setdefault(key.path + ("[]" if key.type == TABLES else ""), {})
    return out


_CHILDREN = _children()


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_settings(path: str | os.PathLike[str], env: Mapping[str, str] = os.environ) -> Settings:
    """Read and check the TOML file at ``path``; raise :class:`ConfigError` on the first problem."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(None, f"cannot read config file {str(p)!r}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(None, f"config file {str(p)!r} is not UTF-8") from None
    return settings_from_toml(text, base_dir=p.resolve().parent, env=env, source=p)


def settings_from_toml(
    text: str, *, base_dir: Path, env: Mapping[str, str] = os.environ, source: Path | None = None
) -> Settings:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = f" {str(source)!r}" if source is not None else ""
        raise ConfigError(None, f"config file{where} is not valid TOML: {exc}") from None
    return settings_from_dict(raw, base_dir=base_dir, env=env, source=source)


def settings_from_dict(
    raw: Mapping[str, Any], *, base_dir: Path, env: Mapping[str, str] = os.environ, source: Path | None = None
) -> Settings:
    """Check an already-parsed TOML document (handy in tests)."""
    values = _read_table(raw, "", "")
    _apply_env(values, env)
    return _build(values, base_dir=base_dir, source=source)


def _read_table(raw: Any, prefix: str, where: str) -> dict[str, Any]:
    children = _CHILDREN[prefix]
    for name in raw:
        if name not in children:
            here = f"{where}.{name}" if where else name
            hint = difflib.get_close_matches(name, list(children), n=1)
            tip = f" (did you mean {hint[0]!r}?)" if hint else ""
            known = ", ".join(children)
            raise ConfigError(here, f"unknown key{tip}; known keys here: {known}")
    out: dict[str, Any] = {}
    for name, key in children.items():
        here = f"{where}.{name}" if where else name
        present = name in raw
        value = raw.get(name)
        if key.type == TABLE:
            if present and not isinstance(value, dict):
                raise ConfigError(here, f"must be a table ([{key.path}]), got {_show(value)}")
            out[name] = _read_table(value if present else {}, key.path, here)
        elif key.type == TABLES:
            if not present:
                if key.default is REQUIRED:
                    raise ConfigError(here, f"is required: add at least one [[{key.path.replace('[]', '')}]]")
                out[name] = []
                continue
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(here, f"must be an array of tables ([[{key.path.replace('[]', '')}]]), got {_show(value)}")
            if len(value) < key.min_items:
                raise ConfigError(here, f"must have at least {key.min_items} entr{'y' if key.min_items == 1 else 'ies'}")
            out[name] = [_read_table(v, key.path + "[]", f"{here}[{i}]") for i, v in enumerate(value)]
        elif present:
            assert key.parse is not None
            out[name] = key.parse(value, here)
        elif key.default is REQUIRED:
            raise ConfigError(here, "is required")
        else:
            out[name] = key.default
    return out


def _apply_env(values: dict[str, Any], env: Mapping[str, str]) -> None:
    for key in KEYS:
        if key.env is None or not env.get(key.env):
            continue
        *tables, leaf = key.path.split(".")
        target = values
        for t in tables:
            target = target[t]
        assert key.parse is not None
        target[leaf] = key.parse(env[key.env], f"{key.path} (from {key.env})")


def _build(v: dict[str, Any], *, base_dir: Path, source: Path | None) -> Settings:
    cluster = ClusterSettings(**v["cluster"])
    if not cluster.lease_duration > cluster.heartbeat_interval:
        raise ConfigError(
            "cluster.lease_duration",
            f"must be greater than cluster.heartbeat_interval ({cluster.heartbeat_interval:g}), "
            f"got {cluster.lease_duration:g}",
        )

    t = v["sip"]["timers"]
    if t["t2"] < t["t1"]:
        raise ConfigError("sip.timers.t2", f"must be >= sip.timers.t1 ({t['t1']:g}), got {t['t2']:g}")
    sip = SipSettings(**{**v["sip"], "timers": TimerConfig(**t)})

    routing = _build_routing(v)

    tls = _build_tls(v["tls"], base_dir)
    if "tls" in sip.transports and not tls.configured:
        raise ConfigError("tls.certificate", "is required when sip.transports has \"tls\"")
    if not tls.configured:
        for qi, q in enumerate(routing.queues):
            for ai, ap in enumerate(q.answer_points):
                uri = parse_uri(ap.uri)
                if uri.is_secure or (uri.transport or "").upper() == "TLS":  # type: ignore[union-attr]
                    raise ConfigError(f"queues[{qi}].answer_points[{ai}].uri",
                                      f"{_show(ap.uri)} is reached over TLS: tls.certificate is required")
    upstream = UpstreamSettings(trusted=v["upstream"]["trusted"],
                                trusted_identities=v["upstream"]["trusted_identities"],
                                require_tls=v["upstream"]["require_tls"])
    if upstream.require_tls and "tls" not in sip.transports:
        raise ConfigError("upstream.require_tls", "needs \"tls\" in sip.transports (no peer could be trusted)")
    if not upstream.trusted and "tls" not in sip.transports:
        raise ConfigError("upstream.trusted", "must name at least one address or network (or listen on TLS "
                                              "and trust upstream.trusted_identities)")

    api = HttpSettings(**v["api"])
    metrics = HttpSettings(**v["metrics"])
    listeners = [("api.port", api.host, api.port), ("metrics.port", metrics.host, metrics.port)]
    if "tcp" in sip.transports:
        listeners.insert(0, ("sip.port", sip.host, sip.port))
    if "tls" in sip.transports:
        listeners.insert(0, ("sip.tls_port", sip.host, sip.tls_port))
    for i, (key, host, port) in enumerate(listeners):
        for other, ohost, oport in listeners[:i]:
            if port == oport and _overlap(host, ohost):
                raise ConfigError(key, f"{port} on {host} is already taken by {other} (TCP on {ohost})")
    for name, http in (("api", api), ("metrics", metrics)):
        if http.https and not tls.configured:
            raise ConfigError("tls.certificate", f"is required when {name}.https is true")
        if not http.https and not ipaddress.ip_address(http.host).is_loopback:
            raise ConfigError(f"{name}.https", f"must be true when {name}.host is not a loopback address "
                                               f"(got {http.host}): set tls.certificate and serve HTTPS")

    database = _build_database(v["database"], cluster, base_dir)
    return Settings(
        node=NodeSettings(**v["node"]),
        cluster=cluster,
        sip=sip,
        upstream=upstream,
        routing=routing,
        api=api,
        metrics=metrics,
        database=database,
        tls=tls,
        limits=LimitSettings(**v["limits"]),
        transfer_targets=v["transfer"]["allowed_targets"],
        media=v["media"]["treatment_uri"],
        source=source,
    )


def _build_tls(t: dict[str, Any], base_dir: Path) -> TlsSettings:
    paths: dict[str, str | None] = {}
    for name in ("certificate", "private_key", "ca"):
        value = t[name]
        if value is None:
            paths[name] = None
            continue
        path = Path(value) if Path(value).is_absolute() else base_dir / value
        try:
            with open(path, "rb") as f:
                head = f.read(1 << 16)
        except OSError as exc:
            raise ConfigError(f"tls.{name}", f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
        if b"-----BEGIN " not in head:
            raise ConfigError(f"tls.{name}", f"{str(path)!r} is not a PEM file")
        paths[name] = str(path)
    if paths["certificate"] is not None:
        for name in ("private_key", "ca"):
            if paths[name] is None:
                raise ConfigError(f"tls.{name}", "is required with tls.certificate")
        _check_tls_files(paths)
    elif paths["private_key"] is not None or paths["ca"] is not None:
        raise ConfigError("tls.certificate", "is required with tls.private_key and tls.ca")
    return TlsSettings(certificate=paths["certificate"], private_key=paths["private_key"], ca=paths["ca"],
                       require_client_certificate=t["require_client_certificate"])


def _check_tls_files(paths: dict[str, str | None]) -> None:
    """The files parse and the key is the certificate's: found here, not when the listener
    starts (one error naming the key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    def read(name: str) -> bytes:
        with open(paths[name], "rb") as f:  # type: ignore[arg-type]
            return f.read()

    try:
        cert = x509.load_pem_x509_certificates(read("certificate"))[0]
    except ValueError as exc:
        raise ConfigError("tls.certificate", f"{paths['certificate']!r} holds no readable certificate ({exc})") from None
    try:
        x509.load_pem_x509_certificates(read("ca"))
    except ValueError as exc:
        raise ConfigError("tls.ca", f"{paths['ca']!r} holds no readable certificate ({exc})") from None
    try:
        key = serialization.load_pem_private_key(read("private_key"), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError("tls.private_key", f"{paths['private_key']!r} is not an unencrypted PEM private key ({exc})") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, spki) != cert.public_key().public_bytes(
            serialization.Encoding.DER, spki):
        raise ConfigError("tls.private_key", f"{paths['private_key']!r} is not the key of tls.certificate "
                                             f"{paths['certificate']!r}")


def _overlap(a: str, b: str) -> bool:
    aa, bb = ipaddress.ip_address(a), ipaddress.ip_address(b)
    return aa == bb or aa.is_unspecified or bb.is_unspecified


def _build_routing(v: dict[str, Any]) -> RoutingSpec:
    queues: list[QueueSpec] = []
    seen_queue: dict[str, int] = {}
    ap_home: dict[str, tuple[str, str]] = {}  # AP name -> (its URI, key path where first seen)
    for qi, q in enumerate(v["queues"]):
        qkey = f"queues[{qi}]"
        if q["name"] in seen_queue:
            raise ConfigError(f"{qkey}.name", f"duplicate queue name {_show(q['name'])} (also queues[{seen_queue[q['name']]}].name)")
        seen_queue[q["name"]] = qi
        aps: list[AnswerPointSpec] = []
        names: dict[str, int] = {}
        uris: dict[str, int] = {}
        for ai, a in enumerate(q["answer_points"]):
            akey = f"{qkey}.answer_points[{ai}]"
            if a["name"] in names:
                raise ConfigError(f"{akey}.name", f"duplicate answer point name {_show(a['name'])} in this queue "
                                                  f"(also {qkey}.answer_points[{names[a['name']]}].name)")
            names[a["name"]] = ai
            if a["uri"] in uris:
                raise ConfigError(f"{akey}.uri", f"duplicate answer point URI {_show(a['uri'])} in this queue "
                                                 f"(also {qkey}.answer_points[{uris[a['uri']]}].uri)")
            uris[a["uri"]] = ai
            home = ap_home.setdefault(a["name"], (a["uri"], f"{akey}.uri"))
            if home[0] != a["uri"]:
                raise ConfigError(f"{akey}.uri", f"answer point {_show(a['name'])} is {_show(home[0])} at {home[1]}; "
                                                 f"one name, one answer point (got {_show(a['uri'])})")
            if a["no_provisional_timeout"] > a["ring_timeout"]:
                raise ConfigError(f"{akey}.no_provisional_timeout",
                                  f"must be <= ring_timeout ({a['ring_timeout']:g}), got {a['no_provisional_timeout']:g}")
            aps.append(AnswerPointSpec(**a))
        queues.append(QueueSpec(name=q["name"], answer_points=tuple(aps), alternates=q["alternates"]))

    for qi, q in enumerate(queues):
        for i, alt in enumerate(q.alternates):
            here = f"queues[{qi}].alternates[{i}]"
            if alt == q.name:
                raise ConfigError(here, f"a queue cannot be its own alternate ({_show(alt)})")
            if alt not in seen_queue:
                raise ConfigError(here, f"no queue is named {_show(alt)}; queues: {', '.join(seen_queue)}")

    r = v["routing"]
    for name in ("emergency_queue", "test_queue", "other_queue"):
        ref = r[name]
        if ref is not None and ref not in seen_queue:
            raise ConfigError(f"routing.{name}", f"no queue is named {_show(ref)}; queues: {', '.join(seen_queue)}")

    h = v["health"]
    if h["options_timeout"] > h["options_interval"]:
        raise ConfigError("health.options_timeout",
                          f"must be <= health.options_interval ({h['options_interval']:g}), got {h['options_timeout']:g}")
    f = v["failover"]
    if f["session_expires"] < f["min_se"]:
        raise ConfigError("failover.session_expires",
                          f"must be >= failover.min_se ({f['min_se']}), got {f['session_expires']}")
    if f["hunt_backoff_max"] < f["hunt_backoff_initial"]:
        raise ConfigError("failover.hunt_backoff_max",
                          f"must be >= failover.hunt_backoff_initial ({f['hunt_backoff_initial']:g}), "
                          f"got {f['hunt_backoff_max']:g}")
    return RoutingSpec(
        queues=tuple(queues),
        psap_uris=r["psap_uris"],
        emergency_queue=r["emergency_queue"],
        test_queue=r["test_queue"],
        other_queue=r["other_queue"],
        health=HealthSpec(**h),
        failover=FailoverSpec(**f),
    )


def _build_database(d: dict[str, Any], cluster: ClusterSettings, base_dir: Path) -> DatabaseSettings:
    sqlite_path = Path(d["sqlite_path"])
    if not sqlite_path.is_absolute():
        sqlite_path = base_dir / sqlite_path
    url = d["url"] or f"sqlite:///{sqlite_path}"
    if d["backlog_max_queue"] < d["backlog_high_water"]:
        raise ConfigError("database.backlog_max_queue",
                          f"must be >= database.backlog_high_water ({d['backlog_high_water']}), "
                          f"got {d['backlog_max_queue']}")
    settings = DatabaseSettings(url=url, sqlite_path=sqlite_path, backlog_high_water=d["backlog_high_water"],
                                backlog_max_queue=d["backlog_max_queue"])
    if cluster.enabled and settings.dialect != "postgresql":
        raise ConfigError(
            "database.url",
            f"a cluster needs PostgreSQL: set {DATABASE_URL_ENV} or database.url to a postgresql:// URL "
            f"(got {_show(settings.redacted_url) if d['url'] else 'none, which means the embedded SQLite file'})",
        )
    return settings


# --------------------------------------------------------------------------------------------
# The key reference (deploy/README.md)
# --------------------------------------------------------------------------------------------

REFERENCE_BEGIN = "<!-- BEGIN KEY REFERENCE: generated from ng911.config.KEYS; do not edit by hand -->"
REFERENCE_END = "<!-- END KEY REFERENCE -->"


def _toml_literal(value: Any) -> str:
    if value is REQUIRED:
        return "**required**"
    if value is None:
        return "*(absent)*"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f"`{json.dumps(value)}`"
    if isinstance(value, (tuple, list)):
        return "`[" + ", ".join(json.dumps(v) for v in value) + "]`"
    if isinstance(value, float):
        return f"`{value!r}`"
    return f"`{value}`"


def _header(key: Key) -> str:
    name = key.path.replace("[]", "")
    return f"[[{name}]]" if key.type == TABLES else f"[{name}]"


def render_key_reference() -> str:
    """The Markdown key reference, one section per table, in :data:`KEYS` order."""
    out: list[str] = []
    for table in (k for k in KEYS if k.is_table):
        leaves = [k for k in _CHILDREN[table.path + ("[]" if table.type == TABLES else "")].values() if not k.is_table]
        out.append(f"### `{_header(table)}`")
        out.append("")
        required = " Required." if table.default is REQUIRED else ""
        out.append(f"{table.doc}{required}")
        out.append("")
        if not leaves:
            continue
        out.append("| key | type | default | meaning |")
        out.append("| --- | --- | --- | --- |")
        for k in leaves:
            doc = k.doc.replace("|", "\\|")
            out.append(f"| `{k.path}` | {k.type} | {_toml_literal(k.default)} | {doc} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def update_key_reference(readme: str | os.PathLike[str]) -> bool:
    """Rewrite the generated section of ``readme``; return whether it changed."""
    p = Path(readme)
    text = p.read_text(encoding="utf-8")
    start, end = text.index(REFERENCE_BEGIN) + len(REFERENCE_BEGIN), text.index(REFERENCE_END)
    new = text[:start] + "\n\n" + render_key_reference() + "\n" + text[end:]
    if new != text:
        p.write_text(new, encoding="utf-8")
    return new != text


def generated_section(readme_text: str) -> str:
    """The part of ``readme_text`` between the markers, as :func:`update_key_reference` writes it."""
    start = readme_text.index(REFERENCE_BEGIN) + len(REFERENCE_BEGIN)
    end = readme_text.index(REFERENCE_END)
    return readme_text[start:end].strip("\n") + "\n"


def _main(argv: Sequence[str]) -> int:
    usage = "usage: python -m ng911.config (check FILE | reference | update-readme [README])"
    if argv[:1] == ["check"] and len(argv) == 2:
        try:
            s = load_settings(argv[1])
        except ConfigError as exc:
            print(f"{argv[1]}: {exc}", file=sys.stderr)
            return 2
        queues = ", ".join(f"{q.name} ({len(q.answer_points)} APs)" for q in s.routing.queues)
        print(f"{argv[1]}: ok — node {s.node.name}, SIP {s.sip.host}:{s.sip.port}, queues {queues}, "
              f"database {s.database.redacted_url}")
        return 0
    if argv == ["reference"]:
        sys.stdout.write(render_key_reference())
        return 0
    if argv[:1] == ["update-readme"] and len(argv) <= 2:
        target = argv[1] if len(argv) == 2 else Path(__file__).resolve().parent.parent / "deploy" / "README.md"
        changed = update_key_reference(target)
        print(f"{target}: {'updated' if changed else 'up to date'}")
        return 0
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
