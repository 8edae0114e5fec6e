"""ng911.config: TOML → frozen Settings; the first bad key named; the examples keep the contract."""
from __future__ import annotations

import copy
import dataclasses
import ipaddress
import tomllib
from pathlib import Path
from typing import Any

import pytest

from ng911.config import (
    KEYS,
    REQUIRED,
    ConfigError,
    TlsSettings,
    generated_section,
    load_settings,
    render_key_reference,
    settings_from_dict,
)
from ng911.routing.model import AnswerPointSpec, FailoverSpec, HealthSpec
from ng911.sip.timers import TimerConfig

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples"
PG = "postgresql://ng911:s3cret@127.0.0.1:5432/ng911"

MINIMAL = """
[node]
name = "n1"
[upstream]
trusted = ["127.0.0.0/8"]
[[queues]]
name = "main"
[[queues.answer_points]]
name = "ap1"
uri = "sip:ap1@127.0.0.1:5070"
[[queues.answer_points]]
name = "ap2"
uri = "sip:ap2@127.0.0.1:5071"
"""


def minimal() -> dict[str, Any]:
    return tomllib.loads(MINIMAL)


def load(raw: dict[str, Any], env: dict[str, str] | None = None, base: Path = Path("/etc/ng911")) -> Any:
    return settings_from_dict(raw, base_dir=base, env=env or {})


