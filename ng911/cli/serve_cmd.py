"""`ng911 serve | migrate | status`: run a controller node, bring its schema to head, look at it.

Exit status: 0 fine; 2 bad configuration (one line naming the key); 3 database schema not at
the code's head (run `ng911 migrate`); 5 (serve) the node stopped because another process
registered under its name (two nodes configured with one ``node.name``: systemd must not
restart it, see ``RestartPreventExitStatus``); 1 anything else. `ng911 status` also exits 4 when the
node or the database is degraded (the database unreachable, or the node's store down).

`ng911 status` lists the nodes of the cluster as the database has them (``ng911.cluster.view``):
epoch, lease (alive / expired / none, by the database's clock), heartbeat age, live calls owned
and stranded (owned by an older epoch of the node), SIP address. An expired lease with live calls
still under the node's name is marked ``TAKEOVER PENDING``; it changes no exit status.

`serve` does not need its database to start: PostgreSQL unreachable → it serves degraded (the
"serving" line says `"store": "degraded"`, `ng911_store_up` is 0) and registers the node once
the database answers. A database that answers with a schema behind the code is still exit 3.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

EXIT_CONFIG, EXIT_SCHEMA, EXIT_DEGRADED, EXIT_SUPERSEDED = 2, 3, 4, 5


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="run a controller node",
        description="Run an ng911 controller node: SIP on the configured address, metrics on "
                    "/metrics, calls persisted to the configured database.",
    )
    p.add_argument("--config", required=True, help="TOML file (see deploy/examples/ and deploy/README.md)")
    p.add_argument("--log-level", default="info", help="debug | info | warning (default info)")
    p.add_argument("--log-format", default="json", choices=("json", "text"), help="log line format (default json)")
    p.set_defaults(func=serve)

    m = sub.add_parser("migrate", help="bring the database schema to head (Alembic)",
                       description="Apply every pending migration to the configured database. "
                                   "Safe to run from several nodes at once (advisory lock).")
    m.add_argument("--config", required=True, help="TOML file naming the database (or NG911_DATABASE_URL)")
    m.set_defaults(func=migrate)

    s = sub.add_parser("status", help="nodes, live calls and answer point health, read from the store",
                       description="Print the cluster's nodes (leases, calls owned), the live calls "
                                   "and the answer points' health as the database has them (what "
                                   "every node of the cluster wrote).")
    s.add_argument("--config", required=True, help="TOML file naming the database")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=status)


def _settings(path: str) -> Any:
    from ng911.config import ConfigError, load_settings

    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"ng911: config error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def serve(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    from twisted.internet import reactor

    from ng911.logs import setup_logging
    from ng911.service import SchemaBehind, make_service, metrics_url, prepare_database

    setup_logging(args.log_level, args.log_format, sys.stderr)
    try:
        reachable = prepare_database(settings)
    except SchemaBehind as exc:
        print(f"ng911: {exc}", file=sys.stderr)
        return EXIT_SCHEMA
    service = make_service(settings, reactor)
    service.start()
    if reachable and service.epoch is None and hasattr(service.store, "wait_registered"):
        # the database answered a moment ago: give the writer a moment to register the node
        service.epoch = service.store.wait_registered(5.0)
    print(json.dumps({"event": "serving", "node": settings.node.name, "epoch": service.epoch,
                      "store": "up" if service.store_up else "degraded",
                      "sip": {"host": settings.sip.host, **{k.lower(): v for k, v in service.stack.ports.items()}},
                      "metrics": metrics_url(settings)}), flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", service.stop)
    reactor.run()
    return EXIT_SUPERSEDED if service.superseded else 0


def migrate(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    from ng911.store import db

    if settings.database.url.startswith("sqlite"):
        settings.database.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    db.migrate(settings.database.url)
    state = db.schema_status(settings.database.url)
    print(f"ng911: schema {state.state} at {state.current}")
    return 0 if state.state == "current" else 1


def node_state(settings: Any, timeout: float = 2.0) -> dict[str, Any]:
    """The local node as its /metrics page tells it (works while the database is down)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from ng911.service import metrics_url

    url = metrics_url(settings)
    context = None
    if settings.metrics.https:  # our own certificate: it chains to tls.ca and names the host
        import ssl

        context = ssl.create_default_context(cafile=settings.tls.ca)
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            text = resp.read().decode()
    except OSError as exc:
        return {"running": False, "metrics": url, "error": str(exc)}
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("ng911_store_up", "ng911_store_queue_depth", "ng911_store_backlogged"):
                values[sample.name] = sample.value
    up = values.get("ng911_store_up", 1.0) == 1.0
    return {"running": True, "metrics": url, "store": "up" if up else "degraded",
            "queued_writes": int(values.get("ng911_store_queue_depth", 0)),
            "backlogged": values.get("ng911_store_backlogged", 0.0) == 1.0}


def status(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    from sqlalchemy import exc

    from ng911.cluster.view import nodes_overview
    from ng911.store import db
    from ng911.store.store import SqlStore

    node = node_state(settings)
    try:
        state = db.schema_status(settings.database.url)
    except (exc.OperationalError, exc.InterfaceError) as e:
        reason = str(getattr(e, "orig", e)).strip().splitlines()[0]
        if args.json:
            print(json.dumps({"node": node, "database": "unreachable", "nodes": None, "calls": None,
                              "answer_points": None}))
        else:
            print(f"node: {_describe(node)}")
            print(f"database: UNREACHABLE ({reason})")
        return EXIT_DEGRADED
    if state.state != "current":
        print(f"ng911: database schema is {state.state}: run `ng911 migrate --config {args.config}`", file=sys.stderr)
        return EXIT_SCHEMA
    store = SqlStore(settings.database.url)
    try:
        nodes = nodes_overview(store.engine)
        calls = store.live_calls()
        aps = store.answer_points()
    finally:
        store.stop(timeout=1.0)
    rc = EXIT_DEGRADED if node.get("store") == "degraded" else 0
    if args.json:
        print(json.dumps({"node": node, "database": "up", "nodes": nodes, "calls": calls,
                          "answer_points": aps}, default=_json_value))
        return rc
    print(f"node: {_describe(node)}")
    print("database: up")
    print(f"nodes: {len(nodes)}")
    for n in nodes:
        print(f"  {_describe_cluster_node(n)}")
    known = {n["name"] for n in nodes}
    orphans = sorted({f"{c['owner_node']}@{c['owner_epoch']}" for c in calls if c.get("owner_node") not in known})
    if orphans:
        print(f"  live calls owned by no known node: {', '.join(orphans)}")
    now = time.time()
    print(f"live calls: {len(calls)}")
    for c in calls:
        created = c.get("created_at")
        age = f"{now - created:.0f}s" if isinstance(created, (int, float)) else "?"
        print(f"  {c['call_id']:<22} {c.get('kind', ''):<9} {c.get('state', ''):<8} {age:>6}  "
              f"ap={c.get('answer_point') or '-':<6} caller={c.get('caller')}  nena={c.get('nena_call_id')}")
    print(f"answer points: {len(aps)}")
    for ap in aps:
        print(f"  {ap['name']:<8} {'up' if ap.get('up') else 'DOWN':<5} {ap.get('uri')}")
    return rc


def _json_value(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):  # a stored SIP message (upstream_invite)
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _describe_cluster_node(n: dict[str, Any]) -> str:
    """One line per node: `node1 epoch 3 alive (2.1s left) heartbeat 0.9s ago owns 2 sip:...`."""
    from ng911.cluster.view import takeover_pending

    if n["lease"] == "alive":
        lease = f"alive ({n['lease_remaining']:.1f}s left)"
    elif n["lease"] == "expired":
        lease = f"EXPIRED ({-n['lease_remaining']:.1f}s ago)"
    else:
        lease = "no lease"
    age = n.get("heartbeat_age")
    beat = f"heartbeat {age:.1f}s ago" if age is not None else "no heartbeat"
    calls = f"owns {n['calls_owned']}"
    if n["calls_stranded"]:
        calls += f" + {n['calls_stranded']} stranded (older epoch)"
    text = (f"{n['name']:<10} epoch {n['epoch']:<4} {lease:<22} {beat:<24} {calls:<10} "
            f"{n.get('sip_uri') or '-'}")
    if takeover_pending(n):
        text += "  TAKEOVER PENDING"
    return text


def _describe(node: dict[str, Any]) -> str:
    if not node.get("running"):
        return f"not running here (no metrics at {node['metrics']})"
    text = "serving, store up" if node["store"] == "up" else "serving DEGRADED: its database is unreachable"
    text += f", {node['queued_writes']} writes queued"
    if node.get("backlogged"):
        text += " (BACKLOG ALARM: shedding event details and non-emergency records)"
    return text