def error_of(raw: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(raw, env)
    return str(info.value)


def with_(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``raw`` with ``a.b[1].c`` set to ``value`` (tables created as needed)."""
    out = copy.deepcopy(raw)
    target: Any = out
    parts = path.replace("]", "").split(".")
    for i, part in enumerate(parts):
        name, _, index = part.partition("[")
        last = i == len(parts) - 1
        if last and not index:
            target[name] = value
            break
        target = target.setdefault(name, {})
        if index:
            if last:
                target[int(index)] = value
                break
            target = target[int(index)]
    return out


def without(raw: dict[str, Any], path: str) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    *tables, leaf = path.split(".")
    target: Any = out
    for t in tables:
        name, _, index = t.replace("]", "").partition("[")
        target = target[name][int(index)] if index else target[name]
    del target[leaf]
    return out


# --- the examples: DESIGN.md "Interfaces" ------------------------------------------------------


def _check_common(s: Any) -> None:
    assert s.sip.host == "127.0.0.1"
    assert s.sip.transports == ("udp", "tcp")
    assert s.upstream.trusted == (ipaddress.ip_network("127.0.0.0/8"),)
    assert s.upstream.is_trusted("127.0.0.9") and not s.upstream.is_trusted("10.0.0.1")
    r = s.routing
    assert [q.name for q in r.queues] == ["main"]
    assert r.emergency_queue == "main"
    assert "sip:sos@127.0.0.1:5060" in r.psap_uris
    main = r.queue("main")
    assert [(a.name, a.uri) for a in main.answer_points] == [
        ("ap1", "sip:ap1@127.0.0.1:5070"),
        ("ap2", "sip:ap2@127.0.0.1:5071"),
        ("ap3", "sip:ap3@127.0.0.1:5072"),
    ]
    for ap in main.answer_points:
        assert (ap.ring_timeout, ap.no_provisional_timeout, ap.capacity) == (20.0, 2.0, 1)
    assert r.health == HealthSpec(options_interval=1.0, options_timeout=1.0, down_after=2, up_after=1)
    assert r.failover == FailoverSpec(session_expires=90, min_se=90, in_dialog_options_interval=2.0,
                                      hunt_backoff_initial=0.5, hunt_backoff_max=5.0)
    # "a dead answer point is noticed within a few seconds"
    h = r.health
    assert h.options_interval * (h.down_after - 1) + h.options_timeout + h.options_interval <= 5
    assert s.sip.timers.t1 == 0.5
    assert s.media is None


def test_single_node_example_keeps_the_contract() -> None:
    s = load_settings(EXAMPLES / "single-node.toml", env={})
    _check_common(s)
    assert s.sip.port == 5060
    assert (s.api.host, s.api.port) == ("127.0.0.1", 8911)
    assert (s.metrics.host, s.metrics.port) == ("127.0.0.1", 9911)
    assert s.routing.psap_uris == ("sip:sos@127.0.0.1:5060",)
    assert not s.cluster.enabled
    assert s.database.dialect == "sqlite"
    assert s.database.sqlite_path == EXAMPLES.resolve() / "var" / "ng911.sqlite"
    assert s.database.url == f"sqlite:///{EXAMPLES.resolve() / 'var' / 'ng911.sqlite'}"


def test_single_node_tls_example_is_single_node_plus_tls() -> None:
    plain = load_settings(EXAMPLES / "single-node.toml", env={})
    s = load_settings(EXAMPLES / "single-node-tls.toml", env={})
    assert s.sip.transports == ("udp", "tcp", "tls") and (s.sip.host, s.sip.tls_port) == ("127.0.0.1", 5061)
    tls_dir = EXAMPLES.resolve() / "tls"
    assert s.tls == TlsSettings(certificate=str(tls_dir / "node.pem"), private_key=str(tls_dir / "node.key"),
                                ca=str(tls_dir / "ca.pem"), require_client_certificate=True)
    # trusting upstream peers whose certificate chains to ca.pem: any verified identity
    assert s.upstream.trusted_identities == () and not s.upstream.require_tls
    assert s.upstream.trusted == plain.upstream.trusted
    assert s.routing.psap_uris == plain.routing.psap_uris + ("sips:sos@127.0.0.1:5061",)
    assert s.routing.queues == plain.routing.queues
    assert (s.routing.health, s.routing.failover) == (plain.routing.health, plain.routing.failover)
    assert (s.api, s.metrics, s.database) == (plain.api, plain.metrics, plain.database)


def test_single_node_example_takes_the_database_from_the_environment() -> None:
    s = load_settings(EXAMPLES / "single-node.toml", env={"NG911_DATABASE_URL": PG})
    assert s.database.dialect == "postgresql"
    assert s.database.url == "postgresql+psycopg2://ng911:s3cret@127.0.0.1:5432/ng911"
    assert s.database.redacted_url == "postgresql+psycopg2://ng911:***@127.0.0.1:5432/ng911"


@pytest.mark.parametrize(("n", "sip", "api", "metrics"), [(1, 5060, 8911, 9911), (2, 5062, 8912, 9912)])
def test_cluster_examples_keep_the_contract(n: int, sip: int, api: int, metrics: int) -> None:
    s = load_settings(EXAMPLES / f"cluster-node{n}.toml", env={"NG911_DATABASE_URL": PG})
    _check_common(s)
    assert s.node.name == f"node{n}"
    assert s.sip.port == sip
    assert (s.api.host, s.api.port, s.metrics.host, s.metrics.port) == ("127.0.0.1", api, "127.0.0.1", metrics)
    assert s.cluster.enabled and s.cluster.lease_duration > s.cluster.heartbeat_interval
    assert s.database.dialect == "postgresql"


def test_cluster_examples_are_the_same_but_for_name_and_ports() -> None:
    one = load_settings(EXAMPLES / "cluster-node1.toml", env={"NG911_DATABASE_URL": PG})
    two = load_settings(EXAMPLES / "cluster-node2.toml", env={"NG911_DATABASE_URL": PG})
    assert one.routing == two.routing
    assert one.upstream == two.upstream and one.sip.timers == two.sip.timers and one.cluster == two.cluster


@pytest.mark.parametrize("n", [1, 2])
def test_cluster_without_postgresql_names_database_url(n: int) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(EXAMPLES / f"cluster-node{n}.toml", env={})
    assert info.value.key == "database.url"
    assert str(info.value).startswith("database.url: a cluster needs PostgreSQL")
    with pytest.raises(ConfigError) as info:
        load_settings(EXAMPLES / f"cluster-node{n}.toml", env={"NG911_DATABASE_URL": "sqlite:////tmp/x.sqlite"})
    assert str(info.value).startswith("database.url: a cluster needs PostgreSQL")


# --- defaults and coercion --------------------------------------------------------------------


def test_minimal_config_takes_the_documented_defaults() -> None:
    s = load(minimal())
    assert s.node.name == "n1"
    assert (s.sip.host, s.sip.port, s.sip.transports, s.sip.trace) == ("127.0.0.1", 5060, ("udp", "tcp"), False)
    assert s.sip.timers == TimerConfig()
    assert s.routing.health == HealthSpec() and s.routing.failover == FailoverSpec()
    ap = s.routing.queues[0].answer_points[0]
    assert ap == AnswerPointSpec(name="ap1", uri="sip:ap1@127.0.0.1:5070")
    assert s.routing.test_queue is None and s.routing.other_queue is None and s.routing.psap_uris == ()
    assert (s.api.port, s.metrics.port) == (8911, 9911)
    assert s.database.sqlite_path == Path("/etc/ng911/var/ng911.sqlite")
    assert s.database.url == "sqlite:////etc/ng911/var/ng911.sqlite"
    assert s.media is None


def test_settings_are_frozen() -> None:
    s = load(minimal())
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.sip.port = 1  # type: ignore[misc]


def test_integers_are_accepted_for_seconds() -> None:
    s = load(with_(minimal(), "queues[0].answer_points[0].ring_timeout", 30))
    assert s.routing.queues[0].answer_points[0].ring_timeout == 30.0
    assert isinstance(s.routing.queues[0].answer_points[0].ring_timeout, float)


def test_every_key_is_settable() -> None:
    raw = with_(minimal(), "routing.test_queue", "main")
    raw = with_(raw, "routing.other_queue", "main")
    raw = with_(raw, "media.treatment_uri", "sip:moh@127.0.0.1:5080")
    raw = with_(raw, "database.sqlite_path", "/var/lib/ng911/db.sqlite")
    raw = with_(raw, "sip.transports", ["tcp"])
    s = load(raw)
    assert s.routing.test_queue == s.routing.other_queue == "main"
    assert s.media == "sip:moh@127.0.0.1:5080"
    assert s.database.url == "sqlite:////var/lib/ng911/db.sqlite"
    assert s.sip.transports == ("tcp",)


def test_environment_overrides_database_url_and_empty_means_unset() -> None:
    raw = with_(minimal(), "database.url", "sqlite:////srv/a.sqlite")
    assert load(raw).database.url == "sqlite:////srv/a.sqlite"
    assert load(raw, env={"NG911_DATABASE_URL": ""}).database.url == "sqlite:////srv/a.sqlite"
    assert load(raw, env={"NG911_DATABASE_URL": PG}).database.dialect == "postgresql"


def test_relative_sqlite_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "n.toml").write_text(MINIMAL + '[database]\nsqlite_path = "data/x.sqlite"\n')
    s = load_settings(tmp_path / "conf" / "n.toml", env={})
    assert s.database.sqlite_path == tmp_path.resolve() / "conf" / "data" / "x.sqlite"


# --- errors: one, the first, naming the key ---------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("queues[0].answer_points[1].ring_timeout", -1,
         "queues[0].answer_points[1].ring_timeout: must be a positive number, got -1"),
        ("queues[0].answer_points[1].ring_timeout", 0,
         "queues[0].answer_points[1].ring_timeout: must be a positive number, got 0"),
        ("queues[0].answer_points[1].ring_timeout", "20",
         "queues[0].answer_points[1].ring_timeout: must be a positive number, got \"20\""),
        ("queues[0].answer_points[0].ring_timeout", 20000,
         "queues[0].answer_points[0].ring_timeout: must be at most 600, got 20000"),
        ("queues[0].answer_points[0].ring_timeout", float("nan"),
         "queues[0].answer_points[0].ring_timeout: must be a positive number, got nan"),
        ("queues[0].answer_points[0].capacity", 0,
         "queues[0].answer_points[0].capacity: must be a positive integer, got 0"),
        ("queues[0].answer_points[0].capacity", 1.5,
         "queues[0].answer_points[0].capacity: must be a positive integer, got 1.5"),
        ("queues[0].answer_points[0].capacity", True,
         "queues[0].answer_points[0].capacity: must be a positive integer, got true"),
        ("queues[0].answer_points[0].uri", "tel:+15551234",
         "queues[0].answer_points[0].uri: must be a sip: or sips: URI, got \"tel:+15551234\""),
        ("queues[0].answer_points[0].uri", "sips:ap1@127.0.0.1:5071",
         "queues[0].answer_points[0].uri: \"sips:ap1@127.0.0.1:5071\" is reached over TLS: tls.certificate is required"),
        ("queues[0].answer_points[1].uri", "sip:ap2@127.0.0.1:5071;transport=tls",
         "queues[0].answer_points[1].uri: \"sip:ap2@127.0.0.1:5071;transport=tls\" is reached over TLS: "
         "tls.certificate is required"),
        ("queues[0].answer_points[0].uri", "sip:ap1@127.0.0.1:99999",
         "queues[0].answer_points[0].uri: must be a sip: or sips: URI (Bad port), got \"sip:ap1@127.0.0.1:99999\""),
        ("sip.port", 0, "sip.port: must be a port number between 1 and 65535, got 0"),
        ("sip.port", 65536, "sip.port: must be a port number between 1 and 65535, got 65536"),
        ("api.port", "8911", "api.port: must be a port number between 1 and 65535, got \"8911\""),
        ("sip.host", "localhost",
         "sip.host: must be an IP address literal such as \"127.0.0.1\" or \"::1\" (not a host name), got \"localhost\""),
        ("sip.host", "0.0.0.0",
         "sip.host: must be a concrete address, not \"0.0.0.0\": it is sent in Via and Contact headers"),
        ("sip.transports", ["udp", "sctp"],
         "sip.transports[1]: must be one of \"udp\", \"tcp\", \"tls\", got \"sctp\""),
        ("sip.transports", ["udp", "udp"], "sip.transports[1]: duplicate entry \"udp\""),
        ("sip.transports", [], "sip.transports: must have at least 1 entry"),
        ("sip.trace", "yes", "sip.trace: must be true or false, got \"yes\""),
        ("sip.timers.t1", 500, "sip.timers.t1: must be at most 10, got 500"),
        ("sip.timers.t2", 0.2, "sip.timers.t2: must be >= sip.timers.t1 (0.5), got 0.2"),
        ("upstream.trusted", ["127.0.0.1/8"],
         "upstream.trusted[0]: \"127.0.0.1/8\" has host bits set; did you mean \"127.0.0.0/8\"?"),
        ("upstream.trusted", "127.0.0.0/8",
         "upstream.trusted: must be an array of addresses or networks, got \"127.0.0.0/8\""),
        ("upstream.trusted", [], "upstream.trusted: must name at least one address or network (or listen on "
                                 "TLS and trust upstream.trusted_identities)"),
        ("node.name", "", "node.name: must be a name of letters, digits, '_', '.', '-' (at most 63, "
                          "starting with a letter or digit), got \"\""),
        ("routing.emergency_queue", "nope", "routing.emergency_queue: no queue is named \"nope\"; queues: main"),
        ("routing.test_queue", "tests", "routing.test_queue: no queue is named \"tests\"; queues: main"),
        ("routing.psap_uris", ["urn:service:sos"],
         "routing.psap_uris[0]: must be a sip: or sips: URI, got \"urn:service:sos\""),
        ("queues[0].alternates", ["main"], "queues[0].alternates[0]: a queue cannot be its own alternate (\"main\")"),
        ("queues[0].alternates", ["other"], "queues[0].alternates[0]: no queue is named \"other\"; queues: main"),
        ("queues[0].answer_points[1].name", "ap1",
         "queues[0].answer_points[1].name: duplicate answer point name \"ap1\" in this queue "
         "(also queues[0].answer_points[0].name)"),
        ("queues[0].answer_points[1].uri", "sip:ap1@127.0.0.1:5070",
         "queues[0].answer_points[1].uri: duplicate answer point URI \"sip:ap1@127.0.0.1:5070\" in this queue "
         "(also queues[0].answer_points[0].uri)"),
        ("queues[0].answer_points[0].no_provisional_timeout", 30,
         "queues[0].answer_points[0].no_provisional_timeout: must be <= ring_timeout (20), got 30"),
        ("queues[0].answer_points", [], "queues[0].answer_points: must have at least 1 entry"),
        ("queues", [], "queues: must have at least 1 entry"),
        ("health.options_timeout", 10,
         "health.options_timeout: must be <= health.options_interval (5), got 10"),
        ("health.down_after", 0, "health.down_after: must be a positive integer, got 0"),
        ("failover.min_se", 60, "failover.min_se: must be an integer >= 90, got 60"),
        ("failover.session_expires", 90.0, "failover.session_expires: must be an integer >= 90, got 90.0"),
        ("failover.hunt_backoff_max", 0.1,
         "failover.hunt_backoff_max: must be >= failover.hunt_backoff_initial (0.5), got 0.1"),
        ("failover.in_dialog_options_interval", -1,
         "failover.in_dialog_options_interval: must be a number >= 0, got -1"),
        ("failover.queue_provisional_interval", 61,
         "failover.queue_provisional_interval: must be at most 60, got 61"),
        ("failover.caller_reinvite_give_up", 0,
         "failover.caller_reinvite_give_up: must be a positive number, got 0"),
        ("database.backlog_max_queue", 100,
         "database.backlog_max_queue: must be >= database.backlog_high_water (10000), got 100"),
        ("cluster.lease_duration", 0.5,
         "cluster.lease_duration: must be greater than cluster.heartbeat_interval (1), got 0.5"),
        ("metrics.port", 8911, "metrics.port: 8911 on 127.0.0.1 is already taken by api.port (TCP on 127.0.0.1)"),
        ("api.port", 5060, "api.port: 5060 on 127.0.0.1 is already taken by sip.port (TCP on 127.0.0.1)"),
        ("database.url", "postgres://u@h/db",
         "database.url: uses the scheme postgres://; write postgresql:// (or postgresql+psycopg2://)"),
        ("database.url", "mysql://u:hunter2@h/db", "database.url: must be a postgresql:// or sqlite:/// URL, "
                                                    "got \"mysql://u:***@h/db\""),
        ("database.url", "sqlite://", "database.url: an in-memory SQLite database loses every call at restart; "
                                      "name a file"),
        ("media.treatment_uri", "http://moh", "media.treatment_uri: must be a sip: or sips: URI, got \"http://moh\""),
        ("sip", "5060", "sip: must be a table ([sip]), got \"5060\""),
    ],
)
def test_a_bad_value_is_one_error_naming_its_key(path: str, value: Any, message: str) -> None:
    assert error_of(with_(minimal(), path, value)) == message


def test_the_wildcard_address_clashes_with_every_address_on_the_port() -> None:
    raw = with_(with_(minimal(), "api.host", "0.0.0.0"), "api.port", 9911)
    assert error_of(raw) == "metrics.port: 9911 on 127.0.0.1 is already taken by api.port (TCP on 0.0.0.0)"


def test_udp_only_sip_leaves_the_tcp_port_free() -> None:
    raw = with_(with_(minimal(), "sip.transports", ["udp"]), "api.port", 5060)
    assert load(raw).api.port == 5060


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("node.name", "node.name: is required"),
        ("upstream.trusted", "upstream.trusted: is required"),
        ("queues", "queues: is required: add at least one [[queues]]"),
        ("queues[0].answer_points[1].uri", "queues[0].answer_points[1].uri: is required"),
    ],
)
def test_a_missing_required_key_is_named(path: str, message: str) -> None:
    assert error_of(without(minimal(), path)) == message


def test_an_unknown_key_is_an_error_with_a_suggestion() -> None:
    msg = error_of(with_(minimal(), "queues[0].answer_points[0].ring_timout", 5))
    assert msg.startswith("queues[0].answer_points[0].ring_timout: unknown key (did you mean 'ring_timeout'?)")
    assert error_of(with_(minimal(), "sip.prot", 5060)).startswith("sip.prot: unknown key (did you mean 'port'?)")
    assert error_of(with_(minimal(), "xyzzy", 1)).startswith("xyzzy: unknown key; known keys here: node, cluster, ")


def test_only_the_first_error_is_reported() -> None:
    raw = with_(minimal(), "sip.port", -5)
    raw = with_(raw, "queues[0].answer_points[0].capacity", -1)
    assert error_of(raw) == "sip.port: must be a port number between 1 and 65535, got -5"


def test_same_answer_point_name_in_two_queues_must_be_the_same_uri() -> None:
    raw = minimal()
    raw["queues"].append({"name": "overflow", "answer_points": [{"name": "ap1", "uri": "sip:ap1@127.0.0.1:5070"}]})
    raw["queues"][0]["alternates"] = ["overflow"]
    s = load(raw)
    assert s.routing.queue("main").alternates == ("overflow",)
    raw["queues"][1]["answer_points"][0]["uri"] = "sip:other@127.0.0.1:5090"
    assert error_of(raw).startswith("queues[1].answer_points[0].uri: answer point \"ap1\" is \"sip:ap1@127.0.0.1:5070\"")


def test_queues_may_overflow_to_each_other_but_names_are_unique() -> None:
    raw = minimal()
    raw["queues"].append({"name": "b", "alternates": ["main"], "answer_points": [{"name": "x", "uri": "sip:x@h"}]})
    raw["queues"][0]["alternates"] = ["b"]
    assert [q.alternates for q in load(raw).routing.queues] == [("b",), ("main",)]
    raw["queues"][1]["name"] = "main"
    raw["queues"][1]["alternates"] = []
    raw["queues"][0]["alternates"] = []
    assert error_of(raw) == "queues[1].name: duplicate queue name \"main\" (also queues[0].name)"


def test_a_bad_environment_url_names_the_key_and_the_variable_and_hides_the_password() -> None:
    msg = error_of(minimal(), env={"NG911_DATABASE_URL": "mysql://u:hunter2@h/db"})
    assert msg.startswith("database.url (from NG911_DATABASE_URL): ")
    assert "hunter2" not in msg


def test_a_file_that_is_not_toml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\nname = 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(bad, env={})
    assert info.value.key is None and "is not valid TOML" in str(info.value) and "line 1" in str(info.value)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "missing.toml", env={})


# --- the key reference ------------------------------------------------------------------------


def test_every_key_is_documented() -> None:
    for key in KEYS:
        assert key.doc.strip(), key.path
        assert key.is_table or key.parse is not None, key.path


def test_defaults_in_the_table_pass_their_own_checks() -> None:
    for key in KEYS:
        if not key.is_table and key.default is not REQUIRED and key.default is not None:
            value = list(key.default) if isinstance(key.default, tuple) else key.default
            key.parse(value, key.path)  # type: ignore[misc]


def test_deploy_readme_key_reference_is_up_to_date() -> None:
    text = (ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    assert generated_section(text) == render_key_reference(), (
        "deploy/README.md is stale: run `python -m ng911.config update-readme`"
    )


def test_the_reference_lists_every_key() -> None:
    ref = render_key_reference()
    for key in KEYS:
        if not key.is_table:
            assert f"| `{key.path}` |" in ref


# --- issue 9: TLS files, trust, HTTPS exposure, limits -------------------------------------------

TLS_DIR = EXAMPLES.resolve() / "tls"


def with_tls(raw: dict[str, Any]) -> dict[str, Any]:
    raw = with_(raw, "tls.certificate", str(TLS_DIR / "node.pem"))
    raw = with_(raw, "tls.private_key", str(TLS_DIR / "node.key"))
    return with_(raw, "tls.ca", str(TLS_DIR / "ca.pem"))


def test_an_exposed_http_listener_must_speak_https() -> None:
    assert error_of(with_(minimal(), "metrics.host", "0.0.0.0")) == (
        "metrics.https: must be true when metrics.host is not a loopback address (got 0.0.0.0): "
        "set tls.certificate and serve HTTPS")
    assert error_of(with_(minimal(), "api.https", True)) == "tls.certificate: is required when api.https is true"
    s = load(with_(with_(with_tls(minimal()), "metrics.host", "0.0.0.0"), "metrics.https", True))
    assert s.metrics.https and s.metrics.host == "0.0.0.0"


def test_tls_files_are_checked_and_come_together() -> None:
    assert error_of(with_(minimal(), "tls.certificate", "/nonexistent/node.pem")).startswith(
        "tls.certificate: cannot read '/nonexistent/node.pem'")
    assert error_of(with_(minimal(), "tls.certificate", str(TLS_DIR / "node.pem"))) == (
        "tls.private_key: is required with tls.certificate")
    assert error_of(with_(minimal(), "tls.ca", str(EXAMPLES.resolve() / "single-node.toml"))).endswith(
        "is not a PEM file")
    assert error_of(with_(minimal(), "sip.transports", ["udp", "tls"])) == (
        'tls.certificate: is required when sip.transports has "tls"')
    wrong_key = with_(with_tls(minimal()), "tls.private_key", str(TLS_DIR / "upstream.key"))
    assert error_of(wrong_key) == (f"tls.private_key: '{TLS_DIR / 'upstream.key'}' is not the key of "
                                   f"tls.certificate '{TLS_DIR / 'node.pem'}'")
    not_a_key = with_(with_tls(minimal()), "tls.private_key", str(TLS_DIR / "node.pem"))
    assert error_of(not_a_key).startswith("tls.private_key: ") and "not an unencrypted PEM private key" in error_of(not_a_key)


def test_require_tls_needs_a_tls_listener_and_empty_trusted_needs_tls() -> None:
    assert error_of(with_(minimal(), "upstream.require_tls", True)) == (
        'upstream.require_tls: needs "tls" in sip.transports (no peer could be trusted)')
    raw = with_(with_(with_tls(minimal()), "sip.transports", ["tls"]), "upstream.trusted", [])
    raw = with_(with_(raw, "upstream.require_tls", True), "upstream.trusted_identities", ["esrp.example.net"])
    s = load(raw)
    assert s.upstream.require_tls and s.upstream.trusted == () and s.upstream.trusted_identities == ("esrp.example.net",)


def test_limits_and_transfer_targets_are_read() -> None:
    raw = with_(with_(minimal(), "limits.untrusted_rate", 5), "transfer.allowed_targets", ["sip:psap2@127.0.0.9"])
    s = load(raw)
    assert s.limits.untrusted_rate == 5.0 and s.limits.max_dialogs == 10_000
    assert s.transfer_targets == ("sip:psap2@127.0.0.9",)
    assert error_of(with_(minimal(), "limits.max_connections", 0)).startswith("limits.max_connections: must be")
